//! `migrate out DIR --to URL[,URL...]`: carries a stopped state directory
//! into a running oracle of any driver, then retires the directory.
//!
//! # Why nothing is handed out twice
//!
//! - DIR's lock is held from the first read to the last write, so the old
//!   server cannot start meanwhile, and DIR is marked `RETIRED` (durably)
//!   before anything on the target is advanced (a preflight only takes one
//!   timestamp and one dense value, burned, to see that the target serves):
//!   from then on no driver serves DIR again until an operator lifts the
//!   marker.
//! - Dense: every counter in DIR is advanced on the target until the
//!   target's next value is at least DIR's next unallocated value. The
//!   values taken on the way are burned (this tool is their only
//!   recipient). The target hands out only values at or above its counter,
//!   so never one the file server handed out.
//! - Timestamps: the command waits until the target issues a timestamp
//!   whose physical part is above DIR's committed high-water (and above
//!   every lease's upper bound). Every timestamp the file server issued is
//!   at or below that high-water, and the target only moves forward (across
//!   its own failovers too), so everything it issues from then on is above.
//!   Timestamps the target issued *before* that moment are not: nothing may
//!   use the target until this command reports success.
//! - The target must not have served DIR's keys: the preflight probes
//!   every dense key of DIR (one burned value each), and a first run into
//!   an oracle where any of them is above 0 is refused before DIR is
//!   marked. While the keys are carried, a counter found past the
//!   preflight's probe + 1 means something else takes values from the
//!   target meanwhile: the command stops.
//! - Re-running is safe: each step only ever moves the target forward. A
//!   re-run towards another oracle is refused: two oracles would start
//!   from DIR's state. The target's identity is proven by its state, not
//!   its URLs: every counter the note in `RETIRED` records (the receipt's
//!   `target_next`, or the early note's probes + 1) must be at or above
//!   the recorded value, and its timestamps above the recorded one (see
//!   `note.rs`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tsoracle_driver_file::StoppedDir;
use tsoracle_driver_file::receipt::{ReceiptLease, StoppedStateReceipt};

use tonic::Code;
use tsoracle_client::ClientError;
use tsoracle_core::Timestamp;

pub(crate) use super::note::MIGRATE_OUT_SCHEMA;
use super::note::{
    KeyProbe, MIGRATE_OUT_STARTED_SCHEMA, MigrateOutStarted, Note, Preflight, Recorded,
};
use super::target::Target;
use crate::cli::now_ms_since_epoch as now_ms;
use crate::cli::{self, CmdResult, Failure};

/// The long help of `migrate out` (`tsoracle-file migrate out --help`).
pub(crate) const LONG_ABOUT: &str = concat!(
    "Carry a stopped state directory into a running oracle of any driver (openraft, ",
    "paxos, another file server), using only the public client API, then mark the ",
    "directory RETIRED so that no server serves it again.\n\n",
    "Holds DIR's lock throughout. Marks DIR RETIRED before touching the target. ",
    "Advances every dense counter on the target to at least DIR's value (values taken ",
    "on the way are burned); acquires DIR's live leases on the target for the same ",
    "holder, epoch and TTL; waits, with progress and at most --wait-limit (checked ",
    "before anything is changed), until the target issues timestamps above DIR's ",
    "committed high-water and lease upper bounds; writes a receipt into DIR/RETIRED ",
    "(and --receipt FILE). A target where any of DIR's dense keys is already above 0 ",
    "is refused before DIR is marked. Re-running it is safe; a re-run proves that the ",
    "target is the oracle DIR was carried to by its counters and timestamps (at or ",
    "above what DIR/RETIRED records), not by its URLs.\n\n",
    "Nothing may use the target before this command reports success.\n\n",
    "A target whose dense format is not activated is reported with the exact ",
    "`tsoracle admin activate-format` command to run.",
);

/// Arguments of `migrate out`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The stopped state directory to carry over (its server must be
    /// stopped: the command takes the directory's lock)
    pub(crate) dir: PathBuf,
    /// The target oracle's gRPC endpoints, comma-separated (any or all
    /// nodes of a cluster)
    #[arg(
        long,
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        required = true
    )]
    pub(crate) to: Vec<String>,
    /// Also write the receipt (JSON) to this file; it is always written
    /// into DIR/RETIRED
    #[arg(long, value_name = "FILE")]
    pub(crate) receipt: Option<PathBuf>,
    /// Give up waiting for the target's timestamps to pass DIR's
    /// high-water after this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub(crate) wait_limit: u64,
    /// Largest dense block asked for in one call (the target's
    /// --max-seq-count; a smaller one is learnt from its refusals)
    #[arg(long, value_name = "N", default_value_t = tsoracle_core::DEFAULT_MAX_SEQ_COUNT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_seq_count: u32,
    /// The target's admin endpoint, only to print the exact
    /// `tsoracle admin activate-format` command should it be needed
    #[arg(long, value_name = "URL")]
    pub(crate) admin: Option<String>,
}

/// The receipt of a `migrate out`: what DIR held, and what was done to the
/// target. Written to DIR/RETIRED (after its first line) and to --receipt.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MigrateOutReceipt {
    /// Always [`MIGRATE_OUT_SCHEMA`].
    pub(crate) schema: String,
    /// The layout of this document, 1.
    pub(crate) schema_version: u32,
    /// Always `true`: this receipt reports a migration that succeeded (the
    /// note `RETIRED` holds while it runs has `completed: false`). A
    /// receipt of an earlier version has no such field, and is one too.
    #[serde(default = "yes")]
    pub(crate) completed: bool,
    /// The directory carried.
    pub(crate) dir: String,
    /// The target's endpoints.
    pub(crate) to: Vec<String>,
    /// What this run's preflight took from the target before it advanced
    /// anything (absent in receipts of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) preflight: Option<Preflight>,
    /// When the command started and finished (Unix ms, this machine).
    pub(crate) started_at_unix_ms: u64,
    pub(crate) finished_at_unix_ms: u64,
    /// DIR's stopped-state receipt, taken under the lock at the start.
    pub(crate) source: StoppedStateReceipt,
    /// The timestamp check.
    pub(crate) timestamps: TimestampsCarried,
    /// One entry per dense key of DIR.
    pub(crate) dense: Vec<DenseCarried>,
    /// One entry per lease of DIR.
    pub(crate) leases: Vec<LeaseCarried>,
}

fn yes() -> bool {
    true
}

/// How the target's timestamps were brought above DIR's.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TimestampsCarried {
    /// Every timestamp the target issues from now on has a physical part
    /// above this: max(DIR's high-water, the leases' upper bounds).
    pub(crate) must_exceed_physical_ms: u64,
    /// The first timestamp seen above it, and its physical part.
    pub(crate) first_above: u64,
    pub(crate) first_above_physical_ms: u64,
    /// How long the command waited for it, and how many timestamps it took.
    pub(crate) waited_ms: u64,
    pub(crate) polls: u64,
}

/// What was done to one dense key.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DenseCarried {
    pub(crate) key: String,
    /// DIR's next unallocated value.
    pub(crate) dir_next: u64,
    /// The value the probe took on the target (its position before).
    pub(crate) target_before: u64,
    /// The target's next value afterwards (at least `dir_next`).
    pub(crate) target_next: u64,
    /// Values taken on the target and never handed to anyone.
    pub(crate) burned: u64,
    pub(crate) calls: u64,
}

/// What was done to one lease.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LeaseCarried {
    pub(crate) lease_id: u64,
    pub(crate) holder_hex: String,
    pub(crate) holder_epoch: u64,
    /// What was done with it.
    pub(crate) action: LeaseAction,
    /// The lease on the target, when acquired.
    pub(crate) target_lease_id: Option<u64>,
    pub(crate) target_ts_upper_bound: Option<u64>,
    pub(crate) target_expires_at_ms: Option<u64>,
}

/// What `migrate out` did with one lease of DIR. In the receipt, a string:
/// `acquired`, `skipped: superseded`, `skipped: expired`, or `not carried:
/// REASON` (the target has no lease support).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub(crate) enum LeaseAction {
    /// Acquired on the target for the same holder, epoch and TTL.
    Acquired,
    /// Not carried: superseded in DIR.
    SkippedSuperseded,
    /// Not carried: expired in DIR.
    SkippedExpired,
    /// Not carried: the target has no leases; the reason says what it
    /// answered.
    NotCarried(String),
}

impl LeaseAction {
    const ACQUIRED: &str = "acquired";
    const SKIPPED_SUPERSEDED: &str = "skipped: superseded";
    const SKIPPED_EXPIRED: &str = "skipped: expired";
    const NOT_CARRIED: &str = "not carried: ";
}

impl std::fmt::Display for LeaseAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseAction::Acquired => f.write_str(Self::ACQUIRED),
            LeaseAction::SkippedSuperseded => f.write_str(Self::SKIPPED_SUPERSEDED),
            LeaseAction::SkippedExpired => f.write_str(Self::SKIPPED_EXPIRED),
            LeaseAction::NotCarried(reason) => write!(f, "{}{reason}", Self::NOT_CARRIED),
        }
    }
}

impl From<LeaseAction> for String {
    fn from(action: LeaseAction) -> String {
        action.to_string()
    }
}

impl TryFrom<String> for LeaseAction {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            LeaseAction::ACQUIRED => Ok(LeaseAction::Acquired),
            LeaseAction::SKIPPED_SUPERSEDED => Ok(LeaseAction::SkippedSuperseded),
            LeaseAction::SKIPPED_EXPIRED => Ok(LeaseAction::SkippedExpired),
            _ => match text.strip_prefix(LeaseAction::NOT_CARRIED) {
                Some(reason) => Ok(LeaseAction::NotCarried(reason.to_string())),
                None => Err(format!("unknown lease action {text:?}")),
            },
        }
    }
}

/// What an earlier run left in DIR/RETIRED.
enum Earlier {
    /// None: this is the first run.
    Nothing,
    /// An early note of an earlier version, without the target's state: its
    /// URLs were compared.
    Legacy,
    /// The target's state when DIR was marked (`completed: false`) or when
    /// the migration succeeded (`completed: true`).
    Recorded { recorded: Recorded, completed: bool },
}

/// Carries DIR into the target and retires DIR.
pub(crate) fn exec(args: &Args) -> CmdResult {
    let started_at = now_ms();
    let stopped = StoppedDir::lock(&args.dir).map_err(|err| Failure::from_error(&err))?;
    let source = stopped.receipt().map_err(|err| Failure::from_error(&err))?;
    let note = stopped
        .retired_note()
        .map_err(|err| Failure::from_error(&err))?;
    let marker = args.dir.join(tsoracle_driver_file::RETIRED_FILE);
    let earlier = match note.as_deref().map(super::note::read_note) {
        None => Earlier::Nothing,
        Some(Note::Completed(recorded)) => Earlier::Recorded {
            recorded,
            completed: true,
        },
        Some(Note::Started(recorded)) => Earlier::Recorded {
            recorded,
            completed: false,
        },
        Some(Note::Legacy { to }) => {
            refuse_another_target(args, &to)?;
            eprintln!(
                "migrate out: {} was marked by an earlier version, which recorded only the \
                 target's URLs: the target's identity is taken from them",
                marker.display()
            );
            Earlier::Legacy
        }
        Some(Note::Foreign { line }) => {
            return Err(Failure::new(format!(
                "{} is RETIRED by something other than `migrate out` ({line:?}): refusing to carry it again",
                args.dir.display()
            )));
        }
        Some(Note::Unreadable { reason }) => {
            return Err(Failure::new(format!(
                "{} was written by `migrate out`, but {reason}: refusing to carry {} again \
                 without the target's state it should record; nothing was changed",
                marker.display(),
                args.dir.display()
            )));
        }
    };
    let runtime = super::runtime()?;
    let receipt = runtime.block_on(carry(args, &stopped, source, started_at, &earlier))?;

    let json = cli::json_pretty(&receipt);
    let note = format!(
        "migrated out to {} by `tsoracle-file migrate out` at {}; this directory must not serve again\n{json}",
        receipt.to.join(","),
        cli::utc_text(receipt.finished_at_unix_ms)
    );
    stopped
        .retire(&note)
        .map_err(|err| Failure::from_error(&err))?;
    if let Some(path) = &args.receipt {
        super::note::write_durably(path, json.as_bytes()).map_err(|err| {
            Failure::new(format!(
                "{} is migrated and marked RETIRED (the receipt is in {}), but the receipt \
                 {} is not written: {err}",
                args.dir.display(),
                marker.display(),
                path.display()
            ))
        })?;
    }
    drop(stopped);
    Ok(summary(args, &receipt))
}

/// A re-run after an earlier version's early note (its first line alone,
/// no recorded state) must go to the URLs it names: carrying DIR to a
/// second oracle as well would make two oracles that both start from DIR,
/// and hand out the same values.
fn refuse_another_target(args: &Args, listed: &[String]) -> Result<(), Failure> {
    let normalise = |urls: &mut Vec<String>| {
        urls.iter_mut()
            .for_each(|url| *url = url.trim().trim_end_matches('/').to_string());
        urls.retain(|url| !url.is_empty());
        urls.sort();
        urls.dedup();
    };
    let mut before = listed.to_vec();
    let mut now = args.to.clone();
    normalise(&mut before);
    normalise(&mut now);
    if before != now {
        return Err(Failure::new(format!(
            "{} was already migrated out to {}; carrying it to {} as well would start a second \
             oracle from the same state: refused (re-run with the same --to, or, if that migration \
             was abandoned before its oracle served anyone, `tsoracle-file migrate reinstate` first)",
            args.dir.display(),
            before.join(","),
            now.join(",")
        )));
    }
    Ok(())
}

/// The refusal of a re-run whose target is below what the note recorded:
/// not the oracle DIR was carried to.
fn not_that_oracle(
    args: &Args,
    endpoints: &[String],
    recorded: &Recorded,
    completed: bool,
    what: &str,
) -> Failure {
    Failure::new(format!(
        "the oracle at {} is not the one {} was carried to ({what} recorded at {} in {} by the \
         {} migration to {}): a rebuilt or different oracle; carrying DIR into it too would \
         start a second oracle from DIR's state: refused",
        endpoints.join(","),
        args.dir.display(),
        cli::utc_text(recorded.at_unix_ms),
        args.dir.join(tsoracle_driver_file::RETIRED_FILE).display(),
        if completed {
            "completed"
        } else {
            "interrupted"
        },
        recorded.to.join(","),
    ))
}

/// One run of `migrate out`: its arguments and what an earlier run left,
/// which the refusals before DIR is marked name.
struct Run<'a> {
    args: &'a Args,
    earlier: &'a Earlier,
}

impl Run<'_> {
    /// Whether DIR is already marked by an earlier run.
    fn rerun(&self) -> bool {
        !matches!(self.earlier, Earlier::Nothing)
    }

    /// A refusal before anything is marked or advanced: DIR is as it was.
    fn untouched(&self, failure: Failure) -> Failure {
        let state = if self.rerun() {
            "is still marked RETIRED by the earlier run"
        } else {
            "is not marked RETIRED and may still serve"
        };
        failure.reworded(|message| {
            format!(
                "{message}; nothing was changed: {} {state}",
                self.args.dir.display()
            )
        })
    }

    /// A target that cannot be asked: on a re-run, what cannot be asked
    /// cannot prove the target is the oracle DIR was carried to.
    fn unproven(&self, failure: Failure) -> Failure {
        match self.earlier {
            Earlier::Recorded { recorded, .. } => self.untouched(failure.reworded(|message| {
                format!(
                    "{} was already migrated out to {}; cannot check that {} is that oracle: {message}",
                    self.args.dir.display(),
                    recorded.to.join(","),
                    self.args.to.join(","),
                )
            })),
            _ => self.untouched(failure),
        }
    }
}

/// Carries DIR's state into the target, in phases: connect, preflight
/// (nothing changed yet), mark DIR `RETIRED` (first run only), dense
/// counters, leases, then the wait for the target's timestamps.
async fn carry(
    args: &Args,
    stopped: &StoppedDir,
    source: StoppedStateReceipt,
    started_at: u64,
    earlier: &Earlier,
) -> Result<MigrateOutReceipt, Failure> {
    let run = Run { args, earlier };
    let target = connect(&run, &source).await?;
    let must_exceed = source
        .committed_reservation_high_water_physical_ms
        .max(source.maximum_lease_upper_bound_physical_ms.unwrap_or(0));
    let (preflight, probes) = preflight(&run, &target, &source, must_exceed).await?;
    if !run.rerun() {
        mark(args, stopped, &target, &preflight, started_at)?;
    }
    let dense = carry_dense(args, &target, &source, &probes).await?;
    // Leases before the wait: it may last about as long as they do.
    let leases = carry_leases(&target, &source).await?;
    let timestamps = wait_above(&target, must_exceed, Duration::from_secs(args.wait_limit)).await?;

    Ok(MigrateOutReceipt {
        schema: MIGRATE_OUT_SCHEMA.into(),
        schema_version: 1,
        completed: true,
        dir: args.dir.display().to_string(),
        to: target.endpoints.clone(),
        preflight: Some(preflight),
        started_at_unix_ms: started_at,
        finished_at_unix_ms: now_ms(),
        source,
        timestamps,
        dense,
        leases,
    })
}

/// Connects to the target, notes the lease format DIR's live leases need,
/// and says what is carried where.
async fn connect(run: &Run<'_>, source: &StoppedStateReceipt) -> Result<Target, Failure> {
    let args = run.args;
    let mut target = Target::connect(&args.to, args.admin.clone())
        .await
        .map_err(|failure| run.unproven(failure))?;
    let now = now_ms();
    if source
        .leases
        .iter()
        .any(|lease| !lease.superseded && lease.expires_at_unix_ms > now)
    {
        // Upstream openraft's lease format: name it in an activation hint.
        target.needs_format = Some((7, "DIR's live leases"));
    }
    eprintln!(
        "migrate out: {} (high-water {}, {} dense key(s), {} lease(s)) -> {}{}",
        args.dir.display(),
        source.committed_reservation_high_water_physical_ms,
        source.dense_next_unallocated.len(),
        source.leases.len(),
        target.endpoints.join(","),
        if run.rerun() {
            " (again: DIR is already marked RETIRED)"
        } else {
            ""
        }
    );
    Ok(target)
}

/// Before anything is marked: the target is reachable, able to pass DIR's
/// high-water (`must_exceed`) within --wait-limit, and (when there are
/// counters) able to serve dense values and never used for DIR's keys (or,
/// on a re-run, the oracle DIR was carried to). Returns what it took, and
/// each key's probe.
async fn preflight(
    run: &Run<'_>,
    target: &Target,
    source: &StoppedStateReceipt,
    must_exceed: u64,
) -> Result<(Preflight, BTreeMap<String, u64>), Failure> {
    let first = first_timestamp(run, target, must_exceed).await?;
    let (probes, ours) = probe_keys(run, target, source).await?;
    check_probes(run, target, &probes, &ours)?;
    let preflight = Preflight {
        timestamp: first.0,
        timestamp_physical_ms: first.physical_ms(),
        dense: probes
            .iter()
            .map(|(key, probe)| KeyProbe {
                key: key.clone(),
                probe: *probe,
            })
            .collect(),
    };
    Ok((preflight, probes))
}

/// The preflight's timestamp: above the one the note records (on a re-run),
/// and close enough to `must_exceed` for --wait-limit.
async fn first_timestamp(
    run: &Run<'_>,
    target: &Target,
    must_exceed: u64,
) -> Result<Timestamp, Failure> {
    let args = run.args;
    let first = match run.earlier {
        // One round of the client's own retries (10 s) is enough to refuse
        // a target that does not answer: nothing is changed either way.
        Earlier::Recorded { .. } => target
            .client
            .get_ts()
            .await
            .map_err(|err| target.failure("cannot get a timestamp", &err)),
        _ => target.timestamp().await,
    }
    .map_err(|failure| run.unproven(failure))?;
    if let Earlier::Recorded {
        recorded,
        completed,
    } = run.earlier
        && first.0 <= recorded.timestamp
    {
        return Err(run.untouched(not_that_oracle(
            args,
            &target.endpoints,
            recorded,
            *completed,
            &format!(
                "its timestamps are at {}, not above the {}",
                first.0, recorded.timestamp
            ),
        )));
    }
    let physical = first.physical_ms();
    let behind = (must_exceed + 1).saturating_sub(physical);
    if Duration::from_millis(behind) > Duration::from_secs(args.wait_limit) {
        return Err(Failure::new(format!(
            "the target's timestamps (physical {physical} ms) are {behind} ms behind DIR's \
             high-water {must_exceed} ({}), and this command waits at most --wait-limit {} s \
             for its clock to pass it; nothing was changed. A high-water far ahead of the clock \
             comes from leases (a server reserves their upper bounds ahead) or a clock that ran \
             ahead: re-run with --wait-limit {}, or after {}",
            cli::utc_text(must_exceed),
            args.wait_limit,
            behind.div_ceil(1_000) + 30,
            cli::utc_text(must_exceed)
        )));
    }
    Ok(first)
}

/// One burned value of every key: DIR's, and any the note records. An
/// oracle without dense sequences (paxos) is refused here. Returns each
/// key's probe and, per key, how many of the values below its probe this
/// command may have taken itself (ambiguous calls).
async fn probe_keys(
    run: &Run<'_>,
    target: &Target,
    source: &StoppedStateReceipt,
) -> Result<(BTreeMap<String, u64>, BTreeMap<String, u64>), Failure> {
    let mut keys: Vec<&str> = source
        .dense_next_unallocated
        .keys()
        .map(String::as_str)
        .collect();
    if let Earlier::Recorded { recorded, .. } = run.earlier {
        keys.extend(recorded.dense_next.keys().map(String::as_str));
    }
    keys.sort_unstable();
    keys.dedup();
    let mut probes = BTreeMap::new();
    let mut ours = BTreeMap::new();
    for key in keys {
        let (probe, uncertain) = target
            .probe(key)
            .await
            .map_err(|failure| run.unproven(failure))?;
        probes.insert(key.to_string(), probe);
        ours.insert(key.to_string(), uncertain);
    }
    Ok((probes, ours))
}

/// A first run refuses an oracle that already handed out values of DIR's
/// keys; a re-run one whose counters are below what the note records.
fn check_probes(
    run: &Run<'_>,
    target: &Target,
    probes: &BTreeMap<String, u64>,
    ours: &BTreeMap<String, u64>,
) -> Result<(), Failure> {
    let args = run.args;
    match run.earlier {
        Earlier::Nothing => {
            let used: Vec<String> = probes
                .iter()
                .filter(|(key, probe)| **probe > ours.get(*key).copied().unwrap_or(0))
                .map(|(key, probe)| format!("{key:?} at {probe}"))
                .collect();
            if !used.is_empty() {
                return Err(run.untouched(Failure::new(format!(
                    "the oracle at {} already handed out values of {}'s dense key(s) {} (the \
                     counter was above 0, and above what this command took itself): it served \
                     them, so values DIR handed out may have been handed out there as well, and \
                     carrying DIR into it does not undo that: refused. Carry DIR only into an \
                     oracle that never served its keys",
                    target.endpoints.join(","),
                    args.dir.display(),
                    used.join(", ")
                ))));
            }
        }
        Earlier::Recorded {
            recorded,
            completed,
        } => {
            for (key, need) in &recorded.dense_next {
                let at = probes.get(key).copied().unwrap_or(0);
                if at < *need {
                    return Err(run.untouched(not_that_oracle(
                        args,
                        &target.endpoints,
                        recorded,
                        *completed,
                        &format!("key {key:?} is at {at}, below the {need}"),
                    )));
                }
            }
        }
        Earlier::Legacy => {}
    }
    Ok(())
}

/// Marks DIR `RETIRED` with the early note (the target's state from the
/// preflight), before anything on the target is advanced.
fn mark(
    args: &Args,
    stopped: &StoppedDir,
    target: &Target,
    preflight: &Preflight,
    started_at: u64,
) -> Result<(), Failure> {
    let started = MigrateOutStarted {
        schema: MIGRATE_OUT_STARTED_SCHEMA.into(),
        schema_version: 1,
        completed: false,
        dir: args.dir.display().to_string(),
        to: target.endpoints.clone(),
        started_at_unix_ms: started_at,
        preflight: preflight.clone(),
    };
    stopped
        .retire(&format!(
            "being migrated out to {} by `tsoracle-file migrate out` since {}; this directory must not serve again\n{}",
            target.endpoints.join(","),
            cli::utc_text(started_at),
            cli::json_pretty(&started)
        ))
        .map_err(|err| Failure::from_error(&err))?;
    eprintln!("  marked {} RETIRED", args.dir.display());
    Ok(())
}

/// Advances every dense counter of DIR on the target to at least DIR's
/// value, stopping when a counter moved past its preflight probe + 1
/// (something else takes values from the target).
async fn carry_dense(
    args: &Args,
    target: &Target,
    source: &StoppedStateReceipt,
    probes: &BTreeMap<String, u64>,
) -> Result<Vec<DenseCarried>, Failure> {
    let mut chunk = args.max_seq_count;
    let mut dense = Vec::with_capacity(source.dense_next_unallocated.len());
    for (key, dir_next) in &source.dense_next_unallocated {
        let done = target.advance_to(key, *dir_next, &mut chunk).await?;
        eprintln!(
            "  dense {key}: DIR next {dir_next}; target was at {}, now next {} ({} call(s))",
            done.probe, done.next, done.calls
        );
        // The preflight's probe took the value before this one: a counter
        // further on was moved by someone else meanwhile.
        let expected = probes.get(key).map_or(0, |probe| probe.saturating_add(1));
        if done.probe > expected {
            return Err(Failure::new(format!(
                "dense key {key:?}: the oracle at {} was at {}, past the {expected} the preflight \
                 left it at: something else is taking values from it during the migration; \
                 stopped. {} is already marked RETIRED and must not serve again; nothing may use \
                 the target either. Re-running `migrate out` is safe once nothing else uses the \
                 target",
                target.endpoints.join(","),
                done.probe,
                args.dir.display()
            )));
        }
        dense.push(DenseCarried {
            key: key.clone(),
            dir_next: *dir_next,
            target_before: done.probe,
            target_next: done.next,
            burned: done.next - done.probe,
            calls: done.calls,
        });
    }
    Ok(dense)
}

/// Acquires DIR's live leases on the target for the same holder, epoch and
/// TTL; skips superseded and expired ones.
async fn carry_leases(
    target: &Target,
    source: &StoppedStateReceipt,
) -> Result<Vec<LeaseCarried>, Failure> {
    let now = now_ms();
    let mut leases = Vec::with_capacity(source.leases.len());
    for lease in &source.leases {
        let carried = carry_lease(target, lease, now).await?;
        match carried.target_lease_id {
            // The holder finds it by holder and epoch while it is live.
            Some(id) => eprintln!(
                "  lease {}: {}: lease {id} on the target, upper bound {}, expires {} \
                 (its holder renews it there; acquiring it with the same holder and epoch \
                 answers it while it lives)",
                lease.lease_id,
                carried.action,
                carried.target_ts_upper_bound.unwrap_or(0),
                cli::utc_text(carried.target_expires_at_ms.unwrap_or(0)),
            ),
            None => eprintln!("  lease {}: {}", lease.lease_id, carried.action),
        }
        leases.push(carried);
    }
    Ok(leases)
}

/// Acquires one lease of DIR on the target for the same holder, epoch and
/// TTL, unless it is superseded or expired (as of `now`) in DIR.
async fn carry_lease(
    target: &Target,
    lease: &ReceiptLease,
    now: u64,
) -> Result<LeaseCarried, Failure> {
    let not_acquired = |action| LeaseCarried {
        lease_id: lease.lease_id,
        holder_hex: lease.holder_hex.clone(),
        holder_epoch: lease.holder_epoch,
        action,
        target_lease_id: None,
        target_ts_upper_bound: None,
        target_expires_at_ms: None,
    };
    if lease.superseded {
        return Ok(not_acquired(LeaseAction::SkippedSuperseded));
    }
    if lease.expires_at_unix_ms <= now {
        return Ok(not_acquired(LeaseAction::SkippedExpired));
    }
    let holder = hex::decode(&lease.holder_hex)
        .map_err(|err| Failure::new(format!("lease {}: bad holder: {err}", lease.lease_id)))?;
    // The same (holder, epoch) is idempotent on the target while
    // live, so a re-run finds the lease it acquired before.
    let ttl = Duration::from_millis(lease.ttl_ms);
    let acquired = super::target::retrying(|| {
        target
            .client
            .acquire_lease(&holder, lease.holder_epoch, ttl)
    })
    .await;
    match acquired {
        Ok(acquired) => Ok(LeaseCarried {
            target_lease_id: Some(acquired.lease_id),
            target_ts_upper_bound: Some(acquired.ts_upper_bound),
            target_expires_at_ms: Some(acquired.expires_at_ms),
            ..not_acquired(LeaseAction::Acquired)
        }),
        // A driver without leases (openraft 2.3 among them): nothing
        // to carry them into. Their upper bounds are still honoured:
        // the wait after the leases covers them.
        Err(ClientError::Rpc(status)) if status.code() == Code::Unimplemented => Ok(not_acquired(
            LeaseAction::NotCarried(format!("the target has no leases ({})", status.message())),
        )),
        Err(err) => Err(target.failure(&format!("cannot carry lease {}", lease.lease_id), &err)),
    }
}

/// Polls the target's timestamps until one's physical part is above
/// `floor`, printing progress; the target's clock may run behind DIR's
/// high-water by up to the old server's window.
async fn wait_above(
    target: &Target,
    floor: u64,
    limit: Duration,
) -> Result<TimestampsCarried, Failure> {
    let started = Instant::now();
    let mut polls = 0u64;
    let mut last_report: Option<Instant> = None;
    loop {
        let ts = target.timestamp().await?;
        polls += 1;
        let physical = ts.physical_ms();
        if physical > floor {
            let waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            eprintln!(
                "  timestamps: target issues {} (physical {physical}) > DIR's {floor}; waited {waited_ms} ms",
                ts.0
            );
            return Ok(TimestampsCarried {
                must_exceed_physical_ms: floor,
                first_above: ts.0,
                first_above_physical_ms: physical,
                waited_ms,
                polls,
            });
        }
        let behind = floor + 1 - physical;
        let remaining = limit.saturating_sub(started.elapsed());
        // Give up once the limit is spent, or at once when the target's
        // clock could not catch up within what is left of it.
        if remaining.is_zero() || Duration::from_millis(behind) > remaining + Duration::from_secs(1)
        {
            return Err(Failure::new(format!(
                "the target's timestamps (physical {physical} ms) are {behind} ms behind DIR's \
                 high-water {floor}, more than --wait-limit {} s allows: is its clock behind this \
                 one? Nothing may use the target yet; re-run once its clock has passed {}",
                limit.as_secs(),
                cli::utc_text(floor)
            )));
        }
        if last_report.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            eprintln!(
                "  timestamps: waiting for the target's clock to pass DIR's high-water {floor}: \
                 {behind} ms to go (physical {physical})"
            );
            last_report = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(behind.min(200))).await;
    }
}

fn summary(args: &Args, receipt: &MigrateOutReceipt) -> String {
    let burned: u64 = receipt.dense.iter().map(|d| d.burned).sum();
    let acquired = receipt
        .leases
        .iter()
        .filter(|l| l.target_lease_id.is_some())
        .count();
    let mut out = format!(
        "migrated {} to {}:\n  timestamps: the target now issues above {} ({}), waited {} ms\n  \
         dense: {} key(s) at or above DIR's counters ({} value(s) burned)\n  \
         leases: {} of {} carried\n",
        args.dir.display(),
        receipt.to.join(","),
        receipt.timestamps.must_exceed_physical_ms,
        cli::utc_text(receipt.timestamps.must_exceed_physical_ms),
        receipt.timestamps.waited_ms,
        receipt.dense.len(),
        burned,
        acquired,
        receipt.leases.len(),
    );
    out.push_str(&format!(
        "{} is marked RETIRED and will not serve again; the receipt is in {}{}\n",
        args.dir.display(),
        args.dir.join(tsoracle_driver_file::RETIRED_FILE).display(),
        args.receipt
            .as_ref()
            .map(|path| format!(" and {}", path.display()))
            .unwrap_or_default()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::LeaseAction;

    /// Each action is the string receipts always held, and every such
    /// string (an earlier version's receipt too) parses back to it.
    #[test]
    fn lease_actions_are_todays_strings() {
        for (action, text) in [
            (LeaseAction::Acquired, "acquired"),
            (LeaseAction::SkippedSuperseded, "skipped: superseded"),
            (LeaseAction::SkippedExpired, "skipped: expired"),
            (
                LeaseAction::NotCarried("the target has no leases (no)".into()),
                "not carried: the target has no leases (no)",
            ),
        ] {
            let json = serde_json::to_string(&action).expect("serializes");
            assert_eq!(json, serde_json::to_string(text).expect("a string"));
            assert_eq!(action.to_string(), text);
            let back: LeaseAction = serde_json::from_str(&json).expect("parses");
            assert_eq!(back, action);
        }
        assert!(serde_json::from_str::<LeaseAction>("\"borrowed\"").is_err());
    }
}
