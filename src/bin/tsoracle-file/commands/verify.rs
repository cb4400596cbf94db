//! `verify DIR [--json]`: exit 0 and `ok: DIR (...)` when every file
//! decodes and checks and the directory would serve, exit 1 and a one-line
//! reason naming the file otherwise.
//!
//! "Would serve": besides the files, what every open (and so `serve`)
//! refuses is refused here too: a directory without oracle state, one its
//! group or others may write, a `LOCK` that is not a regular file (a
//! symbolic link), a `RETIRED` or a `SEEDING` marker. Who runs `verify` is
//! not checked (a directory `serve` would refuse to serve as another user
//! passes), since root often verifies what a service user serves.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tsoracle_driver_file::{RETIRED_FILE, SEEDING_FILE, StateDir, read_state_dir};

use crate::cli::{self, CmdResult, Failure};

/// The long help of `verify` (`tsoracle-file verify --help`).
pub(crate) const LONG_ABOUT: &str = concat!(
    "Check that every file of the state directory decodes and passes its checks. ",
    "Prints `ok: DIR (...)` and exits 0, or prints a one-line reason naming the ",
    "file on stderr and exits 1. It also fails on what `serve` (every open) refuses: ",
    "a directory without oracle state, one its group or others may write, a `LOCK` ",
    "that is a symbolic link, a retired, seeding or pending mark (or its note). For a cron job or a ",
    "readiness probe.\n\n",
    "With --json, prints {\"ok\":true,\"dir\":..,\"high_water\":..,\"dense_keys\":..,",
    "\"leases\":..,\"leftover_temp_files\":..} or {\"ok\":false,\"dir\":..,\"error\":..} ",
    "on stdout (the reason still goes to stderr as well).\n\n",
    crate::cli::exit_codes!(),
);

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The state directory
    pub(crate) dir: PathBuf,
    /// Print one JSON line instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// The `verify --json` verdict when the directory checks.
#[derive(Debug, Serialize)]
pub(crate) struct VerifyOk {
    /// Always `true`.
    pub(crate) ok: bool,
    pub(crate) dir: String,
    /// `null` when there is no `state` file.
    pub(crate) high_water: Option<u64>,
    pub(crate) dense_keys: usize,
    pub(crate) leases: usize,
    /// How many `*.tmp` files an interrupted write left.
    pub(crate) leftover_temp_files: usize,
}

/// The `verify --json` verdict when it does not.
#[derive(Debug, Serialize)]
pub(crate) struct VerifyFailed {
    /// Always `false`.
    pub(crate) ok: bool,
    pub(crate) dir: String,
    /// The reason, as printed on stderr.
    pub(crate) error: String,
    /// What to do about it, as printed on stderr's `hint:` line (absent
    /// when there is none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hint: Option<String>,
}

/// Checks every file of the directory.
pub(crate) fn exec(args: &Args) -> CmdResult {
    let dir = &args.dir;
    let state = match read_state_dir(dir)
        .map_err(|err| Failure::from_error(&err))
        .and_then(|state| would_serve(dir, &state).map(|()| state))
    {
        Ok(state) => state,
        Err(failure) => {
            if !args.json {
                return Err(failure);
            }
            let verdict = VerifyFailed {
                ok: false,
                dir: dir.to_string_lossy().into_owned(),
                error: failure.message.clone(),
                hint: failure.hint.clone(),
            };
            return Err(failure.with_stdout(cli::json_line(&verdict)));
        }
    };
    let dense_keys = state.dense.as_ref().map_or(0, |d| d.counters.len());
    let leases = state.leases.as_ref().map_or(0, Vec::len);
    if args.json {
        return Ok(cli::json_line(&VerifyOk {
            ok: true,
            dir: dir.to_string_lossy().into_owned(),
            high_water: state.high_water,
            dense_keys,
            leases,
            leftover_temp_files: state.leftover_temp_files.len(),
        }));
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

/// Refuses what [`read_state_dir`] reads but no open would serve.
fn would_serve(dir: &Path, state: &StateDir) -> Result<(), Failure> {
    let refuse = |why: String| Err(Failure::new(why));
    if state.seeding {
        return refuse(format!(
            "state directory {} was not completely seeded (marker {} left by an \
             interrupted seed); every open refuses it: remove the directory and seed it again",
            dir.display(),
            dir.join(SEEDING_FILE).display()
        ));
    }
    if state.pending {
        return refuse(format!(
            "state directory {} is pending a migration (seeded by `migrate in`); every open \
             refuses it until `tsoracle-file migrate finish {}` proves the source stopped",
            dir.display(),
            dir.display()
        ));
    }
    if state.retired {
        let note = std::fs::read_to_string(dir.join(RETIRED_FILE)).unwrap_or_default();
        let note = note.lines().next().unwrap_or("").trim();
        return refuse(format!(
            "state directory {} is retired (marker {}{}): its state was carried to another \
             oracle, and every open refuses it",
            dir.display(),
            dir.join(RETIRED_FILE).display(),
            if note.is_empty() {
                String::new()
            } else {
                format!(": {note}")
            }
        ));
    }
    if state.high_water.is_none() && state.dense.is_none() && state.leases.is_none() {
        return refuse(format!(
            "state directory {} holds no oracle state (no state, dense or leases file): \
             `serve` refuses it, since serving it would start a new oracle at high-water 0; \
             `tsoracle-file init` makes a new one",
            dir.display()
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)
            .map_err(|err| Failure::new(format!("cannot read {}: {err}", dir.display())))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o022 != 0 {
            return refuse(format!(
                "state directory {} may be written by its group or others (mode {mode:04o}); \
                 every open refuses it: `chmod go-w {}`",
                dir.display(),
                dir.display()
            ));
        }
    }
    let lock = dir.join("LOCK");
    match std::fs::symlink_metadata(&lock) {
        Ok(meta) if meta.file_type().is_symlink() => refuse(format!(
            "{} is a symbolic link: nothing inside a state directory is followed through \
             one, and every open refuses it",
            lock.display()
        )),
        Ok(meta) if !meta.is_file() => refuse(format!(
            "{} is not a regular file; every open refuses it",
            lock.display()
        )),
        _ => Ok(()),
    }
}
