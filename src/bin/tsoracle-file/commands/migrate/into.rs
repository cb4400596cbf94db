//! `migrate in NEWDIR --from URL[,URL...] --keys-from RECEIPT` (or `--key K`
//! repeated): the first half of the way back from a running oracle to a
//! state directory. It observes the oracle and writes NEWDIR *pending*:
//! every driver refuses to serve it until `migrate finish NEWDIR` (see
//! [`super::finish`]) has seen every endpoint of the oracle stop answering
//! and raised NEWDIR's high-water above everything the oracle could have
//! issued until it stopped.
//!
//! # What it measures, and why nothing is taken on trust
//!
//! The client API reads neither the oracle's committed high-water `HW`, nor
//! its window, nor its lease settings, nor a dense counter without taking
//! from it. Upstream's arithmetic (tsoracle-core's allocator and
//! tsoracle-server 3.2 / 3.3, read for this):
//!
//! - The server extends its window only when a `get_ts` finds it exhausted,
//!   to `max(HW + 1, now) + window` (`try_prepare_window_extension`, called
//!   by `extend_window`), and answers `GetCurrentMaxSafe` with
//!   `HW - window - 1` (leader only; followers answer 0).
//! - A lease acquisition commits `max(HW + 1, now) + ttl`, with `ttl` at
//!   most the server's `lease_ttl_ceiling` (a larger one is refused with
//!   `INVALID_ARGUMENT` before anything is committed). A renewal commits
//!   `max(HW, now + ttl)` on 3.3 and, like an acquisition,
//!   `max(HW + 1, now) + ttl` on 3.2: there renewals stack too.
//!
//! So the command:
//!
//! 1. **Leases.** Asks for a lease of `--lease-ttl-ceiling` + 1 ms for its
//!    own probe holder (`tsoracle-file migrate in probe`, epoch from the
//!    clock): it must be refused with `INVALID_ARGUMENT`, so the ceiling
//!    `C` bounds every TTL; a grant is released and the command refuses
//!    (pass the real ceiling). Then acquires one probe lease at the
//!    smallest TTL `t` (of 1 s, 5 s, 10 s, ..., `C`) the oracle accepts,
//!    renews it at once and releases it: a renewal whose upper bound rose
//!    by more than `t / 2` stacks (3.2). `UNIMPLEMENTED`, or the lease
//!    format not activated, means the oracle grants no lease; but upstream
//!    commits an acquisition's upper bound *before* it stores the lease, so
//!    each refused attempt still raises its high-water like a grant: `C`
//!    is then 0 only with `--lease-grants 0` (or none).
//!    An oracle that grants leases needs `--lease-grants N` (how many
//!    acquisitions, plus renewals when they stack, it may still grant until
//!    it stops), or the command refuses: nothing bounds how far they raise
//!    `HW`. It also reads `GetSafeFrontier`, for the report.
//! 2. **Window.** Calls `get_ts` and `GetCurrentMaxSafe` in turn (same
//!    leader epoch) until max-safe has moved twice, `m0 -> m1 -> m2`, or
//!    `--measure-limit` passed (refused). Each move is a committed extension:
//!    the move into `m2` extended a window that the move into `m1` had
//!    committed, and a window extension raises `HW` by at least
//!    `window + 1`, so `window_bound = m2 - m1` (at least `--window-ms`,
//!    a floor when given) bounds the real window, and the committed
//!    high-water at the observation is at most `H = m2 + window_bound + 1`
//!    (after the probe leases of 1., which it covers). Every timestamp
//!    seen is checked to be at or below `H`. One caveat, covered in the
//!    bound: a 3.3 renewal by some client during the measurement may move
//!    max-safe by less than the window, and then `W` falls short; but then
//!    the source grants leases, and `migrate finish` uses `F + C` with `C`
//!    the TTL ceiling, which covers the window whenever the ceiling is at
//!    least the window (upstream's defaults: 300 s against 3 s; pass
//!    `--window-ms` for a source whose ceiling is below its window).
//! 3. **Time.** The oracle's clock is read from the timestamps it issues:
//!    the note records the later of this machine's clock and the last
//!    timestamp's physical part plus the time elapsed since it came (an
//!    `Instant`), with this machine's boot id and uptime, so `migrate
//!    finish` can carry it forward without trusting either clock alone.
//! 4. **Dense.** Each key is probed by taking one value `s` (burned: this
//!    tool is its only recipient); the oracle has handed out nothing at or
//!    above `s + 1` yet. NEWDIR's counter is `s + 1 + dense_margin`, at
//!    least the receipts' floors: a straggling client may still take up to
//!    `dense_margin` values per key from the oracle before it stops, all
//!    below NEWDIR's counter. (Reserving those values on the oracle instead
//!    would make a straggler get values *above* them, the very ones NEWDIR
//!    starts from.)
//! 5. **Keys nobody named.** NEWDIR's key cap is the number of keys it
//!    holds, so every driver (upstream's too) refuses a dense call for any
//!    other key ("dense key cardinality cap N reached") rather than hand it
//!    out from 0; `tsoracle-file dense add DIR KEY --floor N` adds one
//!    (offline), `dense cap DIR N` opens the set.
//!
//! NEWDIR is written pending at `max(H, the receipts' high-water)`, with a
//! note holding everything above; `migrate finish` computes the final
//! bound (its module docs give the argument).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use tonic::Code;
use tsoracle_client::ClientError;
use tsoracle_core::SeqKey;
use tsoracle_driver_file::receipt::{RECEIPT_SCHEMA, StoppedStateReceipt};
use tsoracle_driver_file::{FileDriverError, FileOp, StateDir};

use super::finish::{LeaseFacts, PENDING_SCHEMA, PendingNote, WindowFacts, clock_marks};
use super::out::{MIGRATE_OUT_SCHEMA, MigrateOutReceipt};
use super::target::{Target, retrying};
use crate::cli::now_ms_since_epoch as now_ms;
use crate::cli::{self, CmdResult, Failure};

/// The holder of the probe leases.
pub(crate) const PROBE_HOLDER: &[u8] = b"tsoracle-file migrate in probe";

/// What upstream's server says while the lease format is off.
const NOT_ACTIVATED: &str = "format not yet activated";

/// The long help of `migrate in` (`tsoracle-file migrate in --help`).
pub(crate) const LONG_ABOUT: &str = concat!(
    "Observe a running oracle and write NEWDIR PENDING: every driver refuses to serve it ",
    "until `tsoracle-file migrate finish NEWDIR`.\n\n",
    "Measures, rather than trusts: the oracle's window (waits, at most --measure-limit, ",
    "for its max-safe to move twice), whether it grants leases, its lease TTL ceiling ",
    "(a lease of --lease-ttl-ceiling + 1 ms must be refused) and whether its renewals ",
    "stack. An oracle that grants leases needs --lease-grants N (the leases it may still ",
    "grant before it stops; 0 when no client uses leases meanwhile), or is refused. ",
    "Each dense key (--keys-from RECEIPT, --key) is probed by taking, and burning, one ",
    "value; NEWDIR starts --dense-margin above it. NEWDIR's key cap is its number of ",
    "keys: any other key is refused until `tsoracle-file dense add`.\n\n",
    "Then stop the oracle (every node) and run `tsoracle-file migrate finish NEWDIR`.",
);

/// Arguments of `migrate in`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The new state directory (must not hold state)
    pub(crate) newdir: PathBuf,
    /// The running oracle's gRPC endpoints, comma-separated: every one of
    /// them (`migrate finish` checks each has stopped)
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
    /// A floor for the measured window ahead, in ms: the bound used is the
    /// larger of this and the measurement (never the flag alone)
    #[arg(long, value_name = "MS")]
    pub(crate) window_ms: Option<u64>,
    /// How long to wait for the oracle's max-safe to move twice (the window
    /// measurement) before refusing, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub(crate) measure_limit: u64,
    /// How far a new leader advances the high-water when it takes over
    /// (`tsoracle serve --failover-advance`) in ms; covers one failover
    /// before the oracle stops
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    pub(crate) failover_advance_ms: u64,
    /// The largest lease TTL the oracle grants (`--lease-ttl-ceiling`), in
    /// ms: checked (a lease of one ms more must be refused)
    #[arg(long, value_name = "MS", default_value_t = tsoracle_core::DEFAULT_LEASE_TTL_CEILING_MS)]
    pub(crate) lease_ttl_ceiling: u64,
    /// How many leases the oracle may still grant between this command and
    /// its stop: acquisitions, plus renewals on a server whose renewals
    /// stack (3.2.x). Required when the oracle grants leases; 0 when no
    /// client uses leases during the migration
    #[arg(long, value_name = "N")]
    pub(crate) lease_grants: Option<u64>,
    /// Values per key a straggling client may still take from the oracle
    /// before it stops; NEWDIR starts that far above what was seen
    #[arg(long, value_name = "N", default_value_t = u64::from(tsoracle_core::DEFAULT_MAX_SEQ_COUNT))]
    pub(crate) dense_margin: u64,
    /// Print the report as JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// What `migrate in` measured and seeded.
#[derive(Debug, Serialize)]
pub(crate) struct MigrateInReport {
    pub(crate) newdir: String,
    pub(crate) pending: bool,
    /// The note written into NEWDIR, which `migrate finish` reads.
    pub(crate) note: PendingNote,
}

/// One key as `migrate in` seeded it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct DenseSeeded {
    pub(crate) key: String,
    /// The value the probe took from the oracle (burned).
    pub(crate) oracle_probe: u64,
    /// NEWDIR's next unallocated value.
    pub(crate) next: u64,
}

/// Keys and floors from the receipts and `--key`, and the receipts' high-water.
fn keys(args: &Args) -> Result<(BTreeMap<String, u64>, u64), Failure> {
    let mut keys = BTreeMap::new();
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
        high_water = high_water.max(source.committed_reservation_high_water_physical_ms);
    }
    for key in &args.keys {
        keys.entry(key.clone()).or_insert(0);
    }
    for key in keys.keys() {
        SeqKey::try_new(key.as_str())
            .map_err(|err| Failure::new(format!("dense key {key:?}: {err}")))?;
    }
    Ok((keys, high_water))
}

/// Observes the oracle and writes NEWDIR pending.
pub(crate) fn exec(args: &Args) -> CmdResult {
    let (keys, receipt_high_water) = keys(args)?;
    refuse_existing(&args.newdir)?;
    let runtime = super::runtime()?;
    let note = runtime.block_on(plan(args, &keys, receipt_high_water))?;
    let text = serde_json::to_string(&note)
        .map_err(|err| Failure::new(format!("cannot encode the pending note: {err}")))?;
    crate::commands::pending::init_pending(
        &args.newdir,
        note.seed_high_water,
        note.dense_cardinality_cap,
        note.dense
            .iter()
            .map(|entry| (entry.key.as_str(), entry.next)),
        &text,
    )?;

    let report = MigrateInReport {
        newdir: args.newdir.display().to_string(),
        pending: true,
        note,
    };
    if args.json {
        return Ok(cli::json_pretty(&report));
    }
    let note = &report.note;
    let mut out = format!(
        "seeded {} PENDING: no server serves it until `tsoracle-file migrate finish {}`\n\
         measured: window at most {} ms (max-safe {} -> {} -> {}), committed high-water at most {} ({}), safe frontier {}\n",
        report.newdir,
        report.newdir,
        note.window.window_bound_ms,
        note.window.max_safe[0],
        note.window.max_safe[1],
        note.window.max_safe[2],
        note.window.high_water_bound,
        cli::utc_text(note.window.high_water_bound),
        note.safe_frontier_physical_ms,
    );
    match &note.leases.not_granted {
        Some(why) => out.push_str(&format!("leases: not granted ({why})\n")),
        None => out.push_str(&format!(
            "leases: granted, TTL at most {} ms, renewals {}; {} grant(s) allowed until the stop\n",
            note.leases.ttl_ceiling_ms,
            if note.leases.renewals_stack {
                "stack (count them in --lease-grants)"
            } else {
                "do not stack"
            },
            note.lease_grants
        )),
    }
    out.push_str(&format!(
        "{} dense key(s), key cap {} (any other key is refused):\n",
        note.dense.len(),
        note.dense_cardinality_cap
    ));
    for entry in &note.dense {
        out.push_str(&format!(
            "  {} = {} (the oracle was at {})\n",
            entry.key, entry.next, entry.oracle_probe
        ));
    }
    out.push_str(&format!(
        "now STOP the oracle at {} (every node, and whatever restarts it), then run \
         `tsoracle-file migrate finish {}`.\n",
        note.from.join(","),
        report.newdir,
    ));
    Ok(out)
}

/// Refuses, before the oracle is touched, a NEWDIR that already holds
/// state or a marker, as the library's `read_state_dir` finds it, or that
/// does not read (`init_from` checks again, under the lock). A NEWDIR that
/// does not exist yet holds nothing.
fn refuse_existing(newdir: &std::path::Path) -> Result<(), Failure> {
    let why = match tsoracle_driver_file::read_state_dir(newdir) {
        Ok(found) => {
            let held = held_state(&found);
            if held.is_empty() {
                return Ok(());
            }
            format!("state already exists there ({})", held.join(", "))
        }
        // No NEWDIR yet: `init_from` makes it.
        Err(FileDriverError::Io {
            op: FileOp::Inspect,
            path,
            source,
            ..
        }) if path == newdir && source.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => format!("what is there does not read: {err}"),
    };
    Err(Failure::new(format!(
        "refusing to seed {}: {why} (a pending `migrate in` is finished with `tsoracle-file migrate finish {}`); nothing was asked of the oracle",
        newdir.display(),
        newdir.display()
    )))
}

/// What of a state directory `init_from` would refuse to seed over: its
/// state files, and the marks and notes of a retired, interrupted or
/// pending directory.
fn held_state(found: &StateDir) -> Vec<String> {
    let mut held = Vec::new();
    if let Some(high_water) = found.high_water {
        held.push(format!("a committed high-water {high_water}"));
    }
    if let Some(dense) = &found.dense {
        held.push(format!("{} dense counter(s)", dense.key_count()));
    }
    if let Some(leases) = &found.leases {
        held.push(format!("a lease set of {}", leases.len()));
    }
    for (flag, what) in [
        (found.retired, "retired"),
        (found.seeding, "an interrupted seed"),
        (found.pending, "pending"),
    ] {
        if flag {
            held.push(what.to_string());
        }
    }
    if held.is_empty()
        && let Some(mark) = found.mark
    {
        held.push(format!("a state record marked {mark:?}"));
    }
    held
}

async fn plan(
    args: &Args,
    keys: &BTreeMap<String, u64>,
    receipt_high_water: u64,
) -> Result<PendingNote, Failure> {
    let target = Target::connect(&args.from, None).await?;
    // Learn the leader first: control-plane calls go to the cached one.
    let first = target.timestamp().await?;
    let mut clock = SourceClock::new(first.physical_ms());

    let leases = measure_leases(&target, args.lease_ttl_ceiling).await?;
    let lease_grants = lease_grants(args, &target, &leases)?;
    let safe_frontier = target
        .client
        .get_safe_frontier()
        .await
        .map(|frontier| frontier.frontier_physical_ms)
        .unwrap_or(0);

    let window = measure_window(
        &target,
        args.window_ms.unwrap_or(0),
        Duration::from_secs(args.measure_limit),
        &mut clock,
    )
    .await?;

    let dense = probe_keys(args, &target, keys).await?;
    // One more timestamp: the latest reading of the oracle's clock.
    let last = target.timestamp().await?;
    clock.saw(last.physical_ms());
    if last.physical_ms() > window.high_water_bound {
        return Err(window_contradicted(
            &target,
            last.physical_ms(),
            window.high_water_bound,
        ));
    }

    Ok(PendingNote {
        schema: PENDING_SCHEMA.into(),
        from: target.endpoints.clone(),
        clock: clock_marks(clock.now_ms()),
        window: window.clone(),
        leases,
        lease_grants,
        failover_advance_ms: args.failover_advance_ms,
        safe_frontier_physical_ms: safe_frontier,
        seed_high_water: window.high_water_bound.max(receipt_high_water),
        dense_cardinality_cap: dense.len() as u64,
        dense,
    })
}

/// How many leases the oracle may still grant before it stops: 0 when it
/// grants none, else --lease-grants, which an oracle that grants leases
/// needs.
fn lease_grants(args: &Args, target: &Target, leases: &LeaseFacts) -> Result<u64, Failure> {
    let grants = match (&leases.not_granted, args.lease_grants) {
        (Some(_), grants) => grants.unwrap_or(0),
        (None, Some(grants)) => grants,
        (None, None) => {
            return Err(Failure::new(format!(
                "the oracle at {} grants leases (TTL up to {} ms; renewals {}): each lease it \
                 grants before it stops can raise its high-water by up to TTL + 1 ms beyond any \
                 clock, and those raises add up, so nothing bounds what it issues until it stops \
                 unless the count is known. Pass --lease-grants N: the acquisitions{} clients may \
                 still make until the oracle is stopped (--lease-grants 0 when no client uses \
                 leases during the migration). Nothing was written",
                target.endpoints.join(","),
                leases.ttl_ceiling_ms,
                if leases.renewals_stack {
                    "stack (3.2.x)"
                } else {
                    "do not stack (3.3.x)"
                },
                if leases.renewals_stack {
                    " and renewals"
                } else {
                    ""
                },
            )));
        }
    };
    Ok(grants)
}

/// Takes (and burns) one value of each dense key: NEWDIR starts
/// --dense-margin above it, and at least at the key's floor.
async fn probe_keys(
    args: &Args,
    target: &Target,
    keys: &BTreeMap<String, u64>,
) -> Result<Vec<DenseSeeded>, Failure> {
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
    Ok(dense)
}

/// The oracle's clock as its timestamps show it: the last physical part
/// seen, and when.
pub(crate) struct SourceClock {
    physical_ms: u64,
    at: Instant,
}

impl SourceClock {
    fn new(physical_ms: u64) -> Self {
        SourceClock {
            physical_ms,
            at: Instant::now(),
        }
    }

    fn saw(&mut self, physical_ms: u64) {
        if physical_ms >= self.now_ms() {
            self.physical_ms = physical_ms;
            self.at = Instant::now();
        }
    }

    /// The later of this machine's clock and the oracle's (its last
    /// physical part plus the time elapsed since).
    pub(crate) fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.at.elapsed().as_millis()).unwrap_or(u64::MAX);
        now_ms().max(self.physical_ms.saturating_add(elapsed))
    }
}

fn window_contradicted(target: &Target, physical: u64, bound: u64) -> Failure {
    Failure::new(format!(
        "the oracle at {} issued physical {physical} ms, above the committed high-water \
         {bound} its max-safe implies: it does not behave as tsoracle-server does (or its \
         leader changed between the readings); nothing was written, run again",
        target.endpoints.join(",")
    ))
}

/// Whether a refusal of a lease call says the oracle has no leases at all.
fn no_leases(err: &ClientError) -> Option<String> {
    match err {
        ClientError::Rpc(status)
            if status.code() == Code::Unimplemented
                || (status.code() == Code::FailedPrecondition
                    && status.message().contains(NOT_ACTIVATED)) =>
        {
            Some(format!("{:?}: {}", status.code(), status.message()))
        }
        _ => None,
    }
}

fn invalid_argument(err: &ClientError) -> bool {
    matches!(err, ClientError::Rpc(status) if status.code() == Code::InvalidArgument)
}

/// Step 1 of the module docs: whether the oracle grants leases, its TTL
/// ceiling, whether its renewals stack.
async fn measure_leases(target: &Target, ceiling: u64) -> Result<LeaseFacts, Failure> {
    let endpoints = target.endpoints.join(",");
    let mut random = [0u8; 2];
    getrandom::fill(&mut random)
        .map_err(|err| Failure::new(format!("cannot draw a random probe epoch: {err}")))?;
    let epoch = now_ms()
        .saturating_mul(1_000)
        .saturating_add(u64::from(u16::from_le_bytes(random) % 1_000));
    // Upstream commits an acquisition's upper bound before it stores the
    // lease, so even an oracle that refuses leases raises its high-water
    // on each attempt: the ceiling is kept (finish uses it when
    // --lease-grants counts such attempts).
    let not_granted = |why: String| LeaseFacts {
        not_granted: Some(why),
        ttl_ceiling_ms: ceiling,
        probe_ttl_ms: 0,
        renewals_stack: false,
        probe_upper_bounds: Vec::new(),
    };
    let acquire = |ttl_ms: u64, epoch: u64| {
        retrying(move || {
            target
                .client
                .acquire_lease(PROBE_HOLDER, epoch, Duration::from_millis(ttl_ms))
        })
    };
    let over = ceiling.saturating_add(1);
    match acquire(over, epoch).await {
        Ok(lease) => {
            let _ = retrying(|| target.client.release_lease(lease.lease_id)).await;
            return Err(Failure::new(format!(
                "the oracle at {endpoints} granted a lease of {over} ms, above \
                 --lease-ttl-ceiling {ceiling}: its lease TTL ceiling is larger; pass it (its \
                 `--lease-ttl-ceiling`, in ms) with --lease-ttl-ceiling. Nothing was written"
            )));
        }
        Err(err) if invalid_argument(&err) => {}
        Err(err) => {
            if let Some(why) = no_leases(&err) {
                return Ok(not_granted(why));
            }
            return Err(target.failure("cannot probe the oracle's lease TTL ceiling", &err));
        }
    }
    let mut ladder: Vec<u64> = [1_000, 5_000, 10_000, 30_000, 60_000, 120_000]
        .into_iter()
        .filter(|ttl| *ttl < ceiling)
        .collect();
    ladder.push(ceiling);
    for (step, ttl) in ladder.into_iter().enumerate() {
        let epoch = epoch.saturating_add(1 + step as u64);
        let lease = match acquire(ttl, epoch).await {
            Ok(lease) => lease,
            Err(err) if invalid_argument(&err) => continue,
            Err(err) => {
                if let Some(why) = no_leases(&err) {
                    return Ok(not_granted(why));
                }
                return Err(target.failure("cannot acquire a probe lease", &err));
            }
        };
        let renewed = retrying(|| target.client.renew_lease(lease.lease_id)).await;
        let released = retrying(|| target.client.release_lease(lease.lease_id)).await;
        let renewed =
            renewed.map_err(|err| target.failure("cannot renew the probe lease", &err))?;
        released.map_err(|err| target.failure("cannot release the probe lease", &err))?;
        let rise = renewed.ts_upper_bound.saturating_sub(lease.ts_upper_bound);
        return Ok(LeaseFacts {
            not_granted: None,
            ttl_ceiling_ms: ceiling,
            probe_ttl_ms: ttl,
            renewals_stack: rise > ttl / 2,
            probe_upper_bounds: vec![lease.ts_upper_bound, renewed.ts_upper_bound],
        });
    }
    Err(Failure::new(format!(
        "the oracle at {endpoints} refused every probe lease TTL up to {ceiling} ms as invalid: \
         cannot tell whether it grants leases; nothing was written"
    )))
}

/// Step 2 of the module docs: max-safe moved twice.
async fn measure_window(
    target: &Target,
    floor_ms: u64,
    limit: Duration,
    clock: &mut SourceClock,
) -> Result<WindowFacts, Failure> {
    let started = Instant::now();
    let endpoints = target.endpoints.join(",");
    let mut seen: Vec<u64> = Vec::new();
    let mut epoch = None;
    let mut highest_ts = 0;
    let mut last_report = Instant::now();
    while seen.len() < 3 {
        if started.elapsed() > limit {
            return Err(Failure::new(format!(
                "the max-safe of the oracle at {endpoints} did not move twice within \
                 --measure-limit {} s (seen: {seen:?}): its window could not be measured. Run \
                 again with a larger --measure-limit (at least three windows); nothing was written",
                limit.as_secs()
            )));
        }
        let ts = target.timestamp().await?;
        highest_ts = highest_ts.max(ts.physical_ms());
        clock.saw(ts.physical_ms());
        let safe = match target.client.get_current_max_safe().await {
            Ok(safe) if safe.max_safe_physical_ms > 0 => safe,
            // A follower (0) or a passing failure: ask again after the
            // next timestamp, which re-learns the leader.
            _ => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if epoch.is_some_and(|epoch| epoch != safe.epoch) {
            // Another leader (maybe with another window): start over.
            seen.clear();
        }
        epoch = Some(safe.epoch);
        if seen.last() != Some(&safe.max_safe_physical_ms) {
            if seen
                .last()
                .is_some_and(|last| *last > safe.max_safe_physical_ms)
            {
                seen.clear();
            }
            seen.push(safe.max_safe_physical_ms);
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!("  measuring the window: max-safe {seen:?}");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let measured = seen[2] - seen[1];
    let window_bound_ms = measured.max(floor_ms);
    let high_water_bound = seen[2].saturating_add(window_bound_ms).saturating_add(1);
    if highest_ts > high_water_bound {
        return Err(window_contradicted(target, highest_ts, high_water_bound));
    }
    Ok(WindowFacts {
        max_safe: [seen[0], seen[1], seen[2]],
        measured_ms: measured,
        floor_ms,
        window_bound_ms,
        high_water_bound,
        measured_in_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}
