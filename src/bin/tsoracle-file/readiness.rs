//! Whether `serve` should take traffic: the one answer behind `/readyz`, the
//! gRPC health service and systemd's watchdog.
//!
//! Ready means: the driver is not poisoned (a failed fsync, or a displaced
//! directory found at a write, poisons it until the process restarts), the
//! process is not stopping, and the server is the serving leader (it fenced
//! its window and answers calls). When it does not serve because its
//! high-water write failed (a full disk at start), the reason names the
//! file and the OS error.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tsoracle_driver_file::FileDriver;
use tsoracle_server::ServingState;

use crate::watched::WriteFailure;

/// How often [`Readiness::watch`] looks at the driver's poisoned flag, which
/// has no notification of its own. Changes of the serving state and the stop
/// are seen at once.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// The readiness verdict, as pushed to watchers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Takes traffic.
    Ready,
    /// Alive but should take no traffic (poisoned, or not serving yet).
    NotReady,
    /// The process is stopping; the last verdict it publishes.
    Stopping,
}

impl Verdict {
    pub(crate) fn is_ready(self) -> bool {
        self == Verdict::Ready
    }
}

/// What the probes look at.
pub(crate) struct Readiness {
    driver: Arc<FileDriver>,
    serving: watch::Receiver<ServingState>,
    stop: watch::Receiver<bool>,
    write_failure: WriteFailure,
}

impl Readiness {
    pub(crate) fn new(
        driver: Arc<FileDriver>,
        serving: watch::Receiver<ServingState>,
        stop: watch::Receiver<bool>,
        write_failure: WriteFailure,
    ) -> Self {
        Readiness {
            driver,
            serving,
            stop,
            write_failure,
        }
    }

    /// `Err` says why the process should not take traffic.
    pub(crate) fn ready(&self) -> Result<(), Cow<'static, str>> {
        if self.driver.is_poisoned() {
            return Err(Cow::Borrowed(
                "the driver is poisoned: a write failed where the disk's content is \
                        unknown, and every write is refused until the process restarts",
            ));
        }
        if *self.stop.borrow() {
            return Err(Cow::Borrowed("the server is shutting down"));
        }
        // Borrowed only for the match: the server writes this state.
        if !matches!(*self.serving.borrow(), ServingState::Serving) {
            return Err(match self.write_failure.get() {
                Some(failure) => Cow::Owned(format!(
                    "the server is not serving: the high-water write failed: {failure}"
                )),
                None => Cow::Borrowed("the server is not serving"),
            });
        }
        Ok(())
    }

    /// The verdict now.
    pub(crate) fn verdict(&self) -> Verdict {
        if *self.stop.borrow() {
            Verdict::Stopping
        } else if self.ready().is_ok() {
            Verdict::Ready
        } else {
            Verdict::NotReady
        }
    }

    /// A receiver of the verdict, kept current by a task (spawned on the
    /// current runtime) until the process stops: its last value is
    /// [`Verdict::Stopping`].
    pub(crate) fn watch(self: &Arc<Self>) -> watch::Receiver<Verdict> {
        let (send, receive) = watch::channel(self.verdict());
        let readiness = Arc::clone(self);
        let mut serving = self.serving.clone();
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let mut poll = tokio::time::interval(POLL_EVERY);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut serving_open, mut stop_open) = (true, true);
            loop {
                let verdict = readiness.verdict();
                send.send_if_modified(|current| {
                    let changed = *current != verdict;
                    *current = verdict;
                    changed
                });
                if verdict == Verdict::Stopping || send.is_closed() {
                    break;
                }
                // A closed channel is not waited on again (it would answer
                // at once, forever); the poll still runs.
                tokio::select! {
                    _ = poll.tick() => {}
                    changed = serving.changed(), if serving_open => serving_open = changed.is_ok(),
                    changed = stop.changed(), if stop_open => stop_open = changed.is_ok(),
                }
            }
        });
        receive
    }
}
