//! `restore BACKUP NEWDIR`: a new oracle from a backup, above everything the
//! lost oracle could have handed out since the backup was taken.
//!
//! # Why it asks for answers
//!
//! A backup (a copied stopped state directory, or a stopped-state receipt)
//! is older than the oracle it was taken from: every dense value and every
//! timestamp that oracle handed out after the backup is unknown to it.
//! Serving the backup as it is hands those values out again. The backup
//! cannot know how far the oracle went, so the command refuses until the
//! operator says:
//!
//! - for the dense counters, a floor per key (`--key K=FLOOR`, e.g. the
//!   application's own highest id plus one) or an advance applied to every
//!   counter (`--dense-advance N`); every key the backup holds must be
//!   covered, and a counter becomes the largest of its backup value, its
//!   floor and its backup value plus the advance;
//! - for timestamps, a high-water above anything the lost oracle issued:
//!   `--high-water-from-clock --window-ms W --lease-reach-ms L` (now + W +
//!   L, on this machine's clock) or `--high-water H`. Either way it is
//!   never below the backup's own high-water or any lease upper bound in
//!   the backup.
//!
//! Leases are not carried: the new high-water is above every upper bound
//! the backup records, so a timestamp the lost oracle promised a holder is
//! below anything the new one issues; holders acquire again.
//!
//! NEWDIR must not exist or be empty, and is written all or nothing with
//! [`FileDriver::init_from`](tsoracle_driver_file::FileDriver::init_from) (the seeding protocol): a crash half-way
//! leaves a `SEEDING` marker every open refuses. The new oracle gets a new
//! origin id: it is not a copy of the backup's oracle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tsoracle_core::{PHYSICAL_MS_MAX, SeqKey};
use tsoracle_driver_file::receipt::{RECEIPT_SCHEMA, StoppedStateReceipt};

use crate::cli::{self, CmdResult, Failure};

/// The long help of `restore` (`tsoracle-file restore --help`).
pub(crate) const LONG_ABOUT: &str = concat!(
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
    crate::cli::exit_codes!(),
);

/// Arguments of `restore`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The backup: a copied (stopped) state directory, or a stopped-state
    /// receipt JSON file as `tsoracle-file export --receipt` writes
    pub(crate) backup: PathBuf,
    /// The new state directory: must not exist, or be empty
    pub(crate) newdir: PathBuf,
    /// A floor for dense key K: its counter becomes at least FLOOR (the
    /// next value handed out), e.g. the application's highest id plus one;
    /// may be repeated, and may name a key the backup does not hold
    #[arg(long = "key", value_name = "K=FLOOR", value_parser = parse_key_floor)]
    pub(crate) keys: Vec<(String, u64)>,
    /// Advance every dense counter of the backup by N: at least the number
    /// of values any key may have handed out since the backup was taken
    #[arg(long, value_name = "N")]
    pub(crate) dense_advance: Option<u64>,
    /// The new high-water, physical milliseconds since the Unix epoch:
    /// above every timestamp the lost oracle issued
    #[arg(long, value_name = "H", conflicts_with = "high_water_from_clock")]
    pub(crate) high_water: Option<u64>,
    /// Take the new high-water from this machine's clock: now plus
    /// --window-ms plus --lease-reach-ms. Sound only if this clock is not
    /// behind the lost oracle's clock: if it may be, add the difference to
    /// --window-ms (or pass --high-water)
    #[arg(long, requires_all = ["window_ms", "lease_reach_ms"])]
    pub(crate) high_water_from_clock: bool,
    /// The lost oracle's window ahead in ms (at least the real one)
    #[arg(long, value_name = "MS", requires = "high_water_from_clock")]
    pub(crate) window_ms: Option<u64>,
    /// How far ahead of its clock the lost oracle may have committed a
    /// lease upper bound, in ms (its longest lease TTL times the
    /// acquisitions that could stack); 0 when no client used leases
    #[arg(long, value_name = "MS", requires = "high_water_from_clock")]
    pub(crate) lease_reach_ms: Option<u64>,
    /// Print the report as JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// `K=FLOOR`.
fn parse_key_floor(text: &str) -> Result<(String, u64), String> {
    let (key, floor) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not K=FLOOR"))?;
    SeqKey::try_new(key).map_err(|err| format!("dense key {key:?}: {err}"))?;
    let floor = floor
        .parse::<u64>()
        .map_err(|err| format!("floor {floor:?} of key {key:?}: {err}"))?;
    Ok((key.to_string(), floor))
}

/// What the backup holds, whichever form it came in.
struct Backup {
    high_water: u64,
    max_lease_upper_bound: Option<u64>,
    leases: usize,
    counters: BTreeMap<String, u64>,
    cap: u64,
}

/// What `restore` seeded.
#[derive(Debug, Serialize)]
pub(crate) struct RestoreReport {
    pub(crate) backup: String,
    pub(crate) newdir: String,
    /// The backup's high-water and largest lease upper bound.
    pub(crate) backup_high_water: u64,
    pub(crate) backup_max_lease_upper_bound: Option<u64>,
    /// Leases in the backup, none of which is carried.
    pub(crate) backup_leases_dropped: usize,
    /// NEWDIR's high-water.
    pub(crate) high_water: u64,
    /// Per key: the backup's value and NEWDIR's next value.
    pub(crate) dense: Vec<DenseRestored>,
    pub(crate) dense_cardinality_cap: u64,
}

/// One key as `restore` seeded it.
#[derive(Debug, Serialize)]
pub(crate) struct DenseRestored {
    pub(crate) key: String,
    /// The backup's next value (`null`: a key the backup does not hold).
    pub(crate) backup: Option<u64>,
    /// NEWDIR's next unallocated value.
    pub(crate) next: u64,
}

const WHY: &str = "a backup is older than the oracle it was taken from: every dense value and \
                   timestamp handed out since would be handed out again";

fn read_backup(path: &Path) -> Result<Backup, Failure> {
    let meta = std::fs::metadata(path)
        .map_err(|err| Failure::new(format!("cannot read backup {}: {err}", path.display())))?;
    if meta.is_dir() {
        let state = cli::read(path)?;
        if state.seeding {
            return Err(Failure::new(format!(
                "backup {} carries a SEEDING marker: it is an interrupted seed, not a backup",
                path.display()
            )));
        }
        if state.retired || state.pending {
            // Restoring either would start an oracle that the migration's
            // protocol keeps from serving: a retired directory's state lives
            // on in another oracle, a pending one's source may still serve.
            return Err(Failure::new(format!(
                "backup {} is {}: restoring it would start a second oracle from state that {}; refused",
                path.display(),
                if state.retired {
                    "retired (migrated out)"
                } else {
                    "pending a migration"
                },
                if state.retired {
                    "another oracle now serves"
                } else {
                    "`tsoracle-file migrate finish` has not yet proven safe"
                }
            )));
        }
        if state.high_water.is_none() && state.dense.is_none() && state.leases.is_none() {
            return Err(Failure::new(format!(
                "backup {} holds no oracle state (no state, dense or leases file): a mistyped path?",
                path.display()
            )));
        }
        let dense = state.dense.unwrap_or_default();
        let leases = state.leases.unwrap_or_default();
        Ok(Backup {
            high_water: state.high_water.unwrap_or(0),
            max_lease_upper_bound: leases.iter().map(|lease| lease.ts_upper_bound).max(),
            leases: leases.len(),
            counters: dense
                .counters
                .iter()
                .map(|(key, next)| (key.as_str().to_string(), *next))
                .collect(),
            cap: dense.cap,
        })
    } else {
        let text = std::fs::read_to_string(path)
            .map_err(|err| Failure::new(format!("cannot read backup {}: {err}", path.display())))?;
        let bad = |err: serde_json::Error| {
            Failure::new(format!(
                "backup {} is neither a state directory nor a stopped-state receipt: {err}",
                path.display()
            ))
        };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
        let schema = value.get("schema").and_then(|s| s.as_str());
        if schema != Some(RECEIPT_SCHEMA) {
            return Err(Failure::new(format!(
                "backup {} is not a stopped-state receipt (schema {schema:?}; expected {RECEIPT_SCHEMA:?})",
                path.display()
            )));
        }
        let receipt: StoppedStateReceipt = serde_json::from_value(value).map_err(bad)?;
        for key in receipt.dense_next_unallocated.keys() {
            SeqKey::try_new(key.as_str()).map_err(|err| {
                Failure::new(format!(
                    "backup {}: dense key {key:?}: {err}",
                    path.display()
                ))
            })?;
        }
        Ok(Backup {
            high_water: receipt.committed_reservation_high_water_physical_ms,
            max_lease_upper_bound: receipt
                .leases
                .iter()
                .map(|lease| lease.ts_upper_bound_physical_ms)
                .chain(receipt.maximum_lease_upper_bound_physical_ms)
                .max(),
            leases: receipt.leases.len(),
            counters: receipt.dense_next_unallocated,
            cap: receipt.dense_cardinality_cap,
        })
    }
}

/// NEWDIR must not exist, or be an empty directory.
fn check_newdir(newdir: &Path) -> Result<(), Failure> {
    match std::fs::symlink_metadata(newdir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Failure::new(format!(
            "cannot read {}: {err}",
            newdir.display()
        ))),
        Ok(meta) if !meta.is_dir() => Err(Failure::new(format!(
            "refusing to restore into {}: it exists and is not a directory",
            newdir.display()
        ))),
        Ok(_) => {
            let mut entries = std::fs::read_dir(newdir)
                .map_err(|err| Failure::new(format!("cannot read {}: {err}", newdir.display())))?;
            match entries.next() {
                None => Ok(()),
                Some(entry) => Err(Failure::new(format!(
                    "refusing to restore into {}: it is not empty (it holds {:?}); restore \
                     creates a new oracle, in a directory that does not exist or is empty",
                    newdir.display(),
                    entry
                        .map(|entry| entry.file_name().to_string_lossy().into_owned())
                        .unwrap_or_default()
                ))),
            }
        }
    }
}

/// The plan: every check, before anything is written.
fn plan(args: &Args, backup: &Backup) -> Result<RestoreReport, Failure> {
    let high_water = plan_high_water(args, backup)?;
    let dense = plan_dense(args, backup)?;
    Ok(RestoreReport {
        backup: args.backup.display().to_string(),
        newdir: args.newdir.display().to_string(),
        backup_high_water: backup.high_water,
        backup_max_lease_upper_bound: backup.max_lease_upper_bound,
        backup_leases_dropped: backup.leases,
        high_water,
        dense_cardinality_cap: backup.cap.max(dense.len() as u64),
        dense,
    })
}

/// The new high-water: the answer (--high-water, or the clock plus the
/// window and lease reach), never below the backup's high-water and lease
/// upper bounds, and one a server can make progress from.
fn plan_high_water(args: &Args, backup: &Backup) -> Result<u64, Failure> {
    let answer = match (args.high_water, args.high_water_from_clock) {
        (Some(h), _) => h,
        (None, true) => cli::now_ms_since_epoch()
            .saturating_add(args.window_ms.unwrap_or(0))
            .saturating_add(args.lease_reach_ms.unwrap_or(0)),
        (None, false) => {
            return Err(Failure::new(format!(
                "refusing to restore without a high-water: {WHY}. Pass \
                 --high-water-from-clock --window-ms W --lease-reach-ms L (now + the lost \
                 oracle's window + its lease reach) or --high-water H above every timestamp \
                 it issued"
            )));
        }
    };
    let high_water = answer
        .max(backup.high_water)
        .max(backup.max_lease_upper_bound.unwrap_or(0));
    if high_water > PHYSICAL_MS_MAX {
        return Err(Failure::new(format!(
            "refusing to restore at high-water {high_water}: above the 46-bit \
             physical-millisecond maximum {PHYSICAL_MS_MAX}"
        )));
    }
    let window = cli::parse_window_ahead(cli::DEFAULT_WINDOW_AHEAD).map_err(Failure::new)?;
    let failover =
        cli::parse_failover_advance(cli::DEFAULT_FAILOVER_ADVANCE).map_err(Failure::new)?;
    cli::check_headroom(high_water, window, failover)
        .map_err(|why| Failure::new(format!("refusing to restore at {high_water}: {why}")))?;
    Ok(high_water)
}

/// Every dense counter: the backup's keys and the --key ones, each at the
/// largest of its floor and its backup value (plus --dense-advance).
/// Refused unless every key of the backup is covered.
fn plan_dense(args: &Args, backup: &Backup) -> Result<Vec<DenseRestored>, Failure> {
    let floors: BTreeMap<&str, u64> =
        args.keys
            .iter()
            .fold(BTreeMap::new(), |mut floors, (key, floor)| {
                let entry = floors.entry(key.as_str()).or_insert(0);
                *entry = (*entry).max(*floor);
                floors
            });
    if args.dense_advance.is_none() {
        let uncovered: Vec<&str> = backup
            .counters
            .keys()
            .map(String::as_str)
            .filter(|key| !floors.contains_key(key))
            .collect();
        if !uncovered.is_empty() || (backup.counters.is_empty() && floors.is_empty()) {
            let which = if uncovered.is_empty() {
                "the backup holds no dense key, but keys created since it was taken would \
                 start at 0"
                    .to_string()
            } else {
                format!(
                    "dense key(s) {} of the backup are covered neither by --key nor by \
                     --dense-advance",
                    uncovered.join(", ")
                )
            };
            return Err(Failure::new(format!(
                "refusing to restore: {which}; {WHY}. Pass --key K=FLOOR for each (the \
                 application's highest value plus one) or --dense-advance N (added to every \
                 counter)"
            )));
        }
    }
    let mut names: Vec<&str> = backup.counters.keys().map(String::as_str).collect();
    names.extend(floors.keys().copied());
    names.sort_unstable();
    names.dedup();
    let mut dense = Vec::with_capacity(names.len());
    for name in names {
        let from_backup = backup.counters.get(name).copied();
        let advanced = match (from_backup, args.dense_advance) {
            (Some(value), Some(advance)) => Some(value.checked_add(advance).ok_or_else(|| {
                Failure::new(format!(
                    "refusing to restore: dense key {name}: {value} + --dense-advance {advance} \
                     overflows 64 bits"
                ))
            })?),
            (Some(value), None) => Some(value),
            (None, _) => None,
        };
        let next = advanced
            .into_iter()
            .chain(floors.get(name).copied())
            .max()
            .unwrap_or(0);
        dense.push(DenseRestored {
            key: name.to_string(),
            backup: from_backup,
            next,
        });
    }
    Ok(dense)
}

/// Restores BACKUP into NEWDIR.
pub(crate) fn exec(args: &Args) -> CmdResult {
    let backup = read_backup(&args.backup)?;
    let report = plan(args, &backup)?;
    check_newdir(&args.newdir)?;

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
        "restored {} into {}: high-water {} ({}; the backup's was {}), {} dense key(s), key cap {}\n",
        report.backup,
        report.newdir,
        report.high_water,
        cli::utc_text(report.high_water),
        report.backup_high_water,
        report.dense.len(),
        report.dense_cardinality_cap
    );
    for entry in &report.dense {
        match entry.backup {
            Some(value) => out.push_str(&format!(
                "  {} = {} (the backup had {value})\n",
                entry.key, entry.next
            )),
            None => out.push_str(&format!(
                "  {} = {} (not in the backup)\n",
                entry.key, entry.next
            )),
        }
    }
    if report.backup_leases_dropped > 0 {
        out.push_str(&format!(
            "{} lease(s) of the backup not carried: the high-water is above their upper \
             bounds; holders acquire again.\n",
            report.backup_leases_dropped
        ));
    }
    out.push_str(&format!(
        "a new oracle (a new origin id): serve it with `tsoracle-file serve --state-dir {}`; \
         never serve the backup, or the lost oracle's directory, again.\n",
        report.newdir
    ));
    Ok(out)
}
