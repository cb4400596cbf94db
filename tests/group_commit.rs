//! Group commit under real concurrency: 64 tasks on a multi-thread runtime
//! call the driver at once. Every call succeeds with a correct answer, and
//! the committer's counters add up. How many writes the calls shared depends
//! on scheduling, so it is printed, not asserted; the deterministic batching
//! bound is in `failpoints/group_commit.rs` (feature `failpoints`).

mod common;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Barrier;
use tokio::task::JoinHandle;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::{CommitStats, FileDriver, LEADER_EPOCH};

use common::{assert_dense_blocks_tile, assert_dense_totals, key};

const CALLERS: u64 = 64;
const BASE: u64 = 1_764_000_000_000;

/// Spawns `CALLERS` tasks, the `i`-th running `call(i, driver)`, all
/// released at once by a barrier.
fn spawn_together<T, F, Fut>(driver: &Arc<FileDriver>, call: F) -> Vec<JoinHandle<T>>
where
    F: Fn(u64, Arc<FileDriver>) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let start = Arc::new(Barrier::new(CALLERS as usize));
    (0..CALLERS)
        .map(|i| {
            let start = Arc::clone(&start);
            let call = call(i, Arc::clone(driver));
            tokio::spawn(async move {
                start.wait().await;
                call.await
            })
        })
        .collect()
}

fn summary(what: &str, stats: CommitStats) {
    println!(
        "group_commit: {CALLERS} callers -> {} file writes, {} fsyncs \
         ({what}: {} batches, {} committer requests, {} fast-path; {:.3} writes per request)",
        stats.file_writes,
        stats.fsyncs,
        stats.batches,
        stats.requests,
        stats.fast_path,
        stats.file_writes as f64 / CALLERS as f64,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_persists_all_succeed_and_reach_the_maximum() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let driver = FileDriver::open_or_init(tmp.path()).expect("open");

    let tasks = spawn_together(&driver, |i, driver| async move {
        let at_least = BASE + i;
        (
            at_least,
            driver.persist_high_water(at_least, LEADER_EPOCH).await,
        )
    });
    for task in tasks {
        let (at_least, result) = task.await.expect("task");
        let durable = result.expect("persist_high_water succeeds");
        assert!(
            durable >= at_least,
            "persist({at_least}) returned {durable}"
        );
        assert!(
            durable < BASE + CALLERS,
            "returned {durable}, never asked for"
        );
    }

    let max = BASE + CALLERS - 1;
    assert_eq!(driver.load_high_water().await.expect("load"), max);
    let stats = driver.stats();
    summary("persist_high_water", stats);
    // Each call went either to the committer or down the fast path.
    assert_eq!(stats.requests + stats.fast_path, CALLERS, "{stats:?}");
    // Only `state` is written: one file and one directory fsync per batch.
    assert_eq!(stats.file_writes, stats.batches, "{stats:?}");
    assert_eq!(stats.fsyncs, stats.file_writes + stats.batches, "{stats:?}");
    assert!(
        stats.batches >= 1 && stats.batches <= stats.requests,
        "{stats:?}"
    );

    drop(driver);
    let reopened = FileDriver::open_or_init(tmp.path()).expect("reopen");
    assert_eq!(reopened.load_high_water().await.expect("load"), max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_dense_advances_get_disjoint_contiguous_blocks() {
    const KEYS: [&str; 4] = ["orders", "users", "items", "carts"];
    let tmp = tempfile::tempdir().expect("temp dir");
    let driver = FileDriver::open_or_init(tmp.path()).expect("open");

    let tasks = spawn_together(&driver, |i, driver| async move {
        let name = KEYS[i as usize % KEYS.len()];
        let count = i as u32 + 1;
        let result = driver.advance_dense(&key(name), count, LEADER_EPOCH).await;
        (name, count, result)
    });
    let totals = assert_dense_blocks_tile(&driver, tasks).await;
    assert_eq!(totals.len(), KEYS.len());

    let stats = driver.stats();
    summary("advance_dense", stats);
    assert_eq!(stats.requests, CALLERS, "{stats:?}");
    assert_eq!(stats.file_writes, stats.batches, "{stats:?}");
    assert_eq!(stats.fsyncs, stats.file_writes + stats.batches, "{stats:?}");

    drop(driver);
    let reopened = FileDriver::open_or_init(tmp.path()).expect("reopen");
    assert_dense_totals(&reopened, &totals).await;
}
