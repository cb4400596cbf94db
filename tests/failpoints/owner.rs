//! One owner, whatever happens: the owner check between a write's rename
//! and its directory fsync.

use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::vfs::Ownership;
use tsoracle_driver_file::{FileDriver, FileDriverError, LEADER_EPOCH};

use crate::common::owner::{assert_permanent, displaced};
use crate::common::sim::HW;
use crate::common::{classify, error_chain as chain};

/// The second owner check, after the directory fsync: `LOCK` replaced
/// *after* the check before the rename (a peer that took over in between
/// read the old state, and may overwrite ours later) keeps the value from
/// being acknowledged or published. Only the `LOCK` half of that check can
/// see this: the path still leads to the directory.
#[tokio::test]
async fn lock_replaced_between_the_rename_and_the_directory_fsync_is_never_acknowledged() {
    let _scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let driver = FileDriver::open_or_init(&dir).unwrap();
    driver.persist_high_water(100, LEADER_EPOCH).await.unwrap();

    let lock = dir.join("LOCK");
    fail::cfg_callback("file_driver::before_dir_fsync", move || {
        // Once: the next writer's own LOCK must stay.
        if std::fs::metadata(lock.with_file_name("replaced")).is_err() {
            std::fs::remove_file(&lock).unwrap();
            std::fs::write(&lock, b"").unwrap();
            std::fs::write(lock.with_file_name("replaced"), b"").unwrap();
        }
    })
    .unwrap();
    let err = driver
        .persist_high_water(200, LEADER_EPOCH)
        .await
        .unwrap_err();
    fail::cfg("file_driver::before_dir_fsync", "off").unwrap();
    assert_eq!(displaced(&err), Ownership::LockReplaced);
    assert_permanent(&err);
    assert_eq!(
        driver.high_water(),
        100,
        "the unacknowledged value was published"
    );
    assert!(driver.is_poisoned());
}

// The review regressions' fix 5.

/// Sends on its channel when dropped: stored in a thread-local of the
/// committer thread, it is dropped when that thread exits, after its stack
/// (the committer and everything it owned) has unwound.
struct ExitSignal(std::sync::mpsc::Sender<()>);

impl Drop for ExitSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

thread_local! {
    static ON_EXIT: std::cell::RefCell<Option<ExitSignal>> = const { std::cell::RefCell::new(None) };
}

/// Fix 5: the directory lock belongs to the driver, not to its committer
/// thread: a committer that panicked must not let a second driver open the
/// directory while the first still answers reads.
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
