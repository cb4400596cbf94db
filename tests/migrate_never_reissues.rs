//! `tsoracle-file migrate out` and `migrate in` against a real
//! `tsoracle-server` (here on another `FileDriver`: the commands only use
//! the public client API, so any driver's server is a target). After
//! `migrate out` the target issues only timestamps above the source's
//! high-water and dense values at or above its counters, the source refuses
//! to serve, and re-running changes nothing that matters. `migrate in`
//! leaves the new directory pending; `migrate finish`, refused while any
//! source endpoint answers, raises it above everything the source issued
//! until it stopped, stragglers included (timestamps, dense values, lease
//! upper bounds, a failover, a source clock ahead of this one).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tsoracle_client::Client;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::LeaseRecord;
use tsoracle_driver_file::{FileDriver, FileDriverError, LEADER_EPOCH, Seed, StoppedDir};
use tsoracle_server::{Clock, ServerBuilder};

use common::cli::outcome;
use common::served::{BOUND, serve, serve_driver, serve_on, serve_with, stop_server};
use common::{key, now_ms};

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

/// `migrate finish` on `back`, which must then stand above the source's
/// final committed high-water.
async fn finish_above(back: &Path, source_high_water: u64) {
    let (ok, _, stderr) = run(strings(&["migrate", "finish", path(back)])).await;
    assert!(ok, "migrate finish failed: {stderr}");
    let new = committed(back);
    assert!(
        new > source_high_water,
        "new {new} <= the source's {source_high_water}"
    );
}

/// A clock `0` ms ahead of this machine's.
struct Ahead(u64);

impl Clock for Ahead {
    fn now_ms(&self) -> u64 {
        now_ms() + self.0
    }
}

/// `tsoracle-file ARGS` off the async runtime (the servers under test run
/// on it).
async fn run(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        outcome(&args)
    })
    .await
    .expect("join")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_string()).collect()
}

fn path(path: &Path) -> &str {
    path.to_str().expect("utf-8")
}

/// The committed high-water of a stopped directory.
fn committed(dir: &Path) -> u64 {
    StoppedDir::lock(dir)
        .expect("lock")
        .high_water()
        .expect("a state file")
}

/// A pending directory is refused by every open.
fn assert_pending(dir: &Path) {
    match FileDriver::open_or_init(dir) {
        Err(FileDriverError::MigrationPending { .. }) => {}
        Err(other) => panic!("{} refused, but not as pending: {other}", dir.display()),
        Ok(_) => panic!("{} serves while pending", dir.display()),
    }
}

/// The JSON of `migrate in --json`.
fn report(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {stdout}"))
}

fn u64_at(value: &serde_json::Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no {pointer} in {value}"))
}

/// Takes timestamps from `client` until one is above `above`, within
/// `BOUND`; returns the highest seen.
async fn timestamps_until_above(client: &Client, above: u64) -> u64 {
    let deadline = Instant::now() + BOUND;
    let mut highest = 0;
    while highest <= above {
        assert!(
            Instant::now() < deadline,
            "the source never issued above {above} (at {highest})"
        );
        highest = highest.max(client.get_ts().await.expect("ts").physical_ms());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    highest
}

/// Takes timestamps until the leader's max-safe moves (a window extension
/// was just committed), within `BOUND`; returns the highest timestamp.
async fn until_the_window_extends(client: &Client) -> u64 {
    let deadline = Instant::now() + BOUND;
    let first = client.get_current_max_safe().await.expect("max-safe");
    let mut highest = 0;
    loop {
        assert!(Instant::now() < deadline, "max-safe never moved");
        highest = highest.max(client.get_ts().await.expect("ts").physical_ms());
        let now = client.get_current_max_safe().await.expect("max-safe");
        if now.max_safe_physical_ms > first.max_safe_physical_ms {
            return highest;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
        ttl_ms: 8_000,
        ts_upper_bound: high_water,
        expires_at_ms: now_ms() + 8_000,
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

    let (url, stop, handle) = serve(&target_dir).await.parts();
    let (ok, stdout, stderr) = outcome(&[
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
    let (ok, _, stderr) = outcome(&[
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
    let (ok, _, stderr) = outcome(&[
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
    let (ok, stdout, stderr) = run(strings(&[
        "migrate",
        "in",
        path(&back),
        "--from",
        &url,
        "--keys-from",
        path(&receipt),
        "--key",
        "fresh",
        "--lease-grants",
        "0",
    ]))
    .await;
    assert!(ok, "migrate in failed: {stderr}");
    assert!(stdout.contains("STOP the oracle"), "{stdout}");
    assert!(stdout.contains("migrate finish"), "{stdout}");
    assert_pending(&back);
    stop_server(stop, handle).await;
    let (ok, stdout, stderr) = run(strings(&["migrate", "finish", path(&back)])).await;
    assert!(ok, "migrate finish failed: {stderr}");
    assert!(stdout.contains("finished"), "{stdout}");

    let driver = FileDriver::open_or_init(&back).expect("open the new directory");
    assert!(driver.high_water() > committed(&target_dir));
    assert!(driver.high_water() > last_ts.physical_ms());
    let next = driver
        .advance_dense(&key("orders"), 1, LEADER_EPOCH)
        .await
        .expect("orders");
    assert!(next > last_orders.start, "{next} <= {}", last_orders.start);
    // --key fresh was probed too: its first value went to the probe, and
    // the default margin is left above it.
    assert_eq!(
        driver.load_dense_seq(&key("fresh")).await.expect("fresh"),
        1 + u64::from(tsoracle_core::DEFAULT_MAX_SEQ_COUNT)
    );
}

#[test]
fn reinstate_needs_the_explicit_flag_and_lifts_the_marker() {
    let tmp = tempfile::tempdir().expect("tempdir");
    FileDriver::init_seeded(tmp.path(), 5).expect("seed");
    std::fs::write(tmp.path().join("RETIRED"), "migrated out to x\n").expect("marker");
    let dir = tmp.path().to_str().expect("utf-8");
    let (ok, _, stderr) = outcome(&["migrate", "reinstate", dir]);
    assert!(!ok && stderr.contains("--target-never-served"), "{stderr}");
    let (ok, stdout, stderr) = outcome(&["migrate", "reinstate", dir, "--target-never-served"]);
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
    let (url, stop, handle) = serve(&tmp.path().join("target")).await.parts();

    let (ok, _, stderr) = outcome(&[
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

    stop_server(stop, handle).await;
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
    let (url, stop, handle) = serve_driver(Arc::new(TimestampsOnly(target))).await.parts();

    let (ok, _, stderr) = outcome(&[
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

    stop_server(stop, handle).await;
}

/// The whole protocol against a source with a 5 s window and leases:
/// `migrate in` refuses without `--lease-grants`, measures the window
/// (which the old default of `--window-ms 3000` underestimated), and the
/// new directory stays pending and refused while any endpoint answers.
/// Stragglers take timestamps, dense values (as many as the margin) and
/// three stacking lease acquisitions from the source between `migrate in`
/// and its stop; after `migrate finish` the new directory issues above all
/// of it, refuses a key nobody named, and takes it after `dense add`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stragglers_between_migrate_in_and_the_stop_are_never_reissued() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    let back = tmp.path().join("back");
    FileDriver::init_seeded(&source, now_ms()).expect("seed the source");
    let ceiling = Duration::from_secs(20);
    let (url, stop, handle) = serve_with(&source, |builder| {
        builder
            .window_ahead(Duration::from_secs(5))
            .lease_ttl_floor(Duration::from_secs(1))
            .lease_ttl_ceiling(ceiling)
    })
    .await
    .parts();
    let client = Client::connect(vec![url.clone()]).await.expect("client");
    let before = client.get_seq("orders", 1_000).await.expect("orders");
    client.get_seq("users", 3).await.expect("users");

    // A second endpoint, down during `migrate in`, that comes up before
    // `migrate finish`: every endpoint is checked, not the first one.
    let spare = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let spare_addr = spare.local_addr().expect("addr");
    drop(spare);
    let spare_url = format!("http://{spare_addr}");
    let from = format!("{url},{spare_url}");

    let in_args = |grants: Option<&str>| {
        let mut args = strings(&[
            "migrate",
            "in",
            path(&back),
            "--from",
            &from,
            "--key",
            "orders",
            "--key",
            "users",
            "--dense-margin",
            "100",
            "--lease-ttl-ceiling",
            "20000",
            "--json",
        ]);
        if let Some(grants) = grants {
            args.extend(strings(&["--lease-grants", grants]));
        }
        args
    };
    // A lease of --lease-ttl-ceiling + 1 ms is granted: refused, asking for
    // the real ceiling.
    let mut low_ceiling = in_args(Some("3"));
    let at = low_ceiling
        .iter()
        .position(|arg| arg == "20000")
        .expect("the ceiling flag");
    low_ceiling[at] = "10000".into();
    let (ok, _, stderr) = run(low_ceiling).await;
    assert!(!ok, "a ceiling below the source's was accepted");
    assert!(
        stderr.contains("granted a lease of 10001 ms") && stderr.contains("--lease-ttl-ceiling"),
        "{stderr}"
    );
    assert!(!back.join("state").exists(), "a refused migrate in wrote");
    // The source grants leases: without --lease-grants, refused, nothing
    // written.
    let (ok, _, stderr) = run(in_args(None)).await;
    assert!(!ok, "migrate in without --lease-grants was accepted");
    assert!(
        stderr.contains("grants leases") && stderr.contains("--lease-grants 0"),
        "{stderr}"
    );
    assert!(!back.join("state").exists(), "a refused migrate in wrote");

    let (ok, stdout, stderr) = run(in_args(Some("3"))).await;
    assert!(ok, "migrate in failed: {stderr}");
    let report = report(&stdout);
    assert_eq!(report["pending"], true);
    let window = u64_at(&report, "/note/window/window_bound_ms");
    assert!((5_000..6_000).contains(&window), "measured {window}");
    assert_eq!(u64_at(&report, "/note/leases/ttl_ceiling_ms"), 20_000);
    assert_eq!(report["note"]["leases"]["renewals_stack"], false);
    assert_eq!(u64_at(&report, "/note/dense_cardinality_cap"), 2);
    let m2 = u64_at(&report, "/note/window/max_safe/2");
    assert_pending(&back);

    // Stragglers. The source issues timestamps above what the old
    // `--window-ms 3000` default would have taken its high-water to be.
    let mut highest_ts = timestamps_until_above(&client, m2 + 3_000 + 1).await;
    let orders = client.get_seq("orders", 100).await.expect("orders");
    let users = client.get_seq("users", 100).await.expect("users");
    let mut highest_bound = 0;
    for holder in ["a", "b", "c"] {
        let lease = client
            .acquire_lease(holder.as_bytes(), 1, ceiling)
            .await
            .expect("lease");
        highest_bound = highest_bound.max(lease.ts_upper_bound);
    }
    // A renewal on 3.3 does not stack: not counted in --lease-grants.
    let lease = client
        .acquire_lease(b"a", 1, ceiling)
        .await
        .expect("same lease");
    let renewed = client.renew_lease(lease.lease_id).await.expect("renew");
    highest_bound = highest_bound.max(renewed.ts_upper_bound);
    highest_ts = highest_ts.max(client.get_ts().await.expect("ts").physical_ms());

    // Finish is refused while the source serves, then while the spare
    // endpoint answers; the directory stays pending.
    let (ok, _, stderr) = run(strings(&["migrate", "finish", path(&back)])).await;
    assert!(!ok && stderr.contains(&url), "{stderr}");
    assert!(stderr.contains("stays pending"), "{stderr}");
    assert_pending(&back);
    stop_server(stop, handle).await;
    let spare = TcpListener::bind(spare_addr).await.expect("rebind");
    let (_spare_url, spare_stop, spare_handle) = serve_on(
        spare,
        FileDriver::open_or_init(tmp.path().join("spare")).expect("open"),
        |builder| builder,
    )
    .await
    .parts();
    let (ok, _, stderr) = run(strings(&["migrate", "finish", path(&back)])).await;
    assert!(!ok && stderr.contains(&spare_url), "{stderr}");
    assert_pending(&back);
    stop_server(spare_stop, spare_handle).await;

    let (ok, stdout, stderr) = run(strings(&["migrate", "finish", path(&back)])).await;
    assert!(ok, "migrate finish failed: {stderr}");
    assert!(stdout.contains("finished"), "{stdout}");
    let (ok, stdout, _) = run(strings(&["migrate", "finish", path(&back)])).await;
    assert!(ok && stdout.contains("not pending"), "{stdout}");
    // A second `migrate in` into it is refused at once.
    let (ok, _, stderr) = run(in_args(Some("0"))).await;
    assert!(!ok && stderr.contains("already exists"), "{stderr}");

    let source_high_water = committed(&source);
    assert!(source_high_water >= highest_bound && source_high_water >= highest_ts);
    let (new_url, new_stop, new_handle) = serve(&back).await.parts();
    let new = Client::connect(vec![new_url]).await.expect("client");
    let ts = new.get_ts().await.expect("ts");
    assert!(
        ts.physical_ms() > source_high_water,
        "{} <= the source's {source_high_water}",
        ts.physical_ms()
    );
    let new_orders = new.get_seq("orders", 1).await.expect("orders");
    assert!(
        new_orders.start >= orders.start + u64::from(orders.count)
            && new_orders.start > before.start,
        "orders {} reissued (a straggler got up to {})",
        new_orders.start,
        orders.start + u64::from(orders.count) - 1
    );
    let new_users = new.get_seq("users", 1).await.expect("users");
    assert!(new_users.start >= users.start + u64::from(users.count));
    let new_lease = new
        .acquire_lease(b"d", 1, Duration::from_secs(5))
        .await
        .expect("lease");
    assert!(new_lease.ts_upper_bound > source_high_water);

    // A key nobody named is refused, naming the cap...
    let err = new.get_seq("invoices", 1).await.expect_err("a new key");
    assert!(err.to_string().contains("cardinality cap 2"), "{err}");
    // ... and `dense add` (offline) is refused while the server runs.
    let (ok, _, stderr) = run(strings(&[
        "dense",
        "add",
        path(&back),
        "invoices",
        "--floor",
        "500",
    ]))
    .await;
    assert!(!ok && stderr.contains("lock"), "{stderr}");
    stop_server(new_stop, new_handle).await;
    let (ok, stdout, stderr) = run(strings(&[
        "dense",
        "add",
        path(&back),
        "invoices",
        "--floor",
        "500",
    ]))
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("invoices added at 500"), "{stdout}");
    let driver = FileDriver::open_or_init(&back).expect("open");
    assert_eq!(
        driver
            .advance_dense(&key("invoices"), 1, LEADER_EPOCH)
            .await
            .expect("invoices"),
        500
    );
    // Still one key at a time: the cap rose by exactly one.
    assert!(
        driver
            .advance_dense(&key("other"), 1, LEADER_EPOCH)
            .await
            .is_err()
    );
}

/// A source whose clock runs 30 s ahead of this machine's keeps extending
/// its window after `migrate in`: `migrate finish` carries the source's
/// clock forward and adds the window, so the new directory is above the
/// source's last high-water, taken just after a window extension.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_covers_the_window_after_the_observation_on_the_sources_clock() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    let back = tmp.path().join("back");
    FileDriver::init_seeded(&source, now_ms() + 30_000).expect("seed the source");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (url, stop, handle) = serve_on(
        listener,
        Arc::new(TimestampsOnly(
            FileDriver::open_or_init(&source).expect("open"),
        )),
        |builder| {
            builder
                .window_ahead(Duration::from_secs(2))
                .clock(Arc::new(Ahead(30_000)))
        },
    )
    .await
    .parts();
    let client = Client::connect(vec![url.clone()]).await.expect("client");
    let (ok, stdout, stderr) = run(strings(&[
        "migrate",
        "in",
        path(&back),
        "--from",
        &url,
        "--failover-advance-ms",
        "0",
        "--json",
    ]))
    .await;
    assert!(ok, "migrate in failed: {stderr}");
    let report = report(&stdout);
    assert!(
        report["note"]["leases"]["not_granted"]
            .as_str()
            .is_some_and(|why| why.contains("Unimplemented")),
        "{report}"
    );
    let bound = u64_at(&report, "/note/window/high_water_bound");
    let window = u64_at(&report, "/note/window/window_bound_ms");
    assert!((2_000..3_000).contains(&window), "measured {window}");
    // The source issues above what migrate in saw, then extends once more.
    timestamps_until_above(&client, bound + 1).await;
    until_the_window_extends(&client).await;
    stop_server(stop, handle).await;
    let source_high_water = committed(&source);
    assert!(source_high_water > bound + 1);

    finish_above(&back, source_high_water).await;
}

/// A failover (here a restart of the single-node source, which advances
/// its high-water by 5 s) after `migrate in`: `--failover-advance-ms`
/// covers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_covers_a_failover_after_the_observation() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    let back = tmp.path().join("back");
    FileDriver::init_seeded(&source, now_ms()).expect("seed the source");
    let configure = |builder: ServerBuilder| {
        builder
            .window_ahead(Duration::from_secs(2))
            .failover_advance(Duration::from_secs(5))
    };
    let start = || async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        serve_on(
            listener,
            Arc::new(TimestampsOnly(
                FileDriver::open_or_init(&source).expect("open"),
            )),
            configure,
        )
        .await
        .parts()
    };
    let (url, stop, handle) = start().await;
    let (ok, _, stderr) = run(strings(&[
        "migrate",
        "in",
        path(&back),
        "--from",
        &url,
        "--failover-advance-ms",
        "5000",
    ]))
    .await;
    assert!(ok, "migrate in failed: {stderr}");
    stop_server(stop, handle).await;
    let before = committed(&source);
    let (url, stop, handle) = start().await;
    Client::connect(vec![url])
        .await
        .expect("client")
        .get_ts()
        .await
        .expect("ts");
    stop_server(stop, handle).await;
    let source_high_water = committed(&source);
    assert!(source_high_water >= before + 5_000, "no failover advance");

    finish_above(&back, source_high_water).await;
}

/// A lease acquired before `migrate in` and renewed all along (renewals on
/// 3.3 do not stack, and `--lease-grants 0` counts none): each renewal
/// commits `now + ttl`, which only the TTL ceiling in the bound covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_that_do_not_stack_are_covered_by_the_ttl_ceiling() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    let back = tmp.path().join("back");
    FileDriver::init_seeded(&source, now_ms()).expect("seed the source");
    let (url, stop, handle) = serve_with(&source, |builder| {
        builder
            .window_ahead(Duration::from_secs(2))
            .lease_ttl_floor(Duration::from_secs(1))
            .lease_ttl_ceiling(Duration::from_secs(10))
    })
    .await
    .parts();
    let client = Arc::new(Client::connect(vec![url.clone()]).await.expect("client"));
    let lease = client
        .acquire_lease(b"renewer", 1, Duration::from_secs(10))
        .await
        .expect("lease");
    let (quit, mut quitting) = oneshot::channel::<()>();
    let renewer = {
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            let mut renewals = 0u64;
            loop {
                client.renew_lease(lease.lease_id).await.expect("renew");
                renewals += 1;
                tokio::select! {
                    _ = &mut quitting => return renewals,
                    () = tokio::time::sleep(Duration::from_millis(300)) => {}
                }
            }
        })
    };
    let (ok, _, stderr) = run(strings(&[
        "migrate",
        "in",
        path(&back),
        "--from",
        &url,
        "--lease-ttl-ceiling",
        "10000",
        "--lease-grants",
        "0",
    ]))
    .await;
    assert!(ok, "migrate in failed: {stderr}");
    // Renewals go on after the observation, then the source stops.
    let renewed = client.renew_lease(lease.lease_id).await.expect("renew");
    let _ = quit.send(());
    assert!(renewer.await.expect("renewer") > 0);
    let last = client.renew_lease(lease.lease_id).await.expect("renew");
    stop_server(stop, handle).await;
    let source_high_water = committed(&source);
    assert!(source_high_water >= last.ts_upper_bound.max(renewed.ts_upper_bound));

    finish_above(&back, source_high_water).await;
}

/// `dense add` raises (never lowers) a counter and adds a key with the cap
/// by one; `dense cap` refuses a cap below the key count and opens the set;
/// both refuse a retired directory and a missing one, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_add_and_cap_change_a_stopped_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("d");
    FileDriver::init_from(
        &dir,
        &Seed::new(now_ms())
            .with_counter(key("orders"), 100)
            .with_key_cap(1),
    )
    .expect("seed");
    let d = path(&dir);
    let (ok, stdout, stderr) = outcome(&["dense", "add", d, "orders", "--floor", "50"]);
    assert!(ok && stdout.contains("stays at 100"), "{stdout}{stderr}");
    let (ok, stdout, stderr) = outcome(&["dense", "add", d, "orders", "--floor", "700"]);
    assert!(
        ok && stdout.contains("raised from 100 to 700"),
        "{stdout}{stderr}"
    );
    let (ok, _, stderr) = outcome(&["dense", "cap", d, "0"]);
    assert!(
        !ok && stderr.contains("below the 1 key(s)"),
        "a cap below the key count: {stderr}"
    );
    let (ok, _, stderr) = outcome(&["dense", "cap", d, "3"]);
    assert!(ok, "{stderr}");
    {
        let stopped = StoppedDir::lock(&dir).expect("lock");
        assert_eq!(stopped.dense().cap, 3);
        assert_eq!(stopped.dense().counters.get(&key("orders")), Some(&700));
    }
    let driver = FileDriver::open_or_init(&dir).expect("open");
    assert_eq!(
        driver
            .advance_dense(&key("orders"), 1, LEADER_EPOCH)
            .await
            .expect("orders"),
        700
    );
    assert_eq!(
        driver
            .advance_dense(&key("fresh"), 1, LEADER_EPOCH)
            .await
            .expect("a new key within the cap"),
        0
    );
    drop(driver);

    StoppedDir::lock(&dir)
        .expect("lock")
        .retire("migrated out to x")
        .expect("retire");
    let (ok, _, stderr) = outcome(&["dense", "add", d, "x", "--floor", "1"]);
    assert!(!ok && stderr.contains("RETIRED"), "{stderr}");
    let missing = tmp.path().join("missing");
    let (ok, _, stderr) = outcome(&["dense", "cap", path(&missing), "3"]);
    assert!(!ok && stderr.contains("missing"), "{stderr}");
    let (ok, _, stderr) = outcome(&["dense", "add", d, "", "--floor", "1"]);
    assert!(!ok && stderr.contains("dense key"), "{stderr}");
}
