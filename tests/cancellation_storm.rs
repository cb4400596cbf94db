//! A storm of cancelled calls loses nothing and invents nothing: at least
//! ten thousand write calls, of every write method, dropped at random points
//! (a timeout of a few microseconds, a `select!` another branch wins, a
//! spawned task aborted), with the committer running free.
//!
//! Every call that returned `Ok` was acknowledged: after the storm its value
//! must be covered by memory, by the files, and by a reopened driver, and
//! the dense blocks handed out must never overlap. No call may return `Err`
//! (nothing here is invalid or fails). After each storm one awaited call of
//! each kind drains the queue (the committer answers in FIFO order), and
//! then memory must equal what the files hold, and a reopen must equal
//! memory.

mod common;
use common::child;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tsoracle_consensus::{ConsensusDriver, ConsensusError};
use tsoracle_core::LeaseRecord;
use tsoracle_driver_file::{FileDriver, LEADER_EPOCH, dense_record, lease_record, record};

use child::XorShift;
use common::key;

const STORMS: u64 = 5;
const CALLS_PER_STORM: u64 = 2_100;
const WORKERS: u64 = 8;
const SEED: u64 = 0xca9c_e115_7012;
const KEYS: [&str; 4] = ["orders", "users", "items", "clés"];
const HW_BASE: u64 = 1_764_000_000_000;

/// One write call, fully described so it can be re-made in a `'static`
/// future.
#[derive(Clone, Debug)]
enum Op {
    HighWater(u64),
    Dense(&'static str, u32),
    Batch(Vec<(&'static str, u32)>),
    Leases(Vec<LeaseRecord>),
}

/// What an acknowledged call was given.
#[derive(Debug)]
enum Ack {
    HighWater { asked: u64, got: u64 },
    Blocks(Vec<(&'static str, u64, u64)>),
    Leases,
}

fn lease(lease_id: u64, upper: u64) -> LeaseRecord {
    LeaseRecord {
        lease_id,
        holder: format!("holder-{lease_id}").into_bytes(),
        holder_epoch: lease_id % 5,
        ttl_ms: 1_000 + lease_id,
        ts_upper_bound: upper,
        expires_at_ms: upper + 1_000,
        superseded: lease_id.is_multiple_of(3),
    }
}

fn random_op(rng: &mut XorShift, storm: u64) -> Op {
    let pick_key = |rng: &mut XorShift| KEYS[rng.below(KEYS.len() as u64) as usize];
    match rng.below(8) {
        // Some below what is durable (the fast path), most above.
        0..=2 => Op::HighWater(HW_BASE + storm * 1_000_000 + rng.below(1_000_000)),
        3..=4 => Op::Dense(pick_key(rng), rng.below(100) as u32),
        5..=6 => {
            // A key may repeat within a batch: each entry sees the last.
            let entries = (0..rng.range(1, 3))
                .map(|_| (pick_key(rng), rng.range(1, 50) as u32))
                .collect();
            Op::Batch(entries)
        }
        _ => {
            let mut ids: Vec<u64> = (0..rng.below(4)).map(|_| rng.range(1, 1_000)).collect();
            ids.sort_unstable();
            ids.dedup();
            Op::Leases(ids.into_iter().map(|id| lease(id, HW_BASE + id)).collect())
        }
    }
}

/// The call `op` on `driver`, as a future that owns what it needs.
async fn call(driver: Arc<FileDriver>, op: Op) -> Result<Ack, ConsensusError> {
    match op {
        Op::HighWater(asked) => driver
            .persist_high_water(asked, LEADER_EPOCH)
            .await
            .map(|got| Ack::HighWater { asked, got }),
        Op::Dense(name, count) => driver
            .advance_dense(&key(name), count, LEADER_EPOCH)
            .await
            .map(|start| Ack::Blocks(vec![(name, start, start + u64::from(count))])),
        Op::Batch(entries) => {
            let keyed: Vec<_> = entries
                .iter()
                .map(|&(name, count)| (key(name), count))
                .collect();
            let starts = driver.advance_dense_batch(&keyed, LEADER_EPOCH).await?;
            assert_eq!(starts.len(), entries.len(), "one start per entry");
            Ok(Ack::Blocks(
                entries
                    .iter()
                    .zip(starts)
                    .map(|(&(name, count), start)| (name, start, start + u64::from(count)))
                    .collect(),
            ))
        }
        Op::Leases(leases) => driver
            .persist_leases(&leases, LEADER_EPOCH)
            .await
            .map(|()| Ack::Leases),
    }
}

/// How one call ended.
enum Outcome {
    Completed(Ack),
    Dropped,
    Failed(String),
}

impl From<Result<Ack, ConsensusError>> for Outcome {
    fn from(result: Result<Ack, ConsensusError>) -> Self {
        match result {
            Ok(ack) => Outcome::Completed(ack),
            Err(err) => Outcome::Failed(err.to_string()),
        }
    }
}

/// Makes the call and drops it at a random point, or lets it finish.
async fn storm_call(driver: &Arc<FileDriver>, op: Op, rng: &mut XorShift) -> Outcome {
    let future = call(Arc::clone(driver), op);
    match rng.below(6) {
        // A timeout of a few microseconds (tokio rounds it up to its timer
        // tick, but the inner call is always polled first, so it is queued).
        0 => {
            let limit = Duration::from_micros(rng.below(30));
            match tokio::time::timeout(limit, future).await {
                Ok(result) => result.into(),
                Err(_elapsed) => Outcome::Dropped,
            }
        }
        // The call polled once (so queued), then a ready branch wins.
        1 => {
            tokio::select! {
                biased;
                result = future => result.into(),
                () = std::future::ready(()) => Outcome::Dropped,
            }
        }
        // Random branch order: the call may never be polled at all.
        2 => {
            tokio::select! {
                result = future => result.into(),
                () = std::future::ready(()) => Outcome::Dropped,
            }
        }
        // Another task fires a oneshot after yielding a few times.
        3 => {
            let (fire, fired) = oneshot::channel::<()>();
            let yields = rng.below(4);
            tokio::spawn(async move {
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
                let _ = fire.send(());
            });
            tokio::select! {
                result = future => result.into(),
                _ = fired => Outcome::Dropped,
            }
        }
        // A spawned task, aborted after a few yields (maybe before it ran).
        4 => {
            let task = tokio::spawn(future);
            for _ in 0..rng.below(3) {
                tokio::task::yield_now().await;
            }
            task.abort();
            match task.await {
                Ok(result) => result.into(),
                Err(join) if join.is_cancelled() => Outcome::Dropped,
                Err(join) => Outcome::Failed(format!("call panicked: {join}")),
            }
        }
        // Awaited to the end.
        _ => future.await.into(),
    }
}

/// Everything acknowledged so far, across storms and reopens.
#[derive(Default)]
struct Acked {
    high_water: u64,
    blocks: BTreeMap<&'static str, Vec<(u64, u64)>>,
}

impl Acked {
    fn record(&mut self, ack: Ack) {
        match ack {
            Ack::HighWater { asked, got } => {
                assert!(
                    got >= asked,
                    "persist_high_water({asked}) acknowledged {got}"
                );
                self.high_water = self.high_water.max(got);
            }
            Ack::Blocks(blocks) => {
                for (name, start, end) in blocks {
                    self.blocks.entry(name).or_default().push((start, end));
                }
            }
            Ack::Leases => {}
        }
    }

    fn max_end(&self, name: &str) -> u64 {
        self.blocks
            .get(name)
            .and_then(|blocks| blocks.iter().map(|&(_, end)| end).max())
            .unwrap_or(0)
    }

    /// No value was handed out twice, in one life of the driver or across
    /// reopens. Empty blocks (a count of 0) hold no value.
    fn assert_disjoint(&self) {
        for (name, blocks) in &self.blocks {
            let mut sorted: Vec<_> = blocks.iter().filter(|(s, e)| s < e).copied().collect();
            sorted.sort_unstable();
            for pair in sorted.windows(2) {
                assert!(
                    pair[0].1 <= pair[1].0,
                    "`{name}`: acknowledged blocks {:?} and {:?} overlap",
                    pair[0],
                    pair[1]
                );
            }
        }
    }
}

/// What the driver serves from memory.
#[derive(Debug, PartialEq, Eq)]
struct View {
    high_water: u64,
    dense: BTreeMap<&'static str, u64>,
    leases: Vec<LeaseRecord>,
}

async fn memory(driver: &FileDriver) -> View {
    let mut dense = BTreeMap::new();
    for name in KEYS {
        let value = driver.load_dense_seq(&key(name)).await.expect("load dense");
        dense.insert(name, value);
    }
    View {
        high_water: driver.load_high_water().await.expect("load high-water"),
        dense,
        leases: driver.load_leases().await.expect("load leases"),
    }
}

/// What the files hold. Live files are only ever replaced whole by rename,
/// so reading them while the driver is open is consistent.
fn disk(dir: &Path) -> View {
    let read = |name: &str| std::fs::read(dir.join(name)).ok();
    let high_water = read("state").map_or(0, |bytes| record::decode(&bytes).expect("state"));
    let counters = read("dense")
        .map(|bytes| dense_record::decode(&bytes).expect("dense").counters)
        .unwrap_or_default();
    for stored in counters.keys() {
        assert!(
            KEYS.contains(&stored.as_str()),
            "unexpected key {stored:?} on disk"
        );
    }
    let dense = KEYS
        .into_iter()
        .map(|name| (name, counters.get(&key(name)).copied().unwrap_or(0)))
        .collect();
    let leases = read("leases")
        .map(|bytes| lease_record::decode(&bytes).expect("leases"))
        .unwrap_or_default();
    View {
        high_water,
        dense,
        leases,
    }
}

#[derive(Default)]
struct Totals {
    calls: u64,
    dropped: u64,
    completed: u64,
    /// Requests the committer answered, dropped callers' included.
    committed: u64,
    failed: Vec<String>,
}

async fn storm(driver: &Arc<FileDriver>, storm: u64, acked: &mut Acked, totals: &mut Totals) {
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let driver = Arc::clone(driver);
        workers.spawn(async move {
            let mut rng = XorShift::new(SEED ^ (storm << 32) ^ (worker + 1));
            let mut outcomes = Vec::new();
            for _ in 0..CALLS_PER_STORM / WORKERS {
                let op = random_op(&mut rng, storm);
                outcomes.push(storm_call(&driver, op, &mut rng).await);
            }
            outcomes
        });
    }
    // Every worker, and with it every call and spawned task it made, is
    // finished here: nothing can queue a request any more.
    while let Some(outcomes) = workers.join_next().await {
        for outcome in outcomes.expect("worker") {
            totals.calls += 1;
            match outcome {
                Outcome::Completed(ack) => {
                    totals.completed += 1;
                    acked.record(ack);
                }
                Outcome::Dropped => totals.dropped += 1,
                Outcome::Failed(err) => totals.failed.push(err),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_dropped_calls_lose_nothing_and_fail_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let mut driver = FileDriver::open_or_init(dir).expect("open");
    let mut acked = Acked::default();
    let mut totals = Totals::default();
    for round in 0..STORMS {
        storm(&driver, round, &mut acked, &mut totals).await;
        assert!(
            totals.failed.is_empty(),
            "storm {round}: calls failed: {:?}",
            totals.failed
        );

        // One awaited call of each kind, queued behind everything the storm
        // queued: once each returns, the committer has answered all of it.
        let final_leases = vec![lease(10_000 + round, HW_BASE), lease(20_000, HW_BASE + 1)];
        driver
            .persist_leases(&final_leases, LEADER_EPOCH)
            .await
            .expect("final persist_leases");
        let asked = HW_BASE + (round + 1) * 1_000_000 + 1;
        let got = driver
            .persist_high_water(asked, LEADER_EPOCH)
            .await
            .expect("final persist_high_water");
        acked.record(Ack::HighWater { asked, got });
        let mut blocks = Vec::new();
        for name in KEYS {
            let start = driver
                .advance_dense(&key(name), 1, LEADER_EPOCH)
                .await
                .expect("final advance_dense");
            blocks.push((name, start, start + 1));
        }
        acked.record(Ack::Blocks(blocks));

        // Memory equals the files, and covers every acknowledgement.
        let view = memory(&driver).await;
        assert_eq!(view, disk(dir), "storm {round}: memory and disk differ");
        assert_eq!(
            view.leases, final_leases,
            "storm {round}: the last set wins"
        );
        assert!(
            view.high_water >= acked.high_water,
            "storm {round}: high-water {} below the acknowledged {}",
            view.high_water,
            acked.high_water
        );
        for name in KEYS {
            assert_eq!(
                view.dense[name],
                acked.max_end(name),
                "storm {round}: `{name}` must end where the final block ended"
            );
        }
        acked.assert_disjoint();

        // A reopen serves exactly what memory served.
        totals.committed += driver.stats().requests;
        drop(driver);
        driver = FileDriver::open_or_init(dir).expect("reopen");
        assert_eq!(memory(&driver).await, view, "storm {round}: reopen differs");
    }
    assert!(totals.calls >= 10_000, "{} calls", totals.calls);
    assert!(
        totals.dropped > totals.calls / 10,
        "too few calls were dropped for a storm: {}",
        totals.dropped
    );
    assert!(totals.completed > 0, "no call completed");
    println!(
        "cancellation_storm: {} calls, {} dropped, {} completed, 0 spurious errors \
         ({} requests reached the committer)",
        totals.calls, totals.dropped, totals.completed, totals.committed
    );
}
