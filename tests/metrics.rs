//! With the `metrics` feature the driver records what it does through the
//! `metrics` facade: each test opens a driver under its own in-memory
//! recorder (`metrics-util`'s `DebuggingRecorder`, set as the local recorder
//! while the driver opens, which is when its handles are registered), works
//! it, and checks every recorded value against what the driver's own
//! `stats()` and the calls say happened.
//!
//! With `failpoints` as well, injected failures show in the error counter
//! and the poisoned gauge, and a paused committer shows its queue.

use std::collections::HashMap;
use std::sync::Arc;
#[cfg(feature = "failpoints")]
use std::time::{Duration, Instant};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::{LeaseRecord, SeqKey};
use tsoracle_driver_file::metrics as names;
use tsoracle_driver_file::{FileDriver, LEADER_EPOCH};

/// Failpoints are process-wide: with the `failpoints` feature every test
/// holds a scenario (one at a time), so none sees another's failpoints.
#[cfg(feature = "failpoints")]
fn exclusive() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}

/// Without failpoints there is nothing to keep apart.
#[cfg(not(feature = "failpoints"))]
struct Alone;

#[cfg(not(feature = "failpoints"))]
fn exclusive() -> Alone {
    Alone
}

/// A driver opened under its own recorder.
fn open_measured(dir: &std::path::Path) -> (Arc<FileDriver>, Snapshotter) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let driver = metrics::with_local_recorder(&recorder, || FileDriver::open_or_init(dir))
        .expect("open the state directory");
    (driver, snapshotter)
}

/// What was recorded since the previous snapshot: the debugging recorder
/// resets counters and gauges to 0 and drains histograms as it reads them,
/// so counters read as increments, and a gauge as the value last `set`
/// since the previous snapshot (0 if none).
struct Recorded(HashMap<CompositeKey, DebugValue>);

impl Recorded {
    fn take(snapshotter: &Snapshotter) -> Self {
        Recorded(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| (key, value))
                .collect(),
        )
    }

    fn find(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> &DebugValue {
        self.0
            .iter()
            .find(|(key, _)| {
                let key_labels: Vec<(&str, &str)> = key
                    .key()
                    .labels()
                    .map(|label| (label.key(), label.value()))
                    .collect();
                key.kind() == kind
                    && key.key().name() == name
                    && key_labels.len() == labels.len()
                    && labels.iter().all(|label| key_labels.contains(label))
            })
            .map(|(_, value)| value)
            .unwrap_or_else(|| panic!("{kind:?} {name} {labels:?} was not registered"))
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.find(MetricKind::Counter, name, labels) {
            DebugValue::Counter(value) => *value,
            other => panic!("{name} is not a counter: {other:?}"),
        }
    }

    fn gauge(&self, name: &str) -> f64 {
        match self.find(MetricKind::Gauge, name, &[]) {
            DebugValue::Gauge(value) => value.into_inner(),
            other => panic!("{name} is not a gauge: {other:?}"),
        }
    }

    fn histogram(&self, name: &str) -> Vec<f64> {
        match self.find(MetricKind::Histogram, name, &[]) {
            DebugValue::Histogram(values) => values.iter().map(|v| v.into_inner()).collect(),
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }

    fn write_errors(&self, op: &str, effect: &str) -> u64 {
        self.counter(names::WRITE_ERRORS_TOTAL, &[("op", op), ("effect", effect)])
    }

    fn all_write_errors(&self) -> u64 {
        let mut total = 0;
        for op in ["write_temp", "fsync_temp", "rename", "fsync_dir"] {
            for effect in ["transient", "poisoning"] {
                total += self.write_errors(op, effect);
            }
        }
        total
    }
}

fn key(name: &str) -> SeqKey {
    SeqKey::try_new(name).expect("valid key")
}

fn lease(lease_id: u64) -> LeaseRecord {
    LeaseRecord {
        lease_id,
        holder: format!("svc-{lease_id}").into_bytes(),
        holder_epoch: 1,
        ttl_ms: 5_000,
        ts_upper_bound: 10,
        expires_at_ms: 20,
        superseded: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_measured_as_the_driver_counts_it() {
    let _exclusive = exclusive();
    let dir = tempfile::tempdir().expect("temp dir");
    // Debris of two interrupted writes: open removes both.
    std::fs::write(dir.path().join("state.tmp"), b"partial").expect("debris");
    std::fs::write(dir.path().join("dense.tmp"), b"partial").expect("debris");
    let (driver, snapshotter) = open_measured(dir.path());

    for at_least in 1..=5u64 {
        driver
            .persist_high_water(1_764_000_000_000 + at_least, LEADER_EPOCH)
            .await
            .expect("persist");
    }
    for name in ["a", "b", "c"] {
        driver
            .advance_dense(&key(name), 10, LEADER_EPOCH)
            .await
            .expect("advance");
    }
    driver
        .persist_leases(&[lease(1), lease(2)], LEADER_EPOCH)
        .await
        .expect("leases");
    let stats = driver.stats();
    let seen = Recorded::take(&snapshotter);

    // Every name the crate declares was registered.
    for name in names::ALL {
        assert!(
            seen.0.keys().any(|key| key.key().name() == name),
            "{name} was never registered"
        );
    }
    // Recovery at open.
    assert_eq!(
        seen.counter(names::RECOVERY_TEMP_FILES_REMOVED_TOTAL, &[]),
        2
    );
    assert_eq!(seen.histogram(names::RECOVERY_SECONDS).len(), 1);
    // One fsync sample per file written, one directory fsync per batch.
    let fsyncs = seen.histogram(names::FSYNC_SECONDS);
    assert_eq!(fsyncs.len() as u64, stats.file_writes);
    assert_eq!(stats.file_writes, 9, "5 state, 3 dense, 1 leases");
    assert!(fsyncs.iter().all(|s| *s >= 0.0));
    assert_eq!(
        seen.histogram(names::DIR_FSYNC_SECONDS).len() as u64,
        stats.batches
    );
    // Batch sizes: every request in exactly one batch; the five high-water
    // writes came first and wrote the 17-byte record each.
    let requests = seen.histogram(names::BATCH_REQUESTS);
    assert_eq!(requests.iter().sum::<f64>() as u64, stats.requests);
    assert_eq!(stats.requests, 9);
    let bytes = seen.histogram(names::BATCH_BYTES);
    assert_eq!(bytes.len() as u64, stats.batches);
    assert_eq!(bytes[..5], [17.0; 5]);
    // Gauges mirror what is durable; nothing is left queued.
    assert_eq!(seen.gauge(names::DENSE_KEYS), 3.0);
    assert_eq!(seen.gauge(names::LEASES), 2.0);
    assert_eq!(seen.gauge(names::POISONED), 0.0);
    assert_eq!(seen.gauge(names::QUEUE_DEPTH), 0.0);
    assert_eq!(seen.all_write_errors(), 0);
    drop(driver);

    // A reopen reports what it found.
    let (driver, snapshotter) = open_measured(dir.path());
    let seen = Recorded::take(&snapshotter);
    assert_eq!(seen.gauge(names::DENSE_KEYS), 3.0);
    assert_eq!(seen.gauge(names::LEASES), 2.0);
    assert_eq!(
        seen.counter(names::RECOVERY_TEMP_FILES_REMOVED_TOTAL, &[]),
        0
    );
    drop(driver);
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_directory_fsync_counts_and_sets_poisoned() {
    let _exclusive = exclusive();
    let dir = tempfile::tempdir().expect("temp dir");
    let (driver, snapshotter) = open_measured(dir.path());
    fail::cfg("file_driver::before_dir_fsync", "return").expect("failpoint");
    driver
        .persist_high_water(1_764_000_000_000, LEADER_EPOCH)
        .await
        .expect_err("the directory fsync fails");
    fail::cfg("file_driver::before_dir_fsync", "off").expect("failpoint");
    assert!(driver.is_poisoned());
    let seen = Recorded::take(&snapshotter);
    assert_eq!(seen.gauge(names::POISONED), 1.0);
    assert_eq!(seen.write_errors("fsync_dir", "poisoning"), 1);
    assert_eq!(seen.all_write_errors(), 1);

    // Poisoned: a later write is refused without touching the disk, so no
    // new error and no fsync is recorded.
    driver
        .persist_high_water(1_764_000_000_001, LEADER_EPOCH)
        .await
        .expect_err("refused");
    let seen = Recorded::take(&snapshotter);
    assert_eq!(seen.all_write_errors(), 0);
    assert!(seen.histogram(names::FSYNC_SECONDS).is_empty());
    drop(driver);

    // Reopened, it is healthy again.
    let (driver, snapshotter) = open_measured(dir.path());
    assert_eq!(Recorded::take(&snapshotter).gauge(names::POISONED), 0.0);
    drop(driver);
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rename_counts_as_transient_and_does_not_poison() {
    let _exclusive = exclusive();
    let dir = tempfile::tempdir().expect("temp dir");
    let (driver, snapshotter) = open_measured(dir.path());
    fail::cfg("file_driver::before_rename", "return").expect("failpoint");
    driver
        .advance_dense(&key("k"), 1, LEADER_EPOCH)
        .await
        .expect_err("the rename fails");
    fail::cfg("file_driver::before_rename", "off").expect("failpoint");
    let seen = Recorded::take(&snapshotter);
    assert_eq!(seen.write_errors("rename", "transient"), 1);
    assert_eq!(seen.all_write_errors(), 1);
    assert_eq!(seen.gauge(names::POISONED), 0.0);
    assert_eq!(seen.gauge(names::DENSE_KEYS), 0.0, "nothing was published");

    driver
        .advance_dense(&key("k"), 1, LEADER_EPOCH)
        .await
        .expect("a retry succeeds");
    let seen = Recorded::take(&snapshotter);
    assert_eq!(seen.gauge(names::DENSE_KEYS), 1.0);
    drop(driver);
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_depth_counts_callers_waiting_behind_a_write() {
    const WAITING: u64 = 10;
    let _exclusive = exclusive();
    let dir = tempfile::tempdir().expect("temp dir");
    let (driver, snapshotter) = open_measured(dir.path());
    fail::cfg("file_driver::before_temp_write", "pause").expect("failpoint");

    // The first call is taken into a batch and pauses inside its write.
    let first = {
        let driver = Arc::clone(&driver);
        tokio::spawn(async move {
            driver
                .persist_high_water(1_764_000_000_000, LEADER_EPOCH)
                .await
        })
    };
    wait_until("the first call is taken", || driver.stats().requests == 1).await;
    // The next ones queue behind it, one after another: a call's first
    // poll sends its request.
    let mut waiting = Vec::new();
    for i in 1..=WAITING {
        let mut call = Box::pin(driver.persist_high_water(1_764_000_000_000 + i, LEADER_EPOCH));
        assert!(
            futures::poll!(call.as_mut()).is_pending(),
            "call {i} queued"
        );
        waiting.push(call);
    }
    // The debugging recorder reads a gauge as the value last set.
    assert_eq!(
        Recorded::take(&snapshotter).gauge(names::QUEUE_DEPTH),
        WAITING as f64
    );

    fail::cfg("file_driver::before_temp_write", "off").expect("failpoint");
    first.await.expect("task").expect("persist");
    for call in waiting {
        call.await.expect("persist");
    }
    assert_eq!(
        Recorded::take(&snapshotter).gauge(names::QUEUE_DEPTH),
        0.0,
        "the committer took every waiting caller"
    );
    drop(driver);
}

/// Polls `condition` until it holds, within a generous bound.
#[cfg(feature = "failpoints")]
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::task::yield_now().await;
    }
}
