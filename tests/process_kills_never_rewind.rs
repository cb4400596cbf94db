//! A process that dies at any instant never makes a restarted driver rewind:
//! whatever a writer acknowledged before it was killed is covered by what
//! the next open reads, leftover `*.tmp` files are removed, and the lock dies
//! with its owner.
//!
//! The writer is this very test binary, re-run as a child that only runs
//! [`child_role`]. It prints every value the driver acknowledged to it on
//! stdout *after* the call returned, so a line the parent read is a value
//! that was acknowledged while the child was alive. The parent waits on
//! those lines and on the child's death, never on time.
//!
//! - With the `failpoints` feature, the child aborts (`SIGABRT`, no unwinding,
//!   no destructors) at each failpoint of a write of each file kind, and at
//!   the failpoint inside open.
//! - Without it, a seeded loop SIGKILLs a child that writes as fast as it can
//!   with eight concurrent callers, at a random number of acknowledgements.
#![cfg(unix)]

#[path = "support/child.rs"]
mod child;
mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::LeaseRecord;
use tsoracle_driver_file::{
    FileDriver, FileDriverError, LEADER_EPOCH, dense_record, lease_record, record,
};

use child::{ChildProcess, XorShift, fork_gate, report};
use common::key;

const ROLE_VAR: &str = "TSORACLE_KILL_TEST_ROLE";
const DIR_VAR: &str = "TSORACLE_KILL_TEST_DIR";
#[cfg(feature = "failpoints")]
const FAILPOINT_VAR: &str = "TSORACLE_KILL_TEST_FAILPOINT";
#[cfg(feature = "failpoints")]
const KIND_VAR: &str = "TSORACLE_KILL_TEST_KIND";
const CHILD_TEST: &str = "child_role";

/// The dense keys the children write; the `full` fixture also has `orders`
/// and `users`.
const KEYS: [&str; 3] = ["k0", "k1", "k2"];
const TEMP_FILES: [&str; 3] = ["state.tmp", "dense.tmp", "leases.tmp"];

fn lease(lease_id: u64) -> LeaseRecord {
    LeaseRecord {
        lease_id,
        holder: b"killed-writer".to_vec(),
        holder_epoch: lease_id,
        ttl_ms: 5_000,
        ts_upper_bound: 1_764_000_000_000 + lease_id,
        expires_at_ms: 1_764_000_005_000 + lease_id,
        superseded: lease_id.is_multiple_of(2),
    }
}

// ---------------------------------------------------------------------------
// The child's side.
// ---------------------------------------------------------------------------

/// A no-op in a normal test run (the role variable is absent); when the
/// parent re-runs this binary it does what the role says and reports on
/// stdout.
#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    let dir = std::env::var(DIR_VAR).expect("the parent sets the directory");
    match role.as_str() {
        "writer" => writer(&dir),
        #[cfg(feature = "failpoints")]
        "abort-write" => failpoint_roles::abort_write(&dir),
        #[cfg(feature = "failpoints")]
        "abort-open" => failpoint_roles::abort_open(&dir),
        other => panic!("unknown role {other}"),
    }
}

/// Opens `dir`, reporting `ready`, or reports why it could not.
fn open_for_child(dir: &str) -> Option<Arc<FileDriver>> {
    match FileDriver::open_or_init(dir) {
        Ok(driver) => {
            report("ready");
            Some(driver)
        }
        Err(FileDriverError::AlreadyLocked { path, .. }) => {
            report(&format!("locked {}", path.display()));
            None
        }
        Err(other) => {
            report(&format!("error {other}"));
            None
        }
    }
}

/// Eight concurrent callers writing as fast as they can until the process
/// is killed: three raise the high-water, three advance dense counters, one
/// advances dense batches, one replaces the lease set.
fn writer(dir: &str) {
    let Some(driver) = open_for_child(dir) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let next_high_water = Arc::new(AtomicU64::new(driver.high_water()));
        let first_lease = driver
            .load_leases()
            .await
            .expect("load leases")
            .iter()
            .map(|lease| lease.lease_id + 1)
            .max()
            .unwrap_or(1);
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..8usize {
            let driver = Arc::clone(&driver);
            let next_high_water = Arc::clone(&next_high_water);
            tasks.spawn(
                async move { writer_task(task, &driver, &next_high_water, first_lease).await },
            );
        }
        // The tasks only return on an error: report it, and stop.
        if let Some(result) = tasks.join_next().await {
            let message = match result {
                Ok(Err(err)) => err,
                Ok(Ok(())) => "a writer task returned".to_owned(),
                Err(join) => format!("a writer task panicked: {join}"),
            };
            report(&format!("error {message}"));
            std::process::exit(1);
        }
    });
}

async fn writer_task(
    task: usize,
    driver: &FileDriver,
    next_high_water: &AtomicU64,
    first_lease: u64,
) -> Result<(), String> {
    let fail = |what: &str, err: &dyn std::fmt::Display| format!("task {task}: {what}: {err}");
    for n in 0u64.. {
        match task {
            0..=2 => {
                let asked = next_high_water.fetch_add(1, Ordering::Relaxed) + 1;
                let got = driver
                    .persist_high_water(asked, LEADER_EPOCH)
                    .await
                    .map_err(|err| fail("persist_high_water", &err))?;
                if got < asked {
                    return Err(format!("task {task}: asked {asked}, acknowledged {got}"));
                }
                report(&format!("hw {got}"));
            }
            3..=5 => {
                let name = KEYS[(task + n as usize) % KEYS.len()];
                let count = 1 + (n % 20) as u32;
                let start = driver
                    .advance_dense(&key(name), count, LEADER_EPOCH)
                    .await
                    .map_err(|err| fail("advance_dense", &err))?;
                report(&format!("dense {name} {start} {count}"));
            }
            6 => {
                let first = KEYS[n as usize % KEYS.len()];
                let second = KEYS[(n as usize + 1) % KEYS.len()];
                let entries = [(key(first), 3), (key(second), 5)];
                let starts = driver
                    .advance_dense_batch(&entries, LEADER_EPOCH)
                    .await
                    .map_err(|err| fail("advance_dense_batch", &err))?;
                report(&format!("dense {first} {} 3", starts[0]));
                report(&format!("dense {second} {} 5", starts[1]));
            }
            _ => {
                let id = first_lease + n;
                driver
                    .persist_leases(&[lease(id)], LEADER_EPOCH)
                    .await
                    .map_err(|err| fail("persist_leases", &err))?;
                report(&format!("lease {id}"));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// What the parent learns from the child's lines.
// ---------------------------------------------------------------------------

/// Every acknowledgement a parent has read, across rounds.
#[derive(Debug, Default)]
struct Acked {
    high_water: u64,
    /// Per key, every acknowledged block `(start, end)`.
    blocks: BTreeMap<String, Vec<(u64, u64)>>,
    /// The highest lease id acknowledged (each set holds one lease).
    lease: Option<u64>,
    /// How many acknowledgements were read.
    count: usize,
}

impl Acked {
    /// Records one report line; panics on a line that is not an
    /// acknowledgement. `floor` is what the directory held for each key when
    /// the child opened it: no block may start below it (that would reissue
    /// values acknowledged in an earlier life).
    fn ingest(&mut self, line: &str, floor: &Floor, round: usize) {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["hw", value] => {
                let value: u64 = value.parse().expect("hw value");
                assert!(
                    value > floor.high_water,
                    "round {round}: acknowledged high-water {value} not above the {} the child opened with",
                    floor.high_water
                );
                self.high_water = self.high_water.max(value);
            }
            ["dense", name, start, count] => {
                let start: u64 = start.parse().expect("block start");
                let count: u64 = count.parse().expect("block count");
                let opened_at = floor.dense.get(*name).copied().unwrap_or(0);
                assert!(
                    start >= opened_at,
                    "round {round}: `{name}` block {start}+{count} starts below {opened_at}, \
                     which an earlier life already acknowledged: values reissued"
                );
                self.blocks
                    .entry((*name).to_owned())
                    .or_default()
                    .push((start, start + count));
            }
            ["lease", id] => {
                let id: u64 = id.parse().expect("lease id");
                if let Some(opened_with) = floor.lease {
                    assert!(id > opened_with, "round {round}: lease id {id} reused");
                }
                self.lease = Some(self.lease.map_or(id, |seen| seen.max(id)));
            }
            _ => panic!("round {round}: the child reported `{line}`, not an acknowledgement"),
        }
        self.count += 1;
    }

    fn max_end(&self, name: &str) -> u64 {
        self.blocks
            .get(name)
            .and_then(|blocks| blocks.iter().map(|&(_, end)| end).max())
            .unwrap_or(0)
    }

    /// Acknowledged blocks of one key never overlap, in one life or across
    /// lives.
    fn assert_blocks_disjoint(&self, round: usize) {
        for (name, blocks) in &self.blocks {
            let mut sorted = blocks.clone();
            sorted.sort_unstable();
            for pair in sorted.windows(2) {
                assert!(
                    pair[0].1 <= pair[1].0,
                    "round {round}: `{name}` blocks {:?} and {:?} overlap",
                    pair[0],
                    pair[1]
                );
            }
        }
    }
}

/// What a reopened directory held, for the next round to build on.
#[derive(Debug, Default)]
struct Floor {
    high_water: u64,
    dense: BTreeMap<String, u64>,
    lease: Option<u64>,
}

/// Runs one of the driver's reads, which answer from memory at once, from
/// synchronous test code (so no lock guard is held across an `.await`).
fn now<F: std::future::Future>(read: F) -> F::Output {
    futures::executor::block_on(read)
}

/// Opens `dir` in-process (a killed owner must have released the lock),
/// checks it covers everything in `acked`, that memory equals the files,
/// and that no `*.tmp` is left; returns what it holds.
fn reopen_and_check(dir: &Path, acked: &Acked, round: usize) -> Floor {
    let _gate = fork_gate();
    let driver = match FileDriver::open_or_init(dir) {
        Ok(driver) => driver,
        Err(err) => panic!("round {round}: reopening after the child died failed: {err}"),
    };
    let high_water = now(driver.load_high_water()).expect("load high-water");
    assert!(
        high_water >= acked.high_water,
        "round {round}: high-water rewound to {high_water}, {} was acknowledged",
        acked.high_water
    );
    let mut dense = BTreeMap::new();
    for name in KEYS {
        let value = now(driver.load_dense_seq(&key(name))).expect("load dense");
        assert!(
            value >= acked.max_end(name),
            "round {round}: `{name}` rewound to {value}, a block up to {} was acknowledged",
            acked.max_end(name)
        );
        dense.insert(name.to_owned(), value);
    }
    let leases = now(driver.load_leases()).expect("load leases");
    if let Some(acked_id) = acked.lease {
        assert_eq!(leases.len(), 1, "round {round}: one lease set at a time");
        assert!(
            leases[0].lease_id >= acked_id,
            "round {round}: lease set rewound to id {}, id {acked_id} was acknowledged",
            leases[0].lease_id
        );
        assert_eq!(leases[0], lease(leases[0].lease_id));
    }
    for temp in TEMP_FILES {
        assert!(
            !dir.join(temp).exists(),
            "round {round}: open left {temp} behind"
        );
    }
    // Memory is what the files hold.
    let read = |name: &str| std::fs::read(dir.join(name)).ok();
    assert_eq!(
        read("state").map(|bytes| record::decode(&bytes).expect("state decodes")),
        (high_water > 0).then_some(high_water),
        "round {round}: state file"
    );
    if let Some(bytes) = read("dense") {
        let on_disk = dense_record::decode(&bytes).expect("dense decodes");
        for (name, value) in &dense {
            let stored = on_disk.counters.get(&key(name)).copied().unwrap_or(0);
            assert_eq!(stored, *value, "round {round}: dense `{name}` on disk");
        }
    }
    if let Some(bytes) = read("leases") {
        assert_eq!(
            lease_record::decode(&bytes).expect("leases decode"),
            leases,
            "round {round}: leases on disk"
        );
    }
    let floor = Floor {
        high_water,
        dense,
        lease: leases.first().map(|lease| lease.lease_id),
    };
    drop(driver);
    floor
}

// ---------------------------------------------------------------------------
// SIGKILL at random points.
// ---------------------------------------------------------------------------

const KILL_ROUNDS: usize = 200;
const KILL_SEED: u64 = 0x5eed_0fd1_e5a1_1a7e;

#[test]
fn sigkill_at_random_points_never_rewinds() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("oracle");
    let mut rng = XorShift::new(KILL_SEED);
    let mut acked = Acked::default();
    let mut floor = Floor::default();
    let mut rounds_with_debris = 0usize;
    for round in 0..KILL_ROUNDS {
        let target = rng.range(1, 50) as usize;
        let mut child = {
            let gate = fork_gate();
            ChildProcess::spawn(
                CHILD_TEST,
                &[(ROLE_VAR, "writer".as_ref()), (DIR_VAR, dir.as_os_str())],
                &gate,
            )
        };
        match child.next_report().as_deref() {
            Some("ready") => {}
            Some(other) => panic!(
                "round {round}: the child could not open the directory after the previous \
                 owner was killed and reaped: {other}"
            ),
            None => panic!(
                "round {round}: the child exited before opening: {}",
                child.kill_and_wait()
            ),
        }
        let mut seen = 0;
        while seen < target {
            match child.next_report() {
                Some(line) => acked.ingest(&line, &floor, round),
                None => panic!(
                    "round {round}: the writer died on its own after {seen} acknowledgements: {}",
                    child.kill_and_wait()
                ),
            }
            seen += 1;
        }
        let status = child.kill_and_wait();
        assert_eq!(
            status.signal(),
            Some(nix::sys::signal::Signal::SIGKILL as i32),
            "round {round}: the writer ended by itself: {status}"
        );
        // Lines the child wrote before it died were acknowledged too.
        while let Some(line) = child.next_report() {
            acked.ingest(&line, &floor, round);
        }
        drop(child);
        acked.assert_blocks_disjoint(round);
        if TEMP_FILES.iter().any(|temp| dir.join(temp).exists()) {
            rounds_with_debris += 1;
        }
        floor = reopen_and_check(&dir, &acked, round);
    }
    println!(
        "process_kills: {KILL_ROUNDS} SIGKILL rounds, {} acknowledged values checked, \
         {rounds_with_debris} rounds left *.tmp debris, 0 regressions",
        acked.count
    );
}

// ---------------------------------------------------------------------------
// Abort at every failpoint.
// ---------------------------------------------------------------------------

#[cfg(feature = "failpoints")]
mod failpoint_roles {
    //! The child's side of the failpoint tests: acknowledged writes, then a
    //! failpoint armed to abort the process, then one more write.

    use super::*;

    fn abort_here() {
        std::process::abort();
    }

    pub(super) fn abort_write(dir: &str) {
        let failpoint = std::env::var(FAILPOINT_VAR).expect("failpoint name");
        let kind = std::env::var(KIND_VAR).expect("file kind");
        let _scenario = fail::FailScenario::setup();
        let Some(driver) = open_for_child(dir) else {
            return;
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            // Acknowledged writes of every file kind.
            let start = driver.high_water();
            for asked in [start + 1, start + 2] {
                let got = driver
                    .persist_high_water(asked, LEADER_EPOCH)
                    .await
                    .expect("persist");
                report(&format!("hw {got}"));
            }
            for _ in 0..2 {
                let block = driver
                    .advance_dense(&key("k0"), 5, LEADER_EPOCH)
                    .await
                    .expect("advance");
                report(&format!("dense k0 {block} 5"));
            }
            let entries = [(key("k1"), 3), (key("k2"), 4)];
            let starts = driver
                .advance_dense_batch(&entries, LEADER_EPOCH)
                .await
                .expect("batch");
            report(&format!("dense k1 {} 3", starts[0]));
            report(&format!("dense k2 {} 4", starts[1]));
            for id in [100, 101] {
                driver
                    .persist_leases(&[lease(id)], LEADER_EPOCH)
                    .await
                    .expect("leases");
                report(&format!("lease {id}"));
            }

            fail::cfg_callback(failpoint.as_str(), abort_here).expect("arm failpoint");
            match kind.as_str() {
                "state" => {
                    let asked = driver.high_water() + 1_000;
                    report(&format!("attempt hw {asked}"));
                    let _ = driver.persist_high_water(asked, LEADER_EPOCH).await;
                }
                "dense" => {
                    let current = driver.load_dense_seq(&key("k0")).await.expect("load");
                    report(&format!("attempt dense k0 {}", current + 7));
                    let _ = driver.advance_dense(&key("k0"), 7, LEADER_EPOCH).await;
                }
                "leases" => {
                    report("attempt lease 102");
                    let _ = driver.persist_leases(&[lease(102)], LEADER_EPOCH).await;
                }
                other => panic!("unknown file kind {other}"),
            }
            report("survived");
        });
    }

    pub(super) fn abort_open(dir: &str) {
        let _scenario = fail::FailScenario::setup();
        fail::cfg_callback("file_driver::open", abort_here).expect("arm failpoint");
        report("opening");
        let _ = open_for_child(dir);
        report("survived");
    }
}

#[cfg(feature = "failpoints")]
mod failpoints {
    use super::*;

    use common::{copy_fixture, dir_contents};
    use tsoracle_driver_file::FAILPOINTS;

    /// Runs one aborting child to its death; returns its report lines.
    fn run_to_abort(envs: &[(&str, &std::ffi::OsStr)], what: &str) -> Vec<String> {
        let mut child = {
            let gate = fork_gate();
            ChildProcess::spawn(CHILD_TEST, envs, &gate)
        };
        let mut lines = Vec::new();
        while let Some(line) = child.next_report() {
            lines.push(line);
        }
        let status = child.wait();
        assert!(
            !lines.iter().any(|line| line == "survived"),
            "{what}: the failpoint was never reached: {lines:?}"
        );
        assert_eq!(
            status.signal(),
            Some(nix::sys::signal::Signal::SIGABRT as i32),
            "{what}: the child did not abort: {status}, {lines:?}"
        );
        lines
    }

    /// The exact content a directory must hold.
    #[derive(Debug, PartialEq, Eq)]
    struct Expected {
        high_water: u64,
        dense: BTreeMap<String, u64>,
        leases: Vec<LeaseRecord>,
    }

    /// The `full` fixture's content.
    fn full_fixture() -> Expected {
        Expected {
            high_water: 1_764_000_555_000,
            dense: [("orders".to_owned(), 42), ("users".to_owned(), 7)].into(),
            leases: common::full_leases(),
        }
    }

    fn contents(driver: &FileDriver, names: impl Iterator<Item = String>) -> Expected {
        let mut dense = BTreeMap::new();
        for name in names {
            let value = now(driver.load_dense_seq(&key(&name))).expect("load dense");
            dense.insert(name, value);
        }
        Expected {
            high_water: now(driver.load_high_water()).expect("load high-water"),
            dense,
            leases: now(driver.load_leases()).expect("load leases"),
        }
    }

    fn abort_mid_write_of(kind: &'static str) {
        let temp = format!("{kind}.tmp");
        let mut cases = 0;
        for (index, failpoint) in FAILPOINTS.iter().enumerate() {
            if *failpoint == "file_driver::open" {
                continue;
            }
            let what = format!("abort at {failpoint} writing `{kind}`");
            let tmp = copy_fixture("full");
            let dir = tmp.path();
            let lines = run_to_abort(
                &[
                    (ROLE_VAR, "abort-write".as_ref()),
                    (DIR_VAR, dir.as_os_str()),
                    (FAILPOINT_VAR, failpoint.as_ref()),
                    (KIND_VAR, kind.as_ref()),
                ],
                &what,
            );
            assert_eq!(lines.first().map(String::as_str), Some("ready"), "{what}");

            // What was acknowledged, exactly (the writes were sequential),
            // and what the aborted write would have made it.
            let mut acked = Acked::default();
            let mut attempt = None;
            for line in &lines[1..] {
                match line.strip_prefix("attempt ") {
                    Some(rest) => attempt = Some(rest.to_owned()),
                    None => acked.ingest(line, &Floor::default(), 0),
                }
            }
            let attempt = attempt.unwrap_or_else(|| panic!("{what}: no attempt: {lines:?}"));
            let mut before = full_fixture();
            before.high_water = acked.high_water;
            for name in KEYS {
                before.dense.insert(name.to_owned(), acked.max_end(name));
            }
            before.leases = vec![lease(acked.lease.expect("a lease set was acknowledged"))];
            let mut after = Expected {
                high_water: before.high_water,
                dense: before.dense.clone(),
                leases: before.leases.clone(),
            };
            let attempted_bytes = match attempt.split(' ').collect::<Vec<_>>().as_slice() {
                ["hw", value] => {
                    after.high_water = value.parse().expect("value");
                    record::encode(after.high_water).to_vec()
                }
                ["dense", name, value] => {
                    after
                        .dense
                        .insert((*name).to_owned(), value.parse().expect("value"));
                    let mut state = dense_record::DenseState::default();
                    for (name, value) in &after.dense {
                        state.counters.insert(key(name), *value);
                    }
                    dense_record::encode(&state)
                }
                ["lease", id] => {
                    after.leases = vec![lease(id.parse().expect("id"))];
                    lease_record::encode(&after.leases).expect("encodable")
                }
                _ => panic!("{what}: attempt `{attempt}`"),
            };

            // Before the rename, the new record can only be in the temp
            // file; from the rename on, it is the live file.
            let renamed = index
                > FAILPOINTS
                    .iter()
                    .position(|name| *name == "file_driver::before_rename")
                    .expect("listed");
            let temp_written = !renamed && *failpoint != "file_driver::before_temp_write";
            match std::fs::read(dir.join(&temp)) {
                Ok(bytes) => {
                    assert!(temp_written, "{what}: unexpected {temp}");
                    assert_eq!(
                        bytes, attempted_bytes,
                        "{what}: {temp} holds the new record"
                    );
                }
                Err(_) => assert!(!temp_written, "{what}: {temp} missing"),
            }
            for other in TEMP_FILES.iter().filter(|name| **name != temp) {
                assert!(!dir.join(other).exists(), "{what}: unexpected {other}");
            }
            let live = std::fs::read(dir.join(kind)).expect("live file");
            assert_eq!(live == attempted_bytes, renamed, "{what}: live {kind} file");

            let expected = if renamed { &after } else { &before };
            {
                let _gate = fork_gate();
                let driver = FileDriver::open_or_init(dir)
                    .unwrap_or_else(|err| panic!("{what}: reopen failed: {err}"));
                let names = expected.dense.keys().cloned().collect::<Vec<_>>();
                let found = contents(&driver, names.into_iter());
                assert_eq!(&found, expected, "{what}: reopened content");
                assert!(found.high_water >= acked.high_water, "{what}");
                for name in KEYS {
                    assert!(found.dense[name] >= acked.max_end(name), "{what}");
                }
                drop(driver);
            }
            let left = dir_contents(dir);
            for temp in TEMP_FILES {
                assert!(!left.contains_key(temp), "{what}: {temp} not removed");
            }
            cases += 1;
        }
        assert_eq!(cases, FAILPOINTS.len() - 1);
        println!("process_kills: `{kind}`: aborted at {cases} failpoints, every reopen exact");
    }

    #[test]
    fn an_abort_at_any_failpoint_of_a_state_write_never_rewinds() {
        abort_mid_write_of("state");
    }

    #[test]
    fn an_abort_at_any_failpoint_of_a_dense_write_never_rewinds() {
        abort_mid_write_of("dense");
    }

    #[test]
    fn an_abort_at_any_failpoint_of_a_leases_write_never_rewinds() {
        abort_mid_write_of("leases");
    }

    #[test]
    fn an_abort_during_open_leaves_the_directory_as_it_was() {
        let tmp = copy_fixture("full");
        let dir = tmp.path();
        for temp in TEMP_FILES {
            std::fs::write(dir.join(temp), b"debris of an earlier crash").expect("plant debris");
        }
        let before = dir_contents(dir);
        let lines = run_to_abort(
            &[
                (ROLE_VAR, "abort-open".as_ref()),
                (DIR_VAR, dir.as_os_str()),
            ],
            "abort during open",
        );
        assert_eq!(lines, ["opening"], "the open never completed");
        assert_eq!(
            dir_contents(dir),
            before,
            "the aborted open changed nothing"
        );

        let _gate = fork_gate();
        let driver = FileDriver::open_or_init(dir).expect("the dead opener released the lock");
        let names = ["orders", "users"].map(str::to_owned);
        assert_eq!(contents(&driver, names.into_iter()), full_fixture());
        let left = dir_contents(dir);
        for temp in TEMP_FILES {
            assert!(
                !left.contains_key(temp),
                "{temp} not removed by the next open"
            );
        }
        for (name, bytes) in &left {
            assert_eq!(Some(bytes), before.get(name), "{name} rewritten");
        }
    }
}
