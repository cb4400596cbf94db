//! `tsoracle-file restore BACKUP NEWDIR` against the real binary: it refuses
//! without an answer for the dense counters and the high-water (and then
//! writes nothing), refuses uncovered keys naming them and a non-empty
//! NEWDIR, and otherwise creates a new oracle, from a copied directory or a
//! receipt, that a `FileDriver` serves above the floors and the high-water.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::LeaseRecord;
use tsoracle_driver_file::{FileDriver, LEADER_EPOCH, Seed};

use common::cli::{Run, block_on, tsoracle_file};
use common::{copy_fixture, dir_contents, key, now_ms};

/// The `full` reference directory: its high-water (also its largest lease
/// upper bound) and its `users` counter (`orders` is 42).
const FULL_HIGH_WATER: u64 = 1_764_000_555_000;
const FULL_USERS: u64 = 7;

fn restore(backup: &Path, newdir: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("restore"),
        backup.as_os_str(),
        newdir.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    tsoracle_file(args)
}

/// Opens the restored directory with a driver: its high-water, the next
/// value each named key hands out (taking one), and its lease set.
fn served(dir: &Path, keys: &[&str]) -> (u64, Vec<u64>, Vec<LeaseRecord>) {
    let driver = FileDriver::open_or_init(dir).expect("open the restored directory");
    block_on(async {
        let high_water = driver.load_high_water().await.expect("load_high_water");
        let mut next = Vec::new();
        for name in keys {
            next.push(
                driver
                    .advance_dense(&key(name), 1, LEADER_EPOCH)
                    .await
                    .expect("advance_dense"),
            );
        }
        let leases = driver.load_leases().await.expect("load_leases");
        (high_water, next, leases)
    })
}

const CLOCK: [&str; 5] = [
    "--high-water-from-clock",
    "--window-ms",
    "3000",
    "--lease-reach-ms",
    "60000",
];

#[test]
fn refuses_without_answers_and_writes_nothing() {
    let backup = copy_fixture("full");
    let before = dir_contents(backup.path());
    let parent = tempfile::tempdir().expect("tempdir");
    let newdir = parent.path().join("new");

    // No answer at all: the high-water is asked for first, and why.
    let run = restore(backup.path(), &newdir, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("refusing to restore without a high-water"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("a backup is older than the oracle"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("--high-water-from-clock"),
        "{}",
        run.stderr
    );

    // A high-water but no dense answer: every key named.
    let run = restore(backup.path(), &newdir, &CLOCK);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("dense key(s) orders, users of the backup"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--dense-advance"), "{}", run.stderr);

    // A dense answer but no high-water.
    let run = restore(backup.path(), &newdir, &["--dense-advance", "1000"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("without a high-water"),
        "{}",
        run.stderr
    );

    // --high-water-from-clock without the window and lease reach is a
    // usage error.
    let run = restore(
        backup.path(),
        &newdir,
        &["--high-water-from-clock", "--dense-advance", "1"],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--window-ms"), "{}", run.stderr);

    assert!(!newdir.exists(), "a refusal created {}", newdir.display());
    assert_eq!(dir_contents(backup.path()), before, "the backup changed");
}

#[test]
fn refuses_uncovered_keys_naming_them() {
    let backup = copy_fixture("full");
    let newdir = tempfile::tempdir().expect("tempdir");
    let run = restore(
        backup.path(),
        newdir.path(),
        &[&CLOCK[..], &["--key", "orders=500"]].concat(),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "dense key(s) users of the backup are covered neither by --key nor by --dense-advance"
        ),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("orders,"),
        "a covered key was named: {}",
        run.stderr
    );
    // The empty NEWDIR stays empty.
    assert_eq!(
        std::fs::read_dir(newdir.path()).expect("read").count(),
        0,
        "a refusal wrote into NEWDIR"
    );
}

#[test]
fn refuses_a_non_empty_newdir() {
    let backup = copy_fixture("full");
    let newdir = tempfile::tempdir().expect("tempdir");
    std::fs::write(newdir.path().join("notes.txt"), b"mine").expect("write");
    let before = dir_contents(newdir.path());
    let run = restore(
        backup.path(),
        newdir.path(),
        &[&CLOCK[..], &["--dense-advance", "100"]].concat(),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("it is not empty"), "{}", run.stderr);
    assert!(run.stderr.contains("notes.txt"), "{}", run.stderr);
    assert_eq!(dir_contents(newdir.path()), before);

    // Nor over another oracle's directory.
    let other = copy_fixture("highwater");
    let before = dir_contents(other.path());
    let run = restore(
        backup.path(),
        other.path(),
        &[&CLOCK[..], &["--dense-advance", "100"]].concat(),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("it is not empty"), "{}", run.stderr);
    assert_eq!(dir_contents(other.path()), before);
}

#[test]
fn restores_a_copied_directory_above_floors_and_the_clock() {
    let backup = copy_fixture("full");
    let before = dir_contents(backup.path());
    let parent = tempfile::tempdir().expect("tempdir");
    let newdir = parent.path().join("restored");
    let start = now_ms();
    let run = restore(
        backup.path(),
        &newdir,
        &[
            &CLOCK[..],
            &[
                "--key",
                "orders=10000",
                "--key",
                "invoices=77",
                "--key",
                "users=3",
            ],
        ]
        .concat(),
    );
    let end = now_ms();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("orders = 10000 (the backup had 42)"),
        "{}",
        run.stdout
    );
    // A floor below the backup's value leaves the backup's value.
    assert!(
        run.stdout.contains("users = 7 (the backup had 7)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("invoices = 77 (not in the backup)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("2 lease(s) of the backup not carried"),
        "{}",
        run.stdout
    );
    assert_eq!(dir_contents(backup.path()), before, "the backup changed");

    let (high_water, next, leases) = served(&newdir, &["orders", "users", "invoices"]);
    // now + window 3000 + lease reach 60000, on the clock of the run.
    assert!(
        (start + 63_000..=end + 63_000).contains(&high_water),
        "high-water {high_water} not within [{start}, {end}] + 63000"
    );
    assert!(high_water > FULL_HIGH_WATER);
    assert_eq!(next, vec![10_000, FULL_USERS, 77]);
    assert!(leases.is_empty(), "leases were carried: {leases:?}");
}

#[test]
fn restores_a_receipt_with_a_dense_advance_and_an_explicit_high_water() {
    let dir = copy_fixture("full");
    let export = tsoracle_file([
        OsStr::new("export"),
        dir.path().as_os_str(),
        OsStr::new("--receipt"),
    ]);
    assert_eq!(export.code, 0, "{}", export.stderr);
    let files = tempfile::tempdir().expect("tempdir");
    let receipt = files.path().join("receipt.json");
    std::fs::write(&receipt, &export.stdout).expect("write receipt");

    let newdir = files.path().join("restored");
    let high_water = FULL_HIGH_WATER + 86_400_000;
    let run = restore(
        &receipt,
        &newdir,
        &[
            "--high-water",
            &high_water.to_string(),
            "--dense-advance",
            "1000",
            "--key",
            "orders=5000",
            "--json",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON report");
    assert_eq!(report["high_water"], high_water);
    assert_eq!(report["backup_high_water"], FULL_HIGH_WATER);
    assert_eq!(report["backup_leases_dropped"], 2);

    let (loaded, next, leases) = served(&newdir, &["orders", "users"]);
    assert_eq!(loaded, high_water);
    // The floor wins over backup + advance for orders; users is advanced.
    assert_eq!(next, vec![5_000, FULL_USERS + 1_000]);
    assert!(leases.is_empty());
}

#[test]
fn the_high_water_is_never_below_the_backup_or_its_lease_bounds() {
    let backup = tempfile::tempdir().expect("tempdir");
    let lease_bound = 1_900_000_000_000;
    FileDriver::init_from(
        backup.path(),
        &Seed::new(1_800_000_000_000)
            .with_counter(key("orders"), 9)
            .with_leases(vec![LeaseRecord {
                lease_id: 1,
                holder: b"svc".to_vec(),
                holder_epoch: 1,
                ttl_ms: 1_000,
                ts_upper_bound: lease_bound,
                expires_at_ms: lease_bound,
                superseded: false,
            }]),
    )
    .expect("seed the backup");
    let parent = tempfile::tempdir().expect("tempdir");
    let newdir = parent.path().join("restored");
    // An H below the backup's lease bound (and its high-water) is raised.
    let run = restore(
        backup.path(),
        &newdir,
        &["--high-water", "5", "--dense-advance", "0"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (high_water, next, leases) = served(&newdir, &["orders"]);
    assert_eq!(high_water, lease_bound);
    assert_eq!(next, vec![9]);
    assert!(leases.is_empty());
    // The restored oracle is not a copy: it has its own origin id.
    let old = tsoracle_driver_file::read_state_dir(backup.path()).expect("read backup");
    let new = tsoracle_driver_file::read_state_dir(&newdir).expect("read restored");
    if let (Some(old), Some(new)) = (old.origin, new.origin) {
        assert_ne!(old.id_hex(), new.id_hex());
    }
}

#[test]
fn refuses_a_backup_that_is_not_one() {
    let parent = tempfile::tempdir().expect("tempdir");
    let newdir = parent.path().join("restored");
    let empty = tempfile::tempdir().expect("tempdir");
    let run = restore(
        empty.path(),
        &newdir,
        &[&CLOCK[..], &["--dense-advance", "1"]].concat(),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("holds no oracle state"),
        "{}",
        run.stderr
    );

    let json = parent.path().join("other.json");
    std::fs::write(&json, br#"{"schema":"something-else"}"#).expect("write");
    let run = restore(
        &json,
        &newdir,
        &[&CLOCK[..], &["--dense-advance", "1"]].concat(),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("is not a stopped-state receipt"),
        "{}",
        run.stderr
    );
    assert!(!newdir.exists());
}

#[test]
fn refuses_a_retired_or_pending_backup() {
    // Restoring either would start an oracle the migration keeps from
    // serving: a retired directory's state lives on elsewhere, a pending
    // one's source may still serve.
    let parent = tempfile::tempdir().expect("tempdir");
    let retired = parent.path().join("retired");
    FileDriver::init_from(&retired, &Seed::new(FULL_HIGH_WATER)).expect("seed");
    tsoracle_driver_file::StoppedDir::lock(&retired)
        .expect("lock")
        .retire("migrated out\n")
        .expect("retire");
    let pending = parent.path().join("pending");
    FileDriver::init_from(&pending, &Seed::new(FULL_HIGH_WATER).pending("{}")).expect("seed");
    for (backup, what) in [(&retired, "retired"), (&pending, "pending a migration")] {
        let newdir = parent.path().join(format!("restored-{what}"));
        let run = restore(
            backup,
            &newdir,
            &[&CLOCK[..], &["--dense-advance", "1"]].concat(),
        );
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(run.stderr.contains(what), "{}", run.stderr);
        assert!(!newdir.exists(), "{what}: wrote {}", newdir.display());
    }
}

#[test]
fn help_states_the_clock_caveat() {
    let run = tsoracle_file(["restore", "--help"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("CLOCK CAVEAT"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("not behind the one the lost oracle ran on"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("Leases are not carried"),
        "{}",
        run.stdout
    );
}
