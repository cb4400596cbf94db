//! Simulated power loss at every operation of random workloads: whatever the
//! disk keeps, a restarted driver opens and never rewinds below anything it
//! acknowledged before the power cut.
//!
//! Each workload (a deterministic seed) is first run to completion on a
//! [`SimFs`] to count its filesystem operations `T`. Then, for every
//! `n` in `0..=T`, it is run again on a fresh `SimFs` that loses power at
//! operation `n`; every value acknowledged before the cut is recorded in a
//! [`Model`]. Every durable image the cut may leave (unsynced data dropped,
//! kept or torn; pending directory operations undone or kept, in subsets) is
//! booted, a fresh driver opened on it, and checked against the model.
//!
//! `TSORACLE_CRASH_FULL=1` runs many more, longer workloads.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use common::error_chain as chain;
use tokio::runtime::Runtime;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::{LeaseRecord, SeqKey};
use tsoracle_driver_file::vfs::sim::{CrashImage, Durability, OpKind, OpRecord, SimFs};
use tsoracle_driver_file::{FileDriver, FileDriverError, LEADER_EPOCH, OpenOptions};

const DIR: &str = "/srv/oracle";
const BASE_MS: u64 = 1_764_000_000_000;

/// splitmix64: a tiny deterministic generator, so a seed names a workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One step of a workload. Values are absolute, fixed at generation.
#[derive(Clone, Debug)]
enum Step {
    /// `persist_high_water(v)`; sometimes below the durable value (fast path).
    HighWater(u64),
    /// `advance_dense(keys[k], count)`.
    Dense(usize, u32),
    /// `advance_dense_batch` over several (possibly repeated) keys.
    DenseBatch(Vec<(usize, u32)>),
    /// `persist_leases(set)`.
    Leases(Vec<LeaseRecord>),
    /// One write held in flight while a high-water, a dense advance and a
    /// lease set queue behind it: those three become one multi-file batch
    /// (state, dense and leases renamed, one directory fsync).
    Group {
        first_hw: u64,
        hw: u64,
        dense: (usize, u32),
        leases: Vec<LeaseRecord>,
    },
    /// Drop the driver and open the directory again.
    Reopen,
}

const KEY_NAMES: [&str; 3] = ["orders", "users", "z"];

fn keys() -> Vec<SeqKey> {
    KEY_NAMES
        .iter()
        .map(|name| SeqKey::try_new(*name).expect("valid key"))
        .collect()
}

fn lease_set(rng: &mut Rng, hw: u64) -> Vec<LeaseRecord> {
    let count = rng.below(3);
    let mut ids: Vec<u64> = (0..count).map(|_| hw - rng.below(1000)).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|lease_id| LeaseRecord {
            lease_id,
            holder: format!("svc-{}", rng.below(4)).into_bytes(),
            holder_epoch: rng.below(5),
            ttl_ms: 5_000,
            ts_upper_bound: lease_id,
            expires_at_ms: lease_id + 5_000,
            superseded: rng.below(2) == 1,
        })
        .collect()
}

/// A workload that always contains each kind of write once, in a fixed
/// header, followed by `extra` random steps.
fn workload(seed: u64, extra: usize) -> Vec<Step> {
    let mut rng = Rng(seed);
    let mut hw = BASE_MS + rng.below(1000);
    let bump = |rng: &mut Rng, hw: &mut u64| {
        *hw += 1 + rng.below(5_000);
        *hw
    };
    let mut steps = vec![
        Step::HighWater(bump(&mut rng, &mut hw)),
        Step::Dense(0, 1 + rng.below(50) as u32),
        Step::Leases(vec![]),
    ];
    let leases = lease_set(&mut rng, hw);
    steps.push(Step::Leases(leases));
    steps.push(Step::DenseBatch(vec![(1, 3), (0, 2), (1, 4)]));
    let first_hw = bump(&mut rng, &mut hw);
    let group_hw = bump(&mut rng, &mut hw);
    let leases = lease_set(&mut rng, hw);
    steps.push(Step::Group {
        first_hw,
        hw: group_hw,
        dense: (2, 7),
        leases,
    });
    steps.push(Step::Reopen);
    for _ in 0..extra {
        let step = match rng.below(10) {
            0..=2 => Step::HighWater(bump(&mut rng, &mut hw)),
            // Below the durable value: answered without any write.
            3 => Step::HighWater(BASE_MS),
            4 => Step::Dense(rng.below(3) as usize, rng.below(100) as u32),
            5 => {
                let len = 1 + rng.below(3);
                Step::DenseBatch(
                    (0..len)
                        .map(|_| (rng.below(3) as usize, rng.below(20) as u32))
                        .collect(),
                )
            }
            6 => Step::Leases(lease_set(&mut rng, hw)),
            7 => {
                let first_hw = bump(&mut rng, &mut hw);
                let group_hw = bump(&mut rng, &mut hw);
                let dense = (rng.below(3) as usize, 1 + rng.below(9) as u32);
                Step::Group {
                    first_hw,
                    hw: group_hw,
                    dense,
                    leases: lease_set(&mut rng, hw),
                }
            }
            _ => Step::Reopen,
        };
        steps.push(step);
    }
    steps
}

/// What the workload asked for and what the driver acknowledged.
#[derive(Clone, Debug)]
struct Model {
    hw_acked: u64,
    hw_requested: u64,
    /// Per key: the end of the highest acknowledged block.
    dense_acked: BTreeMap<usize, u64>,
    /// Per key: the sum of every count requested (an upper bound).
    dense_requested: BTreeMap<usize, u64>,
    /// Every lease set requested, in order; index 0 is the initial empty set.
    lease_sets: Vec<Vec<LeaseRecord>>,
    /// Index of the last acknowledged lease set.
    lease_acked: usize,
}

impl Model {
    fn new() -> Self {
        Model {
            hw_acked: 0,
            hw_requested: 0,
            dense_acked: BTreeMap::new(),
            dense_requested: BTreeMap::new(),
            lease_sets: vec![Vec::new()],
            lease_acked: 0,
        }
    }

    fn request_hw(&mut self, v: u64) {
        self.hw_requested = self.hw_requested.max(v);
    }

    fn ack_hw(&mut self, v: u64) {
        self.hw_acked = self.hw_acked.max(v);
    }

    fn request_dense(&mut self, key: usize, count: u32) {
        *self.dense_requested.entry(key).or_default() += u64::from(count);
    }

    fn ack_dense(&mut self, key: usize, start: u64, count: u32) {
        let end = self.dense_acked.entry(key).or_default();
        *end = (*end).max(start + u64::from(count));
    }

    fn request_leases(&mut self, set: &[LeaseRecord]) -> usize {
        let mut sorted = set.to_vec();
        sorted.sort_by_key(|lease| lease.lease_id);
        self.lease_sets.push(sorted);
        self.lease_sets.len() - 1
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ViolationKind {
    /// The driver refused to open a disk that was never damaged.
    Refused,
    /// A value is below one acknowledged before the cut.
    Rewound,
    /// A value is above anything ever requested.
    Phantom,
    /// `*.tmp` debris survived an open.
    Debris,
    /// The recovered driver could not write.
    Stuck,
    /// A call failed with no fault injected, or returned a wrong value.
    Misbehaved,
}

#[derive(Clone, Debug)]
struct Violation {
    kind: ViolationKind,
    text: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.text)
    }
}

fn open(fs: &SimFs) -> Result<Arc<FileDriver>, FileDriverError> {
    OpenOptions::new().vfs(fs.clone()).open_or_init(DIR)
}

/// Compares what `driver` reads with `model`. `exact`: no write was in
/// flight, so every value must equal the last acknowledged one.
fn check(
    rt: &Runtime,
    driver: &FileDriver,
    keys: &[SeqKey],
    model: &Model,
    exact: bool,
    ctx: &str,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut push = |kind, text: String| out.push(Violation { kind, text });
    let hw = driver.high_water();
    if hw < model.hw_acked || (exact && hw != model.hw_acked) {
        push(
            ViolationKind::Rewound,
            format!("{ctx}: high-water {hw}, acknowledged {}", model.hw_acked),
        );
    }
    if hw > model.hw_requested {
        push(
            ViolationKind::Phantom,
            format!("{ctx}: high-water {hw}, requested {}", model.hw_requested),
        );
    }
    for (index, key) in keys.iter().enumerate() {
        let value = rt
            .block_on(driver.load_dense_seq(key))
            .expect("reads never fail");
        let acked = model.dense_acked.get(&index).copied().unwrap_or(0);
        let requested = model.dense_requested.get(&index).copied().unwrap_or(0);
        if value < acked || (exact && value != acked) {
            push(
                ViolationKind::Rewound,
                format!("{ctx}: dense {key:?} = {value}, acknowledged end {acked}"),
            );
        }
        if value > requested {
            push(
                ViolationKind::Phantom,
                format!("{ctx}: dense {key:?} = {value}, requested {requested}"),
            );
        }
    }
    let leases = rt.block_on(driver.load_leases()).expect("reads never fail");
    let found = model.lease_sets.iter().rposition(|set| *set == leases);
    match found {
        Some(index) if index >= model.lease_acked && (!exact || index == model.lease_acked) => {}
        Some(index) => push(
            ViolationKind::Rewound,
            format!(
                "{ctx}: lease set #{index} after #{} was acknowledged",
                model.lease_acked
            ),
        ),
        None => push(
            ViolationKind::Phantom,
            format!("{ctx}: lease set {leases:?} was never requested"),
        ),
    }
    out
}

/// Runs `steps` on `fs` until they end or the power is cut (or the process
/// killed), recording every
/// acknowledgement in `model`. The driver is dropped before returning.
fn run(
    rt: &Runtime,
    fs: &SimFs,
    steps: &[Step],
    keys: &[SeqKey],
    model: &mut Model,
    ctx: &str,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    let misbehaved = |text: String, violations: &mut Vec<Violation>| {
        violations.push(Violation {
            kind: ViolationKind::Misbehaved,
            text: format!("{ctx}: {text}"),
        });
    };
    let mut driver = match open(fs) {
        Ok(driver) => driver,
        Err(err) => {
            if !fs.is_down() {
                misbehaved(format!("first open: {}", chain(&err)), &mut violations);
            }
            return violations;
        }
    };
    for (index, step) in steps.iter().enumerate() {
        if fs.is_down() {
            break;
        }
        let mut failed: Option<String> = None;
        match step {
            Step::HighWater(v) => {
                model.request_hw(*v);
                match rt.block_on(driver.persist_high_water(*v, LEADER_EPOCH)) {
                    Ok(durable) if durable >= *v => model.ack_hw(durable),
                    Ok(durable) => failed = Some(format!("persist {v} answered {durable}")),
                    Err(err) => failed = Some(chain(&err)),
                }
            }
            Step::Dense(key, count) => {
                model.request_dense(*key, *count);
                let expected = model.dense_acked.get(key).copied().unwrap_or(0);
                match rt.block_on(driver.advance_dense(&keys[*key], *count, LEADER_EPOCH)) {
                    Ok(start) if start == expected => model.ack_dense(*key, start, *count),
                    Ok(start) => failed = Some(format!("block at {start}, expected {expected}")),
                    Err(err) => failed = Some(chain(&err)),
                }
            }
            Step::DenseBatch(entries) => {
                let pairs: Vec<(SeqKey, u32)> = entries
                    .iter()
                    .map(|(key, count)| (keys[*key].clone(), *count))
                    .collect();
                for (key, count) in entries {
                    model.request_dense(*key, *count);
                }
                match rt.block_on(driver.advance_dense_batch(&pairs, LEADER_EPOCH)) {
                    Ok(starts) => {
                        for ((key, count), start) in entries.iter().zip(starts) {
                            let expected = model.dense_acked.get(key).copied().unwrap_or(0);
                            if start != expected {
                                failed =
                                    Some(format!("batch block at {start}, expected {expected}"));
                            }
                            model.ack_dense(*key, start, *count);
                        }
                    }
                    Err(err) => failed = Some(chain(&err)),
                }
            }
            Step::Leases(set) => {
                let id = model.request_leases(set);
                match rt.block_on(driver.persist_leases(set, LEADER_EPOCH)) {
                    Ok(()) => model.lease_acked = id,
                    Err(err) => failed = Some(chain(&err)),
                }
            }
            Step::Group {
                first_hw,
                hw,
                dense,
                leases,
            } => failed = run_group(rt, fs, &driver, keys, model, *first_hw, *hw, *dense, leases),
            Step::Reopen => {
                drop(driver);
                driver = match open(fs) {
                    Ok(driver) => driver,
                    Err(err) => {
                        if !fs.is_down() {
                            misbehaved(format!("reopen: {}", chain(&err)), &mut violations);
                        }
                        return violations;
                    }
                };
                violations.extend(check(
                    rt,
                    &driver,
                    keys,
                    model,
                    true,
                    &format!("{ctx} reopen at step {index}"),
                ));
            }
        }
        if let Some(text) = failed
            && !fs.is_down()
        {
            misbehaved(format!("step {index} {step:?}: {text}"), &mut violations);
            break;
        }
    }
    drop(driver);
    violations
}

/// The multi-file batch: hold the first write at its first filesystem
/// operation, queue three more requests behind it, release.
#[allow(clippy::too_many_arguments)]
fn run_group(
    rt: &Runtime,
    fs: &SimFs,
    driver: &FileDriver,
    keys: &[SeqKey],
    model: &mut Model,
    first_hw: u64,
    hw: u64,
    dense: (usize, u32),
    leases: &[LeaseRecord],
) -> Option<String> {
    model.request_hw(first_hw);
    model.request_hw(hw);
    model.request_dense(dense.0, dense.1);
    let lease_id = model.request_leases(leases);
    rt.block_on(async {
        let first = driver.persist_high_water(first_hw, LEADER_EPOCH);
        tokio::pin!(first);
        let hold = fs.hold_next_op();
        if futures::poll!(first.as_mut()).is_ready() {
            hold.release();
            return Some("held write answered before any disk operation".to_owned());
        }
        // The committer is parked inside the first write's first operation.
        common::sim::wait_reached(&hold);
        let second = driver.persist_high_water(hw, LEADER_EPOCH);
        let advance = driver.advance_dense(&keys[dense.0], dense.1, LEADER_EPOCH);
        let replace = driver.persist_leases(leases, LEADER_EPOCH);
        tokio::pin!(second, advance, replace);
        // One poll each puts each request on the committer's queue.
        let polled = [
            futures::poll!(second.as_mut()).is_pending(),
            futures::poll!(advance.as_mut()).is_pending(),
            futures::poll!(replace.as_mut()).is_pending(),
        ];
        hold.release();
        if polled.contains(&false) {
            return Some("a queued request answered while the committer was held".to_owned());
        }
        let (a, b, c, d) = tokio::join!(first, second, advance, replace);
        let mut failed = None;
        match a {
            Ok(v) => model.ack_hw(v),
            Err(err) => failed = Some(chain(&err)),
        }
        match b {
            Ok(v) => model.ack_hw(v),
            Err(err) => failed = Some(chain(&err)),
        }
        let expected = model.dense_acked.get(&dense.0).copied().unwrap_or(0);
        match c {
            Ok(start) if start == expected => model.ack_dense(dense.0, start, dense.1),
            Ok(start) => failed = Some(format!("group block at {start}, expected {expected}")),
            Err(err) => failed = Some(chain(&err)),
        }
        match d {
            Ok(()) => model.lease_acked = lease_id,
            Err(err) => failed = Some(chain(&err)),
        }
        failed
    })
}

/// Boots `image`, opens a driver on it and checks it against `model`.
fn recover(
    rt: &Runtime,
    image: &CrashImage,
    keys: &[SeqKey],
    model: &Model,
    ctx: &str,
) -> Vec<Violation> {
    let fs = SimFs::from_image(image).expect("a crash image boots");
    let driver = match open(&fs) {
        Ok(driver) => driver,
        Err(err) => {
            return vec![Violation {
                kind: ViolationKind::Refused,
                text: format!("{ctx}: {}", chain(&err)),
            }];
        }
    };
    let mut out = check(rt, &driver, keys, model, false, ctx);
    let debris: Vec<_> = fs
        .visible_files()
        .into_keys()
        .filter(|path| path.extension().is_some_and(|ext| ext == "tmp"))
        .collect();
    if !debris.is_empty() {
        out.push(Violation {
            kind: ViolationKind::Debris,
            text: format!("{ctx}: {debris:?} left after open"),
        });
    }
    let next = driver.high_water().max(BASE_MS) + 1;
    match rt.block_on(driver.persist_high_water(next, LEADER_EPOCH)) {
        Ok(v) if v == next => {}
        other => out.push(Violation {
            kind: ViolationKind::Stuck,
            text: format!("{ctx}: persist {next} after recovery: {other:?}"),
        }),
    }
    out
}

#[derive(Debug, Default)]
struct Tally {
    workloads: u64,
    crash_points: u64,
    /// Operation indices at which the process was killed (then power cut
    /// after the restart).
    kill_points: u64,
    states: u64,
    torn_tmp_states: u64,
    violations: Vec<Violation>,
    /// Crash points inside a write of each file, and inside a batch that
    /// renamed more than one file before its directory fsync.
    covered: BTreeMap<&'static str, u64>,
}

/// Which write each operation of a reference log belongs to: the name of
/// the file a rename/create/write/fsync touches, and "batch" for every
/// operation of a batch that renamed more than one file.
fn classify(log: &[OpRecord]) -> Vec<Vec<&'static str>> {
    let mut out = vec![Vec::new(); log.len()];
    let mut batch_start = 0;
    let mut renames = 0;
    for (i, op) in log.iter().enumerate() {
        let name = op.name();
        for file in ["state", "dense", "leases"] {
            if name == format!("{file}.tmp") {
                out[i].push(file);
            }
        }
        match op.kind {
            OpKind::Rename => renames += 1,
            OpKind::SyncDir => {
                if renames > 1 {
                    for tags in &mut out[batch_start..=i] {
                        tags.push("multi-file batch");
                    }
                }
                renames = 0;
                batch_start = i + 1;
            }
            OpKind::Create | OpKind::Write | OpKind::FileSync => {}
            // Opening and cleanup are no part of a batch.
            _ => {
                renames = 0;
                batch_start = i + 1;
            }
        }
    }
    out
}

fn explore(rt: &Runtime, seed: u64, steps: &[Step], durability: Durability, tally: &mut Tally) {
    let keys = keys();
    let reference = SimFs::with_durability(durability);
    let mut model = Model::new();
    let ctx = format!("seed {seed:#x} reference");
    tally
        .violations
        .extend(run(rt, &reference, steps, &keys, &mut model, &ctx));
    let log = reference.op_log();
    let tags = classify(&log);
    let total = reference.op_count();
    tally.workloads += 1;
    for n in 0..=total {
        let fs = SimFs::with_durability(durability);
        fs.crash_at(n);
        let mut model = Model::new();
        let ctx = format!("seed {seed:#x} crash at op {n}");
        tally
            .violations
            .extend(run(rt, &fs, steps, &keys, &mut model, &ctx));
        // The run must be the reference run up to the cut, or the crash
        // points would not be the ones counted.
        let crashed_log = fs.op_log();
        let len = (n as usize).min(log.len());
        assert_eq!(
            crashed_log[..len.min(crashed_log.len())],
            log[..len.min(crashed_log.len())],
            "{ctx}: the workload is not deterministic"
        );
        assert_eq!(
            crashed_log.len().min(len),
            len,
            "{ctx}: stopped before the cut"
        );
        assert!(
            n == total || fs.crashed(),
            "{ctx}: the power cut never came"
        );
        tally.crash_points += 1;
        if let Some(op_tags) = tags.get(n as usize) {
            for tag in op_tags {
                *tally.covered.entry(tag).or_default() += 1;
            }
        }
        for image in fs.crash_images() {
            tally.states += 1;
            if image.label.contains("torn")
                && image
                    .files
                    .keys()
                    .any(|p| p.extension().is_some_and(|e| e == "tmp"))
            {
                tally.torn_tmp_states += 1;
            }
            let ctx = format!("{ctx}, image {}", image.label);
            tally
                .violations
                .extend(recover(rt, &image, &keys, &model, &ctx));
        }
        if n < total {
            process_kill_then_power_cut(rt, seed, steps, &keys, durability, n, tally);
        }
    }
}

/// The process is killed at operation `n` (the page cache survives), the
/// next process opens the directory and reads it; then the power is cut.
/// Whatever the new process read it would serve as durable, so no disk the
/// power cut may leave can be below it.
fn process_kill_then_power_cut(
    rt: &Runtime,
    seed: u64,
    steps: &[Step],
    keys: &[SeqKey],
    durability: Durability,
    n: u64,
    tally: &mut Tally,
) {
    let fs = SimFs::with_durability(durability);
    fs.halt_at(n);
    let mut model = Model::new();
    let ctx = format!("seed {seed:#x} process killed at op {n}");
    tally
        .violations
        .extend(run(rt, &fs, steps, keys, &mut model, &ctx));
    assert!(fs.halted(), "{ctx}: the process was never killed");
    fs.resume();
    tally.kill_points += 1;
    let driver = match open(&fs) {
        Ok(driver) => driver,
        Err(err) => {
            tally.violations.push(Violation {
                kind: ViolationKind::Refused,
                text: format!("{ctx}, restart: {}", chain(&err)),
            });
            return;
        }
    };
    let restart = format!("{ctx}, restart");
    tally
        .violations
        .extend(check(rt, &driver, keys, &model, false, &restart));
    // What the new process reads, it serves as durable: acknowledged.
    model.ack_hw(driver.high_water());
    for (index, key) in keys.iter().enumerate() {
        let value = rt
            .block_on(driver.load_dense_seq(key))
            .expect("reads never fail");
        model.ack_dense(index, value, 0);
    }
    let leases = rt.block_on(driver.load_leases()).expect("reads never fail");
    if let Some(index) = model.lease_sets.iter().rposition(|set| *set == leases) {
        model.lease_acked = model.lease_acked.max(index);
    }
    drop(driver);
    for image in fs.crash_images() {
        tally.states += 1;
        let ctx = format!("{restart}, then power cut, image {}", image.label);
        tally
            .violations
            .extend(recover(rt, &image, keys, &model, &ctx));
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

#[test]
fn power_loss_at_every_operation_never_rewinds() {
    let full = std::env::var("TSORACLE_CRASH_FULL").is_ok_and(|v| v == "1");
    let (workloads, extra) = if full { (100, 30) } else { (12, 10) };
    let rt = runtime();
    let mut tally = Tally::default();
    for i in 0..workloads {
        let seed = 0x5EED_0000 + i;
        explore(
            &rt,
            seed,
            &workload(seed, extra),
            Durability::Honest,
            &mut tally,
        );
    }
    println!(
        "power_loss: {} workloads, {} crash points, {} crash states explored, {} violations",
        tally.workloads,
        tally.crash_points + tally.kill_points,
        tally.states,
        tally.violations.len()
    );
    println!(
        "power_loss: {} power cuts at an operation, {} process kills at an operation \
         followed by a restart and a power cut",
        tally.crash_points, tally.kill_points
    );
    println!(
        "power_loss: {} states with a torn *.tmp; crash points per write: {:?}",
        tally.torn_tmp_states, tally.covered
    );
    for violation in tally.violations.iter().take(20) {
        println!("  {violation}");
    }
    assert!(
        tally.violations.is_empty(),
        "{} violations",
        tally.violations.len()
    );
    // Every operation index of a write of each kind was a crash point.
    for kind in ["state", "dense", "leases", "multi-file batch"] {
        assert!(
            tally.covered.get(kind).copied().unwrap_or(0) > 0,
            "no crash point inside a {kind} write: {:?}",
            tally.covered
        );
    }
    assert!(tally.torn_tmp_states > 0, "no torn temp file was explored");
}

/// A disk whose file fsync does nothing: the rename can make a torn or empty
/// file live, and the harness must see the driver refuse it.
#[test]
fn checker_catches_a_disk_that_ignores_file_fsync() {
    let rt = runtime();
    let mut tally = Tally::default();
    let steps = [Step::HighWater(BASE_MS + 1), Step::HighWater(BASE_MS + 2)];
    explore(&rt, 1, &steps, Durability::FileSyncIsNoop, &mut tally);
    println!(
        "file fsync ignored: {} crash states, {} violations",
        tally.states,
        tally.violations.len()
    );
    for violation in tally.violations.iter().take(3) {
        println!("  {violation}");
    }
    assert!(
        tally
            .violations
            .iter()
            .any(|v| v.kind == ViolationKind::Refused && v.text.contains("corrupt")),
        "a torn live file went unnoticed: {:?}",
        tally.violations
    );
}

/// A disk whose directory fsync does nothing: an acknowledged rename can be
/// lost, and the harness must see the rewind.
#[test]
fn checker_catches_a_disk_that_ignores_dir_fsync() {
    let rt = runtime();
    let mut tally = Tally::default();
    let steps = [
        Step::HighWater(BASE_MS + 1),
        Step::Dense(0, 5),
        Step::Leases(vec![]),
    ];
    explore(&rt, 2, &steps, Durability::DirSyncIsNoop, &mut tally);
    println!(
        "dir fsync ignored: {} crash states, {} violations",
        tally.states,
        tally.violations.len()
    );
    for violation in tally.violations.iter().take(3) {
        println!("  {violation}");
    }
    let rewound = |what: &str| {
        tally
            .violations
            .iter()
            .any(|v| v.kind == ViolationKind::Rewound && v.text.contains(what))
    };
    assert!(rewound("high-water"), "{:?}", tally.violations);
    assert!(rewound("dense"), "{:?}", tally.violations);
}

/// The other half of "refuse only when really damaged": a damaged live file
/// is refused as `Corrupt`, naming the file, and nothing is changed.
#[test]
fn a_really_damaged_disk_is_refused_as_corrupt() {
    let rt = runtime();
    let fs = SimFs::new();
    let mut model = Model::new();
    let steps = [Step::HighWater(BASE_MS + 9), Step::Dense(1, 3)];
    let violations = run(&rt, &fs, &steps, &keys(), &mut model, "setup");
    assert!(violations.is_empty(), "{violations:?}");
    let images = fs.crash_images();
    assert_eq!(images.len(), 1, "a clean shutdown leaves one possible disk");
    let state = Path::new(DIR).join("state");
    let dense = Path::new(DIR).join("dense");

    let mut flipped = images[0].clone();
    flipped.files.get_mut(&state).expect("state exists")[7] ^= 0x40;
    let mut short = images[0].clone();
    short.files.get_mut(&dense).expect("dense exists").pop();

    for (image, damaged) in [(flipped, &state), (short, &dense)] {
        let fs = SimFs::from_image(&image).expect("a crash image boots");
        match open(&fs) {
            Err(FileDriverError::Corrupt { path, .. }) => assert_eq!(&path, damaged),
            other => panic!("damaged {} not refused: {other:?}", damaged.display()),
        }
        assert_eq!(
            fs.visible_files(),
            image.files,
            "a refused disk was changed"
        );
    }
}

/// A process that dies between the rename and the directory fsync leaves
/// the new file visible in the page cache but not durable. The next process
/// must not report (or acknowledge through the fast path) a value that a
/// power cut could still take away.
#[test]
fn a_rename_left_unsynced_by_a_dead_process_is_not_trusted_before_it_is_durable() {
    let rt = runtime();
    let fs = SimFs::new();
    let driver = open(&fs).expect("opens");
    assert_eq!(
        rt.block_on(driver.persist_high_water(BASE_MS + 1, LEADER_EPOCH))
            .expect("first write"),
        BASE_MS + 1
    );
    // The next write is create, write, fsync, rename, directory fsync: the
    // process dies at the directory fsync.
    let dir_fsync = fs.op_count() + 4;
    fs.halt_at(dir_fsync);
    rt.block_on(driver.persist_high_water(BASE_MS + 2, LEADER_EPOCH))
        .expect_err("the process died");
    let log = fs.op_log();
    assert_eq!(log[dir_fsync as usize].kind, OpKind::SyncDir, "{log:?}");
    assert_eq!(log[dir_fsync as usize - 1].kind, OpKind::Rename, "{log:?}");
    drop(driver);

    // The next process opens the directory and serves what it read.
    fs.resume();
    let driver = open(&fs).expect("opens");
    let reported = driver.high_water();
    let acked = rt
        .block_on(driver.persist_high_water(BASE_MS + 1, LEADER_EPOCH))
        .expect("at or below the durable value");
    assert!(reported > BASE_MS && acked >= reported);
    drop(driver);

    // Power is cut now: no disk it may leave is below what was reported
    // as durable and acknowledged.
    for image in fs.crash_images() {
        let disk = SimFs::from_image(&image).expect("a crash image boots");
        let after = open(&disk).expect("opens").high_water();
        assert!(
            after >= acked,
            "{}: high-water {after} after a power cut, but {acked} was acknowledged",
            image.label
        );
    }
}

// ---------------------------------------------------------------------------
// The state directory's own entry (the independent review's fix 1): made
// durable on every open, not only when open created it.
// ---------------------------------------------------------------------------

mod the_state_dirs_entry_is_made_durable_by_every_open {
    use std::io::ErrorKind;
    use std::path::Path;

    use tsoracle_consensus::ConsensusDriver;
    use tsoracle_driver_file::{FileDriverError, FileOp, LEADER_EPOCH};

    use crate::common::error_chain as chain;
    use crate::common::sim::{DIR, HW, open, simfs_create_dir};
    use tsoracle_driver_file::vfs::sim::{OpKind, SimFs};

    /// Cuts power now and checks that every image the disk may hold reopens
    /// with at least `acked` as its high-water.
    fn assert_power_cut_keeps(fs: &SimFs, acked: u64) {
        fs.crash_at(fs.op_count());
        let images = fs.crash_images();
        assert!(!images.is_empty());
        for image in &images {
            let disk = SimFs::from_image(image).expect("a crash image boots");
            let reopened = open(&disk).unwrap_or_else(|err| {
                panic!("image {}: open failed: {}", image.label, chain(&err))
            });
            assert!(
                reopened.high_water() >= acked,
                "image {} rewound the acknowledged high-water {acked} to {} (dirs {:?}, files {:?})",
                image.label,
                reopened.high_water(),
                image.dirs,
                image.files.keys().collect::<Vec<_>>(),
            );
        }
    }

    /// Fix 1: a state directory that exists but whose entry in its parent is
    /// not durable (an earlier open died before the parent fsync, or a `mkdir`
    /// just before start-up) is made durable by open, so a power cut cannot
    /// take it, and every acknowledged value in it, away.
    #[tokio::test]
    async fn existing_but_unsynced_state_dir_is_made_durable_by_open() {
        // Failpoints are process-wide: hold the scenario lock so none that
        // another test may configure fires in this driver.
        #[cfg(feature = "failpoints")]
        let _scenario = fail::FailScenario::setup();
        let fs = SimFs::new();
        // mkdir without fsyncing `/`: the entry `oracle` is pending in `/`.
        simfs_create_dir(&fs, DIR);

        let driver = open(&fs).expect("open");
        assert_eq!(
            driver.persist_high_water(HW, LEADER_EPOCH).await.unwrap(),
            HW
        );
        assert_power_cut_keeps(&fs, HW);
    }

    /// Fix 1, second form: the first open created the directory but failed on
    /// the parent's fsync; the retry finds the directory already there.
    #[tokio::test]
    async fn open_retried_after_parent_fsync_failure_makes_dir_durable() {
        #[cfg(feature = "failpoints")]
        let _scenario = fail::FailScenario::setup();
        let fs = SimFs::new();
        // The first directory fsync of the open is `/`, right after the mkdir.
        fs.fail_next(OpKind::SyncDir, None, ErrorKind::Other);
        let err = open(&fs).expect_err("the first open fails on the parent's fsync");
        match &err {
            FileDriverError::Io {
                op: FileOp::FsyncDir,
                path,
                ..
            } => assert_eq!(path, Path::new("/"), "{}", chain(&err)),
            other => panic!("expected Io {{ FsyncDir }} on /, got {other:?}"),
        }
        assert_eq!(fs.pending_faults(), 0, "the injected fault fired");
        assert!(
            fs.op_log()
                .iter()
                .any(|op| op.kind == OpKind::CreateDir && op.path == Path::new(DIR)),
            "the failed open created the directory"
        );

        let driver = open(&fs).expect("the retry opens");
        assert_eq!(
            driver.persist_high_water(HW, LEADER_EPOCH).await.unwrap(),
            HW
        );
        assert_power_cut_keeps(&fs, HW);
    }
}
