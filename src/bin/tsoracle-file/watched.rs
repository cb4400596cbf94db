//! The driver as `serve` hands it to the server: every call goes to the
//! [`FileDriver`], and a failed high-water write is remembered and logged.
//!
//! The server answers its clients from its own state: when the fence of
//! its first window fails (a full disk at start), they see `UNAVAILABLE`
//! with upstream's "not leader" text, the OS error dropped. So the cause is
//! made visible here: logged at ERROR with the file and the OS error, and
//! kept for the readiness check (`/readyz` and the gRPC health), which
//! names it while the server does not serve. A later successful write
//! clears it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use tsoracle_consensus::{ConsensusDriver, ConsensusError, LeaderState};
use tsoracle_core::{Epoch, LeaseRecord, SeqKey};
use tsoracle_driver_file::FileDriver;

/// The last high-water write failure, as one line; `None` after a success.
#[derive(Clone, Default)]
pub(crate) struct WriteFailure(Arc<Mutex<Option<String>>>);

impl WriteFailure {
    /// The failure's text, if the last high-water write failed.
    pub(crate) fn get(&self) -> Option<String> {
        match self.0.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the failure; returns whether it changed.
    fn set(&self, failure: Option<String>) -> bool {
        let mut guard = match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let changed = *guard != failure;
        *guard = failure;
        changed
    }
}

/// A [`FileDriver`] whose high-water write failures are logged and kept.
pub(crate) struct Watched {
    driver: Arc<FileDriver>,
    failure: WriteFailure,
}

impl Watched {
    pub(crate) fn new(driver: Arc<FileDriver>, failure: WriteFailure) -> Self {
        Watched { driver, failure }
    }
}

/// The driver's error with its source chain (the file and the OS error),
/// without the consensus wrapper, whose text repeats it.
fn describe(err: &ConsensusError) -> String {
    match err {
        ConsensusError::TransientDriver(inner) | ConsensusError::PermanentDriver(inner) => {
            crate::cli::error_chain(inner.as_ref())
        }
        other => crate::cli::error_chain(other),
    }
}

#[async_trait::async_trait]
impl ConsensusDriver for Watched {
    fn leadership_events(&self) -> Pin<Box<dyn Stream<Item = LeaderState> + Send>> {
        self.driver.leadership_events()
    }

    async fn load_high_water(&self) -> Result<u64, ConsensusError> {
        self.driver.load_high_water().await
    }

    async fn persist_high_water(&self, at_least: u64, epoch: Epoch) -> Result<u64, ConsensusError> {
        let result = self.driver.persist_high_water(at_least, epoch).await;
        match &result {
            Ok(_) => {
                if self.failure.set(None) {
                    tracing::info!("the high-water write succeeded again");
                }
            }
            Err(
                err @ (ConsensusError::TransientDriver(_) | ConsensusError::PermanentDriver(_)),
            ) => {
                let text = describe(err);
                // Logged once per distinct failure: the server retries.
                if self.failure.set(Some(text.clone())) {
                    tracing::error!(
                        state_dir = %self.driver.dir().display(),
                        "the high-water write failed: {text}; until it succeeds the server \
                         does not serve, and its clients see UNAVAILABLE (\"not leader\")"
                    );
                }
            }
            Err(_) => {}
        }
        result
    }

    async fn load_dense_seq(&self, key: &SeqKey) -> Result<u64, ConsensusError> {
        self.driver.load_dense_seq(key).await
    }

    async fn advance_dense(
        &self,
        key: &SeqKey,
        count: u32,
        expected_epoch: Epoch,
    ) -> Result<u64, ConsensusError> {
        self.driver.advance_dense(key, count, expected_epoch).await
    }

    async fn advance_dense_batch(
        &self,
        entries: &[(SeqKey, u32)],
        expected_epoch: Epoch,
    ) -> Result<Vec<u64>, ConsensusError> {
        self.driver
            .advance_dense_batch(entries, expected_epoch)
            .await
    }

    async fn load_leases(&self) -> Result<Vec<LeaseRecord>, ConsensusError> {
        self.driver.load_leases().await
    }

    async fn persist_leases(
        &self,
        live: &[LeaseRecord],
        epoch: Epoch,
    ) -> Result<(), ConsensusError> {
        self.driver.persist_leases(live, epoch).await
    }
}
