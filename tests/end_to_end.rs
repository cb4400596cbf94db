//! The real `tsoracle-server` (3.3) on a [`FileDriver`], driven by the real
//! `tsoracle-client` (1.3) over loopback: timestamps, batches, dense
//! sequences and leases; a graceful restart in process; and, across a process
//! boundary, the `embedded-server` example killed with SIGKILL round after
//! round, stopped with SIGTERM / SIGINT, and refused a locked directory.
//!
//! All traffic stays on 127.0.0.1, every request loop is bounded, and every
//! wait is on a thing (a channel, the serving state, a log line, an exit)
//! under a generous bound, never on a sleep.
//!
//! The process tests run `target/<profile>/examples/embedded-server`, which
//! `cargo test` builds; with `cargo test --test end_to_end` alone, build it
//! first (`cargo build --example embedded-server`) or an old one is used.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tsoracle_client::Client;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::FileDriver;
use tsoracle_server::{Server, ServerError, ServingState};

/// The bound on any single wait; reached only when something is broken.
const BOUND: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// In-process server
// ---------------------------------------------------------------------------

/// A server running in this process on a loopback ephemeral port.
struct InProcess {
    addr: SocketAddr,
    driver: Arc<FileDriver>,
    stop: oneshot::Sender<()>,
    serve: JoinHandle<Result<(), ServerError>>,
}

/// Opens `dir` and serves it; returns once the server reports `Serving`.
async fn boot(dir: &Path) -> InProcess {
    let driver = FileDriver::open_or_init(dir).expect("open the state directory");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound address");
    let server = Server::builder()
        .consensus_driver(Arc::clone(&driver) as Arc<dyn ConsensusDriver>)
        .build()
        .expect("build the server");
    let mut serving = server.subscribe();
    let (stop, stopped) = oneshot::channel::<()>();
    let serve = tokio::spawn(server.serve_with_listener(listener, async move {
        let _ = stopped.await;
    }));
    timeout(
        BOUND,
        serving.wait_for(|state| matches!(state, ServingState::Serving)),
    )
    .await
    .expect("the server serves within the bound")
    // Drop the read guard at once: the server writes this state on shutdown.
    .map(|_| ())
    .expect("serving-state channel open");
    InProcess {
        addr,
        driver,
        stop,
        serve,
    }
}

impl InProcess {
    async fn client(&self) -> Client {
        Client::connect(vec![format!("http://{}", self.addr)])
            .await
            .expect("build a client")
    }

    /// Stops the server gracefully, then drops the driver and proves the
    /// directory lock is released by reopening it.
    async fn shutdown(self, dir: &Path) {
        let _ = self.stop.send(());
        timeout(BOUND, self.serve)
            .await
            .expect("graceful shutdown within the bound")
            .expect("serve task did not panic")
            .expect("serve ended cleanly");
        let weak = Arc::downgrade(&self.driver);
        drop(self.driver);
        // The server's own handles go with its tasks; a connection task may
        // still be dropping its last one on another worker. Bounded poll.
        let deadline = Instant::now() + BOUND;
        while weak.strong_count() > 0 {
            assert!(
                Instant::now() < deadline,
                "the server kept the driver after shutdown"
            );
            tokio::task::yield_now().await;
        }
        drop(FileDriver::open_or_init(dir).expect("the lock is released after shutdown"));
    }
}

/// Waits (within [`BOUND`]) for a task whose calls must all finish, and
/// returns what it returned.
async fn finished<T>(task: JoinHandle<T>) -> T {
    timeout(BOUND, task)
        .await
        .expect("calls finish")
        .expect("task")
}

/// Asserts `values` is strictly increasing.
fn assert_strictly_increasing(values: &[u64], what: &str) {
    for pair in values.windows(2) {
        assert!(pair[0] < pair[1], "{what}: {} then {}", pair[0], pair[1]);
    }
}

/// Given the blocks `(start, count)` handed out for one key, asserts they
/// tile `first..end` exactly (no overlap, no gap) and returns `end`.
fn assert_tiles(mut blocks: Vec<(u64, u32)>, first: u64, key: &str) -> u64 {
    blocks.sort_unstable();
    let mut next = first;
    for (start, count) in blocks {
        assert_eq!(
            start, next,
            "key {key}: block at {start} but the previous one ended at {next} \
             (below: overlap, above: gap)"
        );
        next = start + u64::from(count);
    }
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_ts_from_32_tasks_is_increasing_per_task_and_globally_unique() {
    const TASKS: usize = 32;
    const PER_TASK: usize = 320; // 10,240 calls in all
    let dir = tempfile::tempdir().expect("temp dir");
    let server = boot(dir.path()).await;
    // Four clients (four connections), eight tasks on each.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(Arc::new(server.client().await));
    }

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let client = Arc::clone(&clients[task % clients.len()]);
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(PER_TASK);
            for _ in 0..PER_TASK {
                seen.push(client.get_ts().await.expect("get_ts").0);
            }
            seen
        }));
    }
    let mut all = HashSet::new();
    let mut max = 0;
    for task in tasks {
        let seen = finished(task).await;
        assert_strictly_increasing(&seen, "one task's timestamps");
        max = max.max(*seen.last().expect("non-empty"));
        for ts in seen {
            assert!(all.insert(ts), "timestamp {ts} handed out twice");
        }
    }
    assert_eq!(all.len(), TASKS * PER_TASK);
    println!(
        "end_to_end: get_ts {} calls from {TASKS} tasks, all unique",
        all.len()
    );

    drop(clients);
    // Every timestamp handed out is covered by the durable high-water.
    let physical = tsoracle_core::Timestamp(max).physical_ms();
    assert!(
        server.driver.high_water() >= physical,
        "high-water {} below an issued physical {physical}",
        server.driver.high_water()
    );
    server.shutdown(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_ts_batch_hands_out_distinct_increasing_runs() {
    const TASKS: usize = 8;
    const BATCHES: usize = 40;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = boot(dir.path()).await;
    let client = Arc::new(server.client().await);

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let client = Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for round in 0..BATCHES {
                let count = 1 + ((task * 7 + round * 13) % 50) as u32;
                let batch = client.get_ts_batch(count).await.expect("get_ts_batch");
                assert_eq!(batch.len(), count as usize, "batch of the size asked");
                seen.extend(batch.into_iter().map(|ts| ts.0));
            }
            seen
        }));
    }
    let mut all = HashSet::new();
    for task in tasks {
        let seen = finished(task).await;
        assert_strictly_increasing(&seen, "one task's batches");
        for ts in seen {
            assert!(all.insert(ts), "timestamp {ts} handed out twice");
        }
    }
    // A single timestamp afterwards is above every batch.
    let after = client.get_ts().await.expect("get_ts").0;
    assert!(all.iter().all(|&ts| ts < after));
    drop(client);
    server.shutdown(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_seq_blocks_from_many_tasks_tile_each_key() {
    const TASKS: usize = 16;
    const PER_TASK: usize = 40;
    const KEYS: [&str; 3] = ["orders", "invoices", "e2e/slash-key"];
    let dir = tempfile::tempdir().expect("temp dir");
    let server = boot(dir.path()).await;
    let client = Arc::new(server.client().await);

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let client = Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            let mut blocks = Vec::new();
            for call in 0..PER_TASK {
                let key = KEYS[(task + call) % KEYS.len()];
                let count = 1 + ((task * 5 + call * 3) % 9) as u32;
                let block = client.get_seq(key, count).await.expect("get_seq");
                assert_eq!(block.count, count, "block of the size asked");
                blocks.push((key, block.start, block.count));
            }
            // One atomic multi-key batch per task as well.
            let batch = client
                .get_seq_batch(&[(KEYS[0], 2), (KEYS[1], 3)])
                .await
                .expect("get_seq_batch");
            blocks.push((KEYS[0], batch[0].start, batch[0].count));
            blocks.push((KEYS[1], batch[1].start, batch[1].count));
            blocks
        }));
    }
    let mut per_key: BTreeMap<&str, Vec<(u64, u32)>> = BTreeMap::new();
    for task in tasks {
        let blocks = finished(task).await;
        for (key, start, count) in blocks {
            per_key.entry(key).or_default().push((start, count));
        }
    }
    drop(client);
    for key in KEYS {
        let blocks = per_key.remove(key).expect("every key was used");
        let handed: u64 = blocks.iter().map(|&(_, count)| u64::from(count)).sum();
        let end = assert_tiles(blocks, 0, key);
        assert_eq!(end, handed);
        // The durable counter is exactly where the blocks ended.
        let seq_key = tsoracle_core::SeqKey::try_new(key).expect("key");
        assert_eq!(
            server.driver.load_dense_seq(&seq_key).await.expect("load"),
            end
        );
    }
    server.shutdown(dir.path()).await;
}

/// What a client sees of the epoch is what the published file driver shows:
/// 0 everywhere (upstream's own `get_seq_returns_contiguous_blocks` test of a
/// file-backed server pins a `GetSeq` reply's epoch to `(0, 0)`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_carry_epoch_zero_as_the_published_file_driver_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = boot(dir.path()).await;
    let client = server.client().await;
    let block = client.get_seq("orders", 3).await.expect("get_seq");
    assert_eq!(block.epoch, 0, "GetSeq epoch");
    let lease = client
        .acquire_lease(b"epoch-holder", 1, Duration::from_secs(30))
        .await
        .expect("acquire");
    assert_eq!(lease.epoch, tsoracle_core::Epoch(0), "AcquireLease epoch");
    let renewal = client.renew_lease(lease.lease_id).await.expect("renew");
    assert_eq!(renewal.epoch, tsoracle_core::Epoch(0), "RenewLease epoch");
    drop(client);
    server.shutdown(dir.path()).await;
}

/// tsoracle-server 3.3 renews a lease to `max(committed, now + ttl)`; 3.2
/// asked `max(committed + 1, now) + ttl`, so each renewal pushed the durable
/// high-water a TTL further ahead of the clock (97 renewals of a 10 s lease
/// in 3 s put it 969 s ahead). Many renewals must leave it within one TTL
/// (plus the server's window) of the clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_renewals_keep_the_high_water_within_one_ttl_of_the_clock() {
    const RENEWALS: u32 = 50;
    let ttl = Duration::from_secs(10);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = boot(dir.path()).await;
    let client = server.client().await;
    let lease = client
        .acquire_lease(b"renewing-holder", 1, ttl)
        .await
        .expect("acquire");
    for _ in 0..RENEWALS {
        client.renew_lease(lease.lease_id).await.expect("renew");
    }
    let now = common::now_ms();
    let ahead = server.driver.high_water().saturating_sub(now);
    // The window ahead is the server's default, 3 s; 50 renewals under the
    // old arithmetic would be 50 TTLs (500 s) ahead.
    let bound = ttl.as_millis() as u64 + 3_000 + 1_000;
    assert!(
        ahead <= bound,
        "after {RENEWALS} renewals of a {ttl:?} lease the high-water is {ahead} ms ahead of the clock (bound {bound} ms)"
    );
    drop(client);
    server.shutdown(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_acquire_renew_release_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = boot(dir.path()).await;
    let client = server.client().await;
    let ttl = Duration::from_secs(60);

    let lease = client
        .acquire_lease(b"e2e-holder", 1, ttl)
        .await
        .expect("acquire");
    assert!(lease.ts_upper_bound > 0);
    assert!(
        lease.ts_upper_bound <= server.driver.high_water(),
        "a lease bound is one the durable high-water has reached"
    );
    // Acquire again for the same (holder, epoch): the same lease.
    let again = client
        .acquire_lease(b"e2e-holder", 1, ttl)
        .await
        .expect("idempotent acquire");
    assert_eq!(again.lease_id, lease.lease_id);
    let stored = server.driver.load_leases().await.expect("load leases");
    assert!(
        stored
            .iter()
            .any(|record| record.lease_id == lease.lease_id && record.holder == b"e2e-holder"),
        "the lease is durable in the driver: {stored:?}"
    );

    let renewal = client.renew_lease(lease.lease_id).await.expect("renew");
    assert!(renewal.expires_at_ms >= lease.expires_at_ms);
    assert_eq!(renewal.epoch, lease.epoch);

    // A second lease that is released, and one that is kept over a restart.
    let gone = client
        .acquire_lease(b"e2e-released", 1, ttl)
        .await
        .expect("acquire the second");
    client.release_lease(gone.lease_id).await.expect("release");
    client
        .release_lease(gone.lease_id)
        .await
        .expect("release is idempotent");
    let stored = server.driver.load_leases().await.expect("load leases");
    assert!(
        stored.iter().all(|record| record.lease_id != gone.lease_id),
        "a released lease is no longer stored: {stored:?}"
    );
    drop(client);
    server.shutdown(dir.path()).await;

    // After a restart the kept lease is still known and renewable.
    let server = boot(dir.path()).await;
    let client = server.client().await;
    let renewal = client
        .renew_lease(lease.lease_id)
        .await
        .expect("renew after the restart");
    assert!(renewal.expires_at_ms >= lease.expires_at_ms);
    client
        .release_lease(lease.lease_id)
        .await
        .expect("release after the restart");
    drop(client);
    server.shutdown(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_restarts_never_rewind_timestamps_or_sequences() {
    const RESTARTS: usize = 4;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut max_ts = 0u64;
    let mut seq_end = 0u64;
    for restart in 0..=RESTARTS {
        let server = boot(dir.path()).await;
        let client = Arc::new(server.client().await);
        // Concurrent timestamps and dense blocks in every life.
        let mut tasks = Vec::new();
        for task in 0..8u32 {
            let client = Arc::clone(&client);
            tasks.push(tokio::spawn(async move {
                let mut ts = Vec::new();
                let mut blocks = Vec::new();
                for call in 0..25u32 {
                    ts.push(client.get_ts().await.expect("get_ts").0);
                    let count = 1 + (task + call) % 4;
                    let block = client.get_seq("restart", count).await.expect("get_seq");
                    blocks.push((block.start, block.count));
                }
                ts.extend(
                    client
                        .get_ts_batch(16)
                        .await
                        .expect("batch")
                        .into_iter()
                        .map(|t| t.0),
                );
                (ts, blocks)
            }));
        }
        let mut life_ts = Vec::new();
        let mut life_blocks = Vec::new();
        for task in tasks {
            let (ts, blocks) = finished(task).await;
            assert_strictly_increasing(&ts, "one task's timestamps");
            life_ts.extend(ts);
            life_blocks.extend(blocks);
        }
        let lowest = *life_ts.iter().min().expect("some timestamps");
        assert!(
            lowest > max_ts,
            "life {restart}: timestamp {lowest} at or below {max_ts} issued before the restart"
        );
        max_ts = *life_ts.iter().max().expect("some timestamps");
        // This life's blocks continue exactly where the last life's ended.
        seq_end = assert_tiles(life_blocks, seq_end, "restart");
        drop(client);
        server.shutdown(dir.path()).await;
    }
}

// ---------------------------------------------------------------------------
// The example binary, across a process boundary
// ---------------------------------------------------------------------------

/// One running `embedded-server` process, its stderr read line by line.
struct ChildServer {
    /// `None` once reaped.
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl ChildServer {
    fn spawn(dir: &Path) -> ChildServer {
        let mut child = Command::new(common::example_binary("embedded-server"))
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir)
            // The defaults from the environment must not leak into the test.
            .env_remove("TSORACLE_LISTEN")
            .env_remove("TSORACLE_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the example server");
        let stderr = child.stderr.take().expect("piped stderr");
        let (sender, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().expect("log").push(line.clone());
                // The receiver may be gone; the log still keeps every line.
                let _ = sender.send(line);
            }
        });
        ChildServer {
            child: Some(child),
            lines,
            log,
        }
    }

    /// Waits for `listening on ADDR` and returns ADDR.
    fn wait_listening(&mut self) -> SocketAddr {
        let deadline = Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no `listening on` line; the server said: {:?}",
                    self.log.lock().expect("log")
                )
            });
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                return addr
                    .parse()
                    .unwrap_or_else(|_| panic!("unparsable address in {line:?}"));
            }
        }
    }

    fn pid(&self) -> nix::unistd::Pid {
        let child = self.child.as_ref().expect("server not reaped yet");
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"))
    }

    /// Waits for the process to exit on its own, within the bound; returns
    /// its status and everything it wrote to stderr.
    fn wait_exit(mut self) -> (ExitStatus, String) {
        let pid = self.pid();
        let mut child = self.child.take().expect("server not reaped yet");
        let (done, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(child.wait());
        });
        let status = match exited.recv_timeout(BOUND) {
            Ok(status) => status.expect("wait for the server"),
            Err(_) => {
                // Do not leave it running; the waiter thread reaps it.
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                panic!("server {pid} did not exit within the bound");
            }
        };
        // The reader thread ends at EOF, once the process is gone.
        while self.lines.recv_timeout(BOUND).is_ok() {}
        let text = self.log.lock().expect("log").join("\n");
        (status, text)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("send a signal to the server");
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    fn kill(mut self) {
        let mut child = self.child.take().expect("server not reaped yet");
        child.kill().expect("SIGKILL the server");
        child.wait().expect("reap the server");
    }
}

impl Drop for ChildServer {
    /// A test that fails midway must not leave a server running.
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the hammers of one life were answered before the kill.
#[derive(Default)]
struct Acked {
    timestamps: Vec<u64>,
    blocks: Vec<(u64, u32)>,
}

async fn connect(addr: SocketAddr) -> Client {
    Client::connect(vec![format!("http://{addr}")])
        .await
        .expect("build a client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_rounds_never_hand_out_a_value_twice() {
    const ROUNDS: usize = 20;
    const BEFORE_KILL: usize = 100;
    const HAMMER_LIMIT: usize = 20_000;
    const HAMMERS: usize = 4;
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut max_ts = 0u64;
    let mut seq_end = 0u64;
    let mut calls = 0usize;
    let mut values = 0usize;
    let mut regressions = 0usize;

    for round in 0..ROUNDS {
        let mut server = ChildServer::spawn(dir.path());
        let addr = server.wait_listening();
        let client = Arc::new(connect(addr).await);

        // Sequential calls of each kind, checked against every earlier life.
        let mut life = Vec::new();
        for _ in 0..5 {
            life.push(client.get_ts().await.expect("get_ts").0);
        }
        life.extend(
            client
                .get_ts_batch(8)
                .await
                .expect("batch")
                .into_iter()
                .map(|t| t.0),
        );
        let block = client.get_seq("kill", 7).await.expect("get_seq");
        calls += 5 + 1 + 1;
        if block.start < seq_end {
            regressions += 1;
        }
        assert!(
            block.start >= seq_end,
            "round {round}: dense block at {} below {seq_end} handed out before",
            block.start
        );
        seq_end = block.start + u64::from(block.count);

        // Then calls in flight while the process is killed: every one that
        // was answered counts, and the next life must be above all of them.
        let acked = Arc::new(Mutex::new(Acked::default()));
        let (enough, enough_rx) = oneshot::channel::<()>();
        let enough = Arc::new(Mutex::new(Some(enough)));
        let mut hammers = Vec::new();
        for hammer in 0..HAMMERS {
            let client = Arc::clone(&client);
            let acked = Arc::clone(&acked);
            let enough = Arc::clone(&enough);
            hammers.push(tokio::spawn(async move {
                for _ in 0..HAMMER_LIMIT {
                    // One of the hammers takes dense blocks, the others timestamps.
                    let answered = if hammer == 0 {
                        let Ok(block) = client.get_seq("kill", 3).await else {
                            break;
                        };
                        let mut acked = acked.lock().expect("acked");
                        acked.blocks.push((block.start, block.count));
                        acked.timestamps.len()
                    } else {
                        let Ok(ts) = client.get_ts().await else { break };
                        let mut acked = acked.lock().expect("acked");
                        acked.timestamps.push(ts.0);
                        acked.timestamps.len()
                    };
                    if answered >= BEFORE_KILL
                        && let Some(enough) = enough.lock().expect("enough").take()
                    {
                        let _ = enough.send(());
                    }
                }
            }));
        }
        timeout(BOUND, enough_rx)
            .await
            .expect("calls answered before the kill")
            .expect("hammers running");
        // Calls are in flight on every hammer when the process dies.
        server.kill();
        for hammer in hammers {
            hammer.abort();
            let _ = hammer.await;
        }
        let acked = std::mem::take(&mut *acked.lock().expect("acked"));
        calls += acked.timestamps.len() + acked.blocks.len();
        life.extend(acked.timestamps);
        // The dense blocks answered in this life follow the first one exactly.
        seq_end = assert_tiles(acked.blocks, seq_end, "kill");
        values += life.len();
        let below = life.iter().filter(|&&ts| ts <= max_ts).count();
        regressions += below;
        assert_eq!(
            below, 0,
            "round {round}: {below} timestamps at or below {max_ts} from before the kill"
        );
        assert_strictly_increasing(&life[..5], "sequential timestamps");
        max_ts = max_ts.max(*life.iter().max().expect("some timestamps"));
    }
    println!(
        "end_to_end: {ROUNDS} kill rounds, {calls} calls, {values} timestamps checked, \
         {regressions} regressions, {:.1?}",
        started.elapsed()
    );
    assert_eq!(regressions, 0);

    // And the directory opens cleanly after the last kill.
    let driver = FileDriver::open_or_init(dir.path()).expect("reopen after SIGKILL");
    assert!(driver.high_water() >= tsoracle_core::Timestamp(max_ts).physical_ms());
    let key = tsoracle_core::SeqKey::try_new("kill").expect("key");
    assert!(driver.load_dense_seq(&key).await.expect("load") >= seq_end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_a_locked_directory_fails_fast() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut first = ChildServer::spawn(dir.path());
    let addr = first.wait_listening();

    let second = ChildServer::spawn(dir.path());
    let (status, stderr) = second.wait_exit();
    assert!(!status.success(), "second instance exited with {status}");
    assert_eq!(status.code(), Some(1), "second instance: {stderr}");
    assert!(stderr.contains("locked"), "no `locked` in: {stderr}");
    assert!(
        !stderr.contains("panicked"),
        "a panic instead of an error: {stderr}"
    );
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one readable line expected: {stderr}"
    );

    // The first one kept serving throughout.
    let client = connect(addr).await;
    client
        .get_ts()
        .await
        .expect("the first instance still serves");
    drop(client);
    first.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_shut_down_gracefully_and_unlock() {
    use nix::sys::signal::Signal;

    let dir = tempfile::tempdir().expect("temp dir");
    let mut max_ts = 0u64;
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut server = ChildServer::spawn(dir.path());
        let addr = server.wait_listening();
        let client = connect(addr).await;
        let mut seen = Vec::new();
        for _ in 0..50 {
            seen.push(client.get_ts().await.expect("get_ts").0);
        }
        assert!(
            seen[0] > max_ts,
            "{signal}: rewound after the previous stop"
        );
        max_ts = *seen.last().expect("some timestamps");
        drop(client);

        server.signal(signal);
        let (status, stderr) = server.wait_exit();
        assert!(status.success(), "{signal}: exited with {status}: {stderr}");
        assert!(
            stderr.contains("shut down; driver closed and state directory unlocked"),
            "{signal}: no shutdown line in: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{signal}: {stderr}");

        // Right after exit the directory opens, at a high-water covering
        // everything that was handed out.
        let driver = FileDriver::open_or_init(dir.path()).expect("reopen after a graceful stop");
        assert!(driver.high_water() >= tsoracle_core::Timestamp(max_ts).physical_ms());
    }
}
