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
//!   `superseded`), whether a process holds the directory lock, the
//!   directory's identity (its origin id, from the extended attribute
//!   `user.tsoracle.identity`, and whether this is a copy), and any
//!   leftover `*.tmp` files. Reads without taking the lock and changes
//!   nothing.
//! - `verify DIR [--json]`: exit code 0 and `ok: DIR ...` when every file
//!   decodes and checks and the directory would serve, exit code 1 and a
//!   one-line reason naming the file otherwise (also for what every open
//!   refuses: no state, writable by group or others, a `LOCK` symlink,
//!   `RETIRED`, `SEEDING`). For a cron job or a readiness probe.
//! - `seed DIR H`:
//!   [`FileDriver::init_seeded`](tsoracle_driver_file::FileDriver::init_seeded);
//!   refuses existing state.
//! - `init DIR`: a new, empty oracle (a state file at high-water 0).
//! - `restore BACKUP NEWDIR`: a new oracle from a backup (a copied state
//!   directory or a stopped-state receipt), only with a floor or an advance
//!   for every dense counter and a high-water above what the lost oracle
//!   issued (see `commands::restore`).
//! - `export DIR [--allow-empty]`: the whole state as JSON on stdout, for
//!   a migration to another driver; refuses a directory without state
//!   unless `--allow-empty`. `export DIR --receipt`: the ecosystem's
//!   stopped-state receipt (`tsoracle.stopped-file-state` v1), taken under
//!   the lock.
//! - `serve` (feature `server`): the real `tsoracle-server` on the
//!   directory, with Prometheus metrics, `/healthz` and `/readyz` (see
//!   `commands::serve`).
//! - `migrate out DIR --to URL[,URL...]` and `migrate in NEWDIR --from
//!   URL[,URL...] --keys-from RECEIPT` (feature `migrate`): carry the state
//!   to a running oracle of any driver and back through the public client
//!   API (`migrate in` leaves NEWDIR pending; `migrate finish NEWDIR`, once
//!   every source endpoint is down, makes it servable); `migrate reinstate
//!   DIR --target-never-served` lifts the `RETIRED` marker of an abandoned
//!   migration. See `commands::migrate`.
//! - `dense add DIR KEY --floor N`, `dense cap DIR N`: offline changes to a
//!   stopped directory's dense keys, for a key a seeded directory refuses
//!   (see `commands::dense`).
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
//! - `dense.unaddressable` (only when there are such keys): keys `SeqKey`
//!   cannot hold (empty, over 128 bytes), each with its next value.
//! - `origin_id` (only when the directory has an identity): its origin id,
//!   32 hex digits, shared by every copy of this oracle.
//!
//! Every number is an unsigned 64-bit integer written exactly; consumers
//! that parse JSON numbers as doubles lose precision above 2^53 (the
//! high-water never exceeds 2^46 − 1, but counters may).
//!
//! # Exit codes
//!
//! 0 success (`serve`: stopped by SIGINT, SIGTERM or SIGHUP); 1 the directory
//! cannot be read, its state is invalid or corrupt, or the request was
//! refused (seeding over existing state, a seed from which no server could
//! make progress, an export of a directory without state, `serve` on a
//! missing or stateless directory without `--init`, the lock held by a
//! running driver), or the server stopped on an error; 2 usage error
//! (unknown subcommand or flag, missing argument, a value that is not a
//! number or a duration, a window above one hour, lease TTL bounds that
//! cannot work).
//!
//! # Layout
//!
//! `main` is the command table: it parses and dispatches; `cli` holds what
//! every subcommand shares (the failure type and exit codes, the exit-code
//! table of the help texts, printing, JSON, UTC); each subcommand is a
//! module of `commands` with its long help (`LONG_ABOUT`), its `Args`, its
//! output types (plain `Serialize` structs, so each `--json` document is a
//! type) and its `exec`; `locks` finds the lock holder in `/proc/locks`.

mod cli;
mod commands;
#[cfg(feature = "server")]
mod grpc_health;
#[cfg(feature = "server")]
mod http;
mod locks;
#[cfg(feature = "server")]
mod readiness;
#[cfg(feature = "server")]
mod sd_notify;
#[cfg(feature = "server")]
mod watched;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(feature = "server")]
use commands::serve;
use commands::{dense, export, init, inspect, migrate, restore, seed, verify};

#[derive(Debug, Parser)]
#[command(
    name = "tsoracle-file",
    version,
    about = "Serve, inspect, verify, initialize, seed, restore, export and migrate a tsoracle FileDriver state directory",
    long_about = concat!(
        "Serve, inspect, verify, initialize, seed, restore, export and migrate a tsoracle FileDriver ",
        "state directory (serve needs the `server` feature, migrate the `migrate` feature).\n\n",
        "inspect, verify and export only read: they take no lock and change nothing, ",
        "so they are safe while a driver runs on the directory.\n\n",
        cli::exit_codes!(),
        "\n",
        export::export_fields!(),
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
    #[command(long_about = inspect::LONG_ABOUT)]
    Inspect(inspect::Args),
    /// Check that every file decodes and the directory would serve: exit 0
    /// and `ok: DIR`, or exit 1 with a one-line reason naming the file
    #[command(long_about = verify::LONG_ABOUT)]
    Verify(verify::Args),
    /// Start a fresh state directory at a high-water H (physical
    /// milliseconds), refusing existing state
    #[command(long_about = seed::LONG_ABOUT)]
    Seed(seed::Args),
    /// Start a new, empty oracle (high-water 0) in a directory, refusing
    /// existing state
    #[command(long_about = init::LONG_ABOUT)]
    Init(init::Args),
    /// Create a new oracle from a backup (a copied state directory or a
    /// stopped-state receipt), above what the lost oracle handed out since
    #[command(long_about = restore::LONG_ABOUT)]
    Restore(restore::Args),
    /// Run the tsoracle server on a state directory, with metrics and
    /// health checks
    #[cfg(feature = "server")]
    #[command(long_about = serve::LONG_ABOUT)]
    Serve(Box<serve::Args>),
    /// Print the whole state as JSON (see --help for the fields)
    #[command(long_about = export::LONG_ABOUT)]
    Export(export::Args),
    /// Carry the state to a running oracle (openraft, paxos, ...) and back
    Migrate(migrate::Args),
    /// Add a dense key at a floor, or set the key cap, of a stopped
    /// directory (offline)
    Dense(dense::Args),
}

fn main() -> ExitCode {
    let parsed = Cli::parse();
    let result = match &parsed.command {
        Command::Inspect(args) => inspect::exec(args),
        Command::Verify(args) => verify::exec(args),
        Command::Seed(args) => seed::exec(args),
        Command::Init(args) => init::exec(args),
        Command::Restore(args) => restore::exec(args),
        #[cfg(feature = "server")]
        Command::Serve(args) => serve::exec(args),
        Command::Export(args) => export::exec(args),
        Command::Migrate(args) => migrate::exec(args),
        Command::Dense(args) => dense::exec(args),
    };
    cli::finish(result)
}
