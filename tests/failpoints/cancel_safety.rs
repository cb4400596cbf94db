//! Cancel safety and fault classification, with the `fail` crate.
//!
//! A caller that drops its future loses only its reply: a request that was
//! queued still completes inside the committer, memory stays equal to disk,
//! and nothing goes backwards. A failed fsync poisons the driver until it is
//! reopened; a failed temp write (including a full disk) is transient.
//!
//! Every test holds its own `FailScenario`, so failpoints never leak
//! between tests.

use std::collections::BTreeMap;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use fail::FailScenario;
use tokio::sync::oneshot;
use tsoracle_consensus::{ConsensusDriver, ConsensusError};
use tsoracle_core::{LeaseRecord, SeqKey};
use tsoracle_driver_file::vfs::SimFs;
use tsoracle_driver_file::{
    FileDriver, FileDriverError, FileOp, LEADER_EPOCH, dense_record, lease_record, record,
};

use crate::common::sim::{HW, open};
use crate::common::{Paused, classify, dir_contents, error_chain as chain, key};

/// A write request some caller got into the committer's queue.
#[derive(Clone, Debug)]
enum Sent {
    HighWater(u64),
    Dense(usize, u32),
    Leases(Vec<LeaseRecord>),
}

type SentLog = Arc<Mutex<Vec<Sent>>>;

/// Polls `call` once, then records `what` in `log`. The driver queues its
/// request synchronously during that first poll (for a call that is not
/// answered from memory), so after this function has been polled once the
/// log says exactly which requests reached the queue, however the caller
/// was cancelled afterwards.
async fn tracked<F: Future>(call: F, log: SentLog, what: Sent) -> F::Output {
    tracked_notify(call, log, what, None).await
}

/// [`tracked`], also signalling `queued` once the request is in the queue.
async fn tracked_notify<F: Future>(
    call: F,
    log: SentLog,
    what: Sent,
    queued: Option<oneshot::Sender<()>>,
) -> F::Output {
    let mut call = std::pin::pin!(call);
    let first = futures::poll!(call.as_mut());
    assert!(
        first.is_pending(),
        "{what:?} answered while the committer was paused"
    );
    log.lock().expect("log").push(what);
    if let Some(queued) = queued {
        let _ = queued.send(());
    }
    match first {
        Poll::Ready(output) => output,
        Poll::Pending => call.await,
    }
}

const KEYS: [&str; 3] = ["orders", "users", "items"];

fn lease(lease_id: u64, holder: &str, upper: u64) -> LeaseRecord {
    LeaseRecord {
        lease_id,
        holder: holder.as_bytes().to_vec(),
        holder_epoch: lease_id,
        ttl_ms: 5_000,
        ts_upper_bound: upper,
        expires_at_ms: upper + 5_000,
        superseded: false,
    }
}

/// Everything the driver serves from memory.
#[derive(Debug, PartialEq, Eq)]
struct View {
    high_water: u64,
    dense: BTreeMap<&'static str, u64>,
    leases: Vec<LeaseRecord>,
}

async fn view(driver: &FileDriver) -> View {
    let mut dense = BTreeMap::new();
    for name in KEYS {
        dense.insert(
            name,
            driver.load_dense_seq(&key(name)).await.expect("load dense"),
        );
    }
    View {
        high_water: driver.load_high_water().await.expect("load high-water"),
        dense,
        leases: driver.load_leases().await.expect("load leases"),
    }
}

/// The state files of a closed directory, decoded with the public codecs.
fn disk_view(dir: &Path) -> View {
    let state = record::decode(&std::fs::read(dir.join("state")).expect("read state"))
        .expect("state decodes");
    let dense = dense_record::decode(&std::fs::read(dir.join("dense")).expect("read dense"))
        .expect("dense decodes");
    let leases = lease_record::decode(&std::fs::read(dir.join("leases")).expect("read leases"))
        .expect("leases decode");
    View {
        high_water: state,
        dense: KEYS
            .iter()
            .map(|name| (*name, dense.counters.get(&key(name)).copied().unwrap_or(0)))
            .collect(),
        leases,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_calls_still_commit_and_memory_equals_disk() {
    let _scenario = FailScenario::setup();
    let tmp = tempfile::tempdir().expect("temp dir");
    let driver = FileDriver::open_or_init(tmp.path()).expect("open");

    // Acknowledged baseline.
    let base_leases = vec![lease(1, "svc-a", 1_000)];
    assert_eq!(
        driver
            .persist_high_water(1_000, LEADER_EPOCH)
            .await
            .unwrap(),
        1_000
    );
    for (index, name) in KEYS.iter().enumerate() {
        let count = 10 * (index as u32 + 1);
        assert_eq!(
            driver
                .advance_dense(&key(name), count, LEADER_EPOCH)
                .await
                .unwrap(),
            0
        );
    }
    driver
        .persist_leases(&base_leases, LEADER_EPOCH)
        .await
        .unwrap();
    let baseline = view(&driver).await;
    let requests_before = driver.stats().requests;

    let log: SentLog = Arc::default();
    let paused = Paused::at("file_driver::before_temp_write");

    // 1. Polled once, then dropped, from this task: the first of these holds
    //    the committer inside its write; the rest queue behind it. The lease
    //    sets are queued here only, in a known order.
    for i in 0..24u64 {
        let driver = Arc::clone(&driver);
        let log = Arc::clone(&log);
        let mut call: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match i % 4 {
            0 | 1 => {
                // Not monotone: later requests are sometimes lower.
                let at_least = 2_000 + (i * 37) % 500;
                Box::pin(async move {
                    let call = driver.persist_high_water(at_least, LEADER_EPOCH);
                    let _ = tracked(call, log, Sent::HighWater(at_least)).await;
                })
            }
            2 => {
                let k = i as usize % KEYS.len();
                let count = i as u32 + 1;
                Box::pin(async move {
                    let seq_key = key(KEYS[k]);
                    let call = driver.advance_dense(&seq_key, count, LEADER_EPOCH);
                    let _ = tracked(call, log, Sent::Dense(k, count)).await;
                })
            }
            _ => {
                let set = vec![lease(i, "svc-b", 1_500 + i), lease(1, "svc-a", 1_000 + i)];
                Box::pin(async move {
                    let call = driver.persist_leases(&set, LEADER_EPOCH);
                    let _ = tracked(call, log, Sent::Leases(set.clone())).await;
                })
            }
        };
        assert!(futures::poll!(call.as_mut()).is_pending());
        drop(call);
    }
    assert_eq!(
        log.lock().unwrap().len(),
        24,
        "every dropped call was queued"
    );

    // 2. Timed out: the timeout polls the call, then gives up on it.
    for i in 0..12u64 {
        let log = Arc::clone(&log);
        let timed_out = if i % 2 == 0 {
            let at_least = 2_600 + i;
            tokio::time::timeout(
                Duration::from_micros(5),
                tracked(
                    driver.persist_high_water(at_least, LEADER_EPOCH),
                    log,
                    Sent::HighWater(at_least),
                ),
            )
            .await
            .map(|_| ())
        } else {
            let k = i as usize % KEYS.len();
            let seq_key = key(KEYS[k]);
            let count = 100 + i as u32;
            tokio::time::timeout(
                Duration::from_micros(5),
                tracked(
                    driver.advance_dense(&seq_key, count, LEADER_EPOCH),
                    log,
                    Sent::Dense(k, count),
                ),
            )
            .await
            .map(|_| ())
        };
        assert!(
            timed_out.is_err(),
            "call {i} returned while the committer was paused"
        );
    }

    // 3. Spawned and aborted: every third task is aborted only after it
    //    reported its request queued; the others at once, so each of those
    //    may or may not have queued before the abort took effect. The log
    //    says which did.
    let mut aborted = Vec::new();
    let mut waited = 0;
    for i in 0..32u64 {
        let driver = Arc::clone(&driver);
        let log = Arc::clone(&log);
        let (queued, is_queued) = oneshot::channel();
        let task = tokio::spawn(async move {
            if i % 2 == 0 {
                let at_least = 2_700 + (i * 11) % 300;
                let call = driver.persist_high_water(at_least, LEADER_EPOCH);
                let _ = tracked_notify(call, log, Sent::HighWater(at_least), Some(queued)).await;
            } else {
                let k = i as usize % KEYS.len();
                let seq_key = key(KEYS[k]);
                let count = 1_000 + i as u32;
                let call = driver.advance_dense(&seq_key, count, LEADER_EPOCH);
                let _ = tracked_notify(call, log, Sent::Dense(k, count), Some(queued)).await;
            }
        });
        if i % 3 == 0 {
            is_queued.await.expect("the task reports once queued");
            waited += 1;
        }
        task.abort();
        aborted.push(task);
    }
    for task in aborted {
        let outcome = task.await;
        assert!(
            outcome.as_ref().is_err_and(|err| err.is_cancelled()),
            "no call can finish while the committer is paused: {outcome:?}"
        );
    }
    // Every caller is gone; only their queued requests remain.
    drop(paused);

    // A last awaited call. Requests are served in queue order, so when it is
    // answered every request queued before it has been committed (or failed).
    let last = driver
        .advance_dense(&key(KEYS[0]), 0, LEADER_EPOCH)
        .await
        .unwrap();

    let sent = log.lock().unwrap().clone();
    let mut expect = View {
        high_water: baseline.high_water,
        dense: baseline.dense.clone(),
        leases: baseline.leases.clone(),
    };
    for request in &sent {
        match request {
            Sent::HighWater(at_least) => expect.high_water = expect.high_water.max(*at_least),
            Sent::Dense(k, count) => *expect.dense.get_mut(KEYS[*k]).unwrap() += u64::from(*count),
            Sent::Leases(set) => {
                let mut sorted = set.clone();
                sorted.sort_by_key(|lease| lease.lease_id);
                expect.leases = sorted;
            }
        }
    }
    println!(
        "cancel_safety: {} dropped calls had queued their request ({} committer requests, {} batches)",
        sent.len(),
        driver.stats().requests,
        driver.stats().batches
    );
    assert!(sent.len() >= 36 + waited, "{} requests logged", sent.len());
    assert_eq!(
        driver.stats().requests,
        requests_before + sent.len() as u64 + 1,
        "the committer answered exactly the queued requests and the last call"
    );
    assert_eq!(
        last, expect.dense[KEYS[0]],
        "the last call sees every dropped advance"
    );
    let memory = view(&driver).await;
    assert_eq!(memory, expect, "memory holds exactly every queued request");
    assert!(!driver.is_poisoned());

    // Nothing went backwards; memory equals disk; a reopen reads the same.
    assert!(memory.high_water >= baseline.high_water);
    for name in KEYS {
        assert!(
            memory.dense[name] >= baseline.dense[name],
            "{name} went backwards"
        );
    }
    drop(driver);
    assert_eq!(disk_view(tmp.path()), memory, "disk equals memory");
    let reopened = FileDriver::open_or_init(tmp.path()).expect("reopen");
    assert_eq!(
        view(&reopened).await,
        memory,
        "reopen reads what memory held"
    );
}

/// The driver's own error inside a `TransientDriver` / `PermanentDriver`.
fn driver_error(err: &ConsensusError) -> &FileDriverError {
    FileDriverError::in_consensus(err)
        .unwrap_or_else(|| panic!("not a driver error boxing Arc<FileDriverError>: {err:?}"))
}

fn assert_permanent(result: Result<impl std::fmt::Debug, ConsensusError>) -> ConsensusError {
    match result {
        Err(err @ ConsensusError::PermanentDriver(_)) => err,
        other => panic!("expected PermanentDriver, got {other:?}"),
    }
}

fn assert_transient(result: Result<impl std::fmt::Debug, ConsensusError>) -> ConsensusError {
    match result {
        Err(err @ ConsensusError::TransientDriver(_)) => err,
        other => panic!("expected TransientDriver, got {other:?}"),
    }
}

/// A fresh driver with acknowledged writes: high-water 100, `orders` at 10,
/// and one lease.
struct Seeded {
    tmp: tempfile::TempDir,
    driver: Arc<FileDriver>,
    orders: SeqKey,
    leases: Vec<LeaseRecord>,
}

async fn seeded() -> Seeded {
    let tmp = tempfile::tempdir().expect("temp dir");
    let driver = FileDriver::open_or_init(tmp.path()).expect("open");
    let orders = key("orders");
    let leases = vec![lease(3, "svc-a", 100)];
    assert_eq!(
        driver.persist_high_water(100, LEADER_EPOCH).await.unwrap(),
        100
    );
    assert_eq!(
        driver
            .advance_dense(&orders, 10, LEADER_EPOCH)
            .await
            .unwrap(),
        0
    );
    driver.persist_leases(&leases, LEADER_EPOCH).await.unwrap();
    Seeded {
        tmp,
        driver,
        orders,
        leases,
    }
}

/// `driver` still serves exactly what [`seeded`] acknowledged.
async fn assert_seeded_values(driver: &FileDriver, orders: &SeqKey, leases: &[LeaseRecord]) {
    assert_eq!(driver.load_high_water().await.unwrap(), 100);
    assert_eq!(driver.load_dense_seq(orders).await.unwrap(), 10);
    assert_eq!(driver.load_leases().await.unwrap(), leases);
}

#[tokio::test]
async fn failed_temp_fsync_poisons_until_reopen() {
    let _scenario = FailScenario::setup();
    let Seeded {
        tmp,
        driver,
        orders,
        leases,
    } = seeded().await;
    let durable_state = std::fs::read(tmp.path().join("state")).unwrap();

    fail::cfg("file_driver::before_temp_fsync", "return").unwrap();
    let first = assert_permanent(driver.persist_high_water(200, LEADER_EPOCH).await);
    assert!(driver.is_poisoned());
    assert!(
        matches!(
            driver_error(&first),
            FileDriverError::Io {
                op: FileOp::FsyncTemp,
                ..
            }
        ),
        "{first:?}"
    );
    assert_eq!(
        driver.load_high_water().await.unwrap(),
        100,
        "memory did not move"
    );
    assert_eq!(
        std::fs::read(tmp.path().join("state")).unwrap(),
        durable_state,
        "the live file is untouched"
    );

    // The fault is gone, but a retry proves nothing after a failed fsync:
    // every write is refused, naming the first failure.
    fail::cfg("file_driver::before_temp_fsync", "off").unwrap();
    let later = [
        assert_permanent(driver.persist_high_water(300, LEADER_EPOCH).await),
        assert_permanent(driver.advance_dense(&orders, 1, LEADER_EPOCH).await),
        assert_permanent(driver.persist_leases(&[], LEADER_EPOCH).await),
    ];
    for err in &later {
        assert!(
            matches!(driver_error(err), FileDriverError::Poisoned { .. }),
            "{err:?}"
        );
        let text = chain(err);
        assert!(text.contains("fsync temp file"), "{text}");
        assert!(text.contains("state.tmp"), "{text}");
        assert!(text.contains("file_driver::before_temp_fsync"), "{text}");
    }
    assert!(driver.is_poisoned());
    assert_seeded_values(&driver, &orders, &leases).await;

    // Reopening re-reads what is durable: exactly the last acknowledged
    // values, and the driver writes again.
    drop(driver);
    let driver = FileDriver::open_or_init(tmp.path()).expect("reopen");
    assert!(!driver.is_poisoned());
    assert_seeded_values(&driver, &orders, &leases).await;
    assert!(
        !dir_contents(tmp.path())
            .keys()
            .any(|name| name.ends_with(".tmp")),
        "reopen removed the temp debris"
    );
    assert_eq!(
        driver.persist_high_water(400, LEADER_EPOCH).await.unwrap(),
        400
    );
    assert_eq!(
        driver
            .advance_dense(&orders, 1, LEADER_EPOCH)
            .await
            .unwrap(),
        10
    );
}

/// A temp write failing with `action` is transient: nothing moves, the
/// driver is not poisoned, and the next write succeeds with no gap.
async fn temp_write_failure_is_transient(action: &str, kind: Option<std::io::ErrorKind>) {
    let _scenario = FailScenario::setup();
    let Seeded {
        tmp,
        driver,
        orders,
        leases,
    } = seeded().await;
    let before = dir_contents(tmp.path());

    fail::cfg("file_driver::before_temp_write", action).unwrap();
    let failures = [
        assert_transient(driver.persist_high_water(200, LEADER_EPOCH).await),
        assert_transient(driver.advance_dense(&orders, 5, LEADER_EPOCH).await),
        assert_transient(driver.persist_leases(&[], LEADER_EPOCH).await),
    ];
    for err in &failures {
        match driver_error(err) {
            FileDriverError::Io {
                op: FileOp::WriteTemp,
                source,
                ..
            } => {
                if let Some(kind) = kind {
                    assert_eq!(source.kind(), kind, "{err:?}");
                }
            }
            other => panic!("expected a temp-write error, got {other:?}"),
        }
        assert!(chain(err).contains("file_driver::before_temp_write"));
    }
    assert!(!driver.is_poisoned());
    assert_seeded_values(&driver, &orders, &leases).await;
    assert_eq!(dir_contents(tmp.path()), before, "nothing on disk changed");

    fail::cfg("file_driver::before_temp_write", "off").unwrap();
    assert_eq!(
        driver.persist_high_water(200, LEADER_EPOCH).await.unwrap(),
        200
    );
    // The failed advance left no hole: the retry gets the same block.
    assert_eq!(
        driver
            .advance_dense(&orders, 5, LEADER_EPOCH)
            .await
            .unwrap(),
        10
    );
    driver.persist_leases(&[], LEADER_EPOCH).await.unwrap();

    drop(driver);
    let driver = FileDriver::open_or_init(tmp.path()).expect("reopen");
    assert_eq!(driver.load_high_water().await.unwrap(), 200);
    assert_eq!(driver.load_dense_seq(&orders).await.unwrap(), 15);
    assert_eq!(driver.load_leases().await.unwrap(), vec![]);
}

#[tokio::test]
async fn failed_temp_write_is_transient() {
    temp_write_failure_is_transient("return", None).await;
}

#[tokio::test]
async fn full_disk_is_transient() {
    temp_write_failure_is_transient("return(enospc)", Some(std::io::ErrorKind::StorageFull)).await;
}

// The review regressions' fix 2.

/// Fix 2: once the rename took effect the live file holds the new record,
/// so a failure there poisons and is permanent, not a transient rename
/// error a caller would retry.
#[tokio::test]
async fn failure_after_rename_is_permanent_and_poisons() {
    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    let driver = open(&fs).expect("open");
    assert_eq!(
        driver.persist_high_water(HW, LEADER_EPOCH).await.unwrap(),
        HW
    );

    fail::cfg("file_driver::after_rename", "return").unwrap();
    let err = driver
        .persist_high_water(HW + 100, LEADER_EPOCH)
        .await
        .expect_err("the write fails after its rename");
    let (transient, inner) = classify(&err);
    assert!(!transient, "expected PermanentDriver, got {err:?}");
    assert!(
        matches!(
            inner,
            FileDriverError::Io {
                op: FileOp::Rename,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        chain(&err).contains("file_driver::after_rename"),
        "{}",
        chain(&err)
    );
    assert!(driver.is_poisoned(), "a failure after the rename poisons");
    assert_eq!(driver.high_water(), HW, "nothing new was published");

    // Poisoned: every later write is refused, permanently, even with the
    // fault gone.
    fail::cfg("file_driver::after_rename", "off").unwrap();
    let later = driver
        .persist_high_water(HW + 200, LEADER_EPOCH)
        .await
        .expect_err("a poisoned driver refuses writes");
    let (transient, inner) = classify(&later);
    assert!(!transient, "{later:?}");
    assert!(
        matches!(inner, FileDriverError::Poisoned { .. }),
        "{later:?}"
    );
}
