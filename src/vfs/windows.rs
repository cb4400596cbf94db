//! [`StdFs`](super::StdFs) where there are no `*at` calls (Windows): a state
//! directory is its path, and the checks are as strong as paths allow.
//!
//! Windows has no directory fsync: a rename is made durable by flushing the
//! renamed file (`FlushFileBuffers` through `sync_all`), which commits the
//! NTFS metadata change with it. The directory itself cannot be locked
//! while others use it, so only `LOCK` is locked, and the owner check can
//! only see that the path is still a directory holding a `LOCK`. Extended
//! attributes are left to the trait's default (unsupported), so a state
//! directory here has no identity.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fs2::FileExt;

use super::{Entry, LockGuard, Ownership, VfsDir, VfsFile};

pub(super) fn create_private_dir(path: &Path) -> io::Result<()> {
    std::fs::create_dir(path)
}

/// Nothing to do: see the module docs.
pub(super) fn sync_dir_path(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[derive(Debug)]
pub(super) struct StdDir {
    path: PathBuf,
    /// Files renamed into place since the last [`VfsDir::sync`], which
    /// flushes them: the rename's durability step, so that its failure
    /// poisons like a failed directory fsync.
    renamed: Mutex<Vec<String>>,
}

impl StdDir {
    pub(super) fn open(path: &Path) -> io::Result<StdDir> {
        if !std::fs::metadata(path)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", path.display()),
            ));
        }
        Ok(StdDir {
            path: path.to_path_buf(),
            renamed: Mutex::new(Vec::new()),
        })
    }

    fn at(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

fn refuse_links(path: &Path) -> io::Result<Option<std::fs::Metadata>> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link; nothing inside a state directory is followed through one",
                path.display()
            ),
        )),
        Ok(meta) => Ok(Some(meta)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

struct Flock(File);

impl Drop for Flock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.0);
    }
}

impl VfsDir for StdDir {
    fn mode(&self) -> io::Result<Option<u32>> {
        Ok(None)
    }

    fn try_lock_dir(&self) -> io::Result<Option<LockGuard>> {
        Ok(Some(LockGuard::new(())))
    }

    fn try_lock_file(&self, name: &str) -> io::Result<Option<LockGuard>> {
        let path = self.at(name);
        refuse_links(&path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match FileExt::try_lock_exclusive(&file) {
            Ok(()) => Ok(Some(LockGuard::new(Flock(file)))),
            Err(err) if err.raw_os_error() == fs2::lock_contended_error().raw_os_error() => {
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    fn probe(&self, name: &str) -> io::Result<Entry> {
        Ok(match refuse_links(&self.at(name)) {
            Ok(None) => Entry::Missing,
            Ok(Some(meta)) if meta.is_dir() => Entry::Directory,
            Ok(Some(_)) | Err(_) => Entry::Other,
        })
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let path = self.at(name);
        match refuse_links(&path)? {
            None => Ok(None),
            Some(meta) if meta.is_dir() => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{name} is a directory"),
            )),
            Some(meta) if !meta.is_file() => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name} is not a regular file"),
            )),
            Some(_) => std::fs::read(&path).map(Some),
        }
    }

    fn create_new(&self, name: &str) -> io::Result<Box<dyn VfsFile>> {
        let path = self.at(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Box::new(PortableFile(file)))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.at(from), self.at(to))?;
        crate::poison::lock(&self.renamed).push(to.to_owned());
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        // Write-through for the renames: flushing a renamed file commits its
        // metadata, the new name included.
        let renamed = std::mem::take(&mut *crate::poison::lock(&self.renamed));
        for name in renamed {
            OpenOptions::new()
                .write(true)
                .open(self.at(&name))?
                .sync_all()?;
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.at(name))
    }

    fn check_owner(&self, path: &Path, lock_name: &str) -> io::Result<Ownership> {
        if !std::fs::metadata(path).is_ok_and(|meta| meta.is_dir()) {
            return Ok(Ownership::DirectoryReplaced);
        }
        self.check_lock(lock_name)
    }

    fn check_lock(&self, lock_name: &str) -> io::Result<Ownership> {
        if std::fs::symlink_metadata(self.at(lock_name)).is_err() {
            return Ok(Ownership::LockReplaced);
        }
        Ok(Ownership::Intact)
    }
}

struct PortableFile(File);

impl VfsFile for PortableFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        Write::write_all(&mut self.0, bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}
