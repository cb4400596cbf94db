//! The metrics of injected failures: the error counter and the poisoned
//! gauge, and the queue a paused committer holds (with the `metrics`
//! feature too).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::LEADER_EPOCH;
use tsoracle_driver_file::metrics as names;

use crate::common::key;
use crate::common::metrics::{Recorded, open_measured};

/// Failpoints are process-wide: every test holds a scenario (one at a
/// time), so none sees another's failpoints.
fn exclusive() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}

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
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::task::yield_now().await;
    }
}
