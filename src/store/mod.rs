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
//! # Which directories are fsynced at open
//!
//! The state directory is fsynced before anything is read (above). Every
//! directory open creates is made durable in its parent before it is used;
//! the parent of an existing state directory is fsynced too (an operator's
//! `mkdir -p` just before start-up leaves its entry in the page cache, and
//! everything acknowledged later lives inside it). Ancestors above are not
//! touched. As PostgreSQL does, a parent the service user may traverse but
//! not read (a 0711 home directory: `EACCES`) and a filesystem that cannot
//! fsync a directory at all (`EINVAL`) are tolerated with a warning: they
//! would otherwise make the directory impossible to open.
//!
//! # One owner
//!
//! Open locks the directory itself (an flock on its descriptor) and then
//! its `LOCK` file, both before reading anything. Deleting `LOCK` therefore
//! does not let a second driver in, while a peer that knows only `LOCK`
//! is still excluded by it. All later I/O goes through the opened
//! directory's descriptor (see [`crate::vfs`]), so a driver never writes
//! into a directory it did not lock. Two checks guard what a driver does
//! once someone has deleted `LOCK` (so that a peer knowing only `LOCK` may
//! have taken over) or moved the directory away:
//!
//! 1. Before each rename, `LOCK` must still be the file it locked: a
//!    displaced driver never renames its older value over the state a peer
//!    has acknowledged since.
//! 2. After the directory fsync and before anything is published or
//!    acknowledged, the path must still lead to the opened directory and
//!    `LOCK` must still be the file it locked. The `LOCK` half closes the
//!    race the first check leaves: a peer that took over between check 1
//!    and the rename read the old state and may overwrite ours later, so
//!    our value must not be acknowledged. A peer that takes over after
//!    check 2 opens after our directory fsync and reads our value.
//!
//! Either check failing stops the driver for good
//! ([`FileDriverError::Displaced`]): the next server started on the path
//! would not see what it wrote. Each costs one `stat`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tsoracle_core::LeaseRecord;

use crate::dense_record::DenseState;
use crate::error::{Bt, FileDriverError, FileOp};
use crate::vfs::{Entry, LockGuard, Ownership, VfsDir, VfsFile};

mod failpoints;
mod identity;
mod load;
mod open;

pub use failpoints::FAILPOINTS;
use failpoints::failpoint;
pub(crate) use identity::{XattrOrigin, read_identity};
pub(crate) use load::{Files, decode_named, read_decoded_named, read_files};
pub(crate) use open::require_dir;

pub(crate) use crate::layout::FileKind;
use crate::layout::LOCK_FILE;

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

/// The locks that make a driver the owner of its directory: the directory
/// itself and its `LOCK` file. Dropping it releases both.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: LockGuard,
    _dir: LockGuard,
}

/// `EINVAL`: what Linux and macOS return for an fsync the filesystem does
/// not support (some FUSE and network filesystems, for directories).
const EINVAL: i32 = 22;

/// Whether `err` says the filesystem cannot fsync a directory at all.
fn cannot_fsync_dirs(err: &io::Error) -> bool {
    err.raw_os_error() == Some(EINVAL)
}

/// A state directory whose lock the caller holds (see [`Store::lock`]).
#[derive(Debug)]
pub(crate) struct Store {
    /// The path as the caller gave it, for messages.
    dir: PathBuf,
    /// The same path made absolute (not resolved): what a restarted server
    /// would open, so what the owner check compares with.
    check_path: PathBuf,
    /// The opened directory; every operation goes through it.
    handle: Box<dyn VfsDir>,
    /// Set once a directory fsync answered `EINVAL`, so the warning is
    /// logged once.
    dir_fsync_unsupported: AtomicBool,
}

impl Store {
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The opened directory, for the marker files (`crate::marks`).
    pub(crate) fn handle(&self) -> &dyn VfsDir {
        self.handle.as_ref()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Fsyncs the state directory; `EINVAL` (a filesystem that cannot fsync
    /// a directory) is tolerated with one warning, as PostgreSQL does.
    fn sync_handle(&self) -> io::Result<()> {
        match self.handle.sync() {
            Err(err) if cannot_fsync_dirs(&err) => {
                if !self.dir_fsync_unsupported.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        "the filesystem cannot fsync a directory (EINVAL): a rename is durable only once the filesystem commits it by itself"
                    );
                }
                Ok(())
            }
            other => other,
        }
    }

    /// Whether the path still leads to the directory this store locked and
    /// `LOCK` is still the file it locked; an error stops acknowledging.
    pub(crate) fn check_owner(&self) -> Result<(), FileDriverError> {
        match self.handle.check_owner(&self.check_path, LOCK_FILE) {
            Ok(Ownership::Intact) => Ok(()),
            Ok(found) => Err(self.displaced(found)),
            Err(err) => Err(FileDriverError::io(FileOp::CheckOwner, &self.dir, err)),
        }
    }

    fn displaced(&self, found: Ownership) -> FileDriverError {
        FileDriverError::Displaced {
            dir: self.dir.clone(),
            found,
            backtrace: Bt::capture(),
        }
    }

    /// Replaces one file of the directory durably, outside a batch: steps 1
    /// to 4 of the protocol for `name` alone (a marked `state`, the notes
    /// of `crate::marks`), then the owner check that a committer makes
    /// before it acknowledges (the path still leads here and `LOCK` is
    /// still ours: see the module docs). A crash leaves the file whole or
    /// as it was.
    pub(crate) fn write_whole(
        &self,
        temp_name: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), FileDriverError> {
        self.stage_named(temp_name, name, bytes)
            .map_err(|failure| failure.error)?;
        self.sync_dir()?;
        self.check_owner()
    }

    /// [`Store::write_whole`] for one of the three state files.
    pub(crate) fn write_file(&self, kind: FileKind, bytes: &[u8]) -> Result<(), FileDriverError> {
        self.write_whole(kind.temp_name(), kind.name(), bytes)
    }

    /// The first state file present in the directory, if any.
    pub(crate) fn existing_state_file(&self) -> Result<Option<PathBuf>, FileDriverError> {
        for kind in FileKind::ALL {
            let path = self.path(kind.name());
            match self.handle.probe(kind.name()) {
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
        self.stage_named(kind.temp_name(), kind.name(), bytes)
    }

    /// [`Store::stage`] for any file of the directory, by name (see
    /// [`Store::write_whole`]).
    pub(crate) fn stage_named(
        &self,
        temp_name: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<Duration, StageFailure> {
        let temp = self.path(temp_name);
        let live = self.path(name);
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
            .write_temp(temp_name, bytes)
            .map_err(|err| transient(FileOp::WriteTemp, &temp, err))?;

        // Step 2: a failed fsync may have dropped pages for good: poison.
        let fsync_started = Instant::now();
        sync_temp(file.as_mut()).map_err(|err| poisoning(FileOp::FsyncTemp, &temp, err))?;
        let fsync_time = fsync_started.elapsed();
        drop(file);

        // Before the live file is replaced: is LOCK still the file this
        // driver locked? If a peer that knows only LOCK took over (after
        // someone deleted it), renaming now would overwrite that peer's
        // acknowledged state with an older value. Nothing is renamed.
        match self.handle.check_lock(LOCK_FILE) {
            Ok(Ownership::Intact) => {}
            Ok(found) => {
                return Err(StageFailure {
                    error: self.displaced(found),
                    poisons: true,
                });
            }
            Err(err) => return Err(poisoning(FileOp::CheckOwner, &self.dir, err)),
        }

        // Step 3: a failed rename renamed nothing; the live file is as it was.
        failpoint("file_driver::before_rename")
            .and_then(|()| self.handle.rename(temp_name, name))
            .map_err(|err| transient(FileOp::Rename, &live, err))?;
        // From here the live file holds the new record: any failure poisons.
        failpoint("file_driver::after_rename")
            .map_err(|err| poisoning(FileOp::Rename, &live, err))?;
        Ok(fsync_time)
    }

    fn write_temp(&self, temp: &str, bytes: &[u8]) -> io::Result<Box<dyn VfsFile>> {
        failpoint("file_driver::before_temp_write")?;
        // Created exclusively after removing whatever is there: nothing
        // planted at `X.tmp` (a symbolic link, a hard link) is written through.
        let mut file = self.handle.create_new(temp)?;
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
            .and_then(|()| self.sync_handle())
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
