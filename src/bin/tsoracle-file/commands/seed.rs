//! `seed DIR H`: [`FileDriver::init_seeded`]; refuses existing state.

use std::path::PathBuf;

use tsoracle_driver_file::FileDriver;

use crate::cli::{self, CmdResult, Failure};

/// Arguments of `seed`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The state directory
    pub(crate) dir: PathBuf,
    /// The high-water, physical milliseconds since the Unix epoch
    pub(crate) value: u64,
}

/// Seeds a fresh state directory.
pub(crate) fn exec(args: &Args) -> CmdResult {
    let Args { dir, value } = args;
    FileDriver::init_seeded(dir, *value).map_err(|err| Failure::from_error(&err))?;
    Ok(format!(
        "seeded {}: high-water {value} ({}); timestamps issued from it will be above this\n",
        dir.display(),
        cli::utc_text(*value)
    ))
}
