//! [`FileDriver`]: opening a state directory, seeding one, and the
//! [`ConsensusDriver`] implementation on top of the committer.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::sync::{oneshot, watch};
use tsoracle_consensus::{
    ConsensusDriver, ConsensusError, LeaderState, reject_out_of_range_advance,
};
use tsoracle_core::{Epoch, LeaseRecord, SeqKey};

use crate::committer::{CommitError, CommitStats, Committer, Published, Request, StatCounters};
use crate::error::{Bt, FileDriverError, to_consensus};
use crate::identity_record::Origin;
use crate::options::OpenOptions;
use crate::poison::read_lock;
use crate::store::{DirLock, Snapshot, Store};
use crate::vfs::Vfs;

/// The epoch this driver reports: a single node is always the leader of
/// the one and only term, epoch 0 ([`Epoch::ZERO`]).
///
/// Zero is what the published file driver reports, and what upstream
/// tsoracle-server's own tests of a file-backed server pin (a `GetSeq`
/// reply's epoch is `(0, 0)`). Every reply carries the epoch and clients only
/// ever move a cached epoch up, so a driver that reported another value
/// would show users who switch drivers epochs upstream never produces.
/// (Releases of this crate before 0.2 reported `Epoch(1)`.)
pub const LEADER_EPOCH: Epoch = Epoch::ZERO;

/// A [`ConsensusDriver`] that keeps the oracle's state in one directory on
/// one disk, for a single `tsoracle-server` process.
///
/// Reads are served from memory; every write goes through one committer
/// thread that batches concurrent calls into one fsynced write per file and
/// acknowledges nothing before the directory fsync returned. See the crate
/// docs for the whole picture.
///
/// Dropping the last `Arc<FileDriver>` waits for the write in flight (if
/// any) and the requests already queued, then releases the directory lock.
/// That wait blocks the dropping thread for at most one batch of fsyncs; in
/// an async program, drop the driver after the server has stopped.
///
/// New directories get a dense key cap of
/// [`DEFAULT_KEY_CAP`](crate::dense_record::DEFAULT_KEY_CAP); a directory
/// keeps the cap stored in its `dense` file.
#[derive(Debug)]
pub struct FileDriver {
    dir: PathBuf,
    origin: Option<Origin>,
    published: Arc<Published>,
    stats: Arc<StatCounters>,
    requests: Option<Sender<Request>>,
    committer: Option<JoinHandle<()>>,
    leader: watch::Sender<LeaderState>,
    /// Held by the driver, not the committer: released only after `Drop`
    /// has joined the committer, and never while the driver is alive.
    _lock: DirLock,
}

impl FileDriver {
    /// Opens the state directory `dir`, creating it (and an empty state) if
    /// it does not exist.
    ///
    /// Takes an exclusive lock on `dir/LOCK` before reading anything, then
    /// reads and checks `state`, `dense` and `leases`, and removes leftover
    /// `*.tmp` files. A corrupt directory is refused and left as it was.
    ///
    /// ```
    /// use tsoracle_consensus::ConsensusDriver;
    /// use tsoracle_driver_file::{FileDriver, LEADER_EPOCH};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let driver = FileDriver::open_or_init(dir.path())?;
    /// assert_eq!(driver.load_high_water().await?, 0);
    /// assert_eq!(driver.persist_high_water(1_764_000_000_000, LEADER_EPOCH).await?, 1_764_000_000_000);
    /// drop(driver); // releases the lock
    ///
    /// let reopened = FileDriver::open_or_init(dir.path())?;
    /// assert_eq!(reopened.load_high_water().await?, 1_764_000_000_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`FileDriverError::AlreadyLocked`] when another driver (in this
    /// process or another) has the directory open;
    /// [`FileDriverError::Corrupt`] naming the file and the defect;
    /// [`FileDriverError::NotADirectory`]; [`FileDriverError::Io`] naming
    /// the path and the operation that failed;
    /// [`FileDriverError::CommitterSpawn`] if the OS refuses a thread.
    pub fn open_or_init(dir: impl AsRef<Path>) -> Result<Arc<FileDriver>, FileDriverError> {
        OpenOptions::new().open_or_init(dir)
    }

    /// [`open_or_init`](Self::open_or_init) through `vfs`
    /// ([`OpenOptions::open_or_init`]).
    pub(crate) fn open(dir: &Path, vfs: Arc<dyn Vfs>) -> Result<Arc<FileDriver>, FileDriverError> {
        let (store, lock) = Store::lock(vfs, dir)?;
        let recovery = Instant::now();
        let files = store.load(|files| crate::marks::refuse_if_fenced(&store, files))?;
        let origin = store.ensure_identity(now_ms(), !files.hold_state())?;
        let snapshot = Snapshot::from(files);
        if !snapshot.dense.unaddressable.is_empty() {
            // Valid, kept and rewritten as they are, but no call can reach
            // them: worth one line in the log.
            let keys: Vec<String> = snapshot
                .dense
                .unaddressable
                .keys()
                .take(10)
                .map(|key| format!("{:?} ({})", truncated(key.as_str()), key.reason()))
                .collect();
            tracing::warn!(
                dir = %dir.display(),
                count = snapshot.dense.unaddressable.len(),
                first_keys = %keys.join(", "),
                "the dense file holds counters whose keys SeqKey cannot hold; they are kept unchanged and count toward the key cap"
            );
        }
        let stats = Arc::new(StatCounters::default());
        stats.metrics.opened(
            recovery.elapsed(),
            snapshot.dense.key_count(),
            snapshot.leases.len(),
        );
        let published = Arc::new(Published::new(&snapshot));
        let (requests, queue) = mpsc::channel();
        let committer = Committer::new(store, snapshot, Arc::clone(&published), Arc::clone(&stats));
        let handle = std::thread::Builder::new()
            .name("tsoracle-file-committer".into())
            .spawn(move || committer.run(queue))
            .map_err(|source| FileDriverError::CommitterSpawn {
                dir: dir.to_path_buf(),
                source,
                backtrace: Bt::capture(),
            })?;
        let (leader, _) = watch::channel(LeaderState::Leader {
            epoch: LEADER_EPOCH,
        });
        Ok(Arc::new(FileDriver {
            dir: dir.to_path_buf(),
            origin,
            published,
            stats,
            requests: Some(requests),
            committer: Some(handle),
            leader,
            _lock: lock,
        }))
    }

    /// Starts a fresh state directory at `seed_physical_ms`: the one-shot
    /// migration entry for an oracle that already issued timestamps under
    /// another driver. Timestamps issued afterwards are above the seed.
    ///
    /// Holds the directory lock while it works, so it cannot race a running
    /// driver, and returns only once the seed is durable.
    ///
    /// ```
    /// use tsoracle_consensus::ConsensusDriver;
    /// use tsoracle_driver_file::{FileDriver, FileDriverError};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// FileDriver::init_seeded(dir.path(), 1_700_000_000_000)?;
    /// // A second seeding refuses to overwrite what is there.
    /// assert!(matches!(
    ///     FileDriver::init_seeded(dir.path(), 5),
    ///     Err(FileDriverError::StateExists { .. })
    /// ));
    /// let driver = FileDriver::open_or_init(dir.path())?;
    /// assert_eq!(driver.load_high_water().await?, 1_700_000_000_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`FileDriverError::SeedOutOfRange`] above `PHYSICAL_MS_MAX` (checked
    /// before touching anything); [`FileDriverError::StateExists`] when any
    /// of `state`, `dense`, `leases` exists; [`FileDriverError::AlreadyLocked`];
    /// [`FileDriverError::Io`] for a failed write, fsync or rename. After a
    /// failed directory fsync the `state` file may already be in place, so
    /// a retry reports `StateExists`: check it with
    /// [`read_state_dir`](crate::read_state_dir) rather than seeding again.
    ///
    /// A directory seeded here has an empty `LOCK` file besides `state`
    /// (the lock is taken while seeding); the reference format's seeded
    /// directories may lack it, which changes nothing when they are opened.
    pub fn init_seeded(
        dir: impl AsRef<Path>,
        seed_physical_ms: u64,
    ) -> Result<(), FileDriverError> {
        // One seeding path: the markers, the precondition and the owner
        // check are those of init_from.
        Self::init_from(dir, &crate::Seed::new(seed_physical_ms))
    }

    /// The state directory this driver owns.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where this state directory comes from: its identity, kept in the
    /// directory's extended attribute
    /// [`IDENTITY_XATTR`](crate::IDENTITY_XATTR) (see
    /// [`identity_record`](crate::identity_record)). Copies of one oracle
    /// share the origin id. `None` for a directory another tool made, which
    /// this crate opens without writing anything until a state write, and
    /// on a filesystem without extended attributes (or where the attribute
    /// could not be set: logged).
    pub fn origin(&self) -> Option<Origin> {
        self.origin
    }

    /// The durable high-water, as [`ConsensusDriver::load_high_water`]
    /// returns it, without an async context.
    pub fn high_water(&self) -> u64 {
        self.published.high_water.load(Ordering::Acquire)
    }

    /// What the committer has done since this driver was opened: requests
    /// answered, batches, files written, fsyncs. Group commit shows as
    /// `batches` far below `requests`.
    pub fn stats(&self) -> CommitStats {
        self.stats.snapshot()
    }

    /// Sets how long one fsync may take before the committer logs a
    /// `tracing` warning (default 100 ms). A slow fsync is the first sign of
    /// a struggling disk, and every caller of its batch waits on it.
    pub fn set_slow_fsync_warning(&self, threshold: Duration) {
        self.stats.set_slow_fsync(threshold);
    }

    /// Whether an fsync failure has made this driver refuse writes. Reopen it
    /// to recover: the reopened driver reads what is durable.
    pub fn is_poisoned(&self) -> bool {
        self.published.poisoned.get().is_some()
    }

    /// How many dense keys have a durable counter, from memory (as
    /// [`ConsensusDriver::load_dense_seq`] answers).
    pub fn dense_key_count(&self) -> usize {
        read_lock(&self.published.dense).len()
    }

    /// How many leases the durable lease set holds, from memory (as
    /// [`ConsensusDriver::load_leases`] answers).
    pub fn lease_count(&self) -> usize {
        read_lock(&self.published.leases).len()
    }

    /// Queues a request for the committer and awaits its answer.
    async fn submit<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, CommitError>>) -> Request,
    ) -> Result<T, ConsensusError> {
        let (reply, answer) = oneshot::channel();
        self.stats.metrics.queued();
        let sent = self
            .requests
            .as_ref()
            .is_some_and(|requests| requests.send(request(reply)).is_ok());
        if !sent {
            self.stats.metrics.unqueued();
            return Err(self.committer_stopped());
        }
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(CommitError::Driver(err))) => Err(to_consensus(err)),
            Ok(Err(CommitError::Poisoned(err))) => {
                Err(ConsensusError::PermanentDriver(Box::new(err)))
            }
            Ok(Err(CommitError::Cardinality { cap })) => {
                Err(ConsensusError::SeqKeyCardinalityExceeded { cap })
            }
            Ok(Err(CommitError::Overflow)) => Err(ConsensusError::SeqOverflow),
            // The committer dropped the reply without answering: it died.
            Err(_) => Err(self.committer_stopped()),
        }
    }

    fn committer_stopped(&self) -> ConsensusError {
        to_consensus(Arc::new(FileDriverError::CommitterStopped {
            dir: self.dir.clone(),
            backtrace: Bt::capture(),
        }))
    }
}

impl Drop for FileDriver {
    fn drop(&mut self) {
        // Closing the queue lets the committer finish what is queued and
        // exit. Only once it has is the lock (a field, dropped after this
        // body) released, so no write can outlive the lock.
        drop(self.requests.take());
        if let Some(handle) = self.committer.take() {
            // A panicked committer has no write left in flight; its panic
            // was already reported to the callers as CommitterStopped.
            let _ = handle.join();
        }
    }
}

/// Milliseconds since the Unix epoch by the system clock (0 before 1970).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// At most 40 characters of a key, for a log line.
fn truncated(key: &str) -> String {
    match key.char_indices().nth(40) {
        Some((at, _)) => format!("{}...", &key[..at]),
        None => key.to_owned(),
    }
}

#[async_trait::async_trait]
impl ConsensusDriver for FileDriver {
    /// Yields `Leader { epoch: LEADER_EPOCH }` at once; stays open, with no
    /// further item, while the driver lives.
    fn leadership_events(&self) -> Pin<Box<dyn Stream<Item = LeaderState> + Send>> {
        let receiver = self.leader.subscribe();
        Box::pin(futures::stream::unfold(
            (receiver, true),
            |(mut receiver, first)| async move {
                if !first {
                    // Ends the stream once the driver (the sender) is dropped.
                    receiver.changed().await.ok()?;
                }
                let state = receiver.borrow_and_update().clone();
                Some((state, (receiver, false)))
            },
        ))
    }

    async fn load_high_water(&self) -> Result<u64, ConsensusError> {
        Ok(self.high_water())
    }

    async fn persist_high_water(
        &self,
        at_least: u64,
        _epoch: Epoch,
    ) -> Result<u64, ConsensusError> {
        reject_out_of_range_advance(at_least)?;
        let durable = self.high_water();
        if at_least <= durable {
            self.stats.fast_path.fetch_add(1, Ordering::Relaxed);
            return Ok(durable);
        }
        self.submit(|reply| Request::HighWater { at_least, reply })
            .await
    }

    async fn load_dense_seq(&self, key: &SeqKey) -> Result<u64, ConsensusError> {
        Ok(read_lock(&self.published.dense)
            .get(key)
            .copied()
            .unwrap_or(0))
    }

    async fn advance_dense(
        &self,
        key: &SeqKey,
        count: u32,
        _expected_epoch: Epoch,
    ) -> Result<u64, ConsensusError> {
        let entries = vec![(key.clone(), count)];
        let starts = self
            .submit(|reply| Request::Dense { entries, reply })
            .await?;
        // One entry in, one start out.
        starts
            .first()
            .copied()
            .ok_or_else(|| self.committer_stopped())
    }

    async fn advance_dense_batch(
        &self,
        entries: &[(SeqKey, u32)],
        _expected_epoch: Epoch,
    ) -> Result<Vec<u64>, ConsensusError> {
        let entries = entries.to_vec();
        self.submit(|reply| Request::Dense { entries, reply }).await
    }

    async fn load_leases(&self) -> Result<Vec<LeaseRecord>, ConsensusError> {
        Ok(read_lock(&self.published.leases).clone())
    }

    async fn persist_leases(
        &self,
        live: &[LeaseRecord],
        _epoch: Epoch,
    ) -> Result<(), ConsensusError> {
        let leases = live.to_vec();
        self.submit(|reply| Request::Leases { leases, reply }).await
    }
}
