//! [`FileDriver::init_from`]: a fresh state directory seeded with a
//! high-water, dense counters and leases together, for an oracle coming
//! back from another driver.
//!
//! Why all three, and why atomically, is argued on
//! [`FileDriver::init_from`] itself, where the users of the crate read it.
//!
//! [`FileDriver::init_seeded`] is this same path with a high-water alone.

use std::path::Path;
use std::sync::Arc;

use tsoracle_core::{LeaseRecord, PHYSICAL_MS_MAX, SeqKey};

use crate::dense_record::{self, DenseState};
use crate::driver::FileDriver;
use crate::error::{Bt, FileDriverError};
use crate::layout::{FileKind, note_name};
use crate::lease_record;
use crate::marks;
use crate::record::Mark;
use crate::store::{Snapshot, Store};
use crate::vfs::Vfs;

/// What [`FileDriver::init_from`] writes into a fresh state directory.
///
/// ```
/// use tsoracle_core::SeqKey;
/// use tsoracle_driver_file::Seed;
///
/// let seed = Seed::new(1_764_000_000_000)
///     .with_counter(SeqKey::try_new("orders")?, 42)
///     .with_counter(SeqKey::try_new("users")?, 7);
/// assert_eq!(seed.high_water(), 1_764_000_000_000);
/// assert_eq!(seed.dense().counters.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    /// What the new directory holds: the same three values a driver keeps
    /// in memory.
    state: Snapshot,
    /// The `PENDING` note, for a seed that must wait for `migrate finish`.
    pending: Option<String>,
}

impl Seed {
    /// A seed at `high_water` (physical milliseconds), no counters, the
    /// default key cap, no leases.
    pub fn new(high_water: u64) -> Self {
        Seed {
            state: Snapshot {
                high_water,
                dense: DenseState::default(),
                leases: Vec::new(),
            },
            pending: None,
        }
    }

    /// Sets the next unissued value of the dense counter `key` (the first
    /// value the seeded oracle hands out for it).
    #[must_use]
    pub fn with_counter(mut self, key: SeqKey, next: u64) -> Self {
        self.state.dense.counters.insert(key, next);
        self
    }

    /// Sets the dense key-cardinality cap.
    #[must_use]
    pub fn with_key_cap(mut self, cap: u64) -> Self {
        self.state.dense.cap = cap;
        self
    }

    /// Sets the lease set.
    #[must_use]
    pub fn with_leases(mut self, leases: Vec<LeaseRecord>) -> Self {
        self.state.leases = leases;
        self
    }

    /// Leaves the seeded directory pending a migration, with `note` (what
    /// the seed was derived from) in its `PENDING` note: every driver
    /// refuses to serve it (this crate with
    /// [`FileDriverError::MigrationPending`]) until
    /// [`StoppedDir::finish_pending`](crate::StoppedDir::finish_pending)
    /// makes it live.
    ///
    /// ```
    /// use tsoracle_driver_file::{FileDriver, FileDriverError, Seed, StoppedDir};
    ///
    /// let dir = tempfile::tempdir()?;
    /// FileDriver::init_from(dir.path(), &Seed::new(1_764_000_000_000).pending("{}"))?;
    /// assert!(matches!(
    ///     FileDriver::open_or_init(dir.path()),
    ///     Err(FileDriverError::MigrationPending { .. })
    /// ));
    /// let mut stopped = StoppedDir::lock(dir.path())?;
    /// assert_eq!(stopped.finish_pending(1_764_000_100_000)?, 1_764_000_100_000);
    /// drop(stopped);
    /// assert_eq!(FileDriver::open_or_init(dir.path())?.high_water(), 1_764_000_100_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn pending(mut self, note: impl Into<String>) -> Self {
        self.pending = Some(note.into());
        self
    }

    /// The `PENDING` note, for a [pending](Self::pending) seed.
    pub fn pending_note(&self) -> Option<&str> {
        self.pending.as_deref()
    }

    /// The high-water.
    pub fn high_water(&self) -> u64 {
        self.state.high_water
    }

    /// The dense counters and key cap.
    pub fn dense(&self) -> &DenseState {
        &self.state.dense
    }

    /// The lease set.
    pub fn leases(&self) -> &[LeaseRecord] {
        &self.state.leases
    }
}

impl FileDriver {
    /// Creates a fresh state directory holding `seed`'s high-water, dense
    /// counters and leases, all durable when it returns: the way back for
    /// an oracle that issued values under another driver. Timestamps issued
    /// from the directory are above the high-water, and each counter
    /// continues from its seeded value.
    ///
    /// Refuses a directory that already holds state (or a marker), and
    /// writes a `SEEDING` marker first so that a crash half-way leaves a
    /// directory every open refuses rather than one missing its counters
    /// (below). [`init_seeded`](Self::init_seeded) is the high-water-only
    /// form.
    ///
    /// ```
    /// use tsoracle_consensus::ConsensusDriver;
    /// use tsoracle_core::SeqKey;
    /// use tsoracle_driver_file::{FileDriver, FileDriverError, LEADER_EPOCH, Seed};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let orders = SeqKey::try_new("orders")?;
    /// FileDriver::init_from(dir.path(), &Seed::new(1_764_000_000_000).with_counter(orders.clone(), 500))?;
    /// assert!(matches!(
    ///     FileDriver::init_from(dir.path(), &Seed::new(5)),
    ///     Err(FileDriverError::StateExists { .. })
    /// ));
    ///
    /// let driver = FileDriver::open_or_init(dir.path())?;
    /// assert_eq!(driver.load_high_water().await?, 1_764_000_000_000);
    /// assert_eq!(driver.advance_dense(&orders, 10, LEADER_EPOCH).await?, 500);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Why all three, and why atomically
    ///
    /// An oracle that already issued values elsewhere must start *above* all of
    /// them: above its timestamps (the high-water) and at or above each dense
    /// counter, or it hands a value out twice. Seeding only the high-water
    /// (`init_seeded`) leaves every counter at 0.
    ///
    /// The three files cannot be renamed into place in one step, and a crash
    /// between them would leave a directory that `open_or_init` serves with a
    /// counter at 0, or a high-water at 0. So the `state` record, which every
    /// driver reads first, is the commit point: `init_from`
    ///
    /// 1. takes the lock and refuses a directory holding any state file or
    ///    note (`RETIRED`, `SEEDING`, `PENDING`);
    /// 2. writes `state` marked [`Mark::Seeding`] (temp, fsync, rename,
    ///    directory fsync): from here a crash leaves a directory every driver
    ///    refuses, upstream's too (it does not know the version);
    /// 3. writes `dense` and `leases` (temp, fsync, rename each), and for a
    ///    [pending](Seed::pending) seed the `PENDING` note, and fsyncs the
    ///    directory: all of it is durable, and still refused;
    /// 4. renames the final `state` record over the marked one (live, or
    ///    marked [`Mark::Pending`]) and fsyncs the directory: only now can it
    ///    serve (or be finished).
    ///
    /// A crash before 2 leaves no state (seed again); between 2 and 4 a
    /// directory refused with [`FileDriverError::SeedingInterrupted`] (it never
    /// served: remove it and seed again); after 4 the complete seed. After each
    /// directory fsync the path must still lead to the locked directory and
    /// `LOCK` must still be the file locked (as before a committer
    /// acknowledges), or the seed is reported as failed.
    ///
    /// # Errors
    ///
    /// Checked before anything is touched: [`FileDriverError::SeedOutOfRange`]
    /// for a high-water above `PHYSICAL_MS_MAX`,
    /// [`FileDriverError::InvalidLeases`] for two leases with one id or a
    /// holder over 65,535 bytes. Then [`FileDriverError::AlreadyLocked`],
    /// [`FileDriverError::NotADirectory`], [`FileDriverError::StateExists`]
    /// when any of `state`, `dense`, `leases`, `RETIRED`, `SEEDING` exists,
    /// and [`FileDriverError::Io`] for a failed write, fsync or rename;
    /// after such a failure the directory carries `SEEDING` (or nothing):
    /// remove it and seed again.
    pub fn init_from(dir: impl AsRef<Path>, seed: &Seed) -> Result<(), FileDriverError> {
        crate::OpenOptions::new().init_from(dir, seed)
    }
}

/// [`FileDriver::init_from`] through `vfs` ([`OpenOptions::init_from`](crate::OpenOptions::init_from)).
pub(crate) fn init(dir: &Path, seed: &Seed, vfs: Arc<dyn Vfs>) -> Result<(), FileDriverError> {
    if seed.state.high_water > PHYSICAL_MS_MAX {
        return Err(FileDriverError::SeedOutOfRange {
            seed: seed.state.high_water,
            max: PHYSICAL_MS_MAX,
            backtrace: Bt::capture(),
        });
    }
    // Encode everything before touching the disk: a seed that cannot be
    // stored leaves no trace.
    // A default `dense` (no counters, the default cap) reads the same as
    // no file, and the high-water-only seed writes `state` alone.
    let dense = (seed.state.dense != DenseState::default())
        .then(|| dense_record::encode(&seed.state.dense));
    let leases = lease_record::encode(&seed.state.leases).map_err(|source| {
        FileDriverError::InvalidLeases {
            dir: dir.to_path_buf(),
            source,
            backtrace: Bt::capture(),
        }
    })?;

    // Step 1.
    let (store, _lock) = Store::lock(vfs, dir)?;
    refuse_existing(&store)?;
    // Step 2: the commit point's "before".
    marks::write_mark(&store, seed.state.high_water, Some(Mark::Seeding))?;
    // Step 3.
    let stage = |kind, bytes: &[u8]| store.stage(kind, bytes).map_err(|failure| failure.error);
    if let Some(dense) = &dense {
        stage(FileKind::Dense, dense)?;
    }
    if !seed.state.leases.is_empty() {
        stage(FileKind::Leases, &leases)?;
    }
    if let Some(note) = &seed.pending {
        marks::stage_marker(&store, Mark::Pending, note.as_bytes())?;
    }
    // One directory fsync for everything staged in this step.
    store.sync_dir()?;
    store.check_owner()?;
    // Step 4: the commit point.
    let last = seed.pending.as_ref().map(|_| Mark::Pending);
    marks::write_mark(&store, seed.state.high_water, last)?;
    // A new origin, as for any oracle this crate starts.
    store
        .ensure_identity(crate::driver::now_ms(), true)
        .map(drop)
}

/// Refuses a directory that holds any state file or note: seeding never
/// replaces anything.
fn refuse_existing(store: &Store) -> Result<(), FileDriverError> {
    let existing = match store.existing_state_file()? {
        Some(existing) => Some(existing),
        None => [Mark::Seeding, Mark::Retired, Mark::Pending]
            .into_iter()
            .find_map(|mark| match marks::exists(store, mark) {
                Ok(true) => Some(Ok(store.dir().join(note_name(mark)))),
                Ok(false) => None,
                Err(err) => Some(Err(err)),
            })
            .transpose()?,
    };
    match existing {
        Some(existing) => Err(FileDriverError::StateExists {
            existing,
            backtrace: Bt::capture(),
        }),
        None => Ok(()),
    }
}
