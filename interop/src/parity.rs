//! Parity: what a client sees from our server and from upstream's `tsoracle
//! serve file` (the published file driver) on the same calls.
//!
//! Users who switch drivers must not see values or refusals upstream never
//! produces: the epoch in every reply, the status code of each refusal (bad
//! counts, bad keys, lease TTLs outside the server's bounds, unknown leases),
//! the first value of a new dense key. Both servers are fresh; the same
//! calls go to each, in the same order, and every outcome is reduced to what
//! must match (an epoch, a code, a dense start; never a timestamp or a lease
//! id, which depend on the clock and the process).

use std::time::Duration;

use serde::Serialize;
use tsoracle_client::{Client, ClientBuilder, ClientError, RetryPolicy};

type Fallible<T> = Result<T, String>;

/// One call's outcome, reduced to what must be the same on both servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) enum Outcome {
    /// A success, with the fields that must match (epoch, dense start, ...).
    Ok(String),
    /// A refusal: the gRPC code (client-side errors by their kind).
    Refused(String),
}

#[derive(Debug, Serialize)]
pub(crate) struct Probe {
    pub(crate) call: &'static str,
    pub(crate) ours: Outcome,
    pub(crate) upstream: Outcome,
}

fn refused(err: ClientError) -> Outcome {
    match err {
        ClientError::Rpc(status) => Outcome::Refused(format!("{:?}", status.code())),
        other => Outcome::Refused(client_side(&other)),
    }
}

/// A refusal the client made itself, by its kind (the Debug name up to the
/// first bracket), so messages with values in them still compare.
fn client_side(err: &ClientError) -> String {
    let debug = format!("{err:?}");
    let kind: String = debug
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    format!("client:{kind}")
}

async fn connect(endpoint: &str) -> Fallible<Client> {
    // One attempt per call: a refusal must be seen as it is, not retried.
    let policy = RetryPolicy {
        max_attempts: 1,
        overall_deadline: Duration::from_secs(10),
        ..RetryPolicy::default()
    };
    ClientBuilder::endpoints(vec![endpoint.to_string()])
        .retry_policy(policy)
        .build()
        .await
        .map_err(|err| format!("parity: cannot connect to {endpoint}: {err}"))
}

/// The calls, against one server; each outcome in order.
async fn probe_all(client: &Client) -> Vec<(&'static str, Outcome)> {
    let mut out = Vec::new();
    macro_rules! record {
        ($call:literal, $fut:expr, $ok:expr) => {
            out.push((
                $call,
                match $fut.await {
                    Ok(value) => Outcome::Ok($ok(value)),
                    Err(err) => refused(err),
                },
            ));
        };
    }
    record!("get_ts", client.get_ts(), |_| "timestamp".to_string());
    record!("get_ts_batch(5)", client.get_ts_batch(5), |v: Vec<_>| {
        format!("{} timestamps", v.len())
    });
    record!("get_ts_batch(0)", client.get_ts_batch(0), |v: Vec<_>| {
        format!("{} timestamps", v.len())
    });
    record!(
        "get_seq(new key, 3)",
        client.get_seq("parity", 3),
        |b: tsoracle_client::SeqBlock| format!(
            "start {} count {} epoch {}",
            b.start, b.count, b.epoch
        )
    );
    record!(
        "get_seq(same key, 2)",
        client.get_seq("parity", 2),
        |b: tsoracle_client::SeqBlock| format!(
            "start {} count {} epoch {}",
            b.start, b.count, b.epoch
        )
    );
    record!(
        "get_seq(count 0)",
        client.get_seq("parity", 0),
        |b: tsoracle_client::SeqBlock| format!("start {} count {}", b.start, b.count)
    );
    record!(
        "get_seq(count 1_000_000)",
        client.get_seq("parity", 1_000_000),
        |b: tsoracle_client::SeqBlock| format!("start {} count {}", b.start, b.count)
    );
    record!(
        "get_seq(empty key)",
        client.get_seq("", 1),
        |b: tsoracle_client::SeqBlock| format!("start {} count {}", b.start, b.count)
    );
    let long_key = "k".repeat(4096);
    record!(
        "get_seq(4096-byte key)",
        client.get_seq(&long_key, 1),
        |b: tsoracle_client::SeqBlock| format!("start {} count {}", b.start, b.count)
    );
    record!(
        "get_seq_batch(two keys)",
        client.get_seq_batch(&[("parity-a", 2), ("parity-b", 3)]),
        |v: Vec<tsoracle_client::SeqBlock>| v
            .iter()
            .map(|b| format!("start {} count {} epoch {}", b.start, b.count, b.epoch))
            .collect::<Vec<_>>()
            .join("; ")
    );
    record!(
        "get_seq_batch(duplicate key)",
        client.get_seq_batch(&[("parity-a", 1), ("parity-a", 1)]),
        |v: Vec<tsoracle_client::SeqBlock>| format!("{} blocks", v.len())
    );
    record!(
        "get_seq_batch(empty)",
        client.get_seq_batch(&[]),
        |v: Vec<tsoracle_client::SeqBlock>| format!("{} blocks", v.len())
    );
    record!(
        "acquire_lease(ttl 30 s)",
        client.acquire_lease(b"parity-holder", 1, Duration::from_secs(30)),
        |l: tsoracle_client::Lease| format!("epoch {:?}", l.epoch)
    );
    record!(
        "acquire_lease(ttl below the floor, 1 s)",
        client.acquire_lease(b"parity-short", 1, Duration::from_secs(1)),
        |l: tsoracle_client::Lease| format!("epoch {:?}", l.epoch)
    );
    record!(
        "acquire_lease(ttl above the ceiling, 1 h)",
        client.acquire_lease(b"parity-long", 1, Duration::from_secs(3600)),
        |l: tsoracle_client::Lease| format!("epoch {:?}", l.epoch)
    );
    record!(
        "acquire_lease(empty holder)",
        client.acquire_lease(b"", 1, Duration::from_secs(30)),
        |l: tsoracle_client::Lease| format!("epoch {:?}", l.epoch)
    );
    record!(
        "renew_lease(unknown id)",
        client.renew_lease(u64::MAX - 7),
        |r: tsoracle_client::LeaseRenewal| format!("epoch {:?}", r.epoch)
    );
    record!(
        "release_lease(unknown id)",
        client.release_lease(u64::MAX - 7),
        |_| "released".to_string()
    );
    record!(
        "get_current_max_safe",
        client.get_current_max_safe(),
        |m: tsoracle_client::MaxSafe| format!("epoch {:?}", m.epoch)
    );
    record!(
        "get_safe_frontier",
        client.get_safe_frontier(),
        |f: tsoracle_client::SafeFrontier| format!("epoch {:?}", f.epoch)
    );
    out
}

/// Sends the same calls to `ours` and `upstream` (fresh servers, one
/// endpoint each) and fails on the first outcome that differs, listing them
/// all.
pub(crate) async fn compare(ours: &str, upstream: &str) -> Fallible<Vec<Probe>> {
    let ours_client = connect(ours).await?;
    let upstream_client = connect(upstream).await?;
    let ours_out = probe_all(&ours_client).await;
    let upstream_out = probe_all(&upstream_client).await;
    let probes: Vec<Probe> = ours_out
        .into_iter()
        .zip(upstream_out)
        .map(|((call, ours), (_, upstream))| Probe {
            call,
            ours,
            upstream,
        })
        .collect();
    let differing: Vec<String> = probes
        .iter()
        .filter(|probe| probe.ours != probe.upstream)
        .map(|probe| {
            format!(
                "{}: ours {:?}, upstream {:?}",
                probe.call, probe.ours, probe.upstream
            )
        })
        .collect();
    for probe in &probes {
        println!(
            "  parity {:<44} {}",
            probe.call,
            match (&probe.ours, probe.ours == probe.upstream) {
                (outcome, true) => format!("same: {outcome:?}"),
                (outcome, false) =>
                    format!("DIFFERENT: ours {outcome:?}, upstream {:?}", probe.upstream),
            }
        );
    }
    if differing.is_empty() {
        Ok(probes)
    } else {
        Err(format!(
            "parity: {} of {} calls differ from upstream's file driver:\n  {}",
            differing.len(),
            probes.len(),
            differing.join("\n  ")
        ))
    }
}
