//! `migrate reinstate DIR --target-never-served`: lifts the `RETIRED`
//! marker of a migration that was abandoned.
//!
//! Safe only when the oracle DIR was carried to never served anyone and
//! never will: that oracle issues values above DIR's, which DIR, serving
//! again, would issue too. To come back from an oracle that served, use
//! `migrate in` to a new directory instead.
//!
//! Refused once the migration reported success (the marker holds its
//! receipt): from then on the target may serve, and nothing here can tell
//! that it did not. A migration interrupted before it succeeded (the
//! marker holds the early note) is lifted.

use std::path::PathBuf;

use tsoracle_driver_file::StoppedDir;

use super::note::Note;
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
    let marker = args.dir.join(tsoracle_driver_file::RETIRED_FILE);
    let refused = |why: String| {
        Failure::new(format!(
            "{why}: refused, the marker stays and {} must not serve again. To come back from \
             that oracle, seed a new directory from it with `tsoracle-file migrate in NEWDIR \
             --from URL --keys-from RECEIPT` (the receipt is in {}) and serve NEWDIR",
            args.dir.display(),
            marker.display()
        ))
    };
    match super::note::read_note(&note) {
        Note::Completed(recorded) => {
            return Err(refused(format!(
                "{} was migrated out to {} and that migration completed at {} ({}): the oracle \
                 there may have served since, and every value it handed out above {}'s \
                 counters would be handed out again by {}",
                args.dir.display(),
                recorded.to.join(","),
                crate::cli::utc_text(recorded.at_unix_ms),
                marker.display(),
                args.dir.display(),
                args.dir.display()
            )));
        }
        Note::Unreadable { reason } => {
            return Err(refused(format!(
                "{} was written by `migrate out`, but {reason}: it cannot be told from the \
                 receipt of a completed migration",
                marker.display()
            )));
        }
        Note::Started(_) | Note::Legacy { .. } | Note::Foreign { .. } => {}
    }
    stopped
        .reinstate()
        .map_err(|err| Failure::from_error(&err))?;
    Ok(format!(
        "lifted the RETIRED marker of {} ({}); it can serve again\n",
        args.dir.display(),
        note.lines().next().unwrap_or("").trim()
    ))
}
