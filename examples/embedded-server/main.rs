//! The real `tsoracle-server` on one disk: a timestamp oracle whose state
//! lives in a [`FileDriver`] directory.
//!
//! ```text
//! cargo run --example embedded-server                      # 127.0.0.1:50551, ./tsoracle-data
//! cargo run --example embedded-server -- --listen 127.0.0.1:0 --state-dir /tmp/tso
//! cargo run --example client                               # in a second terminal
//! ```
//!
//! Once the server serves it logs `listening on ADDR` with the address it
//! really bound (so `--listen 127.0.0.1:0` reports the port the OS picked),
//! the state directory and the high-water it recovered. Ctrl-C (SIGINT) or
//! SIGTERM stops it gracefully: in-flight calls finish, the driver is dropped
//! and the directory unlocked before the last log line. A second instance on
//! a directory in use exits at once with status 1 and a one-line error.

use std::error::Error;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tsoracle_driver_file::{FileDriver, FileDriverError, error_chain};
use tsoracle_server::{Server, ServingState};

/// Serve tsoracle timestamps, dense sequences and leases from one state
/// directory on this machine.
#[derive(Debug, Parser)]
#[command(name = "embedded-server", version)]
struct Args {
    /// Address to serve gRPC on; port 0 lets the OS pick a free port.
    #[arg(long, env = "TSORACLE_LISTEN", default_value = "127.0.0.1:50551")]
    listen: SocketAddr,

    /// Directory holding the oracle's durable state (created if missing).
    #[arg(long, env = "TSORACLE_STATE_DIR", default_value = "./tsoracle-data")]
    state_dir: PathBuf,

    /// How far ahead of the clock, in milliseconds, each durable high-water
    /// write reaches (the server's `window_ahead`): 1 to 3600000 (an hour;
    /// a restart resumes from the durable high-water, so a larger window
    /// could push timestamps that far ahead of real time for good).
    #[arg(
        long,
        env = "TSORACLE_WINDOW_MS",
        default_value_t = 3000,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000)
    )]
    window_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();

    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One readable line, the causes after colons; no panic trace.
            // A driver error's remedy, if it has one, on a line of its own.
            eprintln!("embedded-server: error: {}", error_chain(err.as_ref()));
            if let Some(hint) = err
                .downcast_ref::<FileDriverError>()
                .and_then(FileDriverError::hint)
            {
                eprintln!("embedded-server: hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Install the SIGINT/SIGTERM handlers before anything else, so a stop
    // request can never hit the default terminate-at-once disposition.
    let shutdown = {
        let _context = runtime.enter();
        tsoracle_server::shutdown_signal()
    };

    let state_dir = std::path::absolute(&args.state_dir).unwrap_or(args.state_dir.clone());
    // Fails fast with `AlreadyLocked` when another instance owns the directory.
    let driver = FileDriver::open_or_init(&state_dir)?;

    let served = runtime.block_on(serve(&args, &state_dir, Arc::clone(&driver), shutdown));
    // Dropping the runtime drops every task still holding a handle on the
    // driver (connection tasks finishing their last bytes), so ours is then
    // the last one and dropping it joins the committer and unlocks the directory.
    drop(runtime);
    let high_water = driver.high_water();
    let driver = Arc::try_unwrap(driver).map_err(
        |_| "the driver is still shared after the server stopped; directory not unlocked",
    )?;
    drop(driver);
    served?;
    tracing::info!(
        state_dir = %state_dir.display(),
        high_water,
        "shut down; driver closed and state directory unlocked"
    );
    Ok(())
}

async fn serve(
    args: &Args,
    state_dir: &std::path::Path,
    driver: Arc<FileDriver>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn Error>> {
    let recovered = driver.high_water();
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.listen))?;
    let addr = listener.local_addr()?;

    let server = Server::builder()
        .consensus_driver(driver as Arc<dyn tsoracle_consensus::ConsensusDriver>)
        .window_ahead(Duration::from_millis(args.window_ms))
        .build()?;
    let mut serving = server.subscribe();
    let mut serve = tokio::spawn(server.serve_with_listener(listener, shutdown));

    // Announce the address only once the server fenced its first window and
    // answers calls: a script (or a test) waiting for this line may call at once.
    let outcome = tokio::select! {
        ready = serving.wait_for(|state| matches!(state, ServingState::Serving)) => {
            // `wait_for` returns a read guard on the serving state; keep only
            // the flag, since the server's shutdown path writes that state.
            if ready.map(|_| ()).is_ok() {
                tracing::info!(
                    state_dir = %state_dir.display(),
                    recovered_high_water = recovered,
                    window_ms = args.window_ms,
                    "listening on {addr}"
                );
            }
            (&mut serve).await
        }
        // Stopped (a signal, or an error) before it ever served.
        outcome = &mut serve => outcome,
    };
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.into()),
        Err(join) => Err(format!("server task failed: {join}").into()),
    }
}
