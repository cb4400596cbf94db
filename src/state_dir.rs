//! Reading a state directory without opening a driver: for tools that look
//! at an oracle's state while it runs, or after an incident.

use std::path::{Path, PathBuf};

use tsoracle_core::LeaseRecord;

use crate::dense_record::DenseState;
use crate::error::{FileDriverError, FileOp};
use crate::identity_record::Origin;
use crate::layout::{self, LOCK_FILE, PENDING_FILE, RETIRED_FILE, SEEDING_FILE};
use crate::record::Mark;
use crate::store::{self, XattrOrigin};
use crate::vfs::{DirIdentity, Entry, Vfs};

/// Where [`StateDir::origin`] was found, or why there is none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginSource {
    /// The directory's extended attribute
    /// [`IDENTITY_XATTR`](crate::IDENTITY_XATTR), where this crate keeps it.
    Xattr,
    /// An `IDENTITY` file that an earlier version of this crate wrote into
    /// the directory (the attribute is missing, or the filesystem has
    /// none). Upstream's tools refuse a directory that holds it; the next
    /// open carries it into the attribute and removes it (on a filesystem
    /// without extended attributes it only removes it).
    IdentityFile,
    /// No identity, on a filesystem that has extended attributes: a
    /// directory another tool made, one this crate never opened, or a copy
    /// made without its extended attributes (`cp -r`, `rsync` without
    /// `-X`).
    Missing,
    /// No identity: the filesystem (or the platform) has no user extended
    /// attributes, so the directory cannot keep one.
    Unsupported,
}

/// What a state directory holds, as [`read_state_dir`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateDir {
    /// The directory read.
    pub dir: PathBuf,
    /// The committed high-water; `None` when there is no `state` file (a
    /// driver opening the directory starts at 0).
    pub high_water: Option<u64>,
    /// The dense counters and key cap; `None` when there is no `dense` file
    /// (no counters, default cap).
    pub dense: Option<DenseState>,
    /// The lease set; `None` when there is no `leases` file (empty set).
    pub leases: Option<Vec<LeaseRecord>>,
    /// The directory's device and inode: different for every copy of a
    /// directory (see [`DirIdentity`]); `None` where the platform has none.
    pub identity: Option<DirIdentity>,
    /// Its identity: the origin id every copy of this oracle shares, and
    /// where it was last opened; `None` when it has none
    /// ([`StateDir::origin_source`] says why).
    pub origin: Option<Origin>,
    /// Where [`StateDir::origin`] was read from, or why there is none.
    pub origin_source: OriginSource,
    /// Whether an `IDENTITY` file of an earlier version of this crate is in
    /// the directory, which upstream's tools refuse; the next open removes
    /// it (after carrying it into the attribute, when that is missing).
    pub identity_file: bool,
    /// The mark of the `state` record, if any (see
    /// [`record`](crate::record)): a directory no driver serves.
    pub mark: Option<Mark>,
    /// Whether the directory is retired (its record is marked so, or a
    /// `RETIRED` note is present): the state was migrated to another oracle
    /// and every open refuses the directory.
    pub retired: bool,
    /// Whether the directory is an interrupted seed (its record is marked
    /// seeding, or an earlier version's `SEEDING` note is present), which
    /// every open refuses.
    pub seeding: bool,
    /// Whether the directory waits for `tsoracle-file migrate finish` (its
    /// record is marked pending, or a `PENDING` note is present), which
    /// every open refuses.
    pub pending: bool,
    /// Whether a `LOCK` file exists (it says nothing about who holds it).
    pub has_lock_file: bool,
    /// Leftover `*.tmp` files of interrupted writes, which the next open
    /// removes.
    pub leftover_temp_files: Vec<PathBuf>,
}

/// Reads and checks every file of the state directory `dir`, and its
/// identity attribute, without taking its lock and without changing
/// anything, even while a driver runs on it: live files are only ever
/// replaced whole, by rename, and the attribute in one step.
///
/// ```
/// use tsoracle_driver_file::{FileDriver, read_state_dir};
///
/// let dir = tempfile::tempdir()?;
/// FileDriver::init_seeded(dir.path(), 1_700_000_000_000)?;
/// let found = read_state_dir(dir.path())?;
/// assert_eq!(found.high_water, Some(1_700_000_000_000));
/// assert!(found.dense.is_none() && found.leases.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`FileDriverError::Corrupt`] naming the first file that does not decode,
/// [`FileDriverError::CorruptIdentity`] for a damaged identity attribute,
/// [`FileDriverError::NotADirectory`], or [`FileDriverError::Io`] (a missing
/// directory is `Io` with [`FileOp::Inspect`] and kind `NotFound`).
pub fn read_state_dir(dir: impl AsRef<Path>) -> Result<StateDir, FileDriverError> {
    crate::OpenOptions::new().read_state_dir(dir)
}

/// [`read_state_dir`] through `vfs`
/// ([`OpenOptions::read_state_dir`](crate::OpenOptions::read_state_dir)).
pub(crate) fn read(dir: &Path, vfs: &dyn Vfs) -> Result<StateDir, FileDriverError> {
    store::require_dir(vfs, dir)?;
    let handle = vfs
        .open_dir(dir)
        .map_err(|err| FileDriverError::io(FileOp::OpenDir, dir, err))?;
    let files = store::read_files(handle.as_ref(), dir)?;
    let exists = |name: &str| {
        handle
            .probe(name)
            .map(|entry| entry != Entry::Missing)
            .map_err(|err| FileDriverError::io(FileOp::Inspect, dir.join(name), err))
    };
    let mut leftover_temp_files = Vec::new();
    for temp in layout::temp_files() {
        if exists(temp)? {
            leftover_temp_files.push(dir.join(temp));
        }
    }
    let stored = store::read_identity(handle.as_ref(), dir)?;
    let (origin, origin_source) = match (stored.xattr, stored.file) {
        (XattrOrigin::Present(origin), _) => (Some(origin), OriginSource::Xattr),
        (_, Some(origin)) => (Some(origin), OriginSource::IdentityFile),
        (XattrOrigin::Absent, None) => (None, OriginSource::Missing),
        (XattrOrigin::Unsupported, None) => (None, OriginSource::Unsupported),
    };
    Ok(StateDir {
        dir: dir.to_path_buf(),
        identity: handle.identity(),
        origin,
        origin_source,
        identity_file: stored.file.is_some(),
        high_water: files.high_water,
        dense: files.dense,
        leases: files.leases,
        has_lock_file: exists(LOCK_FILE)?,
        mark: files.mark,
        retired: files.mark == Some(Mark::Retired) || exists(RETIRED_FILE)?,
        seeding: files.mark == Some(Mark::Seeding) || exists(SEEDING_FILE)?,
        pending: files.mark == Some(Mark::Pending) || exists(PENDING_FILE)?,
        leftover_temp_files,
    })
}
