//! A process that dies at any failpoint never makes a restarted driver
//! rewind: the child (this binary re-run, see `common::child`) aborts
//! (`SIGABRT`, no unwinding, no destructors) at each failpoint of a write of
//! each file kind, and at the failpoint inside open; the next open finds
//! exactly what was acknowledged, or the aborted write complete.
//!
//! The in-process parts of these tests hold a `FailScenario` like every
//! test of this target: a failpoint armed by another test never fires in
//! this parent's own opens.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;

use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::LeaseRecord;
use tsoracle_driver_file::{
    FAILPOINTS, FileDriver, LEADER_EPOCH, dense_record, lease_record, record,
};

use crate::common;
use crate::common::child::{ChildProcess, fork_gate, play_role, report};
use crate::common::kills::{
    Acked, DIR_VAR, Floor, KEYS, ROLE_VAR, TEMP_FILES, lease, now, open_for_child,
};
use crate::common::{copy_fixture, dir_contents, key};

const FAILPOINT_VAR: &str = "TSORACLE_KILL_TEST_FAILPOINT";
const KIND_VAR: &str = "TSORACLE_KILL_TEST_KIND";
/// The role test, by its path in this target.
const CHILD_TEST: &str = "process_kills::child_role";

// ---------------------------------------------------------------------------
// The child's side: acknowledged writes, then a failpoint armed to abort the
// process, then one more write.
// ---------------------------------------------------------------------------

/// A no-op in a normal test run (the role variable is absent); when the
/// parent re-runs this binary it does what the role says and reports on
/// stdout.
#[test]
fn child_role() {
    play_role(
        ROLE_VAR,
        DIR_VAR,
        &[("abort-write", abort_write), ("abort-open", abort_open)],
    );
}

fn abort_here() {
    std::process::abort();
}

fn abort_write(dir: &str) {
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

fn abort_open(dir: &str) {
    let _scenario = fail::FailScenario::setup();
    fail::cfg_callback("file_driver::open", abort_here).expect("arm failpoint");
    report("opening");
    let _ = open_for_child(dir);
    report("survived");
}

// ---------------------------------------------------------------------------
// The parent's side.
// ---------------------------------------------------------------------------

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
    // This parent's own opens must see no failpoint another test armed.
    let _scenario = fail::FailScenario::setup();
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
    // This parent's own opens must see no failpoint another test armed.
    let _scenario = fail::FailScenario::setup();
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
