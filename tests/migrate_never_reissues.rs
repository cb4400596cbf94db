//! `tsoracle-file migrate out` and `migrate in` against a real
//! `tsoracle-server` (here on another `FileDriver`: the commands only use
//! the public client API, so any driver's server is a target). After
//! `migrate out` the target issues only timestamps above the source's
//! high-water and dense values at or above its counters, the source refuses
//! to serve, and re-running changes nothing that matters; after
//! `migrate in` the new directory starts above everything the target issued.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tsoracle_client::Client;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::{LeaseRecord, SeqKey};
use tsoracle_driver_file::{FileDriver, FileDriverError, LEADER_EPOCH, Seed};
use tsoracle_server::{Server, ServingState};

const BOUND: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
    )
    .expect("ms fit u64")
}

fn key(name: &str) -> SeqKey {
    SeqKey::try_new(name).expect("key")
}

/// A driver with timestamps only, like upstream's paxos driver: dense
/// sequences and leases are the trait's defaults, unsupported.
struct TimestampsOnly(Arc<FileDriver>);

#[async_trait::async_trait]
impl ConsensusDriver for TimestampsOnly {
    fn leadership_events(
        &self,
    ) -> std::pin::Pin<Box<dyn futures::Stream<Item = tsoracle_consensus::LeaderState> + Send>>
    {
        self.0.leadership_events()
    }
    async fn load_high_water(&self) -> Result<u64, tsoracle_consensus::ConsensusError> {
        self.0.load_high_water().await
    }
    async fn persist_high_water(
        &self,
        at_least: u64,
        epoch: tsoracle_core::Epoch,
    ) -> Result<u64, tsoracle_consensus::ConsensusError> {
        self.0.persist_high_water(at_least, epoch).await
    }
}

/// A tsoracle server on a `FileDriver` in `dir`; stop it with the sender.
async fn serve(dir: &Path) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    serve_driver(FileDriver::open_or_init(dir).expect("open target")).await
}

/// A tsoracle server on `driver`; stop it with the sender.
async fn serve_driver(
    driver: Arc<dyn ConsensusDriver>,
) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Server::builder()
        .consensus_driver(driver)
        .build()
        .expect("server");
    let mut serving = server.subscribe();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let _ = server
            .serve_with_listener(listener, async move {
                let _ = stopped.await;
            })
            .await;
    });
    timeout(
        BOUND,
        serving.wait_for(|s| matches!(s, ServingState::Serving)),
    )
    .await
    .expect("serving within the bound")
    .expect("serving");
    (format!("http://{addr}"), stop, handle)
}

fn tsoracle_file(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tsoracle-file"))
        .args(args)
        .output()
        .expect("run tsoracle-file");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_out_and_back_never_reissues() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    let target_dir = tmp.path().join("target");
    let back = tmp.path().join("back");
    let receipt = tmp.path().join("receipt.json");

    // The source: a high-water a little ahead of the clock (as a server's
    // window leaves it), a counter that needs two maximum-size blocks, a
    // live and a superseded lease.
    let high_water = now_ms() + 1_500;
    let live = LeaseRecord {
        lease_id: 7,
        holder: b"svc-a".to_vec(),
        holder_epoch: 3,
        ttl_ms: 60_000,
        ts_upper_bound: high_water,
        expires_at_ms: now_ms() + 60_000,
        superseded: false,
    };
    let old = LeaseRecord {
        lease_id: 2,
        holder: b"svc-b".to_vec(),
        superseded: true,
        ..live.clone()
    };
    FileDriver::init_from(
        &source,
        &Seed::new(high_water)
            .with_counter(key("orders"), 100_000)
            .with_counter(key("users"), 7)
            .with_leases(vec![live, old]),
    )
    .expect("seed the source");

    let (url, stop, handle) = serve(&target_dir).await;
    let (ok, stdout, stderr) = tsoracle_file(&[
        "migrate",
        "out",
        source.to_str().expect("utf-8"),
        "--to",
        &url,
        "--receipt",
        receipt.to_str().expect("utf-8"),
    ]);
    assert!(ok, "migrate out failed: {stderr}");
    assert!(
        stdout.contains("marked RETIRED") || stdout.contains("is marked RETIRED"),
        "{stdout}"
    );
    assert!(
        stderr.contains("timestamps:"),
        "no progress on stderr: {stderr}"
    );

    // The source refuses to serve.
    assert!(matches!(
        FileDriver::open_or_init(&source),
        Err(FileDriverError::Retired { .. })
    ));

    // The target now issues above everything the source could have issued.
    let client = Client::connect(vec![url.clone()]).await.expect("client");
    let ts = client.get_ts().await.expect("ts");
    assert!(
        ts.physical_ms() > high_water,
        "{} <= {high_water}",
        ts.physical_ms()
    );
    let orders = client.get_seq("orders", 5).await.expect("orders");
    assert!(
        orders.start >= 100_000,
        "orders reissued from {}",
        orders.start
    );
    let users = client.get_seq("users", 1).await.expect("users");
    assert!(users.start >= 7, "users reissued from {}", users.start);

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&receipt).expect("receipt")).expect("json");
    assert_eq!(doc["schema"], "tsoracle-file.migrate-out");
    assert_eq!(doc["source"]["schema"], "tsoracle.stopped-file-state");
    assert_eq!(doc["dense"][0]["key"], "orders");
    assert!(
        doc["dense"][0]["calls"].as_u64().expect("calls") >= 3,
        "two chunks and a probe"
    );
    let actions: Vec<&str> = doc["leases"]
        .as_array()
        .expect("leases")
        .iter()
        .map(|l| l["action"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(actions, ["skipped: superseded", "acquired"]);

    // Re-running is safe: the target only moves forward.
    let (ok, _, stderr) = tsoracle_file(&[
        "migrate",
        "out",
        source.to_str().expect("utf-8"),
        "--to",
        &url,
    ]);
    assert!(ok, "re-run failed: {stderr}");
    let again = client.get_seq("orders", 1).await.expect("orders");
    assert!(again.start > orders.start);

    // ... but not to another oracle: two would start from the same state.
    let (ok, _, stderr) = tsoracle_file(&[
        "migrate",
        "out",
        source.to_str().expect("utf-8"),
        "--to",
        "http://127.0.0.1:1",
    ]);
    assert!(
        !ok && stderr.contains("already migrated out to"),
        "{stderr}"
    );

    // And back: the new directory starts above everything the target issued.
    let last_ts = client.get_ts().await.expect("ts");
    let last_orders = client.get_seq("orders", 1).await.expect("orders");
    let (ok, stdout, stderr) = tsoracle_file(&[
        "migrate",
        "in",
        back.to_str().expect("utf-8"),
        "--from",
        &url,
        "--keys-from",
        receipt.to_str().expect("utf-8"),
        "--key",
        "fresh",
        "--stop-within",
        "5",
        "--dense-margin",
        "0",
    ]);
    assert!(ok, "migrate in failed: {stderr}");
    assert!(stdout.contains("STOP the oracle"), "{stdout}");
    let _ = stop.send(());
    timeout(BOUND, handle).await.expect("stop").expect("join");

    let driver = FileDriver::open_or_init(&back).expect("open the new directory");
    assert!(driver.high_water() > last_ts.physical_ms() + 5_000);
    let next = driver
        .advance_dense(&key("orders"), 1, LEADER_EPOCH)
        .await
        .expect("orders");
    assert!(next > last_orders.start, "{next} <= {}", last_orders.start);
    // --key fresh was probed too: its first value went to the probe.
    assert_eq!(
        driver.load_dense_seq(&key("fresh")).await.expect("fresh"),
        1
    );
}

#[test]
fn reinstate_needs_the_explicit_flag_and_lifts_the_marker() {
    let tmp = tempfile::tempdir().expect("tempdir");
    FileDriver::init_seeded(tmp.path(), 5).expect("seed");
    std::fs::write(tmp.path().join("RETIRED"), "migrated out to x\n").expect("marker");
    let dir = tmp.path().to_str().expect("utf-8");
    let (ok, _, stderr) = tsoracle_file(&["migrate", "reinstate", dir]);
    assert!(!ok && stderr.contains("--target-never-served"), "{stderr}");
    let (ok, stdout, stderr) =
        tsoracle_file(&["migrate", "reinstate", dir, "--target-never-served"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("migrated out to x"), "{stdout}");
    FileDriver::open_or_init(tmp.path()).expect("serves again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_beyond_the_limit_is_refused_before_anything_changes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    // Ten minutes ahead: more than the default --wait-limit of 300 s.
    let high_water = now_ms() + 600_000;
    FileDriver::init_from(
        &source,
        &Seed::new(high_water).with_counter(key("orders"), 1_000),
    )
    .expect("seed the source");
    let (url, stop, handle) = serve(&tmp.path().join("target")).await;

    let (ok, _, stderr) = tsoracle_file(&[
        "migrate",
        "out",
        source.to_str().expect("utf-8"),
        "--to",
        &url,
    ]);
    assert!(!ok, "a ten-minute wait was accepted");
    assert!(
        stderr.contains("--wait-limit") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert!(
        !source.join("RETIRED").exists(),
        "a refused migration marked the source"
    );
    // The target's counter was not advanced: its first value is still 0.
    let client = Client::connect(vec![url]).await.expect("client");
    assert_eq!(client.get_seq("orders", 1).await.expect("orders").start, 0);
    FileDriver::open_or_init(&source).expect("the source still serves");

    let _ = stop.send(());
    timeout(BOUND, handle).await.expect("stop").expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_without_dense_sequences_is_refused_before_anything_changes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    FileDriver::init_from(
        &source,
        &Seed::new(now_ms() + 1_500).with_counter(key("orders"), 1_000),
    )
    .expect("seed the source");
    let target = FileDriver::open_or_init(tmp.path().join("target")).expect("open target");
    let (url, stop, handle) = serve_driver(Arc::new(TimestampsOnly(target))).await;

    let (ok, _, stderr) = tsoracle_file(&[
        "migrate",
        "out",
        source.to_str().expect("utf-8"),
        "--to",
        &url,
    ]);
    assert!(!ok, "a target without dense sequences was accepted");
    assert!(
        stderr.contains("has no dense sequences")
            && stderr.contains("dense sequences are not supported by this consensus driver")
            && stderr.contains("nothing was changed")
            && stderr.contains("is not marked RETIRED"),
        "{stderr}"
    );
    assert!(
        !source.join("RETIRED").exists(),
        "a refused migration marked the source"
    );
    let stopped = tsoracle_driver_file::StoppedDir::lock(&source).expect("lock the source");
    assert_eq!(stopped.retired_note().expect("read marker"), None);
    drop(stopped);
    FileDriver::open_or_init(&source).expect("the source still serves");

    let _ = stop.send(());
    timeout(BOUND, handle).await.expect("stop").expect("join");
}
