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
//! - `tests/failpoints/process_kills.rs`: the child aborts (`SIGABRT`, no
//!   unwinding, no destructors) at each failpoint of a write of each file
//!   kind, and at the failpoint inside open.
//! - Here, a seeded loop SIGKILLs a child that writes as fast as it can
//!   with eight concurrent callers, at a random number of acknowledgements.
#![cfg(unix)]

mod common;
use common::child;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::{FileDriver, LEADER_EPOCH, dense_record, lease_record, record};

use child::{ChildProcess, XorShift, fork_gate, play_role, report};
use common::key;
use common::kills::{
    Acked, DIR_VAR, Floor, KEYS, ROLE_VAR, TEMP_FILES, lease, now, open_for_child,
};

const CHILD_TEST: &str = "child_role";

// ---------------------------------------------------------------------------
// The child's side.
// ---------------------------------------------------------------------------

/// A no-op in a normal test run (the role variable is absent); when the
/// parent re-runs this binary it does what the role says and reports on
/// stdout.
#[test]
fn child_role() {
    play_role(ROLE_VAR, DIR_VAR, &[("writer", writer)]);
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
