//! `tsoracle-file`: look at, check, seed and export a `FileDriver` state
//! directory from the command line. Built only with the `cli` feature
//! (`cargo install tsoracle-driver-file --features cli`), so library users
//! do not compile its dependencies.
//!
//! Subcommands:
//!
//! - `inspect DIR [--json] [--now-ms MS]`: the high-water (as an integer and
//!   as a UTC time), every dense counter and the key cap, every lease with
//!   its status (`live`, `expired` when `expires_at_ms <= now`, or
//!   `superseded`), whether a process holds the directory lock, and any
//!   leftover `*.tmp` files. Reads without taking the lock and changes
//!   nothing.
//! - `verify DIR [--json]`: exit code 0 and `ok: DIR ...` when every file
//!   decodes and checks, exit code 1 and a one-line reason naming the file
//!   otherwise. For a cron job or a readiness probe.
//! - `seed DIR VALUE`: [`FileDriver::init_seeded`]; refuses existing state.
//! - `export DIR`: the whole state as JSON on stdout, for a migration to
//!   another driver.
//!
//! # The `export` JSON
//!
//! One object; the field names are stable (new fields may be added, none
//! renamed or removed without bumping `version`):
//!
//! - `format`: always `"tsoracle-file-state"`.
//! - `version`: the layout of this JSON, `1`.
//! - `high_water`: the committed high-water in physical milliseconds since
//!   the Unix epoch (0 when there is no `state` file, as a driver would
//!   load it). Carry it over as the seed of the new driver.
//! - `dense.cap`: the key-cardinality cap (10000 when there is no `dense`
//!   file).
//! - `dense.counters`: an object from each dense key to its next unissued
//!   value.
//! - `leases`: an array, in ascending `lease_id`, of objects with
//!   `lease_id`, `holder` (the holder bytes as a string when they are UTF-8,
//!   else `null`), `holder_hex` (the holder bytes in lowercase hex, always
//!   present), `holder_epoch`, `ttl_ms`, `ts_upper_bound`, `expires_at_ms`
//!   and `superseded` (a boolean).
//!
//! Every number is an unsigned 64-bit integer written exactly; consumers
//! that parse JSON numbers as doubles lose precision above 2^53 (the
//! high-water never exceeds 2^46 − 1, but counters may).
//!
//! # Exit codes
//!
//! 0 success; 1 the directory cannot be read, its state is invalid or
//! corrupt, or the request was refused (seeding over existing state, a seed
//! out of range, the lock held by a running driver); 2 usage error (unknown
//! subcommand or flag, missing argument, a value that is not a number).

use std::error::Error;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use serde_json::{Map, Value, json};
use tsoracle_core::LeaseRecord;
use tsoracle_driver_file::dense_record::DEFAULT_KEY_CAP;
use tsoracle_driver_file::{FileDriver, LOCK_FILE, StateDir, read_state_dir};

/// The field list of the `export` JSON, shared by the top-level and the
/// `export` long help.
macro_rules! export_fields {
    () => {
        "THE EXPORT JSON
  One object; field names are stable (fields may be added, none renamed or
  removed without bumping `version`):
    format          always \"tsoracle-file-state\"
    version         layout of this JSON, 1
    high_water      committed high-water, physical ms since the Unix epoch
                    (0 when there is no `state` file, as a driver loads it)
    dense.cap       key-cardinality cap (10000 when there is no `dense` file)
    dense.counters  object: dense key -> next unissued value
    leases          array in ascending lease_id of objects with:
      lease_id, holder (UTF-8 string, or null when the bytes are not UTF-8),
      holder_hex (the holder bytes in lowercase hex), holder_epoch, ttl_ms,
      ts_upper_bound, expires_at_ms, superseded (boolean)
  Numbers are exact unsigned 64-bit integers.
"
    };
}

/// The exit-code table, shared by the help texts.
macro_rules! exit_codes {
    () => {
        "EXIT CODES
  0  success
  1  the directory cannot be read, its state is invalid or corrupt, or the
     request was refused (existing state, seed out of range, lock held)
  2  usage error (unknown subcommand or flag, missing argument, a value
     that is not a number)
"
    };
}

#[derive(Debug, Parser)]
#[command(
    name = "tsoracle-file",
    version,
    about = "Inspect, verify, seed and export a tsoracle FileDriver state directory",
    long_about = concat!(
        "Inspect, verify, seed and export a tsoracle FileDriver state directory.\n\n",
        "inspect, verify and export only read: they take no lock and change nothing, ",
        "so they are safe while a driver runs on the directory.\n\n",
        exit_codes!(),
        "\n",
        export_fields!(),
    )
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the high-water, dense counters, leases, lock holder and leftover
    /// temp files, without taking the lock or changing anything
    #[command(long_about = concat!(
        "Show the high-water (integer and UTC), every dense counter and the key cap, ",
        "every lease (id, holder, epoch, ttl, upper bound, expiry, and status: live, ",
        "expired when expires_at_ms <= now, or superseded), whether a process holds ",
        "the directory lock (Linux: read from /proc/locks, never by taking the lock; ",
        "\"unknown\" elsewhere), and leftover *.tmp files.\n\n",
        "Reads without taking the lock and changes nothing.\n\n",
        exit_codes!(),
    ))]
    Inspect {
        /// The state directory
        dir: PathBuf,
        /// Print one JSON object instead of text
        #[arg(long)]
        json: bool,
        /// Judge lease expiry at this time (ms since the Unix epoch) instead
        /// of now
        #[arg(long, value_name = "MS")]
        now_ms: Option<u64>,
    },
    /// Check that every file decodes: exit 0 and `ok: DIR`, or exit 1 with a
    /// one-line reason naming the file
    #[command(long_about = concat!(
        "Check that every file of the state directory decodes and passes its checks. ",
        "Prints `ok: DIR (...)` and exits 0, or prints a one-line reason naming the ",
        "file on stderr and exits 1. For a cron job or a readiness probe.\n\n",
        "With --json, prints {\"ok\":true,\"dir\":..,\"high_water\":..,\"dense_keys\":..,",
        "\"leases\":..,\"leftover_temp_files\":..} or {\"ok\":false,\"dir\":..,\"error\":..} ",
        "on stdout (the reason still goes to stderr as well).\n\n",
        exit_codes!(),
    ))]
    Verify {
        /// The state directory
        dir: PathBuf,
        /// Print one JSON line instead of text
        #[arg(long)]
        json: bool,
    },
    /// Start a fresh state directory at a high-water, refusing existing
    /// state
    #[command(long_about = concat!(
        "Start a fresh state directory (created if missing) whose high-water is VALUE, ",
        "for an oracle that already issued timestamps under another driver: timestamps ",
        "issued afterwards are above VALUE. Refuses (exit 1) when any of state, dense, ",
        "leases exists, when a driver holds the directory, or when VALUE is above the ",
        "46-bit physical-millisecond maximum.\n\n",
        exit_codes!(),
    ))]
    Seed {
        /// The state directory
        dir: PathBuf,
        /// The high-water, physical milliseconds since the Unix epoch
        value: u64,
    },
    /// Print the whole state as JSON (see --help for the fields)
    #[command(long_about = concat!(
        "Print the whole state as JSON on stdout, so a migration to another driver ",
        "can carry the high-water, counters and leases over. Reads without taking ",
        "the lock and changes nothing.\n\n",
        export_fields!(),
        "\n",
        exit_codes!(),
    ))]
    Export {
        /// The state directory
        dir: PathBuf,
    },
}

/// A failure of a subcommand: what to print on stderr, and the exit code
/// (always 1: usage errors exit 2 from clap before any subcommand runs).
struct Failure(String);

impl Failure {
    /// The error's `Display` followed by its `source()` chain, joined with
    /// `": "`: one line that names the file and says what is wrong with it.
    fn from_error(err: &(dyn Error + 'static)) -> Self {
        Failure(error_chain(err))
    }
}

fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { dir, json, now_ms } => inspect(&dir, json, now_ms),
        Command::Verify { dir, json } => verify(&dir, json),
        Command::Seed { dir, value } => seed(&dir, value),
        Command::Export { dir } => export(&dir),
    };
    match result {
        Ok(output) => {
            let mut stdout = io::stdout().lock();
            match stdout
                .write_all(output.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                // The reader went away (`| head`): nothing left to tell.
                Err(err) if err.kind() == io::ErrorKind::BrokenPipe => ExitCode::FAILURE,
                Err(err) => {
                    let _ = writeln!(io::stderr(), "error: cannot write to stdout: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(Output { stdout, stderr }) => {
            if let Some(text) = stdout {
                let _ = io::stdout().lock().write_all(text.as_bytes());
            }
            let _ = writeln!(io::stderr(), "error: {}", stderr.0);
            ExitCode::FAILURE
        }
    }
}

/// What a failed subcommand prints: always a line on stderr, and for
/// `verify --json` also the JSON verdict on stdout.
struct Output {
    stdout: Option<String>,
    stderr: Failure,
}

impl From<Failure> for Output {
    fn from(stderr: Failure) -> Self {
        Output {
            stdout: None,
            stderr,
        }
    }
}

fn read(dir: &Path) -> Result<StateDir, Failure> {
    read_state_dir(dir).map_err(|err| Failure::from_error(&err))
}

// ---------------------------------------------------------------- inspect

fn inspect(dir: &Path, json: bool, now_ms: Option<u64>) -> Result<String, Output> {
    let state = read(dir)?;
    let now = now_ms.unwrap_or_else(now_ms_since_epoch);
    let lock = lock_status(&dir.join(LOCK_FILE), state.has_lock_file);
    if json {
        let value = inspect_json(&state, now, &lock);
        Ok(pretty(&value))
    } else {
        Ok(inspect_text(&state, now, &lock))
    }
}

fn inspect_text(state: &StateDir, now: u64, lock: &LockStatus) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("directory:   {}", state.dir.display()));
    match state.high_water {
        Some(hw) => line(format!("high-water:  {hw} ({})", utc(hw))),
        None => line("high-water:  none (no state file; a driver opening it starts at 0)".into()),
    }
    match &state.dense {
        Some(dense) => {
            line(format!(
                "dense:       {} counter(s), key cap {}",
                dense.counters.len(),
                dense.cap
            ));
            for (key, value) in &dense.counters {
                line(format!("  {} = {value}", key.as_str()));
            }
        }
        None => line(format!(
            "dense:       none (no dense file; no counters, key cap {DEFAULT_KEY_CAP})"
        )),
    }
    match &state.leases {
        Some(leases) => {
            line(format!(
                "leases:      {} lease(s), status as of {} ({now})",
                leases.len(),
                utc(now)
            ));
            for lease in leases {
                line(format!(
                    "  lease {}: holder {}, epoch {}, ttl {} ms, upper bound {}, expires {} ({}), {}",
                    lease.lease_id,
                    holder_display(&lease.holder),
                    lease.holder_epoch,
                    lease.ttl_ms,
                    lease.ts_upper_bound,
                    utc(lease.expires_at_ms),
                    lease.expires_at_ms,
                    lease_status(lease, now),
                ));
            }
        }
        None => line("leases:      none (no leases file)".into()),
    }
    line(format!("lock:        {}", lock.describe()));
    if state.leftover_temp_files.is_empty() {
        line("temp files:  none".into());
    } else {
        line(format!(
            "temp files:  {} leftover (the next open removes them)",
            state.leftover_temp_files.len()
        ));
        for temp in &state.leftover_temp_files {
            line(format!("  {}", temp.display()));
        }
    }
    out
}

fn inspect_json(state: &StateDir, now: u64, lock: &LockStatus) -> Value {
    let dense = state.dense.as_ref().map(|dense| {
        json!({
            "cap": dense.cap,
            "counters": counters_json(dense),
        })
    });
    let leases = state.leases.as_ref().map(|leases| {
        leases
            .iter()
            .map(|lease| {
                let mut value = lease_json(lease);
                if let Value::Object(map) = &mut value {
                    map.insert("expires_at_utc".into(), utc(lease.expires_at_ms).into());
                    map.insert("status".into(), lease_status(lease, now).into());
                }
                value
            })
            .collect::<Vec<_>>()
    });
    json!({
        "format": "tsoracle-file-inspect",
        "version": 1,
        "dir": state.dir.to_string_lossy(),
        "now_ms": now,
        "high_water": state.high_water,
        "high_water_utc": state.high_water.map(utc),
        "dense": dense,
        "leases": leases,
        "lock": lock.to_json(state.has_lock_file),
        "leftover_temp_files": paths_json(&state.leftover_temp_files),
    })
}

/// `superseded` wins over time: a superseded lease no longer counts
/// whatever its expiry. Otherwise expired at `now >= expires_at_ms`, as
/// `LeaseRecord::is_expired` says.
fn lease_status(lease: &LeaseRecord, now: u64) -> &'static str {
    if lease.superseded {
        "superseded"
    } else if lease.is_expired(now) {
        "expired"
    } else {
        "live"
    }
}

/// The holder as text when it is UTF-8 without control characters, else
/// `hex:` and its bytes.
fn holder_display(holder: &[u8]) -> String {
    match std::str::from_utf8(holder) {
        Ok(text) if !text.chars().any(char::is_control) => format!("{text:?}"),
        _ => format!("hex:{}", hex(holder)),
    }
}

fn now_ms_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        // A clock before 1970: every lease counts as unexpired, which errs
        // on the side of reporting it.
        .unwrap_or(0)
}

// ----------------------------------------------------------------- verify

fn verify(dir: &Path, json: bool) -> Result<String, Output> {
    match read_state_dir(dir) {
        Ok(state) => {
            let dense_keys = state.dense.as_ref().map_or(0, |d| d.counters.len());
            let leases = state.leases.as_ref().map_or(0, Vec::len);
            if json {
                let value = json!({
                    "ok": true,
                    "dir": dir.to_string_lossy(),
                    "high_water": state.high_water,
                    "dense_keys": dense_keys,
                    "leases": leases,
                    "leftover_temp_files": state.leftover_temp_files.len(),
                });
                return Ok(format!("{value}\n"));
            }
            let high_water = match state.high_water {
                Some(hw) => format!("high-water {hw}"),
                None => "no state file".to_string(),
            };
            let mut summary = format!(
                "ok: {} ({high_water}, {dense_keys} dense key(s), {leases} lease(s)",
                dir.display()
            );
            if !state.leftover_temp_files.is_empty() {
                summary.push_str(&format!(
                    ", {} leftover temp file(s)",
                    state.leftover_temp_files.len()
                ));
            }
            summary.push_str(")\n");
            Ok(summary)
        }
        Err(err) => {
            let failure = Failure::from_error(&err);
            let stdout = json.then(|| {
                let value = json!({
                    "ok": false,
                    "dir": dir.to_string_lossy(),
                    "error": failure.0,
                });
                format!("{value}\n")
            });
            Err(Output {
                stdout,
                stderr: failure,
            })
        }
    }
}

// ------------------------------------------------------------------- seed

fn seed(dir: &Path, value: u64) -> Result<String, Output> {
    FileDriver::init_seeded(dir, value).map_err(|err| Failure::from_error(&err))?;
    Ok(format!(
        "seeded {}: high-water {value} ({}); timestamps issued from it will be above this\n",
        dir.display(),
        utc(value)
    ))
}

// ----------------------------------------------------------------- export

/// The `export` document; its fields are listed in the module docs and in
/// `tsoracle-file export --help`.
fn export(dir: &Path) -> Result<String, Output> {
    let state = read(dir)?;
    let (cap, counters) = match &state.dense {
        Some(dense) => (dense.cap, counters_json(dense)),
        None => (DEFAULT_KEY_CAP, Value::Object(Map::new())),
    };
    let leases: Vec<Value> = state
        .leases
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(lease_json)
        .collect();
    let value = json!({
        "format": "tsoracle-file-state",
        "version": 1,
        "high_water": state.high_water.unwrap_or(0),
        "dense": { "cap": cap, "counters": counters },
        "leases": leases,
    });
    Ok(pretty(&value))
}

fn counters_json(dense: &tsoracle_driver_file::dense_record::DenseState) -> Value {
    Value::Object(
        dense
            .counters
            .iter()
            .map(|(key, value)| (key.as_str().to_string(), Value::from(*value)))
            .collect(),
    )
}

fn lease_json(lease: &LeaseRecord) -> Value {
    json!({
        "lease_id": lease.lease_id,
        "holder": std::str::from_utf8(&lease.holder).ok(),
        "holder_hex": hex(&lease.holder),
        "holder_epoch": lease.holder_epoch,
        "ttl_ms": lease.ttl_ms,
        "ts_upper_bound": lease.ts_upper_bound,
        "expires_at_ms": lease.expires_at_ms,
        "superseded": lease.superseded,
    })
}

fn paths_json(paths: &[PathBuf]) -> Value {
    paths
        .iter()
        .map(|path| Value::from(path.to_string_lossy().into_owned()))
        .collect()
}

fn pretty(value: &Value) -> String {
    // Serializing a `Value` to a String cannot fail: its map keys are
    // strings and a String sink does no I/O.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

// ------------------------------------------------------------------- time

/// `ms` milliseconds after the Unix epoch as ISO-8601 UTC with millisecond
/// precision, e.g. `2025-11-24T16:00:00.123Z`.
fn utc(ms: u64) -> String {
    let days = ms / 86_400_000;
    let in_day = ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    let (hour, minute) = (in_day / 3_600_000, in_day / 60_000 % 60);
    let (second, milli) = (in_day / 1000 % 60, in_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z")
}

/// The proleptic Gregorian (year, month, day) of `days` days after
/// 1970-01-01: Howard Hinnant's `civil_from_days`, restricted to
/// non-negative days (the input is unsigned, so eras never go negative).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, so leap days end each 4-year cycle.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1, [0, 365]
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

// ------------------------------------------------------------------- lock

/// Whether a process holds the directory's flock, found without taking it.
#[derive(Debug, PartialEq, Eq)]
enum LockStatus {
    /// No `LOCK` file: no driver holds the directory.
    NoLockFile,
    /// An flock is held on the `LOCK` file by these process ids (as
    /// `/proc/locks` shows them: 0 or -1 for a process outside this pid
    /// namespace).
    Held { pids: Vec<i64> },
    /// No flock is held on the `LOCK` file.
    NotHeld,
    /// Could not be told (not Linux, `/proc/locks` unreadable, ...).
    Unknown(String),
}

impl LockStatus {
    fn describe(&self) -> String {
        match self {
            LockStatus::NoLockFile => "not held (no LOCK file)".into(),
            LockStatus::Held { pids } => {
                let pids: Vec<String> = pids.iter().map(i64::to_string).collect();
                format!("held by a running process (pid {})", pids.join(", "))
            }
            LockStatus::NotHeld => "not held".into(),
            LockStatus::Unknown(why) => format!("unknown ({why})"),
        }
    }

    fn to_json(&self, has_lock_file: bool) -> Value {
        let (held, pids, detail) = match self {
            LockStatus::NoLockFile => (Some(false), Vec::new(), None),
            LockStatus::Held { pids } => (Some(true), pids.clone(), None),
            LockStatus::NotHeld => (Some(false), Vec::new(), None),
            LockStatus::Unknown(why) => (None, Vec::new(), Some(why.clone())),
        };
        json!({
            "lock_file": has_lock_file,
            "held": held,
            "holder_pids": pids,
            "detail": detail,
        })
    }
}

/// Looks the `LOCK` file up in the kernel's lock table. Never locks it,
/// not even briefly: a probe that took the lock could make a driver that
/// starts at that moment fail with `AlreadyLocked`.
fn lock_status(lock_path: &Path, has_lock_file: bool) -> LockStatus {
    if !has_lock_file {
        return LockStatus::NoLockFile;
    }
    match std::fs::metadata(lock_path) {
        Ok(meta) => platform::lock_status(&meta),
        Err(err) if err.kind() == io::ErrorKind::NotFound => LockStatus::NoLockFile,
        Err(err) => LockStatus::Unknown(format!("cannot stat {}: {err}", lock_path.display())),
    }
}

#[cfg(target_os = "linux")]
mod platform {
    use std::os::unix::fs::MetadataExt;

    use super::LockStatus;

    /// Reads `/proc/locks`, which lists every lock with the device (major
    /// and minor in hex) and inode it is on.
    pub(super) fn lock_status(meta: &std::fs::Metadata) -> LockStatus {
        match std::fs::read_to_string("/proc/locks") {
            Ok(table) => super::match_proc_locks(&table, dev_major_minor(meta.dev()), meta.ino()),
            Err(err) => LockStatus::Unknown(format!("cannot read /proc/locks: {err}")),
        }
    }

    /// glibc's `major()`/`minor()` for the `st_dev` encoding.
    fn dev_major_minor(dev: u64) -> (u64, u64) {
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        (major, minor)
    }
}

#[cfg(not(target_os = "linux"))]
mod platform {
    use super::LockStatus;

    /// Only Linux exposes held flocks without taking them.
    pub(super) fn lock_status(_meta: &std::fs::Metadata) -> LockStatus {
        LockStatus::Unknown("lock holders can only be listed on Linux".into())
    }
}

/// Finds the FLOCK entries of `/proc/locks` (`table`) on inode `ino` of
/// device `dev` (major, minor). Lines look like
/// `3: FLOCK  ADVISORY  WRITE 18484 fe:00:10010728 0 EOF`; a waiter's line
/// has `->` after the number and holds nothing. An inode that matches only
/// on another device is reported as unknown rather than guessed either way
/// (stacked filesystems may show another device than `stat` does).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn match_proc_locks(table: &str, dev: (u64, u64), ino: u64) -> LockStatus {
    let mut pids = Vec::new();
    let mut other_devices = Vec::new();
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") {
            continue; // a waiter (`->`), a POSIX/OFD lock or a lease
        }
        let Some(at) = fields.iter().position(|f| f.matches(':').count() == 2) else {
            continue;
        };
        let mut parts = fields[at].split(':');
        let (Some(major), Some(minor), Some(inode)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(major), Ok(minor), Ok(inode)) = (
            u64::from_str_radix(major, 16),
            u64::from_str_radix(minor, 16),
            inode.parse::<u64>(),
        ) else {
            continue;
        };
        if inode != ino {
            continue;
        }
        let pid = at
            .checked_sub(1)
            .and_then(|i| fields[i].parse::<i64>().ok())
            .unwrap_or(-1);
        if (major, minor) == dev {
            pids.push(pid);
        } else {
            other_devices.push(format!("{major:02x}:{minor:02x}"));
        }
    }
    if !pids.is_empty() {
        LockStatus::Held { pids }
    } else if !other_devices.is_empty() {
        LockStatus::Unknown(format!(
            "an flock on inode {ino} exists on device {}, but the LOCK file is on {:02x}:{:02x}",
            other_devices.join(", "),
            dev.0,
            dev.1
        ))
    } else {
        LockStatus::NotHeld
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_764_000_000_123), "2025-11-24T16:00:00.123Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(utc(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(utc(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        // The largest high-water a state file may hold (2^46 - 1).
        assert_eq!(utc((1 << 46) - 1), "4199-11-24T01:22:57.663Z");
    }

    #[test]
    fn civil_from_days_agrees_with_a_day_by_day_walk() {
        let (mut year, mut month, mut day) = (1970u64, 1u64, 1u64);
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        for days in 0..200_000u64 {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            let len = match month {
                2 if leap(year) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > len {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }

    #[test]
    fn utc_of_the_largest_value_does_not_overflow() {
        assert!(utc(u64::MAX).ends_with('Z'));
    }

    const TABLE: &str = "\
1: FLOCK  ADVISORY  WRITE 17926 fe:00:10018836 0 EOF
2: POSIX  ADVISORY  WRITE 500 fe:00:77 0 EOF
2: -> FLOCK  ADVISORY  WRITE 600 fe:00:77 0 EOF
3: FLOCK  ADVISORY  WRITE 18484 fe:00:10010728 0 EOF
4: FLOCK  ADVISORY  WRITE 999 00:2a:10018836 0 EOF
";

    #[test]
    fn proc_locks_match_on_device_and_inode() {
        assert_eq!(
            match_proc_locks(TABLE, (0xfe, 0), 10_010_728),
            LockStatus::Held { pids: vec![18484] }
        );
        assert_eq!(
            match_proc_locks(TABLE, (0xfe, 0), 10_018_836),
            LockStatus::Held { pids: vec![17926] }
        );
        assert_eq!(
            match_proc_locks(TABLE, (0x00, 0x2a), 10_018_836),
            LockStatus::Held { pids: vec![999] }
        );
    }

    #[test]
    fn proc_locks_ignore_waiters_posix_locks_and_other_inodes() {
        // Inode 77 has only a POSIX lock and a waiting flock.
        assert_eq!(match_proc_locks(TABLE, (0xfe, 0), 77), LockStatus::NotHeld);
        assert_eq!(match_proc_locks(TABLE, (0xfe, 0), 5), LockStatus::NotHeld);
        assert_eq!(match_proc_locks("", (0xfe, 0), 5), LockStatus::NotHeld);
    }

    #[test]
    fn proc_locks_inode_on_another_device_is_unknown() {
        assert!(matches!(
            match_proc_locks(TABLE, (0x08, 0x01), 10_010_728),
            LockStatus::Unknown(_)
        ));
    }

    #[test]
    fn holders_show_as_text_or_hex() {
        assert_eq!(holder_display(b"svc-a"), "\"svc-a\"");
        assert_eq!(holder_display(&[0xff, 0x00]), "hex:ff00");
        assert_eq!(holder_display(b"a\nb"), "hex:610a62");
    }
}
