//! Opening a state directory: creating it (and its parents) durably,
//! refusing one others may write, taking its two locks, and checking that
//! the path still leads to the directory opened.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::{DirLock, Store, cannot_fsync_dirs};
use crate::error::{Bt, FileDriverError, FileOp};
use crate::layout::LOCK_FILE;
use crate::vfs::{Entry, Vfs, VfsDir};

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
