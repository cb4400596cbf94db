//! The `tsoracle-file` binary, run as an operator runs it: what the CLI,
//! restore, serve and migration tests drive. Only with the `cli` feature,
//! which builds the binary.

use std::ffi::OsStr;
use std::process::{Command, Output};

/// The `tsoracle-file` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_tsoracle-file");

/// One finished run: its exit code (-1 when killed by a signal), stdout
/// and stderr.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `tsoracle-file` with `args`; fails the test if it panicked.
pub fn tsoracle_file<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(BIN);
    command.args(args);
    run(command)
}

/// Runs `command` (the binary, or a wrapper around it) to the end; fails
/// the test if it panicked.
pub fn run(mut command: Command) -> Run {
    let output = command.output().expect("run tsoracle-file");
    let run = Run {
        // `None` only when killed by a signal, which is a failure too.
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "the CLI panicked: {}",
        run.stderr
    );
    run
}

/// Runs `tsoracle-file` with `args` and returns its raw output; fails the
/// test if it panicked.
pub fn output<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = Command::new(BIN)
        .args(args)
        .output()
        .expect("run tsoracle-file");
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("panicked"),
        "the CLI panicked: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `tsoracle-file` with `args`: success, stdout, stderr.
pub fn outcome<S: AsRef<OsStr>>(args: &[S]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run tsoracle-file");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `future` to completion on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(future)
}
