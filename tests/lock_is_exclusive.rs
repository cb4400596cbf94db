//! One owner per directory: while a `FileDriver` (in this process or
//! another) holds a state directory, every other open or seeding is refused
//! at once with `AlreadyLocked`; the lock goes away with its owner, whether
//! the owner is dropped, exits, or is killed.
//!
//! The other process is this very test binary, re-run as a child that only
//! runs [`child_process_role`]. The parent waits on the child's stdout
//! lines, never on time.
//!
//! A caveat these tests must respect: an flock belongs to the open file,
//! and a process forked by *another thread* carries a copy of every open
//! file until it execs. A driver dropped while a sibling test is spawning a
//! child can so stay locked for that instant. Every step here that relies
//! on a lock being free right after a drop therefore holds [`fork_gate`],
//! which [`ChildProcess::spawn`] also requires.

mod common;
use common::child;

use std::path::Path;
use std::sync::MutexGuard;

use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::{FileDriver, FileDriverError, LEADER_EPOCH};

use child::{ChildProcess, fork_gate, report};
use common::dir_contents;

const ROLE_VAR: &str = "TSORACLE_LOCK_TEST_ROLE";
const DIR_VAR: &str = "TSORACLE_LOCK_TEST_DIR";
const CHILD_TEST: &str = "child_process_role";

fn assert_already_locked<T: std::fmt::Debug>(result: Result<T, FileDriverError>, dir: &Path) {
    match result {
        Err(FileDriverError::AlreadyLocked { path, .. }) => {
            assert_eq!(path, dir.join("LOCK"));
            assert!(path.ends_with("LOCK"));
        }
        other => panic!("expected AlreadyLocked, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// In one process.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_second_open_in_the_same_process_is_refused_until_the_first_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let first = FileDriver::open_or_init(tmp.path()).unwrap();
    first.persist_high_water(100, LEADER_EPOCH).await.unwrap();
    let before = dir_contents(tmp.path());

    let refused = FileDriver::open_or_init(tmp.path());
    let message = match &refused {
        Err(err) => err.to_string(),
        Ok(_) => String::new(),
    };
    assert_already_locked(refused, tmp.path());
    assert!(
        message.contains(&tmp.path().display().to_string()),
        "{message}"
    );
    assert_eq!(
        dir_contents(tmp.path()),
        before,
        "the refused open changed nothing"
    );

    // The refusal did not disturb the owner.
    assert_eq!(
        first.persist_high_water(200, LEADER_EPOCH).await.unwrap(),
        200
    );
    assert_eq!(first.load_high_water().await.unwrap(), 200);

    let second = {
        let _gate = fork_gate();
        drop(first);
        FileDriver::open_or_init(tmp.path()).expect("open after the owner is gone")
    };
    assert_eq!(second.load_high_water().await.unwrap(), 200);
}

#[test]
fn the_lock_is_per_directory() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let _first = FileDriver::open_or_init(a.path()).unwrap();
    let _other = FileDriver::open_or_init(b.path()).expect("another directory is free");
    assert_already_locked(FileDriver::open_or_init(a.path()), a.path());
    assert_already_locked(FileDriver::open_or_init(b.path()), b.path());
}

// ---------------------------------------------------------------------------
// Across processes.
// ---------------------------------------------------------------------------

/// The child's side. A no-op in a normal test run (the role variable is
/// absent); when the parent re-runs this binary it does what the role says
/// and reports on stdout.
#[test]
fn child_process_role() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    let dir = std::env::var(DIR_VAR).expect("the parent sets the directory");
    match role.as_str() {
        "try-open" => match FileDriver::open_or_init(&dir) {
            Ok(_) => report("opened"),
            Err(FileDriverError::AlreadyLocked { path, .. }) => {
                report(&format!("already-locked {}", path.display()));
            }
            Err(other) => report(&format!("error {other}")),
        },
        "hold" => {
            let driver = FileDriver::open_or_init(&dir).expect("child opens");
            report("locked");
            // Hold the lock until the parent closes our stdin (or kills us).
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            drop(driver);
            report("released");
        }
        other => panic!("unknown role {other}"),
    }
}

/// Starts a child running [`child_process_role`] as `role` on `dir`. Needs
/// the [`fork_gate`].
fn spawn(role: &str, dir: &Path, gate: &MutexGuard<'static, ()>) -> ChildProcess {
    ChildProcess::spawn(
        CHILD_TEST,
        &[(ROLE_VAR, role.as_ref()), (DIR_VAR, dir.as_os_str())],
        gate,
    )
}

/// Blocks until the child's next report line; panics if it exits first.
fn next_report(child: &mut ChildProcess) -> String {
    child.next_report().expect("child exited without reporting")
}

/// Closes the child's stdin (a holder then releases and exits) and waits
/// for it to exit successfully.
fn finish(mut child: ChildProcess) {
    let status = child.wait();
    assert!(status.success(), "child failed: {status}");
}

#[test]
fn a_child_process_cannot_open_a_directory_this_process_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = FileDriver::open_or_init(tmp.path()).unwrap();
    let mut child = spawn("try-open", tmp.path(), &fork_gate());
    assert_eq!(
        next_report(&mut child),
        format!("already-locked {}", tmp.path().join("LOCK").display())
    );
    finish(child);

    // Once this process lets go, the child can open it.
    let gate = fork_gate();
    drop(driver);
    let mut child = spawn("try-open", tmp.path(), &gate);
    drop(gate);
    assert_eq!(next_report(&mut child), "opened");
    finish(child);
}

#[test]
fn this_process_cannot_open_or_seed_a_directory_a_child_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = spawn("hold", tmp.path(), &fork_gate());
    assert_eq!(next_report(&mut child), "locked");
    let before = dir_contents(tmp.path());

    assert_already_locked(FileDriver::open_or_init(tmp.path()), tmp.path());
    assert_already_locked(
        FileDriver::init_seeded(tmp.path(), 1_700_000_000_000),
        tmp.path(),
    );
    assert_eq!(dir_contents(tmp.path()), before, "nothing written");

    // The child lets go and exits normally: the lock is free.
    child.close_stdin();
    assert_eq!(next_report(&mut child), "released");
    finish(child);
    FileDriver::open_or_init(tmp.path()).expect("open after the child released");
}

#[tokio::test]
async fn a_killed_child_releases_its_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let seeder = FileDriver::open_or_init(tmp.path()).unwrap();
    seeder
        .persist_high_water(1_764_000_000_000, LEADER_EPOCH)
        .await
        .unwrap();
    let mut child = {
        let gate = fork_gate();
        drop(seeder);
        spawn("hold", tmp.path(), &gate)
    };
    assert_eq!(next_report(&mut child), "locked");
    assert_already_locked(FileDriver::open_or_init(tmp.path()), tmp.path());

    // SIGKILL: no destructor runs in the child; only process death frees
    // the lock.
    child.child.kill().expect("kill child");
    let status = child.child.wait().expect("reap child");
    assert!(!status.success(), "the child was killed, not finished");

    let driver = FileDriver::open_or_init(tmp.path()).expect("open after the holder died");
    assert_eq!(driver.load_high_water().await.unwrap(), 1_764_000_000_000);
}
