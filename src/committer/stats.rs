//! What the committer counts: [`CommitStats`] for callers, and the
//! atomic counters (and metric handles) behind it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::metrics::DriverMetrics;

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
    pub(super) requests: AtomicU64,
    pub(crate) fast_path: AtomicU64,
    pub(super) batches: AtomicU64,
    pub(super) file_writes: AtomicU64,
    pub(super) fsyncs: AtomicU64,
    /// Nanoseconds one fsync may take before a warning is logged.
    pub(super) slow_fsync_nanos: AtomicU64,
    /// The driver's metric handles (no-ops without the `metrics` feature).
    pub(crate) metrics: DriverMetrics,
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
            metrics: DriverMetrics::register(),
        }
    }
}

impl StatCounters {
    pub(crate) fn set_slow_fsync(&self, threshold: Duration) {
        let nanos = u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX);
        self.slow_fsync_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Logs a warning when one fsync of `path` took longer than the threshold.
    pub(super) fn check_fsync(&self, what: &'static str, path: &std::path::Path, took: Duration) {
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

    pub(super) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}
