//! `migrate finish NEWDIR`: the second half of `migrate in`. Checks that
//! every endpoint of the source oracle no longer answers, then raises the
//! pending NEWDIR's high-water above everything the source could have
//! issued until it stopped, and makes NEWDIR servable.
//!
//! # Why nothing is handed out twice
//!
//! `migrate in` (see [`super::into`]) left in NEWDIR's note: `H`, an upper
//! bound of the source's committed high-water at its observation; the
//! window bound `W` (the measured `m2 - m1`, at least the real window); the
//! lease TTL ceiling `C` (0 when the source grants no lease and no attempt
//! is expected: upstream raises the high-water even for an acquisition it
//! then refuses for want of lease support); `grants`, the leases the
//! source may still grant (`--lease-grants`); the failover
//! advance `A`; the source's clock at the observation. Let `S` be the
//! moment the source stopped and `F` this command's time: the later of this
//! machine's clock and the source's clock carried forward (its last
//! physical part plus the time elapsed since, by the wall clock and, on
//! the same boot, the monotonic uptime; so it runs on the machine that ran
//! `migrate in`: another machine's wall clock behind this one's would
//! shorten the elapsed time). The source is down at `F`: every
//! endpoint refused the connection or timed out, three times, each probed
//! on its own client without retries (a gRPC reply of any kind, even an
//! error status, means "up", and the command refuses naming it, leaving
//! NEWDIR pending). `F` is read just before the first probe: a source
//! that does not answer then (nor at the two probes after) had stopped
//! already. So `S <= F`.
//!
//! 1. The source never issues a timestamp (nor grants a lease upper bound)
//!    above its committed high-water `HW`, and `HW` at the observation is at
//!    most `H`.
//! 2. A window extension commits `max(HW + 1, now) + window` and happens
//!    only when the window is exhausted (`now > HW`), so it commits at most
//!    `now + W <= F + W`. (A window exhausted by using up all 2^18 logical
//!    values of every millisecond up to `HW` is out of reach.)
//! 3. A renewal on 3.3 commits `max(HW, now + ttl) <= max(HW, F + C)`.
//! 4. Every other lease grant (acquisitions, and renewals on 3.2) commits
//!    `max(HW + 1, now) + ttl`: at most `max(HW, F) + 1 + C`. By induction,
//!    after `k` of them `HW <= max(H, F + max(W, C)) + k * (C + 1)`, and 2.
//!    and 3. keep that bound. With at most `grants` of them, at the stop
//!    `HW <= max(H, F + max(W, C)) + grants * (C + 1)`.
//! 5. One leader failover before the stop adds at most `A`.
//!
//! So NEWDIR's high-water is
//! `max(seed, max(H, F + max(W, C)) + 1 + grants * (C + 1) + A)`
//! ([`finish_high_water`]), and a server on NEWDIR issues only above it.
//! Dense counters were settled by `migrate in` (the probe and the margin),
//! and keys outside the seed are refused by its key cap.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tsoracle_client::{ClientBuilder, ClientError, RetryPolicy};
use tsoracle_driver_file::StoppedDir;

use super::into::DenseSeeded;
use crate::cli::now_ms_since_epoch as now_ms;
use crate::cli::{self, CmdResult, Failure};

/// The schema of the pending note `migrate in` leaves in NEWDIR.
pub(crate) const PENDING_SCHEMA: &str = "tsoracle-file.migrate-in-pending/1";

/// How many times each endpoint is probed, and how far apart.
const PROBES: u32 = 3;
const PROBE_PAUSE: Duration = Duration::from_secs(1);
/// How long one probe waits for a connection and a reply.
const PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// The long help of `migrate finish` (`tsoracle-file migrate finish --help`).
pub(crate) const LONG_ABOUT: &str = concat!(
    "Make the pending NEWDIR of `migrate in` servable. Probes every source endpoint on its ",
    "own client, three times about a second apart: only a refused connection, an ",
    "unreachable host or a timeout counts as down; any gRPC reply (even NOT_LEADER) means ",
    "the source still runs, and the command refuses naming it, NEWDIR staying pending. ",
    "Otherwise raises NEWDIR's high-water above everything the source could have issued ",
    "until it stopped (from what `migrate in` measured, the clocks and --lease-grants) and ",
    "lifts the pending mark. Re-running it on a finished directory says so.",
);

/// Arguments of `migrate finish`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The pending state directory `migrate in` wrote
    pub(crate) newdir: PathBuf,
    /// Print the result as JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// What `migrate in` learnt about the source's leases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaseFacts {
    /// Why the source grants no lease (`None`: it grants them).
    pub(crate) not_granted: Option<String>,
    /// The checked TTL ceiling `C` (0 without leases).
    pub(crate) ttl_ceiling_ms: u64,
    /// The TTL of the probe lease.
    pub(crate) probe_ttl_ms: u64,
    /// Whether a renewal raised the probe's upper bound by about a TTL.
    pub(crate) renewals_stack: bool,
    /// The probe's upper bounds: acquired, renewed.
    pub(crate) probe_upper_bounds: Vec<u64>,
}

impl LeaseFacts {
    /// `C` in the bound: the ceiling, but 0 for a source that grants no
    /// lease when no attempt is expected (`grants` 0).
    pub(crate) fn reach_ms(&self, grants: u64) -> u64 {
        if self.not_granted.is_some() && grants == 0 {
            0
        } else {
            self.ttl_ceiling_ms
        }
    }
}

/// What `migrate in` measured of the source's window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WindowFacts {
    /// `m0`, `m1`, `m2`: max-safe, moved twice.
    pub(crate) max_safe: [u64; 3],
    /// `m2 - m1`.
    pub(crate) measured_ms: u64,
    /// `--window-ms`, or 0.
    pub(crate) floor_ms: u64,
    /// `W`: the larger of the two.
    pub(crate) window_bound_ms: u64,
    /// `H = m2 + W + 1`.
    pub(crate) high_water_bound: u64,
    /// How long the measurement took.
    pub(crate) measured_in_ms: u64,
}

/// The source's clock at the end of `migrate in`, and this machine's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClockMarks {
    /// The later of this machine's clock and the source's observed one.
    pub(crate) source_ms: u64,
    /// This machine's wall clock at the same moment.
    pub(crate) local_ms: u64,
    /// This machine's boot id and uptime (Linux), to carry the time
    /// forward without the wall clock.
    pub(crate) boot_id: Option<String>,
    pub(crate) uptime_ms: Option<u64>,
}

/// The note of a pending NEWDIR.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PendingNote {
    pub(crate) schema: String,
    /// Every endpoint of the source.
    pub(crate) from: Vec<String>,
    pub(crate) clock: ClockMarks,
    pub(crate) window: WindowFacts,
    pub(crate) leases: LeaseFacts,
    /// `--lease-grants` (0 without leases).
    pub(crate) lease_grants: u64,
    pub(crate) failover_advance_ms: u64,
    /// `GetSafeFrontier`, for the record.
    pub(crate) safe_frontier_physical_ms: u64,
    /// The high-water NEWDIR was written with.
    pub(crate) seed_high_water: u64,
    pub(crate) dense_cardinality_cap: u64,
    pub(crate) dense: Vec<DenseSeeded>,
}

/// The clock marks for a source clock reading of `source_ms`, now.
pub(crate) fn clock_marks(source_ms: u64) -> ClockMarks {
    let local_ms = now_ms();
    ClockMarks {
        source_ms: source_ms.max(local_ms),
        local_ms,
        boot_id: boot_id(),
        uptime_ms: uptime_ms(),
    }
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
}

fn uptime_ms() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then_some((seconds * 1_000.0) as u64)
}

/// `F`: the later of this machine's clock and the source's clock at
/// `marks`, carried forward by the larger of the wall-clock and (same boot)
/// the uptime elapsed since.
pub(crate) fn finish_time(marks: &ClockMarks, local_now: u64, uptime_now: Option<u64>) -> u64 {
    let wall = local_now.saturating_sub(marks.local_ms);
    let monotonic = match (marks.boot_id.as_deref(), boot_id().as_deref()) {
        (Some(then), Some(now)) if then == now => uptime_now
            .zip(marks.uptime_ms)
            .map(|(now, then)| now.saturating_sub(then))
            .unwrap_or(0),
        _ => 0,
    };
    let elapsed = wall.max(monotonic);
    local_now
        .max(marks.source_ms.saturating_add(elapsed))
        .max(marks.local_ms.saturating_add(elapsed))
}

/// The inputs of the bound, named as in the module docs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoundInputs {
    pub(crate) seed_high_water: u64,
    pub(crate) high_water_bound: u64,
    pub(crate) finish_ms: u64,
    pub(crate) window_bound_ms: u64,
    pub(crate) lease_ttl_ceiling_ms: u64,
    pub(crate) lease_grants: u64,
    pub(crate) failover_advance_ms: u64,
}

/// `max(seed, max(H, F + max(W, C)) + 1 + grants * (C + 1) + A)`,
/// saturating (a bound above the physical maximum is refused when
/// written).
pub(crate) fn finish_high_water(inputs: BoundInputs) -> u64 {
    let reach = inputs.window_bound_ms.max(inputs.lease_ttl_ceiling_ms);
    let base = inputs
        .high_water_bound
        .max(inputs.finish_ms.saturating_add(reach));
    let grants = inputs
        .lease_grants
        .saturating_mul(inputs.lease_ttl_ceiling_ms.saturating_add(1));
    inputs.seed_high_water.max(
        base.saturating_add(1)
            .saturating_add(grants)
            .saturating_add(inputs.failover_advance_ms),
    )
}

/// Whether a probe's outcome means the endpoint answered. Only a
/// transport-level failure (refused, unreachable, timed out) means down: a
/// reply of any kind, even an error status, comes from a running server.
fn answered(outcome: &Result<(), ClientError>) -> bool {
    match outcome {
        Ok(()) => true,
        Err(ClientError::Rpc(status)) => {
            let transport = matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
            ) && (std::error::Error::source(status).is_some()
                || status.message().contains("per_attempt_deadline")
                || status.message().contains("transport error")
                || status.message().contains("tcp connect error"));
            !transport
        }
        Err(
            ClientError::Transport(_)
            | ClientError::TransportFanout(_)
            | ClientError::NoReachableEndpoints,
        ) => false,
        // Anything else (a bad endpoint, a reply the client could not
        // read): not proof of a stop.
        Err(_) => true,
    }
}

/// Probes `url` once on a client of its own, without retries.
async fn probe(url: &str) -> Result<(), ClientError> {
    let policy = RetryPolicy {
        max_attempts: 1,
        per_attempt_deadline: PROBE_DEADLINE,
        overall_deadline: PROBE_DEADLINE,
        ..RetryPolicy::default()
    };
    let client = ClientBuilder::endpoints(vec![url.to_string()])
        .retry_policy(policy)
        .build()
        .await?;
    client.get_current_max_safe().await.map(drop)
}

/// The first endpoint that answered, and how.
async fn still_answering(endpoints: &[String]) -> Option<(String, String)> {
    for round in 0..PROBES {
        if round > 0 {
            tokio::time::sleep(PROBE_PAUSE).await;
        }
        for url in endpoints {
            let outcome = probe(url).await;
            if answered(&outcome) {
                let how = match outcome {
                    Ok(()) => "it replied".to_string(),
                    Err(err) => format!("it replied {err}"),
                };
                return Some((url.clone(), how));
            }
        }
    }
    None
}

/// What `migrate finish` did.
#[derive(Debug, Serialize)]
pub(crate) struct FinishReport {
    pub(crate) newdir: String,
    pub(crate) already_finished: bool,
    pub(crate) high_water: Option<u64>,
    pub(crate) finish_ms: Option<u64>,
}

/// Runs `migrate finish`.
pub(crate) fn exec(args: &Args) -> CmdResult {
    let dir = &args.newdir;
    let stopped = StoppedDir::lock(dir).map_err(|err| Failure::from_error(&err))?;
    let Some(text) = crate::commands::pending::note(&stopped)? else {
        let report = FinishReport {
            newdir: dir.display().to_string(),
            already_finished: true,
            high_water: stopped.high_water(),
            finish_ms: None,
        };
        if args.json {
            return Ok(cli::json_pretty(&report));
        }
        return Ok(format!(
            "{} is not pending: it was finished already (or never seeded by `migrate in`); \
             nothing to do\n",
            dir.display()
        ));
    };
    let note: PendingNote = serde_json::from_str(&text).map_err(|err| {
        Failure::new(format!(
            "{}: the pending note is not one `migrate in` writes ({PENDING_SCHEMA}): {err}",
            dir.display()
        ))
    })?;
    if note.schema != PENDING_SCHEMA {
        return Err(Failure::new(format!(
            "{}: the pending note has schema {:?}, this command reads {PENDING_SCHEMA:?}",
            dir.display(),
            note.schema
        )));
    }
    // F is read before the first probe: a source down at the first probe
    // (and at the two after it) stopped before F.
    let finish_ms = finish_time(&note.clock, now_ms(), uptime_ms());
    let runtime = super::runtime()?;
    if let Some((url, how)) = runtime.block_on(still_answering(&note.from)) {
        return Err(Failure::new(format!(
            "the source oracle still answers at {url} ({how}): stop every node of it (and \
             whatever restarts it), then run `tsoracle-file migrate finish {}` again; {} stays \
             pending",
            dir.display(),
            dir.display()
        )));
    }
    let high_water = finish_high_water(BoundInputs {
        seed_high_water: note.seed_high_water,
        high_water_bound: note.window.high_water_bound,
        finish_ms,
        window_bound_ms: note.window.window_bound_ms,
        lease_ttl_ceiling_ms: note.leases.reach_ms(note.lease_grants),
        lease_grants: note.lease_grants,
        failover_advance_ms: note.failover_advance_ms,
    });
    let written = crate::commands::pending::finish(stopped, high_water)?;
    let report = FinishReport {
        newdir: dir.display().to_string(),
        already_finished: false,
        high_water: Some(written),
        finish_ms: Some(finish_ms),
    };
    if args.json {
        return Ok(cli::json_pretty(&report));
    }
    Ok(format!(
        "finished {}: every endpoint of {} is down; high-water {written} ({}), above \
         everything the source could have issued until it stopped; it may serve now\n",
        dir.display(),
        note.from.join(","),
        cli::utc_text(written)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> BoundInputs {
        BoundInputs {
            seed_high_water: 0,
            high_water_bound: 1_000_000,
            finish_ms: 1_000_000,
            window_bound_ms: 3_000,
            lease_ttl_ceiling_ms: 0,
            lease_grants: 0,
            failover_advance_ms: 1_000,
        }
    }

    #[test]
    fn each_term_of_the_bound_counts() {
        // F + W + 1 + A.
        assert_eq!(finish_high_water(inputs()), 1_000_000 + 3_000 + 1 + 1_000);
        // H dominates when it is above F + W.
        let high = BoundInputs {
            high_water_bound: 2_000_000,
            ..inputs()
        };
        assert_eq!(finish_high_water(high), 2_000_000 + 1 + 1_000);
        // C replaces W when larger, and each grant adds C + 1.
        let leases = BoundInputs {
            lease_ttl_ceiling_ms: 300_000,
            lease_grants: 3,
            ..inputs()
        };
        assert_eq!(
            finish_high_water(leases),
            1_000_000 + 300_000 + 1 + 3 * 300_001 + 1_000
        );
        // The seed is a floor.
        let seed = BoundInputs {
            seed_high_water: 9_000_000,
            ..inputs()
        };
        assert_eq!(finish_high_water(seed), 9_000_000);
    }

    #[test]
    fn the_bound_saturates() {
        let huge = BoundInputs {
            finish_ms: u64::MAX - 5,
            lease_ttl_ceiling_ms: u64::MAX,
            lease_grants: u64::MAX,
            ..inputs()
        };
        assert_eq!(finish_high_water(huge), u64::MAX);
    }

    #[test]
    fn finish_time_is_the_later_clock_carried_forward() {
        let marks = ClockMarks {
            source_ms: 10_000,
            local_ms: 4_000,
            boot_id: None,
            uptime_ms: None,
        };
        // The source was 6 s ahead; 1 s passed on the wall clock.
        assert_eq!(finish_time(&marks, 5_000, None), 11_000);
        // A wall clock stepped back does not move F back.
        assert_eq!(finish_time(&marks, 1_000, None), 10_000);
    }

    #[test]
    fn only_transport_failures_count_as_down() {
        assert!(answered(&Ok(())));
        assert!(answered(&Err(ClientError::Rpc(
            tonic::Status::failed_precondition("not leader")
        ))));
        assert!(answered(&Err(ClientError::Rpc(
            tonic::Status::unavailable("persist: disk")
        ))));
        assert!(!answered(&Err(ClientError::NoReachableEndpoints)));
        assert!(!answered(&Err(ClientError::Rpc(
            tonic::Status::deadline_exceeded("connect exceeded per_attempt_deadline of 2s")
        ))));
    }
}
