//! A real `tsoracle-server` in the test process, on a `FileDriver` (or any
//! driver), and the `tsoracle-file` binary: what the migration tests drive
//! `migrate out`, `migrate in` and `migrate finish` against.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::FileDriver;
use tsoracle_server::{Server, ServerBuilder, ServingState};

/// How long a server may take to serve, or to stop.
pub const BOUND: Duration = Duration::from_secs(60);

/// A running server: its URL and port, and how to stop it.
pub struct Served {
    pub url: String,
    pub port: u16,
    pub stop: oneshot::Sender<()>,
    pub handle: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Stops the server and waits for it.
    pub async fn stop(self) {
        stop_server(self.stop, self.handle).await;
    }

    /// The URL, the stop sender and the task, for [`stop_server`].
    pub fn parts(self) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        (self.url, self.stop, self.handle)
    }
}

/// A server on a `FileDriver` in `dir`.
pub async fn serve(dir: &Path) -> Served {
    serve_driver(FileDriver::open_or_init(dir).expect("open the served directory")).await
}

/// A server on a `FileDriver` in `dir`, its builder set up by `configure`.
pub async fn serve_with(
    dir: &Path,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    serve_on(
        listener,
        FileDriver::open_or_init(dir).expect("open"),
        configure,
    )
    .await
}

/// A server on `driver`.
pub async fn serve_driver(driver: Arc<dyn ConsensusDriver>) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    serve_on(listener, driver, |builder| builder).await
}

/// A server on `driver` and `listener`, its builder set up by `configure`;
/// returns once it serves.
pub async fn serve_on(
    listener: TcpListener,
    driver: Arc<dyn ConsensusDriver>,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> Served {
    let addr = listener.local_addr().expect("addr");
    let server = configure(Server::builder().consensus_driver(driver))
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
    Served {
        url: format!("http://{addr}"),
        port: addr.port(),
        stop,
        handle,
    }
}

/// Stops a server and waits for it.
pub async fn stop_server(stop: oneshot::Sender<()>, handle: tokio::task::JoinHandle<()>) {
    let _ = stop.send(());
    timeout(BOUND, handle).await.expect("stop").expect("join");
}
