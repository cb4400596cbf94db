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
#[path = "support/simfs.rs"]
mod simfs;

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use simfs::{OpKind, SimFs};
use tsoracle_consensus::ConsensusDriver;
#[cfg(feature = "failpoints")]
use tsoracle_consensus::ConsensusError;
use tsoracle_driver_file::{FileDriver, FileDriverError, FileOp, LEADER_EPOCH};

use common::error_chain as chain;

const DIR: &str = "/oracle";
const HW: u64 = 1_764_000_000_000;

fn open(fs: &SimFs) -> Result<Arc<FileDriver>, FileDriverError> {
    FileDriver::open_or_init_with(DIR, Arc::new(fs.clone()))
}

/// The `FileDriverError` inside a driver-level `ConsensusError`, and
/// whether it was classified transient.
#[cfg(feature = "failpoints")]
fn classify(err: &ConsensusError) -> (bool, &FileDriverError) {
    let transient = match err {
        ConsensusError::TransientDriver(_) => true,
        ConsensusError::PermanentDriver(_) => false,
        other => panic!("not a driver error: {other:?}"),
    };
    let file_err = FileDriverError::in_consensus(err)
        .unwrap_or_else(|| panic!("not an Arc<FileDriverError>: {err:?}"));
    (transient, file_err)
}

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

/// `mkdir` through the Vfs, like a process that is not the driver: no
/// fsync of the parent follows.
fn simfs_create_dir(fs: &SimFs, dir: &str) {
    use tsoracle_driver_file::vfs::Vfs;
    fs.create_dir(Path::new(dir)).expect("mkdir");
}

/// Fix 2: once the rename took effect the live file holds the new record,
/// so a failure there poisons and is permanent, not a transient rename
/// error a caller would retry.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn failure_after_rename_is_permanent_and_poisons() {
    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    let driver = open(&fs).expect("open");
    assert_eq!(
        driver.persist_high_water(HW, LEADER_EPOCH).await.unwrap(),
        HW
    );

    fail::cfg("file_driver::after_rename", "return").unwrap();
    let err = driver
        .persist_high_water(HW + 100, LEADER_EPOCH)
        .await
        .expect_err("the write fails after its rename");
    let (transient, inner) = classify(&err);
    assert!(!transient, "expected PermanentDriver, got {err:?}");
    assert!(
        matches!(
            inner,
            FileDriverError::Io {
                op: FileOp::Rename,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        chain(&err).contains("file_driver::after_rename"),
        "{}",
        chain(&err)
    );
    assert!(driver.is_poisoned(), "a failure after the rename poisons");
    assert_eq!(driver.high_water(), HW, "nothing new was published");

    // Poisoned: every later write is refused, permanently, even with the
    // fault gone.
    fail::cfg("file_driver::after_rename", "off").unwrap();
    let later = driver
        .persist_high_water(HW + 200, LEADER_EPOCH)
        .await
        .expect_err("a poisoned driver refuses writes");
    let (transient, inner) = classify(&later);
    assert!(!transient, "{later:?}");
    assert!(
        matches!(inner, FileDriverError::Poisoned { .. }),
        "{later:?}"
    );
}

/// Fix 3: a request refused by the key cap only because of an earlier
/// request of its batch must not be refused when that earlier request is
/// itself undone by a failed write: it gets the write's failure, and a
/// retry then succeeds.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn dense_refusal_waits_for_its_batch() {
    use tsoracle_driver_file::dense_record::{self, DenseState};

    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    simfs_create_dir(&fs, DIR);
    // Cap 2, one key present: one more key fits, two do not.
    let mut dense = DenseState {
        cap: 2,
        ..DenseState::default()
    };
    dense.counters.insert(common::key("a"), 5);
    fs.put_file(&Path::new(DIR).join("dense"), &dense_record::encode(&dense));
    let driver = open(&fs).expect("open");
    let (a, b, c) = (common::key("a"), common::key("b"), common::key("c"));

    // A first write holds the committer inside its first disk operation
    // (past the `before_temp_write` failpoint).
    let hold = fs.hold_next_op();
    let first = driver.advance_dense(&a, 1, LEADER_EPOCH);
    tokio::pin!(first);
    assert!(futures::poll!(first.as_mut()).is_pending());
    hold.wait_reached();

    // Queued behind it, one batch: A creates the last key the cap allows;
    // B creates one more, refused only because of A.
    let create_last = driver.advance_dense(&b, 1, LEADER_EPOCH);
    let create_over = driver.advance_dense(&c, 1, LEADER_EPOCH);
    tokio::pin!(create_last, create_over);
    assert!(futures::poll!(create_last.as_mut()).is_pending());
    assert!(futures::poll!(create_over.as_mut()).is_pending());

    // The next dense write (A's and B's batch) fails, transiently.
    fail::cfg("file_driver::before_temp_write", "1*return").unwrap();
    hold.release();

    assert_eq!(first.await.expect("the held write succeeds"), 5);
    let err_a = create_last.await.expect_err("A's write fails");
    let err_b = create_over.await.expect_err("B's batch failed");
    for (name, err) in [("A", &err_a), ("B", &err_b)] {
        let (transient, inner) = classify(err);
        assert!(transient, "{name}: expected TransientDriver, got {err:?}");
        assert!(
            matches!(
                inner,
                FileDriverError::Io {
                    op: FileOp::WriteTemp,
                    ..
                }
            ),
            "{name}: {err:?}"
        );
        assert!(
            chain(err).contains("file_driver::before_temp_write"),
            "{name}: {}",
            chain(err)
        );
    }
    assert!(!driver.is_poisoned());
    assert_eq!(driver.load_dense_seq(&b).await.unwrap(), 0, "A was undone");

    // The failpoint has fired its one time: one new key fits under the cap.
    assert_eq!(driver.advance_dense(&c, 1, LEADER_EPOCH).await.unwrap(), 0);
    assert!(matches!(
        driver.advance_dense(&b, 1, LEADER_EPOCH).await,
        Err(ConsensusError::SeqKeyCardinalityExceeded { cap: 2 })
    ));
}

/// Fix 4: a high-water request that was above the durable value when it
/// was queued, but is covered by the time the committer folds it (an
/// earlier batch made a higher value durable), is answered Ok with the
/// durable value, even though the same batch's state write fails.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn covered_high_water_survives_failed_write_of_its_batch() {
    let _scenario = fail::FailScenario::setup();
    let fs = SimFs::new();
    let driver = open(&fs).expect("open");
    let (low, first_hw, high) = (HW + 50, HW + 100, HW + 200);
    assert_eq!(
        driver.persist_high_water(HW, LEADER_EPOCH).await.unwrap(),
        HW
    );

    // persist(HW+100) holds the committer inside its write.
    let hold = fs.hold_next_op();
    let first = driver.persist_high_water(first_hw, LEADER_EPOCH);
    tokio::pin!(first);
    assert!(futures::poll!(first.as_mut()).is_pending());
    hold.wait_reached();

    // Both are above what is durable now (HW), so both reach the committer;
    // by the time it folds them, HW+50 is covered by HW+100.
    let covered = driver.persist_high_water(low, LEADER_EPOCH);
    let above = driver.persist_high_water(high, LEADER_EPOCH);
    tokio::pin!(covered, above);
    assert!(futures::poll!(covered.as_mut()).is_pending());
    assert!(futures::poll!(above.as_mut()).is_pending());

    // Their batch's state write fails, transiently.
    fail::cfg("file_driver::before_temp_write", "1*return").unwrap();
    hold.release();

    assert_eq!(first.await.expect("the held write succeeds"), first_hw);
    assert_eq!(
        covered.await.expect("a covered request needs no write"),
        first_hw
    );
    let err = above.await.expect_err("the state write failed");
    let (transient, inner) = classify(&err);
    assert!(transient, "expected TransientDriver, got {err:?}");
    assert!(
        matches!(
            inner,
            FileDriverError::Io {
                op: FileOp::WriteTemp,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!driver.is_poisoned());
    assert_eq!(driver.high_water(), first_hw);
}

/// Sends on its channel when dropped: stored in a thread-local of the
/// committer thread, it is dropped when that thread exits, after its stack
/// (the committer and everything it owned) has unwound.
#[cfg(feature = "failpoints")]
struct ExitSignal(std::sync::mpsc::Sender<()>);

#[cfg(feature = "failpoints")]
impl Drop for ExitSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

#[cfg(feature = "failpoints")]
thread_local! {
    static ON_EXIT: std::cell::RefCell<Option<ExitSignal>> = const { std::cell::RefCell::new(None) };
}

/// Fix 5: the directory lock belongs to the driver, not to its committer
/// thread: a committer that panicked must not let a second driver open the
/// directory while the first still answers reads.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn panicked_committer_keeps_the_lock() {
    let _scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().expect("temp dir");
    let driver = FileDriver::open_or_init(tmp.path()).expect("open");

    // The committer thread panics on its next write (the message prints),
    // like `before_temp_write=panic`, but first leaves a signal that fires
    // once the thread has fully unwound and exited: the caller's reply is
    // dropped during the unwinding, before the committer's own fields are,
    // so without it the lock check below would race the unwinding.
    let (exited, thread_exited) = std::sync::mpsc::channel();
    fail::cfg_callback("file_driver::before_temp_write", move || {
        ON_EXIT.with(|slot| *slot.borrow_mut() = Some(ExitSignal(exited.clone())));
        panic!("failpoint file_driver::before_temp_write panic");
    })
    .unwrap();
    let err = driver
        .persist_high_water(HW, LEADER_EPOCH)
        .await
        .expect_err("the committer died");
    thread_exited
        .recv()
        .expect("the committer thread exits after its panic");
    fail::cfg("file_driver::before_temp_write", "off").unwrap();
    let (transient, inner) = classify(&err);
    assert!(!transient, "expected PermanentDriver, got {err:?}");
    assert!(
        matches!(inner, FileDriverError::CommitterStopped { .. }),
        "{err:?}"
    );
    assert!(chain(&err).contains("has stopped"), "{}", chain(&err));
    assert_eq!(
        driver.load_high_water().await.unwrap(),
        0,
        "reads still work"
    );

    match FileDriver::open_or_init(tmp.path()) {
        Err(FileDriverError::AlreadyLocked { .. }) => {}
        Err(other) => panic!("expected AlreadyLocked, got {}", chain(&other)),
        Ok(_) => panic!("a second driver opened the directory while the first is alive"),
    }

    drop(driver);
    let reopened = FileDriver::open_or_init(tmp.path()).expect("the lock went with the driver");
    assert_eq!(reopened.load_high_water().await.unwrap(), 0);
}
