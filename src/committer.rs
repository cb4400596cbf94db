//! The one writer. Callers queue [`Request`]s; a dedicated thread takes every
//! request queued when it starts a write (group commit), folds them into at
//! most one new version of each file, writes them through [`Store`], fsyncs
//! the directory once, publishes the new values in memory, and only then
//! replies.
//!
//! Cancel safety follows from the shape: a caller that drops its future only
//! drops the receiving end of its reply. Its request is already queued, the
//! committer completes (or fails) it like any other, and memory is updated by
//! the committer alone, after the disk.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::oneshot;
use tsoracle_core::{LeaseRecord, SeqKey};

use crate::dense_record;
use crate::error::{Bt, FileDriverError};
use crate::lease_record;
use crate::record;
use crate::store::{FileKind, Snapshot, Store};

/// Upper bound on requests folded into one write, so one batch's replies
/// never wait behind an unbounded queue.
const MAX_BATCH: usize = 4096;

/// Why the committer refused or failed a request.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// The write failed (or the driver is poisoned).
    Driver(Arc<FileDriverError>),
    /// A dense request would create more keys than the cap allows.
    Cardinality { cap: u64 },
    /// A dense counter would pass `u64::MAX`.
    Overflow,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, CommitError>>;

/// One caller's write.
pub(crate) enum Request {
    /// Advance the high-water to at least `at_least`; replies the durable value.
    HighWater { at_least: u64, reply: Reply<u64> },
    /// Fetch-add each `(key, count)` in order, all or nothing; replies the
    /// block starts in request order.
    Dense {
        entries: Vec<(SeqKey, u32)>,
        reply: Reply<Vec<u64>>,
    },
    /// Replace the lease set.
    Leases {
        leases: Vec<LeaseRecord>,
        reply: Reply<()>,
    },
}

/// What readers see: always a copy of what is durable.
#[derive(Debug)]
pub(crate) struct Published {
    pub(crate) high_water: AtomicU64,
    pub(crate) dense: RwLock<BTreeMap<SeqKey, u64>>,
    pub(crate) leases: RwLock<Vec<LeaseRecord>>,
    /// Set once, by the first fsync failure; every later write is refused.
    pub(crate) poisoned: OnceLock<Arc<FileDriverError>>,
}

impl Published {
    pub(crate) fn new(snapshot: &Snapshot) -> Self {
        Self {
            high_water: AtomicU64::new(snapshot.high_water),
            dense: RwLock::new(snapshot.dense.counters.clone()),
            leases: RwLock::new(snapshot.leases.clone()),
            poisoned: OnceLock::new(),
        }
    }
}

/// Counters describing the committer's work since the driver opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitStats {
    /// Write requests the committer answered (successes and failures).
    pub requests: u64,
    /// `persist_high_water` calls answered from memory without the committer.
    pub fast_path: u64,
    /// Batches that wrote at least one file.
    pub batches: u64,
    /// Files written (temp write, fsync, rename).
    pub file_writes: u64,
    /// fsync calls: one per file written plus one per directory sync.
    pub fsyncs: u64,
}

/// The slow-fsync warning threshold a driver starts with.
pub(crate) const DEFAULT_SLOW_FSYNC: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(crate) struct StatCounters {
    requests: AtomicU64,
    pub(crate) fast_path: AtomicU64,
    batches: AtomicU64,
    file_writes: AtomicU64,
    fsyncs: AtomicU64,
    /// Nanoseconds one fsync may take before a warning is logged.
    slow_fsync_nanos: AtomicU64,
}

impl Default for StatCounters {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            fast_path: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            file_writes: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            slow_fsync_nanos: AtomicU64::new(DEFAULT_SLOW_FSYNC.as_nanos() as u64),
        }
    }
}

impl StatCounters {
    pub(crate) fn set_slow_fsync(&self, threshold: Duration) {
        let nanos = u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX);
        self.slow_fsync_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Logs a warning when one fsync of `path` took longer than the threshold.
    fn check_fsync(&self, what: &'static str, path: &std::path::Path, took: Duration) {
        let limit = Duration::from_nanos(self.slow_fsync_nanos.load(Ordering::Relaxed));
        if took > limit {
            tracing::warn!(
                path = %path.display(),
                fsync_ms = took.as_secs_f64() * 1e3,
                threshold_ms = limit.as_secs_f64() * 1e3,
                "slow {what}: the disk took longer than the threshold to make a write durable"
            );
        }
    }

    pub(crate) fn snapshot(&self) -> CommitStats {
        CommitStats {
            requests: self.requests.load(Ordering::Relaxed),
            fast_path: self.fast_path.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            file_writes: self.file_writes.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The committer's own state; runs on its thread until every sender is gone.
pub(crate) struct Committer {
    store: Store,
    /// What the live files hold; equal to `published` between batches.
    current: Snapshot,
    published: Arc<Published>,
    stats: Arc<StatCounters>,
}

/// Waiters of one batch, grouped by the file their answer depends on.
#[derive(Default)]
struct Waiters {
    high_water: Vec<Reply<u64>>,
    dense: Vec<(Reply<Vec<u64>>, Vec<u64>)>,
    leases: Vec<Reply<()>>,
}

/// The previous value of each dense key a batch touched, to undo the batch
/// in memory if its write fails.
type DenseUndo = BTreeMap<SeqKey, Option<u64>>;

impl Committer {
    pub(crate) fn new(
        store: Store,
        current: Snapshot,
        published: Arc<Published>,
        stats: Arc<StatCounters>,
    ) -> Self {
        Self {
            store,
            current,
            published,
            stats,
        }
    }

    /// Serves batches until the driver drops its sender, then returns,
    /// dropping the store and with it the directory lock.
    pub(crate) fn run(mut self, requests: Receiver<Request>) {
        let mut batch = Vec::new();
        while let Ok(first) = requests.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            StatCounters::add(&self.stats.requests, batch.len());
            let span = tracing::debug_span!(
                "commit_batch",
                requests = batch.len(),
                bytes = tracing::field::Empty,
                fsync_ms = tracing::field::Empty,
            );
            let _entered = span.enter();
            self.commit(&mut batch);
        }
    }

    fn poisoned_error(&self) -> Option<Arc<FileDriverError>> {
        self.published.poisoned.get().map(|first| {
            Arc::new(FileDriverError::Poisoned {
                dir: self.store.dir().to_path_buf(),
                first: Arc::clone(first),
                backtrace: Bt::capture(),
            })
        })
    }

    /// Folds, writes, publishes and answers one batch. Drains `batch`.
    fn commit(&mut self, batch: &mut Vec<Request>) {
        if let Some(err) = self.poisoned_error() {
            for request in batch.drain(..) {
                request.fail(&err);
            }
            return;
        }

        // Fold every request into the new content of each file.
        let mut waiters = Waiters::default();
        let mut high_water = self.current.high_water;
        let mut dense_undo = DenseUndo::new();
        let mut new_leases: Option<Vec<LeaseRecord>> = None;
        let mut lease_bytes: Option<Vec<u8>> = None;
        for request in batch.drain(..) {
            match request {
                Request::HighWater { at_least, reply } => {
                    high_water = high_water.max(at_least);
                    waiters.high_water.push(reply);
                }
                Request::Dense { entries, reply } => {
                    match apply_dense(&mut self.current.dense, &entries, &mut dense_undo) {
                        Ok(starts) => waiters.dense.push((reply, starts)),
                        // Refused requests changed nothing: answer at once.
                        Err(err) => drop(reply.send(Err(err))),
                    }
                }
                Request::Leases { leases, reply } => match lease_record::encode(&leases) {
                    Ok(bytes) => {
                        lease_bytes = Some(bytes);
                        new_leases = Some(leases);
                        waiters.leases.push(reply);
                    }
                    Err(source) => {
                        let err = FileDriverError::InvalidLeases {
                            dir: self.store.dir().to_path_buf(),
                            source,
                            backtrace: Bt::capture(),
                        };
                        drop(reply.send(Err(CommitError::Driver(Arc::new(err)))));
                    }
                },
            }
        }

        // High-water requests already covered by what is durable need no
        // write: answer them now rather than after this batch's fsyncs.
        if high_water <= self.current.high_water {
            let durable = self.current.high_water;
            for reply in waiters.high_water.drain(..) {
                drop(reply.send(Ok(durable)));
            }
        }

        // Write each changed file (steps 1-3), then one directory fsync.
        let mut staged: [bool; 3] = [false; 3];
        let mut failed: [Option<Arc<FileDriverError>>; 3] = [None, None, None];
        let plans: [(FileKind, Option<Vec<u8>>); 3] = [
            (
                FileKind::State,
                (high_water > self.current.high_water).then(|| record::encode(high_water).to_vec()),
            ),
            (
                FileKind::Dense,
                (!dense_undo.is_empty()).then(|| dense_record::encode(&self.current.dense)),
            ),
            (FileKind::Leases, lease_bytes),
        ];
        let mut bytes_written = 0usize;
        let mut fsync_time = Duration::ZERO;
        for (index, (kind, bytes)) in plans.iter().enumerate() {
            let Some(bytes) = bytes else { continue };
            StatCounters::add(&self.stats.file_writes, 1);
            match self.store.stage(*kind, bytes) {
                Ok(took) => {
                    StatCounters::add(&self.stats.fsyncs, 1);
                    self.stats.check_fsync("file fsync", self.store.dir(), took);
                    fsync_time += took;
                    bytes_written += bytes.len();
                    staged[index] = true;
                }
                Err(failure) if failure.poisons => {
                    self.poison(failure.error, waiters);
                    return;
                }
                Err(failure) => failed[index] = Some(Arc::new(failure.error)),
            }
        }
        if staged.iter().any(|&s| s) {
            StatCounters::add(&self.stats.batches, 1);
            StatCounters::add(&self.stats.fsyncs, 1);
            match self.store.sync_dir() {
                Ok(took) => {
                    self.stats
                        .check_fsync("directory fsync", self.store.dir(), took);
                    fsync_time += took;
                }
                Err(err) => {
                    self.poison(err, waiters);
                    return;
                }
            }
            let span = tracing::Span::current();
            span.record("bytes", bytes_written);
            span.record("fsync_ms", fsync_time.as_secs_f64() * 1e3);
        }

        // Durable. Publish everything the batch wrote before answering
        // anyone, so a caller that reads right after its reply sees the whole
        // batch; undo in memory what was not written.
        let [state_err, dense_err, leases_err] = failed;
        if state_err.is_none() {
            self.current.high_water = high_water;
            self.published
                .high_water
                .store(high_water, Ordering::Release);
        }
        match &dense_err {
            None if !dense_undo.is_empty() => {
                let mut published = write_lock(&self.published.dense);
                for key in dense_undo.keys() {
                    if let Some(&value) = self.current.dense.counters.get(key) {
                        published.insert(key.clone(), value);
                    }
                }
            }
            None => {}
            Some(_) => undo_dense(&mut self.current.dense, dense_undo),
        }
        if let (None, Some(leases)) = (&leases_err, new_leases) {
            let mut sorted = leases;
            sorted.sort_unstable_by_key(|lease| lease.lease_id);
            *write_lock(&self.published.leases) = sorted.clone();
            self.current.leases = sorted;
        }

        match state_err {
            None => {
                for reply in waiters.high_water {
                    drop(reply.send(Ok(high_water)));
                }
            }
            Some(err) => fail_all(waiters.high_water, &err),
        }
        match dense_err {
            None => {
                for (reply, starts) in waiters.dense {
                    drop(reply.send(Ok(starts)));
                }
            }
            Some(err) => {
                for (reply, _) in waiters.dense {
                    fail_one(reply, &err);
                }
            }
        }
        match leases_err {
            None => {
                for reply in waiters.leases {
                    drop(reply.send(Ok(())));
                }
            }
            Some(err) => fail_all(waiters.leases, &err),
        }
    }

    /// Records the first fsync failure and fails every waiter of the batch.
    /// Memory keeps the last durable values; nothing more is ever written.
    fn poison(&mut self, error: FileDriverError, waiters: Waiters) {
        tracing::error!(
            error = %error,
            cause = ?std::error::Error::source(&error).map(ToString::to_string),
            "write failed where the disk content is no longer known (fsync, or after the rename): the driver refuses every write until it is reopened"
        );
        let first = Arc::new(error);
        let _ = self.published.poisoned.set(Arc::clone(&first));
        fail_all(waiters.high_water, &first);
        fail_all(waiters.leases, &first);
        for (reply, _) in waiters.dense {
            fail_one(reply, &first);
        }
    }
}

impl Request {
    fn fail(self, err: &Arc<FileDriverError>) {
        match self {
            Request::HighWater { reply, .. } => fail_one(reply, err),
            Request::Dense { reply, .. } => fail_one(reply, err),
            Request::Leases { reply, .. } => fail_one(reply, err),
        }
    }
}

/// Answers one waiter with `err`. A caller that gave up dropped its
/// receiver: there is nobody to tell, and nothing else to do.
fn fail_one<T>(reply: Reply<T>, err: &Arc<FileDriverError>) {
    drop(reply.send(Err(CommitError::Driver(Arc::clone(err)))));
}

fn fail_all<T>(replies: Vec<Reply<T>>, err: &Arc<FileDriverError>) {
    for reply in replies {
        fail_one(reply, err);
    }
}

/// Takes a write lock even if a reader panicked while holding it: the data
/// is plain values, always consistent between statements.
fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Applies one dense request to `state`, all or nothing, and returns each
/// entry's block start. Like the trait says, any entry creates its key at 0
/// if absent (even with a count of 0). Each key's value before the batch is
/// recorded once in `undo`.
fn apply_dense(
    state: &mut dense_record::DenseState,
    entries: &[(SeqKey, u32)],
    undo: &mut DenseUndo,
) -> Result<Vec<u64>, CommitError> {
    // Validate on a scratch view first, so a refusal changes nothing. Entries
    // may repeat a key: each sees the value the previous one left.
    let mut scratch: Vec<(&SeqKey, u64)> = Vec::with_capacity(entries.len());
    let mut new_keys: u64 = 0;
    for (key, count) in entries {
        let slot = scratch.iter().position(|(seen, _)| *seen == key);
        let start = match slot {
            Some(index) => scratch[index].1,
            None => state.counters.get(key).copied().unwrap_or_else(|| {
                new_keys += 1;
                0
            }),
        };
        let next = start
            .checked_add(u64::from(*count))
            .ok_or(CommitError::Overflow)?;
        match slot {
            Some(index) => scratch[index].1 = next,
            None => scratch.push((key, next)),
        }
    }
    if new_keys > 0 && (state.counters.len() as u64).saturating_add(new_keys) > state.cap {
        return Err(CommitError::Cardinality { cap: state.cap });
    }

    let mut starts = Vec::with_capacity(entries.len());
    for (key, count) in entries {
        let previous = state.counters.get(key).copied();
        let start = previous.unwrap_or(0);
        starts.push(start);
        undo.entry(key.clone()).or_insert(previous);
        // Cannot overflow: the same sequence of additions was checked above.
        state
            .counters
            .insert(key.clone(), start + u64::from(*count));
    }
    Ok(starts)
}

fn undo_dense(state: &mut dense_record::DenseState, undo: DenseUndo) {
    for (key, previous) in undo {
        match previous {
            Some(value) => state.counters.insert(key, value),
            None => state.counters.remove(&key),
        };
    }
}
