//! Group commit, made deterministic with a failpoint: while the committer is
//! paused inside a first write, 64 callers queue their requests; once it is
//! released, all of them are served by at most two batches (the one it was
//! paused in, and one more), i.e. at most two file writes for 65 calls.
//!
//! Each caller reports, through a channel, that its request is queued: the
//! driver sends a request synchronously during the first poll of the call's
//! future, so a caller whose first poll returned `Pending` is in the queue.
//! The test waits for all 64 reports before releasing the committer.
#![cfg(feature = "failpoints")]

mod common;

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use fail::FailScenario;
use tokio::sync::mpsc;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::{FileDriver, LEADER_EPOCH};

use common::{Paused, assert_dense_blocks_tile, assert_dense_totals, key};

const CALLERS: u64 = 64;
const PAUSE_AT: &str = "file_driver::before_temp_write";

/// Polls `call` once, reports whether that first poll left it pending (its
/// request is then queued), and finishes it.
async fn report_queued<F: Future>(call: F, queued: mpsc::UnboundedSender<bool>) -> F::Output {
    let mut call = std::pin::pin!(call);
    let first = futures::poll!(call.as_mut());
    queued
        .send(first.is_pending())
        .expect("test awaits reports");
    match first {
        Poll::Ready(output) => output,
        Poll::Pending => call.await,
    }
}

/// Waits for `n` reports and asserts each call was still pending (queued
/// behind the paused committer, not answered).
async fn all_queued(reports: &mut mpsc::UnboundedReceiver<bool>, n: u64) {
    for i in 0..n {
        let pending = reports.recv().await.expect("a report per caller");
        assert!(
            pending,
            "call {i} was answered while the committer was paused"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_persists_share_at_most_two_writes() {
    let _scenario = FailScenario::setup();
    let tmp = tempfile::tempdir().expect("temp dir");
    let driver = FileDriver::open_or_init(tmp.path()).expect("open");
    let (report, mut reports) = mpsc::unbounded_channel();
    let paused = Paused::at(PAUSE_AT);

    let first = {
        let driver = Arc::clone(&driver);
        let report = report.clone();
        tokio::spawn(async move {
            report_queued(driver.persist_high_water(1_000, LEADER_EPOCH), report).await
        })
    };
    all_queued(&mut reports, 1).await;

    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let driver = Arc::clone(&driver);
            let report = report.clone();
            let at_least = 2_000 + i;
            tokio::spawn(async move {
                let result =
                    report_queued(driver.persist_high_water(at_least, LEADER_EPOCH), report).await;
                (at_least, result)
            })
        })
        .collect();
    all_queued(&mut reports, CALLERS).await;
    drop(paused);

    let durable = first.await.expect("task").expect("first persist succeeds");
    assert!(durable >= 1_000);
    for task in tasks {
        let (at_least, result) = task.await.expect("task");
        let durable = result.expect("persist_high_water succeeds");
        assert!(
            durable >= at_least,
            "persist({at_least}) returned {durable}"
        );
    }
    let max = 2_000 + CALLERS - 1;
    assert_eq!(driver.load_high_water().await.expect("load"), max);

    let stats = driver.stats();
    println!(
        "group_commit: {} callers -> {} file writes, {} fsyncs (paused committer, persist_high_water: {} batches)",
        CALLERS + 1,
        stats.file_writes,
        stats.fsyncs,
        stats.batches
    );
    assert_eq!(stats.requests, CALLERS + 1, "{stats:?}");
    assert_eq!(stats.fast_path, 0, "{stats:?}");
    assert!(stats.batches <= 2, "65 queued calls took {stats:?}");
    assert!(stats.file_writes <= 2, "65 queued calls took {stats:?}");
    assert!(stats.fsyncs <= 4, "65 queued calls took {stats:?}");

    drop(driver);
    let reopened = FileDriver::open_or_init(tmp.path()).expect("reopen");
    assert_eq!(reopened.load_high_water().await.expect("load"), max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_dense_advances_share_at_most_two_writes() {
    const KEYS: [&str; 3] = ["orders", "users", "items"];
    let _scenario = FailScenario::setup();
    let tmp = tempfile::tempdir().expect("temp dir");
    let driver = FileDriver::open_or_init(tmp.path()).expect("open");
    let (report, mut reports) = mpsc::unbounded_channel();
    let paused = Paused::at(PAUSE_AT);

    // The first call (on KEYS[0], count 5) holds the committer in its write.
    let mut calls = vec![(KEYS[0], 5u32)];
    calls.extend((0..CALLERS).map(|i| (KEYS[i as usize % KEYS.len()], i as u32 + 1)));
    let mut tasks = Vec::new();
    for (index, (name, count)) in calls.into_iter().enumerate() {
        let driver = Arc::clone(&driver);
        let report = report.clone();
        tasks.push(tokio::spawn(async move {
            let seq_key = key(name);
            let call = driver.advance_dense(&seq_key, count, LEADER_EPOCH);
            (name, count, report_queued(call, report).await)
        }));
        if index == 0 {
            all_queued(&mut reports, 1).await;
        }
    }
    all_queued(&mut reports, CALLERS).await;
    drop(paused);

    let totals = assert_dense_blocks_tile(&driver, tasks).await;

    let stats = driver.stats();
    println!(
        "group_commit: {} callers -> {} file writes, {} fsyncs (paused committer, advance_dense: {} batches)",
        CALLERS + 1,
        stats.file_writes,
        stats.fsyncs,
        stats.batches
    );
    assert_eq!(stats.requests, CALLERS + 1, "{stats:?}");
    assert!(stats.batches <= 2, "65 queued calls took {stats:?}");
    assert!(stats.file_writes <= 2, "65 queued calls took {stats:?}");
    assert!(stats.fsyncs <= 4, "65 queued calls took {stats:?}");

    drop(driver);
    let reopened = FileDriver::open_or_init(tmp.path()).expect("reopen");
    assert_dense_totals(&reopened, &totals).await;
}
