//! `seed DIR H`: [`FileDriver::init_seeded`]; refuses existing state, a
//! high-water from which no server could make progress, and (without
//! `--force`) one more than a day ahead of the clock.

use std::path::PathBuf;
use std::time::Duration;

use tsoracle_core::PHYSICAL_MS_MAX;
use tsoracle_driver_file::{FileDriver, FileDriverError};

use crate::cli::{self, CmdResult, Failure};

/// The long help of `seed` (`tsoracle-file seed --help`).
pub(crate) const LONG_ABOUT: &str = concat!(
    "Start a fresh state directory (created if missing) whose high-water is H, ",
    "for an oracle that already issued timestamps under another driver: timestamps ",
    "issued afterwards are above H. H is physical milliseconds since the Unix epoch ",
    "(the `high_water` of an export, or a timestamp's physical part), not a packed ",
    "64-bit timestamp.\n\n",
    "Refuses (exit 1) when any of state, dense, leases exists, when a driver holds ",
    "the directory, or when no server could make progress from H: H + 1 + ",
    "--failover-advance + --window-ahead must stay within the 46-bit ",
    "physical-millisecond maximum 70368744177663 (4199-11-24T01:22:57.663Z).\n\n",
    crate::cli::exit_codes!(),
);

/// Arguments of `seed`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The state directory
    pub(crate) dir: PathBuf,
    /// The high-water H: physical milliseconds since the Unix epoch (not a
    /// packed timestamp)
    #[arg(value_name = "H")]
    pub(crate) value: u64,
    /// The window ahead the server will run with: H must leave room for it
    #[arg(long, value_name = "DURATION", default_value = cli::DEFAULT_WINDOW_AHEAD, value_parser = cli::parse_window_ahead)]
    pub(crate) window_ahead: Duration,
    /// The failover advance the server will run with: H must leave room
    /// for it
    #[arg(long, value_name = "DURATION", default_value = cli::DEFAULT_FAILOVER_ADVANCE, value_parser = cli::parse_failover_advance)]
    pub(crate) failover_advance: Duration,
    /// Seed an H more than a day ahead of the clock (every timestamp the
    /// oracle issues from then on is above H, for good)
    #[arg(long)]
    pub(crate) force: bool,
}

/// How far ahead of the clock `seed` accepts an `H` without `--force`. A
/// high-water an oracle reached is at most its window (an hour, at most)
/// or a lease TTL (as much) ahead of its clock; a day also covers a
/// skewed clock. Beyond it is one digit too many, and timestamps would
/// run that far ahead of real time for good.
const MAX_AHEAD_MS: u64 = 24 * 3600 * 1000;

/// Seeds a fresh state directory.
pub(crate) fn exec(args: &Args) -> CmdResult {
    let Args { dir, value, .. } = args;
    if *value <= PHYSICAL_MS_MAX {
        cli::check_headroom(*value, args.window_ahead, args.failover_advance)
            .map_err(|why| Failure::new(format!("refusing to seed {value}: {why}")))?;
    }
    let now = cli::now_ms_since_epoch();
    if *value <= PHYSICAL_MS_MAX && *value > now.saturating_add(MAX_AHEAD_MS) && !args.force {
        return Err(Failure::new(format!(
            "refusing to seed {value} ({}): it is more than a day ahead of the clock \
             (now {}), and every timestamp the oracle issues would be above it, for good. \
             H is the high-water the old oracle reached (`export`'s `high_water`), at \
             most its window ahead of its clock: check the number; pass --force if \
             this is meant",
            cli::utc_text(*value),
            cli::utc_text(now)
        )));
    }
    FileDriver::init_seeded(dir, *value).map_err(|err| {
        let mut refusal = Failure::from_error(&err);
        // A packed timestamp is its physical milliseconds shifted left by
        // 18 logical bits: say so when that is the likely mistake.
        let physical = value >> 18;
        if matches!(err, FileDriverError::SeedOutOfRange { .. })
            && physical > 0
            && physical <= PHYSICAL_MS_MAX
        {
            refusal.message.push_str(&format!(
                "; H is physical milliseconds, not a packed timestamp (read as one, \
                 {value} has physical part {physical}, {})",
                cli::utc_text(physical)
            ));
        }
        refusal
    })?;
    Ok(format!(
        "seeded {}: high-water {value} ({}); timestamps issued from it will be above this\n",
        dir.display(),
        cli::utc_text(*value)
    ))
}

/// Creates `newdir` as a new oracle at `high_water` with `counters` and a key
/// cap of `cap`, all or nothing (`FileDriver::init_from`): what `restore` and
/// `migrate in` write once they have decided the values.
pub(crate) fn init_new_oracle<'a>(
    newdir: &std::path::Path,
    high_water: u64,
    cap: u64,
    counters: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), Failure> {
    let seed = oracle_seed(high_water, cap, counters)?;
    FileDriver::init_from(newdir, &seed).map_err(|err| Failure::from_error(&err))?;
    Ok(())
}

/// The seed of a new oracle at `high_water` with `counters` and a key cap
/// of `cap` (what `restore` writes, and `migrate in` writes pending).
pub(crate) fn oracle_seed<'a>(
    high_water: u64,
    cap: u64,
    counters: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<tsoracle_driver_file::Seed, Failure> {
    let mut seed = tsoracle_driver_file::Seed::new(high_water).with_key_cap(cap);
    for (key, next) in counters {
        // Callers checked every key when they parsed or read it.
        let key =
            tsoracle_core::SeqKey::try_new(key).map_err(|err| Failure::new(err.to_string()))?;
        seed = seed.with_counter(key, next);
    }
    Ok(seed)
}
