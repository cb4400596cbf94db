//! Many processes racing for one state directory: exactly one wins, every
//! other is refused with `AlreadyLocked` (or, for seeding after the winner
//! finished, `StateExists`), and what ends up on disk is the winner's.
//!
//! The racers are this very test binary, re-run as children that only run
//! [`child_role`]. Each reports `ready`, then blocks reading one byte on
//! stdin; the parent writes that byte to every child in one loop, so they
//! start together. The parent waits on the children's stdout lines, never on
//! time.
#![cfg(unix)]

mod common;
use common::child;

use std::io::Read;
use std::path::Path;

use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::{FileDriver, FileDriverError, LEADER_EPOCH, record};

use child::{ChildProcess, fork_gate, play_role, report};
use common::dir_contents;

const ROLE_VAR: &str = "TSORACLE_RACE_TEST_ROLE";
const DIR_VAR: &str = "TSORACLE_RACE_TEST_DIR";
/// The high-water an opener persists once it won, or the seed a seeder uses.
const VALUE_VAR: &str = "TSORACLE_RACE_TEST_VALUE";
const CHILD_TEST: &str = "child_role";

const OPENERS: usize = 16;
const SEEDERS: usize = 8;

// ---------------------------------------------------------------------------
// The child's side.
// ---------------------------------------------------------------------------

/// A no-op in a normal test run (the role variable is absent).
#[test]
fn child_role() {
    play_role(
        ROLE_VAR,
        DIR_VAR,
        &[
            ("open", |dir| open(dir, value_at_start())),
            ("seed", |dir| seed(dir, value_at_start())),
        ],
    );
}

/// The parent's value, read once this child is `ready` and the parent
/// released it: reports `ready`, then blocks reading the start byte.
fn value_at_start() -> u64 {
    let value: u64 = std::env::var(VALUE_VAR)
        .expect("the parent sets the value")
        .parse()
        .expect("a number");
    report("ready");
    let mut go = [0u8; 1];
    std::io::stdin()
        .read_exact(&mut go)
        .expect("the start byte");
    value
}

/// Opens (or initialises) `dir`; the winner persists `value` (if not 0) and
/// holds the lock until the parent closes its stdin.
fn open(dir: &str, value: u64) {
    match FileDriver::open_or_init(dir) {
        Ok(driver) => {
            if value > 0 {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                let got = runtime
                    .block_on(driver.persist_high_water(value, LEADER_EPOCH))
                    .expect("the winner persists");
                assert_eq!(got, value);
            }
            report("won");
            // Hold the lock until the parent closes our stdin.
            let mut rest = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut rest);
            drop(driver);
            report("released");
        }
        Err(FileDriverError::AlreadyLocked { .. }) => report("locked"),
        Err(other) => report(&format!("error {other}")),
    }
}

/// Seeds `dir` at `value`.
fn seed(dir: &str, value: u64) {
    match FileDriver::init_seeded(dir, value) {
        Ok(()) => report("seeded"),
        Err(FileDriverError::AlreadyLocked { .. }) => report("locked"),
        Err(FileDriverError::StateExists { .. }) => report("exists"),
        Err(other) => report(&format!("error {other}")),
    }
}

// ---------------------------------------------------------------------------
// The parent's side.
// ---------------------------------------------------------------------------

/// Spawns one child per value, waits until every one is `ready`, then
/// releases them all at once.
fn start_together(role: &str, dir: &Path, values: &[u64]) -> Vec<ChildProcess> {
    let mut children: Vec<ChildProcess> = {
        let gate = fork_gate();
        values
            .iter()
            .map(|value| {
                let value = value.to_string();
                ChildProcess::spawn(
                    CHILD_TEST,
                    &[
                        (ROLE_VAR, role.as_ref()),
                        (DIR_VAR, dir.as_os_str()),
                        (VALUE_VAR, value.as_ref()),
                    ],
                    &gate,
                )
            })
            .collect()
    };
    for (index, child) in children.iter_mut().enumerate() {
        assert_eq!(
            child.next_report().as_deref(),
            Some("ready"),
            "{role} child {index} did not start"
        );
    }
    for child in &mut children {
        child.release();
    }
    children
}

/// Each child's first report after the start.
fn outcomes(children: &mut [ChildProcess]) -> Vec<String> {
    children
        .iter_mut()
        .enumerate()
        .map(|(index, child)| {
            child
                .next_report()
                .unwrap_or_else(|| panic!("child {index} exited without reporting"))
        })
        .collect()
}

/// Closes every child's stdin and waits for all to exit successfully.
fn finish(children: Vec<ChildProcess>) {
    for mut child in children {
        child.close_stdin();
        // A winner reports once more as it lets go.
        while let Some(line) = child.next_report() {
            assert_eq!(line, "released");
        }
        let status = child.wait();
        assert!(status.success(), "child failed: {status}");
    }
}

fn high_water_on_disk(dir: &Path) -> Option<u64> {
    std::fs::read(dir.join("state"))
        .ok()
        .map(|bytes| record::decode(&bytes).expect("state decodes"))
}

#[test]
fn of_many_processes_opening_one_directory_exactly_one_wins() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // Round 0 races creating the (nested) directory too.
    let dir = tmp.path().join("not").join("yet");
    let mut rounds = 0;
    for round in 0..3u64 {
        let values: Vec<u64> = (0..OPENERS as u64)
            .map(|index| 1_764_000_000_000 + round * 1_000 + index)
            .collect();
        let mut children = start_together("open", &dir, &values);
        let reports = outcomes(&mut children);
        let winners: Vec<usize> = (0..OPENERS).filter(|&i| reports[i] == "won").collect();
        assert_eq!(winners.len(), 1, "round {round}: {reports:?}");
        for (index, outcome) in reports.iter().enumerate() {
            assert!(
                outcome == "won" || outcome == "locked",
                "round {round}: child {index} reported `{outcome}`: {reports:?}"
            );
        }
        let winner = values[winners[0]];
        // Still held: this process is refused too.
        assert!(matches!(
            FileDriver::open_or_init(&dir),
            Err(FileDriverError::AlreadyLocked { .. })
        ));
        finish(children);
        assert_eq!(
            high_water_on_disk(&dir),
            Some(winner),
            "round {round}: the winner's write, and only it"
        );
        rounds += 1;
    }
    println!("lock_races: {rounds} rounds of {OPENERS} racing opens, exactly one winner each");
}

#[test]
fn seeding_is_refused_while_another_process_runs_a_driver() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    // The holder writes nothing but LOCK (its identity is an attribute of
    // the directory): only the lock stands between the seeders and a
    // directory without state.
    let mut holder = start_together("open", dir, &[0]);
    assert_eq!(outcomes(&mut holder), ["won"]);
    let before = dir_contents(dir);
    assert_eq!(before.keys().collect::<Vec<_>>(), ["LOCK"]);
    let attributes = common::dir_xattrs(dir);

    let seeds: Vec<u64> = (0..SEEDERS as u64)
        .map(|index| 1_700_000_000_000 + index)
        .collect();
    let mut seeders = start_together("seed", dir, &seeds);
    let reports = outcomes(&mut seeders);
    assert!(
        reports.iter().all(|outcome| outcome == "locked"),
        "every seeder is refused while a driver runs: {reports:?}"
    );
    assert!(matches!(
        FileDriver::init_seeded(dir, 1_700_000_000_000),
        Err(FileDriverError::AlreadyLocked { .. })
    ));
    assert_eq!(dir_contents(dir), before, "a refused seeding wrote nothing");
    assert_eq!(common::dir_xattrs(dir), attributes, "nor set an attribute");
    finish(seeders);
    finish(holder);
    assert_eq!(dir_contents(dir), before, "the holder wrote nothing");
    assert_eq!(common::dir_xattrs(dir), attributes);

    // The refusal was the lock's: with the holder gone, seeding works.
    let _gate = fork_gate();
    FileDriver::init_seeded(dir, 1_700_000_000_000).expect("seed once the holder is gone");
    let driver = FileDriver::open_or_init(dir).expect("open");
    assert_eq!(driver.high_water(), 1_700_000_000_000);
    drop(driver);
}

#[test]
fn of_many_processes_seeding_one_fresh_directory_exactly_one_succeeds() {
    let mut rounds = 0;
    let mut refusals: std::collections::BTreeMap<String, usize> = Default::default();
    for round in 0..3u64 {
        let tmp = tempfile::tempdir().expect("temp dir");
        // Odd rounds also race creating the directory.
        let dir = if round % 2 == 1 {
            tmp.path().join("fresh")
        } else {
            tmp.path().to_path_buf()
        };
        let seeds: Vec<u64> = (0..SEEDERS as u64)
            .map(|index| 1_700_000_000_000 + round * 100 + index * 7)
            .collect();
        let mut children = start_together("seed", &dir, &seeds);
        let reports = outcomes(&mut children);
        let winners: Vec<usize> = (0..SEEDERS).filter(|&i| reports[i] == "seeded").collect();
        assert_eq!(winners.len(), 1, "round {round}: {reports:?}");
        for (index, outcome) in reports.iter().enumerate() {
            assert!(
                ["seeded", "locked", "exists"].contains(&outcome.as_str()),
                "round {round}: seeder {index} reported `{outcome}`"
            );
            if outcome != "seeded" {
                *refusals.entry(outcome.clone()).or_default() += 1;
            }
        }
        finish(children);
        let contents = dir_contents(&dir);
        assert_eq!(
            contents.keys().collect::<Vec<_>>(),
            ["LOCK", "state"],
            "round {round}: the seed and nothing else"
        );
        assert_eq!(
            high_water_on_disk(&dir),
            Some(seeds[winners[0]]),
            "round {round}: the winner's seed"
        );
        rounds += 1;
    }
    println!(
        "lock_races: {rounds} rounds of {SEEDERS} racing seeders, exactly one seed each \
         (the others refused: {refusals:?})"
    );
}
