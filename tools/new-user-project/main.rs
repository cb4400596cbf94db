//! A new user's program: today's `tsoracle-server` and `tsoracle-client`
//! from crates.io beside this crate, as `tools/new-user-project.sh` lays them
//! out in a fresh project. It serves a `FileDriver` directory on a free
//! loopback port, takes timestamps, a dense block and a lease through the real
//! client, stops gracefully, reopens the directory and checks nothing rewound.

use std::sync::Arc;
use std::time::Duration;

use tsoracle_client::Client;
use tsoracle_driver_file::FileDriver;

type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Fallible<()> {
    let dir = std::env::args().nth(1).ok_or("usage: new-user-project STATE_DIR")?;
    let first = serve_once(&dir, None)?;
    // A restart on the same directory hands out values above the first run's.
    let second = serve_once(&dir, Some(&first))?;
    println!(
        "new-user-project: served twice; timestamps {} then {}, orders from {} then {}",
        first.last_ts, second.last_ts, first.seq_start, second.seq_start
    );
    Ok(())
}

/// What one run handed out.
struct Run {
    last_ts: u64,
    seq_start: u64,
    seq_count: u32,
    high_water: u64,
}

/// Serves `dir` until one round of calls is done; every value must be above
/// what the `previous` run handed out. The runtime is dropped before the
/// driver, so no connection task still holds it and the directory is
/// unlocked for the next run.
fn serve_once(dir: &str, previous: Option<&Run>) -> Fallible<Run> {
    let runtime = tokio::runtime::Runtime::new()?;
    let driver = FileDriver::open_or_init(dir)?;
    let run = runtime.block_on(calls(Arc::clone(&driver), previous));
    drop(runtime);
    drop(driver);
    run
}

async fn calls(driver: Arc<FileDriver>, previous: Option<&Run>) -> Fallible<Run> {
    if let Some(previous) = previous
        && driver.high_water() < previous.high_water
    {
        return Err(format!(
            "reopened at high-water {} below the acknowledged {}",
            driver.high_water(),
            previous.high_water
        )
        .into());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tsoracle_server::Server::builder()
        .consensus_driver(Arc::clone(&driver) as Arc<dyn tsoracle_consensus::ConsensusDriver>)
        .build()?;
    let mut state = server.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_listener(listener, async {
        let _ = stopped.await;
    }));
    // Calls before the first window is fenced are refused "not leader".
    tokio::time::timeout(
        Duration::from_secs(60),
        state.wait_for(|state| matches!(state, tsoracle_server::ServingState::Serving)),
    )
    .await?
    .map(|_| ())?;

    let client = Client::connect(vec![format!("http://{addr}")]).await?;
    let mut last = previous.map_or(0, |run| run.last_ts);
    for _ in 0..10 {
        let ts = client.get_ts().await?.0;
        if ts <= last {
            return Err(format!("timestamp {ts} not above {last}").into());
        }
        last = ts;
    }
    let block = client.get_seq("orders", 5).await?;
    let next_free = previous.map_or(0, |run| run.seq_start + u64::from(run.seq_count));
    if block.count != 5 || block.start < next_free {
        return Err(format!("orders block {block:?} overlaps values below {next_free}").into());
    }
    let lease = client
        .acquire_lease(b"new-user", 1, Duration::from_secs(5))
        .await?;
    println!(
        "new-user-project: {addr}: ts {last}, orders {}..{}, lease {}",
        block.start,
        block.start + u64::from(block.count),
        lease.lease_id
    );

    drop(client);
    let _ = stop.send(());
    serving.await??;
    Ok(Run {
        last_ts: last,
        seq_start: block.start,
        seq_count: block.count,
        high_water: driver.high_water(),
    })
}
