//! [`StoppedDir`]: a state directory held stopped, under its lock, for
//! tools that carry its state elsewhere (`export --receipt`, `migrate out`)
//! and then retire it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tsoracle_core::LeaseRecord;

use crate::dense_record::{self, DenseState};
use crate::error::{Bt, FileDriverError, FileOp};
use crate::fence::{self, RETIRED_FILE, SEEDING_FILE};
use crate::store::{DirLock, FileKind, LOCK_FILE, Store, decode_named};
use crate::vfs::{StdFs, Vfs};
use crate::{lease_record, record};

/// The bytes of one file as read under the lock (`None`: absent).
#[derive(Clone, Debug)]
#[cfg_attr(not(feature = "receipt"), allow(dead_code))] // read by the receipt
pub(crate) struct RawFile {
    pub(crate) name: &'static str,
    pub(crate) bytes: Option<Vec<u8>>,
}

impl RawFile {
    /// These bytes decoded as the file they came from in `dir`.
    fn decode<T>(
        &self,
        dir: &Path,
        decode: impl FnOnce(&[u8]) -> Result<T, crate::record::RecordError>,
    ) -> Result<Option<T>, FileDriverError> {
        decode_named(dir, self.name, self.bytes.as_deref(), decode)
    }
}

/// A state directory whose lock this value holds, with its files read and
/// checked once: no driver can open it, and nothing changes it, while the
/// value lives (except [`retire`](Self::retire) and
/// [`reinstate`](Self::reinstate)).
///
/// Unlike [`FileDriver::open_or_init`](crate::FileDriver::open_or_init) it
/// never creates the directory, never removes `*.tmp` debris, and accepts a
/// retired directory (so `migrate out` can be re-run on one).
///
/// ```
/// use tsoracle_driver_file::{FileDriver, FileDriverError, StoppedDir};
///
/// let dir = tempfile::tempdir()?;
/// FileDriver::init_seeded(dir.path(), 1_764_000_000_000)?;
/// let stopped = StoppedDir::lock(dir.path())?;
/// assert_eq!(stopped.high_water(), Some(1_764_000_000_000));
///
/// // Mark it: a driver now refuses the directory, even after the lock goes.
/// stopped.retire("migrated to http://10.0.0.1:50551")?;
/// drop(stopped);
/// assert!(matches!(
///     FileDriver::open_or_init(dir.path()),
///     Err(FileDriverError::Retired { .. })
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct StoppedDir {
    dir: PathBuf,
    /// The opened, locked directory: markers are written through it.
    store: Store,
    /// `LOCK`, `dense`, `leases`, `state`, in the receipt's order.
    #[cfg_attr(not(feature = "receipt"), allow(dead_code))]
    files: [RawFile; 4],
    high_water: Option<u64>,
    dense: Option<DenseState>,
    leases: Option<Vec<LeaseRecord>>,
    _lock: DirLock,
}

impl StoppedDir {
    /// Takes the lock of the existing state directory `dir`, then reads and
    /// checks `state`, `dense` and `leases`.
    ///
    /// ```
    /// use tsoracle_driver_file::{FileDriver, FileDriverError, StoppedDir};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let driver = FileDriver::open_or_init(dir.path())?;
    /// // A running driver keeps it from being held stopped.
    /// assert!(matches!(StoppedDir::lock(dir.path()), Err(FileDriverError::AlreadyLocked { .. })));
    /// drop(driver);
    /// let stopped = StoppedDir::lock(dir.path())?;
    /// assert_eq!(stopped.high_water(), None); // never committed one
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`FileDriverError::Io`] with [`FileOp::Inspect`] and kind `NotFound`
    /// when `dir` does not exist; [`FileDriverError::NotADirectory`];
    /// [`FileDriverError::AlreadyLocked`] while a driver runs on it;
    /// [`FileDriverError::SeedingInterrupted`] for a half-seeded directory;
    /// [`FileDriverError::Corrupt`] naming the file; [`FileDriverError::Io`]
    /// for a failed read.
    pub fn lock(dir: impl AsRef<Path>) -> Result<StoppedDir, FileDriverError> {
        Self::lock_with(dir, Arc::new(StdFs))
    }

    /// [`lock`](Self::lock) on another [`Vfs`].
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock).
    pub fn lock_with(
        dir: impl AsRef<Path>,
        vfs: Arc<dyn Vfs>,
    ) -> Result<StoppedDir, FileDriverError> {
        let dir = dir.as_ref();
        crate::store::require_dir(vfs.as_ref(), dir)?;
        let (store, lock) = Store::lock(vfs, dir)?;
        if fence::exists(&store, SEEDING_FILE)? {
            return Err(FileDriverError::SeedingInterrupted {
                marker: dir.join(SEEDING_FILE),
                backtrace: Bt::capture(),
            });
        }
        // A rename left un-synced by a process that died is made durable
        // before anything read here is carried elsewhere.
        store.sync_dir()?;
        let read = |name: &'static str| -> Result<RawFile, FileDriverError> {
            let bytes = store
                .handle()
                .read(name)
                .map_err(|err| FileDriverError::io(FileOp::Read, dir.join(name), err))?;
            Ok(RawFile { name, bytes })
        };
        let [state, dense, leases] = FileKind::ALL.map(FileKind::name);
        let files = [read(LOCK_FILE)?, read(dense)?, read(leases)?, read(state)?];
        // Decode the very bytes that are hashed, so a receipt's values and
        // its checksums describe one and the same content.
        let [_, dense_raw, leases_raw, state_raw] = &files;
        let dense = dense_raw.decode(dir, dense_record::decode)?;
        let leases = leases_raw.decode(dir, lease_record::decode)?;
        let high_water = state_raw.decode(dir, record::decode)?;
        Ok(StoppedDir {
            dir: dir.to_path_buf(),
            store,
            files,
            high_water,
            dense,
            leases,
            _lock: lock,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The committed high-water; `None` without a `state` file.
    pub fn high_water(&self) -> Option<u64> {
        self.high_water
    }

    /// The dense counters and key cap (the default for a missing `dense`).
    pub fn dense(&self) -> DenseState {
        self.dense.clone().unwrap_or_default()
    }

    /// The lease set (empty for a missing `leases`).
    pub fn leases(&self) -> &[LeaseRecord] {
        self.leases.as_deref().unwrap_or_default()
    }

    #[cfg_attr(not(feature = "receipt"), allow(dead_code))]
    pub(crate) fn files(&self) -> &[RawFile; 4] {
        &self.files
    }

    /// The content of the `RETIRED` marker, when the directory carries one.
    ///
    /// # Errors
    ///
    /// [`FileDriverError::Io`] when the marker cannot be read.
    pub fn retired_note(&self) -> Result<Option<String>, FileDriverError> {
        fence::read_marker(&self.store, RETIRED_FILE)
    }

    /// Writes (or replaces) the `RETIRED` marker with `note`, durably: from
    /// then on [`FileDriver::open_or_init`](crate::FileDriver::open_or_init)
    /// refuses the directory with [`FileDriverError::Retired`], whose
    /// message quotes the note's first line.
    ///
    /// # Errors
    ///
    /// [`FileDriverError::Io`] for a failed write, fsync or rename.
    pub fn retire(&self, note: &str) -> Result<(), FileDriverError> {
        fence::write_marker(&self.store, RETIRED_FILE, note.as_bytes())
    }

    /// Removes the `RETIRED` marker, durably, so the directory can serve
    /// again. Safe only when the oracle its state was carried to never
    /// served anyone (an abandoned migration): otherwise that oracle issued
    /// values above this directory's, which this one would issue again.
    ///
    /// # Errors
    ///
    /// [`FileDriverError::Io`] when the marker cannot be removed or the
    /// directory fsynced.
    pub fn reinstate(&self) -> Result<(), FileDriverError> {
        fence::remove_marker(&self.store, RETIRED_FILE)
    }
}
