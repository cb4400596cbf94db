//! The durable file protocol: the one place that writes, fsyncs, renames and
//! locks. Every failpoint of the write path lives here.
//!
//! # Crash-safety argument
//!
//! Invariant: *every value the driver ever acknowledged is covered by what
//! the live files (`state`, `dense`, `leases`) hold on disk*, and the live
//! files only ever hold complete, CRC-checked records.
//!
//! A file is replaced by [`Store::stage`] then [`Store::sync_dir`]:
//!
//! 1. **Write `X.tmp`** (create or truncate, write all bytes). A crash here
//!    leaves `X` untouched and at most a partial `X.tmp`, which is never
//!    read as state: open ignores and removes it.
//! 2. **Fsync `X.tmp`.** Its bytes are now on disk. A crash leaves `X`
//!    untouched and a complete or partial `X.tmp`: still debris.
//! 3. **Rename `X.tmp` over `X`.** Atomic: any observer, and the disk after a
//!    crash, sees either the old `X` or the new one, never a mix. Because
//!    step 2 completed first, the new `X` can only be the complete record.
//!    Until step 4 the rename itself may be lost on power failure, leaving
//!    the old `X` (and the fsynced `X.tmp`) — still a valid state.
//! 4. **Fsync the directory.** The rename is durable. Only now may the
//!    committer publish the new value in memory and acknowledge callers.
//!
//! Whatever a crash leaves, the live file is the old or the new complete
//! record; the new one was not acknowledged before step 4 returned, so the
//! old one covers everything acknowledged. Hence a restart never rewinds.
//!
//! A *process* crash between steps 3 and 4 leaves the rename in the page
//! cache: the next open sees the new file although a power cut could still
//! undo the rename. Open therefore fsyncs the directory before it reads, so
//! nothing it serves (or acknowledges on the fast path) can be lost later.
//!
//! A failed fsync (step 2 or 4) poisons the driver: after such an error
//! Linux may drop the dirty pages it could not write and report success on
//! the next fsync, so a retry proves nothing. An error at step 1, or a
//! rename that failed (nothing renamed), left the live file untouched: safe
//! to retry. Any failure after the rename took effect also poisons, because
//! memory can then no longer say what the live file holds.
//!
//! The state directory is made durable in its parent (and the parent in its
//! own, up to the root) at every open, before anything is written in it:
//! otherwise a power cut could lose the directory, and with it every
//! acknowledged value.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tsoracle_core::LeaseRecord;

use crate::dense_record::{self, DenseState};
use crate::error::{Bt, FileDriverError, FileOp};
use crate::lease_record;
use crate::record;
use crate::vfs::{Entry, LockGuard, Vfs, VfsFile};

/// Name of the lock file inside a state directory.
pub const LOCK_FILE: &str = "LOCK";

/// Runs the `fail` point `name`, which may inject an I/O error into the step
/// around it; a no-op without the `failpoints` feature.
///
/// `return` or `return(eio)` injects an EIO-like `Other` error;
/// `return(enospc)` injects `StorageFull`; `return(erofs)` injects
/// `ReadOnlyFilesystem`; `return(eacces)` injects `PermissionDenied`.
/// `pause`, `panic`, `sleep(ms)` and `print` work as the `fail` crate says.
#[inline]
fn failpoint(name: &'static str) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |arg| Err(injected_error(name, arg)));
    let _ = name;
    Ok(())
}

#[cfg(feature = "failpoints")]
fn injected_error(name: &str, arg: Option<String>) -> io::Error {
    let kind = match arg.as_deref() {
        Some("enospc") => io::ErrorKind::StorageFull,
        Some("erofs") => io::ErrorKind::ReadOnlyFilesystem,
        Some("eacces") => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("injected by failpoint {name}"))
}

/// The names of every failpoint, in the order a write reaches them.
pub const FAILPOINTS: [&str; 9] = [
    "file_driver::open",
    "file_driver::before_temp_write",
    "file_driver::after_temp_write",
    "file_driver::before_temp_fsync",
    "file_driver::after_temp_fsync",
    "file_driver::before_rename",
    "file_driver::after_rename",
    "file_driver::before_dir_fsync",
    "file_driver::after_dir_fsync",
];

/// One of the three files of a state directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    State,
    Dense,
    Leases,
}

impl FileKind {
    pub(crate) const ALL: [FileKind; 3] = [FileKind::State, FileKind::Dense, FileKind::Leases];

    pub(crate) fn name(self) -> &'static str {
        match self {
            FileKind::State => "state",
            FileKind::Dense => "dense",
            FileKind::Leases => "leases",
        }
    }

    pub(crate) fn temp_name(self) -> &'static str {
        match self {
            FileKind::State => "state.tmp",
            FileKind::Dense => "dense.tmp",
            FileKind::Leases => "leases.tmp",
        }
    }
}

/// Everything a state directory holds, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) high_water: u64,
    pub(crate) dense: DenseState,
    pub(crate) leases: Vec<LeaseRecord>,
}

/// A failed [`Store::stage`], and whether it poisons the driver.
#[derive(Debug)]
pub(crate) struct StageFailure {
    pub(crate) error: FileDriverError,
    /// True after a failed fsync or once the rename took effect: the driver
    /// can no longer tell what the live file holds.
    pub(crate) poisons: bool,
}

/// A state directory whose lock the caller holds (see [`Store::lock`]).
#[derive(Debug)]
pub(crate) struct Store {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
}

impl Store {
    /// Creates `dir` if needed (durably, see the module docs) and takes its
    /// lock. Nothing is read before the lock is held. The guard is returned
    /// apart from the store so its owner, not the committer thread, decides
    /// when the lock goes: a committer that died must not release it while
    /// its driver still answers reads.
    pub(crate) fn lock(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
    ) -> Result<(Store, LockGuard), FileDriverError> {
        ensure_dir(vfs.as_ref(), dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = match vfs.try_lock(&lock_path) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                return Err(FileDriverError::AlreadyLocked {
                    path: lock_path,
                    backtrace: Bt::capture(),
                });
            }
            Err(err) => return Err(FileDriverError::io(FileOp::Lock, lock_path, err)),
        };
        let store = Store {
            vfs,
            dir: dir.to_path_buf(),
        };
        Ok((store, lock))
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads and validates all three files, then removes `*.tmp` debris.
    ///
    /// Debris is removed only after every file decoded, so a directory that
    /// is refused as corrupt is left exactly as it was found.
    pub(crate) fn load(&self) -> Result<Snapshot, FileDriverError> {
        failpoint("file_driver::open")
            .map_err(|err| FileDriverError::io(FileOp::Read, &self.dir, err))?;
        // A process that died between a rename and its directory fsync left
        // the new file visible but not yet durable: make it durable before
        // anything read here is served or acknowledged as durable.
        self.vfs
            .sync_dir(&self.dir)
            .map_err(|err| FileDriverError::io(FileOp::FsyncDir, &self.dir, err))?;
        let files = read_files(self.vfs.as_ref(), &self.dir)?;
        let mut removed = 0;
        for kind in FileKind::ALL {
            let temp = self.path(kind.temp_name());
            match self.vfs.remove_file(&temp) {
                Ok(()) => removed += 1,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(FileDriverError::io(FileOp::RemoveTemp, temp, err)),
            }
        }
        crate::metrics::temp_files_removed(removed);
        Ok(Snapshot {
            high_water: files.high_water.unwrap_or(0),
            dense: files.dense.unwrap_or_default(),
            leases: files.leases.unwrap_or_default(),
        })
    }

    /// The first state file present in the directory, if any.
    pub(crate) fn existing_state_file(&self) -> Result<Option<PathBuf>, FileDriverError> {
        for kind in FileKind::ALL {
            let path = self.path(kind.name());
            match self.vfs.probe(&path) {
                Ok(Entry::Missing) => {}
                Ok(_) => return Ok(Some(path)),
                Err(err) => return Err(FileDriverError::io(FileOp::Inspect, path, err)),
            }
        }
        Ok(None)
    }

    /// Steps 1 to 3 of the protocol for one file: write `X.tmp`, fsync it,
    /// rename it over `X`. The caller runs [`Store::sync_dir`] once for all
    /// the files of a batch before it treats any of them as durable.
    ///
    /// Returns how long the temp file's fsync took.
    pub(crate) fn stage(&self, kind: FileKind, bytes: &[u8]) -> Result<Duration, StageFailure> {
        let temp = self.path(kind.temp_name());
        let live = self.path(kind.name());
        let transient = |op, path: &Path, err| StageFailure {
            error: FileDriverError::io(op, path, err),
            poisons: false,
        };
        let poisoning = |op, path: &Path, err| StageFailure {
            error: FileDriverError::io(op, path, err),
            poisons: true,
        };

        // Step 1: crash or failure leaves only debris; the live file is as it was.
        let mut file = self
            .write_temp(&temp, bytes)
            .map_err(|err| transient(FileOp::WriteTemp, &temp, err))?;

        // Step 2: a failed fsync may have dropped pages for good: poison.
        let fsync_started = Instant::now();
        sync_temp(file.as_mut()).map_err(|err| poisoning(FileOp::FsyncTemp, &temp, err))?;
        let fsync_time = fsync_started.elapsed();
        drop(file);

        // Step 3: a failed rename renamed nothing; the live file is as it was.
        failpoint("file_driver::before_rename")
            .and_then(|()| self.vfs.rename(&temp, &live))
            .map_err(|err| transient(FileOp::Rename, &live, err))?;
        // From here the live file holds the new record: any failure poisons.
        failpoint("file_driver::after_rename")
            .map_err(|err| poisoning(FileOp::Rename, &live, err))?;
        Ok(fsync_time)
    }

    fn write_temp(&self, temp: &Path, bytes: &[u8]) -> io::Result<Box<dyn VfsFile>> {
        failpoint("file_driver::before_temp_write")?;
        let mut file = self.vfs.create(temp)?;
        file.write_all(bytes)?;
        failpoint("file_driver::after_temp_write")?;
        Ok(file)
    }

    /// Step 4: makes every rename staged so far durable. Returns how long
    /// the directory fsync took.
    ///
    /// # Errors
    ///
    /// Always poisoning: the caller must refuse every later write.
    pub(crate) fn sync_dir(&self) -> Result<Duration, FileDriverError> {
        let started = Instant::now();
        failpoint("file_driver::before_dir_fsync")
            .and_then(|()| self.vfs.sync_dir(&self.dir))
            .and_then(|()| failpoint("file_driver::after_dir_fsync"))
            .map_err(|err| FileDriverError::io(FileOp::FsyncDir, &self.dir, err))?;
        Ok(started.elapsed())
    }
}

fn sync_temp(file: &mut dyn VfsFile) -> io::Result<()> {
    failpoint("file_driver::before_temp_fsync")?;
    file.sync()?;
    failpoint("file_driver::after_temp_fsync")
}

/// The three files of a state directory, decoded; `None` where a file is
/// missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Files {
    pub(crate) high_water: Option<u64>,
    pub(crate) dense: Option<DenseState>,
    pub(crate) leases: Option<Vec<LeaseRecord>>,
}

/// Reads and decodes `state`, `dense` and `leases`. Reads only: safe without
/// the lock, because live files are only ever replaced whole by rename.
pub(crate) fn read_files(vfs: &dyn Vfs, dir: &Path) -> Result<Files, FileDriverError> {
    Ok(Files {
        high_water: read_decoded(vfs, dir, FileKind::State, record::decode)?,
        dense: read_decoded(vfs, dir, FileKind::Dense, dense_record::decode)?,
        leases: read_decoded(vfs, dir, FileKind::Leases, lease_record::decode)?,
    })
}

fn read_decoded<T>(
    vfs: &dyn Vfs,
    dir: &Path,
    kind: FileKind,
    decode: impl FnOnce(&[u8]) -> Result<T, crate::record::RecordError>,
) -> Result<Option<T>, FileDriverError> {
    let path = dir.join(kind.name());
    match vfs.read(&path) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => decode(&bytes)
            .map(Some)
            .map_err(|err| FileDriverError::corrupt(path, err)),
        Err(err) => Err(FileDriverError::io(FileOp::Read, path, err)),
    }
}

/// The directory a path's entry lives in. A relative path's last component
/// lives in "."; the walk stops there, and at the root.
fn parent_dir(path: &Path) -> Option<&Path> {
    if path == Path::new(".") {
        return None;
    }
    match path.parent() {
        Some(parent) if parent.as_os_str().is_empty() => Some(Path::new(".")),
        other => other,
    }
}

/// Makes sure `dir` exists as a directory, creating what is missing, then
/// makes its entry durable all the way up.
///
/// The directory is fsynced upwards on *every* open, not only when this
/// call created it: a directory made by an earlier open that died before
/// its parent's fsync, or by a `mkdir -p` just before start-up, is only as
/// durable as the entries above it, and everything acknowledged later lives
/// inside it. Fsyncing a directory with nothing pending is cheap.
fn ensure_dir(vfs: &dyn Vfs, dir: &Path) -> Result<(), FileDriverError> {
    let mut missing = Vec::new();
    let mut cursor = dir;
    loop {
        match vfs.probe(cursor) {
            Ok(Entry::Directory) => break,
            Ok(Entry::Other) => {
                return Err(FileDriverError::NotADirectory {
                    path: cursor.to_path_buf(),
                    backtrace: Bt::capture(),
                });
            }
            Ok(Entry::Missing) => {
                missing.push(cursor);
                match parent_dir(cursor) {
                    Some(parent) => cursor = parent,
                    // Nothing above to probe: let create_dir say why.
                    None => break,
                }
            }
            // A component above is not a directory (`file/sub`): walk up to
            // it, so the error names the file that is in the way.
            Err(err) if err.kind() == io::ErrorKind::NotADirectory => match parent_dir(cursor) {
                Some(parent) => cursor = parent,
                None => return Err(FileDriverError::io(FileOp::Inspect, cursor, err)),
            },
            Err(err) => return Err(FileDriverError::io(FileOp::Inspect, cursor, err)),
        }
    }
    for created in missing.iter().rev() {
        match vfs.create_dir(created) {
            Ok(()) => {}
            // Someone else created it meanwhile; the lock sorts out who owns it.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(FileDriverError::io(FileOp::CreateDir, *created, err)),
        }
    }
    let mut cursor = dir;
    while let Some(parent) = parent_dir(cursor) {
        vfs.sync_dir(parent)
            .map_err(|err| FileDriverError::io(FileOp::FsyncDir, parent, err))?;
        cursor = parent;
    }
    Ok(())
}
