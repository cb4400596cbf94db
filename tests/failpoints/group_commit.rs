//! Group commit, made deterministic with a failpoint: while the committer is
//! paused inside a first write, 64 callers queue their requests; once it is
//! released, all of them are served by at most two batches (the one it was
//! paused in, and one more), i.e. at most two file writes for 65 calls.
//!
//! Each caller reports, through a channel, that its request is queued: the
//! driver sends a request synchronously during the first poll of the call's
//! future, so a caller whose first poll returned `Pending` is in the queue.
//! The test waits for all 64 reports before releasing the committer.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::Poll;

use fail::FailScenario;
use tokio::sync::mpsc;
use tsoracle_consensus::{ConsensusDriver, ConsensusError};
use tsoracle_driver_file::vfs::SimFs;
use tsoracle_driver_file::{FileDriver, FileDriverError, FileOp, LEADER_EPOCH};

use crate::common;
use crate::common::sim::{DIR, HW, open, simfs_create_dir};
use crate::common::{
    Paused, assert_dense_blocks_tile, assert_dense_totals, classify, error_chain as chain, key,
};

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

// The review regressions' fixes 3 and 4: a batch that a failed write
// undoes.

/// Fix 3: a request refused by the key cap only because of an earlier
/// request of its batch must not be refused when that earlier request is
/// itself undone by a failed write: it gets the write's failure, and a
/// retry then succeeds.
#[tokio::test]
async fn dense_refusal_waits_for_its_batch() {
    use tsoracle_driver_file::dense_record::{self, DenseState};

    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    simfs_create_dir(&fs, DIR);
    // Cap 2, one key present: one more key fits, two do not.
    let mut dense = DenseState {
        cap: 2,
        ..DenseState::default()
    };
    dense.counters.insert(common::key("a"), 5);
    fs.put_file(&Path::new(DIR).join("dense"), &dense_record::encode(&dense))
        .expect("put a file");
    let driver = open(&fs).expect("open");
    let (a, b, c) = (common::key("a"), common::key("b"), common::key("c"));

    // A first write holds the committer inside its first disk operation
    // (past the `before_temp_write` failpoint).
    let hold = fs.hold_next_op();
    let first = driver.advance_dense(&a, 1, LEADER_EPOCH);
    tokio::pin!(first);
    assert!(futures::poll!(first.as_mut()).is_pending());
    common::sim::wait_reached(&hold);

    // Queued behind it, one batch: A creates the last key the cap allows;
    // B creates one more, refused only because of A.
    let create_last = driver.advance_dense(&b, 1, LEADER_EPOCH);
    let create_over = driver.advance_dense(&c, 1, LEADER_EPOCH);
    tokio::pin!(create_last, create_over);
    assert!(futures::poll!(create_last.as_mut()).is_pending());
    assert!(futures::poll!(create_over.as_mut()).is_pending());

    // The next dense write (A's and B's batch) fails, transiently.
    fail::cfg("file_driver::before_temp_write", "1*return").unwrap();
    hold.release();

    assert_eq!(first.await.expect("the held write succeeds"), 5);
    let err_a = create_last.await.expect_err("A's write fails");
    let err_b = create_over.await.expect_err("B's batch failed");
    for (name, err) in [("A", &err_a), ("B", &err_b)] {
        let (transient, inner) = classify(err);
        assert!(transient, "{name}: expected TransientDriver, got {err:?}");
        assert!(
            matches!(
                inner,
                FileDriverError::Io {
                    op: FileOp::WriteTemp,
                    ..
                }
            ),
            "{name}: {err:?}"
        );
        assert!(
            chain(err).contains("file_driver::before_temp_write"),
            "{name}: {}",
            chain(err)
        );
    }
    assert!(!driver.is_poisoned());
    assert_eq!(driver.load_dense_seq(&b).await.unwrap(), 0, "A was undone");

    // The failpoint has fired its one time: one new key fits under the cap.
    assert_eq!(driver.advance_dense(&c, 1, LEADER_EPOCH).await.unwrap(), 0);
    assert!(matches!(
        driver.advance_dense(&b, 1, LEADER_EPOCH).await,
        Err(ConsensusError::SeqKeyCardinalityExceeded { cap: 2 })
    ));
}

/// Fix 4: a high-water request that was above the durable value when it
/// was queued, but is covered by the time the committer folds it (an
/// earlier batch made a higher value durable), is answered Ok with the
/// durable value, even though the same batch's state write fails.
#[tokio::test]
async fn covered_high_water_survives_failed_write_of_its_batch() {
    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    let driver = open(&fs).expect("open");
    let (low, first_hw, high) = (HW + 50, HW + 100, HW + 200);
    assert_eq!(
        driver.persist_high_water(HW, LEADER_EPOCH).await.unwrap(),
        HW
    );

    // persist(HW+100) holds the committer inside its write.
    let hold = fs.hold_next_op();
    let first = driver.persist_high_water(first_hw, LEADER_EPOCH);
    tokio::pin!(first);
    assert!(futures::poll!(first.as_mut()).is_pending());
    common::sim::wait_reached(&hold);

    // Both are above what is durable now (HW), so both reach the committer;
    // by the time it folds them, HW+50 is covered by HW+100.
    let covered = driver.persist_high_water(low, LEADER_EPOCH);
    let above = driver.persist_high_water(high, LEADER_EPOCH);
    tokio::pin!(covered, above);
    assert!(futures::poll!(covered.as_mut()).is_pending());
    assert!(futures::poll!(above.as_mut()).is_pending());

    // Their batch's state write fails, transiently.
    fail::cfg("file_driver::before_temp_write", "1*return").unwrap();
    hold.release();

    assert_eq!(first.await.expect("the held write succeeds"), first_hw);
    assert_eq!(
        covered.await.expect("a covered request needs no write"),
        first_hw
    );
    let err = above.await.expect_err("the state write failed");
    let (transient, inner) = classify(&err);
    assert!(transient, "expected TransientDriver, got {err:?}");
    assert!(
        matches!(
            inner,
            FileDriverError::Io {
                op: FileOp::WriteTemp,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!driver.is_poisoned());
    assert_eq!(driver.high_water(), first_hw);
}
