//! The filesystem seam: every filesystem operation the driver performs goes
//! through [`Vfs`] (paths, before a state directory is open) and [`VfsDir`]
//! (names inside the one directory the driver opened and locked).
//!
//! The real filesystem is [`StdFs`]; it is what
//! [`FileDriver::open_or_init`] uses. The traits are public so tests (this
//! crate's and yours) can run the real driver on a filesystem that fails,
//! fills up, or loses unsynced data on purpose, the way redb's
//! `StorageBackend` and raft-engine's `FileSystem` are used. With the
//! `simfs` feature, `SimFs` (the `sim` module) is one: in memory, it knows
//! what a power cut would keep, and can lose power, kill the process or
//! fail an operation at any operation.
//!
//! # Why a directory handle
//!
//! The owner of a state directory is the directory the driver opened, not
//! its path. Once open, every read, write, rename and fsync goes through
//! [`VfsDir`], which on Unix holds an open descriptor of the directory and
//! works relative to it (`openat`, `renameat`, `unlinkat`, `fsync(dirfd)`):
//! if an operator moves the directory or puts another one at its path, the
//! driver keeps writing into the directory it locked, never into the new
//! one, and [`VfsDir::check_owner`] tells the committer to stop
//! acknowledging. Nothing inside the directory is followed through a
//! symbolic link, and temp files are created exclusively, so nothing
//! planted in the directory is written through.
//!
//! # Extended attributes
//!
//! The directory's identity (see [`crate::identity_record`]) is kept in an
//! extended attribute of the directory itself, not in a file inside it, so
//! that the directory holds exactly the files upstream's tools accept.
//! [`VfsDir::get_xattr`], [`VfsDir::set_xattr`] and
//! [`VfsDir::remove_xattr`] work on the opened handle (`fgetxattr`,
//! `fsetxattr`, `fremovexattr` on Linux and macOS); where a filesystem or
//! platform has none they answer [`io::ErrorKind::Unsupported`] and the
//! driver works without an identity.
//!
//! [`FileDriver::open_or_init`]: crate::FileDriver::open_or_init

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What a path names, as [`Vfs::probe`] and [`VfsDir::probe`] report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Nothing exists at the path.
    Missing,
    /// A directory ([`Vfs::probe`] follows symbolic links; [`VfsDir::probe`]
    /// does not).
    Directory,
    /// Anything else: a regular file, a symbolic link inside a state
    /// directory, a socket, a device.
    Other,
}

/// What [`VfsDir::check_owner`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// The path still leads to the directory that was opened, and its
    /// `LOCK` is still the file that was locked.
    Intact,
    /// The path no longer leads to the opened directory: it was moved,
    /// removed, or another directory (a restore, a copy) now sits there.
    DirectoryReplaced,
    /// The directory's `LOCK` file was removed or replaced by another file,
    /// so a peer that knows only `LOCK` could lock it.
    LockReplaced,
}

/// What makes a directory itself, whatever path leads to it: its device
/// and inode numbers. Two copies of a state directory (a `cp -a`, a restore
/// from a backup) have different identities even though their files are
/// equal; a block-level clone (a disk snapshot, a VM image) may keep them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DirIdentity {
    /// The device number (`st_dev`).
    pub device: u64,
    /// The inode number (`st_ino`).
    pub inode: u64,
}

impl fmt::Display for DirIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device {:#x} inode {}", self.device, self.inode)
    }
}

/// An exclusive lock; dropping it releases the lock.
pub struct LockGuard(#[allow(dead_code)] Box<dyn Send + Sync>);

impl LockGuard {
    /// Wraps whatever keeps the lock held (for [`StdFs`], the open file or
    /// directory whose flock is released when the guard is dropped).
    pub fn new(holder: impl Send + Sync + 'static) -> Self {
        Self(Box::new(holder))
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

/// A file opened for writing by [`VfsDir::create_new`].
pub trait VfsFile: Send {
    /// Writes all of `bytes` at the current position.
    ///
    /// # Errors
    ///
    /// The underlying write's error (`ENOSPC`, `EIO`, ...).
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Makes everything written so far durable (`fsync`; on macOS the
    /// `F_FULLFSYNC` that `std::fs::File::sync_all` issues).
    ///
    /// # Errors
    ///
    /// The fsync's error. After it the kernel may have dropped the data it
    /// could not write, so the driver never retries: it poisons itself.
    fn sync(&mut self) -> io::Result<()>;
}

/// The path-level operations the driver performs before a state directory
/// is open: finding, creating and opening it.
///
/// Implementations must behave like a POSIX filesystem: creations and
/// renames inside a directory are durable only after that directory was
/// synced.
pub trait Vfs: Send + Sync + fmt::Debug + 'static {
    /// Reports what exists at `path`, following symbolic links.
    ///
    /// # Errors
    ///
    /// Any error other than "not found" (which is [`Entry::Missing`]).
    fn probe(&self, path: &Path) -> io::Result<Entry>;

    /// Creates one directory, private to its owner (mode 0700 whatever the
    /// umask); its parent exists.
    ///
    /// # Errors
    ///
    /// The `mkdir` error; `AlreadyExists` when something is already there.
    fn create_dir(&self, path: &Path) -> io::Result<()>;

    /// The canonical path of an existing directory: absolute, with every
    /// symbolic link resolved, so its real parent can be synced.
    ///
    /// # Errors
    ///
    /// The resolution's error.
    fn resolve(&self, path: &Path) -> io::Result<PathBuf>;

    /// Makes a directory's entries durable (fsync of the directory).
    ///
    /// # Errors
    ///
    /// Opening or fsyncing the directory failed.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Opens the directory at `path` for the driver's whole life; every
    /// later operation goes through the handle.
    ///
    /// # Errors
    ///
    /// The `open` error (`ENOTDIR` when it is not a directory).
    fn open_dir(&self, path: &Path) -> io::Result<Box<dyn VfsDir>>;
}

/// One open state directory. Every name is a plain file name inside it
/// (`state`, `state.tmp`, `LOCK`); nothing is followed through a symbolic
/// link.
pub trait VfsDir: Send + Sync + fmt::Debug {
    /// The directory's permission bits (`st_mode & 0o7777`); `None` on a
    /// platform that has none.
    ///
    /// # Errors
    ///
    /// The `fstat` error.
    fn mode(&self) -> io::Result<Option<u32>>;

    /// Takes an exclusive lock on the directory itself, without waiting.
    /// `Ok(None)` means another owner holds it. This lock is what makes the
    /// directory, not its `LOCK` file, the thing that is owned: deleting
    /// `LOCK` does not release it.
    ///
    /// # Errors
    ///
    /// Locking failed for a reason other than contention.
    fn try_lock_dir(&self) -> io::Result<Option<LockGuard>>;

    /// Creates `name` if missing (0600, never truncating or replacing it,
    /// never through a symbolic link) and takes an exclusive lock on it
    /// without waiting. `Ok(None)` means another owner holds it. The handle
    /// remembers which file it locked, for [`VfsDir::check_owner`].
    ///
    /// # Errors
    ///
    /// Opening or creating the file failed, or locking failed for a reason
    /// other than contention.
    fn try_lock_file(&self, name: &str) -> io::Result<Option<LockGuard>>;

    /// Reports what `name` is, without following a symbolic link.
    ///
    /// # Errors
    ///
    /// Any error other than "not found".
    fn probe(&self, name: &str) -> io::Result<Entry>;

    /// Reads a whole regular file; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    ///
    /// Any error other than "not found"; a symbolic link or anything but a
    /// regular file is an error.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;

    /// Removes whatever file or symbolic link is at `name` (a symbolic link
    /// itself, never its target), then creates a new empty regular file
    /// there exclusively, mode 0600 whatever the umask, and opens it for
    /// writing.
    ///
    /// # Errors
    ///
    /// The `unlink` or `open` error; `AlreadyExists` if something was
    /// planted between the two.
    fn create_new(&self, name: &str) -> io::Result<Box<dyn VfsFile>>;

    /// Atomically renames `from` over `to`, both in this directory.
    ///
    /// # Errors
    ///
    /// The `rename` error; nothing was renamed.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;

    /// Makes this directory's entries durable (fsync of the directory), and
    /// with them every rename made in it since the last sync.
    ///
    /// # Errors
    ///
    /// The fsync's error.
    fn sync(&self) -> io::Result<()>;

    /// Removes a file.
    ///
    /// # Errors
    ///
    /// The `unlink` error, `NotFound` included.
    fn remove(&self, name: &str) -> io::Result<()>;

    /// Whether `path` still leads to this directory and the file locked by
    /// [`VfsDir::try_lock_file`] is still at `lock_name`.
    ///
    /// # Errors
    ///
    /// A `stat` failed for a reason other than the path or file being gone.
    fn check_owner(&self, path: &Path, lock_name: &str) -> io::Result<Ownership>;

    /// Whether the file locked by [`VfsDir::try_lock_file`] is still at
    /// `lock_name`: the half of [`VfsDir::check_owner`] that guards the
    /// directory's own files, cheap enough to run before every rename.
    ///
    /// # Errors
    ///
    /// A `stat` failed for a reason other than the file being gone.
    fn check_lock(&self, lock_name: &str) -> io::Result<Ownership>;

    /// The directory's [`DirIdentity`], taken when it was opened; `None`
    /// where the platform (or a simulated filesystem) has none.
    fn identity(&self) -> Option<DirIdentity> {
        None
    }

    /// Reads the extended attribute `name` of the directory itself (not of
    /// a file in it), through the opened handle, never by path; `Ok(None)`
    /// when the directory has no attribute of that name.
    ///
    /// The default answers [`io::ErrorKind::Unsupported`], as a filesystem
    /// without extended attributes does: an implementation that wraps
    /// another must forward all three attribute calls, or the directories
    /// it opens have no identity (see [`crate::identity_record`]).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] where the filesystem or the platform
    /// has no user extended attributes (`ENOTSUP`, `EOPNOTSUPP`: tmpfs
    /// before Linux 6.6, ramfs, vfat, most network filesystems, Windows);
    /// any other error of the read.
    fn get_xattr(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let _ = name;
        Err(xattrs_unsupported())
    }

    /// Sets the extended attribute `name` of the directory itself to
    /// `value`, creating or replacing it in one step (a reader sees the old
    /// value or the new one, never a mix). Like a rename, the change is
    /// durable only after [`VfsDir::sync`].
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] as for [`VfsDir::get_xattr`] (the
    /// default); any other error of the write (`ENOSPC`, `EDQUOT`, `EPERM`,
    /// `EROFS`).
    fn set_xattr(&self, name: &str, value: &[u8]) -> io::Result<()> {
        let _ = (name, value);
        Err(xattrs_unsupported())
    }

    /// Removes the extended attribute `name` of the directory itself.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] when there is none;
    /// [`io::ErrorKind::Unsupported`] as for [`VfsDir::get_xattr`] (the
    /// default); any other error of the removal.
    fn remove_xattr(&self, name: &str) -> io::Result<()> {
        let _ = name;
        Err(xattrs_unsupported())
    }
}

/// The error a [`VfsDir`] answers on a filesystem or platform without user
/// extended attributes: kind [`io::ErrorKind::Unsupported`], which is what
/// the driver looks at.
pub fn xattrs_unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the filesystem has no extended attributes",
    )
}

/// The real filesystem: `std::fs`, and on Unix `rustix`'s `*at` calls on
/// the opened directory plus `fs2` (flock) locks.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

impl Vfs for StdFs {
    fn probe(&self, path: &Path) -> io::Result<Entry> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(Entry::Directory),
            Ok(_) => Ok(Entry::Other),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Entry::Missing),
            Err(err) => Err(err),
        }
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        platform::create_private_dir(path)
    }

    fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        platform::sync_dir_path(path)
    }

    fn open_dir(&self, path: &Path) -> io::Result<Box<dyn VfsDir>> {
        Ok(Box::new(platform::StdDir::open(path)?))
    }
}

#[cfg(feature = "simfs")]
#[cfg_attr(docsrs, doc(cfg(feature = "simfs")))]
pub mod sim;
#[cfg(feature = "simfs")]
#[cfg_attr(docsrs, doc(cfg(feature = "simfs")))]
pub use sim::SimFs;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as platform;

// Every platform without the `*at` calls; Windows is the one this crate
// is checked on.
#[cfg(not(unix))]
mod windows;
#[cfg(not(unix))]
use windows as platform;
