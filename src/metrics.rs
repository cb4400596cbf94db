//! The driver's metrics: their names, declared once, and the recording
//! helpers the committer and the open path call.
//!
//! With the `metrics` feature the driver records through the
//! [`metrics`](https://docs.rs/metrics/0.24) 0.24 facade (the one
//! `tsoracle-server` 3.2.2 records through), into whatever recorder the
//! program installed — for example `metrics-exporter-prometheus`, as
//! `tsoracle-file serve` does. Handles are registered when a driver opens,
//! so install the recorder before opening it. Without the feature the
//! helpers are empty and compile to nothing; the names stay available.
//!
//! Names follow the ecosystem's form `tsoracle.<area>.<name>`: counters end
//! in `.total`, durations are histograms in seconds (`.seconds`). A
//! Prometheus exporter renders the dots as underscores
//! (`tsoracle_file_driver_fsync_seconds`).

/// Histogram, seconds: one fsync of a `*.tmp` file (step 2 of a write).
pub const FSYNC_SECONDS: &str = "tsoracle.file_driver.fsync.seconds";
/// Histogram, seconds: one fsync of the state directory (step 4, once per
/// batch).
pub const DIR_FSYNC_SECONDS: &str = "tsoracle.file_driver.dir_fsync.seconds";
/// Histogram: requests folded into one batch (group commit at work when
/// above 1).
pub const BATCH_REQUESTS: &str = "tsoracle.file_driver.batch.requests";
/// Histogram: bytes written by one batch that wrote at least one file.
pub const BATCH_BYTES: &str = "tsoracle.file_driver.batch.bytes";
/// Gauge: write requests sent to the committer and not yet taken into a
/// batch (callers waiting behind the batch being written).
pub const QUEUE_DEPTH: &str = "tsoracle.file_driver.queue.depth";
/// Counter, labels `op` (`write_temp`, `fsync_temp`, `rename`, `check_owner`,
/// `fsync_dir`) and `effect` (`transient`: the live file is untouched and
/// a retry may succeed; `poisoning`: the driver now refuses writes): file
/// writes that failed.
pub const WRITE_ERRORS_TOTAL: &str = "tsoracle.file_driver.write_errors.total";
/// Gauge: 1 once a failed fsync poisoned the driver (every write refused
/// until it is reopened), else 0.
pub const POISONED: &str = "tsoracle.file_driver.poisoned";
/// Gauge: dense keys with a durable counter.
pub const DENSE_KEYS: &str = "tsoracle.file_driver.dense.keys";
/// Gauge: leases in the durable lease set.
pub const LEASES: &str = "tsoracle.file_driver.leases";
/// Histogram, seconds: reading, checking and cleaning the state directory
/// when a driver opens (after the lock is taken).
pub const RECOVERY_SECONDS: &str = "tsoracle.file_driver.recovery.seconds";
/// Counter: leftover `*.tmp` files of interrupted writes removed at open.
pub const RECOVERY_TEMP_FILES_REMOVED_TOTAL: &str =
    "tsoracle.file_driver.recovery.temp_files_removed.total";

/// Every metric name, for documentation and tests.
pub const ALL: [&str; 11] = [
    FSYNC_SECONDS,
    DIR_FSYNC_SECONDS,
    BATCH_REQUESTS,
    BATCH_BYTES,
    QUEUE_DEPTH,
    WRITE_ERRORS_TOTAL,
    POISONED,
    DENSE_KEYS,
    LEASES,
    RECOVERY_SECONDS,
    RECOVERY_TEMP_FILES_REMOVED_TOTAL,
];

/// The step a failed write was in, for [`WRITE_ERRORS_TOTAL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteStep {
    WriteTemp,
    FsyncTemp,
    Rename,
    FsyncDir,
    /// The owner check before a rename or an acknowledgement: the
    /// directory was displaced, or the check could not run.
    CheckOwner,
}

#[cfg(feature = "metrics")]
impl WriteStep {
    const ALL: [WriteStep; 5] = [
        WriteStep::WriteTemp,
        WriteStep::FsyncTemp,
        WriteStep::Rename,
        WriteStep::FsyncDir,
        WriteStep::CheckOwner,
    ];

    fn label(self) -> &'static str {
        match self {
            WriteStep::WriteTemp => "write_temp",
            WriteStep::FsyncTemp => "fsync_temp",
            WriteStep::Rename => "rename",
            WriteStep::FsyncDir => "fsync_dir",
            WriteStep::CheckOwner => "check_owner",
        }
    }
}

/// The metric handles of one driver, registered when it opens; a
/// zero-sized no-op without the `metrics` feature.
#[derive(Debug)]
pub(crate) struct DriverMetrics {
    #[cfg(feature = "metrics")]
    handles: Handles,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Handles {
    fsync: ::metrics::Histogram,
    dir_fsync: ::metrics::Histogram,
    batch_requests: ::metrics::Histogram,
    batch_bytes: ::metrics::Histogram,
    queue_depth: ::metrics::Gauge,
    /// Requests sent to the committer and not yet taken into a batch; the
    /// gauge is `set` from it (one atomic add and one store per request,
    /// where a gauge increment is a compare-and-swap loop that contended
    /// callers retry).
    queued: std::sync::atomic::AtomicUsize,
    /// `[step][poisoning as usize]`, in [`WriteStep::ALL`] order.
    write_errors: [[::metrics::Counter; 2]; 5],
    poisoned: ::metrics::Gauge,
    dense_keys: ::metrics::Gauge,
    leases: ::metrics::Gauge,
}

impl DriverMetrics {
    /// Registers the handles with the recorder current on this thread (the
    /// global one unless a local one is set).
    pub(crate) fn register() -> Self {
        #[cfg(feature = "metrics")]
        describe();
        DriverMetrics {
            #[cfg(feature = "metrics")]
            handles: Handles {
                fsync: ::metrics::histogram!(FSYNC_SECONDS),
                dir_fsync: ::metrics::histogram!(DIR_FSYNC_SECONDS),
                batch_requests: ::metrics::histogram!(BATCH_REQUESTS),
                batch_bytes: ::metrics::histogram!(BATCH_BYTES),
                queue_depth: ::metrics::gauge!(QUEUE_DEPTH),
                queued: std::sync::atomic::AtomicUsize::new(0),
                write_errors: WriteStep::ALL.map(|step| {
                    ["transient", "poisoning"].map(|effect| {
                        ::metrics::counter!(WRITE_ERRORS_TOTAL, "op" => step.label(), "effect" => effect)
                    })
                }),
                poisoned: ::metrics::gauge!(POISONED),
                dense_keys: ::metrics::gauge!(DENSE_KEYS),
                leases: ::metrics::gauge!(LEASES),
            },
        }
    }

    /// At open: how long reading and checking the directory took, and what
    /// it holds.
    #[inline]
    pub(crate) fn opened(&self, recovery: std::time::Duration, dense_keys: usize, leases: usize) {
        #[cfg(feature = "metrics")]
        {
            ::metrics::histogram!(RECOVERY_SECONDS).record(recovery.as_secs_f64());
            self.handles.poisoned.set(0.0);
            self.handles.dense_keys.set(dense_keys as f64);
            self.handles.leases.set(leases as f64);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (recovery, dense_keys, leases);
    }

    /// A caller is about to queue one request for the committer. Called
    /// before the request is sent, so the committer's later `set` (which
    /// the channel orders after this one) can only correct it.
    #[inline]
    pub(crate) fn queued(&self) {
        #[cfg(feature = "metrics")]
        {
            use std::sync::atomic::Ordering;
            let waiting = self.handles.queued.fetch_add(1, Ordering::Relaxed) + 1;
            self.handles.queue_depth.set(waiting as f64);
        }
    }

    /// A request that was counted by [`queued`](Self::queued) never reached
    /// the committer.
    #[inline]
    pub(crate) fn unqueued(&self) {
        #[cfg(feature = "metrics")]
        self.taken(1);
    }

    #[cfg(feature = "metrics")]
    fn taken(&self, requests: usize) {
        use std::sync::atomic::Ordering;
        let before = self.handles.queued.fetch_sub(requests, Ordering::Relaxed);
        self.handles
            .queue_depth
            .set(before.saturating_sub(requests) as f64);
    }

    /// The committer took `requests` queued requests into one batch.
    #[inline]
    pub(crate) fn batch_taken(&self, requests: usize) {
        #[cfg(feature = "metrics")]
        {
            self.taken(requests);
            self.handles.batch_requests.record(requests as f64);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = requests;
    }

    /// One temp-file fsync took `took`.
    #[inline]
    pub(crate) fn fsync(&self, took: std::time::Duration) {
        #[cfg(feature = "metrics")]
        self.handles.fsync.record(took.as_secs_f64());
        #[cfg(not(feature = "metrics"))]
        let _ = took;
    }

    /// A batch that wrote `bytes` ended with a directory fsync of `took`.
    #[inline]
    pub(crate) fn batch_written(&self, bytes: usize, dir_fsync: std::time::Duration) {
        #[cfg(feature = "metrics")]
        {
            self.handles.dir_fsync.record(dir_fsync.as_secs_f64());
            self.handles.batch_bytes.record(bytes as f64);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (bytes, dir_fsync);
    }

    /// A file write failed in `step`; `poisoning` when the driver now
    /// refuses writes.
    #[inline]
    pub(crate) fn write_error(&self, step: WriteStep, poisoning: bool) {
        #[cfg(feature = "metrics")]
        {
            let index = WriteStep::ALL
                .iter()
                .position(|known| *known == step)
                .unwrap_or(0);
            self.handles.write_errors[index][usize::from(poisoning)].increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (step, poisoning);
    }

    /// The driver poisoned itself.
    #[inline]
    pub(crate) fn poisoned(&self) {
        #[cfg(feature = "metrics")]
        self.handles.poisoned.set(1.0);
    }

    /// The durable dense map now has `keys` keys.
    #[inline]
    pub(crate) fn dense_keys(&self, keys: usize) {
        #[cfg(feature = "metrics")]
        self.handles.dense_keys.set(keys as f64);
        #[cfg(not(feature = "metrics"))]
        let _ = keys;
    }

    /// The durable lease set now has `leases` leases.
    #[inline]
    pub(crate) fn leases(&self, leases: usize) {
        #[cfg(feature = "metrics")]
        self.handles.leases.set(leases as f64);
        #[cfg(not(feature = "metrics"))]
        let _ = leases;
    }
}

/// The `# HELP` lines and units an exporter shows.
#[cfg(feature = "metrics")]
fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(FSYNC_SECONDS, Unit::Seconds, "One fsync of a *.tmp file");
    describe_histogram!(
        DIR_FSYNC_SECONDS,
        Unit::Seconds,
        "One fsync of the state directory, once per batch"
    );
    describe_histogram!(
        BATCH_REQUESTS,
        Unit::Count,
        "Requests folded into one batch"
    );
    describe_histogram!(BATCH_BYTES, Unit::Bytes, "Bytes one batch wrote");
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Write requests waiting for the committer, not yet in a batch"
    );
    describe_counter!(
        WRITE_ERRORS_TOTAL,
        Unit::Count,
        "Failed file writes by step (op) and effect (transient or poisoning)"
    );
    describe_gauge!(
        POISONED,
        "1 once a failed fsync poisoned the driver (writes refused until reopened)"
    );
    describe_gauge!(DENSE_KEYS, Unit::Count, "Dense keys with a durable counter");
    describe_gauge!(LEASES, Unit::Count, "Leases in the durable lease set");
    describe_histogram!(
        RECOVERY_SECONDS,
        Unit::Seconds,
        "Reading, checking and cleaning the state directory at open"
    );
    describe_counter!(
        RECOVERY_TEMP_FILES_REMOVED_TOTAL,
        Unit::Count,
        "Leftover *.tmp files of interrupted writes removed at open"
    );
}

/// Open removed `removed` leftover temp files.
#[inline]
pub(crate) fn temp_files_removed(removed: u64) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(RECOVERY_TEMP_FILES_REMOVED_TOTAL).increment(removed);
    #[cfg(not(feature = "metrics"))]
    let _ = removed;
}
