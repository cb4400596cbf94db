//! [`StoppedDir`]: a state directory held stopped, under its lock, for
//! tools that carry its state elsewhere (`export --receipt`, `migrate out`)
//! and then retire it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tsoracle_core::{LeaseRecord, PHYSICAL_MS_MAX, SeqKey};

use crate::dense_record::{self, DenseState};
use crate::error::{Bt, FileDriverError, FileOp};
use crate::layout::{FileKind, LOCK_FILE, SEEDING_FILE};
use crate::marks;
use crate::record::Mark;
use crate::store::{DirLock, Files, Store, decode_named};
use crate::vfs::Vfs;
use crate::{lease_record, record};

/// The bytes of one file as read under the lock (`None`: absent).
#[derive(Clone, Debug)]
#[cfg_attr(not(feature = "receipt"), allow(dead_code))] // read by the receipt
pub(crate) struct RawFile {
    /// Which file: one of the three state files, or `None` for `LOCK`.
    pub(crate) kind: Option<FileKind>,
    pub(crate) bytes: Option<Vec<u8>>,
}

impl RawFile {
    /// The file's name in the directory.
    pub(crate) fn name(&self) -> &'static str {
        self.kind.map_or(LOCK_FILE, FileKind::name)
    }

    /// These bytes decoded as the file they came from in `dir`.
    fn decode<T>(
        &self,
        dir: &Path,
        decode: impl FnOnce(&[u8]) -> Result<T, crate::record::RecordError>,
    ) -> Result<Option<T>, FileDriverError> {
        decode_named(dir, self.name(), self.bytes.as_deref(), decode)
    }
}

/// The files of a directory in the receipt's order: `LOCK`, `dense`,
/// `leases`, `state`.
const RECEIPT_ORDER: [Option<FileKind>; 4] = [
    None,
    Some(FileKind::Dense),
    Some(FileKind::Leases),
    Some(FileKind::State),
];

/// Where `kind` is in [`RECEIPT_ORDER`].
fn receipt_slot(kind: FileKind) -> usize {
    match kind {
        FileKind::Dense => 1,
        FileKind::Leases => 2,
        FileKind::State => 3,
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
    /// Those files decoded (the `state` record's mark as read when
    /// locked), kept current by every write through this handle.
    decoded: Files,
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
        crate::OpenOptions::new().lock_stopped(dir)
    }

    /// [`lock`](Self::lock) through `vfs`
    /// ([`OpenOptions::lock_stopped`](crate::OpenOptions::lock_stopped)).
    pub(crate) fn lock_on(dir: &Path, vfs: Arc<dyn Vfs>) -> Result<StoppedDir, FileDriverError> {
        crate::store::require_dir(vfs.as_ref(), dir)?;
        let (store, lock) = Store::lock(vfs, dir)?;
        if marks::exists(&store, Mark::Seeding)? {
            return Err(FileDriverError::SeedingInterrupted {
                marker: dir.join(SEEDING_FILE),
                backtrace: Bt::capture(),
            });
        }
        let state_name = FileKind::State.name();
        // A rename left un-synced by a process that died is made durable
        // before anything read here is carried elsewhere.
        store.sync_dir()?;
        let read = |kind: Option<FileKind>| -> Result<RawFile, FileDriverError> {
            let name = kind.map_or(LOCK_FILE, FileKind::name);
            let bytes = store
                .handle()
                .read(name)
                .map_err(|err| FileDriverError::io(FileOp::Read, dir.join(name), err))?;
            Ok(RawFile { kind, bytes })
        };
        let [lock_file, dense_file, leases_file, state_file] = RECEIPT_ORDER.map(read);
        let files = [lock_file?, dense_file?, leases_file?, state_file?];
        // Decode the very bytes that are hashed, so a receipt's values and
        // its checksums describe one and the same content.
        let [_, dense_raw, leases_raw, state_raw] = &files;
        let dense = dense_raw.decode(dir, dense_record::decode)?;
        let leases = leases_raw.decode(dir, lease_record::decode)?;
        let state = state_raw.decode(dir, record::decode_record)?;
        let mark = state.and_then(|state| state.mark);
        if mark == Some(Mark::Seeding) {
            return Err(FileDriverError::SeedingInterrupted {
                marker: dir.join(state_name),
                backtrace: Bt::capture(),
            });
        }
        Ok(StoppedDir {
            dir: dir.to_path_buf(),
            store,
            files,
            decoded: Files {
                high_water: state.map(|state| state.high_water),
                mark,
                dense,
                leases,
            },
            _lock: lock,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The committed high-water; `None` without a `state` file.
    pub fn high_water(&self) -> Option<u64> {
        self.decoded.high_water
    }

    /// The dense counters and key cap (the default for a missing `dense`).
    pub fn dense(&self) -> DenseState {
        self.decoded.dense.clone().unwrap_or_default()
    }

    /// The lease set (empty for a missing `leases`).
    pub fn leases(&self) -> &[LeaseRecord] {
        self.decoded.leases.as_deref().unwrap_or_default()
    }

    #[cfg_attr(not(feature = "receipt"), allow(dead_code))]
    pub(crate) fn files(&self) -> &[RawFile; 4] {
        &self.files
    }

    /// The bytes of `kind` as read (or since written) under the lock.
    #[cfg_attr(not(feature = "receipt"), allow(dead_code))]
    pub(crate) fn file(&self, kind: FileKind) -> &RawFile {
        &self.files[receipt_slot(kind)]
    }

    /// The content of the `RETIRED` marker, when the directory carries one.
    ///
    /// # Errors
    ///
    /// [`FileDriverError::Io`] when the marker cannot be read.
    pub fn retired_note(&self) -> Result<Option<String>, FileDriverError> {
        marks::read_marker(&self.store, Mark::Retired)
    }

    /// The mark of the `state` record as it was when the directory was
    /// locked (see [`record`](crate::record)); `None` for a live record or
    /// no `state` file.
    pub fn mark(&self) -> Option<Mark> {
        self.decoded.mark
    }

    /// Retires the directory, durably: marks its `state` record
    /// [`Mark::Retired`] (keeping the high-water), then writes (or
    /// replaces) the `RETIRED` note with `note`. From the first step on,
    /// every driver refuses the directory: this crate's with
    /// [`FileDriverError::Retired`], whose message quotes the note's first
    /// line, and upstream's, which refuses the record's version.
    ///
    /// # Errors
    ///
    /// [`FileDriverError::MigrationPending`] for a pending directory
    /// (nothing is written); [`FileDriverError::Io`] for a failed write,
    /// fsync or rename; [`FileDriverError::Displaced`] when the path no
    /// longer leads to the locked directory afterwards.
    pub fn retire(&self, note: &str) -> Result<(), FileDriverError> {
        self.refuse_pending()?;
        // The mark first: it is what every driver honours, the note only
        // explains it. Rewritten on every call: cheap, and idempotent.
        marks::write_mark(
            &self.store,
            self.decoded.high_water.unwrap_or(0),
            Some(Mark::Retired),
        )?;
        marks::write_marker(&self.store, Mark::Retired, note.as_bytes())
    }

    /// Lifts a retirement, durably, so the directory can serve again: the
    /// `state` record becomes live again (same high-water), then the
    /// `RETIRED` note is removed. Safe only when the oracle its state was
    /// carried to never served anyone (an abandoned migration): otherwise
    /// that oracle issued values above this directory's, which this one
    /// would issue again.
    ///
    /// # Errors
    ///
    /// [`FileDriverError::MigrationPending`] for a pending directory
    /// (finish it with `migrate finish` instead; nothing is written);
    /// [`FileDriverError::Io`] when a write, the note's removal or a
    /// directory fsync fails.
    pub fn reinstate(&self) -> Result<(), FileDriverError> {
        self.refuse_pending()?;
        if let Some(high_water) = self.decoded.high_water {
            marks::write_mark(&self.store, high_water, None)?;
        }
        marks::remove_marker(&self.store, Mark::Retired)
    }

    /// The content of the `PENDING` note that `migrate in` left, when the
    /// directory carries one.
    ///
    /// # Errors
    ///
    /// [`FileDriverError::Io`] when the note cannot be read.
    pub fn pending_note(&self) -> Result<Option<String>, FileDriverError> {
        marks::read_marker(&self.store, Mark::Pending)
    }

    /// Whether the directory waits for `migrate finish`: its record is
    /// marked [`Mark::Pending`], or a `PENDING` note is left (a finish that
    /// stopped between its two steps).
    ///
    /// # Errors
    ///
    /// [`FileDriverError::Io`] when the note cannot be probed.
    pub fn is_pending(&self) -> Result<bool, FileDriverError> {
        Ok(self.decoded.mark == Some(Mark::Pending) || marks::exists(&self.store, Mark::Pending)?)
    }

    fn refuse_pending(&self) -> Result<(), FileDriverError> {
        if self.is_pending()? {
            return Err(FileDriverError::MigrationPending {
                marker: self.dir.join(FileKind::State.name()),
                backtrace: Bt::capture(),
            });
        }
        Ok(())
    }

    /// Ends a pending migration: writes the live `state` record at the
    /// larger of its high-water and `high_water_at_least`, durably, then
    /// removes the `PENDING` note. Returns the high-water now stored.
    ///
    /// The caller (`tsoracle-file migrate finish`) has proven that the
    /// source oracle stopped, and `high_water_at_least` covers everything it
    /// could have issued. A crash between the two steps leaves a live
    /// record beside the note, which this crate still refuses; calling this
    /// again completes it.
    ///
    /// # Errors
    ///
    /// [`FileDriverError::NotPending`] when the directory is not pending;
    /// [`FileDriverError::SeedOutOfRange`] for a high-water above
    /// `PHYSICAL_MS_MAX` (nothing is written); [`FileDriverError::Io`] and
    /// [`FileDriverError::Displaced`] as for [`retire`](Self::retire).
    pub fn finish_pending(&mut self, high_water_at_least: u64) -> Result<u64, FileDriverError> {
        if !self.is_pending()? {
            return Err(FileDriverError::NotPending {
                dir: self.dir.clone(),
                backtrace: Bt::capture(),
            });
        }
        let high_water = self
            .decoded
            .high_water
            .unwrap_or(0)
            .max(high_water_at_least);
        if high_water > PHYSICAL_MS_MAX {
            return Err(FileDriverError::SeedOutOfRange {
                seed: high_water,
                max: PHYSICAL_MS_MAX,
                backtrace: Bt::capture(),
            });
        }
        marks::write_mark(&self.store, high_water, None)?;
        self.decoded.high_water = Some(high_water);
        self.decoded.mark = None;
        self.files[receipt_slot(FileKind::State)].bytes = Some(record::encode(high_water).to_vec());
        marks::remove_marker(&self.store, Mark::Pending)?;
        Ok(high_water)
    }

    /// Adds the dense counter `key` at `floor`, or raises it to at least
    /// `floor` when it exists, durably; the key cap is raised by one when a
    /// new key would not fit. Returns the counter now stored (the next
    /// value a server on this directory hands out for `key`). Never lowers
    /// a counter.
    ///
    /// For a directory seeded by `migrate in`, whose cap admits only the
    /// keys it was seeded with: a key the source served must come back with
    /// a floor at or above everything the source handed out for it.
    ///
    /// ```
    /// use tsoracle_core::SeqKey;
    /// use tsoracle_driver_file::{FileDriver, Seed, StoppedDir};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let orders = SeqKey::try_new("orders")?;
    /// FileDriver::init_from(dir.path(), &Seed::new(1_764_000_000_000).with_key_cap(0))?;
    /// let mut stopped = StoppedDir::lock(dir.path())?;
    /// assert_eq!(stopped.add_counter(&orders, 500)?, 500);
    /// assert_eq!(stopped.add_counter(&orders, 10)?, 500); // never lowered
    /// assert_eq!(stopped.dense().cap, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`FileDriverError::Io`] and [`FileDriverError::Displaced`] as for
    /// [`retire`](Self::retire).
    pub fn add_counter(&mut self, key: &SeqKey, floor: u64) -> Result<u64, FileDriverError> {
        let mut dense = self.dense();
        let next = dense.counters.get(key).copied().unwrap_or(0).max(floor);
        if !dense.counters.contains_key(key) {
            let needed = dense.key_count() as u64 + 1;
            dense.cap = dense.cap.max(needed);
        }
        dense.counters.insert(key.clone(), next);
        self.write_dense(dense)?;
        Ok(next)
    }

    /// Sets the dense key cap, durably.
    ///
    /// # Errors
    ///
    /// [`FileDriverError::KeyCapBelowKeys`] for a cap below the number of
    /// keys held (nothing is written); [`FileDriverError::Io`] and
    /// [`FileDriverError::Displaced`] as for [`retire`](Self::retire).
    pub fn set_key_cap(&mut self, cap: u64) -> Result<(), FileDriverError> {
        let mut dense = self.dense();
        let keys = dense.key_count() as u64;
        if cap < keys {
            return Err(FileDriverError::KeyCapBelowKeys {
                dir: self.dir.clone(),
                cap,
                keys,
                backtrace: Bt::capture(),
            });
        }
        dense.cap = cap;
        self.write_dense(dense)
    }

    fn write_dense(&mut self, dense: DenseState) -> Result<(), FileDriverError> {
        let bytes = dense_record::encode(&dense);
        self.store.write_file(FileKind::Dense, &bytes)?;
        self.files[receipt_slot(FileKind::Dense)].bytes = Some(bytes);
        self.decoded.dense = Some(dense);
        Ok(())
    }
}
