//! What every subcommand shares: the failure type and exit codes, printing
//! the result, JSON serialization of the typed output structs, and the UTC
//! and time helpers.

use std::error::Error;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tsoracle_driver_file::{StateDir, read_state_dir};

/// Exit code of a subcommand that failed or refused (clap exits with 2 on
/// a usage error before any subcommand runs).
pub(crate) const EXIT_FAILURE: u8 = 1;

/// What a subcommand prints on stdout when it succeeds.
pub(crate) type CmdResult = Result<String, Failure>;

/// A failed subcommand: the one-line reason printed on stderr after
/// `error: `, what it still prints on stdout (the JSON verdict of
/// `verify --json`), and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The reason, without the `error: ` prefix.
    pub(crate) message: String,
    /// Printed on stdout before the reason goes to stderr.
    pub(crate) stdout: Option<String>,
    /// The process exit code.
    pub(crate) code: u8,
}

impl Failure {
    /// A failure with this message and exit code 1.
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            stdout: None,
            code: EXIT_FAILURE,
        }
    }

    /// The error's `Display` followed by its `source()` chain, joined with
    /// `": "`: one line that names the file and says what is wrong with it.
    pub(crate) fn from_error(err: &(dyn Error + 'static)) -> Self {
        Failure::new(error_chain(err))
    }

    /// The same failure, also printing `stdout` on stdout.
    pub(crate) fn with_stdout(mut self, stdout: String) -> Self {
        self.stdout = Some(stdout);
        self
    }
}

/// An error and its `source()` chain on one line, joined with `": "`.
pub(crate) fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// Prints a subcommand's result and turns it into the process exit code.
/// A reader that went away (`| head`) ends the output quietly.
pub(crate) fn finish(result: CmdResult) -> ExitCode {
    match result {
        Ok(output) => {
            let mut stdout = io::stdout().lock();
            match stdout
                .write_all(output.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                // The reader went away (`| head`): nothing left to tell.
                Err(err) if err.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(EXIT_FAILURE),
                Err(err) => {
                    let _ = writeln!(io::stderr(), "error: cannot write to stdout: {err}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Err(failure) => {
            if let Some(text) = failure.stdout {
                let mut stdout = io::stdout().lock();
                let _ = stdout
                    .write_all(text.as_bytes())
                    .and_then(|()| stdout.flush());
            }
            let _ = writeln!(io::stderr(), "error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Reads and checks a state directory without the lock, as every read-only
/// subcommand does.
pub(crate) fn read(dir: &Path) -> Result<StateDir, Failure> {
    read_state_dir(dir).map_err(|err| Failure::from_error(&err))
}

/// `value` as indented JSON and a newline.
pub(crate) fn json_pretty<T: Serialize>(value: &T) -> String {
    // The output types are plain structs of strings, numbers, options,
    // vectors and string-keyed maps: serializing them cannot fail.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// `value` as one line of JSON and a newline.
pub(crate) fn json_line<T: Serialize>(value: &T) -> String {
    // As in `json_pretty`: cannot fail for the output types.
    let mut text = serde_json::to_string(value).unwrap_or_default();
    text.push('\n');
    text
}

/// `ms` milliseconds after the Unix epoch as ISO-8601 UTC with millisecond
/// precision, e.g. `2025-11-24T16:00:00.123Z`; `None` past the last instant
/// the time crate names, late in the year 9999 (a lease expiry may be any
/// 64-bit number; a high-water never is).
pub(crate) fn utc(ms: u64) -> Option<String> {
    let millis = i64::try_from(ms).ok()?;
    let instant = jiff::Timestamp::from_millisecond(millis).ok()?;
    Some(format!("{instant:.3}"))
}

/// [`utc`] for text output: `after the year 9999` when it has no date.
pub(crate) fn utc_text(ms: u64) -> String {
    utc(ms).unwrap_or_else(|| "after the year 9999".to_string())
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        // A clock before 1970: every lease counts as unexpired, which errs
        // on the side of reporting it.
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        let utc = |ms| utc(ms).unwrap_or_else(|| panic!("{ms} out of range"));
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_764_000_000_123), "2025-11-24T16:00:00.123Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(utc(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(utc(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        // The largest high-water a state file may hold (2^46 - 1).
        assert_eq!(utc((1 << 46) - 1), "4199-11-24T01:22:57.663Z");
        assert_eq!(utc(253_402_128_000_000), "9999-12-30T00:00:00.000Z");
    }

    #[test]
    fn utc_beyond_the_year_9999_has_no_date() {
        // 10000-01-01T00:00:00Z
        assert_eq!(utc(253_402_300_800_000), None);
        assert_eq!(utc(i64::MAX as u64 + 1), None);
        assert_eq!(utc(u64::MAX), None);
        assert_eq!(utc_text(u64::MAX), "after the year 9999");
    }

    #[test]
    fn failures_print_their_source_chain() {
        let inner = io::Error::new(io::ErrorKind::NotFound, "no such directory");
        let outer = tsoracle_driver_file::read_state_dir("/nonexistent/tsoracle-file-test")
            .expect_err("missing");
        assert!(error_chain(&outer).ends_with(": no such directory"));
        assert_eq!(error_chain(&inner), "no such directory");
    }
}
