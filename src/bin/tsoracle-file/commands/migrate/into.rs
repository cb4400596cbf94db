//! `migrate in NEWDIR --from URL[,URL...] --keys-from RECEIPT` (or `--key K`
//! repeated): the way back from a running oracle to a state directory.
//!
//! # Why nothing is handed out twice
//!
//! NEWDIR must start above everything the oracle issued *until it stops*,
//! not only until this command runs, and the client API can read neither
//! the oracle's committed high-water directly nor a dense counter without
//! taking from it. So:
//!
//! - Timestamps: the oracle never issues a timestamp above its committed
//!   high-water, which it moves to at most `now + window` as its clock
//!   advances. `GetCurrentMaxSafe` gives the leader's committed high-water
//!   minus its window, so at the command's time `T` the high-water is
//!   `max_safe + window + 1`. Until the oracle stops, at the latest at
//!   `T + stop_within`, it issues nothing above
//!   `max(max_safe + window + 1, T + stop_within + window)`, plus the
//!   failover advance should a new leader take over meanwhile: NEWDIR's
//!   high-water is that. A lease acquired meanwhile commits its upper bound
//!   further ahead: each acquisition asks `max(HW + 1, now) + ttl`, so
//!   acquisitions stack one TTL each (a renewal on tsoracle-server 3.3 only
//!   reaches `now + ttl`): `--lease-reach-ms` replaces the window in the
//!   second term when clients use leases, and must cover every acquisition
//!   the oracle may still grant before it stops. A server on NEWDIR issues only above its
//!   high-water.
//! - Dense: each key is probed by taking one value `s` (burned: this tool is
//!   its only recipient); the oracle has handed out nothing at or above
//!   `s + 1` yet. NEWDIR's counter is `s + 1 + dense_margin`: a straggling
//!   client may still take up to `dense_margin` values per key from the
//!   oracle before it stops, all below NEWDIR's counter. (Reserving those
//!   values on the oracle instead would make a straggler get values *above*
//!   them, the very ones NEWDIR starts from.)
//! - Keys the command is not told about start at 0 in NEWDIR: name every
//!   key the oracle ever served (`--keys-from` the `migrate out` receipt,
//!   plus `--key` for keys created since).
//!
//! The operator stops the oracle before `T + stop_within` and starts
//! NEWDIR's server only after that; the command prints the deadline.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use tsoracle_core::SeqKey;
use tsoracle_driver_file::dense_record::DEFAULT_KEY_CAP;
use tsoracle_driver_file::receipt::{RECEIPT_SCHEMA, StoppedStateReceipt};

use super::out::{MIGRATE_OUT_SCHEMA, MigrateOutReceipt};
use super::target::{Target, now_ms};
use crate::cli::{self, CmdResult, Failure};

/// Arguments of `migrate in`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The new state directory (must not hold state)
    pub(crate) newdir: PathBuf,
    /// The running oracle's gRPC endpoints, comma-separated
    #[arg(
        long,
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        required = true
    )]
    pub(crate) from: Vec<String>,
    /// Take the dense keys (and their floors) from a receipt: `migrate out`'s
    /// or a stopped-state receipt (`export --receipt`); may be repeated
    #[arg(long, value_name = "RECEIPT")]
    pub(crate) keys_from: Vec<PathBuf>,
    /// A dense key to carry; may be repeated
    #[arg(long = "key", value_name = "K")]
    pub(crate) keys: Vec<String>,
    /// The oracle's window ahead (`tsoracle serve --window-ahead`) in ms;
    /// must be at least the real one
    #[arg(long, value_name = "MS", default_value_t = 3_000)]
    pub(crate) window_ms: u64,
    /// How far a new leader advances the high-water when it takes over
    /// (`tsoracle serve --failover-advance`) in ms; covers one failover
    /// before the oracle stops
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    pub(crate) failover_advance_ms: u64,
    /// How far ahead of its clock the oracle may commit a lease's upper
    /// bound before it stops: the longest lease TTL in use times the number
    /// of acquisitions it may still grant (they stack one TTL each); 0 when
    /// no client touches leases
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub(crate) lease_reach_ms: u64,
    /// The oracle will be stopped within this many seconds of the command
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub(crate) stop_within: u64,
    /// Values per key a straggling client may still take from the oracle
    /// before it stops; NEWDIR starts that far above what was seen
    #[arg(long, value_name = "N", default_value_t = u64::from(tsoracle_core::DEFAULT_MAX_SEQ_COUNT))]
    pub(crate) dense_margin: u64,
    /// Print the plan as JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// What `migrate in` seeded, and the deadline it depends on.
#[derive(Debug, Serialize)]
pub(crate) struct MigrateInReport {
    pub(crate) newdir: String,
    pub(crate) from: Vec<String>,
    /// The command's time on this machine.
    pub(crate) at_unix_ms: u64,
    /// The oracle must be stopped before this (Unix ms, this machine).
    pub(crate) stop_oracle_before_unix_ms: u64,
    /// A timestamp seen from the oracle, its physical part, and the
    /// leader's committed high-water derived from its max-safe.
    pub(crate) observed_timestamp: u64,
    pub(crate) observed_physical_ms: u64,
    pub(crate) oracle_high_water_physical_ms: u64,
    /// NEWDIR's high-water.
    pub(crate) high_water: u64,
    /// Per key: the probe's value and NEWDIR's next value.
    pub(crate) dense: Vec<DenseSeeded>,
    pub(crate) dense_cardinality_cap: u64,
}

/// One key as `migrate in` seeded it.
#[derive(Debug, Serialize)]
pub(crate) struct DenseSeeded {
    pub(crate) key: String,
    /// The value the probe took from the oracle (burned).
    pub(crate) oracle_probe: u64,
    /// NEWDIR's next unallocated value.
    pub(crate) next: u64,
}

/// Keys and floors from the receipts and `--key`, and the largest cap.
fn keys(args: &Args) -> Result<(BTreeMap<String, u64>, u64, u64), Failure> {
    let mut keys = BTreeMap::new();
    let mut cap = DEFAULT_KEY_CAP;
    let mut high_water = 0;
    for path in &args.keys_from {
        let text = std::fs::read_to_string(path)
            .map_err(|err| Failure::new(format!("cannot read {}: {err}", path.display())))?;
        let bad = |err: serde_json::Error| {
            Failure::new(format!("{} is not a receipt: {err}", path.display()))
        };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
        let source: StoppedStateReceipt = match value.get("schema").and_then(|s| s.as_str()) {
            Some(RECEIPT_SCHEMA) => serde_json::from_value(value).map_err(bad)?,
            Some(MIGRATE_OUT_SCHEMA) => {
                serde_json::from_value::<MigrateOutReceipt>(value)
                    .map_err(bad)?
                    .source
            }
            other => {
                return Err(Failure::new(format!(
                    "{} is not a receipt this command reads (schema {other:?}; expected {RECEIPT_SCHEMA:?} or {MIGRATE_OUT_SCHEMA:?})",
                    path.display()
                )));
            }
        };
        for (key, next) in source.dense_next_unallocated {
            let floor = keys.entry(key).or_insert(0);
            *floor = next.max(*floor);
        }
        cap = cap.max(source.dense_cardinality_cap);
        high_water = high_water.max(source.committed_reservation_high_water_physical_ms);
    }
    for key in &args.keys {
        keys.entry(key.clone()).or_insert(0);
    }
    for key in keys.keys() {
        SeqKey::try_new(key.as_str())
            .map_err(|err| Failure::new(format!("dense key {key:?}: {err}")))?;
    }
    Ok((keys, cap, high_water))
}

/// Seeds NEWDIR above everything the oracle issued and may still issue.
pub(crate) fn exec(args: &Args) -> CmdResult {
    let (keys, cap, receipt_high_water) = keys(args)?;
    let runtime = super::runtime()?;
    let report = runtime.block_on(plan(args, &keys, cap, receipt_high_water))?;

    crate::commands::seed::init_new_oracle(
        &args.newdir,
        report.high_water,
        report.dense_cardinality_cap,
        report
            .dense
            .iter()
            .map(|entry| (entry.key.as_str(), entry.next)),
    )?;

    if args.json {
        return Ok(cli::json_pretty(&report));
    }
    let mut out = format!(
        "seeded {}: high-water {} ({}), {} dense key(s), key cap {}\n",
        report.newdir,
        report.high_water,
        cli::utc_text(report.high_water),
        report.dense.len(),
        report.dense_cardinality_cap
    );
    for entry in &report.dense {
        out.push_str(&format!(
            "  {} = {} (the oracle was at {})\n",
            entry.key, entry.next, entry.oracle_probe
        ));
    }
    out.push_str(&format!(
        "now STOP the oracle at {} before {} (--stop-within {} s), and only then start a server on {}.\n\
         Keys not listed above start at 0 in {}: if the oracle ever served another key, remove {} and run again with --key.\n",
        report.from.join(","),
        cli::utc_text(report.stop_oracle_before_unix_ms),
        args.stop_within,
        report.newdir,
        report.newdir,
        report.newdir,
    ));
    Ok(out)
}

async fn plan(
    args: &Args,
    keys: &BTreeMap<String, u64>,
    cap: u64,
    receipt_high_water: u64,
) -> Result<MigrateInReport, Failure> {
    let target = Target::connect(&args.from, None).await?;
    let at = now_ms();
    let observed = target.timestamp().await?;
    // Max-safe is answered by the leader only (followers say 0); the
    // timestamp call above taught the client who leads.
    let mut max_safe = 0;
    for _ in 0..10 {
        max_safe = target
            .client
            .get_current_max_safe()
            .await
            .map(|safe| safe.max_safe_physical_ms)
            .unwrap_or(0);
        if max_safe > 0 {
            break;
        }
        target.timestamp().await?;
    }
    if max_safe == 0 {
        return Err(Failure::new(format!(
            "the oracle at {} did not say its committed high-water (GetCurrentMaxSafe answered 0 ten times)",
            target.endpoints.join(",")
        )));
    }
    // Saturating: absurd flag values end as a seed out of range (refused
    // by init_from), never as an overflow.
    let oracle_high_water = max_safe.saturating_add(args.window_ms).saturating_add(1);
    if observed.physical_ms() > oracle_high_water {
        return Err(Failure::new(format!(
            "the oracle issued physical {} ms, above the high-water {oracle_high_water} derived with \
             --window-ms {}: its window ahead is larger; pass it with --window-ms",
            observed.physical_ms(),
            args.window_ms
        )));
    }
    let stop_before = at.saturating_add(args.stop_within.saturating_mul(1_000));
    let high_water = oracle_high_water
        .max(stop_before.saturating_add(args.window_ms.max(args.lease_reach_ms)))
        .max(receipt_high_water)
        .saturating_add(args.failover_advance_ms);

    let mut chunk = 1;
    let mut dense = Vec::with_capacity(keys.len());
    for (key, floor) in keys {
        let probe = target.advance_to(key, 0, &mut chunk).await?.probe;
        let next = probe
            .saturating_add(1)
            .saturating_add(args.dense_margin)
            .max(*floor);
        dense.push(DenseSeeded {
            key: key.clone(),
            oracle_probe: probe,
            next,
        });
    }
    let cap = cap.max(dense.len() as u64);
    Ok(MigrateInReport {
        newdir: args.newdir.display().to_string(),
        from: target.endpoints.clone(),
        at_unix_ms: at,
        stop_oracle_before_unix_ms: stop_before,
        observed_timestamp: observed.0,
        observed_physical_ms: observed.physical_ms(),
        oracle_high_water_physical_ms: oracle_high_water,
        high_water,
        dense,
        dense_cardinality_cap: cap,
    })
}
