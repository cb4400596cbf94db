//! The interop test: `tsoracle-file` against the real upstream `tsoracle`
//! binary (run as an external process on loopback, never linked), in both
//! directions and with upstream's own tools on our directories.
//!
//! 1. Our embedded server on directory A; several client tasks take
//!    timestamps and dense blocks; three leases (one superseded); SIGTERM.
//! 2. A three-node `serve openraft` cluster; `migrate out` before the
//!    formats are activated must refuse, name the `tsoracle admin
//!    activate-format --target 7` command and leave A unmarked; activate
//!    format 7 (leases, and with it 5, dense, and 6, dense batches);
//!    `migrate out A` carries the live leases (the harness, as their
//!    holders, finds each one on the cluster by holder and epoch and keeps
//!    it renewed); A refuses to serve; a re-run is safe; the cluster's
//!    timestamps are all above A's and no dense value repeats.
//! 3. SIGKILL the leader; the same checks across the failover.
//! 4. `migrate in B --lease-grants 2` (it measures the cluster's window
//!    and lease settings) leaves B pending; stragglers still take values
//!    from the cluster, and two leases; `migrate finish B` is refused
//!    while the cluster answers and B stays pending; stop the cluster;
//!    `migrate finish B`; our server on B (and a lease); the same checks
//!    again, and B's timestamps are above the stragglers' lease bounds.
//! 5. Upstream's tools on B, stopped: `tsoracle export file` accepts it and
//!    its receipt equals ours (`tsoracle-file export --receipt`) field for
//!    field but `producer`; `tsoracle serve file` serves B above everything
//!    ours handed out; ours serves B again above everything upstream's did.
//! 6. A three-node `serve paxos` cluster (no dense sequences, no leases):
//!    `migrate out B` is refused before anything is marked and B still
//!    serves; a directory C with timestamps only is carried, and the
//!    cluster's timestamps are above C's.
//! 7. Parity: the same calls to our server and to upstream's `serve file`,
//!    each on a fresh directory, answer alike (epoch 0, the same refusal
//!    codes, the same dense starts).
//! 8. Upstream's `serve file` and `export file` refuse a copy of the
//!    retired A without its `RETIRED` note: the mark in the `state` record
//!    is what fences it.
//!
//! Every wait polls a condition under a deadline; every loop is bounded.
//! Figures go to stdout, and to `figures.json` in the work directory.

mod parity;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use serde_json::Value;
use tsoracle_client::{ClientBuilder, ClientError, RetryPolicy};

type Fallible<T> = Result<T, String>;

const KEYS: [&str; 3] = ["orders", "users", "invoices"];
/// The cluster's window ahead (upstream's default), which `migrate in`
/// must measure at least.
const WINDOW_MS: u64 = 3_000;
/// The clusters' lease TTL ceiling (upstream's default is 300 s). `migrate
/// in` checks it and starts B that far (plus that far again per counted
/// grant) ahead of the clock: kept small so that B's high-water stays
/// within `migrate out`'s default `--wait-limit` (300 s) in phase 6.
const LEASE_TTL_CEILING: &str = "30s";
/// The same in ms, for `migrate in --lease-ttl-ceiling`.
const LEASE_TTL_CEILING_MS: &str = "30000";
/// The leases stragglers acquire from the cluster after `migrate in`:
/// `--lease-grants`.
const STRAGGLER_LEASES: u64 = 2;
/// The leases' TTL. Short (upstream allows 5 s to 300 s): a server reserves
/// a lease's upper bound ahead of its clock, and `migrate out` waits that
/// out; long enough to outlive the cluster's start and the activation.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// The format `migrate out` needs on a 2.4 openraft cluster: 7 (leases);
/// activating it activates 5 (dense sequences) and 6 (dense batches) too.
const FORMAT: u32 = 7;

/// One phase's client load.
#[derive(Clone, Copy)]
struct Load {
    tasks: usize,
    rounds: usize,
    /// Whether to take dense blocks too (not from a paxos cluster).
    dense: bool,
}

/// 8 tasks of 200 rounds.
const FULL: Load = Load {
    tasks: 8,
    rounds: 200,
    dense: true,
};
/// Clients that have not heard of a migration yet, or a short check.
const LIGHT: Load = Load {
    tasks: 2,
    rounds: 40,
    dense: true,
};
/// Timestamps only.
const TS_ONLY: Load = Load {
    dense: false,
    ..FULL
};

fn main() {
    let started = Instant::now();
    match run() {
        Ok(figures) => {
            println!(
                "\ninterop: PASS in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            println!(
                "{}",
                serde_json::to_string_pretty(&figures).unwrap_or_default()
            );
        }
        Err(err) => {
            eprintln!(
                "\ninterop: FAIL after {:.1} s: {err}",
                started.elapsed().as_secs_f64()
            );
            std::process::exit(1);
        }
    }
}

struct Paths {
    upstream: PathBuf,
    server: PathBuf,
    cli: PathBuf,
    work: PathBuf,
}

fn paths() -> Fallible<Paths> {
    let mut args = std::env::args().skip(1);
    let mut found = BTreeMap::new();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        found.insert(flag, PathBuf::from(value));
    }
    let mut take = |flag: &str| {
        found.remove(flag).ok_or(format!(
            "usage: interop --upstream BIN --server BIN --cli BIN --work DIR (missing {flag})"
        ))
    };
    Ok(Paths {
        upstream: take("--upstream")?,
        server: take("--server")?,
        cli: take("--cli")?,
        work: take("--work")?,
    })
}

// ------------------------------------------------------------------ ledger

/// Everything handed out to clients by one lineage of oracles (each
/// carried into the next), by phase.
#[derive(Default)]
struct Ledger {
    /// (phase, timestamp)
    ts: Vec<(String, u64)>,
    /// (phase, key, start, count)
    blocks: Vec<(String, String, u64, u32)>,
}

impl Ledger {
    fn max_ts(&self) -> u64 {
        self.ts.iter().map(|(_, ts)| *ts).max().unwrap_or(0)
    }

    /// Adds a phase's values after checking them against everything before:
    /// every timestamp above every earlier one, every timestamp unique, no
    /// dense value handed out twice.
    fn add(&mut self, phase: &str, got: Took) -> Fallible<PhaseFigures> {
        let before = self.max_ts();
        let min = got
            .ts
            .iter()
            .copied()
            .min()
            .ok_or(format!("{phase}: no timestamp at all"))?;
        let max = got.ts.iter().copied().max().unwrap_or(0);
        if min <= before {
            return Err(format!(
                "{phase}: timestamp {min} (physical {}) is not above the earlier maximum {before} (physical {})",
                min >> 18,
                before >> 18
            ));
        }
        let mut unique = got.ts.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != got.ts.len() {
            return Err(format!(
                "{phase}: {} duplicate timestamps",
                got.ts.len() - unique.len()
            ));
        }
        self.ts
            .extend(got.ts.iter().map(|ts| (phase.to_string(), *ts)));
        let values: u64 = got
            .blocks
            .iter()
            .map(|(_, _, count)| u64::from(*count))
            .sum();
        self.blocks.extend(
            got.blocks
                .iter()
                .map(|(key, start, count)| (phase.to_string(), key.clone(), *start, *count)),
        );
        self.check_dense()?;
        Ok(PhaseFigures {
            phase: phase.to_string(),
            timestamps: got.ts.len() as u64,
            ts_min_physical_ms: min >> 18,
            ts_max_physical_ms: max >> 18,
            dense_blocks: got.blocks.len() as u64,
            dense_values: values,
            errors: got.errors,
            uncertain: got.uncertain,
            seconds: got.seconds,
        })
    }

    fn check_dense(&self) -> Fallible<()> {
        let mut by_key: BTreeMap<&str, Vec<(u64, u32, &str)>> = BTreeMap::new();
        for (phase, key, start, count) in &self.blocks {
            by_key.entry(key).or_default().push((*start, *count, phase));
        }
        for (key, blocks) in &mut by_key {
            blocks.sort_unstable();
            for pair in blocks.windows(2) {
                let (a_start, a_count, a_phase) = pair[0];
                let (b_start, _, b_phase) = pair[1];
                if a_start + u64::from(a_count) > b_start {
                    return Err(format!(
                        "dense {key}: block [{a_start}, +{a_count}) from {a_phase} overlaps the block at {b_start} from {b_phase}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Each key's end of the highest block handed out (its next value).
    fn dense_max(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (_, key, start, count) in &self.blocks {
            let end = start + u64::from(*count);
            let slot = out.entry(key.clone()).or_insert(0);
            *slot = end.max(*slot);
        }
        out
    }

    fn values(&self) -> u64 {
        self.blocks.iter().map(|b| u64::from(b.3)).sum()
    }
}

#[derive(Debug, Serialize)]
struct PhaseFigures {
    phase: String,
    timestamps: u64,
    ts_min_physical_ms: u64,
    ts_max_physical_ms: u64,
    dense_blocks: u64,
    dense_values: u64,
    errors: u64,
    uncertain: u64,
    seconds: f64,
}

/// What one workload took.
#[derive(Default)]
struct Took {
    ts: Vec<u64>,
    /// (key, start, count)
    blocks: Vec<(String, u64, u32)>,
    errors: u64,
    uncertain: u64,
    seconds: f64,
}

// --------------------------------------------------------------- workload

fn client_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 30,
        overall_deadline: Duration::from_secs(30),
        ..RetryPolicy::default()
    }
}

async fn client(endpoints: &[String]) -> Fallible<tsoracle_client::Client> {
    ClientBuilder::endpoints(endpoints.to_vec())
        .retry_policy(client_policy())
        .build()
        .await
        .map_err(|err| format!("connect {endpoints:?}: {err}"))
}

/// Runs a lease call until it succeeds, fails for good or 30 s passed: a
/// follower answers lease calls `FAILED_PRECONDITION "not leader"` (with
/// no hint to follow), and the client tries the next endpoint next time.
async fn leader_call<T, F, Fut>(mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match call().await {
            Err(ClientError::Rpc(status))
                if status.message().contains("not leader") && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// `load.tasks` client tasks, each taking `load.rounds` timestamps (one in
/// four as a batch of 4) and, with `load.dense`, a dense block of 1..=64
/// values every fourth round, on one shared client.
async fn hammer(endpoints: &[String], load: Load) -> Fallible<Took> {
    let client = Arc::new(client(endpoints).await?);
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..load.tasks {
        let client = Arc::clone(&client);
        handles.push(tokio::spawn(async move {
            let mut took = Took::default();
            for round in 0..load.rounds {
                let ts = if round % 4 == 1 {
                    client.get_ts_batch(4).await
                } else {
                    client.get_ts().await.map(|ts| vec![ts])
                };
                match ts {
                    Ok(batch) => took.ts.extend(batch.into_iter().map(|ts| ts.0)),
                    Err(_) => took.errors += 1,
                }
                if load.dense && round % 4 == 0 {
                    let key = KEYS[(task + round) % KEYS.len()];
                    let count = u32::try_from((task * 7 + round * 13) % 64 + 1).unwrap_or(1);
                    match client.get_seq(key, count).await {
                        Ok(block) => took
                            .blocks
                            .push((key.to_string(), block.start, block.count)),
                        // May or may not have been taken: never handed to us.
                        Err(ClientError::SeqUncertain) => took.uncertain += 1,
                        Err(_) => took.errors += 1,
                    }
                }
            }
            took
        }));
    }
    let mut all = Took::default();
    for handle in handles {
        let took = handle.await.map_err(|err| format!("client task: {err}"))?;
        all.ts.extend(took.ts);
        all.blocks.extend(took.blocks);
        all.errors += took.errors;
        all.uncertain += took.uncertain;
    }
    all.seconds = started.elapsed().as_secs_f64();
    let calls = (load.tasks * load.rounds) as u64;
    if all.errors * 10 > calls {
        return Err(format!("{} of {calls} timestamp calls failed", all.errors));
    }
    Ok(all)
}

// -------------------------------------------------------------- processes

/// A child process whose output goes to a log file, and one of its streams
/// (stderr, unless told otherwise) also line by line to a channel; with
/// [`Proc::spawn_split`], its stdout goes to a file of its own. Killed if
/// still running when dropped.
struct Proc {
    name: String,
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

/// Which of a process's streams [`Proc::wait_line`] reads.
#[derive(Clone, Copy, PartialEq)]
enum Watch {
    Stderr,
    /// Upstream's binary logs to stdout.
    Stdout,
}

impl Proc {
    fn spawn(name: &str, command: &mut Command, log: &Path) -> Fallible<Proc> {
        Self::spawn_with(name, command, log, Watch::Stderr, None)
    }

    /// With its stdout to `stdout` instead of the log.
    fn spawn_split(name: &str, command: &mut Command, log: &Path, stdout: &Path) -> Fallible<Proc> {
        Self::spawn_with(name, command, log, Watch::Stderr, Some(stdout))
    }

    fn spawn_with(
        name: &str,
        command: &mut Command,
        log: &Path,
        watch: Watch,
        stdout: Option<&Path>,
    ) -> Fallible<Proc> {
        let file = File::create(log).map_err(|err| format!("create {}: {err}", log.display()))?;
        let to_log = || file.try_clone().map_err(|err| format!("log: {err}"));
        let out = match stdout {
            Some(path) => {
                File::create(path).map_err(|err| format!("create {}: {err}", path.display()))?
            }
            None => to_log()?,
        };
        let (out, err) = match watch {
            Watch::Stderr => (Stdio::from(out), Stdio::piped()),
            Watch::Stdout => (Stdio::piped(), Stdio::from(to_log()?)),
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|err| format!("start {name}: {err}"))?;
        let watched: Box<dyn std::io::Read + Send> = match watch {
            Watch::Stderr => Box::new(child.stderr.take().ok_or("no stderr pipe")?),
            Watch::Stdout => Box::new(child.stdout.take().ok_or("no stdout pipe")?),
        };
        let (sender, lines) = mpsc::channel();
        let mut file = file;
        std::thread::spawn(move || {
            use std::io::Write;
            for line in BufReader::new(watched).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                let _ = sender.send(line);
            }
        });
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            lines,
            log: log.to_path_buf(),
        })
    }

    fn pid(&self) -> Fallible<Pid> {
        let child = self.child.as_ref().ok_or("already reaped")?;
        Ok(Pid::from_raw(i32::try_from(child.id()).map_err(|_| "pid")?))
    }

    /// Waits (bounded) for a stderr line containing `needle`.
    fn wait_line(&self, needle: &str, bound: Duration) -> Fallible<String> {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "{}: no {needle:?} within {bound:?}; log {}",
                        self.name,
                        self.log.display()
                    ));
                }
            }
        }
    }

    /// The process's exit status if it has exited, without waiting.
    fn exited(&mut self) -> Fallible<Option<ExitStatus>> {
        let child = self.child.as_mut().ok_or("already reaped")?;
        child
            .try_wait()
            .map_err(|err| format!("wait {}: {err}", self.name))
    }

    fn signal(&self, signal: Signal) -> Fallible<()> {
        kill(self.pid()?, signal).map_err(|err| format!("{signal} {}: {err}", self.name))
    }

    /// Waits (bounded) for the process to exit; SIGKILLs it past the bound.
    fn wait_exit(mut self, bound: Duration) -> Fallible<ExitStatus> {
        let mut child = self.child.take().ok_or("already reaped")?;
        let deadline = Instant::now() + bound;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{} did not exit within {bound:?}", self.name));
                }
                Err(err) => return Err(format!("wait {}: {err}", self.name)),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The holders of A's live leases while `migrate out` runs: each acquires
/// its lease on the cluster as soon as `migrate out` reports it acquired,
/// and every holder renews every `LEASE_TTL / 4`.
struct LeaseHolders {
    client: tsoracle_client::Client,
    source: ReceiptLeases,
    /// Source lease id -> (holder, epoch, the cluster's lease id).
    held: BTreeMap<u64, (String, u64, u64)>,
    /// When each held lease was last renewed (or acquired): a renewal that
    /// fails is retried at the next round while the lease is younger than
    /// half its TTL (a call can time out on a loaded machine), and fails
    /// the run after that.
    alive: BTreeMap<u64, Instant>,
    renewed: Instant,
    renewals: u64,
}

impl LeaseHolders {
    fn new(client: tsoracle_client::Client, source: ReceiptLeases) -> Self {
        LeaseHolders {
            client,
            source,
            held: BTreeMap::new(),
            alive: BTreeMap::new(),
            renewed: Instant::now(),
            renewals: 0,
        }
    }

    /// Acquires the lease a `migrate out` line reports acquired
    /// ("  lease ID: acquired: lease TARGET_ID on the target, ..."); other
    /// lines are ignored.
    async fn follow(&mut self, line: &str) -> Fallible<()> {
        let Some(id) = line
            .trim()
            .strip_prefix("lease ")
            .and_then(|rest| rest.split_once(": acquired"))
            .and_then(|(id, _)| id.parse::<u64>().ok())
        else {
            return Ok(());
        };
        let (holder, epoch, ttl) = self.source.get(&id).ok_or(format!(
            "migrate out acquired lease {id}, which A does not hold"
        ))?;
        let client = &self.client;
        let lease =
            leader_call(|| client.acquire_lease(holder, *epoch, Duration::from_millis(*ttl)))
                .await
                .map_err(|err| format!("holder of lease {id}: acquire on the cluster: {err}"))?;
        self.held.insert(
            id,
            (
                String::from_utf8_lossy(holder).into_owned(),
                *epoch,
                lease.lease_id,
            ),
        );
        self.alive.insert(id, Instant::now());
        Ok(())
    }

    /// Renews every held lease once a quarter of `LEASE_TTL` has passed.
    async fn renew_if_due(&mut self) -> Fallible<()> {
        if self.renewed.elapsed() < LEASE_TTL / 4 {
            return Ok(());
        }
        for (id, (_, _, target)) in &self.held {
            let client = &self.client;
            match leader_call(|| client.renew_lease(*target)).await {
                Ok(_) => {
                    self.renewals += 1;
                    self.alive.insert(*id, Instant::now());
                }
                Err(err) => {
                    let ttl = self.source.get(id).map_or(0, |(_, _, ttl)| *ttl);
                    let since = self.alive.get(id).map_or(Duration::MAX, Instant::elapsed);
                    if since >= Duration::from_millis(ttl) / 2 {
                        return Err(format!(
                            "holder of lease {id}: renew {target} on the cluster: {err}"
                        ));
                    }
                    println!(
                        "   holder of lease {id}: renew {target} failed ({err}); \
                         retried next round ({} ms since the last renewal)",
                        ms(since)
                    );
                }
            }
        }
        self.renewed = Instant::now();
        Ok(())
    }
}

/// The leases of a stopped-state receipt, by id: holder, holder epoch and
/// TTL in ms, as a holder acquires them again on the target.
type ReceiptLeases = BTreeMap<u64, (Vec<u8>, u64, u64)>;

/// The [`ReceiptLeases`] of `receipt`.
fn receipt_leases(receipt: &Value) -> Fallible<ReceiptLeases> {
    Ok(receipt["leases"]
        .as_array()
        .ok_or("no leases in A's receipt")?
        .iter()
        .map(|lease| {
            let holder_hex = lease["holder_hex"].as_str().unwrap_or_default();
            let holder = (0..holder_hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(&holder_hex[2 * i..2 * i + 2], 16).ok())
                .collect();
            (
                lease["lease_id"].as_u64().unwrap_or(0),
                (
                    holder,
                    lease["holder_epoch"].as_u64().unwrap_or(0),
                    lease["ttl_ms"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect())
}

fn free_port() -> Fallible<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|err| format!("bind: {err}"))?;
    Ok(listener
        .local_addr()
        .map_err(|err| format!("addr: {err}"))?
        .port())
}

/// SIGTERM and a clean exit.
fn stop(proc: Proc) -> Fallible<()> {
    let name = proc.name.clone();
    proc.signal(Signal::SIGTERM)?;
    let status = proc.wait_exit(Duration::from_secs(30))?;
    if !status.success() {
        return Err(format!("{name} exited with {status} after SIGTERM"));
    }
    Ok(())
}

struct Node {
    id: u32,
    service: String,
    admin: String,
    proc: Option<Proc>,
}

/// The upstream consensus drivers the harness runs three nodes of.
#[derive(Clone, Copy, PartialEq)]
enum Consensus {
    Openraft,
    Paxos,
}

/// A node's id and its peer, service and admin ports.
type Spec = (u32, u16, u16, u16);

/// Three `tsoracle serve openraft` (node 1 bootstraps) or `serve paxos`
/// nodes on loopback. A paxos node has no admin endpoint.
fn cluster(paths: &Paths, consensus: Consensus) -> Fallible<Vec<Node>> {
    let mut specs = Vec::new();
    for id in 1..=3u32 {
        specs.push((id, free_port()?, free_port()?, free_port()?));
    }
    let name = match consensus {
        Consensus::Openraft => "openraft",
        Consensus::Paxos => "paxos",
    };
    let join =
        |each: &dyn Fn(&Spec) -> String| specs.iter().map(each).collect::<Vec<_>>().join(",");
    let members = join(&|(id, peer, service, admin)| {
        format!("{id}=127.0.0.1:{peer}/127.0.0.1:{service}/127.0.0.1:{admin}")
    });
    let peers = join(&|(id, peer, _, _)| format!("{id}=127.0.0.1:{peer}"));
    let tso_peers = join(&|(id, _, service, _)| format!("{id}=127.0.0.1:{service}"));
    let mut nodes = Vec::new();
    for &(id, peer, service, admin) in &specs {
        let dir = paths.work.join(format!("{name}-{id}"));
        let mut command = Command::new(&paths.upstream);
        command
            .args(["serve", name])
            .args(["--listen", &format!("127.0.0.1:{service}")])
            .args(["--heartbeat-interval", "0s", "--no-metrics"])
            .args(["--lease-ttl-ceiling", LEASE_TTL_CEILING]);
        match consensus {
            Consensus::Openraft => {
                command
                    .args(["--id", &id.to_string()])
                    .args(["--raft-addr", &format!("127.0.0.1:{peer}")])
                    .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
                    .arg("--raft-dir")
                    .arg(&dir);
                if id == 1 {
                    command.args(["--bootstrap", "--members", &members]);
                }
            }
            Consensus::Paxos => {
                command
                    .args(["--node-id", &id.to_string()])
                    .args(["--peer-listen", &format!("127.0.0.1:{peer}")])
                    .args(["--peers", &peers, "--tso-peers", &tso_peers])
                    .arg("--data-dir")
                    .arg(&dir);
            }
        }
        let proc = Proc::spawn(
            &format!("{name}-node-{id}"),
            &mut command,
            &paths.work.join(format!("{name}-node-{id}.log")),
        )?;
        nodes.push(Node {
            id,
            service: format!("http://127.0.0.1:{service}"),
            admin: format!("http://127.0.0.1:{admin}"),
            proc: Some(proc),
        });
    }
    Ok(nodes)
}

fn endpoints(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| n.proc.is_some())
        .map(|n| n.service.clone())
        .collect()
}

/// SIGTERM every node still running, all at once (a node left without a
/// quorum takes upstream's 15 s shutdown grace to stop); waits (bounded)
/// for each to exit.
fn stop_cluster(nodes: &mut [Node]) -> Fallible<()> {
    let running: Vec<Proc> = nodes.iter_mut().filter_map(|n| n.proc.take()).collect();
    for proc in &running {
        proc.signal(Signal::SIGTERM)?;
    }
    for proc in running {
        proc.wait_exit(Duration::from_secs(30))?;
    }
    Ok(())
}

/// Polls `get_ts` until the oracle answers; returns the time it took and
/// the leader's service endpoint.
async fn wait_serving(endpoints: &[String], bound: Duration) -> Fallible<(Duration, String)> {
    let started = Instant::now();
    let client = client(endpoints).await?;
    let mut last = String::new();
    for _ in 0..1_000 {
        match client.get_ts().await {
            Ok(_) => {
                let leader = client.cached_leader().unwrap_or_default();
                // The client caches `host:port`; the nodes are known by URL.
                let leader = if leader.contains("://") {
                    leader
                } else {
                    format!("http://{leader}")
                };
                return Ok((started.elapsed(), leader));
            }
            Err(err) => last = err.to_string(),
        }
        if started.elapsed() > bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the oracle did not serve within {bound:?}: {last}"))
}

/// Polls `get_seq` until the oracle answers it with anything but "not
/// leader" (a paxos cluster: `UNIMPLEMENTED`); returns how long that took.
/// Nothing is committed by a refused call.
async fn wait_dense_answer(endpoints: &[String], bound: Duration) -> Fallible<Duration> {
    let started = Instant::now();
    let client = client(endpoints).await?;
    let mut last = String::new();
    // One answer is not enough: under load a paxos cluster that answered
    // once has been seen to say "not leader" again 63 ms later. Settled is
    // SETTLED_ANSWERS answers in a row, 100 ms apart.
    const SETTLED_ANSWERS: u32 = 5;
    let mut in_a_row = 0;
    for _ in 0..1_000 {
        match client.get_seq("interop-settled", 1).await {
            Err(ClientError::Rpc(status)) if status.message().contains("not leader") => {
                last = status.message().to_string();
                in_a_row = 0;
            }
            _ => {
                in_a_row += 1;
                if in_a_row == SETTLED_ANSWERS {
                    return Ok(started.elapsed());
                }
            }
        }
        if started.elapsed() > bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "the oracle did not answer dense calls within {bound:?}: {last}"
    ))
}

fn run_cli(paths: &Paths, args: &[&str]) -> Fallible<Output> {
    Command::new(&paths.cli)
        .args(args)
        .output()
        .map_err(|err| format!("run tsoracle-file: {err}"))
}

fn run_upstream(paths: &Paths, args: &[&str]) -> Fallible<Output> {
    Command::new(&paths.upstream)
        .args(args)
        .output()
        .map_err(|err| format!("run tsoracle: {err}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Records a command and its output for the figures (and the README).
fn transcript(command: &str, out: &Output) -> Value {
    serde_json::json!({
        "command": command,
        "exit": out.status.code(),
        "stdout": text(&out.stdout),
        "stderr": text(&out.stderr),
    })
}

fn path_str(path: &Path) -> Fallible<&str> {
    path.to_str()
        .ok_or(format!("{} is not UTF-8", path.display()))
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `tsoracle-file export DIR --receipt`, parsed.
fn our_receipt(paths: &Paths, dir: &Path) -> Fallible<(Value, Output)> {
    let out = run_cli(paths, &["export", path_str(dir)?, "--receipt"])?;
    if !out.status.success() {
        return Err(format!(
            "tsoracle-file export {} --receipt: {}",
            dir.display(),
            text(&out.stderr)
        ));
    }
    let value =
        serde_json::from_slice(&out.stdout).map_err(|err| format!("receipt json: {err}"))?;
    Ok((value, out))
}

/// Every difference between two JSON values, one line each, by path; an
/// object's keys in another order count as a difference too.
fn json_diff(path: &str, ours: &Value, theirs: &Value, out: &mut Vec<String>) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) => json_diff(&format!("{path}.{key}"), value, other, out),
                    None => out.push(format!(
                        "{path}.{key}: ours {value}, upstream has no such field"
                    )),
                }
            }
            for (key, value) in b {
                if !a.contains_key(key) {
                    out.push(format!(
                        "{path}.{key}: upstream {value}, ours has no such field"
                    ));
                }
            }
            let (order_a, order_b): (Vec<&String>, Vec<&String>) = (
                a.keys().filter(|k| b.contains_key(*k)).collect(),
                b.keys().filter(|k| a.contains_key(*k)).collect(),
            );
            if order_a != order_b {
                out.push(format!(
                    "{path}: fields in another order: ours {order_a:?}, upstream {order_b:?}"
                ));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                out.push(format!(
                    "{path}: ours has {} entries, upstream {}",
                    a.len(),
                    b.len()
                ));
            }
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                json_diff(&format!("{path}[{index}]"), x, y, out);
            }
        }
        _ if ours != theirs => out.push(format!("{path}: ours {ours}, upstream {theirs}")),
        _ => {}
    }
}

// ------------------------------------------------------------------- run

fn run() -> Fallible<Value> {
    let paths = paths()?;
    std::fs::create_dir_all(&paths.work).map_err(|err| format!("work dir: {err}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| format!("runtime: {err}"))?;
    runtime.block_on(async {
        let mut run = Run::new(&paths);
        run.scenario().await?;
        Ok(run.figures())
    })
}

/// The scenario's state: what was handed out, and the figures.
struct Run<'a> {
    paths: &'a Paths,
    dir_a: PathBuf,
    dir_b: PathBuf,
    dir_c: PathBuf,
    /// `migrate out A`'s receipt (`--keys-from` for `migrate in B`).
    receipt: PathBuf,
    /// A, the openraft cluster, B, upstream's file server on B, B again.
    main: Ledger,
    /// C, then the paxos cluster: a history of its own.
    paxos: Ledger,
    phases: Vec<PhaseFigures>,
    transcripts: Vec<Value>,
    timings: BTreeMap<&'static str, u64>,
    leases: BTreeMap<&'static str, u64>,
    checks: Vec<String>,
}

impl<'a> Run<'a> {
    fn new(paths: &'a Paths) -> Self {
        Run {
            paths,
            dir_a: paths.work.join("a"),
            dir_b: paths.work.join("b"),
            dir_c: paths.work.join("c"),
            receipt: paths.work.join("migrate-out-receipt.json"),
            main: Ledger::default(),
            paxos: Ledger::default(),
            phases: Vec::new(),
            transcripts: Vec::new(),
            timings: BTreeMap::new(),
            leases: BTreeMap::new(),
            checks: Vec::new(),
        }
    }

    async fn scenario(&mut self) -> Fallible<()> {
        let a_receipt = self.serve_a().await?;
        let mut openraft = self.migrate_out_to_openraft(&a_receipt).await?;
        self.failover(&mut openraft).await?;
        self.migrate_in_b(&mut openraft).await?;
        self.upstream_tools_on_b().await?;
        self.paxos().await?;
        self.parity().await?;
        self.upstream_refuses_marked()?;
        self.print_figures();
        Ok(())
    }

    /// Checks a phase's values against its lineage and records its figures.
    fn add(&mut self, paxos: bool, phase: &str, took: Took) -> Fallible<()> {
        let ledger = if paxos {
            &mut self.paxos
        } else {
            &mut self.main
        };
        let figures = ledger.add(phase, took)?;
        self.phases.push(figures);
        Ok(())
    }

    fn record(&mut self, command: String, out: &Output) {
        self.transcripts.push(transcript(&command, out));
    }

    /// Our embedded server on `dir`; returns it and its endpoint.
    fn file_server(&self, dir: &Path, log: &str) -> Fallible<(Proc, String)> {
        let proc = Proc::spawn(
            log,
            Command::new(&self.paths.server)
                .args(["--listen", "127.0.0.1:0", "--state-dir"])
                .arg(dir)
                .env_remove("TSORACLE_LISTEN")
                .env_remove("TSORACLE_STATE_DIR"),
            &self.paths.work.join(format!("{log}.log")),
        )?;
        let line = proc.wait_line("listening on ", Duration::from_secs(60))?;
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or(format!("unparsable {line:?}"))?;
        Ok((proc, format!("http://{addr}")))
    }

    /// Upstream's `tsoracle serve file` (the published file driver) on
    /// `dir`; returns it and its endpoint once it serves.
    async fn upstream_file_server(&self, dir: &Path, log: &str) -> Fallible<(Proc, String)> {
        let upstream = Proc::spawn_with(
            log,
            Command::new(&self.paths.upstream)
                .args(["serve", "file", "--listen", "127.0.0.1:0", "--state-dir"])
                .arg(dir)
                .args(["--heartbeat-interval", "0s", "--no-metrics"]),
            &self.paths.work.join(format!("{log}.log")),
            Watch::Stdout,
            None,
        )?;
        // "serving on 127.0.0.1:PORT"
        let line = upstream.wait_line("serving on ", Duration::from_secs(60))?;
        let addr = line
            .split("serving on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or(format!("unparsable {line:?}"))?;
        let url = format!("http://{addr}");
        wait_serving(std::slice::from_ref(&url), Duration::from_secs(60)).await?;
        Ok((upstream, url))
    }

    /// Phase 8: a directory this crate fenced is refused by upstream's
    /// driver too, by the mark in its `state` record alone: the retired A
    /// (phase 4 checks the pending B the same way).
    fn upstream_refuses_marked(&mut self) -> Fallible<()> {
        println!("== 8. upstream's driver refuses what this crate fenced");
        let dir_a = self.dir_a.clone();
        self.upstream_refuses_copy(&dir_a, b'R', "retired A")
    }

    /// On a copy of `dir` without its note (`RETIRED`, `PENDING`: only this
    /// crate reads them, and upstream's export refuses any extra file
    /// anyway), whose `state` record carries `mark`: `tsoracle export file`
    /// and `tsoracle serve file` both refuse the record's version, and so
    /// does our `verify`.
    fn upstream_refuses_copy(&mut self, dir: &Path, mark: u8, what: &str) -> Fallible<()> {
        let paths = self.paths;
        let copy = paths
            .work
            .join(format!("{}-without-note", what.replace(' ', "-")));
        let _ = std::fs::remove_dir_all(&copy);
        std::fs::create_dir_all(&copy).map_err(|err| format!("mkdir {}: {err}", copy.display()))?;
        for name in ["LOCK", "state", "dense", "leases"] {
            let from = dir.join(name);
            if from.exists() {
                std::fs::copy(&from, copy.join(name))
                    .map_err(|err| format!("copy {}: {err}", from.display()))?;
            }
        }
        std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|err| format!("chmod {}: {err}", copy.display()))?;
        let state =
            std::fs::read(copy.join("state")).map_err(|err| format!("read state: {err}"))?;
        if state.get(4) != Some(&mark) {
            return Err(format!(
                "{what}'s state record does not carry the mark {:?}: {state:02x?}",
                char::from(mark)
            ));
        }
        let copy_str = path_str(&copy)?;
        let export = run_upstream(paths, &["export", "file", "--state-dir", copy_str])?;
        self.record(
            format!("tsoracle export file --state-dir {copy_str}"),
            &export,
        );
        if export.status.success() || !text(&export.stderr).contains("unsupported version") {
            return Err(format!(
                "upstream's export accepted the {what} record: {} {}",
                export.status,
                text(&export.stderr)
            ));
        }
        println!("   {what} (no note): tsoracle export file refuses it: unsupported version");
        let label = format!("upstream-serve-{}", what.replace(' ', "-"));
        let log = paths.work.join(format!("{label}.log"));
        let serve = Proc::spawn(
            &label,
            Command::new(&paths.upstream)
                .args([
                    "serve",
                    "file",
                    "--listen",
                    "127.0.0.1:0",
                    "--state-dir",
                    copy_str,
                ])
                .args(["--heartbeat-interval", "0s", "--no-metrics"]),
            &log,
        )?;
        let status = serve.wait_exit(Duration::from_secs(30))?;
        let serve_log = std::fs::read_to_string(&log).unwrap_or_default();
        if status.success()
            || serve_log.contains("serving on")
            || !serve_log.contains("unsupported version")
        {
            return Err(format!(
                "upstream's serve file served the {what} record: {status}: {serve_log}"
            ));
        }
        self.transcripts.push(serde_json::json!({
            "command": format!("tsoracle serve file --state-dir {copy_str}"),
            "exit": status.code(),
            "stderr": serve_log,
        }));
        println!("   {what} (no note): tsoracle serve file refuses it: {status}");
        let ours = run_cli(paths, &["verify", copy_str])?;
        if ours.status.success() {
            return Err(format!("tsoracle-file verify accepted the {what} record"));
        }
        println!("   {what} (no note): tsoracle-file verify refuses it too");
        Ok(())
    }

    /// Phase 7: what a client sees, ours against upstream's `serve file`,
    /// each on a fresh directory: the same calls, the same outcomes (epochs,
    /// refusal codes, dense starts; see `parity.rs`).
    async fn parity(&mut self) -> Fallible<()> {
        println!("== 7. parity with upstream's file driver");
        let (ours, ours_url) =
            self.file_server(&self.paths.work.join("parity-ours"), "parity-ours")?;
        let (theirs, theirs_url) = self
            .upstream_file_server(&self.paths.work.join("parity-upstream"), "parity-upstream")
            .await?;
        let compared = parity::compare(&ours_url, &theirs_url).await;
        stop(ours)?;
        stop(theirs)?;
        let probes = compared?;
        self.checks.push(format!(
            "parity: {} calls (epochs, refusal codes, dense starts) answered alike by ours and upstream's serve file",
            probes.len()
        ));
        println!("   {}", self.checks.last().map_or("", String::as_str));
        Ok(())
    }

    /// Our server on `dir`, `load` on it, SIGTERM; checked into a lineage.
    async fn serve_ours(
        &mut self,
        dir: &Path,
        log: &str,
        phase: &str,
        load: Load,
        paxos: bool,
    ) -> Fallible<()> {
        let (server, url) = self.file_server(dir, log)?;
        let took = hammer(std::slice::from_ref(&url), load).await?;
        self.add(paxos, phase, took)?;
        stop(server)
    }

    /// Phase 1: our server on A, clients, three leases (svc-a live; svc-b
    /// at epoch 1, superseded by epoch 2); stopped. Returns A's receipt.
    async fn serve_a(&mut self) -> Fallible<Value> {
        let dir_a = self.dir_a.clone();
        println!("== 1. embedded server on {}", dir_a.display());
        let (server, url) = self.file_server(&dir_a, "file-server-a")?;
        let took = hammer(std::slice::from_ref(&url), FULL).await?;
        self.add(false, "file server A", took)?;
        let leases = client(std::slice::from_ref(&url)).await?;
        for (holder, epoch) in [(&b"svc-a"[..], 1), (&b"svc-b"[..], 1), (&b"svc-b"[..], 2)] {
            leases
                .acquire_lease(holder, epoch, LEASE_TTL)
                .await
                .map_err(|err| format!("acquire a lease on A: {err}"))?;
        }
        stop(server)?;
        let (receipt, out) = our_receipt(self.paths, &dir_a)?;
        self.record(
            format!("tsoracle-file export {} --receipt", dir_a.display()),
            &out,
        );
        let high_water = receipt["committed_reservation_high_water_physical_ms"]
            .as_u64()
            .ok_or("no high-water in A's receipt")?;
        println!(
            "   A's committed high-water {high_water}, max timestamp physical {}",
            self.main.max_ts() >> 18
        );
        Ok(receipt)
    }

    /// Phase 2: the openraft cluster; `migrate out A` refused before the
    /// formats are activated, then carried, leases included; A refused; a
    /// re-run; clients on the cluster.
    async fn migrate_out_to_openraft(&mut self, a_receipt: &Value) -> Fallible<Vec<Node>> {
        let paths = self.paths;
        println!("== 2. three-node openraft cluster");
        let nodes = cluster(paths, Consensus::Openraft)?;
        let (elected, leader) = wait_serving(&endpoints(&nodes), Duration::from_secs(90)).await?;
        self.timings
            .insert("openraft_first_serving_ms", ms(elected));
        println!("   serving after {} ms, leader {leader}", ms(elected));
        let to = endpoints(&nodes).join(",");
        self.migrate_out_refused_before_activation(&to)?;
        self.activate_leases_format(&nodes).await?;
        let held = self
            .migrate_out_holding_leases(&nodes, a_receipt, &to)
            .await?;
        self.check_leases_carried(&nodes, &held).await?;
        self.embedded_server_refuses_a()?;
        self.migrate_out_again(&nodes, a_receipt, &to).await?;
        Ok(nodes)
    }

    /// `migrate out A` before the formats are activated: refused for the
    /// dense format, naming the `activate-format --target 7` command, and
    /// A left unmarked.
    fn migrate_out_refused_before_activation(&mut self, to: &str) -> Fallible<()> {
        let paths = self.paths;
        let dir_a = self.dir_a.clone();
        let out = run_cli(paths, &["migrate", "out", path_str(&dir_a)?, "--to", to])?;
        self.record(
            format!("tsoracle-file migrate out {} --to {to}", dir_a.display()),
            &out,
        );
        // Refused for the dense format (5); A's live leases need 7 as well,
        // and `--target 7` activates 5, 6 and 7 at once.
        let stderr = text(&out.stderr);
        if out.status.success()
            || !stderr.contains("tsoracle admin activate-format --endpoint")
            || !stderr.contains("requires 5")
            || !stderr.contains(&format!("--target {FORMAT}`"))
            || !stderr.contains("nothing was changed")
        {
            return Err(format!(
                "migrate out before activation should refuse with the activate-format command \
                 (--target {FORMAT}) and change nothing: {stderr}"
            ));
        }
        let state_a =
            std::fs::read(dir_a.join("state")).map_err(|err| format!("A's state: {err}"))?;
        if dir_a.join("RETIRED").exists() || state_a.get(4) != Some(&1) {
            return Err("a refused migrate out marked A".into());
        }
        println!("   before activation migrate out refused, A left unmarked");
        Ok(())
    }

    /// `activate-format --target 7` on the cluster, then every node
    /// reports writing format 7 (a follower applies the activation late).
    async fn activate_leases_format(&mut self, nodes: &[Node]) -> Fallible<()> {
        let paths = self.paths;
        let started = Instant::now();
        let record = activate(paths, nodes, FORMAT).await?;
        self.transcripts.push(record);
        self.timings
            .insert("activate_format_ms", ms(started.elapsed()));
        // A follower applies the activation when it applies that log
        // entry: poll until every node reports it, under a deadline.
        let admin = &nodes[0].admin;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = run_upstream(paths, &["admin", "capabilities", "--endpoint", admin])?;
            let table = text(&out.stdout);
            let active: Vec<&str> = table
                .lines()
                .skip(1)
                .filter_map(|line| line.split_whitespace().nth(3))
                .collect();
            if out.status.success() && active.len() == 3 && active.iter().all(|v| *v == "7") {
                self.record(
                    format!("tsoracle admin capabilities --endpoint {admin}"),
                    &out,
                );
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "30 s after activate-format --target {FORMAT} every node should write format 7: {table}{}",
                    text(&out.stderr)
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("   every node writes format {FORMAT} (dense 5, dense batch 6, leases 7)");
        Ok(())
    }

    /// A refuses to serve now: the embedded server exits on the retired A.
    fn embedded_server_refuses_a(&mut self) -> Fallible<()> {
        let paths = self.paths;
        let dir_a = self.dir_a.clone();
        let log = paths.work.join("file-server-a-again.log");
        let refused = Proc::spawn(
            "file-server-a-again",
            Command::new(&paths.server)
                .args(["--listen", "127.0.0.1:0", "--state-dir"])
                .arg(&dir_a),
            &log,
        )?;
        let status = refused.wait_exit(Duration::from_secs(30))?;
        let text_log = std::fs::read_to_string(&log).unwrap_or_default();
        if status.success()
            || !text_log.contains("was migrated to another oracle and must not serve")
        {
            return Err(format!(
                "the embedded server served the retired A: {status}: {text_log}"
            ));
        }
        self.transcripts.push(serde_json::json!({
            "command": format!("embedded-server --state-dir {}", dir_a.display()),
            "exit": status.code(),
            "stderr": text_log,
        }));
        println!("   the embedded server refuses A: {status}");
        Ok(())
    }

    /// Re-running `migrate out A` is safe; clients on the cluster get
    /// values above A's high-water.
    async fn migrate_out_again(
        &mut self,
        nodes: &[Node],
        a_receipt: &Value,
        to: &str,
    ) -> Fallible<()> {
        let paths = self.paths;
        let dir_a = self.dir_a.clone();
        let started = Instant::now();
        let out = run_cli(paths, &["migrate", "out", path_str(&dir_a)?, "--to", to])?;
        self.timings
            .insert("migrate_out_rerun_ms", ms(started.elapsed()));
        if !out.status.success() {
            return Err(format!("re-running migrate out: {}", text(&out.stderr)));
        }
        self.record(
            format!(
                "tsoracle-file migrate out {} --to {to}   # again",
                dir_a.display()
            ),
            &out,
        );

        let took = hammer(&endpoints(nodes), FULL).await?;
        self.add(false, "cluster after migrate out", took)?;
        let a_high_water = a_receipt["committed_reservation_high_water_physical_ms"]
            .as_u64()
            .unwrap_or(u64::MAX);
        if (self.main.max_ts() >> 18) <= a_high_water {
            return Err("the cluster issued nothing above A's high-water".into());
        }
        Ok(())
    }

    /// `migrate out A --receipt` while the harness plays the holders of A's
    /// live leases: as soon as `migrate out` reports a lease acquired, its
    /// holder acquires it on the cluster by holder and epoch (which answers
    /// the live lease, idempotently) and renews it until `migrate out` is
    /// done, as a holder that keeps its lease across the move would (the
    /// wait for the cluster's clock may outlast a TTL). Returns the leases
    /// held: source lease id -> (holder, epoch, the cluster's lease id).
    async fn migrate_out_holding_leases(
        &mut self,
        nodes: &[Node],
        a_receipt: &Value,
        to: &str,
    ) -> Fallible<BTreeMap<u64, (String, u64, u64)>> {
        let paths = self.paths;
        let dir_a = self.dir_a.clone();
        let receipt = self.receipt.clone();
        let mut holders =
            LeaseHolders::new(client(&endpoints(nodes)).await?, receipt_leases(a_receipt)?);
        let stdout = paths.work.join("migrate-out.stdout");
        let started = Instant::now();
        let mut proc = Proc::spawn_split(
            "migrate-out",
            Command::new(&paths.cli)
                .args(["migrate", "out"])
                .arg(&dir_a)
                .args(["--to", to, "--receipt"])
                .arg(&receipt),
            &paths.work.join("migrate-out.log"),
            &stdout,
        )?;
        let deadline = started + Duration::from_secs(300);
        let status = loop {
            while let Ok(line) = proc.lines.try_recv() {
                holders.follow(&line).await?;
            }
            if let Some(status) = proc.exited()? {
                break status;
            }
            if Instant::now() > deadline {
                return Err("migrate out did not finish within 300 s".into());
            }
            holders.renew_if_due().await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.timings.insert("migrate_out_ms", ms(started.elapsed()));
        self.leases
            .insert("holder_renewals_during_migrate_out", holders.renewals);
        let log = std::fs::read_to_string(paths.work.join("migrate-out.log")).unwrap_or_default();
        let out_text = std::fs::read_to_string(&stdout).unwrap_or_default();
        self.transcripts.push(serde_json::json!({
            "command": format!(
                "tsoracle-file migrate out {} --to {to} --receipt {}",
                dir_a.display(),
                receipt.display()
            ),
            "exit": status.code(),
            "stdout": out_text,
            "stderr": log,
        }));
        if !status.success() {
            return Err(format!("migrate out: {log}"));
        }
        println!("{}", out_text.trim_end());
        Ok(holders.held)
    }

    /// Every live lease of A was acquired on the cluster: the receipt names
    /// the cluster's lease, the very one its holder found by holder and
    /// epoch, and the holder still renews it, now to an upper bound above
    /// A's high-water; superseded ones were skipped.
    async fn check_leases_carried(
        &mut self,
        nodes: &[Node],
        held: &BTreeMap<u64, (String, u64, u64)>,
    ) -> Fallible<()> {
        let doc: Value = serde_json::from_slice(
            &std::fs::read(&self.receipt).map_err(|err| format!("read receipt: {err}"))?,
        )
        .map_err(|err| format!("receipt json: {err}"))?;
        self.timings.insert(
            "migrate_out_waited_ms",
            doc["timestamps"]["waited_ms"].as_u64().unwrap_or(0),
        );
        let leases = doc["leases"].as_array().ok_or("no leases in the receipt")?;
        let must_exceed = doc["timestamps"]["must_exceed_physical_ms"]
            .as_u64()
            .ok_or("no must_exceed_physical_ms in the receipt")?;
        let holders = client(&endpoints(nodes)).await?;
        let (mut acquired, mut skipped) = (0u64, 0u64);
        for lease in leases {
            let id = lease["lease_id"].as_u64().unwrap_or(0);
            let action = lease["action"].as_str().unwrap_or_default();
            match (action, lease["target_lease_id"].as_u64()) {
                ("acquired", Some(target)) => {
                    let Some((holder, epoch, found)) = held.get(&id) else {
                        return Err(format!(
                            "lease {id} acquired, but its holder never heard: {lease}"
                        ));
                    };
                    if *found != target {
                        return Err(format!(
                            "lease {id} ({holder} epoch {epoch}): the receipt says the cluster's \
                             lease {target}, its holder found {found}"
                        ));
                    }
                    let renewal =
                        leader_call(|| holders.renew_lease(target))
                            .await
                            .map_err(|err| {
                                format!("renew carried lease {target} on the cluster: {err}")
                            })?;
                    // Granted before the wait, the lease's bound may lie below
                    // A's high-water; renewed now, it lies above.
                    if renewal.ts_upper_bound <= must_exceed {
                        return Err(format!(
                            "carried lease {target} renewed after migrate out: upper bound {} is \
                             not above A's {must_exceed}",
                            renewal.ts_upper_bound
                        ));
                    }
                    acquired += 1;
                }
                (action, None) if action.starts_with("skipped: superseded") => skipped += 1,
                _ => return Err(format!("lease neither carried nor skipped: {lease}")),
            }
        }
        if leases.len() != 3 || acquired != 2 || skipped != 1 {
            return Err(format!(
                "expected 2 live leases carried and 1 superseded skipped: {}",
                doc["leases"]
            ));
        }
        self.leases.insert("live_acquired_on_cluster", acquired);
        self.leases.insert("superseded_skipped", skipped);
        println!(
            "   leases: {acquired} acquired on the cluster (receipt's target_lease_id = the lease \
             its holder finds; renewed {} times meanwhile, and afterwards to an upper bound above \
             A's high-water), {skipped} superseded skipped",
            self.leases["holder_renewals_during_migrate_out"]
        );
        Ok(())
    }

    /// Phase 3: SIGKILL the openraft leader; clients on the two others.
    async fn failover(&mut self, nodes: &mut [Node]) -> Fallible<()> {
        let (_, leader) = wait_serving(&endpoints(nodes), Duration::from_secs(30)).await?;
        let index = nodes
            .iter()
            .position(|n| n.service == leader)
            .ok_or(format!("leader {leader:?} is none of the nodes"))?;
        println!(
            "== 3. SIGKILL the leader, node {} ({leader})",
            nodes[index].id
        );
        let killed = nodes[index].proc.take().ok_or("leader already gone")?;
        killed.signal(Signal::SIGKILL)?;
        killed.wait_exit(Duration::from_secs(10))?;
        let (failover, new_leader) =
            wait_serving(&endpoints(nodes), Duration::from_secs(60)).await?;
        self.timings.insert("failover_ms", ms(failover));
        println!(
            "   serving again after {} ms, leader {new_leader}",
            ms(failover)
        );
        let took = hammer(&endpoints(nodes), FULL).await?;
        self.add(false, "cluster after leader SIGKILL", took)
    }

    /// Phase 4: `migrate in B` (pending), stragglers, `migrate finish`
    /// refused while the cluster answers, stop the cluster, `migrate
    /// finish`, our server on B (and a lease, for upstream's tools to read).
    async fn migrate_in_b(&mut self, nodes: &mut [Node]) -> Fallible<()> {
        println!("== 4. migrate in {}", self.dir_b.display());
        self.migrate_in_pending(nodes)?;
        self.pending_b_refused()?;
        let lease_bound = self.stragglers(nodes).await?;
        self.migrate_finish_b(nodes)?;
        self.serve_b_above(lease_bound).await
    }

    /// `migrate in B --lease-grants 2 --json`: it measures at least the
    /// cluster's window and sees its leases; B is left pending.
    fn migrate_in_pending(&mut self, nodes: &[Node]) -> Fallible<()> {
        let paths = self.paths;
        let dir_b = self.dir_b.clone();
        let from = endpoints(nodes).join(",");
        let started = Instant::now();
        let grants = STRAGGLER_LEASES.to_string();
        let out = run_cli(
            paths,
            &[
                "migrate",
                "in",
                path_str(&dir_b)?,
                "--from",
                &from,
                "--keys-from",
                path_str(&self.receipt)?,
                "--lease-grants",
                &grants,
                "--lease-ttl-ceiling",
                LEASE_TTL_CEILING_MS,
                "--json",
            ],
        )?;
        self.timings.insert("migrate_in_ms", ms(started.elapsed()));
        self.record(
            format!(
                "tsoracle-file migrate in {} --from {from} --keys-from {} --lease-grants {grants} --lease-ttl-ceiling {LEASE_TTL_CEILING_MS} --json",
                dir_b.display(),
                self.receipt.display()
            ),
            &out,
        );
        if !out.status.success() {
            return Err(format!("migrate in: {}", text(&out.stderr)));
        }
        let report: Value = serde_json::from_slice(&out.stdout)
            .map_err(|err| format!("migrate in --json: {err}: {}", text(&out.stdout)))?;
        let window = report
            .pointer("/note/window/window_bound_ms")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("migrate in reported no window: {report}"))?;
        if window < WINDOW_MS {
            return Err(format!(
                "migrate in measured a window of {window} ms, below the cluster's {WINDOW_MS}"
            ));
        }
        if report.pointer("/note/leases/not_granted") != Some(&Value::Null) {
            return Err(format!(
                "migrate in did not see the cluster's leases: {}",
                report["note"]["leases"]
            ));
        }
        self.timings.insert("migrate_in_window_bound_ms", window);
        for (name, pointer) in [
            (
                "migrate_in_window_measured_in_ms",
                "/note/window/measured_in_ms",
            ),
            (
                "migrate_in_lease_ttl_ceiling_ms",
                "/note/leases/ttl_ceiling_ms",
            ),
            (
                "migrate_in_high_water_bound",
                "/note/window/high_water_bound",
            ),
        ] {
            if let Some(value) = report.pointer(pointer).and_then(Value::as_u64) {
                self.timings.insert(name, value);
            }
        }
        println!(
            "   measured window <= {window} ms, leases up to {} ms, renewals stack: {}; B pending",
            report["note"]["leases"]["ttl_ceiling_ms"], report["note"]["leases"]["renewals_stack"]
        );
        Ok(())
    }

    /// The pending B is refused by our `verify` and, by the mark in its
    /// `state` record alone, by upstream's driver.
    fn pending_b_refused(&mut self) -> Fallible<()> {
        let paths = self.paths;
        let dir_b = self.dir_b.clone();
        // B is refused while pending (verify fails on what every open
        // refuses).
        let out = run_cli(paths, &["verify", path_str(&dir_b)?])?;
        if out.status.success() || !text(&out.stderr).contains("pending") {
            return Err(format!(
                "verify accepted B while pending: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            ));
        }
        // Upstream's driver refuses it too, by the record's mark alone.
        self.upstream_refuses_copy(&dir_b, b'P', "pending B")
    }

    /// Stragglers take values and leases from the cluster after `migrate
    /// in`; checked into the lineage. Returns the highest lease upper bound.
    async fn stragglers(&mut self, nodes: &[Node]) -> Fallible<u64> {
        // Clients that have not heard yet: the values they get must be
        // covered, and so must the leases they acquire.
        let took = hammer(&endpoints(nodes), LIGHT).await?;
        self.add(false, "cluster stragglers after migrate in", took)?;
        let stragglers = client(&endpoints(nodes)).await?;
        let mut lease_bound = 0;
        for holder in 0..STRAGGLER_LEASES {
            let name = format!("straggler-{holder}");
            let lease = leader_call(|| stragglers.acquire_lease(name.as_bytes(), 1, LEASE_TTL))
                .await
                .map_err(|err| format!("straggler lease on the cluster: {err}"))?;
            lease_bound = lease_bound.max(lease.ts_upper_bound);
        }
        Ok(lease_bound)
    }

    /// `migrate finish B` is refused while the cluster answers (B stays
    /// pending); stop the cluster; `migrate finish B` succeeds.
    fn migrate_finish_b(&mut self, nodes: &mut [Node]) -> Fallible<()> {
        let paths = self.paths;
        let dir_b = self.dir_b.clone();
        let newdir = path_str(&dir_b)?;
        let out = run_cli(paths, &["migrate", "finish", newdir])?;
        self.record(
            format!("tsoracle-file migrate finish {newdir}   # cluster up"),
            &out,
        );
        if out.status.success() || !text(&out.stderr).contains("still answers") {
            return Err(format!(
                "migrate finish while the cluster serves was not refused: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            ));
        }
        println!("   migrate finish refused while the cluster answers; B stays pending");

        let started = Instant::now();
        stop_cluster(nodes)?;
        self.timings
            .insert("openraft_stop_ms", ms(started.elapsed()));
        let started = Instant::now();
        let out = run_cli(paths, &["migrate", "finish", newdir])?;
        self.timings
            .insert("migrate_finish_ms", ms(started.elapsed()));
        self.record(format!("tsoracle-file migrate finish {newdir}"), &out);
        if !out.status.success() {
            return Err(format!("migrate finish: {}", text(&out.stderr)));
        }
        println!("   {}", text(&out.stdout).trim_end());
        Ok(())
    }

    /// Our server on the finished B: its first timestamp is above the
    /// stragglers' `lease_bound`; clients, checked into the lineage; a
    /// lease (for upstream's tools to read); stopped.
    async fn serve_b_above(&mut self, lease_bound: u64) -> Fallible<()> {
        let dir_b = self.dir_b.clone();
        let (server, url) = self.file_server(&dir_b, "file-server-b")?;
        let b = client(std::slice::from_ref(&url)).await?;
        let first = b
            .get_ts()
            .await
            .map_err(|err| format!("a timestamp from B: {err}"))?;
        if first.physical_ms() <= lease_bound {
            return Err(format!(
                "B issued physical {} ms, not above the stragglers' lease bound {lease_bound}",
                first.physical_ms()
            ));
        }
        self.checks.push(format!(
            "B's first timestamp (physical {}) is above the stragglers' lease upper bounds ({lease_bound})",
            first.physical_ms()
        ));
        println!("   {}", self.checks.last().map_or("", String::as_str));
        let took = hammer(std::slice::from_ref(&url), FULL).await?;
        self.add(false, "file server B", took)?;
        b.acquire_lease(b"svc-c", 1, LEASE_TTL)
            .await
            .map_err(|err| format!("acquire a lease on B: {err}"))?;
        stop(server)
    }

    /// Phase 5: upstream's `export file` and `serve file` on B, then ours.
    async fn upstream_tools_on_b(&mut self) -> Fallible<()> {
        let paths = self.paths;
        let dir_b = self.dir_b.clone();
        println!("== 5. upstream's tools on {}", dir_b.display());

        let (mut ours, out) = our_receipt(paths, &dir_b)?;
        self.record(
            format!("tsoracle-file export {} --receipt", dir_b.display()),
            &out,
        );
        if ours["dense_next_unallocated"]
            .as_object()
            .is_none_or(|dense| dense.is_empty())
            || ours["leases"]
                .as_array()
                .is_none_or(|leases| leases.is_empty())
        {
            return Err(format!("B has no dense key or no lease: {ours}"));
        }
        let out = run_upstream(paths, &["export", "file", "--state-dir", path_str(&dir_b)?])?;
        self.record(
            format!("tsoracle export file --state-dir {}", dir_b.display()),
            &out,
        );
        if !out.status.success() {
            return Err(format!(
                "upstream's export file refused B (exit {:?}): {}",
                out.status.code(),
                text(&out.stderr)
            ));
        }
        let mut theirs: Value = serde_json::from_slice(&out.stdout).map_err(|err| {
            format!(
                "upstream's receipt is not JSON: {err}: {}",
                text(&out.stdout)
            )
        })?;
        let producers = (ours["producer"].take(), theirs["producer"].take());
        let mut diffs = Vec::new();
        json_diff("", &ours, &theirs, &mut diffs);
        if !diffs.is_empty() {
            return Err(format!(
                "upstream's receipt of B differs from ours ({} difference(s), producer aside):\n  {}",
                diffs.len(),
                diffs.join("\n  ")
            ));
        }
        let fields = ours.as_object().map_or(0, |o| o.len());
        self.checks.push(format!(
            "`tsoracle export file` accepts B; its receipt equals ours in all {fields} fields but \
             producer (ours {}, upstream {})",
            producers.0, producers.1
        ));
        println!("   {}", self.checks.last().map_or("", String::as_str));

        // Upstream's file server on B.
        let started = Instant::now();
        let (upstream, url) = self
            .upstream_file_server(&dir_b, "upstream-file-server-b")
            .await?;
        let serving = started.elapsed();
        self.timings
            .insert("upstream_serve_file_first_serving_ms", ms(serving));
        let took = hammer(std::slice::from_ref(&url), FULL).await?;
        self.add(false, "upstream serve file on B", took)?;
        stop(upstream)?;

        // Ours again.
        let dir_b = self.dir_b.clone();
        self.serve_ours(
            &dir_b,
            "file-server-b-again",
            "file server B again",
            FULL,
            false,
        )
        .await
    }

    /// Phase 6: a paxos cluster; `migrate out B` refused before anything is
    /// marked (B has dense keys), B still serves; C (timestamps only)
    /// carried.
    async fn paxos(&mut self) -> Fallible<()> {
        let paths = self.paths;
        println!("== 6. three-node paxos cluster");
        let mut nodes = cluster(paths, Consensus::Paxos)?;
        let (elected, leader) = wait_serving(&endpoints(&nodes), Duration::from_secs(90)).await?;
        self.timings.insert("paxos_first_serving_ms", ms(elected));
        println!("   serving after {} ms, leader {leader}", ms(elected));
        // A paxos cluster that hands out timestamps may still answer dense
        // calls "not leader" (no hint) on every node for a while after its
        // election; the refusal under test is the settled cluster's.
        let settled = wait_dense_answer(&endpoints(&nodes), Duration::from_secs(90)).await?;
        self.timings.insert("paxos_dense_settled_ms", ms(settled));
        println!(
            "   answers dense calls (UNIMPLEMENTED) after {} ms",
            ms(settled)
        );
        let to = endpoints(&nodes).join(",");
        self.paxos_refuses_b(&to).await?;
        self.carry_c_to_paxos(&nodes, &to).await?;
        let started = Instant::now();
        stop_cluster(&mut nodes)?;
        self.timings.insert("paxos_stop_ms", ms(started.elapsed()));
        Ok(())
    }

    /// `migrate out B` (dense keys) to paxos is refused before anything is
    /// marked; B is left unmarked and still serves.
    async fn paxos_refuses_b(&mut self, to: &str) -> Fallible<()> {
        let paths = self.paths;
        let dir_b = self.dir_b.clone();
        let out = run_cli(paths, &["migrate", "out", path_str(&dir_b)?, "--to", to])?;
        self.record(
            format!("tsoracle-file migrate out {} --to {to}", dir_b.display()),
            &out,
        );
        let stderr = text(&out.stderr);
        if out.status.success()
            || !stderr.contains("no dense sequences")
            || !stderr.contains("nothing was changed")
        {
            return Err(format!(
                "migrate out of B (dense keys) to paxos should refuse, saying the cluster has no dense \
                 sequences and nothing was changed: exit {:?}: {stderr}",
                out.status.code()
            ));
        }
        if dir_b.join("RETIRED").exists() {
            return Err("a refused migrate out to paxos marked B".into());
        }
        let out = run_cli(paths, &["inspect", path_str(&dir_b)?, "--json"])?;
        let inspect: Value = serde_json::from_slice(&out.stdout)
            .map_err(|err| format!("inspect json: {err}: {}", text(&out.stderr)))?;
        if !out.status.success() || inspect["retired"] != Value::Bool(false) {
            return Err(format!("inspect B after the refusal: {inspect}"));
        }
        println!("   migrate out of B (dense keys) refused, B left unmarked");
        self.serve_ours(
            &dir_b,
            "file-server-b-after-paxos",
            "file server B after the paxos refusal",
            LIGHT,
            false,
        )
        .await
    }

    /// C (timestamps only, its own history) served, then carried to the
    /// paxos cluster, whose timestamps are checked into C's lineage.
    async fn carry_c_to_paxos(&mut self, nodes: &[Node], to: &str) -> Fallible<()> {
        let paths = self.paths;
        let dir_c = self.dir_c.clone();
        // C: timestamps only, its own history.
        self.serve_ours(
            &dir_c,
            "file-server-c",
            "file server C (timestamps only)",
            TS_ONLY,
            true,
        )
        .await?;
        let started = Instant::now();
        let receipt = paths.work.join("migrate-out-c-receipt.json");
        let out = run_cli(
            paths,
            &[
                "migrate",
                "out",
                path_str(&dir_c)?,
                "--to",
                to,
                "--receipt",
                path_str(&receipt)?,
            ],
        )?;
        self.timings
            .insert("migrate_out_c_to_paxos_ms", ms(started.elapsed()));
        self.record(
            format!(
                "tsoracle-file migrate out {} --to {to} --receipt {}",
                dir_c.display(),
                receipt.display()
            ),
            &out,
        );
        if !out.status.success() {
            return Err(format!("migrate out C to paxos: {}", text(&out.stderr)));
        }
        println!("{}", text(&out.stdout).trim_end());
        let took = hammer(&endpoints(nodes), TS_ONLY).await?;
        self.add(true, "paxos cluster after migrate out C", took)
    }

    fn print_figures(&self) {
        println!(
            "\n{:<40} {:>10} {:>15} {:>15} {:>7} {:>7} {:>6} {:>7}",
            "phase",
            "timestamps",
            "min physical",
            "max physical",
            "blocks",
            "values",
            "errors",
            "seconds"
        );
        for p in &self.phases {
            println!(
                "{:<40} {:>10} {:>15} {:>15} {:>7} {:>7} {:>6} {:>7.2}",
                p.phase,
                p.timestamps,
                p.ts_min_physical_ms,
                p.ts_max_physical_ms,
                p.dense_blocks,
                p.dense_values,
                p.errors + p.uncertain,
                p.seconds
            );
        }
        for (name, ms) in &self.timings {
            println!("{name:<40} {ms:>10} ms");
        }
        for (name, count) in &self.leases {
            println!("leases: {name:<32} {count:>10}");
        }
        for (name, ledger) in [
            ("A -> openraft -> B", &self.main),
            ("C -> paxos", &self.paxos),
        ] {
            println!(
                "== checked {name}: {} timestamps all unique and increasing from phase to phase; \
                 {} dense blocks ({} values) never overlapping",
                ledger.ts.len(),
                ledger.blocks.len(),
                ledger.values()
            );
        }
        for check in &self.checks {
            println!("== checked: {check}");
        }
    }

    fn figures(&self) -> Value {
        let figures = serde_json::json!({
            "phases": self.phases,
            "timings_ms": self.timings,
            "leases": self.leases,
            "total_timestamps": self.main.ts.len() + self.paxos.ts.len(),
            "total_dense_blocks": self.main.blocks.len(),
            "total_dense_values": self.main.values(),
            "dense_next_seen": self.main.dense_max(),
            "checks": self.checks,
            "transcripts": self.transcripts,
        });
        let _ = std::fs::write(
            self.paths.work.join("figures.json"),
            serde_json::to_string_pretty(&figures).unwrap_or_default(),
        );
        figures
    }
}

/// `tsoracle admin activate-format --target FORMAT` against each node's
/// admin endpoint until the leader's accepts it (a follower exits 3).
async fn activate(paths: &Paths, nodes: &[Node], format: u32) -> Fallible<Value> {
    let target = format.to_string();
    let mut last = String::new();
    for _round in 0..20 {
        for node in nodes.iter().filter(|n| n.proc.is_some()) {
            let out = run_upstream(
                paths,
                &[
                    "admin",
                    "activate-format",
                    "--endpoint",
                    &node.admin,
                    "--target",
                    &target,
                ],
            )?;
            if out.status.success() {
                println!(
                    "   activated format {format} through node {} ({})",
                    node.id, node.admin
                );
                return Ok(transcript(
                    &format!(
                        "tsoracle admin activate-format --endpoint {} --target {format}",
                        node.admin
                    ),
                    &out,
                ));
            }
            last = format!(
                "{}: exit {:?}: {}",
                node.admin,
                out.status.code(),
                text(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!(
        "activate-format --target {format} never succeeded: {last}"
    ))
}
