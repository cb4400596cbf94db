//! Reading a state directory without opening a driver: for tools that look
//! at an oracle's state while it runs, or after an incident.

use std::path::{Path, PathBuf};

use tsoracle_core::LeaseRecord;

use crate::dense_record::DenseState;
use crate::error::{FileDriverError, FileOp};
use crate::identity_record::{self, Origin};
use crate::store::{self, IDENTITY_FILE, LOCK_FILE};
use crate::vfs::{DirIdentity, Entry, StdFs, Vfs};

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
    /// Its `IDENTITY` file: the origin id every copy of this oracle shares,
    /// and where it was last opened; `None` when the file is missing (no
    /// driver of this crate has opened the directory yet).
    pub origin: Option<Origin>,
    /// Whether a `RETIRED` marker is present: the state was migrated to
    /// another oracle and every open refuses the directory.
    pub retired: bool,
    /// Whether a `SEEDING` marker is present: an interrupted seed that every
    /// open refuses.
    pub seeding: bool,
    /// Whether a `LOCK` file exists (it says nothing about who holds it).
    pub has_lock_file: bool,
    /// Leftover `*.tmp` files of interrupted writes, which the next open
    /// removes.
    pub leftover_temp_files: Vec<PathBuf>,
}

/// Reads and checks every file of the state directory `dir` without taking
/// its lock and without changing anything, even while a driver runs on it:
/// live files are only ever replaced whole, by rename.
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
/// [`FileDriverError::NotADirectory`], or [`FileDriverError::Io`] (a missing
/// directory is `Io` with [`FileOp::Inspect`] and kind `NotFound`).
pub fn read_state_dir(dir: impl AsRef<Path>) -> Result<StateDir, FileDriverError> {
    let dir = dir.as_ref();
    let vfs = StdFs;
    store::require_dir(&vfs, dir)?;
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
    for temp in store::temp_files() {
        if exists(temp)? {
            leftover_temp_files.push(dir.join(temp));
        }
    }
    Ok(StateDir {
        dir: dir.to_path_buf(),
        identity: handle.identity(),
        origin: store::read_decoded_named(
            handle.as_ref(),
            dir,
            IDENTITY_FILE,
            identity_record::decode,
        )?,
        high_water: files.high_water,
        dense: files.dense,
        leases: files.leases,
        has_lock_file: exists(LOCK_FILE)?,
        retired: exists(crate::fence::RETIRED_FILE)?,
        seeding: exists(crate::fence::SEEDING_FILE)?,
        leftover_temp_files,
    })
}
