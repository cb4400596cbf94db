//! Asks a running tsoracle server for timestamps and a dense block: run
//! `cargo run --features server --bin tsoracle-file -- serve --init` (or
//! `cargo run --example embedded-server`) in one terminal, then
//! `cargo run --example client` in another.
//!
//! ```text
//! cargo run --example client -- --endpoint http://127.0.0.1:50551 --key orders
//! ```

use std::error::Error;
use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use tsoracle_client::Client;
use tsoracle_core::Timestamp;

/// Fetch a few timestamps, a batch and a dense sequence block from a
/// tsoracle server.
#[derive(Debug, Parser)]
#[command(name = "client", version)]
struct Args {
    /// The server's gRPC endpoint.
    #[arg(
        long,
        env = "TSORACLE_ENDPOINT",
        default_value = "http://127.0.0.1:50551"
    )]
    endpoint: String,

    /// The dense sequence key to take a block from.
    #[arg(long, default_value = "orders")]
    key: String,

    /// How many values the dense block holds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`client | head`): nothing left to tell.
        Err(err)
            if err
                .downcast_ref::<io::Error>()
                .is_some_and(|err| err.kind() == io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("client: error talking to {}: {err}", args.endpoint);
            eprintln!("(is `cargo run --example embedded-server` running?)");
            ExitCode::FAILURE
        }
    }
}

fn show(ts: Timestamp) -> String {
    format!(
        "{:>20}  (physical {} ms, logical {})",
        ts.0,
        ts.physical_ms(),
        ts.logical()
    )
}

async fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let client = Client::connect(vec![args.endpoint.clone()]).await?;

    // `println!` panics when stdout is closed; a write error ends the run
    // instead (quietly, for a reader that went away).
    let mut out = io::stdout();
    let first = client.get_ts().await?;
    writeln!(out, "timestamps from {}:", args.endpoint)?;
    writeln!(out, "  {}", show(first))?;
    for _ in 0..2 {
        writeln!(out, "  {}", show(client.get_ts().await?))?;
    }

    let batch = client.get_ts_batch(5).await?;
    writeln!(out, "a batch of {}:", batch.len())?;
    for ts in &batch {
        writeln!(out, "  {}", show(*ts))?;
    }

    let block = client.get_seq(&args.key, args.count).await?;
    let end = block.start + u64::from(block.count);
    writeln!(
        out,
        "dense block for {:?}: {}..{} ({} values, no gaps, never handed out again)",
        args.key, block.start, end, block.count
    )?;
    out.flush()?;
    Ok(())
}
