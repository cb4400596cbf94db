//! `migrate reinstate DIR --target-never-served`: lifts the `RETIRED`
//! marker of a migration that was abandoned.
//!
//! Safe only when the oracle DIR was carried to never served anyone and
//! never will: that oracle issues values above DIR's, which DIR, serving
//! again, would issue too. To come back from an oracle that served, use
//! `migrate in` to a new directory instead.

use std::path::PathBuf;

use tsoracle_driver_file::StoppedDir;

use crate::cli::{CmdResult, Failure};

/// Arguments of `migrate reinstate`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The retired state directory
    pub(crate) dir: PathBuf,
    /// Confirms that the oracle DIR was migrated to never served any client
    /// and is gone for good
    #[arg(long, required = true)]
    pub(crate) target_never_served: bool,
}

/// Removes DIR/RETIRED under the directory's lock.
pub(crate) fn exec(args: &Args) -> CmdResult {
    let stopped = StoppedDir::lock(&args.dir).map_err(|err| Failure::from_error(&err))?;
    let note = stopped
        .retired_note()
        .map_err(|err| Failure::from_error(&err))?;
    let Some(note) = note else {
        return Err(Failure::new(format!(
            "{} is not retired (no {} marker): nothing to lift",
            args.dir.display(),
            tsoracle_driver_file::RETIRED_FILE
        )));
    };
    stopped
        .reinstate()
        .map_err(|err| Failure::from_error(&err))?;
    Ok(format!(
        "lifted the RETIRED marker of {} ({}); it can serve again\n",
        args.dir.display(),
        note.lines().next().unwrap_or("").trim()
    ))
}
