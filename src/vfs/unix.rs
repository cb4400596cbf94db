//! [`StdFs`](super::StdFs) on Unix: a state directory is an open descriptor,
//! and every operation inside it is relative to that descriptor.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use fs2::FileExt;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{DirIdentity, Entry, LockGuard, Ownership, VfsDir, VfsFile};

/// Mode of every directory the driver creates.
const DIR_MODE: u32 = 0o700;

/// Mode of every file the driver creates.
const FILE_MODE: u32 = 0o600;

/// `mkdir` with mode 0700, then exactly 0700: the umask can only remove
/// bits at creation, and a umask that removed the owner's would leave a
/// directory the driver cannot use.
pub(super) fn create_private_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().mode(DIR_MODE).create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))
}

/// A rename or a creation changes the directory, not the file: on Linux
/// (ext4, xfs, btrfs) it survives a power cut only once the directory itself
/// has been fsynced, which is done through a read-only handle on it. A plain
/// `fsync`, also on macOS, where `F_FULLFSYNC` is for files.
pub(super) fn sync_dir_path(path: &Path) -> io::Result<()> {
    let dir = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(rustix::fs::fsync(&dir)?)
}

/// Device and inode: what makes a file or directory itself, whatever path
/// leads to it.
type Identity = (u64, u64);

// `st_dev` is a u64 on Linux and an i32 on macOS: the cast is needed there.
#[allow(clippy::unnecessary_cast)]
fn identity(stat: &rustix::fs::Stat) -> Identity {
    (stat.st_dev as u64, stat.st_ino as u64)
}

fn meta_identity(meta: &std::fs::Metadata) -> Identity {
    (meta.dev(), meta.ino())
}

/// An open state directory.
#[derive(Debug)]
pub(super) struct StdDir {
    /// `O_RDONLY | O_DIRECTORY`: the handle every `*at` call is relative to,
    /// the target of the directory fsync and of the directory flock.
    dir: Arc<File>,
    /// The directory's own identity, taken when it was opened.
    identity: Identity,
    /// The identity of the file `try_lock_file` locked.
    locked: OnceLock<Identity>,
}

impl StdDir {
    pub(super) fn open(path: &Path) -> io::Result<StdDir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let dir = File::from(fd);
        let identity = meta_identity(&dir.metadata()?);
        Ok(StdDir {
            dir: Arc::new(dir),
            identity,
            locked: OnceLock::new(),
        })
    }
}

/// ELOOP from `O_NOFOLLOW` means a symbolic link sits where a file of the
/// state directory belongs: say so instead of "too many levels of links".
fn refuse_symlink(name: &str, err: Errno) -> io::Error {
    if err == Errno::LOOP {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{name} is a symbolic link; nothing inside a state directory is followed through one"
            ),
        )
    } else {
        err.into()
    }
}

fn not_regular(name: &str, meta: &std::fs::Metadata) -> io::Error {
    let (kind, what) = if meta.is_dir() {
        (io::ErrorKind::IsADirectory, "a directory")
    } else {
        (io::ErrorKind::InvalidInput, "not a regular file")
    };
    io::Error::new(kind, format!("{name} is {what}"))
}

/// An flocked file or directory. The lock belongs to the open file
/// description, which a child process spawned by any thread shares until it
/// execs: merely closing our descriptor would leave the lock held for that
/// instant. An explicit unlock releases it for every descriptor at once.
struct Flock(Arc<File>);

impl Drop for Flock {
    fn drop(&mut self) {
        // Nothing to do on failure: closing the file releases it anyway.
        let _ = FileExt::unlock(self.0.as_ref());
    }
}

fn try_flock(file: Arc<File>) -> io::Result<Option<LockGuard>> {
    match FileExt::try_lock_exclusive(file.as_ref()) {
        Ok(()) => Ok(Some(LockGuard::new(Flock(file)))),
        Err(err) if err.raw_os_error() == fs2::lock_contended_error().raw_os_error() => Ok(None),
        Err(err) => Err(err),
    }
}

fn private(mode: u32) -> Mode {
    Mode::from_raw_mode(mode as _)
}

impl VfsDir for StdDir {
    fn mode(&self) -> io::Result<Option<u32>> {
        Ok(Some(self.dir.metadata()?.mode() & 0o7777))
    }

    fn try_lock_dir(&self) -> io::Result<Option<LockGuard>> {
        try_flock(Arc::clone(&self.dir))
    }

    fn try_lock_file(&self, name: &str) -> io::Result<Option<LockGuard>> {
        // Never truncate or replace: LOCK is a stable inode that every owner
        // locks; replacing it would let two processes lock two inodes.
        let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let file = match rustix::fs::openat(
            self.dir.as_ref(),
            name,
            flags | OFlags::CREATE | OFlags::EXCL,
            private(FILE_MODE),
        ) {
            Ok(fd) => {
                rustix::fs::fchmod(&fd, private(FILE_MODE))?;
                File::from(fd)
            }
            Err(Errno::EXIST) => File::from(
                rustix::fs::openat(self.dir.as_ref(), name, flags, Mode::empty())
                    .map_err(|err| refuse_symlink(name, err))?,
            ),
            Err(err) => return Err(refuse_symlink(name, err)),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(not_regular(name, &meta));
        }
        let guard = try_flock(Arc::new(file))?;
        if guard.is_some() {
            let _ = self.locked.set(meta_identity(&meta));
        }
        Ok(guard)
    }

    fn probe(&self, name: &str) -> io::Result<Entry> {
        match rustix::fs::statat(self.dir.as_ref(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode as _) == FileType::Directory => {
                Ok(Entry::Directory)
            }
            Ok(_) => Ok(Entry::Other),
            Err(Errno::NOENT) => Ok(Entry::Missing),
            Err(err) => Err(err.into()),
        }
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        // O_NONBLOCK: a FIFO planted under a state file's name must not hang
        // the open; it is refused below as not a regular file.
        let fd = match rustix::fs::openat(
            self.dir.as_ref(),
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(err) => return Err(refuse_symlink(name, err)),
        };
        let mut file = File::from(fd);
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(not_regular(name, &meta));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    fn create_new(&self, name: &str) -> io::Result<Box<dyn VfsFile>> {
        // Created exclusively. Whatever is there (debris of a failed write,
        // or something planted: a symbolic link, a hard link to a file
        // elsewhere) is unlinked, never opened, and the creation retried.
        let create = || {
            rustix::fs::openat(
                self.dir.as_ref(),
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                private(FILE_MODE),
            )
        };
        let fd = match create() {
            Ok(fd) => fd,
            Err(Errno::EXIST) => {
                match rustix::fs::unlinkat(self.dir.as_ref(), name, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(err) => return Err(err.into()),
                }
                // Something planted again in between fails here: EEXIST.
                create()?
            }
            Err(err) => return Err(err.into()),
        };
        // The umask may have removed bits: set exactly 0600.
        rustix::fs::fchmod(&fd, private(FILE_MODE))?;
        Ok(Box::new(StdFile(File::from(fd))))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(rustix::fs::renameat(
            self.dir.as_ref(),
            from,
            self.dir.as_ref(),
            to,
        )?)
    }

    fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(self.dir.as_ref())?)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(
            self.dir.as_ref(),
            name,
            AtFlags::empty(),
        )?)
    }

    fn check_owner(&self, path: &Path, lock_name: &str) -> io::Result<Ownership> {
        match std::fs::metadata(path) {
            Ok(meta) if meta_identity(&meta) == self.identity => {}
            Ok(_) => return Ok(Ownership::DirectoryReplaced),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(Ownership::DirectoryReplaced);
            }
            Err(err) => return Err(err),
        }
        if let Some(locked) = self.locked.get() {
            match rustix::fs::statat(self.dir.as_ref(), lock_name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) if identity(&stat) == *locked => {}
                Ok(_) | Err(Errno::NOENT) => return Ok(Ownership::LockReplaced),
                Err(err) => return Err(err.into()),
            }
        }
        Ok(Ownership::Intact)
    }

    fn identity(&self) -> Option<DirIdentity> {
        let (device, inode) = self.identity;
        Some(DirIdentity { device, inode })
    }
}

/// A temp file being written.
struct StdFile(File);

impl VfsFile for StdFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        Write::write_all(&mut self.0, bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}
