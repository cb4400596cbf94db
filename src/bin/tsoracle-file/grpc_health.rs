//! The standard `grpc.health.v1.Health` service on the gRPC port, for
//! Kubernetes' `grpc` probes, `grpc_health_probe` and Envoy.
//!
//! Two service names are known: `""` (the whole server) and
//! `tsoracle.v1.TsoService`. Both answer `SERVING` exactly when `/readyz`
//! answers ready (the same [`Readiness`] check, made at each call), and
//! `NOT_SERVING` otherwise: not serving yet, the driver poisoned (which a
//! displaced directory also does), or the process stopping. Any other name
//! is `NOT_FOUND`, as the protocol asks.
//!
//! `Watch` sends the status at once and then each change; once the process
//! begins to stop it sends `NOT_SERVING` and ends the stream, so a watcher
//! never holds the graceful stop open.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::readiness::{Readiness, Verdict};

/// The gRPC service name of the oracle (package `tsoracle.v1`).
pub(crate) const TSO_SERVICE: &str = "tsoracle.v1.TsoService";

/// The health service over `readiness`.
pub(crate) fn service(readiness: Arc<Readiness>) -> HealthServer<GrpcHealth> {
    let verdicts = readiness.watch();
    HealthServer::new(GrpcHealth {
        readiness,
        verdicts,
    })
}

pub(crate) struct GrpcHealth {
    readiness: Arc<Readiness>,
    verdicts: watch::Receiver<Verdict>,
}

fn known(service: &str) -> Result<(), Status> {
    if service.is_empty() || service == TSO_SERVICE {
        Ok(())
    } else {
        Err(Status::not_found(format!(
            "unknown service {service:?}: this server reports \"\" and {TSO_SERVICE:?}"
        )))
    }
}

fn response(ready: bool) -> HealthCheckResponse {
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    HealthCheckResponse {
        status: status as i32,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for GrpcHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        known(&request.get_ref().service)?;
        Ok(Response::new(response(self.readiness.ready().is_ok())))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        known(&request.get_ref().service)?;
        // The first item is the current status; then one per change of
        // SERVING / NOT_SERVING; the stream ends at the stop, after its
        // NOT_SERVING.
        let state = Watcher {
            verdicts: self.verdicts.clone(),
            sent: None,
            done: false,
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            let ready = state.next().await?;
            Some((Ok(response(ready)), state))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// One `Watch` stream's position.
struct Watcher {
    verdicts: watch::Receiver<Verdict>,
    /// The status last sent (`true` for SERVING), `None` before the first.
    sent: Option<bool>,
    /// Set once the stop was sent: the stream then ends.
    done: bool,
}

impl Watcher {
    /// The next status to send, or `None` when the stream ends.
    async fn next(&mut self) -> Option<bool> {
        if self.done {
            return None;
        }
        let Some(sent) = self.sent else {
            let verdict = *self.verdicts.borrow_and_update();
            self.done = verdict == Verdict::Stopping;
            self.sent = Some(verdict.is_ready());
            return self.sent;
        };
        loop {
            // The verdict task ends only after publishing the stop; a
            // closed channel without it ends the stream as well.
            self.verdicts.changed().await.ok()?;
            let verdict = *self.verdicts.borrow_and_update();
            if verdict == Verdict::Stopping {
                self.done = true;
                // A watcher that last saw NOT_SERVING needs no repeat.
                return sent.then_some(false);
            }
            if verdict.is_ready() != sent {
                self.sent = Some(verdict.is_ready());
                return self.sent;
            }
        }
    }
}
