//! `tsoracle-file serve` as an operator runs it: a separate process on a
//! loopback port, called with the real client, its `/metrics`, `/healthz`
//! and `/readyz` scraped over HTTP, stopped with SIGTERM or SIGINT; and the
//! start-up mistakes it refuses (a missing or stateless directory without
//! `--init`, a window beyond an hour, a high-water with no room left).
//!
//! With `failpoints` as well, a failed fsync injected through the
//! `FAILPOINTS` environment variable poisons the driver of the running
//! process: those cases are in `tests/failpoints/serve.rs`. The helpers
//! that start and watch `serve` are `common::serve`.
//!
//! Every wait is on a thing (the readiness line on stdout, an exit, an HTTP
//! answer) under a generous bound; all traffic stays on 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tsoracle_client::Client;
use tsoracle_driver_file::{FileDriver, metrics, record};

use common::cli::BIN;
use common::now_ms;
use common::serve::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_calls_metrics_and_probes_then_stops_on_sigterm() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    init(&dir);
    let server = Serving::start(&[], &dir, &[]);

    let client = server.client().await;
    let mut last = 0;
    for _ in 0..20 {
        let ts = client.get_ts().await.expect("get_ts").0;
        assert!(ts > last, "timestamps increase");
        last = ts;
    }
    for name in ["orders", "users"] {
        client.get_seq(name, 5).await.expect("get_seq");
    }
    drop(client);

    assert_eq!(server.get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(server.get("/readyz"), (200, "ready\n".to_string()));
    assert_eq!(server.get("/nowhere").0, 404);
    let (status, text) = server.get("/metrics");
    assert_eq!(status, 200);
    // Every metric of the driver is exported, under Prometheus names.
    for name in metrics::ALL {
        let exported = name.replace('.', "_");
        assert!(
            text.contains(&format!("# TYPE {exported} ")),
            "{exported} missing from:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {exported} ")),
            "{exported} has no help line:\n{text}"
        );
    }
    // The facade's histograms are Prometheus summaries, as the README's
    // metrics table says: quantiles, no buckets.
    assert!(
        text.contains("# TYPE tsoracle_file_driver_dir_fsync_seconds summary"),
        "{text}"
    );
    assert!(
        text.contains("tsoracle_file_driver_dir_fsync_seconds{quantile=\"0.99\"}"),
        "{text}"
    );
    assert!(
        !text.contains("tsoracle_file_driver_dir_fsync_seconds_bucket"),
        "{text}"
    );
    // Values that follow from the calls made.
    assert_eq!(sample(&text, "tsoracle_file_driver_dense_keys"), Some(2.0));
    assert_eq!(sample(&text, "tsoracle_file_driver_poisoned"), Some(0.0));
    assert_eq!(sample(&text, "tsoracle_file_driver_queue_depth"), Some(0.0));
    assert!(
        sample(&text, "tsoracle_file_driver_dir_fsync_seconds_count").unwrap_or(0.0) >= 3.0,
        "the fence and two dense writes each fsynced the directory:\n{text}"
    );
    // The server's own metrics come through the same recorder.
    assert_eq!(sample(&text, "tsoracle_get_ts_requests_total"), Some(20.0));
    assert_eq!(sample(&text, "tsoracle_get_seq_requests_total"), Some(2.0));

    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(
        stderr.contains("shut down; driver closed and state directory unlocked"),
        "{stderr}"
    );
    // Unlocked, and what was handed out is covered.
    let driver = FileDriver::open_or_init(&dir).expect("reopen after SIGTERM");
    assert!(driver.high_water() >= tsoracle_core::Timestamp(last).physical_ms());
}

/// Upstream's `tsoracle export file` and `serve file` accept a state
/// directory holding `LOCK` (empty), `state`, `dense` and `leases`, and
/// nothing else: what `init`, then `serve` with dense keys and a lease,
/// then a clean stop leave. The identity is an attribute of the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_directory_holds_exactly_what_upstreams_tools_accept() {
    use tsoracle_driver_file::{OriginSource, identity_record, read_state_dir};
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    init(&dir);
    assert_eq!(common::entry_names(&dir), ["LOCK", "state"]);
    let server = Serving::start(&[], &dir, &[]);
    let client = server.client().await;
    client.get_ts().await.expect("get_ts");
    client.get_seq("orders", 5).await.expect("get_seq");
    let lease = client
        .acquire_lease(b"svc-a", 1, Duration::from_secs(30))
        .await
        .expect("acquire a lease");
    drop(client);
    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "exit {status}: {stderr}");

    assert_eq!(
        common::entry_names(&dir),
        ["LOCK", "dense", "leases", "state"]
    );
    assert_eq!(std::fs::read(dir.join("LOCK")).expect("LOCK"), b"");
    let found = read_state_dir(&dir).expect("read the stopped directory");
    assert_eq!(found.dense.expect("dense").key_count(), 1);
    assert!(
        found
            .leases
            .expect("leases")
            .iter()
            .any(|record| record.lease_id == lease.lease_id)
    );
    assert!(!found.identity_file);
    if common::xattrs_supported_in(parent.path()) {
        let origin = found
            .origin
            .expect("init made a new oracle with an identity");
        assert_eq!(found.origin_source, OriginSource::Xattr);
        let stored = common::identity_xattr(&dir).expect("the identity attribute");
        assert_eq!(identity_record::decode(&stored), Ok(origin));
    } else {
        assert_eq!(found.origin, None);
        assert_eq!(found.origin_source, OriginSource::Unsupported);
    }
}

#[test]
fn serve_refuses_a_missing_or_stateless_directory_without_init() {
    let parent = tempfile::tempdir().expect("temp dir");
    let missing = parent.path().join("typo").join("oracle");
    let (code, stderr) = refused(&[], &missing);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(stderr.contains("tsoracle-file init"), "{stderr}");
    assert!(stderr.contains("--init"), "{stderr}");
    assert!(!parent.path().join("typo").exists(), "nothing was created");

    // An existing directory without state (an unmounted volume's mount
    // point, a fresh mkdir) is refused the same way, and left empty.
    let empty = tempfile::tempdir().expect("temp dir");
    let (code, stderr) = refused(&[], empty.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("holds no oracle state"), "{stderr}");
    assert_eq!(common::dir_contents(empty.path()).len(), 0);

    // --init creates it, explicitly.
    let server = Serving::start(&["--init"], &missing, &[]);
    let (status, stderr) = server.stop(Signal::SIGINT);
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(
        stderr.contains("initialized a new oracle at high-water 0"),
        "{stderr}"
    );
    // From then on it is an oracle's directory: no --init needed.
    let server = Serving::start(&[], &missing, &[]);
    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "exit {status}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_metrics_serves_grpc_without_the_http_listener() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    let server = Serving::start(&["--init", "--no-metrics"], &dir, &[]);
    assert_eq!(
        server.http, None,
        "the readiness line says metrics disabled"
    );
    let client = server.client().await;
    client.get_ts().await.expect("get_ts");
    drop(client);
    // The gRPC health service does not need the HTTP listener.
    let mut health = health_client(server.grpc).await;
    assert_eq!(check(&mut health, "").await.expect("check"), SERVING);
    drop(health);
    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "exit {status}: {stderr}");
}

/// The standard `grpc.health.v1.Health` service on the gRPC port answers
/// as `/readyz` does, for the whole server and the oracle's service name,
/// refuses unknown names, and tells a watcher NOT_SERVING when the process
/// begins to stop, then ends its stream so the stop is not held open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_serves_as_readyz_and_turns_not_serving_when_stopping() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    init(&dir);
    let server = Serving::start(&[], &dir, &[]);
    assert_eq!(server.get("/readyz").0, 200);
    let mut health = health_client(server.grpc).await;
    for service in ["", TSO_SERVICE] {
        assert_eq!(check(&mut health, service).await.expect("check"), SERVING);
    }
    let unknown = check(&mut health, "tsoracle.v1.Nothing")
        .await
        .expect_err("an unknown service name");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    let mut watching = watch(&mut health, "").await;
    assert_eq!(next_status(&mut watching).await, Some(SERVING));
    server.signal(Signal::SIGTERM);
    assert_eq!(next_status(&mut watching).await, Some(NOT_SERVING));
    assert_eq!(
        next_status(&mut watching).await,
        None,
        "the watch ends at the stop"
    );
    let (status, stderr) = server.wait();
    assert!(status.success(), "exit {status}: {stderr}");
    drop((watching, health));
}

#[test]
fn serve_refuses_windows_beyond_an_hour_before_touching_anything() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    for (flag, value) in [
        ("--window-ahead", "18446744073709551615ms"),
        ("--window-ahead", "100000000000000ms"),
        ("--window-ahead", "365days"),
        ("--window-ahead", "61m"),
        ("--failover-advance", "2h"),
    ] {
        let (code, stderr) = refused(&["--init", flag, value], &dir);
        assert_eq!(code, 2, "{flag} {value}: {stderr}");
        assert!(
            stderr.contains("above the maximum of 1h"),
            "{flag} {value}: {stderr}"
        );
    }
    let (code, stderr) = refused(&["--init", "--window-ahead", "0s"], &dir);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("at least 1ms"), "{stderr}");
    assert!(!dir.exists(), "a refused start created nothing");
}

#[test]
fn serve_refuses_a_high_water_with_no_room_to_make_progress() {
    const PHYSICAL_MS_MAX: u64 = (1 << 46) - 1;
    let dir = tempfile::tempdir().expect("temp dir");
    // As an older seed could leave it: the 46-bit maximum itself.
    std::fs::write(dir.path().join("state"), record::encode(PHYSICAL_MS_MAX)).expect("state");
    let before = common::dir_contents(dir.path());
    let (code, stderr) = refused(&[], dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no server could make progress"), "{stderr}");
    assert_eq!(common::dir_contents(dir.path())["state"], before["state"]);
}

#[test]
fn serve_flags_fall_back_to_environment_variables() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    let mut command = Command::new(BIN);
    command.arg("serve");
    for name in SERVE_ENV {
        command.env_remove(name);
    }
    let output = command
        .env("TSORACLE_STATE_DIR", &dir)
        .env("TSORACLE_WINDOW_AHEAD", "2h")
        .stdin(Stdio::null())
        .output()
        .expect("run serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("above the maximum of 1h"), "{stderr}");

    let output = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("serve --help");
    let help = String::from_utf8_lossy(&output.stdout);
    // One block per option: its `  --flag <VALUE>` line and the lines
    // indented under it.
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        if (2..=6).contains(&indent) && line.trim_start().starts_with('-') {
            blocks.push(String::new());
        }
        if let Some(block) = blocks.last_mut() {
            block.push_str(line.trim());
            block.push('\n');
        }
    }
    for (flag, default) in [
        ("--listen", "127.0.0.1:50551"),
        ("--state-dir", "./tsoracle-data"),
        ("--window-ahead", "3s"),
        ("--failover-advance", "1s"),
        ("--lease-ttl-floor", "5s"),
        ("--lease-ttl-ceiling", "300s"),
        ("--heartbeat-interval", "10s"),
        ("--shutdown-timeout", "10s"),
        ("--log", "info"),
        ("--metrics-listen", "127.0.0.1:9551"),
    ] {
        let block = blocks
            .iter()
            .find(|block| block.starts_with(&format!("{flag} ")))
            .unwrap_or_else(|| panic!("{flag} missing from:\n{help}"));
        assert!(
            block.contains(&format!("[default: {default}]")),
            "{flag}: {block}"
        );
    }
    for name in SERVE_ENV
        .iter()
        .filter(|name| name.starts_with("TSORACLE_"))
    {
        assert!(help.contains(&format!("[env: {name}")), "{name} missing");
    }
}

/// A client whose channels speak TLS to `addr`, trusting the test CA and
/// presenting `identity` when given.
async fn tls_client(addr: SocketAddr, identity: Option<(&str, &str)>) -> Client {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    let tls = fixture_dir().join("tls");
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(tls.join("ca.pem")).expect("CA"),
        ))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        config = config.identity(Identity::from_pem(
            std::fs::read(tls.join(cert)).expect("client cert"),
            std::fs::read(tls.join(key)).expect("client key"),
        ));
    }
    tsoracle_client::ClientBuilder::endpoints(vec![format!("https://{addr}")])
        .channel_connector(move |endpoint: &str| {
            let endpoint = endpoint.to_string();
            let config = config.clone();
            async move {
                let channel = Endpoint::from_shared(endpoint)?
                    .tls_config(config)?
                    .connect()
                    .await?;
                Ok::<_, tsoracle_client::BoxError>(channel)
            }
        })
        .build()
        .await
        .expect("build a TLS client")
}

fn fixture_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_speaks_tls_and_mutual_tls_with_the_given_certificates() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    let tls = fixture_dir().join("tls");
    let path = |name: &str| tls.join(name).to_string_lossy().into_owned();
    let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));

    let server = Serving::start(
        &["--init", "--tls-cert", &cert, "--tls-key", &key],
        &dir,
        &[],
    );
    let client = tls_client(server.grpc, None).await;
    let first = client.get_ts().await.expect("get_ts over TLS").0;
    assert!(client.get_ts().await.expect("get_ts over TLS").0 > first);
    drop(client);
    // Plaintext is not served on a TLS port.
    let plain = server.client().await;
    plain
        .get_ts()
        .await
        .expect_err("a plaintext call to a TLS server fails");
    drop(plain);
    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "exit {status}: {stderr}");

    // Mutual TLS: a client certificate signed by --tls-client-ca is needed.
    let server = Serving::start(
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
        &dir,
        &[],
    );
    let client = tls_client(server.grpc, Some(("client.pem", "client.key"))).await;
    client
        .get_ts()
        .await
        .expect("get_ts with a client certificate");
    drop(client);
    let anonymous = tls_client(server.grpc, None).await;
    anonymous
        .get_ts()
        .await
        .expect_err("no client certificate, no timestamp");
    drop(anonymous);
    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "exit {status}: {stderr}");

    // A key without its certificate is a usage error.
    let (code, stderr) = refused(&["--tls-key", &key], &dir);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--tls-cert"), "{stderr}");

    // Files that are not what they claim are refused before a new oracle
    // is created: a key given as the certificate, a missing file.
    let missing = parent.path().join("not-yet");
    let (code, stderr) = refused(&["--init", "--tls-cert", &key, "--tls-key", &key], &missing);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("holds no PEM BEGIN CERTIFICATE block"),
        "{stderr}"
    );
    let nowhere = path("nowhere.pem");
    let (code, stderr) = refused(
        &["--init", "--tls-cert", &nowhere, "--tls-key", &key],
        &missing,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot read --tls-cert"), "{stderr}");
    assert!(!missing.exists(), "nothing was created");

    // A certificate with another certificate's key was found only after the
    // driver opened the directory, at times after it wrote `state`, and the
    // message named neither flag: the pair is checked first.
    let client_key = path("client.key");
    for dir in [&missing, &dir] {
        let before = dir.exists().then(|| common::dir_contents(dir));
        let (code, stderr) = refused(
            &["--init", "--tls-cert", &cert, "--tls-key", &client_key],
            dir,
        );
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains(&format!("--tls-cert {cert}, --tls-key {client_key}")),
            "{stderr}"
        );
        assert!(stderr.contains("is --tls-key the private key"), "{stderr}");
        assert_eq!(dir.exists().then(|| common::dir_contents(dir)), before);
    }
    assert!(!missing.exists(), "nothing was created");
}

#[test]
fn serve_refuses_lease_bounds_that_cannot_work_before_touching_anything() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    for (floor, ceiling) in [("10m", "1m"), ("0s", "300s")] {
        let (code, stderr) = refused(
            &[
                "--init",
                "--lease-ttl-floor",
                floor,
                "--lease-ttl-ceiling",
                ceiling,
            ],
            &dir,
        );
        assert_eq!(code, 2, "{floor} {ceiling}: {stderr}");
        assert!(stderr.contains("--lease-ttl-floor"), "{stderr}");
    }
    assert!(!dir.exists(), "nothing was created");
}

/// With `NOTIFY_SOCKET`, `serve` says READY=1 (with its status) only once
/// calls are answered, pings the watchdog every half of `WATCHDOG_USEC`
/// with a fresh status, and says STOPPING=1 at SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_notifies_systemd_ready_watchdog_status_and_stopping() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    init(&dir);
    let notify = NotifySocket::at_path();
    let mut server = start_notified(&dir, &notify, &[("WATCHDOG_USEC", "200000")]);

    let ready = notify.next();
    assert!(has(&ready, "READY", "1"), "{ready:?}");
    let status = status_of(&ready).unwrap_or_else(|| panic!("no STATUS in {ready:?}"));
    assert!(status.contains("high-water "), "{status}");
    assert!(status.contains("0 dense keys, 0 leases"), "{status}");
    // READY means calls are answered now: no wait for anything else.
    server.grpc = served_addr(status);
    let client = server.client().await;
    client.get_ts().await.expect("get_ts right after READY=1");
    client.get_seq("orders", 1).await.expect("get_seq");
    drop(client);

    // Watchdog pings, each with the current status: the dense key shows.
    let pings = notify.until(|message| {
        has(message, "WATCHDOG", "1")
            && status_of(message).is_some_and(|status| status.contains("1 dense keys"))
    });
    assert!(
        pings.iter().all(|message| has(message, "WATCHDOG", "1")),
        "{pings:?}"
    );
    assert!(has(&notify.next(), "WATCHDOG", "1"), "the pings go on");

    server.signal(Signal::SIGTERM);
    let rest = notify.until(|message| has(message, "STOPPING", "1"));
    assert!(
        rest.iter().all(|message| !has(message, "READY", "1")),
        "{rest:?}"
    );
    let (status, stderr) = server.wait();
    assert!(status.success(), "exit {status}: {stderr}");
}

/// An abstract notification socket (`@name`, as systemd may pass) works
/// too; without `WATCHDOG_USEC` there are no pings.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_notifies_an_abstract_socket_and_pings_only_with_a_watchdog() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    init(&dir);
    let notify = NotifySocket::abstract_named();
    let server = start_notified(&dir, &notify, &[]);
    let ready = notify.next();
    assert!(has(&ready, "READY", "1"), "{ready:?}");
    server.signal(Signal::SIGTERM);
    // Without a watchdog the next message is the stop (a status refresh
    // comes only every 10 s, and only when it changed: nothing changed).
    let stopping = notify.next();
    assert!(has(&stopping, "STOPPING", "1"), "{stopping:?}");
    let (status, stderr) = server.wait();
    assert!(status.success(), "exit {status}: {stderr}");
}

/// A `NOTIFY_SOCKET` that names no socket is refused before anything is
/// created, naming the variable.
#[test]
fn serve_refuses_a_notify_socket_it_cannot_use() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    for (name, value) in [
        ("NOTIFY_SOCKET", "relative/notify"),
        ("WATCHDOG_USEC", "soon"),
    ] {
        let mut child = command(&["--init"], &dir)
            .env(name, value)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve");
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("piped")
            .read_to_string(&mut stderr)
            .expect("stderr");
        let status = wait_bounded(child);
        assert_eq!(status.code(), Some(1), "{name}={value}: {stderr}");
        assert!(stderr.contains(name), "{stderr}");
    }
    assert!(!dir.exists(), "nothing was created");
}

/// A lease moves the durable high-water its TTL past the clock, so the
/// lease TTL bounds are capped at an hour, as the window is: a ceiling of
/// thousands of years once let one AcquireLease push every later
/// timestamp to the year 2140.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_caps_the_lease_ttl_bounds_at_an_hour() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    for (flag, value) in [
        ("--lease-ttl-ceiling", "5000000000000h"),
        ("--lease-ttl-ceiling", "18446744073709551615ms"),
        ("--lease-ttl-ceiling", "2h"),
        ("--lease-ttl-floor", "61m"),
    ] {
        let (code, stderr) = refused(&["--init", flag, value], &dir);
        assert_eq!(code, 2, "{flag} {value}: {stderr}");
        assert!(
            stderr.contains("above the maximum of 1h") && stderr.contains("lease"),
            "{flag} {value}: {stderr}"
        );
    }
    let output = command(&["--init"], &dir)
        .env("TSORACLE_LEASE_TTL_CEILING", "2h")
        .output()
        .expect("run serve");
    assert_eq!(output.status.code(), Some(2));
    assert!(!dir.exists(), "a refused start created nothing");

    // The help says why.
    let output = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("serve --help");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("at most 1h: granting a lease moves the durable"),
        "{help}"
    );

    // At the cap, one lease moves the high-water at most an hour ahead.
    let server = Serving::start(&["--init", "--lease-ttl-ceiling", "1h"], &dir, &[]);
    let client = server.client().await;
    client
        .acquire_lease(b"svc-a", 1, Duration::from_secs(2 * 3600))
        .await
        .expect_err("a TTL above the ceiling is refused");
    let before = now_ms();
    client
        .acquire_lease(b"svc-a", 1, Duration::from_secs(3600))
        .await
        .expect("a TTL at the ceiling is granted");
    let after = now_ms();
    drop(client);
    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "exit {status}: {stderr}");
    let high_water = FileDriver::open_or_init(&dir).expect("reopen").high_water();
    assert!(high_water >= before + 3_600_000, "{high_water}");
    // The window ahead (3 s) and the failover advance (1 s) come on top.
    assert!(high_water <= after + 3_600_000 + 60_000, "{high_water}");
}

/// A client that connects and then sends nothing (or only the HTTP/2
/// preface) once kept a stopping server alive without bound, the directory
/// locked: the drain is bounded by `--shutdown-timeout`, then they are
/// closed and the directory unlocked.
#[test]
fn sigterm_closes_idle_connections_after_the_shutdown_timeout() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    init(&dir);
    let server = Serving::start(&["--shutdown-timeout", "1s"], &dir, &[]);
    let silent = TcpStream::connect_timeout(&server.grpc, BOUND).expect("connect");
    let mut preface = TcpStream::connect_timeout(&server.grpc, BOUND).expect("connect");
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .expect("send the preface");
    // Both are accepted: the server opens each with its SETTINGS frame.
    for mut stream in [&silent, &preface] {
        stream.set_read_timeout(Some(BOUND)).expect("timeout");
        let mut byte = [0; 1];
        assert_eq!(stream.read(&mut byte).expect("the server's SETTINGS"), 1);
    }
    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(
        stderr.contains("connections still open after --shutdown-timeout 1s: closing them"),
        "{stderr}"
    );
    assert!(
        stderr.contains("shut down; driver closed and state directory unlocked"),
        "{stderr}"
    );
    // A replacement can take the directory at once.
    FileDriver::open_or_init(&dir).expect("unlocked");
    drop((silent, preface));
}

/// Served as root, a directory another user owns was accepted and left
/// with root-owned 0600 files its owner could no longer serve: `serve`
/// refuses a directory, or a file of it, that the effective user does not
/// own, and says how to fix it. (Needs root to make such a directory.)
#[test]
fn serve_refuses_a_directory_another_user_owns() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: making a directory another user owns needs root");
        return;
    }
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    init(&dir);
    let other = nix::unistd::Uid::from_raw(54321);
    let before = common::dir_contents(&dir);

    nix::unistd::chown(&dir, Some(other), None).expect("chown the directory");
    let (code, stderr) = refused(&[], &dir);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{} is owned by uid 54321", dir.display())),
        "{stderr}"
    );
    assert!(stderr.contains("not by uid 0"), "{stderr}");
    assert!(stderr.contains("sudo -u '#54321'"), "{stderr}");
    assert!(
        stderr.contains(&format!("chown -R root {}", dir.display())),
        "{stderr}"
    );

    // --init does not write into it either.
    let (code, stderr) = refused(&["--init"], &dir);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("is owned by uid 54321"), "{stderr}");
    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    nix::unistd::chown(&empty, Some(other), None).expect("chown the empty directory");
    let (code, stderr) = refused(&["--init"], &empty);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("is owned by uid 54321"), "{stderr}");
    assert!(
        common::entry_names(&empty).is_empty(),
        "--init wrote nothing"
    );

    // A file of it another user owns is refused the same way.
    nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(0)), None).expect("chown back");
    nix::unistd::chown(&dir.join("state"), Some(other), None).expect("chown state");
    let (code, stderr) = refused(&[], &dir);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is owned by uid 54321",
            dir.join("state").display()
        )),
        "{stderr}"
    );
    // Nothing was written, and owned again it serves.
    assert_eq!(common::dir_contents(&dir), before);
    nix::unistd::chown(
        &dir.join("state"),
        Some(nix::unistd::Uid::from_raw(0)),
        None,
    )
    .expect("chown back");
    let server = Serving::start(&[], &dir, &[]);
    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "exit {status}: {stderr}");
}

/// `--log warning` or `--log verbose` (not level names) were read as
/// target names and silently turned off every log line, the ERROR of a
/// poisoned driver included: what is neither a level nor `target=level`
/// is refused as a usage error.
#[test]
fn serve_refuses_a_log_filter_that_is_neither_a_level_nor_target_level() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    for filter in [
        "warning",
        "verbose",
        "info,chatty",
        "tsoracle=loud",
        "=info",
    ] {
        let (code, stderr) = refused(&["--init", "--log", filter], &dir);
        assert_eq!(code, 2, "{filter}: {stderr}");
        assert!(stderr.contains("--log"), "{filter}: {stderr}");
        assert!(
            stderr.contains("is not a level") || stderr.contains("names no target"),
            "{filter}: {stderr}"
        );
    }
    let output = command(&["--init"], &dir)
        .env("TSORACLE_LOG", "verbose")
        .output()
        .expect("run serve");
    assert_eq!(output.status.code(), Some(2));
    assert!(!dir.exists(), "a refused start created nothing");

    // Levels and target=level pass the parser (the start then stops at the
    // missing directory, which proves the filter was accepted).
    for filter in ["warn", "ERROR", "off", "info,tsoracle_server=debug,h2=warn"] {
        let (code, stderr) = refused(&["--log", filter], &dir);
        assert_eq!(code, 1, "{filter}: {stderr}");
        assert!(stderr.contains("does not exist"), "{filter}: {stderr}");
    }
}

/// A stdout on `/dev/full` (every write ENOSPC) once turned a clean SIGTERM
/// into exit 1: the serving line stayed in stdout's buffer and the flush at
/// the stop failed. The failed write is logged; the stop is clean.
#[test]
fn a_stdout_that_cannot_be_written_never_fails_a_clean_stop() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    init(&dir);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let mut server = Logged::start(&[], &dir, &[], Stdio::from(full));
    let line = server.wait_for("listening on ");
    let grpc: SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an address")
        .parse()
        .expect("gRPC address");
    // It serves despite the failed line.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = Client::connect(vec![format!("http://{grpc}")])
            .await
            .expect("client");
        tokio::time::timeout(BOUND, client.get_ts())
            .await
            .expect("bounded")
            .expect("get_ts");
    });
    server.wait_for("cannot write the serving line to stdout");
    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("error:"), "{stderr}");
    assert!(
        stderr.contains("shut down; driver closed and state directory unlocked"),
        "{stderr}"
    );
    FileDriver::open_or_init(&dir).expect("unlocked");
}

/// SIGHUP once ended the process at once, the graceful stop skipped: it
/// stops as SIGTERM does (reloading is not supported).
#[test]
fn sighup_stops_gracefully_as_sigterm_does() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    init(&dir);
    let server = Serving::start(&[], &dir, &[]);
    let (status, stderr) = server.stop(Signal::SIGHUP);
    assert_eq!(status.code(), Some(0), "{status}: {stderr}");
    assert!(stderr.contains("signal=\"SIGHUP\""), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("shut down; driver closed and state directory unlocked"),
        "the final line is SIGTERM's: {stderr}"
    );
    FileDriver::open_or_init(&dir).expect("unlocked");
}
