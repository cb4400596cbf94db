//! `serve`: the real `tsoracle-server` 3.3 on a [`FileDriver`], with the
//! standard gRPC health service next to it on the gRPC port, and Prometheus
//! metrics and HTTP health checks on a second listener. Flags and
//! defaults follow upstream's `tsoracle serve file`; each flag can also be
//! set from the environment variable named in `--help`.
//!
//! Start-up, in order: logging; the flag combinations and systemd's
//! `NOTIFY_SOCKET` / `WATCHDOG_USEC`; the metrics recorder (before the
//! driver opens, so the driver's handles register with it); the gRPC server
//! with its TLS acceptor (a key that is not the certificate's is refused
//! here); the signal handlers; the state directory checks (one the
//! effective user does not own is refused; so is a missing or stateless
//! one, unless `--init`); the driver (fails fast when another process holds
//! the directory); the headroom check; both listeners; then the server.
//! Once it fenced its first window and serves, one line goes to stdout:
//! `tsoracle-file: serving gRPC on ADDR, metrics on http://ADDR/metrics`
//! (or `metrics disabled`), and systemd is told `READY=1`. SIGINT,
//! SIGTERM or SIGHUP stops it gracefully (SIGHUP reloads nothing): systemd is told `STOPPING=1`, the probes
//! turn not ready, in-flight calls finish (within `--shutdown-timeout`,
//! then the connections left are closed), the driver is dropped and the
//! directory unlocked before the process exits 0.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::{FileDriver, FileDriverError, FileOp, read_state_dir};
use tsoracle_server::{Server, ServingState, WatchGuard};

use super::init;
use crate::cli::{self, CmdResult, Failure};
use crate::grpc_health;
use crate::http::{self, Health};
use crate::readiness::Readiness;
use crate::sd_notify;
use crate::watched::{Watched, WriteFailure};

/// The long help of `serve` (`tsoracle-file serve --help`).
pub(crate) const LONG_ABOUT: &str = concat!(
    "Run the real tsoracle-server (3.2.2) on the state directory: gRPC on --listen, ",
    "Prometheus metrics on http://--metrics-listen/metrics with /healthz (the ",
    "process serves) and /readyz (the driver is not poisoned and the server is the ",
    "serving leader; 503 otherwise). Flags and defaults follow `tsoracle serve file`; ",
    "each can also be set from the environment variable shown. Durations take a ",
    "unit: 3s, 250ms, 1m 30s.\n\n",
    "A missing directory, or one that holds no state, is refused unless --init is ",
    "given (or `tsoracle-file init DIR` was run). Once serving, prints ",
    "`tsoracle-file: serving gRPC on ADDR, metrics on http://ADDR/metrics` on stdout. ",
    "SIGINT, SIGTERM or SIGHUP stops it gracefully (in-flight calls finish, the ",
    "directory is unlocked) and it exits 0; SIGHUP reloads nothing. A stdout that ",
    "cannot be written (closed, full) is logged, never fails the stop.\n\n",
    crate::cli::exit_codes!(),
);

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to serve gRPC on; port 0 lets the OS pick a free port
    #[arg(long, env = "TSORACLE_LISTEN", default_value = "127.0.0.1:50551")]
    pub(crate) listen: SocketAddr,
    /// Directory holding the oracle's durable state
    #[arg(long, env = "TSORACLE_STATE_DIR", default_value = "./tsoracle-data")]
    pub(crate) state_dir: PathBuf,
    /// Create the state directory, as a new oracle at high-water 0, when it
    /// is missing or holds no state (as `tsoracle-file init DIR` does);
    /// without it such a directory is refused
    #[arg(long, env = "TSORACLE_INIT")]
    pub(crate) init: bool,
    /// How far ahead of the clock each durable high-water write reaches
    /// (at most 1h)
    #[arg(long, env = "TSORACLE_WINDOW_AHEAD", value_name = "DURATION", default_value = cli::DEFAULT_WINDOW_AHEAD, value_parser = cli::parse_window_ahead)]
    pub(crate) window_ahead: Duration,
    /// How far past the recovered high-water a (re)started server fences
    /// (at most 1h)
    #[arg(long, env = "TSORACLE_FAILOVER_ADVANCE", value_name = "DURATION", default_value = cli::DEFAULT_FAILOVER_ADVANCE, value_parser = cli::parse_failover_advance)]
    pub(crate) failover_advance: Duration,
    /// Shortest lease TTL the server grants (at most 1h)
    #[arg(long, env = "TSORACLE_LEASE_TTL_FLOOR", value_name = "DURATION", default_value = "5s", value_parser = parse_lease_ttl)]
    pub(crate) lease_ttl_floor: Duration,
    /// Longest lease TTL the server grants (at most 1h: granting a lease
    /// moves the durable high-water its TTL past the clock, for good)
    #[arg(long, env = "TSORACLE_LEASE_TTL_CEILING", value_name = "DURATION", default_value = "300s", value_parser = parse_lease_ttl)]
    pub(crate) lease_ttl_ceiling: Duration,
    /// How long a stop (SIGTERM, SIGINT, SIGHUP) waits for calls in flight and
    /// open connections to finish before it closes them, idle connections
    /// included, and unlocks the directory
    #[arg(long, env = "TSORACLE_SHUTDOWN_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = cli::parse_duration)]
    pub(crate) shutdown_timeout: Duration,
    /// Interval of the server's heartbeat log line; 0s disables it
    #[arg(long, env = "TSORACLE_HEARTBEAT_INTERVAL", value_name = "DURATION", default_value = "10s", value_parser = cli::parse_duration)]
    pub(crate) heartbeat_interval: Duration,
    /// Log filter for stderr: a level (`info`, `debug`, ...) or
    /// `target=level` directives, comma-separated
    #[arg(long, env = "TSORACLE_LOG", value_name = "FILTER", default_value = "info", value_parser = parse_log)]
    pub(crate) log: Targets,
    /// Address of the HTTP listener for /metrics (Prometheus text format),
    /// /healthz and /readyz; port 0 lets the OS pick
    #[arg(
        long,
        env = "TSORACLE_METRICS_LISTEN",
        default_value = "127.0.0.1:9551"
    )]
    pub(crate) metrics_listen: SocketAddr,
    /// Do not open the metrics and health listener (and record no metrics)
    #[arg(long, env = "TSORACLE_NO_METRICS")]
    pub(crate) no_metrics: bool,
    /// PEM certificate chain: serve gRPC over TLS (with --tls-key)
    #[arg(
        long,
        env = "TSORACLE_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(
        long,
        env = "TSORACLE_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub(crate) tls_key: Option<PathBuf>,
    /// PEM CA bundle: require client certificates signed by it (mutual TLS)
    #[arg(
        long,
        env = "TSORACLE_TLS_CLIENT_CA",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub(crate) tls_client_ca: Option<PathBuf>,
}

/// Parses `--lease-ttl-floor` and `--lease-ttl-ceiling`: at most
/// [`cli::MAX_WINDOW`], for the reason `--window-ahead` is. Granting a
/// lease persists a high-water its TTL past the clock (every timestamp
/// under the lease is below it), and a restart resumes from the durable
/// high-water: one `AcquireLease` with a TTL of a century would move every
/// later timestamp a century ahead of real time.
fn parse_lease_ttl(text: &str) -> Result<Duration, String> {
    let above = || {
        format!(
            "{text} is above the maximum of {}: granting a lease persists a high-water \
             its TTL past the clock and a restart resumes from it, so one lease with a \
             longer TTL could push every later timestamp that far ahead of real time \
             for good (defaults: floor 5s, ceiling 300s)",
            humantime::format_duration(cli::MAX_WINDOW)
        )
    };
    let ttl = match humantime::parse_duration(text) {
        Err(humantime::DurationError::NumberOverflow) => return Err(above()),
        _ => cli::parse_duration(text)?,
    };
    if ttl > cli::MAX_WINDOW {
        return Err(above());
    }
    Ok(ttl)
}

/// Parses `--log`: comma-separated directives, each a level or
/// `target=level`. `Targets` alone reads a word that is not a level (`warning`,
/// `verbose`) as a target name, which turned off every other line, the
/// ERROR of a poisoned driver included: such a word is refused.
fn parse_log(text: &str) -> Result<Targets, String> {
    use tracing_subscriber::filter::LevelFilter;
    const LEVELS: &str = "trace, debug, info, warn, error or off";
    for directive in text.split(',').map(str::trim) {
        let level = match directive.split_once('=') {
            Some((target, _)) if target.trim().is_empty() => {
                return Err(format!("`{directive}` names no target (target=level)"));
            }
            Some((_, level)) => level.trim(),
            None => directive,
        };
        if level.parse::<LevelFilter>().is_err() {
            return Err(format!(
                "`{level}` in `{directive}` is not a level: a directive is a level \
                 ({LEVELS}) or target=level"
            ));
        }
    }
    text.parse::<Targets>()
        .map_err(|err| format!("{err} (a level such as `info`, or `target=level,...`)"))
}

/// Runs the server until SIGINT, SIGTERM or SIGHUP.
pub(crate) fn exec(args: &Args) -> CmdResult {
    init_logging(args)?;

    // Built with `failpoints`, the driver's failpoints are configured from
    // the FAILPOINTS environment variable (`name=action;...`), for fault
    // tests of the whole process.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();

    check_lease_ttls(args)?;
    // systemd's notification socket and watchdog, when it started us.
    let notify = Notify {
        notifier: sd_notify::Notifier::from_env()?.map(Arc::new),
        watchdog: sd_notify::watchdog_interval()?,
    };
    let metrics = install_metrics(args)?;
    // The gRPC server with its TLS acceptor, built now: a certificate and a
    // key that are not a pair (or a CA bundle that does not parse) are
    // refused before the directory is opened, let alone written.
    let grpc_server = grpc_server(args)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::new(format!("cannot start the async runtime: {err}")))?;
    // Install the SIGINT/SIGTERM/SIGHUP handlers before anything else, so a stop
    // request can never hit the default terminate-at-once disposition.
    let signal = {
        let _context = runtime.enter();
        stop_signal()
    };

    let (state_dir, driver) = open_driver(args)?;
    let served = runtime.block_on(serve(
        args,
        &state_dir,
        Arc::clone(&driver),
        metrics,
        grpc_server,
        notify,
        signal,
    ));
    close(runtime, driver, &state_dir, served)
}

/// Logs to stderr, at the levels of --log.
fn init_logging(args: &Args) -> Result<(), Failure> {
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .with(args.log.clone())
        .try_init()
        .map_err(|err| Failure::new(format!("cannot set up logging: {err}")))
}

/// Lease TTL bounds the server would refuse only once it is built, checked
/// before anything is created or opened.
fn check_lease_ttls(args: &Args) -> Result<(), Failure> {
    if args.lease_ttl_floor.is_zero() || args.lease_ttl_floor > args.lease_ttl_ceiling {
        let mut refusal = Failure::new(format!(
            "--lease-ttl-floor ({}) must be above zero and at most --lease-ttl-ceiling ({})",
            humantime::format_duration(args.lease_ttl_floor),
            humantime::format_duration(args.lease_ttl_ceiling)
        ));
        refusal.code = cli::EXIT_USAGE;
        return Err(refusal);
    }
    Ok(())
}

/// The Prometheus recorder, installed before the driver opens so that the
/// driver's handles register with it (none with --no-metrics).
fn install_metrics(args: &Args) -> Result<Option<PrometheusHandle>, Failure> {
    if args.no_metrics {
        return Ok(None);
    }
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|err| Failure::new(format!("cannot install the metrics recorder: {err}")))?;
    Ok(Some(handle))
}

/// Checks the state directory (its owner, then whether it holds state or
/// may be initialized) and opens the driver on it, refusing a high-water
/// without headroom.
fn open_driver(args: &Args) -> Result<(PathBuf, Arc<FileDriver>), Failure> {
    let state_dir = std::path::absolute(&args.state_dir).unwrap_or(args.state_dir.clone());
    // The owner first: `--init` must not write into another user's directory.
    check_owner(&state_dir)?;
    prepare_state_dir(&state_dir, args.init)?;
    let driver = FileDriver::open_or_init(&state_dir).map_err(|err| Failure::from_error(&err))?;
    let recovered = driver.high_water();
    if let Err(why) = cli::check_headroom(recovered, args.window_ahead, args.failover_advance) {
        return Err(Failure::new(format!(
            "refusing to serve {}: {why}",
            state_dir.display()
        )));
    }
    Ok((state_dir, driver))
}

/// After the server stopped: drops the runtime and the driver, which
/// unlocks the directory, then reports how serving ended.
fn close(
    runtime: tokio::runtime::Runtime,
    driver: Arc<FileDriver>,
    state_dir: &Path,
    served: Result<(), Failure>,
) -> CmdResult {
    // Dropping the runtime drops every task still holding a handle on the
    // driver (connection tasks, the health listener), so ours is then the
    // last one and dropping it joins the committer and unlocks the directory.
    drop(runtime);
    let high_water = driver.high_water();
    let driver = Arc::try_unwrap(driver).map_err(|_| {
        Failure::new("the driver is still shared after the server stopped; directory not unlocked")
    })?;
    drop(driver);
    served?;
    tracing::info!(
        state_dir = %state_dir.display(),
        high_water,
        "shut down; driver closed and state directory unlocked"
    );
    Ok(String::new())
}

/// SIGINT, SIGTERM or SIGHUP, whichever comes first: each stops the server
/// gracefully. SIGHUP (a closed terminal, or `systemctl kill -s HUP`)
/// would otherwise end the process at once, the stop skipped; reloading
/// settings is not supported. The handlers are installed when this is
/// called (inside the runtime), not when the future is first polled.
fn stop_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let upstream = tsoracle_server::shutdown_signal();
    let hangup = signal(SignalKind::hangup());
    async move {
        let mut hangup = match hangup {
            Ok(hangup) => hangup,
            Err(err) => {
                tracing::warn!(error = %err, "could not install the SIGHUP handler");
                upstream.await;
                return;
            }
        };
        tokio::select! {
            () = upstream => {}
            _ = hangup.recv() => {
                tracing::info!(signal = "SIGHUP", "shutdown signal received (reloading is not supported)");
            }
        }
    }
}

/// Refuses a directory that is missing or holds no state, unless `init`:
/// serving one would start a new oracle at high-water 0, which after a
/// mistyped path or an unmounted volume hands out timestamps again.
fn prepare_state_dir(dir: &Path, init: bool) -> Result<(), Failure> {
    let holds_state = match read_state_dir(dir) {
        Ok(found) => found.high_water.is_some() || found.dense.is_some() || found.leases.is_some(),
        Err(FileDriverError::Io {
            op: FileOp::Inspect,
            ref source,
            ..
        }) if source.kind() == std::io::ErrorKind::NotFound => false,
        Err(err) => return Err(Failure::from_error(&err)),
    };
    if holds_state {
        return Ok(());
    }
    if !init {
        let what = if dir.exists() {
            "holds no oracle state (no state, dense or leases file)"
        } else {
            "does not exist"
        };
        return Err(Failure::new(format!(
            "refusing to serve {}: it {what}; serving it would start a new oracle at \
             high-water 0. Check the path (and that its volume is mounted); to start a \
             new oracle there, run `tsoracle-file init {}` first or pass --init",
            dir.display(),
            dir.display()
        )));
    }
    init::init(dir).map_err(|err| Failure::from_error(&err))?;
    tracing::info!(state_dir = %dir.display(), "initialized a new oracle at high-water 0");
    Ok(())
}

/// Refuses a state directory (or one of its files) that the effective user
/// does not own, as PostgreSQL does: served as root, a directory another
/// user owns would be left with root-owned 0600 files that its owner can no
/// longer serve ("Permission denied").
fn check_owner(dir: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(
        ["LOCK", "state", "dense", "leases"]
            .iter()
            .map(|name| dir.join(name)),
    );
    for path in paths {
        // A missing file is the driver's business; so is any other error.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let owner = meta.uid();
        if owner != me {
            let run_as = match user_name(owner) {
                Some(name) => format!("runuser -u {name} -- tsoracle-file serve ..."),
                None => format!("sudo -u '#{owner}' tsoracle-file serve ..."),
            };
            let chown_to = user_name(me).unwrap_or_else(|| me.to_string());
            return Err(Failure::new(format!(
                "refusing to serve {}: {} is owned by {}, not by {}, the user serving it; \
                 the files serve writes would belong to {} alone and the owner could no \
                 longer serve the directory. Run serve as its owner (`{run_as}`), \
                 or give the directory to this user (`chown -R {chown_to} {}`)",
                dir.display(),
                path.display(),
                user_text(owner),
                user_text(me),
                user_text(me),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// `uid 1000 (alice)`, or `uid 1000` when /etc/passwd does not name it.
fn user_text(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// The name /etc/passwd gives `uid`, if any.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let found = fields.nth(1)?.parse::<u32>().ok()?;
        (found == uid).then(|| name.to_string())
    })
}

/// The server's TLS settings from `--tls-*`, reading the files now so a
/// bad path is reported before anything starts.
fn tls_config(args: &Args) -> Result<Option<tonic::transport::ServerTlsConfig>, Failure> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};

    // tonic parses the PEM only when the server starts; a file without the
    // expected block is refused here, before anything is created.
    let read = |path: &PathBuf, what: &str, block: &str| {
        let bytes = std::fs::read(path)
            .map_err(|err| Failure::new(format!("cannot read {what} {}: {err}", path.display())))?;
        if !String::from_utf8_lossy(&bytes).contains(block) {
            return Err(Failure::new(format!(
                "{what} {} holds no PEM {} block",
                path.display(),
                block.trim_matches('-')
            )));
        }
        Ok(bytes)
    };
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let identity = Identity::from_pem(
        read(cert, "--tls-cert", "-----BEGIN CERTIFICATE-----")?,
        read(key, "--tls-key", "PRIVATE KEY-----")?,
    );
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &args.tls_client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(
            ca,
            "--tls-client-ca",
            "-----BEGIN CERTIFICATE-----",
        )?));
    }
    Ok(Some(config))
}

/// The gRPC server builder, with TLS from `--tls-*` when given. rustls
/// checks here that the key is the certificate's, and that the PEM blocks
/// parse.
fn grpc_server(args: &Args) -> Result<tonic::transport::Server, Failure> {
    let server = tonic::transport::Server::builder();
    let Some(tls) = tls_config(args)? else {
        return Ok(server);
    };
    server.tls_config(tls).map_err(|err| {
        let mut given = vec![
            format!("--tls-cert {}", display(args.tls_cert.as_deref())),
            format!("--tls-key {}", display(args.tls_key.as_deref())),
        ];
        if let Some(ca) = &args.tls_client_ca {
            given.push(format!("--tls-client-ca {}", ca.display()));
        }
        Failure::new(format!(
            "cannot serve TLS with {}: {} (is --tls-key the private key of the \
             certificate in --tls-cert?)",
            given.join(", "),
            cli::error_chain(&err)
        ))
    })
}

fn display(path: Option<&Path>) -> String {
    path.map(|path| path.display().to_string())
        .unwrap_or_default()
}

/// Serves the driver until a stop: binds --listen and builds the server,
/// starts the metrics listener and the gRPC service, serves until a stop
/// signal (or the gRPC server or the leader watch ends by itself), then
/// stops: not ready, drained, the leader watch and the metrics task ended.
async fn serve(
    args: &Args,
    state_dir: &Path,
    driver: Arc<FileDriver>,
    metrics: Option<PrometheusHandle>,
    grpc_server: tonic::transport::Server,
    notify: Notify,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Failure> {
    let (listener, addr) = bind_grpc(args).await?;
    let (server, write_failure) = build_server(args, &driver)?;
    let serving = server.subscribe();

    // One stop flag for the readiness check, both listeners' ends and the
    // gRPC health watchers.
    let (stop, stopped) = watch::channel(false);
    let readiness = Arc::new(Readiness::new(
        Arc::clone(&driver),
        server.subscribe(),
        stopped.clone(),
        write_failure,
    ));

    let (http_task, metrics_addr) = start_metrics(args, metrics, &readiness, stopped).await?;
    // The server's routes next to the standard health service, on one
    // listener; the guard owns the server's leader-watch task.
    let (routes, guard) = server
        .into_router()
        .map_err(|err| Failure::new(format!("cannot build the gRPC service: {err}")))?;
    let (drain, grpc) = grpc_service(grpc_server, routes, &readiness, listener);
    tokio::pin!(grpc, signal);

    let addrs = (addr, metrics_addr);
    let on_serving = || serving_now(args, state_dir, &driver, addrs, &notify, &stop);
    let ended =
        serve_until_stopped(serving, &guard, grpc.as_mut(), signal.as_mut(), on_serving).await;

    // Stopping: probes turn not ready and health watchers get NOT_SERVING
    // and their streams end; then the gRPC server drains.
    let _ = stop.send(true);
    if let Some(notifier) = &notify.notifier {
        notifier.send("STOPPING=1\nSTATUS=stopping: draining calls, then closing the driver");
    }
    let drained = drain_unless_ended(args, ended, drain, grpc.as_mut()).await;
    // Stops the leader watch (bounded by the server's shutdown grace); its
    // own error, when it ended by itself, is the reason to report.
    let watched = guard.shutdown().await;
    if let Some(task) = http_task {
        task.abort();
    }
    stop_reason(watched, drained)
}

/// With a metrics handle, [`serve_metrics`]: its task and the address it
/// bound; without (`--no-metrics`), neither.
async fn start_metrics(
    args: &Args,
    metrics: Option<PrometheusHandle>,
    readiness: &Arc<Readiness>,
    stopped: watch::Receiver<bool>,
) -> Result<(Option<tokio::task::JoinHandle<()>>, Option<SocketAddr>), Failure> {
    Ok(match metrics {
        Some(handle) => {
            let (task, bound) = serve_metrics(args, handle, readiness, stopped).await?;
            (Some(task), Some(bound))
        }
        None => (None, None),
    })
}

/// The gRPC server on `listener`: the oracle server's `routes` next to the
/// standard health service. It stops accepting and drains its calls once
/// the returned sender fires.
fn grpc_service(
    grpc_server: tonic::transport::Server,
    routes: tonic::service::Routes,
    readiness: &Arc<Readiness>,
    listener: TcpListener,
) -> (
    tokio::sync::oneshot::Sender<()>,
    impl std::future::Future<Output = Result<(), tonic::transport::Error>>,
) {
    let mut tonic = grpc_server;
    let (drain, draining) = tokio::sync::oneshot::channel::<()>();
    let grpc = tonic
        .add_routes(routes)
        .add_service(grpc_health::service(Arc::clone(readiness)))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async move {
                let _ = draining.await;
            },
        );
    (drain, grpc)
}

/// Runs until a stop signal, or until the gRPC server or the server's
/// leader watch ends by itself (an error). Calls `on_serving` (the
/// announcement) only once the server fenced its first window and answers
/// calls: a script (or a test) waiting for the line may call at once.
async fn serve_until_stopped<G, S>(
    mut serving: watch::Receiver<ServingState>,
    guard: &WatchGuard,
    mut grpc: std::pin::Pin<&mut G>,
    mut signal: std::pin::Pin<&mut S>,
    mut on_serving: impl FnMut(),
) -> Ended
where
    G: std::future::Future<Output = Result<(), tonic::transport::Error>>,
    S: std::future::Future<Output = ()>,
{
    let mut announced = false;
    let mut watch_poll = tokio::time::interval(WATCH_POLL);
    loop {
        tokio::select! {
            biased;
            () = signal.as_mut() => break Ended::Signal,
            result = grpc.as_mut() => break Ended::Grpc(result),
            ready = serving.wait_for(|state| matches!(state, ServingState::Serving)), if !announced => {
                // `wait_for` returns a read guard on the serving state; keep
                // only the flag, since the server writes that state.
                announced = true;
                if ready.map(|_| ()).is_ok() {
                    on_serving();
                }
            }
            _ = watch_poll.tick() => if guard.is_finished() {
                break Ended::Watch;
            },
        }
    }
}

/// How the gRPC server's calls ended: its own result when it `ended` by
/// itself; after a stop signal or the leader watch's end, `drain` tells it
/// to drain, within --shutdown-timeout ([`drain_calls`]).
async fn drain_unless_ended<F>(
    args: &Args,
    ended: Ended,
    drain: tokio::sync::oneshot::Sender<()>,
    grpc: std::pin::Pin<&mut F>,
) -> Result<(), tonic::transport::Error>
where
    F: std::future::Future<Output = Result<(), tonic::transport::Error>>,
{
    match ended {
        Ended::Grpc(result) => result,
        Ended::Signal | Ended::Watch => {
            let _ = drain.send(());
            drain_calls(args, grpc).await
        }
    }
}

/// Binds --listen for gRPC: the listener, and the address it got.
async fn bind_grpc(args: &Args) -> Result<(TcpListener, SocketAddr), Failure> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|err| Failure::new(format!("cannot listen on {}: {err}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|err| Failure::new(format!("cannot read the gRPC listener's address: {err}")))?;
    Ok((listener, addr))
}

/// How serving ended, as the command reports it: the leader watch's own
/// error (when it ended by itself) first, then the gRPC server's.
fn stop_reason<E: std::error::Error + 'static>(
    watched: Result<(), E>,
    drained: Result<(), tonic::transport::Error>,
) -> Result<(), Failure> {
    if let Err(err) = watched {
        return Err(Failure::new(format!(
            "the server stopped: {}",
            cli::error_chain(&err)
        )));
    }
    drained.map_err(|err| {
        Failure::new(format!(
            "the gRPC server stopped: {}",
            cli::error_chain(&err)
        ))
    })
}

/// The oracle server on the driver. TLS is applied to the gRPC server the
/// routes go into (with the health service), not through the oracle
/// server's builder. The server gets the driver through `Watched`: a
/// failed high-water write is logged at ERROR and named by the readiness
/// check, since the server's clients see only "not leader".
fn build_server(args: &Args, driver: &Arc<FileDriver>) -> Result<(Server, WriteFailure), Failure> {
    let write_failure = WriteFailure::default();
    let watched = Watched::new(Arc::clone(driver), write_failure.clone());
    let builder = Server::builder()
        .consensus_driver(Arc::new(watched) as Arc<dyn ConsensusDriver>)
        .window_ahead(args.window_ahead)
        .failover_advance(args.failover_advance)
        .lease_ttl_floor(args.lease_ttl_floor)
        .lease_ttl_ceiling(args.lease_ttl_ceiling)
        .heartbeat_interval(args.heartbeat_interval)
        .shutdown_grace(args.shutdown_timeout);
    let server = builder.build().map_err(|err| {
        Failure::new(format!(
            "invalid server settings: {err} (--lease-ttl-floor {}, --lease-ttl-ceiling {})",
            humantime::format_duration(args.lease_ttl_floor),
            humantime::format_duration(args.lease_ttl_ceiling)
        ))
    })?;
    Ok((server, write_failure))
}

/// Binds --metrics-listen and serves `/metrics`, `/healthz` and `/readyz`
/// on it until the stop.
async fn serve_metrics(
    args: &Args,
    handle: PrometheusHandle,
    readiness: &Arc<Readiness>,
    stopped: watch::Receiver<bool>,
) -> Result<(tokio::task::JoinHandle<()>, SocketAddr), Failure> {
    let http_listener = TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|err| {
            Failure::new(format!(
                "cannot listen on {} for metrics: {err} (--metrics-listen, or --no-metrics)",
                args.metrics_listen
            ))
        })?;
    let bound = http_listener.local_addr().map_err(|err| {
        Failure::new(format!("cannot read the metrics listener's address: {err}"))
    })?;
    tracing::info!("metrics and probes on http://{bound} (/metrics, /healthz, /readyz)");
    let health = Arc::new(Health::new(Arc::clone(readiness), handle));
    let task = tokio::spawn(http::serve(http_listener, health, stopped));
    Ok((task, bound))
}

/// Once the server fenced its first window and answers calls: the line on
/// stdout, `READY=1` to systemd (and its watchdog and status from then
/// on), and the log line. `addrs` are the gRPC and metrics addresses.
fn serving_now(
    args: &Args,
    state_dir: &Path,
    driver: &Arc<FileDriver>,
    addrs: (SocketAddr, Option<SocketAddr>),
    notify: &Notify,
    stop: &watch::Sender<bool>,
) {
    let (addr, metrics_addr) = addrs;
    announce(addr, metrics_addr);
    if let Some(notifier) = &notify.notifier {
        notifier.send(&format!("READY=1\nSTATUS={}", status_line(driver, addr)));
        tokio::spawn(keep_notifying(
            Arc::clone(notifier),
            Arc::clone(driver),
            addr,
            notify.watchdog,
            stop.subscribe(),
        ));
    }
    tracing::info!(
        state_dir = %state_dir.display(),
        recovered_high_water = driver.high_water(),
        window_ahead = %humantime::format_duration(args.window_ahead),
        "listening on {addr}"
    );
}

/// Waits for the gRPC server to drain its calls, at most
/// --shutdown-timeout: a connection that sends nothing would hold a
/// graceful drain open for ever, and the directory locked with it.
async fn drain_calls<F>(
    args: &Args,
    grpc: std::pin::Pin<&mut F>,
) -> Result<(), tonic::transport::Error>
where
    F: std::future::Future<Output = Result<(), tonic::transport::Error>>,
{
    match tokio::time::timeout(args.shutdown_timeout, grpc).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                "connections still open after --shutdown-timeout {}: closing them",
                humantime::format_duration(args.shutdown_timeout)
            );
            Ok(())
        }
    }
}

/// How often the loop of [`serve`] checks whether the server's leader watch
/// ended by itself (the guard has no notification of it).
const WATCH_POLL: Duration = Duration::from_millis(250);

/// What `serve` tells systemd, when it started the process.
struct Notify {
    notifier: Option<Arc<sd_notify::Notifier>>,
    /// The watchdog ping interval (half of `WATCHDOG_USEC`).
    watchdog: Option<Duration>,
}

/// How often the `STATUS=` line is refreshed without a watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// The `STATUS=` text: where it serves, the durable high-water, the dense
/// keys and leases; or that the driver is poisoned.
fn status_line(driver: &FileDriver, addr: SocketAddr) -> String {
    let high_water = driver.high_water();
    let held = format!(
        "high-water {high_water} ({}), {} dense keys, {} leases",
        cli::utc_text(high_water),
        driver.dense_key_count(),
        driver.lease_count()
    );
    if driver.is_poisoned() {
        format!("driver poisoned, every write refused until a restart; {held}")
    } else {
        format!("serving gRPC on {addr}; {held}")
    }
}

/// Until the stop: each watchdog interval, `WATCHDOG=1` with a fresh
/// `STATUS=` while the driver is not poisoned, and only the `STATUS=` once
/// it is, so that systemd's watchdog restarts the process (a poisoned
/// driver recovers only by reopening). Without a watchdog, the `STATUS=`
/// line whenever it changed, every [`STATUS_EVERY`].
async fn keep_notifying(
    notifier: Arc<sd_notify::Notifier>,
    driver: Arc<FileDriver>,
    addr: SocketAddr,
    watchdog: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(watchdog.unwrap_or(STATUS_EVERY));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = status_line(&driver, addr);
    let mut told_poisoned = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let status = status_line(&driver, addr);
        if driver.is_poisoned() {
            if !told_poisoned {
                told_poisoned = true;
                tracing::error!(
                    "the driver is poisoned: no more systemd watchdog pings, so that a \
                     watchdog restarts the service"
                );
            }
            if watchdog.is_some() || status != last {
                notifier.send(&format!("STATUS={status}"));
            }
        } else if watchdog.is_some() {
            notifier.send(&format!("WATCHDOG=1\nSTATUS={status}"));
        } else if status != last {
            notifier.send(&format!("STATUS={status}"));
        }
        last = status;
    }
}

/// Why the serving loop ended.
enum Ended {
    /// SIGINT, SIGTERM or SIGHUP.
    Signal,
    /// The gRPC server returned by itself.
    Grpc(Result<(), tonic::transport::Error>),
    /// The server's leader watch ended by itself.
    Watch,
}

/// The readiness line on stdout.
fn announce(addr: SocketAddr, metrics: Option<SocketAddr>) {
    let metrics = match metrics {
        Some(metrics) => format!("metrics on http://{metrics}/metrics"),
        None => "metrics disabled".to_string(),
    };
    // One write of the whole line: a failed write (a closed pipe, a full
    // disk, /dev/full) then leaves nothing in stdout's buffer for a later
    // flush to fail on, which turned a clean stop into exit 1. A stdout
    // that cannot be written must not stop the server: the log has the
    // same news.
    let line = format!("tsoracle-file: serving gRPC on {addr}, {metrics}\n");
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.flush())
    {
        tracing::warn!(error = %err, "cannot write the serving line to stdout");
    }
}
