//! The interop test: `tsoracle-file migrate` against a real three-node
//! `tsoracle serve openraft` cluster (the upstream binary, run as an
//! external process on loopback), and back.
//!
//! 1. Our embedded server on directory A; several client tasks take
//!    timestamps and dense blocks; SIGTERM.
//! 2. A three-node cluster; `migrate out` before the dense format is
//!    activated must refuse, name the `tsoracle admin activate-format`
//!    command and leave A unmarked; activate; `migrate out A`; A refuses to
//!    serve; a re-run is safe; the cluster's timestamps are all above A's
//!    and no dense value repeats.
//! 3. SIGKILL the leader; the same checks across the failover.
//! 4. `migrate in B`; stragglers still take values from the cluster; stop
//!    the cluster; our server on B; the same checks again.
//!
//! Every wait polls a condition under a deadline; every loop is bounded.
//! Figures go to stdout, and to `figures.json` in the work directory.

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
use tsoracle_client::{ClientBuilder, ClientError, RetryPolicy};

type Fallible<T> = Result<T, String>;

const KEYS: [&str; 3] = ["orders", "users", "invoices"];
/// The cluster's window ahead (upstream's default), told to `migrate in`.
const WINDOW_MS: u64 = 3_000;

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

/// Everything handed out to clients, by phase.
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

    fn dense_max(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (_, key, start, count) in &self.blocks {
            let end = start + u64::from(*count);
            let slot = out.entry(key.clone()).or_insert(0);
            *slot = end.max(*slot);
        }
        out
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

/// `tasks` client tasks, each taking `rounds` timestamps (one in four as a
/// batch of 4) and a dense block of 1..=64 values every fourth round, on
/// one shared client.
async fn hammer(endpoints: &[String], tasks: usize, rounds: usize) -> Fallible<Took> {
    let client = Arc::new(client(endpoints).await?);
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let client = Arc::clone(&client);
        handles.push(tokio::spawn(async move {
            let mut took = Took::default();
            for round in 0..rounds {
                let ts = if round % 4 == 1 {
                    client.get_ts_batch(4).await
                } else {
                    client.get_ts().await.map(|ts| vec![ts])
                };
                match ts {
                    Ok(batch) => took.ts.extend(batch.into_iter().map(|ts| ts.0)),
                    Err(_) => took.errors += 1,
                }
                if round % 4 == 0 {
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
    let calls = (tasks * rounds) as u64;
    if all.errors * 10 > calls {
        return Err(format!("{} of {calls} timestamp calls failed", all.errors));
    }
    Ok(all)
}

// -------------------------------------------------------------- processes

/// A child process whose output goes to a log file (and, for stderr, also
/// line by line to a channel). Killed if still running when dropped.
struct Proc {
    name: String,
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, command: &mut Command, log: &Path) -> Fallible<Proc> {
        let file = File::create(log).map_err(|err| format!("create {}: {err}", log.display()))?;
        let stdout = file.try_clone().map_err(|err| format!("log: {err}"))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| format!("start {name}: {err}"))?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let (sender, lines) = mpsc::channel();
        let mut file = file;
        std::thread::spawn(move || {
            use std::io::Write;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
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

fn free_port() -> Fallible<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|err| format!("bind: {err}"))?;
    Ok(listener
        .local_addr()
        .map_err(|err| format!("addr: {err}"))?
        .port())
}

/// Our embedded server on `dir`; returns it and its endpoint.
fn file_server(paths: &Paths, dir: &Path, log: &str) -> Fallible<(Proc, String)> {
    let proc = Proc::spawn(
        log,
        Command::new(&paths.server)
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir)
            .env_remove("TSORACLE_LISTEN")
            .env_remove("TSORACLE_STATE_DIR"),
        &paths.work.join(format!("{log}.log")),
    )?;
    let line = proc.wait_line("listening on ", Duration::from_secs(60))?;
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or(format!("unparsable {line:?}"))?;
    Ok((proc, format!("http://{addr}")))
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

/// Three `tsoracle serve openraft` nodes on loopback; node 1 bootstraps.
fn cluster(paths: &Paths) -> Fallible<Vec<Node>> {
    let mut specs = Vec::new();
    for id in 1..=3u32 {
        specs.push((id, free_port()?, free_port()?, free_port()?));
    }
    let members: Vec<String> = specs
        .iter()
        .map(|(id, raft, service, admin)| {
            format!("{id}=127.0.0.1:{raft}/127.0.0.1:{service}/127.0.0.1:{admin}")
        })
        .collect();
    let mut nodes = Vec::new();
    for (id, raft, service, admin) in specs {
        let raft_dir = paths.work.join(format!("raft-{id}"));
        let mut command = Command::new(&paths.upstream);
        command
            .args(["serve", "openraft", "--id", &id.to_string()])
            .args(["--listen", &format!("127.0.0.1:{service}")])
            .args(["--raft-addr", &format!("127.0.0.1:{raft}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .arg("--raft-dir")
            .arg(&raft_dir)
            .args(["--heartbeat-interval", "0s", "--no-metrics"]);
        if id == 1 {
            command.args(["--bootstrap", "--members", &members.join(",")]);
        }
        let proc = Proc::spawn(
            &format!("node-{id}"),
            &mut command,
            &paths.work.join(format!("node-{id}.log")),
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

/// Polls `get_ts` until the cluster answers; returns the time it took and
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
    Err(format!(
        "the cluster did not serve within {bound:?}: {last}"
    ))
}

fn run_cli(paths: &Paths, args: &[&str]) -> Fallible<Output> {
    Command::new(&paths.cli)
        .args(args)
        .output()
        .map_err(|err| format!("run tsoracle-file: {err}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Records a command and its output for the figures (and the README).
fn transcript(command: &str, out: &Output) -> serde_json::Value {
    serde_json::json!({
        "command": command,
        "exit": out.status.code(),
        "stdout": text(&out.stdout),
        "stderr": text(&out.stderr),
    })
}

// ------------------------------------------------------------------- run

fn run() -> Fallible<serde_json::Value> {
    let paths = paths()?;
    std::fs::create_dir_all(&paths.work).map_err(|err| format!("work dir: {err}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| format!("runtime: {err}"))?;
    runtime.block_on(scenario(&paths))
}

async fn scenario(paths: &Paths) -> Fallible<serde_json::Value> {
    let mut ledger = Ledger::default();
    let mut phases = Vec::new();
    let mut transcripts = Vec::new();
    let mut timings = BTreeMap::new();
    let mut lease_figures = BTreeMap::new();
    let dir_a = paths.work.join("a");
    let dir_b = paths.work.join("b");
    let receipt = paths.work.join("migrate-out-receipt.json");
    let (tasks, rounds) = (8, 200);

    // 1. Our server on A.
    println!("== 1. embedded server on {}", dir_a.display());
    let (server, url) = file_server(paths, &dir_a, "file-server-a")?;
    let took = hammer(std::slice::from_ref(&url), tasks, rounds).await?;
    phases.push(ledger.add("file server A", took)?);
    // Leases for migrate out to carry: svc-a live; svc-b at epoch 1, then 2.
    {
        let leases = client(std::slice::from_ref(&url)).await?;
        // Short (upstream allows 5 s to 300 s): a server reserves a lease's
        // upper bound ahead of its clock, and migrate out waits that out.
        let ttl = Duration::from_secs(10);
        for (holder, epoch) in [(&b"svc-a"[..], 1), (&b"svc-b"[..], 1), (&b"svc-b"[..], 2)] {
            leases
                .acquire_lease(holder, epoch, ttl)
                .await
                .map_err(|err| format!("acquire a lease on A: {err}"))?;
        }
    }
    stop(server)?;
    let a_high_water = {
        let out = run_cli(paths, &["export", path_str(&dir_a)?, "--receipt"])?;
        if !out.status.success() {
            return Err(format!("export --receipt: {}", text(&out.stderr)));
        }
        transcripts.push(transcript(
            &format!("tsoracle-file export {} --receipt", dir_a.display()),
            &out,
        ));
        let value: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|err| format!("receipt json: {err}"))?;
        value["committed_reservation_high_water_physical_ms"]
            .as_u64()
            .ok_or("no high-water")?
    };
    println!(
        "   A's committed high-water {a_high_water}, max timestamp physical {}",
        ledger.max_ts() >> 18
    );

    // 2. The cluster, migrate out.
    println!("== 2. three-node openraft cluster");
    let mut nodes = cluster(paths)?;
    let (elected, leader) = wait_serving(&endpoints(&nodes), Duration::from_secs(90)).await?;
    timings.insert("cluster_first_serving_ms", elected.as_millis() as u64);
    println!(
        "   serving after {} ms, leader {leader}",
        elected.as_millis()
    );
    let to = endpoints(&nodes).join(",");

    let out = run_cli(paths, &["migrate", "out", path_str(&dir_a)?, "--to", &to])?;
    transcripts.push(transcript(
        &format!("tsoracle-file migrate out {} --to {to}", dir_a.display()),
        &out,
    ));
    let stderr = text(&out.stderr);
    if out.status.success()
        || !stderr.contains("tsoracle admin activate-format --endpoint")
        || !stderr.contains("--target 5")
    {
        return Err(format!(
            "migrate out before activation should refuse with the activate-format command: {stderr}"
        ));
    }
    if dir_a.join("RETIRED").exists() {
        return Err("a refused migrate out marked A".into());
    }
    println!("   before activation migrate out refused, A left unmarked");

    let activated = activate(paths, &nodes).await?;
    transcripts.push(activated.1);
    timings.insert("activate_format_ms", activated.0.as_millis() as u64);

    let started = Instant::now();
    let out = run_cli(
        paths,
        &[
            "migrate",
            "out",
            path_str(&dir_a)?,
            "--to",
            &to,
            "--receipt",
            path_str(&receipt)?,
        ],
    )?;
    timings.insert("migrate_out_ms", started.elapsed().as_millis() as u64);
    transcripts.push(transcript(
        &format!(
            "tsoracle-file migrate out {} --to {to} --receipt {}",
            dir_a.display(),
            receipt.display()
        ),
        &out,
    ));
    if !out.status.success() {
        return Err(format!("migrate out: {}", text(&out.stderr)));
    }
    println!("{}", text(&out.stdout).trim_end());
    let doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&receipt).map_err(|err| format!("read receipt: {err}"))?,
    )
    .map_err(|err| format!("receipt json: {err}"))?;
    timings.insert(
        "migrate_out_waited_ms",
        doc["timestamps"]["waited_ms"].as_u64().unwrap_or(0),
    );
    // Every live lease was acquired on the cluster (and renews there), or
    // the cluster said it has no leases; superseded ones were skipped.
    let leases = doc["leases"].as_array().ok_or("no leases in the receipt")?;
    let renewer = client(&endpoints(&nodes)).await?;
    let (mut acquired, mut unsupported, mut skipped) = (0u64, 0u64, 0u64);
    for lease in leases {
        let action = lease["action"].as_str().unwrap_or_default();
        if let Some(id) = lease["target_lease_id"].as_u64() {
            renewer
                .renew_lease(id)
                .await
                .map_err(|err| format!("renew carried lease {id} on the cluster: {err}"))?;
            acquired += 1;
        } else if action.starts_with("not carried: the target has no leases") {
            unsupported += 1;
        } else if action.starts_with("skipped") {
            skipped += 1;
        } else {
            return Err(format!("lease neither carried nor skipped: {lease}"));
        }
    }
    if leases.len() != 3 || acquired + unsupported != 2 || skipped != 1 {
        return Err(format!(
            "expected 2 live leases and 1 superseded: {}",
            doc["leases"]
        ));
    }
    lease_figures.insert("live_acquired_on_cluster", acquired);
    lease_figures.insert("live_refused_cluster_has_no_leases", unsupported);
    lease_figures.insert("superseded_skipped", skipped);
    println!(
        "   leases: {acquired} acquired on the cluster, {unsupported} refused as unsupported, {skipped} superseded skipped"
    );

    // A refuses to serve now.
    let refused = Proc::spawn(
        "file-server-a-again",
        Command::new(&paths.server)
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(&dir_a),
        &paths.work.join("file-server-a-again.log"),
    )?;
    let status = refused.wait_exit(Duration::from_secs(30))?;
    let log =
        std::fs::read_to_string(paths.work.join("file-server-a-again.log")).unwrap_or_default();
    if status.success() || !log.contains("was migrated to another oracle and must not serve") {
        return Err(format!(
            "the embedded server served the retired A: {status}: {log}"
        ));
    }
    transcripts.push(serde_json::json!({
        "command": format!("embedded-server --state-dir {}", dir_a.display()),
        "exit": status.code(),
        "stderr": log,
    }));
    println!("   the embedded server refuses A: {status}");

    let started = Instant::now();
    let out = run_cli(paths, &["migrate", "out", path_str(&dir_a)?, "--to", &to])?;
    timings.insert("migrate_out_rerun_ms", started.elapsed().as_millis() as u64);
    if !out.status.success() {
        return Err(format!("re-running migrate out: {}", text(&out.stderr)));
    }
    transcripts.push(transcript(
        &format!(
            "tsoracle-file migrate out {} --to {to}   # again",
            dir_a.display()
        ),
        &out,
    ));

    let took = hammer(&endpoints(&nodes), tasks, rounds).await?;
    phases.push(ledger.add("cluster after migrate out", took)?);
    if (ledger.max_ts() >> 18) <= a_high_water {
        return Err("the cluster issued nothing above A's high-water".into());
    }

    // 3. SIGKILL the leader.
    let (_, leader) = wait_serving(&endpoints(&nodes), Duration::from_secs(30)).await?;
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
    let (failover, new_leader) = wait_serving(&endpoints(&nodes), Duration::from_secs(60)).await?;
    timings.insert("failover_ms", failover.as_millis() as u64);
    println!(
        "   serving again after {} ms, leader {new_leader}",
        failover.as_millis()
    );
    let took = hammer(&endpoints(&nodes), tasks, rounds).await?;
    phases.push(ledger.add("cluster after leader SIGKILL", took)?);

    // 4. migrate in B, stragglers, stop the cluster, our server on B.
    println!("== 4. migrate in {}", dir_b.display());
    let from = endpoints(&nodes).join(",");
    let started = Instant::now();
    let window = WINDOW_MS.to_string();
    let out = run_cli(
        paths,
        &[
            "migrate",
            "in",
            path_str(&dir_b)?,
            "--from",
            &from,
            "--keys-from",
            path_str(&receipt)?,
            "--window-ms",
            &window,
            "--stop-within",
            "60",
        ],
    )?;
    timings.insert("migrate_in_ms", started.elapsed().as_millis() as u64);
    transcripts.push(transcript(
        &format!("tsoracle-file migrate in {} --from {from} --keys-from {} --window-ms {window} --stop-within 60", dir_b.display(), receipt.display()),
        &out,
    ));
    if !out.status.success() {
        return Err(format!("migrate in: {}", text(&out.stderr)));
    }
    println!("{}", text(&out.stdout).trim_end());
    // Clients that have not heard yet: the values they get must be covered.
    let took = hammer(&endpoints(&nodes), 2, 40).await?;
    phases.push(ledger.add("cluster stragglers after migrate in", took)?);
    let started = Instant::now();
    for node in &mut nodes {
        if let Some(proc) = node.proc.take() {
            proc.signal(Signal::SIGTERM)?;
            proc.wait_exit(Duration::from_secs(30))?;
        }
    }
    timings.insert("cluster_stop_ms", started.elapsed().as_millis() as u64);
    let (server, url) = file_server(paths, &dir_b, "file-server-b")?;
    let took = hammer(&[url], tasks, rounds).await?;
    phases.push(ledger.add("file server B", took)?);
    stop(server)?;

    println!(
        "\n{:<38} {:>10} {:>15} {:>15} {:>7} {:>7} {:>6} {:>7}",
        "phase",
        "timestamps",
        "min physical",
        "max physical",
        "blocks",
        "values",
        "errors",
        "seconds"
    );
    for p in &phases {
        println!(
            "{:<38} {:>10} {:>15} {:>15} {:>7} {:>7} {:>6} {:>7.2}",
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
    for (name, ms) in &timings {
        println!("{name:<38} {ms:>10} ms");
    }
    let total_ts = ledger.ts.len();
    let total_values: u64 = ledger.blocks.iter().map(|b| u64::from(b.3)).sum();
    println!(
        "== checked: {total_ts} timestamps all unique and increasing from phase to phase; \
         {} dense blocks ({total_values} values) never overlapping",
        ledger.blocks.len()
    );
    let figures = serde_json::json!({
        "phases": phases,
        "timings_ms": timings,
        "leases": lease_figures,
        "total_timestamps": total_ts,
        "total_dense_blocks": ledger.blocks.len(),
        "total_dense_values": total_values,
        "dense_next_seen": ledger.dense_max(),
        "transcripts": transcripts,
    });
    let _ = std::fs::write(
        paths.work.join("figures.json"),
        serde_json::to_string_pretty(&figures).unwrap_or_default(),
    );
    Ok(figures)
}

/// `tsoracle admin activate-format --target 5` against each node's admin
/// endpoint until the leader's accepts it (a follower exits 3).
async fn activate(paths: &Paths, nodes: &[Node]) -> Fallible<(Duration, serde_json::Value)> {
    let started = Instant::now();
    let mut last = String::new();
    for _round in 0..20 {
        for node in nodes.iter().filter(|n| n.proc.is_some()) {
            let out = Command::new(&paths.upstream)
                .args([
                    "admin",
                    "activate-format",
                    "--endpoint",
                    &node.admin,
                    "--target",
                    "5",
                ])
                .output()
                .map_err(|err| format!("run tsoracle admin: {err}"))?;
            if out.status.success() {
                println!(
                    "   activated the dense format through node {} ({})",
                    node.id, node.admin
                );
                let record = transcript(
                    &format!(
                        "tsoracle admin activate-format --endpoint {} --target 5",
                        node.admin
                    ),
                    &out,
                );
                return Ok((started.elapsed(), record));
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
    Err(format!("activate-format never succeeded: {last}"))
}

fn path_str(path: &Path) -> Fallible<&str> {
    path.to_str()
        .ok_or(format!("{} is not UTF-8", path.display()))
}
