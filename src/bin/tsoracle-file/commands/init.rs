//! `init DIR`: start a new, empty oracle: the explicit step `serve` wants
//! before it serves a directory that holds no state.

use std::path::PathBuf;

use tsoracle_driver_file::{FileDriver, FileDriverError};

use crate::cli::{CmdResult, Failure};

/// The long help of `init` (`tsoracle-file init --help`).
pub(crate) const LONG_ABOUT: &str = concat!(
    "Start a new oracle in DIR (created, with its parents, if missing): writes a ",
    "state file at high-water 0, so `serve` knows the directory is an oracle's. ",
    "serve refuses a missing or stateless directory unless it was initialized this ",
    "way (or is given --init), so a mistyped path or an unmounted volume never ",
    "silently starts a new oracle. Refuses (exit 1) existing state or a held lock.\n\n",
    crate::cli::exit_codes!(),
);

/// Arguments of `init`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The state directory (created, with its parents, if missing)
    pub(crate) dir: PathBuf,
}

/// Writes a `state` file at high-water 0, so the directory is known to be
/// an oracle's. Refuses a directory that already holds state.
pub(crate) fn exec(args: &Args) -> CmdResult {
    init(&args.dir).map_err(|err| match &err {
        // The library's wording is seed's; this is init.
        FileDriverError::StateExists { existing, .. } => Failure::new(format!(
            "refusing to initialize {}: {} already exists (it already holds an oracle's \
             state; `tsoracle-file inspect {}` shows it)",
            args.dir.display(),
            existing.display(),
            args.dir.display()
        )),
        _ => Failure::from_error(&err),
    })?;
    Ok(format!(
        "initialized {}: a new oracle at high-water 0; serve it with \
         `tsoracle-file serve --state-dir {}`\n",
        args.dir.display(),
        args.dir.display()
    ))
}

/// A new oracle's state directory: [`FileDriver::init_seeded`] at 0, which
/// takes the lock, refuses existing state and returns once it is durable.
pub(crate) fn init(dir: &std::path::Path) -> Result<(), tsoracle_driver_file::FileDriverError> {
    FileDriver::init_seeded(dir, 0)
}
