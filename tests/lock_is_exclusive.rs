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

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::{FileDriver, FileDriverError, LEADER_EPOCH};

use common::dir_contents;

const ROLE_VAR: &str = "TSORACLE_LOCK_TEST_ROLE";
const DIR_VAR: &str = "TSORACLE_LOCK_TEST_DIR";
const CHILD_TEST: &str = "child_process_role";
/// Prefix of the lines the child reports on, to tell them from the harness's.
const REPORT: &str = "CHILD-REPORT: ";

/// Held while this process spawns a child, and by any test from the drop of
/// a driver until the lock it released has been taken again.
fn fork_gate() -> MutexGuard<'static, ()> {
    static GATE: Mutex<()> = Mutex::new(());
    GATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
    let report = |what: &str| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{REPORT}{what}").unwrap();
        out.flush().unwrap();
    };
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

/// A child process running [`child_process_role`]; killed if still running
/// when dropped, so a failing test leaves no process behind.
struct ChildProcess {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl ChildProcess {
    /// Needs the [`fork_gate`]: the spawn returns once the child exec'd,
    /// so from then on it holds none of this process's files.
    fn spawn(role: &str, dir: &Path, _gate: &MutexGuard<'static, ()>) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("test binary path"))
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(ROLE_VAR, role)
            .env(DIR_VAR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        ChildProcess { child, stdout }
    }

    /// Blocks until the child's next report line; panics if it exits first.
    fn next_report(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.stdout.read_line(&mut line).expect("read child stdout");
            assert!(read > 0, "child exited without reporting");
            // The harness may have printed `test child_process_role ... `
            // on the same line before the report.
            if let Some(at) = line.find(REPORT) {
                return line[at + REPORT.len()..].trim_end().to_owned();
            }
        }
    }

    /// Closes the child's stdin (a holder then releases and exits) and
    /// waits for it to exit successfully.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().expect("wait for child");
        assert!(status.success(), "child failed: {status}");
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_child_process_cannot_open_a_directory_this_process_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = FileDriver::open_or_init(tmp.path()).unwrap();
    let mut child = ChildProcess::spawn("try-open", tmp.path(), &fork_gate());
    assert_eq!(
        child.next_report(),
        format!("already-locked {}", tmp.path().join("LOCK").display())
    );
    child.finish();

    // Once this process lets go, the child can open it.
    let gate = fork_gate();
    drop(driver);
    let mut child = ChildProcess::spawn("try-open", tmp.path(), &gate);
    drop(gate);
    assert_eq!(child.next_report(), "opened");
    child.finish();
}

#[test]
fn this_process_cannot_open_or_seed_a_directory_a_child_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = ChildProcess::spawn("hold", tmp.path(), &fork_gate());
    assert_eq!(child.next_report(), "locked");
    let before = dir_contents(tmp.path());

    assert_already_locked(FileDriver::open_or_init(tmp.path()), tmp.path());
    assert_already_locked(
        FileDriver::init_seeded(tmp.path(), 1_700_000_000_000),
        tmp.path(),
    );
    assert_eq!(dir_contents(tmp.path()), before, "nothing written");

    // The child lets go and exits normally: the lock is free.
    drop(child.child.stdin.take());
    assert_eq!(child.next_report(), "released");
    child.finish();
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
        ChildProcess::spawn("hold", tmp.path(), &gate)
    };
    assert_eq!(child.next_report(), "locked");
    assert_already_locked(FileDriver::open_or_init(tmp.path()), tmp.path());

    // SIGKILL: no destructor runs in the child; only process death frees
    // the lock.
    child.child.kill().expect("kill child");
    let status = child.child.wait().expect("reap child");
    assert!(!status.success(), "the child was killed, not finished");

    let driver = FileDriver::open_or_init(tmp.path()).expect("open after the holder died");
    assert_eq!(driver.load_high_water().await.unwrap(), 1_764_000_000_000);
}
