//! Child processes for multi-process tests: the test binary re-run with only
//! one `#[test]` (the *role* test) selected and an environment variable
//! saying what to do. The child reports on stdout, one line per event, each
//! prefixed with [`REPORT`]; the parent waits on those lines, never on time.
//!
//! Part of the shared test helpers: `mod common;` then `common::child`.
//!
//! An flock belongs to the open file, and a process forked by another thread
//! carries a copy of every open file until it execs. So that a test's
//! in-process driver is never duplicated into a sibling test's child, every
//! spawn holds [`fork_gate`], and so does every test from opening a driver
//! in-process to dropping it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};

/// Prefix of the lines a child reports on, to tell them from the harness's.
pub const REPORT: &str = "CHILD-REPORT: ";

/// Held while this process spawns a child, and while a test holds a driver
/// open in-process.
pub fn fork_gate() -> MutexGuard<'static, ()> {
    static GATE: Mutex<()> = Mutex::new(());
    GATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes one report line and flushes it, in one `write` of the locked
/// stdout: lines from concurrent tasks never interleave.
pub fn report(what: &str) {
    let mut line = String::with_capacity(REPORT.len() + what.len() + 1);
    line.push_str(REPORT);
    line.push_str(what);
    line.push('\n');
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).expect("write report");
    out.flush().expect("flush report");
}

/// A role a child can play: its name (the role variable's value), and what
/// it does with the directory.
pub type Role = (&'static str, fn(&str));

/// The child's side of a role test: a no-op in a normal test run (the
/// parent's `role_var` is absent); in a child, the role named in `role_var`
/// run on the directory in `dir_var`. Panics on a role not in `roles`.
pub fn play_role(role_var: &str, dir_var: &str, roles: &[Role]) {
    let Ok(role) = std::env::var(role_var) else {
        return;
    };
    let dir = std::env::var(dir_var).expect("the parent sets the directory");
    match roles.iter().find(|(name, _)| *name == role) {
        Some((_, play)) => play(&dir),
        None => panic!("unknown role {role}"),
    }
}

/// A child process running the role test `test` of this binary; killed if
/// still running when dropped, so a failing test leaves no process behind.
pub struct ChildProcess {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ChildProcess {
    /// Starts the child. Needs the [`fork_gate`]: the spawn returns once the
    /// child exec'd, so from then on it holds none of this process's files.
    pub fn spawn<V: AsRef<OsStr>>(
        test: &str,
        envs: &[(&str, V)],
        _gate: &MutexGuard<'static, ()>,
    ) -> Self {
        let mut command = Command::new(std::env::current_exe().expect("test binary path"));
        command
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn child");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        ChildProcess {
            child,
            stdin,
            stdout,
        }
    }

    /// The child's next complete report line, or `None` once its stdout is
    /// closed. A last line cut short by the child's death (no newline) is
    /// not a report and is skipped.
    pub fn next_report(&mut self) -> Option<String> {
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.stdout.read_line(&mut line).expect("read child stdout");
            if read == 0 || !line.ends_with('\n') {
                return None;
            }
            // The harness may have printed `test role ... ` on the same line.
            if let Some(at) = line.find(REPORT) {
                return Some(line[at + REPORT.len()..].trim_end().to_owned());
            }
        }
    }

    /// Writes one byte to the child's stdin (the "go" of a start gate).
    pub fn release(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(b"g").expect("write child stdin");
        stdin.flush().expect("flush child stdin");
    }

    /// Closes the child's stdin.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// SIGKILLs the child (if it still runs) and reaps it.
    pub fn kill_and_wait(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("reap child")
    }

    /// Closes stdin and waits for the child to exit on its own.
    pub fn wait(&mut self) -> ExitStatus {
        self.close_stdin();
        self.child.wait().expect("wait for child")
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

/// A tiny seeded xorshift64* generator: reproducible, no dependency.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // xorshift must not start at 0.
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// In `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}
