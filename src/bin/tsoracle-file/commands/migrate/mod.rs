//! `migrate`: carry a state directory to a running oracle of any driver and
//! back, using only the public client API, and lift the `RETIRED` marker of
//! an abandoned migration.
//!
//! - `migrate out DIR --to URL[,URL...]` (feature `migrate`)
//! - `migrate in NEWDIR --from URL[,URL...] --keys-from RECEIPT | --key K`
//!   (feature `migrate`): writes NEWDIR pending
//! - `migrate finish NEWDIR` (feature `migrate`): once the source stopped,
//!   makes NEWDIR servable
//! - `migrate reinstate DIR --target-never-served`

#[cfg(feature = "migrate")]
pub(crate) mod finish;
#[cfg(feature = "migrate")]
pub(crate) mod into;
pub(crate) mod note;
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
    #[command(long_about = out::LONG_ABOUT)]
    Out(out::Args),
    /// Observe a running oracle and write a new state directory PENDING,
    /// to be finished by `migrate finish` once the oracle is stopped
    #[cfg(feature = "migrate")]
    #[command(long_about = into::LONG_ABOUT)]
    In(into::Args),
    /// Make a pending directory from `migrate in` servable, once every
    /// endpoint of the source oracle has stopped answering
    #[cfg(feature = "migrate")]
    #[command(long_about = finish::LONG_ABOUT)]
    Finish(finish::Args),
    /// Carry a stopped state directory into a running oracle (not in this
    /// build: needs feature `migrate`)
    #[cfg(not(feature = "migrate"))]
    Out(NotBuilt),
    /// Observe a running oracle and write a new state directory pending
    /// (not in this build: needs feature `migrate`)
    #[cfg(not(feature = "migrate"))]
    In(NotBuilt),
    /// Make a pending directory servable once the source stopped (not in
    /// this build: needs feature `migrate`)
    #[cfg(not(feature = "migrate"))]
    Finish(NotBuilt),
    /// Lift the RETIRED marker of a migration that was abandoned before the
    /// target served anyone (refused once the migration reported success)
    Reinstate(reinstate::Args),
}

/// `migrate out`, `in` and `finish` in a build without feature `migrate`:
/// any arguments are accepted, and the command says how to get them,
/// rather than "unrecognized subcommand" while `--help` and the `RETIRED`
/// message recommend them.
#[cfg(not(feature = "migrate"))]
#[derive(Debug, clap::Args)]
pub(crate) struct NotBuilt {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 0..,
        hide = true
    )]
    rest: Vec<std::ffi::OsString>,
}

/// The refusal of `migrate WHICH` in a build without feature `migrate`.
#[cfg(not(feature = "migrate"))]
fn not_built(which: &str) -> Failure {
    Failure {
        code: crate::cli::EXIT_USAGE,
        ..Failure::new(format!(
            "`migrate {which}` is not in this build of tsoracle-file: it needs the \
             `migrate` feature (the gRPC client). Install with `cargo install \
             tsoracle-driver-file --features migrate` (or `--features server,migrate` to \
             keep `serve`), or from a clone `cargo build --features migrate --bin \
             tsoracle-file`"
        ))
    }
}

/// Runs a `migrate` subcommand.
pub(crate) fn exec(args: &Args) -> CmdResult {
    match &args.command {
        #[cfg(feature = "migrate")]
        Command::Out(args) => out::exec(args),
        #[cfg(feature = "migrate")]
        Command::In(args) => into::exec(args),
        #[cfg(feature = "migrate")]
        Command::Finish(args) => finish::exec(args),
        #[cfg(not(feature = "migrate"))]
        Command::Out(_) => Err(not_built("out")),
        #[cfg(not(feature = "migrate"))]
        Command::In(_) => Err(not_built("in")),
        #[cfg(not(feature = "migrate"))]
        Command::Finish(_) => Err(not_built("finish")),
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

#[cfg(all(test, not(feature = "migrate")))]
mod tests {
    use clap::Parser;

    /// `migrate out`/`in`/`finish` parse, with any arguments, and refuse naming the
    /// feature, with a usage exit code.
    #[test]
    fn migrate_without_the_feature_names_it() {
        #[derive(Debug, clap::Parser)]
        struct Top {
            #[command(subcommand)]
            command: super::Command,
        }
        for (which, args) in [
            (
                "out",
                vec!["x", "out", "/var/lib/tsoracle", "--to", "http://h:1"],
            ),
            (
                "in",
                vec!["x", "in", "/new", "--from", "http://h:1", "--key", "k"],
            ),
            ("finish", vec!["x", "finish", "/new"]),
        ] {
            let top = Top::try_parse_from(args).expect("parses");
            let failure = super::exec(&super::Args {
                command: top.command,
            })
            .expect_err("refused");
            assert_eq!(failure.code, crate::cli::EXIT_USAGE);
            assert!(
                failure
                    .message
                    .contains(&format!("`migrate {which}` is not in this build")),
                "{}",
                failure.message
            );
            assert!(
                failure.message.contains("--features migrate"),
                "{}",
                failure.message
            );
        }
    }
}
