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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tsoracle_core::LeaseRecord;

use crate::dense_record::{self, DenseState};
use crate::error::{Bt, FileDriverError, FileOp};
use crate::identity_record::{self, Origin};
use crate::lease_record;
use crate::record;
use crate::vfs::{Entry, LockGuard, Ownership, Vfs, VfsDir, VfsFile};

pub(crate) use crate::layout::{FileKind, temp_files};
use crate::layout::{IDENTITY_FILE, IDENTITY_XATTR, LOCK_FILE};

/// A new origin: 16 random bytes from the operating system.
fn new_origin(now_ms: u64, device: u64, inode: u64) -> io::Result<Origin> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|err| io::Error::other(err.to_string()))?;
    Ok(Origin {
        id,
        created_ms: now_ms,
        device,
        inode,
    })
}

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
    // The kinds carry the OS's wording, as a real error of that kind would.
    let (kind, text) = match arg.as_deref() {
        Some("enospc") => (io::ErrorKind::StorageFull, "No space left on device: "),
        Some("erofs") => (io::ErrorKind::ReadOnlyFilesystem, "Read-only file system: "),
        Some("eacces") => (io::ErrorKind::PermissionDenied, "Permission denied: "),
        _ => (io::ErrorKind::Other, ""),
    };
    io::Error::new(kind, format!("{text}injected by failpoint {name}"))
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
    /// Creates `dir` if needed (durably, see the module docs), opens it,
    /// refuses it if others may write it, and takes its locks. Nothing is
    /// read before the locks are held. The locks are returned apart from
    /// the store so their owner, not the committer thread, decides when
    /// they go: a committer that died must not release them while its
    /// driver still answers reads.
    pub(crate) fn lock(vfs: Arc<dyn Vfs>, dir: &Path) -> Result<(Store, DirLock), FileDriverError> {
        let created = ensure_dir(vfs.as_ref(), dir)?;
        let real = vfs
            .resolve(dir)
            .map_err(|err| FileDriverError::io(FileOp::Inspect, dir, err))?;
        let handle = vfs
            .open_dir(&real)
            .map_err(|err| FileDriverError::io(FileOp::OpenDir, dir, err))?;
        check_permissions(handle.as_ref(), dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let already_locked = || FileDriverError::AlreadyLocked {
            path: lock_path.clone(),
            backtrace: Bt::capture(),
        };
        // The directory first: a second opener that finds it locked leaves
        // without creating a LOCK file the owner would see as replaced.
        let dir_lock = match handle.try_lock_dir() {
            Ok(Some(lock)) => lock,
            Ok(None) => return Err(already_locked()),
            Err(err) => return Err(FileDriverError::io(FileOp::Lock, dir, err)),
        };
        let file_lock = match handle.try_lock_file(LOCK_FILE) {
            Ok(Some(lock)) => lock,
            Ok(None) => return Err(already_locked()),
            Err(err) => return Err(FileDriverError::io(FileOp::Lock, &lock_path, err)),
        };
        // A directory made just now was made durable in its parent by
        // ensure_dir; an existing one is made durable here, best effort.
        if !created && let Some(parent) = real.parent() {
            sync_parent(vfs.as_ref(), parent, false)?;
        }
        let check_path = std::path::absolute(dir)
            .map_err(|err| FileDriverError::io(FileOp::Inspect, dir, err))?;
        let store = Store {
            dir: dir.to_path_buf(),
            check_path,
            handle,
            dir_fsync_unsupported: AtomicBool::new(false),
        };
        // The path could have been switched between resolving and opening
        // it: the directory locked must be the one the path leads to.
        match store.check_owner() {
            Ok(()) => {}
            Err(FileDriverError::Displaced { .. }) => {
                let changed = io::Error::other(
                    "the directory at this path changed while it was being opened; open it again",
                );
                return Err(FileDriverError::io(FileOp::OpenDir, dir, changed));
            }
            Err(err) => return Err(err),
        }
        Ok((
            store,
            DirLock {
                _file: file_lock,
                _dir: dir_lock,
            },
        ))
    }

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

    /// Reads and validates all three files, then removes `*.tmp` debris.
    /// Returns them as found ([`Snapshot::from`] gives what a driver
    /// serves), so the caller also knows which exist.
    ///
    /// Debris is removed only after every file decoded and `accept` agreed
    /// to what they hold, so a directory that is refused as corrupt, or by
    /// `accept` (a marked one), is left exactly as it was found.
    pub(crate) fn load(
        &self,
        accept: impl FnOnce(&Files) -> Result<(), FileDriverError>,
    ) -> Result<Files, FileDriverError> {
        failpoint("file_driver::open")
            .map_err(|err| FileDriverError::io(FileOp::Read, &self.dir, err))?;
        // A process that died between a rename and its directory fsync left
        // the new file visible but not yet durable: make it durable before
        // anything read here is served or acknowledged as durable.
        self.sync_handle()
            .map_err(|err| FileDriverError::io(FileOp::FsyncDir, &self.dir, err))?;
        let files = read_files(self.handle.as_ref(), &self.dir)?;
        accept(&files)?;
        let mut removed = 0;
        for temp in temp_files() {
            match self.handle.remove(temp) {
                Ok(()) => removed += 1,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(FileDriverError::io(
                        FileOp::RemoveTemp,
                        self.path(temp),
                        err,
                    ));
                }
            }
        }
        crate::metrics::temp_files_removed(removed);
        Ok(files)
    }

    /// Reads the directory's identity, and records it when it names
    /// another directory than this one (a copy, a restore or a move: logged,
    /// and the new place recorded) or, for a directory that holds no state
    /// yet, when there is none (a new origin). A directory with state but
    /// no identity (made by another tool of the ecosystem, or copied without
    /// its extended attributes) is left as it is: opening it only reads.
    /// Called with the lock held, after [`Store::load`]. Returns the origin
    /// as recorded, if any.
    ///
    /// The identity lives in the directory's extended attribute
    /// [`IDENTITY_XATTR`], so that the directory holds only what upstream's
    /// tools accept. An `IDENTITY` file left by an earlier version is
    /// carried into the attribute and then removed, in that order:
    ///
    /// 1. set the attribute, fsync the directory: a crash leaves the file,
    ///    and maybe the attribute too; the next open finds the file and
    ///    carries it again, or finds both and goes on at step 2;
    /// 2. fsync the directory (the attribute found in step 1's crash case
    ///    may not be durable yet), unlink the file, fsync again: a crash
    ///    leaves the file or not, and the attribute in both cases.
    ///
    /// So the identity is always in the file, the attribute or both, never
    /// in neither.
    ///
    /// Recording the identity never stops an open: where the filesystem has
    /// no extended attributes the oracle runs without one, and any other
    /// failure to set the attribute is logged and tried again at the next
    /// open, since nothing the oracle serves depends on it. What does stop
    /// it: a damaged identity ([`FileDriverError::CorruptIdentity`] for the
    /// attribute, [`FileDriverError::Corrupt`] for an `IDENTITY` file),
    /// which is refused like a damaged state file (nothing is guessed); an
    /// attribute that cannot be read for another reason than "not
    /// supported"; and a directory fsync that fails, which means the
    /// directory's own durability is in doubt, as at [`Store::load`].
    ///
    /// `fresh` says whether the directory counts as holding no state yet:
    /// the caller knows (seeding writes its state just before).
    pub(crate) fn ensure_identity(
        &self,
        now_ms: u64,
        fresh: bool,
    ) -> Result<Option<Origin>, FileDriverError> {
        let stored = read_identity(self.handle.as_ref(), &self.dir)?;
        match (stored.xattr, stored.file) {
            (XattrOrigin::Unsupported, file) => {
                if file.is_some() {
                    self.drop_identity_file_without_xattrs()?;
                } else if fresh {
                    tracing::info!(
                        dir = %self.dir.display(),
                        "the filesystem has no extended attributes: this oracle has no identity, so copies of it cannot be told apart by their origin id"
                    );
                }
                Ok(None)
            }
            (XattrOrigin::Present(origin), file) => {
                let origin = self.record_place(origin)?;
                if file.is_some() {
                    // An earlier open carried the file into the attribute
                    // and stopped before removing it: step 2.
                    self.remove_identity_file()?;
                }
                Ok(Some(origin))
            }
            (XattrOrigin::Absent, Some(origin)) => {
                let moved = self.here(origin);
                match self.store_origin(&moved)? {
                    Recorded::Yes => {
                        self.remove_identity_file()?;
                        Ok(Some(moved))
                    }
                    Recorded::Unsupported => {
                        // The attribute was readable but cannot be set
                        // (a filesystem that reports it late).
                        self.drop_identity_file_without_xattrs()?;
                        Ok(None)
                    }
                    // The file stays, as it was: the next open tries again.
                    Recorded::Failed => Ok(Some(origin)),
                }
            }
            (XattrOrigin::Absent, None) if fresh => {
                let (device, inode) = self.place();
                let origin = match new_origin(now_ms, device, inode) {
                    Ok(origin) => origin,
                    Err(err) => {
                        tracing::warn!(
                            dir = %self.dir.display(),
                            error = %err,
                            "no random origin id for the new oracle: it serves without an identity"
                        );
                        return Ok(None);
                    }
                };
                Ok(match self.store_origin(&origin)? {
                    Recorded::Yes => Some(origin),
                    Recorded::Unsupported | Recorded::Failed => None,
                })
            }
            (XattrOrigin::Absent, None) => Ok(None),
        }
    }

    /// The device and inode of this directory; zeros where there are none.
    fn place(&self) -> (u64, u64) {
        self.handle
            .identity()
            .map_or((0, 0), |id| (id.device, id.inode))
    }

    /// `origin` as it is to be recorded here: unchanged when it names this
    /// directory (or the platform cannot tell), else moved to this
    /// directory's place, with a warning that this is a copy.
    fn here(&self, origin: Origin) -> Origin {
        let (device, inode) = self.place();
        if self.handle.identity().is_none() || (origin.device, origin.inode) == (device, inode) {
            return origin;
        }
        tracing::warn!(
            dir = %self.dir.display(),
            origin = %origin.id_hex(),
            was = %format!("device {:#x} inode {}", origin.device, origin.inode),
            now = %format!("device {device:#x} inode {inode}"),
            "this state directory is a copy, a restore or a move of the one its identity was recorded in: if that one still exists, at most one of the two may ever serve (two oracles on copies hand out the same values); a copy of a backup hands out again what the lost oracle issued since the backup: make a new oracle from a backup with `tsoracle-file restore BACKUP NEWDIR` instead"
        );
        Origin {
            device,
            inode,
            ..origin
        }
    }

    /// Records this directory's place in the attribute when `origin` (read
    /// from it) names another one. Returns the origin as recorded now.
    fn record_place(&self, origin: Origin) -> Result<Origin, FileDriverError> {
        let moved = self.here(origin);
        if moved == origin {
            return Ok(origin);
        }
        Ok(match self.store_origin(&moved)? {
            Recorded::Yes => moved,
            Recorded::Unsupported | Recorded::Failed => origin,
        })
    }

    /// Sets the identity attribute to `origin` and fsyncs the directory, so
    /// that the attribute is durable before anything relies on it. A
    /// failure to set it is logged, not returned (see
    /// [`Store::ensure_identity`]); a failed fsync is returned.
    fn store_origin(&self, origin: &Origin) -> Result<Recorded, FileDriverError> {
        match self
            .handle
            .set_xattr(IDENTITY_XATTR, &identity_record::encode(origin))
        {
            Ok(()) => {
                self.sync_handle()
                    .map_err(|err| FileDriverError::io(FileOp::FsyncDir, &self.dir, err))?;
                Ok(Recorded::Yes)
            }
            Err(err) if err.kind() == io::ErrorKind::Unsupported => Ok(Recorded::Unsupported),
            Err(err) => {
                tracing::warn!(
                    dir = %self.dir.display(),
                    attribute = IDENTITY_XATTR,
                    error = %err,
                    "cannot record the state directory's identity in its extended attribute; the oracle serves as usual, the next open tries again"
                );
                Ok(Recorded::Failed)
            }
        }
    }

    /// Step 2 of carrying an `IDENTITY` file into the attribute (see
    /// [`Store::ensure_identity`]): fsync, unlink, fsync. A file that cannot
    /// be unlinked is logged and left for the next open.
    fn remove_identity_file(&self) -> Result<(), FileDriverError> {
        let fsync = |err| FileDriverError::io(FileOp::FsyncDir, &self.dir, err);
        self.sync_handle().map_err(fsync)?;
        match self.handle.remove(IDENTITY_FILE) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => {
                tracing::warn!(
                    file = %self.path(IDENTITY_FILE).display(),
                    error = %err,
                    "cannot remove the IDENTITY file an earlier version wrote; upstream's tools refuse the directory while it is there, and the next open tries again"
                );
                return Ok(());
            }
        }
        self.sync_handle().map_err(fsync)
    }

    /// An `IDENTITY` file on a filesystem without extended attributes.
    ///
    /// Keeping it would keep the identity, but also keep the directory one
    /// that upstream's tools refuse (`unexpected file in state directory`),
    /// which is what this crate set out to end; and writing new ones is no
    /// longer done anywhere. The identity carries nothing the oracle's
    /// values depend on: it only lets an operator tell copies apart. So the
    /// file is removed, and the loss said once, at info: the directory is
    /// then exactly what upstream's driver would have left.
    fn drop_identity_file_without_xattrs(&self) -> Result<(), FileDriverError> {
        tracing::info!(
            file = %self.path(IDENTITY_FILE).display(),
            "the filesystem has no extended attributes, so the identity in the IDENTITY file an earlier version wrote cannot be kept: the file is removed, so that upstream's tools accept the directory, and copies of this oracle can no longer be told apart by their origin id"
        );
        self.remove_identity_file()
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
    fn stage_named(
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

/// The three files of a state directory, decoded; `None` where a file is
/// missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Files {
    pub(crate) high_water: Option<u64>,
    /// The mark of the `state` record, if it carries one (the directory
    /// must not serve; `crate::marks` refuses it).
    pub(crate) mark: Option<record::Mark>,
    pub(crate) dense: Option<DenseState>,
    pub(crate) leases: Option<Vec<LeaseRecord>>,
}

impl Files {
    /// Whether any of the three files exists: a directory without one holds
    /// no state yet.
    pub(crate) fn hold_state(&self) -> bool {
        self.high_water.is_some() || self.dense.is_some() || self.leases.is_some()
    }
}

impl From<Files> for Snapshot {
    /// What a missing file means: high-water 0, no counters (default cap),
    /// no leases.
    fn from(files: Files) -> Self {
        Snapshot {
            high_water: files.high_water.unwrap_or(0),
            dense: files.dense.unwrap_or_default(),
            leases: files.leases.unwrap_or_default(),
        }
    }
}

/// Reads and decodes `state`, `dense` and `leases` of the opened directory
/// `handle` (named `dir` in errors). Reads only: safe without the lock,
/// because live files are only ever replaced whole by rename.
pub(crate) fn read_files(handle: &dyn VfsDir, dir: &Path) -> Result<Files, FileDriverError> {
    let state = read_decoded(handle, dir, FileKind::State, record::decode_record)?;
    Ok(Files {
        high_water: state.map(|state| state.high_water),
        mark: state.and_then(|state| state.mark),
        dense: read_decoded(handle, dir, FileKind::Dense, dense_record::decode)?,
        leases: read_decoded(handle, dir, FileKind::Leases, lease_record::decode)?,
    })
}

fn read_decoded<T>(
    handle: &dyn VfsDir,
    dir: &Path,
    kind: FileKind,
    decode: impl FnOnce(&[u8]) -> Result<T, crate::record::RecordError>,
) -> Result<Option<T>, FileDriverError> {
    read_decoded_named(handle, dir, kind.name(), decode)
}

/// Reads and decodes the file `name` of the opened directory; `None` when
/// it does not exist.
pub(crate) fn read_decoded_named<T>(
    handle: &dyn VfsDir,
    dir: &Path,
    name: &str,
    decode: impl FnOnce(&[u8]) -> Result<T, crate::record::RecordError>,
) -> Result<Option<T>, FileDriverError> {
    match handle.read(name) {
        Ok(bytes) => decode_named(dir, name, bytes.as_deref(), decode),
        Err(err) => Err(FileDriverError::io(FileOp::Read, dir.join(name), err)),
    }
}

/// What [`VfsDir::get_xattr`] found in the identity attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum XattrOrigin {
    /// A valid identity.
    Present(Origin),
    /// No identity attribute.
    Absent,
    /// The filesystem has no extended attributes.
    Unsupported,
}

/// Whether [`Store::store_origin`] recorded the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recorded {
    Yes,
    Unsupported,
    /// Logged: the attribute could not be set.
    Failed,
}

/// A directory's identity as it is stored: its attribute, and the
/// `IDENTITY` file of an earlier version, if one is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StoredIdentity {
    pub(crate) xattr: XattrOrigin,
    pub(crate) file: Option<Origin>,
}

/// Reads and decodes the identity attribute and the `IDENTITY` file of the
/// opened directory `handle` (named `dir` in errors). Reads only.
pub(crate) fn read_identity(
    handle: &dyn VfsDir,
    dir: &Path,
) -> Result<StoredIdentity, FileDriverError> {
    let xattr = match handle.get_xattr(IDENTITY_XATTR) {
        Ok(Some(bytes)) => {
            XattrOrigin::Present(identity_record::decode(&bytes).map_err(|source| {
                FileDriverError::CorruptIdentity {
                    dir: dir.to_path_buf(),
                    source,
                    backtrace: Bt::capture(),
                }
            })?)
        }
        Ok(None) => XattrOrigin::Absent,
        Err(err) if err.kind() == io::ErrorKind::Unsupported => XattrOrigin::Unsupported,
        Err(err) => return Err(FileDriverError::io(FileOp::ReadIdentity, dir, err)),
    };
    let file = read_decoded_named(handle, dir, IDENTITY_FILE, identity_record::decode)?;
    Ok(StoredIdentity { xattr, file })
}

/// Decodes the bytes of the file `name` of `dir`, already read (`None`:
/// the file is missing); a defect is [`FileDriverError::Corrupt`] naming it.
pub(crate) fn decode_named<T>(
    dir: &Path,
    name: &str,
    bytes: Option<&[u8]>,
    decode: impl FnOnce(&[u8]) -> Result<T, crate::record::RecordError>,
) -> Result<Option<T>, FileDriverError> {
    bytes
        .map(|bytes| decode(bytes).map_err(|err| FileDriverError::corrupt(dir.join(name), err)))
        .transpose()
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

/// Makes sure `dir` exists as a directory, creating what is missing (each
/// private, mode 0700), and makes every directory it created durable in its
/// parent before anything is written in it. Returns whether it created the
/// state directory itself.
fn ensure_dir(vfs: &dyn Vfs, dir: &Path) -> Result<bool, FileDriverError> {
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
        if let Some(parent) = parent_dir(created) {
            sync_parent(vfs, parent, true)?;
        }
    }
    Ok(!missing.is_empty())
}

/// Fsyncs `parent`, the directory holding a state directory's entry (or an
/// entry open just created on the way to it).
///
/// For an existing state directory, `EINVAL` (no directory fsync on this
/// filesystem, even through `syncfs`) and `EACCES`/`EPERM` (a parent the
/// service user may traverse but not open, like a 0711 home directory) are
/// logged and tolerated, as PostgreSQL does. For a directory open just
/// created, only `EINVAL` is: without its entry durable a power cut would
/// take the new directory, and everything acknowledged in it, away.
fn sync_parent(vfs: &dyn Vfs, parent: &Path, just_created: bool) -> Result<(), FileDriverError> {
    match vfs.sync_dir(parent) {
        Ok(()) => Ok(()),
        Err(err)
            if cannot_fsync_dirs(&err)
                || (!just_created && err.kind() == io::ErrorKind::PermissionDenied) =>
        {
            tracing::warn!(
                parent = %parent.display(),
                error = %err,
                "cannot fsync the directory that holds the state directory; its entry is durable only once the filesystem commits it by itself"
            );
            Ok(())
        }
        Err(err) => Err(FileDriverError::io(FileOp::FsyncDir, parent, err)),
    }
}

/// Checks that `dir` exists and is a directory, for the callers that must
/// not create it (reading a directory, holding a stopped one).
pub(crate) fn require_dir(vfs: &dyn Vfs, dir: &Path) -> Result<(), FileDriverError> {
    match vfs.probe(dir) {
        Ok(Entry::Directory) => Ok(()),
        Ok(Entry::Other) => Err(FileDriverError::NotADirectory {
            path: dir.to_path_buf(),
            backtrace: Bt::capture(),
        }),
        Ok(Entry::Missing) => {
            let err = io::Error::new(io::ErrorKind::NotFound, "no such directory");
            Err(FileDriverError::io(FileOp::Inspect, dir, err))
        }
        Err(err) => Err(FileDriverError::io(FileOp::Inspect, dir, err)),
    }
}

/// Refuses a state directory that its group or others may write: anyone
/// who can write it can replace the state files, or `LOCK`, and make the
/// oracle hand out values twice. PostgreSQL and etcd refuse theirs too.
fn check_permissions(handle: &dyn VfsDir, dir: &Path) -> Result<(), FileDriverError> {
    match handle.mode() {
        Ok(Some(mode)) if mode & 0o022 != 0 => Err(FileDriverError::InsecurePermissions {
            dir: dir.to_path_buf(),
            mode,
            backtrace: Bt::capture(),
        }),
        Ok(_) => Ok(()),
        Err(err) => Err(FileDriverError::io(FileOp::Inspect, dir, err)),
    }
}
