//! Model-based property test: random sequences of driver calls, with
//! reopens in between, behave exactly like a plain in-memory model, and
//! nothing the driver ever acknowledged is lost or goes backwards across a
//! restart.
//!
//! Each case starts from a fresh directory (sometimes with a `dense` file
//! holding a near-`u64::MAX` counter and/or a small key cap, so overflow and
//! cardinality refusals happen), runs up to 40 operations, and after every
//! operation compares every read with the model. A reopen first decodes the
//! files on disk with the public codecs and compares them with the model,
//! then opens the directory again and compares every read again.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tsoracle_consensus::{ConsensusDriver, ConsensusError};
use tsoracle_core::{LeaseRecord, PHYSICAL_MS_MAX, SeqKey};
use tsoracle_driver_file::dense_record::{self, DEFAULT_KEY_CAP, DenseState};
use tsoracle_driver_file::{FileDriver, LEADER_EPOCH, lease_record, record};

use common::key;

/// The keys operations pick from. `huge` may start near `u64::MAX`.
const KEYS: [&str; 5] = ["a", "b", "c", "d", "huge"];
const HUGE: usize = 4;

/// How a `persist_high_water` argument is chosen.
#[derive(Clone, Debug)]
enum HwArg {
    /// A small absolute value: often below the current high-water.
    Abs(u64),
    /// The model's current value plus a delta (clamped at 0): exercises
    /// "equal", "just below" and "just above".
    Rel(i64),
    /// Above `PHYSICAL_MS_MAX`: refused, changes nothing.
    OutOfRange(u64),
    /// Exactly `PHYSICAL_MS_MAX`: the largest accepted value.
    Max,
}

#[derive(Clone, Debug)]
enum Op {
    PersistHw(HwArg),
    Dense(usize, u32),
    DenseBatch(Vec<(usize, u32)>),
    /// The lease set to persist; may contain a repeated id (refused).
    Leases(Vec<LeaseRecord>),
    Load,
    Reopen,
}

/// The starting directory of a case.
#[derive(Clone, Debug)]
struct Setup {
    /// Key cap written to the initial `dense` file.
    cap: u64,
    /// `huge` starts at `u64::MAX - offset` when set.
    huge_offset: Option<u64>,
}

fn hw_arg() -> impl Strategy<Value = HwArg> {
    prop_oneof![
        4 => (0u64..5_000).prop_map(HwArg::Abs),
        4 => (-50i64..50).prop_map(HwArg::Rel),
        1 => ((PHYSICAL_MS_MAX + 1)..=u64::MAX).prop_map(HwArg::OutOfRange),
        1 => Just(HwArg::Max),
    ]
}

fn lease() -> impl Strategy<Value = LeaseRecord> {
    (
        0u64..12,
        0u8..5,
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                lease_id,
                holder,
                holder_epoch,
                ttl_ms,
                ts_upper_bound,
                expires_at_ms,
                superseded,
            )| {
                LeaseRecord {
                    lease_id,
                    holder: format!("svc-{holder}").into_bytes(),
                    holder_epoch,
                    ttl_ms,
                    ts_upper_bound,
                    expires_at_ms,
                    superseded,
                }
            },
        )
}

fn leases() -> impl Strategy<Value = Vec<LeaseRecord>> {
    // Mostly unique ids (the trait's contract); sometimes whatever was drawn,
    // which may repeat an id and must then be refused.
    (
        prop::collection::vec(lease(), 0..6),
        prop::bool::weighted(0.85),
    )
        .prop_map(|(mut set, unique)| {
            if unique {
                let mut seen = BTreeSet::new();
                set.retain(|lease| seen.insert(lease.lease_id));
            }
            set
        })
}

fn op() -> impl Strategy<Value = Op> {
    let entry = (0..KEYS.len(), 0u32..1000);
    prop_oneof![
        4 => hw_arg().prop_map(Op::PersistHw),
        3 => entry.clone().prop_map(|(k, c)| Op::Dense(k, c)),
        3 => prop::collection::vec(entry, 0..5).prop_map(Op::DenseBatch),
        2 => leases().prop_map(Op::Leases),
        1 => Just(Op::Load),
        2 => Just(Op::Reopen),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![3 => Just(DEFAULT_KEY_CAP), 1 => Just(3u64)],
        prop::option::weighted(0.5, 0u64..2_000),
    )
        .prop_map(|(cap, huge_offset)| Setup { cap, huge_offset })
}

/// What a call may answer, as the model predicts it.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum ErrKind {
    OutOfRange(u64),
    Cardinality(u64),
    Overflow,
    Permanent,
    Transient,
    Other,
}

fn kind(err: &ConsensusError) -> ErrKind {
    match err {
        ConsensusError::AdvanceOutOfRange(value) => ErrKind::OutOfRange(*value),
        ConsensusError::SeqKeyCardinalityExceeded { cap } => ErrKind::Cardinality(*cap),
        ConsensusError::SeqOverflow => ErrKind::Overflow,
        ConsensusError::PermanentDriver(_) => ErrKind::Permanent,
        ConsensusError::TransientDriver(_) => ErrKind::Transient,
        _ => ErrKind::Other,
    }
}

/// The plain model: what the driver must hold.
#[derive(Debug, Clone)]
struct Model {
    high_water: u64,
    cap: u64,
    dense: BTreeMap<SeqKey, u64>,
    /// Sorted by `lease_id`.
    leases: Vec<LeaseRecord>,
    /// Highest high-water any call acknowledged.
    acked_high_water: u64,
    /// Per key, the highest block end any call acknowledged.
    acked_dense_end: BTreeMap<SeqKey, u64>,
}

impl Model {
    fn new(setup: &Setup) -> Self {
        let mut dense = BTreeMap::new();
        if let Some(offset) = setup.huge_offset {
            dense.insert(key(KEYS[HUGE]), u64::MAX - offset);
        }
        Model {
            high_water: 0,
            cap: setup.cap,
            dense,
            leases: Vec::new(),
            acked_high_water: 0,
            acked_dense_end: BTreeMap::new(),
        }
    }

    fn persist_high_water(&mut self, at_least: u64) -> Result<u64, Vec<ErrKind>> {
        if at_least > PHYSICAL_MS_MAX {
            return Err(vec![ErrKind::OutOfRange(at_least)]);
        }
        self.high_water = self.high_water.max(at_least);
        Ok(self.high_water)
    }

    /// All-or-nothing fetch-add. When a request both overflows and exceeds
    /// the cap, either refusal is acceptable.
    fn advance(&mut self, entries: &[(SeqKey, u32)]) -> Result<Vec<u64>, Vec<ErrKind>> {
        let mut scratch = self.dense.clone();
        let mut starts = Vec::new();
        let mut overflow = false;
        for (k, count) in entries {
            let start = scratch.get(k).copied().unwrap_or(0);
            match start.checked_add(u64::from(*count)) {
                Some(next) => {
                    scratch.insert(k.clone(), next);
                    starts.push(start);
                }
                None => {
                    overflow = true;
                    break;
                }
            }
        }
        let new_keys: BTreeSet<&SeqKey> = entries
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !self.dense.contains_key(*k))
            .collect();
        let too_many = self.dense.len() as u64 + new_keys.len() as u64 > self.cap;
        let mut refusals = Vec::new();
        if overflow {
            refusals.push(ErrKind::Overflow);
        }
        if too_many {
            refusals.push(ErrKind::Cardinality(self.cap));
        }
        if !refusals.is_empty() {
            return Err(refusals);
        }
        self.dense = scratch;
        Ok(starts)
    }

    fn persist_leases(&mut self, live: &[LeaseRecord]) -> Result<(), Vec<ErrKind>> {
        let ids: BTreeSet<u64> = live.iter().map(|lease| lease.lease_id).collect();
        if ids.len() != live.len() {
            // Two leases with one id cannot be stored; not retryable.
            return Err(vec![ErrKind::Permanent]);
        }
        let mut sorted = live.to_vec();
        sorted.sort_by_key(|lease| lease.lease_id);
        self.leases = sorted;
        Ok(())
    }

    fn ack_high_water(&mut self, value: u64) {
        self.acked_high_water = self.acked_high_water.max(value);
    }

    fn ack_dense(&mut self, entries: &[(SeqKey, u32)], starts: &[u64]) {
        for ((k, count), start) in entries.iter().zip(starts) {
            let end = start + u64::from(*count);
            let acked = self.acked_dense_end.entry(k.clone()).or_insert(0);
            *acked = (*acked).max(end);
        }
    }
}

/// Compares a driver answer with the model's prediction.
fn check<T: PartialEq + std::fmt::Debug>(
    step: usize,
    op: &Op,
    got: &Result<T, ConsensusError>,
    want: &Result<T, Vec<ErrKind>>,
) {
    match (got, want) {
        (Ok(got), Ok(want)) => assert_eq!(got, want, "step {step} {op:?}: wrong value"),
        (Err(err), Err(allowed)) => assert!(
            allowed.contains(&kind(err)),
            "step {step} {op:?}: got {err:?}, model allows {allowed:?}"
        ),
        (got, want) => panic!("step {step} {op:?}: driver {got:?}, model {want:?}"),
    }
}

/// Every read the driver serves equals the model.
async fn check_reads(step: usize, driver: &FileDriver, model: &Model) {
    assert_eq!(
        driver.load_high_water().await.expect("load_high_water"),
        model.high_water,
        "step {step}: high-water"
    );
    assert_eq!(
        driver.high_water(),
        model.high_water,
        "step {step}: high_water()"
    );
    for name in KEYS {
        let k = key(name);
        assert_eq!(
            driver.load_dense_seq(&k).await.expect("load_dense_seq"),
            model.dense.get(&k).copied().unwrap_or(0),
            "step {step}: dense counter {name}"
        );
    }
    assert_eq!(
        driver.load_leases().await.expect("load_leases"),
        model.leases,
        "step {step}: leases"
    );
}

/// Nothing acknowledged is lost: the driver is at or above every
/// acknowledged value.
async fn check_acknowledged(step: usize, driver: &FileDriver, model: &Model) {
    let high_water = driver.load_high_water().await.expect("load_high_water");
    assert!(
        high_water >= model.acked_high_water,
        "step {step}: high-water {high_water} below acknowledged {}",
        model.acked_high_water
    );
    for (k, end) in &model.acked_dense_end {
        let value = driver.load_dense_seq(k).await.expect("load_dense_seq");
        assert!(
            value >= *end,
            "step {step}: counter {k:?} at {value}, below acknowledged block end {end}"
        );
    }
}

/// With the driver closed, the files on disk decode to exactly the model.
fn check_disk(step: usize, dir: &Path, model: &Model) {
    let read = |name: &str| match std::fs::read(dir.join(name)) {
        Ok(bytes) => Some(bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => panic!("read {name}: {err}"),
    };
    match read("state") {
        Some(bytes) => assert_eq!(
            record::decode(&bytes).expect("state decodes"),
            model.high_water,
            "step {step}: state on disk"
        ),
        None => assert_eq!(model.high_water, 0, "step {step}: state missing"),
    }
    let want_dense = DenseState {
        cap: model.cap,
        counters: model.dense.clone(),
        ..DenseState::default()
    };
    match read("dense") {
        Some(bytes) => assert_eq!(
            dense_record::decode(&bytes).expect("dense decodes"),
            want_dense,
            "step {step}: dense on disk"
        ),
        None => assert_eq!(
            want_dense,
            DenseState::default(),
            "step {step}: dense missing"
        ),
    }
    match read("leases") {
        Some(bytes) => assert_eq!(
            lease_record::decode(&bytes).expect("leases decode"),
            model.leases,
            "step {step}: leases on disk"
        ),
        None => assert!(model.leases.is_empty(), "step {step}: leases missing"),
    }
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let name = entry.expect("dir entry").file_name();
        assert!(
            !name.to_string_lossy().ends_with(".tmp"),
            "step {step}: temp debris {name:?} after a clean close"
        );
    }
}

async fn run_case(setup: Setup, ops: Vec<Op>) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let mut model = Model::new(&setup);
    if setup.cap != DEFAULT_KEY_CAP || setup.huge_offset.is_some() {
        let state = DenseState {
            cap: model.cap,
            counters: model.dense.clone(),
            ..DenseState::default()
        };
        std::fs::write(dir.join("dense"), dense_record::encode(&state)).expect("write dense");
    }
    let mut driver: Arc<FileDriver> = FileDriver::open_or_init(dir).expect("open");
    check_reads(0, &driver, &model).await;

    for (step, op) in ops.iter().enumerate() {
        let step = step + 1;
        match op {
            Op::PersistHw(arg) => {
                let at_least = match arg {
                    HwArg::Abs(value) => *value,
                    HwArg::Rel(delta) => {
                        (i128::from(model.high_water) + i128::from(*delta)).max(0) as u64
                    }
                    HwArg::OutOfRange(value) => *value,
                    HwArg::Max => PHYSICAL_MS_MAX,
                };
                let got = driver.persist_high_water(at_least, LEADER_EPOCH).await;
                let want = model.persist_high_water(at_least);
                check(step, op, &got, &want);
                if let Ok(value) = got {
                    assert!(value >= at_least, "step {step}: {value} below {at_least}");
                    model.ack_high_water(value);
                }
            }
            Op::Dense(k, count) => {
                let entries = [(key(KEYS[*k]), *count)];
                let got = driver
                    .advance_dense(&entries[0].0, *count, LEADER_EPOCH)
                    .await;
                let want = model.advance(&entries).map(|starts| starts[0]);
                check(step, op, &got, &want);
                if let Ok(start) = got {
                    model.ack_dense(&entries, &[start]);
                }
            }
            Op::DenseBatch(raw) => {
                let entries: Vec<(SeqKey, u32)> =
                    raw.iter().map(|(k, c)| (key(KEYS[*k]), *c)).collect();
                let got = driver.advance_dense_batch(&entries, LEADER_EPOCH).await;
                let want = model.advance(&entries);
                check(step, op, &got, &want);
                if let Ok(starts) = &got {
                    model.ack_dense(&entries, starts);
                }
            }
            Op::Leases(set) => {
                let got = driver.persist_leases(set, LEADER_EPOCH).await;
                let want = model.persist_leases(set);
                check(step, op, &got, &want);
            }
            Op::Load => {}
            Op::Reopen => {
                drop(driver);
                check_disk(step, dir, &model);
                driver = FileDriver::open_or_init(dir).expect("reopen");
            }
        }
        // Failing calls must not have poisoned the driver or moved anything.
        assert!(!driver.is_poisoned(), "step {step} {op:?}: driver poisoned");
        check_reads(step, &driver, &model).await;
        check_acknowledged(step, &driver, &model).await;
    }

    // A last restart: everything acknowledged survives it.
    drop(driver);
    check_disk(ops.len() + 1, dir, &model);
    let driver = FileDriver::open_or_init(dir).expect("final reopen");
    check_reads(ops.len() + 1, &driver, &model).await;
    check_acknowledged(ops.len() + 1, &driver, &model).await;
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/restart_never_rewinds.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn driver_matches_model_and_never_rewinds_across_reopen(
        setup in setup(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(run_case(setup, ops));
    }
}
