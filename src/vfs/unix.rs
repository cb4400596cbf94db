//! [`StdFs`](super::StdFs) on Unix: a state directory is an open descriptor,
//! and every operation inside it is relative to that descriptor.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
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
    // Through a handle that cannot be a symbolic link planted meanwhile.
    let dir = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(rustix::fs::fchmod(&dir, private(DIR_MODE))?)
}

/// A rename or a creation changes the directory, not the file: on Linux
/// (ext4, xfs, btrfs) it survives a power cut only once the directory itself
/// has been fsynced, which is done through a read-only handle on it.
pub(super) fn sync_dir_path(path: &Path) -> io::Result<()> {
    let dir = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    sync_dir_fd(&dir)
}

/// Fsyncs an open directory, as durably as the platform allows.
///
/// - macOS: `F_FULLFSYNC` (which also flushes the drive's cache, as
///   `sync_all` does for files), falling back to `fsync` on a filesystem
///   that does not support it.
/// - Linux: `fsync`; where the filesystem refuses to fsync a directory
///   (`EINVAL`: some FUSE and network filesystems), `syncfs` of the whole
///   filesystem instead. Only if that fails too is `EINVAL` returned, which
///   the caller tolerates with a warning (see `store`).
fn sync_dir_fd(dir: &impl std::os::fd::AsFd) -> io::Result<()> {
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    if rustix::fs::fcntl_fullfsync(dir).is_ok() {
        return Ok(());
    }
    match rustix::fs::fsync(dir) {
        Ok(()) => Ok(()),
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Err(Errno::INVAL) => rustix::fs::syncfs(dir).map_err(|_| Errno::INVAL.into()),
        Err(err) => Err(err.into()),
    }
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

/// Sets exactly 0600 on a file just created: the umask may have removed
/// bits from the mode it was created with. A filesystem without Unix
/// permissions (vfat, CIFS with `noperm`) refuses; its files have no mode
/// to protect, so that refusal is not an error.
fn set_private_mode(fd: &impl std::os::fd::AsFd) -> io::Result<()> {
    match rustix::fs::fchmod(fd, private(FILE_MODE)) {
        Ok(()) => Ok(()),
        // NOTSUP and OPNOTSUPP are one number on Linux, two elsewhere.
        Err(err) if [Errno::PERM, Errno::NOTSUP, Errno::OPNOTSUPP].contains(&err) => Ok(()),
        Err(err) => Err(err.into()),
    }
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
                set_private_mode(&fd)?;
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
        // A corrupt size must not reserve a huge buffer up front; the read
        // grows the buffer as the bytes really arrive.
        let reserve = usize::try_from(meta.len()).unwrap_or(0).min(1 << 20);
        let mut bytes = Vec::with_capacity(reserve);
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
        set_private_mode(&fd)?;
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
        sync_dir_fd(self.dir.as_ref())
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
        self.check_lock(lock_name)
    }

    fn check_lock(&self, lock_name: &str) -> io::Result<Ownership> {
        let Some(locked) = self.locked.get() else {
            return Ok(Ownership::Intact);
        };
        match rustix::fs::statat(self.dir.as_ref(), lock_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if identity(&stat) == *locked => Ok(Ownership::Intact),
            Ok(_) | Err(Errno::NOENT) => Ok(Ownership::LockReplaced),
            Err(err) => Err(err.into()),
        }
    }

    fn identity(&self) -> Option<DirIdentity> {
        let (device, inode) = self.identity;
        Some(DirIdentity { device, inode })
    }

    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    fn get_xattr(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        xattr::get(self.dir.as_ref(), name)
    }

    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    fn set_xattr(&self, name: &str, value: &[u8]) -> io::Result<()> {
        xattr::set(self.dir.as_ref(), name, value)
    }

    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    fn remove_xattr(&self, name: &str) -> io::Result<()> {
        xattr::remove(self.dir.as_ref(), name)
    }
}

/// Extended attributes of the opened directory, through its descriptor
/// (`fgetxattr`, `fsetxattr`, `fremovexattr`): never by path, so they are
/// the attributes of the directory that was locked. Linux and macOS; other
/// Unixes keep the trait's default (unsupported).
#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
mod xattr {
    use std::fs::File;
    use std::io;

    use rustix::fs::XattrFlags;
    use rustix::io::Errno;

    /// "No such attribute": `ENODATA` on Linux, `ENOATTR` on macOS.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const NO_ATTRIBUTE: Errno = Errno::NODATA;
    #[cfg(target_vendor = "apple")]
    const NO_ATTRIBUTE: Errno = Errno::NOATTR;

    /// `ENOTSUP`/`EOPNOTSUPP` (one number on Linux, two on macOS) become
    /// [`io::ErrorKind::Unsupported`], the seam's word for "no extended
    /// attributes here"; the errno is kept as the source.
    fn error(err: Errno) -> io::Error {
        if err == Errno::NOTSUP || err == Errno::OPNOTSUPP {
            io::Error::new(io::ErrorKind::Unsupported, err)
        } else {
            err.into()
        }
    }

    pub(super) fn get(dir: &File, name: &str) -> io::Result<Option<Vec<u8>>> {
        // The size first, then the value; an attribute that grew in between
        // (another writer) answers ERANGE, and the size is asked again.
        for _ in 0..3 {
            let len = match rustix::fs::fgetxattr_query(dir, name) {
                Ok(len) => len,
                Err(err) if err == NO_ATTRIBUTE => return Ok(None),
                Err(err) => return Err(error(err)),
            };
            let mut value = vec![0u8; len];
            match rustix::fs::fgetxattr(dir, name, &mut value[..]) {
                Ok(read) => {
                    value.truncate(read);
                    return Ok(Some(value));
                }
                Err(Errno::RANGE) => continue,
                Err(err) if err == NO_ATTRIBUTE => return Ok(None),
                Err(err) => return Err(error(err)),
            }
        }
        Err(io::Error::other(format!(
            "the extended attribute {name} kept changing while it was read"
        )))
    }

    pub(super) fn set(dir: &File, name: &str, value: &[u8]) -> io::Result<()> {
        rustix::fs::fsetxattr(dir, name, value, XattrFlags::empty()).map_err(error)
    }

    pub(super) fn remove(dir: &File, name: &str) -> io::Result<()> {
        match rustix::fs::fremovexattr(dir, name) {
            Ok(()) => Ok(()),
            Err(err) if err == NO_ATTRIBUTE => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no extended attribute {name}"),
            )),
            Err(err) => Err(error(err)),
        }
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
