//! The filesystem seam: every filesystem operation the driver performs goes
//! through [`Vfs`].
//!
//! The only implementation shipped is [`StdFs`], plain `std::fs` plus an
//! `fs2` advisory lock; it is what [`FileDriver::open_or_init`] uses. The
//! trait is public so tests (this crate's and yours) can run the real driver
//! on a filesystem that fails, fills up, or loses unsynced data on purpose,
//! the way redb's `StorageBackend` and raft-engine's `FileSystem` are used.
//!
//! The seam is deliberately small: the durable protocol needs only these
//! eight operations, and each is one syscall or two on Linux.
//!
//! [`FileDriver::open_or_init`]: crate::FileDriver::open_or_init

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use fs2::FileExt;

/// What a path names, as [`Vfs::probe`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Nothing exists at the path.
    Missing,
    /// A directory.
    Directory,
    /// Anything else: a regular file, a socket, a device.
    Other,
}

/// An exclusive lock on a state directory; dropping it releases the lock.
pub struct LockGuard(#[allow(dead_code)] Box<dyn Send + Sync>);

impl LockGuard {
    /// Wraps whatever keeps the lock held (for [`StdFs`], the open `LOCK`
    /// file whose flock is released when it is closed).
    pub fn new(holder: impl Send + Sync + 'static) -> Self {
        Self(Box::new(holder))
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

/// A file opened for writing by [`Vfs::create`].
pub trait VfsFile: Send {
    /// Writes all of `bytes` at the current position.
    ///
    /// # Errors
    ///
    /// The underlying write's error (`ENOSPC`, `EIO`, ...).
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Makes everything written so far durable (`fsync`).
    ///
    /// # Errors
    ///
    /// The fsync's error. After it the kernel may have dropped the data it
    /// could not write, so the driver never retries: it poisons itself.
    fn sync(&mut self) -> io::Result<()>;
}

/// The filesystem operations the driver performs, and nothing else.
///
/// Implementations must behave like a POSIX filesystem: `rename` replaces
/// its target atomically, and creations and renames inside a directory are
/// durable only after [`Vfs::sync_dir`] on that directory returned.
pub trait Vfs: Send + Sync + fmt::Debug + 'static {
    /// Reports what exists at `path`; a symbolic link to a directory counts
    /// as a directory.
    ///
    /// # Errors
    ///
    /// Any error other than "not found" (which is [`Entry::Missing`]).
    fn probe(&self, path: &Path) -> io::Result<Entry>;

    /// Creates one directory; its parent exists.
    ///
    /// # Errors
    ///
    /// The `mkdir` error; `AlreadyExists` when something is already there.
    fn create_dir(&self, path: &Path) -> io::Result<()>;

    /// Creates `path` if missing (never truncating or replacing it) and
    /// takes an exclusive lock on it without waiting. `Ok(None)` means
    /// another owner, in this process or another, holds the lock.
    ///
    /// # Errors
    ///
    /// Opening or creating the file failed, or locking failed for a reason
    /// other than contention.
    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>>;

    /// Reads a whole file; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    ///
    /// Any error other than "not found".
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;

    /// Creates `path`, or truncates it if it exists, and opens it for writing.
    ///
    /// # Errors
    ///
    /// The `open` error.
    fn create(&self, path: &Path) -> io::Result<Box<dyn VfsFile>>;

    /// Atomically renames `from` over `to`.
    ///
    /// # Errors
    ///
    /// The `rename` error; nothing was renamed.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Makes the directory's entries durable (fsync of the directory).
    ///
    /// # Errors
    ///
    /// Opening or fsyncing the directory failed.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Removes a file.
    ///
    /// # Errors
    ///
    /// The `unlink` error, `NotFound` included.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
}

/// The real filesystem: `std::fs` and an `fs2` (flock) lock.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

impl VfsFile for File {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        Write::write_all(self, bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

impl Vfs for StdFs {
    fn probe(&self, path: &Path) -> io::Result<Entry> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(Entry::Directory),
            // A symlink to a directory is a directory for our purposes.
            Ok(meta) if meta.file_type().is_symlink() => match std::fs::metadata(path) {
                Ok(target) if target.is_dir() => Ok(Entry::Directory),
                Ok(_) => Ok(Entry::Other),
                Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Entry::Missing),
                Err(err) => Err(err),
            },
            Ok(_) => Ok(Entry::Other),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Entry::Missing),
            Err(err) => Err(err),
        }
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        // Never truncate: LOCK is a stable inode that every owner locks.
        // Replacing it would let two processes lock two different inodes.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match FileExt::try_lock_exclusive(&file) {
            Ok(()) => Ok(Some(LockGuard::new(Flock(file)))),
            Err(err) if err.raw_os_error() == fs2::lock_contended_error().raw_os_error() => {
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(file))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        sync_dir_impl(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}

/// An flocked `LOCK` file. The lock belongs to the open file description,
/// which a child process spawned by any thread shares until it execs: merely
/// closing our descriptor would leave the lock held for that instant. An
/// explicit unlock releases it for every descriptor at once.
struct Flock(File);

impl Drop for Flock {
    fn drop(&mut self) {
        // Nothing to do on failure: closing the file releases it anyway.
        let _ = FileExt::unlock(&self.0);
    }
}

/// A rename or a creation changes the directory, not the file: on Linux
/// (ext4, xfs, btrfs) it survives a power cut only once the directory itself
/// has been fsynced, which is done through a read-only handle on it.
#[cfg(unix)]
fn sync_dir_impl(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Windows cannot open a directory as a file without extra flags, and NTFS
/// journals renames with the metadata it already flushes; there is nothing
/// more to sync.
#[cfg(not(unix))]
fn sync_dir_impl(_path: &Path) -> io::Result<()> {
    Ok(())
}
