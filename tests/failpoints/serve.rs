//! `tsoracle-file serve` with a failure injected through the `FAILPOINTS`
//! environment variable of the served process (with the `server` feature
//! too): a failed fsync poisons the running driver, `/readyz` and the gRPC
//! health service turn not ready, the watchdog pings stop; a full disk at
//! start is named by `/readyz` and logged at ERROR.
//!
//! The failpoints are armed in the child, not here; each test still holds
//! a `FailScenario`, as every test of this target does.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Instant;

use nix::sys::signal::Signal;
use tsoracle_driver_file::{FileDriver, read_state_dir};

use crate::common::serve::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_not_ready_when_a_failed_fsync_poisons_the_driver() {
    // This process opens the directory too: no failpoint of another test
    // may fire in it.
    let _scenario = fail::FailScenario::setup();
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    init(&dir);
    // The start-up fence writes the state file once; the next file fsync
    // (the dense write below) fails as a dying disk's would.
    let server = Serving::start(
        &[],
        &dir,
        &[("FAILPOINTS", "file_driver::before_temp_fsync=1*off->return")],
    );
    assert_eq!(server.get("/readyz"), (200, "ready\n".to_string()));
    let mut health = health_client(server.grpc).await;
    assert_eq!(check(&mut health, "").await.expect("check"), SERVING);
    let mut watching = watch(&mut health, TSO_SERVICE).await;
    assert_eq!(next_status(&mut watching).await, Some(SERVING));

    let client = server.client().await;
    client
        .get_seq("orders", 1)
        .await
        .expect_err("the fsync of the dense file fails");
    drop(client);

    // The gRPC health service flips with /readyz: the watcher is told,
    // and a check of either name says NOT_SERVING.
    assert_eq!(next_status(&mut watching).await, Some(NOT_SERVING));
    for service in ["", TSO_SERVICE] {
        assert_eq!(
            check(&mut health, service).await.expect("check"),
            NOT_SERVING
        );
    }
    drop((watching, health));

    let deadline = Instant::now() + BOUND;
    let (status, body) = loop {
        let (status, body) = server.get("/readyz");
        if status != 200 || Instant::now() >= deadline {
            break (status, body);
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("poisoned"), "{body}");
    // The process still serves HTTP: alive, not ready.
    assert_eq!(server.get("/healthz"), (200, "ok\n".to_string()));
    let (_, text) = server.get("/metrics");
    assert_eq!(sample(&text, "tsoracle_file_driver_poisoned"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "tsoracle_file_driver_write_errors_total{op=\"fsync_temp\",effect=\"poisoning\"}"
        ),
        Some(1.0),
        "{text}"
    );

    let (status, stderr) = server.stop(Signal::SIGINT);
    assert!(status.success(), "exit {status}: {stderr}");
    // The poisoned write never reached the live file: a restart is healthy.
    let found = read_state_dir(&dir).expect("readable");
    assert!(found.dense.is_none(), "the failed dense write was not kept");
}

/// A poisoned driver stops the watchdog pings (so that systemd restarts
/// the service, the only way it recovers) and says so in its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_driver_stops_the_watchdog_pings() {
    // This process opens the directory too: no failpoint of another test
    // may fire in it.
    let _scenario = fail::FailScenario::setup();
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    init(&dir);
    let notify = NotifySocket::at_path();
    let mut server = start_notified(
        &dir,
        &notify,
        &[
            ("WATCHDOG_USEC", "200000"),
            ("FAILPOINTS", "file_driver::before_temp_fsync=1*off->return"),
        ],
    );
    let ready = notify.next();
    assert!(has(&ready, "READY", "1"), "{ready:?}");
    server.grpc = served_addr(status_of(&ready).expect("STATUS"));
    assert!(has(&notify.next(), "WATCHDOG", "1"), "pings while healthy");

    let client = server.client().await;
    client
        .get_seq("orders", 1)
        .await
        .expect_err("the fsync of the dense file fails");
    drop(client);

    let poisoned =
        |message: &str| status_of(message).is_some_and(|status| status.contains("poisoned"));
    notify.until(poisoned);
    // From then on each watchdog interval brings only the status.
    for _ in 0..5 {
        let message = notify.next();
        assert!(poisoned(&message), "{message:?}");
        assert!(!has(&message, "WATCHDOG", "1"), "{message:?}");
    }
    server.signal(Signal::SIGTERM);
    let rest = notify.until(|message| has(message, "STOPPING", "1"));
    assert!(
        rest.iter().all(|message| !has(message, "WATCHDOG", "1")),
        "{rest:?}"
    );
    let (status, stderr) = server.wait();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(
        stderr.contains("no more systemd watchdog pings"),
        "{stderr}"
    );
}

/// A full disk at start: the first high-water write (the fence) fails with
/// ENOSPC. Clients see upstream's UNAVAILABLE "not leader", which `serve`
/// cannot change; so the cause is logged at ERROR with the file and the OS
/// error, and `/readyz` names it.
#[test]
fn a_full_disk_at_start_is_named_by_readyz_and_logged_at_error() {
    // This process opens the directory too: no failpoint of another test
    // may fire in it.
    let _scenario = fail::FailScenario::setup();
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    init(&dir);
    let mut server = Logged::start(
        &[],
        &dir,
        &[(
            "FAILPOINTS",
            "file_driver::before_temp_write=return(enospc)",
        )],
        Stdio::null(),
    );
    let line = server.wait_for("metrics and probes on http://");
    let http: SocketAddr = line
        .split("metrics and probes on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an address")
        .parse()
        .expect("metrics address");
    let error = server.wait_for("the high-water write failed");
    assert!(error.contains("ERROR"), "{error}");
    assert!(error.contains("state.tmp"), "names the file: {error}");
    assert!(
        error.contains("No space left on device"),
        "names the OS error: {error}"
    );
    let deadline = Instant::now() + BOUND;
    let (status, body) = loop {
        let (status, body) = http_get(http, "/readyz");
        if body.contains("No space left on device") || Instant::now() >= deadline {
            break (status, body);
        }
        std::thread::yield_now();
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("high-water write failed"), "{body}");
    assert!(body.contains("state.tmp"), "{body}");
    assert!(body.contains("No space left on device"), "{body}");
    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(0), "a clean stop: {stderr}");
    assert!(
        stderr.contains("shut down; driver closed and state directory unlocked"),
        "{stderr}"
    );
    FileDriver::open_or_init(&dir).expect("unlocked");
}
