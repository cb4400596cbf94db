//! `verify DIR [--json]`: exit 0 and `ok: DIR (...)` when every file
//! decodes and checks, exit 1 and a one-line reason naming the file
//! otherwise.

use std::path::PathBuf;

use serde::Serialize;
use tsoracle_driver_file::read_state_dir;

use crate::cli::{self, CmdResult, Failure};

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
}

/// Checks every file of the directory.
pub(crate) fn exec(args: &Args) -> CmdResult {
    let dir = &args.dir;
    let state = match read_state_dir(dir) {
        Ok(state) => state,
        Err(err) => {
            let failure = Failure::from_error(&err);
            if !args.json {
                return Err(failure);
            }
            let verdict = VerifyFailed {
                ok: false,
                dir: dir.to_string_lossy().into_owned(),
                error: failure.message.clone(),
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
