//! With the `metrics` feature the driver records what it does through the
//! `metrics` facade: each test opens a driver under its own in-memory
//! recorder (`metrics-util`'s `DebuggingRecorder`, set as the local recorder
//! while the driver opens, which is when its handles are registered), works
//! it, and checks every recorded value against what the driver's own
//! `stats()` and the calls say happened.
//!
//! With `failpoints` as well, injected failures show in the error counter
//! and the poisoned gauge, and a paused committer shows its queue: those
//! tests are in `tests/failpoints/metrics.rs`.

mod common;

use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::{LeaseRecord, SeqKey};
use tsoracle_driver_file::LEADER_EPOCH;
use tsoracle_driver_file::metrics as names;

use common::metrics::{Recorded, open_measured};

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
