//! `migrate`: carry a state directory to a running oracle of any driver and
//! back, using only the public client API, and lift the `RETIRED` marker of
//! an abandoned migration.
//!
//! - `migrate out DIR --to URL[,URL...]` (feature `migrate`)
//! - `migrate in NEWDIR --from URL[,URL...] --keys-from RECEIPT | --key K`
//!   (feature `migrate`)
//! - `migrate reinstate DIR --target-never-served`

#[cfg(feature = "migrate")]
pub(crate) mod into;
#[cfg(feature = "migrate")]
pub(crate) mod out;
pub(crate) mod reinstate;
#[cfg(feature = "migrate")]
pub(crate) mod target;

use crate::cli::{CmdResult, Failure};

/// Arguments of `migrate`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The `migrate` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Carry a stopped state directory into a running oracle, then mark the
    /// directory RETIRED so it never serves again
    #[cfg(feature = "migrate")]
    #[command(long_about = concat!(
        "Carry a stopped state directory into a running oracle of any driver (openraft, ",
        "paxos, another file server), using only the public client API, then mark the ",
        "directory RETIRED so that no server serves it again.\n\n",
        "Holds DIR's lock throughout. Marks DIR RETIRED before touching the target. ",
        "Advances every dense counter on the target to at least DIR's value (values taken ",
        "on the way are burned); acquires DIR's live leases on the target for the same ",
        "holder, epoch and TTL; waits, with progress and at most --wait-limit (checked ",
        "before anything is changed), until the target issues timestamps above DIR's ",
        "committed high-water and lease upper bounds; writes a receipt into DIR/RETIRED ",
        "(and --receipt FILE). Re-running it is safe.\n\n",
        "Nothing may use the target before this command reports success.\n\n",
        "A target whose dense format is not activated is reported with the exact ",
        "`tsoracle admin activate-format` command to run.",
    ))]
    Out(out::Args),
    /// Seed a new state directory above everything a running oracle issued
    #[cfg(feature = "migrate")]
    #[command(long_about = concat!(
        "Seed a new state directory whose high-water is above every timestamp the running ",
        "oracle issued or may issue until it stops (--stop-within, --window-ms), and whose ",
        "dense counters are above the oracle's (each key is probed by taking, and burning, ",
        "one value; --dense-margin more are left for stragglers). Keys come from ",
        "--keys-from RECEIPT (migrate out's receipt or export --receipt) and --key.\n\n",
        "Stop the oracle before the deadline the command prints, and only then start a ",
        "server on NEWDIR.",
    ))]
    In(into::Args),
    /// Lift the RETIRED marker of a migration that was abandoned before the
    /// target served anyone
    Reinstate(reinstate::Args),
}

/// Runs a `migrate` subcommand.
pub(crate) fn exec(args: &Args) -> CmdResult {
    match &args.command {
        #[cfg(feature = "migrate")]
        Command::Out(args) => out::exec(args),
        #[cfg(feature = "migrate")]
        Command::In(args) => into::exec(args),
        Command::Reinstate(args) => reinstate::exec(args),
    }
}

/// The async runtime the gRPC client runs on.
#[cfg(feature = "migrate")]
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| Failure::new(format!("cannot start the async runtime: {err}")))
}

#[cfg(not(feature = "migrate"))]
#[allow(dead_code)]
fn _unused(_: Failure) {}
