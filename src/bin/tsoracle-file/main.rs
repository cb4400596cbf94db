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
//! `main` parses and dispatches; `cli` holds what every subcommand shares
//! (the failure type and exit codes, printing, JSON, UTC); each subcommand
//! is a module of `commands` with its `Args`, its output types (plain
//! `Serialize` structs, so each `--json` document is a type) and its
//! `exec`; `locks` finds the lock holder in `/proc/locks`.

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

/// The field list of the `export` JSON, shared by the top-level and the
/// `export` long help.
macro_rules! export_fields {
    () => {
        "THE EXPORT JSON
  One object; field names are stable (fields may be added, none renamed or
  removed without bumping `version`):
    format          always \"tsoracle-file-state\"
    version         layout of this JSON, 1
    high_water      committed high-water, physical ms since the Unix epoch
                    (0 when there is no `state` file, as a driver loads it)
    dense.cap       key-cardinality cap (10000 when there is no `dense` file)
    dense.counters  object: dense key -> next unissued value
    dense.unaddressable  object, only when present: keys SeqKey cannot
                    hold (empty, over 128 bytes) -> next unissued value
    leases          array in ascending lease_id of objects with:
      lease_id, holder (UTF-8 string, or null when the bytes are not UTF-8),
      holder_hex (the holder bytes in lowercase hex), holder_epoch, ttl_ms,
      ts_upper_bound, expires_at_ms, superseded (boolean)
    origin_id       only when the directory has an identity: its origin id
                    (32 hex digits), shared by every copy of this oracle
  Numbers are exact unsigned 64-bit integers.
"
    };
}

/// The exit-code table, shared by the help texts.
macro_rules! exit_codes {
    () => {
        "EXIT CODES
  0  success
  1  the directory cannot be read, its state is invalid or corrupt, or the
     request was refused (existing state, a seed from which no server could
     make progress, an empty export, a missing directory for serve, lock
     held), or the server stopped on an error
  2  usage error (unknown subcommand or flag, missing argument, a value
     that is not a number or a duration, a window above 1h, lease TTL
     bounds that cannot work)
"
    };
}

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
        exit_codes!(),
        "\n",
        export_fields!(),
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
    #[command(long_about = concat!(
        "Show the high-water (integer and UTC), every dense counter and the key cap, ",
        "every lease (id, holder, epoch, ttl, upper bound, expiry, and status: live, ",
        "expired when expires_at_ms <= now, or superseded), whether a process holds ",
        "the directory lock (Linux: read from /proc/locks, never by taking the lock; ",
        "\"unknown\" elsewhere), and leftover *.tmp files.\n\n",
        "Reads without taking the lock and changes nothing.\n\n",
        exit_codes!(),
    ))]
    Inspect(inspect::Args),
    /// Check that every file decodes and the directory would serve: exit 0
    /// and `ok: DIR`, or exit 1 with a one-line reason naming the file
    #[command(long_about = concat!(
        "Check that every file of the state directory decodes and passes its checks. ",
        "Prints `ok: DIR (...)` and exits 0, or prints a one-line reason naming the ",
        "file on stderr and exits 1. It also fails on what `serve` (every open) refuses: ",
        "a directory without oracle state, one its group or others may write, a `LOCK` ",
        "that is a symbolic link, a retired, seeding or pending mark (or its note). For a cron job or a ",
        "readiness probe.\n\n",
        "With --json, prints {\"ok\":true,\"dir\":..,\"high_water\":..,\"dense_keys\":..,",
        "\"leases\":..,\"leftover_temp_files\":..} or {\"ok\":false,\"dir\":..,\"error\":..} ",
        "on stdout (the reason still goes to stderr as well).\n\n",
        exit_codes!(),
    ))]
    Verify(verify::Args),
    /// Start a fresh state directory at a high-water H (physical
    /// milliseconds), refusing existing state
    #[command(long_about = concat!(
        "Start a fresh state directory (created if missing) whose high-water is H, ",
        "for an oracle that already issued timestamps under another driver: timestamps ",
        "issued afterwards are above H. H is physical milliseconds since the Unix epoch ",
        "(the `high_water` of an export, or a timestamp's physical part), not a packed ",
        "64-bit timestamp.\n\n",
        "Refuses (exit 1) when any of state, dense, leases exists, when a driver holds ",
        "the directory, or when no server could make progress from H: H + 1 + ",
        "--failover-advance + --window-ahead must stay within the 46-bit ",
        "physical-millisecond maximum 70368744177663 (4199-11-24T01:22:57.663Z).\n\n",
        exit_codes!(),
    ))]
    Seed(seed::Args),
    /// Start a new, empty oracle (high-water 0) in a directory, refusing
    /// existing state
    #[command(long_about = concat!(
        "Start a new oracle in DIR (created, with its parents, if missing): writes a ",
        "state file at high-water 0, so `serve` knows the directory is an oracle's. ",
        "serve refuses a missing or stateless directory unless it was initialized this ",
        "way (or is given --init), so a mistyped path or an unmounted volume never ",
        "silently starts a new oracle. Refuses (exit 1) existing state or a held lock.\n\n",
        exit_codes!(),
    ))]
    Init(init::Args),
    /// Create a new oracle from a backup (a copied state directory or a
    /// stopped-state receipt), above what the lost oracle handed out since
    #[command(long_about = concat!(
        "Create a new oracle in NEWDIR (which must not exist, or be empty) from BACKUP: ",
        "a copied, stopped state directory, or a stopped-state receipt (JSON, as ",
        "`tsoracle-file export --receipt` writes).\n\n",
        "A backup is older than the oracle it was taken from: serving it as it is hands ",
        "out again every dense value and timestamp issued since. So restore refuses ",
        "(exit 1, nothing written) until it is told what the backup cannot know:\n\n",
        "  dense counters: --key K=FLOOR per key (the counter becomes the larger of its ",
        "backup value and FLOOR; e.g. the application's highest id plus one), or ",
        "--dense-advance N (added to every counter of the backup); every key of the ",
        "backup must be covered by one or the other.\n\n",
        "  timestamps: --high-water-from-clock --window-ms W --lease-reach-ms L (the ",
        "high-water becomes now + W + L), or --high-water H. CLOCK CAVEAT: ",
        "--high-water-from-clock reads this machine's clock; it covers the lost oracle ",
        "only if this clock is not behind the one the lost oracle ran on. If it may be ",
        "(another machine, a clock stepped back), add the possible difference to W, or ",
        "pass --high-water. Either way the high-water is never below the backup's own ",
        "high-water or any lease upper bound in it.\n\n",
        "Leases are not carried: the high-water is above every upper bound the backup ",
        "records, and holders acquire again. NEWDIR is written all or nothing (the ",
        "seeding protocol: a crash half-way leaves a SEEDING marker every open refuses), ",
        "and gets a new origin id.\n\n",
        exit_codes!(),
    ))]
    Restore(restore::Args),
    /// Run the tsoracle server on a state directory, with metrics and
    /// health checks
    #[cfg(feature = "server")]
    #[command(long_about = concat!(
        "Run the real tsoracle-server (3.2.2) on the state directory: gRPC on --listen, ",
        "Prometheus metrics on http://--metrics-listen/metrics with /healthz (the ",
        "process serves) and /readyz (the driver is not poisoned and the server is the ",
        "serving leader; 503 otherwise). Flags and defaults follow `tsoracle serve file`; ",
        "each can also be set from the environment variable shown. Durations take a ",
        "unit: 3s, 250ms, 1m 30s.\n\n",
        "A missing directory, or one that holds no state, is refused unless --init is ",
        "given (or `tsoracle-file init DIR` was run). Once serving, prints ",
        "`tsoracle-file: serving gRPC on ADDR, metrics on http://ADDR/metrics` on stdout. ",
        "SIGINT, SIGTERM or SIGHUP stops it gracefully (in-flight calls finish, the ",
        "directory is unlocked) and it exits 0; SIGHUP reloads nothing. A stdout that ",
        "cannot be written (closed, full) is logged, never fails the stop.\n\n",
        exit_codes!(),
    ))]
    Serve(Box<serve::Args>),
    /// Print the whole state as JSON (see --help for the fields)
    #[command(long_about = concat!(
        "Print the whole state as JSON on stdout, so a migration to another driver ",
        "can carry the high-water, counters and leases over. Reads without taking ",
        "the lock and changes nothing. A directory that holds no state (no state, ",
        "dense or leases file: a mistyped path?) is refused unless --allow-empty: its ",
        "export would say high-water 0.\n\n",
        "With --receipt, prints instead the ecosystem's stopped-state receipt (schema ",
        "tsoracle.stopped-file-state version 1: the high-water, leases, dense counters ",
        "and the SHA-256 of each file), taken while holding the directory's lock, so ",
        "it is refused (exit 1) while a server runs on the directory.\n\n",
        export_fields!(),
        "\n",
        exit_codes!(),
    ))]
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
