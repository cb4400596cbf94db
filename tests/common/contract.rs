//! The `ConsensusDriver` contract, written once (as openraft's
//! `testing::Suite` does for its storage) and run against every filesystem
//! the tests have: a temporary directory, the simulated `SimFs`, and the
//! real ext4, xfs and btrfs images of `real_filesystems.rs`.
//!
//! `open` opens the same state directory each time it is called; the suite
//! drops a driver before it opens the next, so every clause is checked
//! both in memory and after a reopen.

use std::sync::Arc;

use futures::StreamExt;
use tsoracle_consensus::{ConsensusDriver, ConsensusError, LeaderState};
use tsoracle_core::{LeaseRecord, PHYSICAL_MS_MAX};
use tsoracle_driver_file::{FileDriver, LEADER_EPOCH};

use super::key;

fn lease(id: u64, upper: u64) -> LeaseRecord {
    LeaseRecord {
        lease_id: id,
        holder: format!("holder-{id}").into_bytes(),
        holder_epoch: 1,
        ttl_ms: 5_000,
        ts_upper_bound: upper,
        expires_at_ms: upper + 5_000,
        superseded: false,
    }
}

/// Runs every clause on a fresh directory that `open` opens; returns a
/// one-line summary for the caller's log.
pub async fn run(open: impl Fn() -> Arc<FileDriver>) -> String {
    let (orders, users) = (key("orders"), key("users"));
    {
        let driver = open();
        // Leadership: a single node leads at once, at LEADER_EPOCH.
        let first = driver.leadership_events().next().await;
        assert!(
            matches!(first, Some(LeaderState::Leader { epoch }) if epoch == LEADER_EPOCH),
            "leadership: {first:?}"
        );

        // A fresh directory: everything at its zero.
        assert_eq!(driver.load_high_water().await.expect("load"), 0);
        assert_eq!(driver.load_dense_seq(&orders).await.expect("load"), 0);
        assert!(driver.load_leases().await.expect("leases").is_empty());

        // High-water: advance to at least, never an absolute set.
        assert_eq!(
            driver
                .persist_high_water(1_000, LEADER_EPOCH)
                .await
                .expect("persist"),
            1_000
        );
        assert_eq!(
            driver
                .persist_high_water(500, LEADER_EPOCH)
                .await
                .expect("stale"),
            1_000
        );
        assert_eq!(driver.load_high_water().await.expect("load"), 1_000);
        assert!(matches!(
            driver
                .persist_high_water(PHYSICAL_MS_MAX + 1, LEADER_EPOCH)
                .await,
            Err(ConsensusError::AdvanceOutOfRange(_))
        ));
        assert_eq!(driver.load_high_water().await.expect("load"), 1_000);

        // Dense: a fetch-add returning the block start, contiguous blocks.
        assert_eq!(
            driver
                .advance_dense(&orders, 10, LEADER_EPOCH)
                .await
                .expect("dense"),
            0
        );
        assert_eq!(
            driver
                .advance_dense(&orders, 5, LEADER_EPOCH)
                .await
                .expect("dense"),
            10
        );
        assert_eq!(driver.load_dense_seq(&orders).await.expect("load"), 15);
        // A batch: starts in request order, a repeated key sees the one
        // before it, an absent key starts at 0.
        let starts = driver
            .advance_dense_batch(
                &[(users.clone(), 3), (orders.clone(), 1), (users.clone(), 2)],
                LEADER_EPOCH,
            )
            .await
            .expect("batch");
        assert_eq!(starts, vec![0, 15, 3]);
        // A block of 0 values creates its key at 0 and takes nothing.
        let empty = key("empty");
        assert_eq!(
            driver
                .advance_dense(&empty, 0, LEADER_EPOCH)
                .await
                .expect("dense"),
            0
        );
        assert_eq!(driver.load_dense_seq(&empty).await.expect("load"), 0);
        let after_batches = (
            driver.load_dense_seq(&orders).await.expect("load"),
            driver.load_dense_seq(&users).await.expect("load"),
        );

        // Leases: the set is absolute; the last write wins.
        driver
            .persist_leases(&[lease(1, 1_000), lease(2, 1_000)], LEADER_EPOCH)
            .await
            .expect("leases");
        driver
            .persist_leases(&[lease(2, 1_000)], LEADER_EPOCH)
            .await
            .expect("leases");
        assert_eq!(
            driver.load_leases().await.expect("leases"),
            vec![lease(2, 1_000)]
        );
        drop(driver);

        // Reopened: everything acknowledged is there, nothing lower.
        let driver = open();
        assert_eq!(driver.load_high_water().await.expect("load"), 1_000);
        assert_eq!(
            (
                driver.load_dense_seq(&orders).await.expect("load"),
                driver.load_dense_seq(&users).await.expect("load"),
            ),
            after_batches
        );
        assert_eq!(
            driver.load_leases().await.expect("leases"),
            vec![lease(2, 1_000)]
        );
        // And it goes on from there.
        assert_eq!(
            driver
                .advance_dense(&orders, 1, LEADER_EPOCH)
                .await
                .expect("dense"),
            after_batches.0
        );
        assert_eq!(
            driver
                .persist_high_water(2_000, LEADER_EPOCH)
                .await
                .expect("persist"),
            2_000
        );
        drop(driver);
        let driver = open();
        assert_eq!(driver.load_high_water().await.expect("load"), 2_000);
        assert_eq!(
            driver.load_dense_seq(&orders).await.expect("load"),
            after_batches.0 + 1
        );
    }
    "contract: high-water, dense, batch, leases and reopen hold".to_string()
}
