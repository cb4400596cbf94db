//! Talking to the other oracle through the public client API
//! (`tsoracle-client`), which is all `migrate out` and `migrate in` use, so
//! they work against any driver's server: openraft, paxos, another file
//! server.
//!
//! The API has no read of a dense counter: the only way to learn where a
//! counter stands is to take a block from it. Every value taken here is
//! *burned*: handed to this tool and to nobody else, so taking one can never
//! make a value be handed out twice; it only leaves a gap.

use std::time::{Duration, Instant};

use tonic::Code;
use tsoracle_client::{Client, ClientBuilder, ClientError, RetryPolicy};
use tsoracle_core::Timestamp;

use crate::cli::Failure;

/// What upstream's server says while a write format is off: "dense sequence
/// format not yet activated (cluster at write version 4, requires 5)", and
/// the same for "dense batch" (6) and, since tsoracle-server 3.3, "lease" (7,
/// `ConsensusError::LeasesNotActivated`).
const NOT_ACTIVATED: &str = "format not yet activated";

/// What upstream's server answers (`UNIMPLEMENTED`) when its driver has no
/// dense sequences at all (upstream's paxos driver).
const DENSE_UNSUPPORTED: &str = "dense sequences are not supported";

/// How often an ambiguous `get_seq` (`SeqUncertain`) is re-probed per key
/// before giving up.
const MAX_UNCERTAIN: u32 = 20;

/// The most `get_seq` calls one key may take to catch up. At the default
/// `--max-seq-count` (65,536) this is 65 billion values; a counter further
/// ahead cannot be carried through the client API in reasonable time.
const MAX_CALLS_PER_KEY: u64 = 1_000_000;

/// How long a call refused for a passing reason (no leader yet, a failover,
/// an unreachable node) is retried before the command gives up.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// Whether a failed call was refused for a passing reason, before anything
/// was committed: retrying it is safe and may succeed. (`SeqUncertain`, the
/// one ambiguous outcome, is handled apart.)
fn passing(err: &ClientError) -> bool {
    match err {
        ClientError::Rpc(status) => match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted => true,
            // A leader that is still settling in (or just lost its place)
            // answers FAILED_PRECONDITION "not leader" without a hint.
            Code::FailedPrecondition => status.message().contains("not leader"),
            _ => false,
        },
        ClientError::NoReachableEndpoints
        | ClientError::Transport(_)
        | ClientError::TransportFanout(_) => true,
        _ => false,
    }
}

/// Runs `call` until it succeeds, fails for good, or [`RETRY_FOR`] passed,
/// backing off from 50 ms to 1 s between attempts.
pub(crate) async fn retrying<T, F, Fut>(mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + RETRY_FOR;
    let mut pause = Duration::from_millis(50);
    // Bounded by the deadline: each pass sleeps at least 50 ms.
    loop {
        match call().await {
            Err(err) if passing(&err) && Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// A connected client and the endpoints it was given.
pub(crate) struct Target {
    pub(crate) client: Client,
    pub(crate) endpoints: Vec<String>,
    /// Shown in the `activate-format` hint; `None` prints a placeholder.
    pub(crate) admin: Option<String>,
    /// The format the whole command needs, when it is above the one a
    /// refusal names: `migrate out` of a directory with live leases needs
    /// the lease format (7) as well as the dense one (5) that its preflight
    /// is refused for, and `--target 7` activates 5, 6 and 7 at once.
    pub(crate) needs_format: Option<(u32, &'static str)>,
}

impl Target {
    /// Connects to `endpoints` (any node of a cluster; the client follows
    /// the leader and its failovers).
    pub(crate) async fn connect(
        endpoints: &[String],
        admin: Option<String>,
    ) -> Result<Target, Failure> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|url| url.trim().to_string())
            .filter(|url| !url.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(Failure::new("no endpoint given"));
        }
        // A leader failover takes a few seconds: ride it out rather than
        // fail half-way (re-running is safe, but needless). One call gives up
        // well inside RETRY_FOR, so `retrying` calls again (a fresh round
        // over every endpoint) rather than spending its whole budget inside
        // the client: a cluster whose nodes all answer "not leader" without
        // a hint for a while (paxos just after its election) is asked again.
        let policy = RetryPolicy {
            max_attempts: 20,
            overall_deadline: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        let client = ClientBuilder::endpoints(endpoints.clone())
            .retry_policy(policy)
            .build()
            .await
            .map_err(|err| {
                Failure::new(format!("cannot connect to {}: {err}", endpoints.join(",")))
            })?;
        Ok(Target {
            client,
            endpoints,
            admin,
            needs_format: None,
        })
    }

    /// A failure naming the endpoints and, for an oracle whose dense, batch
    /// or lease format is not activated, the exact command that activates it.
    pub(crate) fn failure(&self, doing: &str, err: &ClientError) -> Failure {
        if let ClientError::Rpc(status) = err
            && status.code() == Code::Unimplemented
            && status.message().contains(DENSE_UNSUPPORTED)
        {
            return Failure::new(format!(
                "{doing}: the oracle at {} has no dense sequences ({}): it can neither hold dense \
                 counters nor give them back; use an oracle whose driver serves them (openraft \
                 with the dense format activated, or a file server)",
                self.endpoints.join(","),
                status.message()
            ));
        }
        if let ClientError::Rpc(status) = err
            && status.code() == Code::FailedPrecondition
            && status.message().contains(NOT_ACTIVATED)
        {
            let required = required_version(status.message()).unwrap_or(5);
            let (version, why) = match self.needs_format {
                Some((needed, why)) if needed > required => (
                    needed,
                    format!("{why} need format {needed}, and it activates those below it too; "),
                ),
                _ => (required, String::new()),
            };
            let what = status
                .message()
                .split(NOT_ACTIVATED)
                .next()
                .map(str::trim)
                .filter(|what| !what.is_empty())
                .unwrap_or("dense sequence");
            let admin = self
                .admin
                .clone()
                .unwrap_or_else(|| "http://ADMIN_HOST:ADMIN_PORT".to_string());
            let leader = self
                .client
                .cached_leader()
                .map(|leader| format!(" (the leader serves clients at {leader})"))
                .unwrap_or_default();
            return Failure::new(format!(
                "{doing}: the oracle at {} refuses the {what} format: {}; activate the format once, \
                 against the admin address (--admin-listen) of its current leader{leader}, with \
                 `tsoracle admin activate-format --endpoint {admin} --target {version}` \
                 ({why}a follower answers NOT_LEADER, exit 3: try the next node's admin address), \
                 then run this command again (it is safe to re-run)",
                self.endpoints.join(","),
                status.message()
            ));
        }
        Failure::new(format!("{doing} at {}: {err}", self.endpoints.join(",")))
    }

    /// One timestamp.
    pub(crate) async fn timestamp(&self) -> Result<Timestamp, Failure> {
        retrying(|| self.client.get_ts())
            .await
            .map_err(|err| self.failure("cannot get a timestamp", &err))
    }

    /// Takes one value of `key` and returns it (the counter's position),
    /// with how many calls before it ended uncertain (each may have taken
    /// one value below it, burned).
    pub(crate) async fn probe(&self, key: &str) -> Result<(u64, u64), Failure> {
        for uncertain in 0..u64::from(MAX_UNCERTAIN) {
            match retrying(|| self.client.get_seq(key, 1)).await {
                Ok(block) => return Ok((block.start, uncertain)),
                // The value may or may not have been taken: either way it is
                // burned. Probe again to learn where the counter is.
                Err(ClientError::SeqUncertain) => continue,
                Err(err) => {
                    return Err(self.failure(&format!("cannot read dense key {key:?}"), &err));
                }
            }
        }
        Err(Failure::new(format!(
            "dense key {key:?}: {MAX_UNCERTAIN} calls in a row ended uncertain at {}",
            self.endpoints.join(",")
        )))
    }

    /// Advances `key` until the oracle's next value is at least `floor`,
    /// taking (burning) blocks of at most `chunk` values. A counter already
    /// at or past `floor` is left where it is but for the one value the
    /// probe takes.
    pub(crate) async fn advance_to(
        &self,
        key: &str,
        floor: u64,
        chunk: &mut u32,
    ) -> Result<Advance, Failure> {
        let (probe, _) = self.probe(key).await?;
        let mut next = probe.saturating_add(1);
        let needed = floor.saturating_sub(next).div_ceil(u64::from(*chunk));
        if needed > MAX_CALLS_PER_KEY {
            return Err(Failure::new(format!(
                "dense key {key:?}: the oracle at {} is at {probe}, {} values below {floor}; \
                 taking them {} at a time needs {needed} calls, more than the {MAX_CALLS_PER_KEY} \
                 this command makes per key: start the oracle with a larger --max-seq-count \
                 (and pass it with --max-seq-count here)",
                self.endpoints.join(","),
                floor - next,
                *chunk
            )));
        }
        let mut calls = 1u64;
        let mut uncertain = 0u32;
        let mut last_report = Instant::now();
        // Each pass either moves `next` up by at least one, shrinks the
        // chunk (at most 32 times), or counts an uncertain call (at most
        // MAX_UNCERTAIN); and the calls are capped: the loop ends.
        while next < floor {
            if calls > MAX_CALLS_PER_KEY + 64 {
                return Err(Failure::new(format!(
                    "dense key {key:?}: still at {next} of {floor} after {calls} calls (the oracle \
                     refuses blocks larger than {chunk}); re-run with a larger --max-seq-count on the oracle"
                )));
            }
            let want = u32::try_from((floor - next).min(u64::from(*chunk))).unwrap_or(*chunk);
            calls += 1;
            match retrying(|| self.client.get_seq(key, want)).await {
                Ok(block) => next = block.start.saturating_add(u64::from(block.count)),
                Err(ClientError::Rpc(status))
                    if status.code() == Code::InvalidArgument && *chunk > 1 =>
                {
                    // Above the server's --max-seq-count: refused before any
                    // commit. Use its maximum when it says it, else halve.
                    *chunk = max_count(status.message())
                        .filter(|max| *max >= 1 && *max < *chunk)
                        .unwrap_or(*chunk / 2)
                        .max(1);
                }
                Err(ClientError::SeqUncertain) if uncertain < MAX_UNCERTAIN => {
                    uncertain += 1;
                    next = next.max(self.probe(key).await?.0.saturating_add(1));
                }
                Err(err) => {
                    return Err(self.failure(&format!("cannot advance dense key {key:?}"), &err));
                }
            }
            if last_report.elapsed() >= Duration::from_secs(2) {
                eprintln!("  {key}: at {next} of {floor} ({calls} calls)");
                last_report = Instant::now();
            }
        }
        Ok(Advance { probe, next, calls })
    }
}

/// What [`Target::advance_to`] did to one key.
pub(crate) struct Advance {
    /// The value the first call took: the counter's position before.
    pub(crate) probe: u64,
    /// The oracle's next value afterwards.
    pub(crate) next: u64,
    /// `get_seq` calls made.
    pub(crate) calls: u64,
}

/// `requires N` in the not-activated message.
fn required_version(message: &str) -> Option<u32> {
    let rest = message.split("requires ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `exceeds maximum N` in the count-too-large message.
fn max_count(message: &str) -> Option<u32> {
    let rest = message.split("exceeds maximum ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_are_read() {
        assert_eq!(
            required_version(
                "dense sequence format not yet activated (cluster at write version 4, requires 5)"
            ),
            Some(5)
        );
        assert_eq!(
            required_version(
                "lease format not yet activated (cluster at write version 6, requires 7)"
            ),
            Some(7)
        );
        assert_eq!(required_version("something else"), None);
        assert_eq!(
            max_count("sequence count 70000 exceeds maximum 65536"),
            Some(65_536)
        );
        assert_eq!(max_count("sequence count must be >= 1"), None);
    }
}
