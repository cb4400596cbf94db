//! What every subcommand shares: the failure type and exit codes, printing
//! the result, JSON serialization of the typed output structs, and the UTC
//! and time helpers.

use std::error::Error;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use std::time::Duration;

use serde::Serialize;
use tsoracle_consensus::ConsensusError;
use tsoracle_core::PHYSICAL_MS_MAX;
use tsoracle_driver_file::{FileDriverError, StateDir, read_state_dir};

/// Exit code of a subcommand that failed or refused (clap exits with 2 on
/// a usage error before any subcommand runs).
pub(crate) const EXIT_FAILURE: u8 = 1;

/// Exit code of a usage error found after parsing (a combination of flags
/// that cannot work), as clap's own usage errors.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) const EXIT_USAGE: u8 = 2;

/// The exit-code table, shared by the help texts (a macro, so that
/// `concat!` takes it).
macro_rules! exit_codes {
    () => {
        "EXIT CODES
  0  success
  1  the directory cannot be read, its state is invalid or corrupt, or the
     request was refused (existing state, a seed from which no server could
     make progress, an empty export, a missing directory for serve, lock
     held), or the server stopped on an error
  2  usage error (unknown subcommand or flag, missing argument, a value
     that is not a number or a duration, a window above 1h, lease TTL
     bounds that cannot work)
"
    };
}
pub(crate) use exit_codes;

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
    /// What the operator can do, printed on a `hint:` line under the
    /// reason: the driver error's [`hint`](FileDriverError::hint).
    pub(crate) hint: Option<String>,
}

impl Failure {
    /// A failure with this message and exit code 1.
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            stdout: None,
            code: EXIT_FAILURE,
            hint: None,
        }
    }

    /// The error's `Display` followed by its `source()` chain, joined with
    /// `": "`: one line that names the file and says what is wrong with it.
    /// When the error is (or wraps) a held lock, the holder's pid is
    /// added, as `inspect` finds it.
    /// The driver error in the chain, if any, gives the hint.
    pub(crate) fn from_error(err: &(dyn Error + 'static)) -> Self {
        let mut message = tsoracle_driver_file::error_chain(err);
        if let Some(holder) = lock_holder(err) {
            message.push_str(&holder);
        }
        Failure {
            hint: hint_of(err),
            ..Failure::new(message)
        }
    }

    /// The same failure (hint, exit code and all) with its reason
    /// rewritten by `reword`, which gets the old one.
    #[cfg_attr(not(feature = "migrate"), allow(dead_code))] // used by `migrate out`
    pub(crate) fn reworded(mut self, reword: impl FnOnce(&str) -> String) -> Self {
        self.message = reword(&self.message);
        self
    }

    /// The same failure, also printing `stdout` on stdout.
    pub(crate) fn with_stdout(mut self, stdout: String) -> Self {
        self.stdout = Some(stdout);
        self
    }
}

/// An error and its source chain on one line, as
/// [`tsoracle_driver_file::error_chain`] makes it, followed by
/// `; hint: ...` when a driver error in the chain has one: for log lines
/// and for reasons that wrap an error.
#[cfg_attr(not(feature = "server"), allow(dead_code))] // used by `serve`
pub(crate) fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut line = tsoracle_driver_file::error_chain(err);
    if let Some(hint) = hint_of(err) {
        line.push_str("; hint: ");
        line.push_str(&hint);
    }
    line
}

/// The first driver error in `err`'s chain: the error itself, a shared one,
/// or one a [`ConsensusError`] carries.
fn driver_error<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a FileDriverError> {
    let mut current = Some(err);
    while let Some(err) = current {
        let driver = err
            .downcast_ref::<FileDriverError>()
            .or_else(|| err.downcast_ref::<Arc<FileDriverError>>().map(Arc::as_ref))
            .or_else(|| {
                err.downcast_ref::<ConsensusError>()
                    .and_then(FileDriverError::in_consensus)
            });
        if driver.is_some() {
            return driver;
        }
        current = err.source();
    }
    None
}

/// The [`hint`](FileDriverError::hint) of the first driver error in
/// `err`'s chain.
fn hint_of(err: &(dyn Error + 'static)) -> Option<String> {
    driver_error(err).and_then(FileDriverError::hint)
}

/// Prints a subcommand's result and turns it into the process exit code.
/// A reader that went away (`| head`) ends the output quietly.
pub(crate) fn finish(result: CmdResult) -> ExitCode {
    match result {
        // Nothing to print (`serve`'s clean stop): stdout is not touched,
        // so a stdout that cannot be written cannot fail the exit.
        Ok(output) if output.is_empty() => ExitCode::SUCCESS,
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
            if let Some(hint) = &failure.hint {
                let _ = writeln!(io::stderr(), "hint: {hint}");
            }
            ExitCode::from(failure.code)
        }
    }
}

/// `"; held by pid N"` when the first driver error in `err`'s chain is an
/// [`AlreadyLocked`](tsoracle_driver_file::FileDriverError::AlreadyLocked)
/// whose holder the kernel's lock table names; `None` otherwise.
fn lock_holder(err: &(dyn Error + 'static)) -> Option<String> {
    let Some(FileDriverError::AlreadyLocked { path, .. }) = driver_error(err) else {
        return None;
    };
    let dir = path.parent()?;
    match crate::locks::lock_status(dir, true) {
        crate::locks::LockStatus::Held { pids } if !pids.is_empty() => {
            let pids: Vec<String> = pids.iter().map(i64::to_string).collect();
            Some(format!(
                "; held by pid {} (`tsoracle-file inspect` shows it too)",
                pids.join(", ")
            ))
        }
        _ => None,
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

/// The largest `--window-ahead` and `--failover-advance` accepted.
///
/// Each durable high-water write reaches this far past the clock, and a
/// restarted oracle resumes from the durable high-water, so a larger value
/// can push every later timestamp that far ahead of real time for good
/// (and, near the 46-bit limit, leave no room to make progress). The
/// server's defaults are 3 s and 1 s; an hour is far above any clock skew
/// these values exist to absorb.
pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// The default `--window-ahead`, as tsoracle-server's.
pub(crate) const DEFAULT_WINDOW_AHEAD: &str = "3s";
/// The default `--failover-advance`, as tsoracle-server's.
pub(crate) const DEFAULT_FAILOVER_ADVANCE: &str = "1s";

/// Parses a human duration (`3s`, `250ms`, `1m 30s`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|err| format!("{err} (a duration such as `3s`, `250ms` or `1m 30s`)"))
}

/// Parses `--window-ahead`: at least 1 ms, at most [`MAX_WINDOW`].
pub(crate) fn parse_window_ahead(text: &str) -> Result<Duration, String> {
    let window = parse_bounded(text)?;
    if window < Duration::from_millis(1) {
        return Err(
            "the window ahead must be at least 1ms: every timestamp is issued \
                    below a high-water written at least this far ahead of the clock"
                .into(),
        );
    }
    check_window_bound(text, window)?;
    Ok(window)
}

/// Parses `--failover-advance`: at most [`MAX_WINDOW`].
pub(crate) fn parse_failover_advance(text: &str) -> Result<Duration, String> {
    let advance = parse_bounded(text)?;
    check_window_bound(text, advance)?;
    Ok(advance)
}

/// [`parse_duration`] for a value bounded by [`MAX_WINDOW`]: a number too
/// large for a `Duration` at all is above the bound too.
fn parse_bounded(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Err(humantime::DurationError::NumberOverflow) => Err(above_bound(text)),
        _ => parse_duration(text),
    }
}

fn check_window_bound(text: &str, value: Duration) -> Result<(), String> {
    if value > MAX_WINDOW {
        return Err(above_bound(text));
    }
    Ok(())
}

fn above_bound(value: &str) -> String {
    format!(
        "{value} is above the maximum of {}: each durable high-water write reaches \
         this far past the clock and a restart resumes from it, so timestamps could \
         run that far ahead of real time for good (defaults: window ahead \
         {DEFAULT_WINDOW_AHEAD}, failover advance {DEFAULT_FAILOVER_ADVANCE})",
        humantime::format_duration(MAX_WINDOW),
    )
}

/// Whether a server starting from `high_water` can make progress: its
/// first write after a (re)start reaches `high_water + 1 + failover
/// advance`, the next one a window ahead of that, and neither may pass the
/// 46-bit physical-millisecond maximum. `Err` says why not.
pub(crate) fn check_headroom(
    high_water: u64,
    window_ahead: Duration,
    failover_advance: Duration,
) -> Result<(), String> {
    let needed = 1 + millis(failover_advance) + millis(window_ahead);
    let last_usable = PHYSICAL_MS_MAX.saturating_sub(needed);
    if high_water > last_usable {
        return Err(format!(
            "a server starting from high-water {high_water} would have to persist up to \
             {high_water} + 1 + failover advance {} + window ahead {} ms, above the 46-bit \
             physical-millisecond maximum {PHYSICAL_MS_MAX} ({}): no server could make \
             progress; the largest usable high-water with these settings is {last_usable}",
            millis(failover_advance),
            millis(window_ahead),
            utc_text(PHYSICAL_MS_MAX),
        ));
    }
    Ok(())
}

/// A duration in whole milliseconds (the bounds above keep it small).
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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
    fn windows_are_bounded_to_an_hour() {
        assert_eq!(parse_window_ahead("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_window_ahead("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_window_ahead("1h"), Ok(MAX_WINDOW));
        for too_far in [
            "1h 1ms",
            "365days",
            "100000000000000ms",
            "18446744073709551615ms",
        ] {
            let err = parse_window_ahead(too_far).expect_err(too_far);
            assert!(err.contains("above the maximum of 1h"), "{too_far}: {err}");
        }
        assert!(parse_window_ahead("0s").is_err());
        assert_eq!(parse_failover_advance("0s"), Ok(Duration::ZERO));
        assert!(parse_failover_advance("2h").is_err());
        assert!(parse_duration("3").is_err(), "a unit is required");
    }

    #[test]
    fn headroom_leaves_room_for_one_failover_and_one_window() {
        let (window, advance) = (Duration::from_secs(3), Duration::from_secs(1));
        let last = PHYSICAL_MS_MAX - 1 - 1000 - 3000;
        assert_eq!(check_headroom(last, window, advance), Ok(()));
        assert_eq!(check_headroom(0, window, advance), Ok(()));
        let err = check_headroom(last + 1, window, advance).expect_err("no room");
        assert!(err.contains(&format!(
            "largest usable high-water with these settings is {last}"
        )));
        assert!(check_headroom(PHYSICAL_MS_MAX, window, advance).is_err());
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
