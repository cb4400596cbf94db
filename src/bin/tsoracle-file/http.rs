//! The HTTP listener of `serve`: `/metrics` (Prometheus text format, the
//! driver's and the server's metrics), `/healthz` and `/readyz`.
//!
//! - `/healthz`: 200 `ok` while the process serves HTTP at all: a liveness
//!   probe.
//! - `/readyz`: 200 `ready` when the driver is not poisoned, the process
//!   is not stopping and the server is the serving leader; otherwise 503
//!   and the reason. A poisoned driver refuses every write until the
//!   process restarts, so an orchestrator should take it out of rotation
//!   (and restart it). The gRPC health service answers from the same check.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::readiness::Readiness;

/// How often the recorder's histograms are compacted.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What the HTTP listener answers from.
pub(crate) struct Health {
    readiness: Arc<Readiness>,
    metrics: PrometheusHandle,
}

impl Health {
    pub(crate) fn new(readiness: Arc<Readiness>, metrics: PrometheusHandle) -> Self {
        Health { readiness, metrics }
    }

    fn ready(&self) -> Result<(), std::borrow::Cow<'static, str>> {
        self.readiness.ready()
    }
}

/// Serves HTTP/1 on `listener` until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    mut stop: watch::Receiver<bool>,
) {
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let health = Arc::clone(&health);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let response = respond(&health, &request);
                            async move { Ok::<_, Infallible>(response) }
                        });
                        // A client that goes away mid-request is its own business.
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Err(err) => tracing::warn!(error = %err, "metrics listener: accept failed"),
            },
            _ = upkeep.tick() => health.metrics.run_upkeep(),
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
}

fn respond(health: &Health, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = text(StatusCode::OK, health.metrics.render());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match health.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
