//! End to end: the real `tsoracle-server` on a `FileDriver`, driven over
//! loopback gRPC by the real `tsoracle-client` from 32 tasks: `get_ts`,
//! `get_seq` and lease renewals (with the fsyncs each cost).
//!
//! `cargo bench --bench end_to_end` (add `-- --quick`, or set
//! `TSORACLE_BENCH_QUICK=1`, for a short run). The state directory is made
//! under `target/bench-tmp` (override with `TSORACLE_BENCH_DIR`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tsoracle_client::Client;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::FileDriver;
use tsoracle_server::{Server, ServingState};

const TASKS: usize = 32;
const CLIENTS: usize = 4;

/// Runs `calls` calls of `op` from `TASKS` tasks spread over `CLIENTS`
/// connections; returns calls per second.
async fn drive<F, Fut>(clients: &[Arc<Client>], calls: u64, op: F) -> f64
where
    F: Fn(Arc<Client>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let client = Arc::clone(&clients[task % clients.len()]);
        let (next, op) = (Arc::clone(&next), op.clone());
        handles.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < calls {
                op(Arc::clone(&client)).await;
            }
        }));
    }
    for handle in handles {
        handle.await.expect("task");
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick")
        || std::env::var_os("TSORACLE_BENCH_QUICK").is_some();
    let base = std::env::var_os("TSORACLE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp"));
    let dir = base.join("end-to-end");
    let _ = std::fs::remove_dir_all(&dir);
    let calls: u64 = if quick { 5_000 } else { 50_000 };

    let driver = FileDriver::open_or_init(&dir).expect("open");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr: SocketAddr = listener.local_addr().expect("address");
    let server = Server::builder()
        .consensus_driver(Arc::clone(&driver) as Arc<dyn ConsensusDriver>)
        .build()
        .expect("server");
    let mut serving = server.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(server.serve_with_listener(listener, async move {
        let _ = stopped.await;
    }));
    tokio::time::timeout(
        Duration::from_secs(30),
        serving.wait_for(|state| matches!(state, ServingState::Serving)),
    )
    .await
    .expect("serving in time")
    .map(|_| ())
    .expect("serving state");

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let client = Client::connect(vec![format!("http://{addr}")])
            .await
            .expect("client");
        clients.push(Arc::new(client));
    }
    // Warm up connections and the first window.
    drive(&clients, 1_000, |client| async move {
        client.get_ts().await.expect("get_ts");
    })
    .await;

    let before = driver.stats();
    let get_ts = drive(&clients, calls, |client| async move {
        client.get_ts().await.expect("get_ts");
    })
    .await;
    let mid = driver.stats();
    let get_seq = drive(&clients, calls / 5, |client| async move {
        client.get_seq("bench", 1).await.expect("get_seq");
    })
    .await;
    let after = driver.stats();
    // Lease renewals: one 10 s lease per task, renewed round-robin. Each
    // renewal may raise the high-water to cover its new upper bound; how
    // far ahead of the clock that leaves it is printed with the rate.
    let mut lease_ids = Vec::new();
    for task in 0..TASKS {
        let holder = format!("bench-holder-{task}");
        let lease = clients[task % CLIENTS]
            .acquire_lease(holder.as_bytes(), 1, Duration::from_secs(10))
            .await
            .expect("acquire_lease");
        lease_ids.push(lease.lease_id);
    }
    let lease_ids = Arc::new(lease_ids);
    let turn = Arc::new(AtomicU64::new(0));
    let renewals = calls / 10;
    let leases_before = driver.stats();
    let renew = drive(&clients, renewals, move |client| {
        let (lease_ids, turn) = (Arc::clone(&lease_ids), Arc::clone(&turn));
        async move {
            let at = turn.fetch_add(1, Ordering::Relaxed) as usize % lease_ids.len();
            client
                .renew_lease(lease_ids[at])
                .await
                .expect("renew_lease");
        }
    })
    .await;
    let leases_after = driver.stats();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let ahead_s = driver.high_water().saturating_sub(now_ms) as f64 / 1000.0;

    println!(
        "# tsoracle-driver-file end to end ({})",
        if quick { "quick" } else { "full" }
    );
    println!();
    println!(
        "| measurement ({TASKS} client tasks, {CLIENTS} connections) | result | driver writes |"
    );
    println!("|---|---|---|");
    println!(
        "| get_ts, {calls} calls | {get_ts:.0} calls/s | {} file writes ({} fsyncs) |",
        mid.file_writes - before.file_writes,
        mid.fsyncs - before.fsyncs,
    );
    println!(
        "| get_seq (count 1), {} calls | {get_seq:.0} calls/s | {} file writes ({} fsyncs) |",
        calls / 5,
        after.file_writes - mid.file_writes,
        after.fsyncs - mid.fsyncs,
    );
    println!(
        "| renew_lease (10 s TTL, {TASKS} leases), {renewals} calls | {renew:.0} calls/s | {} file writes ({} fsyncs); high-water {ahead_s:.1} s ahead of the clock after |",
        leases_after.file_writes - leases_before.file_writes,
        leases_after.fsyncs - leases_before.fsyncs,
    );

    let _ = stop.send(());
    let _ = serve.await;
    drop(clients);
    let _ = std::fs::remove_dir_all(&base);
}
