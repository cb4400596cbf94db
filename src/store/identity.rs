//! The directory's identity (its origin id and where it was last opened),
//! kept in the extended attribute `IDENTITY_XATTR` of the directory; an
//! `IDENTITY` file of an earlier version is carried into it.

use std::io;
use std::path::Path;

use super::{Store, read_decoded_named};
use crate::error::{Bt, FileDriverError, FileOp};
use crate::identity_record::{self, Origin};
use crate::layout::{IDENTITY_FILE, IDENTITY_XATTR};
use crate::vfs::{DirIdentity, VfsDir};

/// A new origin: 16 random bytes from the operating system.
fn new_origin(now_ms: u64, opened_in: DirIdentity) -> io::Result<Origin> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|err| io::Error::other(err.to_string()))?;
    Ok(Origin {
        id,
        created_ms: now_ms,
        opened_in,
    })
}

impl Store {
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
                let origin = match new_origin(now_ms, self.place()) {
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
    fn place(&self) -> DirIdentity {
        self.handle.identity().unwrap_or(DirIdentity {
            device: 0,
            inode: 0,
        })
    }

    /// `origin` as it is to be recorded here: unchanged when it names this
    /// directory (or the platform cannot tell), else moved to this
    /// directory's place, with a warning that this is a copy.
    fn here(&self, origin: Origin) -> Origin {
        let place = self.place();
        if self.handle.identity().is_none() || origin.opened_in == place {
            return origin;
        }
        tracing::warn!(
            dir = %self.dir.display(),
            origin = %origin.id_hex(),
            was = %origin.opened_in,
            now = %place,
            "this state directory is a copy, a restore or a move of the one its identity was recorded in: if that one still exists, at most one of the two may ever serve (two oracles on copies hand out the same values); a copy of a backup hands out again what the lost oracle issued since the backup: make a new oracle from a backup with `tsoracle-file restore BACKUP NEWDIR` instead"
        );
        Origin {
            opened_in: place,
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
