//! `dense add DIR KEY --floor N` and `dense cap DIR N`: offline changes to
//! a stopped directory's dense keys, under its lock (refused while a
//! server runs on it). The remedy for a key a seeded directory refuses
//! ("dense key cardinality cap N reached"): `migrate in` and `restore`
//! seed only the keys they are told about, and a key they were not told
//! about must not start again from 0.

use std::path::PathBuf;

use tsoracle_core::SeqKey;
use tsoracle_driver_file::StoppedDir;

use crate::cli::{CmdResult, Failure};
use crate::commands::pending;

/// Arguments of `dense`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The `dense` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Add a dense key at a floor, or raise an existing counter to at least
    /// the floor (offline: refused while a server runs on DIR)
    #[command(long_about = concat!(
        "Add dense key KEY to the stopped directory DIR with next value N (--floor), or raise ",
        "its counter to at least N when it exists. The key cap rises by one only when the new ",
        "key needs it. N must be above every value the key was ever handed out elsewhere (for ",
        "a key of the source oracle of a migration: probe it there, or take the application's ",
        "highest id plus one). Takes DIR's lock: refused while a server runs on it. Works on a ",
        "pending directory too.",
    ))]
    Add(AddArgs),
    /// Set the dense key cap (offline; refused below the number of keys)
    #[command(long_about = concat!(
        "Set the dense key-cardinality cap of the stopped directory DIR to N: new keys are ",
        "accepted until DIR holds N keys. Refused below the number of keys DIR holds. A new key ",
        "starts at 0: open the set only once sure no key to come was handed out elsewhere. ",
        "Takes DIR's lock: refused while a server runs on it.",
    ))]
    Cap(CapArgs),
}

/// Arguments of `dense add`.
#[derive(Debug, clap::Args)]
pub(crate) struct AddArgs {
    /// The state directory
    pub(crate) dir: PathBuf,
    /// The dense key
    pub(crate) key: String,
    /// The key's next value: above everything it was ever handed out
    #[arg(long, value_name = "N")]
    pub(crate) floor: u64,
}

/// Arguments of `dense cap`.
#[derive(Debug, clap::Args)]
pub(crate) struct CapArgs {
    /// The state directory
    pub(crate) dir: PathBuf,
    /// The new key cap
    #[arg(value_name = "N")]
    pub(crate) cap: u64,
}

fn lock(dir: &std::path::Path) -> Result<StoppedDir, Failure> {
    StoppedDir::lock(dir).map_err(|err| Failure::from_error(&err))
}

/// Runs a `dense` subcommand.
pub(crate) fn exec(args: &Args) -> CmdResult {
    match &args.command {
        Command::Add(args) => {
            let key = SeqKey::try_new(args.key.as_str())
                .map_err(|err| Failure::new(format!("dense key {:?}: {err}", args.key)))?;
            let stopped = lock(&args.dir)?;
            let before = stopped.dense();
            let existed = before.counters.get(&key).copied();
            let stored = pending::add_counter(stopped, &key, args.floor)?;
            Ok(match existed {
                Some(old) if old >= args.floor => format!(
                    "{}: {} stays at {old} (already at or above {})\n",
                    args.dir.display(),
                    args.key,
                    args.floor
                ),
                Some(old) => format!(
                    "{}: {} raised from {old} to {stored}\n",
                    args.dir.display(),
                    args.key
                ),
                None => format!("{}: {} added at {stored}\n", args.dir.display(), args.key),
            })
        }
        Command::Cap(args) => {
            let stopped = lock(&args.dir)?;
            pending::set_key_cap(stopped, args.cap)?;
            Ok(format!(
                "{}: dense key cap set to {}\n",
                args.dir.display(),
                args.cap
            ))
        }
    }
}
