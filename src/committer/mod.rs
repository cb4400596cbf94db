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
use crate::error::{Bt, FileDriverError, FileOp};
use crate::lease_record;
use crate::metrics::WriteStep;
use crate::poison::write_lock;
use crate::record;
use crate::store::{FileKind, Snapshot, Store};

mod batch;
mod stats;

use batch::{DenseUndo, apply_dense, undo_dense};
pub use stats::CommitStats;
pub(crate) use stats::StatCounters;

/// Upper bound on requests folded into one write, so one batch's replies
/// never wait behind an unbounded queue.
const MAX_BATCH: usize = 4096;

/// Why the committer refused or failed a request.
#[derive(Clone, Debug)]
pub(crate) enum CommitError {
    /// The write failed; classified by [`FileDriverError::is_transient`].
    Driver(Arc<FileDriverError>),
    /// The write failed in a way that poisoned the driver: always permanent,
    /// whatever the operation that failed.
    Poisoned(Arc<FileDriverError>),
    /// A dense request would create more keys than the cap allows.
    Cardinality { cap: u64 },
    /// A dense counter would pass `u64::MAX`.
    Overflow,
}

/// What a caller gets back from the committer.
pub(crate) type Outcome<T> = Result<T, CommitError>;

pub(crate) type Reply<T> = oneshot::Sender<Outcome<T>>;

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

/// The committer's own state; runs on its thread until every sender is gone.
pub(crate) struct Committer {
    store: Store,
    /// What the live files hold; equal to `published` between batches.
    current: Snapshot,
    published: Arc<Published>,
    stats: Arc<StatCounters>,
}

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
            self.stats.metrics.batch_taken(batch.len());
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
        let mut fold = self.fold(batch);
        match self.write(&fold) {
            Ok(failed) => {
                self.publish(&mut fold, &failed);
                fold.answer(failed.map(|err| err.map(CommitError::Driver)));
            }
            Err(first) => self.poison(first, fold),
        }
    }

    /// Applies every request of the batch, in order, to the committer's
    /// view, and collects who waits for which file. A high-water request
    /// already covered by what is durable, and an unencodable lease set, are
    /// answered at once. A refused dense request (cap, overflow) changed
    /// nothing, but its refusal may rest on an earlier request of this batch
    /// that is not durable yet: it waits for the batch like the others.
    fn fold(&mut self, batch: &mut Vec<Request>) -> Fold {
        let mut fold = Fold {
            high_water: self.current.high_water,
            ..Fold::default()
        };
        for request in batch.drain(..) {
            match request {
                Request::HighWater { at_least, reply } if at_least <= self.current.high_water => {
                    drop(reply.send(Ok(self.current.high_water)));
                }
                Request::HighWater { at_least, reply } => {
                    fold.high_water = fold.high_water.max(at_least);
                    fold.high_water_waiters.push(reply);
                }
                Request::Dense { entries, reply } => {
                    let outcome =
                        apply_dense(&mut self.current.dense, &entries, &mut fold.dense_undo);
                    if let Err(CommitError::Cardinality { cap }) = &outcome {
                        self.log_closed_keys(&entries, *cap);
                    }
                    fold.dense_waiters.push((reply, outcome));
                }
                // The set is absolute: the last one queued wins.
                Request::Leases { leases, reply } => match lease_record::encode(&leases) {
                    Ok(bytes) => {
                        fold.leases = Some((leases, bytes));
                        fold.lease_waiters.push(reply);
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
        fold
    }

    /// Names the keys a cardinality refusal turned away, and the way to
    /// admit one: the client only hears "cap reached". A directory that
    /// `migrate in` seeded has a cap of exactly its seeded keys, so that a
    /// key the source served and nobody named is never started again at 0.
    fn log_closed_keys(&self, entries: &[(SeqKey, u32)], cap: u64) {
        let dir = self.store.dir().display();
        for key in entries
            .iter()
            .map(|(key, _)| key)
            .filter(|key| !self.current.dense.counters.contains_key(*key))
            .take(5)
        {
            tracing::warn!(
                dir = %dir,
                key = %key.as_str(),
                cap,
                "refused dense key {:?}: the directory's key cap {cap} is reached. If this directory was seeded by `migrate in` and the source oracle served this key, add it with a floor above everything the source handed out: `tsoracle-file dense add {dir} {} --floor N` (with the server stopped); if it is a new key, raise the cap: `tsoracle-file dense cap {dir} N`",
                key.as_str(),
                key.as_str()
            );
        }
    }

    /// Writes each changed file (steps 1-3 of the protocol), then fsyncs the
    /// directory once. Returns, per file, the transient error that kept it
    /// from being written; `Err` is a poisoning failure.
    fn write(&mut self, fold: &Fold) -> Result<PerFile<Arc<FileDriverError>>, FileDriverError> {
        let state_bytes =
            (fold.high_water > self.current.high_water).then(|| record::encode(fold.high_water));
        let dense_bytes =
            (!fold.dense_undo.is_empty()).then(|| dense_record::encode(&self.current.dense));
        let plans: [(FileKind, Option<&[u8]>); 3] = [
            (
                FileKind::State,
                state_bytes.as_ref().map(|bytes| bytes.as_slice()),
            ),
            (FileKind::Dense, dense_bytes.as_deref()),
            (
                FileKind::Leases,
                fold.leases.as_ref().map(|(_, bytes)| bytes.as_slice()),
            ),
        ];
        let mut failed: PerFile<Arc<FileDriverError>> = [None, None, None];
        let mut any_staged = false;
        let mut bytes_written = 0usize;
        let mut fsync_time = Duration::ZERO;
        for (index, (kind, bytes)) in plans.into_iter().enumerate() {
            let Some(bytes) = bytes else { continue };
            StatCounters::add(&self.stats.file_writes, 1);
            match self.store.stage(kind, bytes) {
                Ok(took) => {
                    StatCounters::add(&self.stats.fsyncs, 1);
                    self.stats.metrics.fsync(took);
                    self.stats.check_fsync("file fsync", self.store.dir(), took);
                    fsync_time += took;
                    bytes_written += bytes.len();
                    any_staged = true;
                }
                Err(failure) => {
                    self.stats
                        .metrics
                        .write_error(write_step(&failure.error), failure.poisons);
                    if failure.poisons {
                        return Err(failure.error);
                    }
                    tracing::warn!(
                        error = %crate::error::error_chain(&failure.error),
                        retryable = failure.error.is_transient(),
                        "write failed before its rename; the live file is unchanged and the callers of this batch get the error"
                    );
                    // A directory removed or moved away makes every write
                    // fail; say that, rather than the symptom.
                    self.store.check_owner()?;
                    failed[index] = Some(Arc::new(failure.error));
                }
            }
        }
        if any_staged {
            StatCounters::add(&self.stats.batches, 1);
            StatCounters::add(&self.stats.fsyncs, 1);
            let took = self.store.sync_dir().inspect_err(|_| {
                self.stats.metrics.write_error(WriteStep::FsyncDir, true);
            })?;
            self.stats.metrics.batch_written(bytes_written, took);
            self.stats
                .check_fsync("directory fsync", self.store.dir(), took);
            // Durable, but in the directory a restart would open? Checked
            // before anything is published or acknowledged; a directory
            // that moved away, or a LOCK that was replaced, stops the
            // driver for good (it poisons).
            self.store.check_owner().inspect_err(|_| {
                self.stats.metrics.write_error(WriteStep::CheckOwner, true);
            })?;
            let span = tracing::Span::current();
            span.record("bytes", bytes_written);
            span.record("fsync_ms", (fsync_time + took).as_secs_f64() * 1e3);
        }
        Ok(failed)
    }

    /// Moves memory to what the batch made durable, for every file, before
    /// anyone is answered: a caller that reads right after its reply must
    /// see the whole batch. Undoes in memory what was not written.
    fn publish(&mut self, fold: &mut Fold, failed: &PerFile<Arc<FileDriverError>>) {
        let [state_failed, dense_failed, leases_failed] = failed;
        if state_failed.is_none() {
            self.current.high_water = fold.high_water;
            self.published
                .high_water
                .store(fold.high_water, Ordering::Release);
        }
        if dense_failed.is_some() {
            undo_dense(
                &mut self.current.dense,
                std::mem::take(&mut fold.dense_undo),
            );
        } else if !fold.dense_undo.is_empty() {
            let mut published = write_lock(&self.published.dense);
            for key in fold.dense_undo.keys() {
                if let Some(&value) = self.current.dense.counters.get(key) {
                    published.insert(key.clone(), value);
                }
            }
            self.stats
                .metrics
                .dense_keys(self.current.dense.key_count());
        }
        if leases_failed.is_none()
            && let Some((leases, _)) = fold.leases.take()
        {
            let mut sorted = leases;
            sorted.sort_unstable_by_key(|lease| lease.lease_id);
            self.stats.metrics.leases(sorted.len());
            *write_lock(&self.published.leases) = sorted.clone();
            self.current.leases = sorted;
        }
    }

    /// Records the first poisoning failure and fails every waiter of the
    /// batch. Memory keeps the last durable values; nothing more is written.
    fn poison(&mut self, error: FileDriverError, fold: Fold) {
        tracing::error!(
            error = %crate::error::error_chain(&error),
            "write failed where acknowledging is no longer safe (a failed fsync, a failure after the rename, or a displaced directory): the driver refuses every write until it is reopened"
        );
        let first = Arc::new(error);
        let _ = self.published.poisoned.set(Arc::clone(&first));
        self.stats.metrics.poisoned();
        let poisoned = || Some(CommitError::Poisoned(Arc::clone(&first)));
        fold.answer([poisoned(), poisoned(), poisoned()]);
    }
}

/// A dense caller and its outcome once the batch is durable.
type DenseWaiter = (Reply<Vec<u64>>, Outcome<Vec<u64>>);

/// One value per file, in [`FileKind::ALL`] order.
type PerFile<T> = [Option<T>; 3];

/// A batch folded into the new content of each file and its waiters.
#[derive(Default)]
struct Fold {
    /// The maximum high-water asked for (at least the current one).
    high_water: u64,
    /// Callers whose high-water is above the durable one.
    high_water_waiters: Vec<Reply<u64>>,
    /// Each dense key's value before the batch; empty when nothing changed.
    dense_undo: DenseUndo,
    /// Each dense caller with its block starts, or its refusal.
    dense_waiters: Vec<DenseWaiter>,
    /// The last lease set queued, with its encoding.
    leases: Option<(Vec<LeaseRecord>, Vec<u8>)>,
    lease_waiters: Vec<Reply<()>>,
}

impl Fold {
    /// Answers every waiter: with its own outcome where its file was
    /// written, else with that file's failure.
    fn answer(self, failed: PerFile<CommitError>) {
        let [state_failed, dense_failed, leases_failed] = failed;
        let high_water = self.high_water;
        for reply in self.high_water_waiters {
            drop(reply.send(match &state_failed {
                None => Ok(high_water),
                Some(err) => Err(err.clone()),
            }));
        }
        for (reply, outcome) in self.dense_waiters {
            drop(reply.send(match &dense_failed {
                None => outcome,
                // A refusal too: it may rest on requests that were undone.
                Some(err) => Err(err.clone()),
            }));
        }
        for reply in self.lease_waiters {
            drop(reply.send(match &leases_failed {
                None => Ok(()),
                Some(err) => Err(err.clone()),
            }));
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

/// The write step a failed file write was in, from its error.
fn write_step(error: &FileDriverError) -> WriteStep {
    match error {
        FileDriverError::Io {
            op: FileOp::FsyncTemp,
            ..
        } => WriteStep::FsyncTemp,
        FileDriverError::Io {
            op: FileOp::Rename, ..
        } => WriteStep::Rename,
        FileDriverError::Io {
            op: FileOp::FsyncDir,
            ..
        } => WriteStep::FsyncDir,
        FileDriverError::Io {
            op: FileOp::CheckOwner,
            ..
        }
        | FileDriverError::Displaced { .. } => WriteStep::CheckOwner,
        _ => WriteStep::WriteTemp,
    }
}
