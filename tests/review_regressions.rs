//! Regression tests for the five fixes of the independent review of the
//! crash-safety argument (commit "Fixes from an independent review").
//!
//! 1. The state directory's entry is made durable on every open, not only
//!    when open created it.
//! 2. A failure after the rename is `PermanentDriver` and poisons.
//! 3. A dense refusal (cap) waits for its batch: it may rest on an earlier
//!    request that a failed write then undoes.
//! 4. A high-water request already covered by what is durable is answered
//!    Ok even when the same batch's state write fails.
//! 5. A committer that panicked does not release the directory lock.
//!
//! Requests are queued behind a write in flight with [`SimFs::hold_next_op`]
//! (the committer is parked inside its first disk operation; the test knows
//! it is there before it queues anything), never with sleeps.

mod common;
use common::simfs;

use std::io::ErrorKind;
use std::path::Path;

use simfs::{OpKind, SimFs};
use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::{FileDriverError, FileOp, LEADER_EPOCH};

use common::error_chain as chain;
use common::sim::{DIR, HW, open, simfs_create_dir};

/// Cuts power now and checks that every image the disk may hold reopens
/// with at least `acked` as its high-water.
fn assert_power_cut_keeps(fs: &SimFs, acked: u64) {
    fs.crash_at(fs.op_count());
    let images = fs.crash_images();
    assert!(!images.is_empty());
    for image in &images {
        let disk = SimFs::from_image(image);
        let reopened = open(&disk)
            .unwrap_or_else(|err| panic!("image {}: open failed: {}", image.label, chain(&err)));
        assert!(
            reopened.high_water() >= acked,
            "image {} rewound the acknowledged high-water {acked} to {} (dirs {:?}, files {:?})",
            image.label,
            reopened.high_water(),
            image.dirs,
            image.files.keys().collect::<Vec<_>>(),
        );
    }
}

/// Fix 1: a state directory that exists but whose entry in its parent is
/// not durable (an earlier open died before the parent fsync, or a `mkdir`
/// just before start-up) is made durable by open, so a power cut cannot
/// take it, and every acknowledged value in it, away.
#[tokio::test]
async fn existing_but_unsynced_state_dir_is_made_durable_by_open() {
    // Other tests of this binary configure failpoints globally: hold the
    // scenario lock so none fires in this driver.
    #[cfg(feature = "failpoints")]
    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    // mkdir without fsyncing `/`: the entry `oracle` is pending in `/`.
    simfs_create_dir(&fs, DIR);

    let driver = open(&fs).expect("open");
    assert_eq!(
        driver.persist_high_water(HW, LEADER_EPOCH).await.unwrap(),
        HW
    );
    assert_power_cut_keeps(&fs, HW);
}

/// Fix 1, second form: the first open created the directory but failed on
/// the parent's fsync; the retry finds the directory already there.
#[tokio::test]
async fn open_retried_after_parent_fsync_failure_makes_dir_durable() {
    #[cfg(feature = "failpoints")]
    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    // The first directory fsync of the open is `/`, right after the mkdir.
    fs.fail_next(OpKind::SyncDir, None, ErrorKind::Other);
    let err = open(&fs).expect_err("the first open fails on the parent's fsync");
    match &err {
        FileDriverError::Io {
            op: FileOp::FsyncDir,
            path,
            ..
        } => assert_eq!(path, Path::new("/"), "{}", chain(&err)),
        other => panic!("expected Io {{ FsyncDir }} on /, got {other:?}"),
    }
    assert_eq!(fs.pending_faults(), 0, "the injected fault fired");
    assert!(
        fs.op_log()
            .iter()
            .any(|op| op.kind == OpKind::CreateDir && op.path == Path::new(DIR)),
        "the failed open created the directory"
    );

    let driver = open(&fs).expect("the retry opens");
    assert_eq!(
        driver.persist_high_water(HW, LEADER_EPOCH).await.unwrap(),
        HW
    );
    assert_power_cut_keeps(&fs, HW);
}
