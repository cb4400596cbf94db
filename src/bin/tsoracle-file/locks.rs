//! Whether a process holds a state directory's flock, found without taking
//! it: on Linux from the kernel's lock table, `/proc/locks`.
//!
//! The `procfs` crate parses `/proc/locks` too, but drops the `->` marker
//! of a process *waiting* for a lock, so a waiter would be reported as a
//! holder; this module keeps its own small parser, tested below.

use std::io;
use std::path::Path;

use serde::Serialize;

/// Whether a process holds the directory's flock, found without taking it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LockStatus {
    /// No `LOCK` file: no driver holds the directory.
    NoLockFile,
    /// An flock is held on the `LOCK` file by these process ids (as
    /// `/proc/locks` shows them: 0 or -1 for a process outside this pid
    /// namespace).
    Held { pids: Vec<i64> },
    /// No flock is held on the `LOCK` file.
    NotHeld,
    /// Could not be told (not Linux, `/proc/locks` unreadable, ...).
    Unknown(String),
}

/// The `lock` object of `inspect --json`.
#[derive(Debug, Serialize)]
pub(crate) struct LockJson {
    /// Whether a `LOCK` file exists.
    pub(crate) lock_file: bool,
    /// Whether a process holds it; `null` when that cannot be told.
    pub(crate) held: Option<bool>,
    /// The holders' process ids.
    pub(crate) holder_pids: Vec<i64>,
    /// Why `held` is `null`.
    pub(crate) detail: Option<String>,
}

impl LockStatus {
    /// One line for the text output of `inspect`.
    pub(crate) fn describe(&self) -> String {
        match self {
            LockStatus::NoLockFile => "not held (no LOCK file)".into(),
            LockStatus::Held { pids } => {
                let pids: Vec<String> = pids.iter().map(i64::to_string).collect();
                format!("held by a running process (pid {})", pids.join(", "))
            }
            LockStatus::NotHeld => "not held".into(),
            LockStatus::Unknown(why) => format!("unknown ({why})"),
        }
    }

    /// The `lock` object of `inspect --json`.
    pub(crate) fn to_json(&self, has_lock_file: bool) -> LockJson {
        let (held, holder_pids, detail) = match self {
            LockStatus::NoLockFile | LockStatus::NotHeld => (Some(false), Vec::new(), None),
            LockStatus::Held { pids } => (Some(true), pids.clone(), None),
            LockStatus::Unknown(why) => (None, Vec::new(), Some(why.clone())),
        };
        LockJson {
            lock_file: has_lock_file,
            held,
            holder_pids,
            detail,
        }
    }
}

/// Looks the state directory and its `LOCK` file up in the kernel's lock
/// table: a driver flocks both, and the directory's lock is still held
/// after someone deleted `LOCK`. Never locks either, not even briefly: a
/// probe that took the lock could make a driver that starts at that moment
/// fail with `AlreadyLocked`.
pub(crate) fn lock_status(dir: &Path, has_lock_file: bool) -> LockStatus {
    let on_dir = match std::fs::metadata(dir) {
        Ok(meta) => platform::lock_status(&meta),
        Err(err) => LockStatus::Unknown(format!("cannot stat {}: {err}", dir.display())),
    };
    if matches!(on_dir, LockStatus::Held { .. }) {
        return on_dir;
    }
    if !has_lock_file {
        return match on_dir {
            LockStatus::NotHeld => LockStatus::NoLockFile,
            other => other,
        };
    }
    let lock_path = dir.join(tsoracle_driver_file::LOCK_FILE);
    match std::fs::metadata(&lock_path) {
        Ok(meta) => platform::lock_status(&meta),
        Err(err) if err.kind() == io::ErrorKind::NotFound => LockStatus::NoLockFile,
        Err(err) => LockStatus::Unknown(format!("cannot stat {}: {err}", lock_path.display())),
    }
}

#[cfg(target_os = "linux")]
mod platform {
    use std::os::unix::fs::MetadataExt;

    use super::LockStatus;

    /// Reads `/proc/locks`, which lists every lock with the device (major
    /// and minor in hex) and inode it is on.
    pub(super) fn lock_status(meta: &std::fs::Metadata) -> LockStatus {
        match std::fs::read_to_string("/proc/locks") {
            Ok(table) => super::match_proc_locks(&table, dev_major_minor(meta.dev()), meta.ino()),
            Err(err) => LockStatus::Unknown(format!("cannot read /proc/locks: {err}")),
        }
    }

    /// glibc's `major()`/`minor()` for the `st_dev` encoding.
    fn dev_major_minor(dev: u64) -> (u64, u64) {
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        (major, minor)
    }
}

#[cfg(not(target_os = "linux"))]
mod platform {
    use super::LockStatus;

    /// Only Linux exposes held flocks without taking them.
    pub(super) fn lock_status(_meta: &std::fs::Metadata) -> LockStatus {
        LockStatus::Unknown("lock holders can only be listed on Linux".into())
    }
}

/// Finds the FLOCK entries of `/proc/locks` (`table`) on inode `ino` of
/// device `dev` (major, minor). Lines look like
/// `3: FLOCK  ADVISORY  WRITE 18484 fe:00:10010728 0 EOF`; a waiter's line
/// has `->` after the number and holds nothing. An inode that matches only
/// on another device is reported as unknown rather than guessed either way
/// (stacked filesystems may show another device than `stat` does).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn match_proc_locks(table: &str, dev: (u64, u64), ino: u64) -> LockStatus {
    let mut pids = Vec::new();
    let mut other_devices = Vec::new();
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") {
            continue; // a waiter (`->`), a POSIX/OFD lock or a lease
        }
        let Some(at) = fields.iter().position(|f| f.matches(':').count() == 2) else {
            continue;
        };
        let mut parts = fields[at].split(':');
        let (Some(major), Some(minor), Some(inode)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(major), Ok(minor), Ok(inode)) = (
            u64::from_str_radix(major, 16),
            u64::from_str_radix(minor, 16),
            inode.parse::<u64>(),
        ) else {
            continue;
        };
        if inode != ino {
            continue;
        }
        let pid = at
            .checked_sub(1)
            .and_then(|i| fields[i].parse::<i64>().ok())
            .unwrap_or(-1);
        if (major, minor) == dev {
            pids.push(pid);
        } else {
            other_devices.push(format!("{major:02x}:{minor:02x}"));
        }
    }
    if !pids.is_empty() {
        LockStatus::Held { pids }
    } else if !other_devices.is_empty() {
        LockStatus::Unknown(format!(
            "an flock on inode {ino} exists on device {}, but the LOCK file is on {:02x}:{:02x}",
            other_devices.join(", "),
            dev.0,
            dev.1
        ))
    } else {
        LockStatus::NotHeld
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
1: FLOCK  ADVISORY  WRITE 17926 fe:00:10018836 0 EOF
2: POSIX  ADVISORY  WRITE 500 fe:00:77 0 EOF
2: -> FLOCK  ADVISORY  WRITE 600 fe:00:77 0 EOF
3: FLOCK  ADVISORY  WRITE 18484 fe:00:10010728 0 EOF
4: FLOCK  ADVISORY  WRITE 999 00:2a:10018836 0 EOF
";

    #[test]
    fn proc_locks_match_on_device_and_inode() {
        assert_eq!(
            match_proc_locks(TABLE, (0xfe, 0), 10_010_728),
            LockStatus::Held { pids: vec![18484] }
        );
        assert_eq!(
            match_proc_locks(TABLE, (0xfe, 0), 10_018_836),
            LockStatus::Held { pids: vec![17926] }
        );
        assert_eq!(
            match_proc_locks(TABLE, (0x00, 0x2a), 10_018_836),
            LockStatus::Held { pids: vec![999] }
        );
    }

    #[test]
    fn proc_locks_ignore_waiters_posix_locks_and_other_inodes() {
        // Inode 77 has only a POSIX lock and a waiting flock.
        assert_eq!(match_proc_locks(TABLE, (0xfe, 0), 77), LockStatus::NotHeld);
        assert_eq!(match_proc_locks(TABLE, (0xfe, 0), 5), LockStatus::NotHeld);
        assert_eq!(match_proc_locks("", (0xfe, 0), 5), LockStatus::NotHeld);
    }

    #[test]
    fn proc_locks_inode_on_another_device_is_unknown() {
        assert!(matches!(
            match_proc_locks(TABLE, (0x08, 0x01), 10_010_728),
            LockStatus::Unknown(_)
        ));
    }
}
