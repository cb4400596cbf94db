//! A directory whose state was carried to another oracle (`migrate out`)
//! carries a `RETIRED` marker, and no driver serves it until the marker is
//! lifted: two live oracles would hand out the same values.

use std::error::Error;

use tsoracle_driver_file::{FileDriver, FileDriverError, StoppedDir};

#[test]
fn a_retired_directory_is_refused_with_the_marker_and_the_way_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    FileDriver::init_seeded(dir.path(), 1_764_000_000_000).expect("seed");
    let stopped = StoppedDir::lock(dir.path()).expect("lock");
    stopped
        .retire("migrated out to http://127.0.0.1:1 at 2026-11-27T08:00:00Z\nmore detail\n")
        .expect("retire");
    drop(stopped);

    let before = std::fs::read(dir.path().join("state")).expect("state");
    let err = FileDriver::open_or_init(dir.path()).expect_err("a retired directory served");
    match &err {
        FileDriverError::Retired { marker, note, .. } => {
            assert_eq!(marker, &dir.path().join("RETIRED"));
            assert_eq!(
                &**note,
                "migrated out to http://127.0.0.1:1 at 2026-11-27T08:00:00Z"
            );
        }
        other => panic!("expected Retired, got {other:?}"),
    }
    let hint = err.hint().expect("a retired directory says what to do");
    assert!(hint.contains("migrate in"), "{hint}");
    assert!(hint.contains("migrate reinstate"), "{hint}");
    assert!(err.source().is_none());
    assert_eq!(
        std::fs::read(dir.path().join("state")).expect("state"),
        before,
        "a refused directory was changed"
    );

    // Re-locking a retired directory works (migrate out can be re-run), and
    // reinstating lifts the marker for good.
    let stopped = StoppedDir::lock(dir.path()).expect("relock");
    assert!(stopped.retired_note().expect("note").is_some());
    stopped.reinstate().expect("reinstate");
    assert!(stopped.retired_note().expect("note").is_none());
    drop(stopped);
    let driver = FileDriver::open_or_init(dir.path()).expect("reinstated directory opens");
    assert_eq!(driver.high_water(), 1_764_000_000_000);
}

#[test]
fn a_running_driver_keeps_its_directory_from_being_locked_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = FileDriver::open_or_init(dir.path()).expect("open");
    assert!(matches!(
        StoppedDir::lock(dir.path()),
        Err(FileDriverError::AlreadyLocked { .. })
    ));
    drop(driver);
    StoppedDir::lock(dir.path()).expect("lock once the driver is gone");
}

#[test]
fn a_stopped_lock_never_creates_a_missing_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    match StoppedDir::lock(&missing) {
        Err(FileDriverError::Io { path, source, .. }) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(!missing.exists());
}

#[test]
fn a_half_seeded_directory_is_refused_by_every_opener() {
    let dir = tempfile::tempdir().expect("tempdir");
    FileDriver::init_seeded(dir.path(), 5).expect("seed");
    std::fs::write(dir.path().join("SEEDING"), "x").expect("marker");
    assert!(matches!(
        FileDriver::open_or_init(dir.path()),
        Err(FileDriverError::SeedingInterrupted { .. })
    ));
    assert!(matches!(
        StoppedDir::lock(dir.path()),
        Err(FileDriverError::SeedingInterrupted { .. })
    ));
}

/// What a driver that reads only live (version 1) `state` records, as
/// upstream's does, makes of the directory: the high-water, or the refusal.
fn foreign_read(dir: &std::path::Path) -> Result<u64, tsoracle_driver_file::record::RecordError> {
    let bytes = std::fs::read(dir.join("state")).expect("state file");
    tsoracle_driver_file::record::decode(&bytes)
}

#[test]
fn retiring_marks_the_state_record_so_other_drivers_refuse_it_too() {
    use tsoracle_driver_file::record::{Mark, RecordError};
    let dir = tempfile::tempdir().expect("tempdir");
    FileDriver::init_seeded(dir.path(), 1_764_000_000_000).expect("seed");
    let stopped = StoppedDir::lock(dir.path()).expect("lock");
    stopped.retire("migrated out\n").expect("retire");
    drop(stopped);
    // The mark is in the record: a driver that never heard of the note
    // refuses the version, and the high-water is kept for the tools.
    assert_eq!(
        foreign_read(dir.path()),
        Err(RecordError::Marked {
            mark: Mark::Retired,
            high_water: 1_764_000_000_000
        })
    );
    assert_eq!(
        std::fs::read(dir.path().join("state")).expect("state")[4],
        b'R'
    );
    // Even without the note, this crate refuses it.
    std::fs::remove_file(dir.path().join("RETIRED")).expect("rm note");
    match FileDriver::open_or_init(dir.path()) {
        Err(FileDriverError::Retired { marker, .. }) => {
            assert_eq!(marker, dir.path().join("state"))
        }
        other => panic!("a retired record served: {other:?}"),
    }
    let stopped = StoppedDir::lock(dir.path()).expect("lock stopped");
    assert_eq!(stopped.mark(), Some(Mark::Retired));
    assert_eq!(stopped.high_water(), Some(1_764_000_000_000));
    // Reinstating makes the record live again, at the same high-water.
    stopped.reinstate().expect("reinstate");
    drop(stopped);
    assert_eq!(foreign_read(dir.path()), Ok(1_764_000_000_000));
    assert_eq!(
        FileDriver::open_or_init(dir.path())
            .expect("serves")
            .high_water(),
        1_764_000_000_000
    );
}

#[test]
fn a_note_left_by_an_earlier_version_is_carried_into_the_record() {
    use tsoracle_driver_file::record::Mark;
    for (note, mark) in [
        ("RETIRED", Mark::Retired),
        ("SEEDING", Mark::Seeding),
        ("PENDING", Mark::Pending),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        FileDriver::init_seeded(dir.path(), 1_764_000_000_000).expect("seed");
        std::fs::write(dir.path().join(note), "left by an earlier version\n").expect("note");
        assert_eq!(
            foreign_read(dir.path()),
            Ok(1_764_000_000_000),
            "live before"
        );
        FileDriver::open_or_init(dir.path()).expect_err("a noted directory served");
        // From the refused open on, upstream's driver refuses it as well.
        assert!(
            matches!(
                foreign_read(dir.path()),
                Err(tsoracle_driver_file::record::RecordError::Marked { mark: found, high_water: 1_764_000_000_000 }) if found == mark
            ),
            "{note}: {:?}",
            foreign_read(dir.path())
        );
    }
    // A note without any state file: the mark goes in at 0, since every
    // driver reads a missing `state` as a fresh oracle.
    let bare = tempfile::tempdir().expect("tempdir");
    std::fs::write(bare.path().join("RETIRED"), "migrated\n").expect("note");
    FileDriver::open_or_init(bare.path()).expect_err("served");
    assert!(matches!(
        foreign_read(bare.path()),
        Err(tsoracle_driver_file::record::RecordError::Marked { high_water: 0, .. })
    ));
}

#[test]
fn a_pending_directory_serves_only_after_finish_raises_its_high_water() {
    use tsoracle_core::SeqKey;
    use tsoracle_driver_file::Seed;
    use tsoracle_driver_file::record::Mark;
    let dir = tempfile::tempdir().expect("tempdir");
    let orders = SeqKey::try_new("orders").expect("key");
    let seed = Seed::new(1_764_000_000_000)
        .with_counter(orders.clone(), 900)
        .with_key_cap(1)
        .pending("{\"from\":[\"http://10.0.0.1:50051\"]}\n");
    FileDriver::init_from(dir.path(), &seed).expect("seed");
    assert!(matches!(
        foreign_read(dir.path()),
        Err(tsoracle_driver_file::record::RecordError::Marked {
            mark: Mark::Pending,
            ..
        })
    ));
    match FileDriver::open_or_init(dir.path()) {
        Err(err @ FileDriverError::MigrationPending { .. }) => {
            let hint = err.hint().expect("a pending directory says what to do");
            assert!(hint.contains("migrate finish"), "{hint}")
        }
        other => panic!("a pending directory served: {other:?}"),
    }
    let mut stopped = StoppedDir::lock(dir.path()).expect("lock");
    assert_eq!(
        stopped.pending_note().expect("note").as_deref(),
        Some("{\"from\":[\"http://10.0.0.1:50051\"]}\n")
    );
    // Neither retired nor reinstated while pending: both would skip finish.
    assert!(matches!(
        stopped.retire("x"),
        Err(FileDriverError::MigrationPending { .. })
    ));
    assert!(matches!(
        stopped.reinstate(),
        Err(FileDriverError::MigrationPending { .. })
    ));
    // Finish never lowers the seed's high-water, and raises it when asked.
    assert_eq!(
        stopped.finish_pending(5).expect("finish"),
        1_764_000_000_000
    );
    assert!(matches!(
        stopped.finish_pending(1_764_000_100_000),
        Err(FileDriverError::NotPending { .. })
    ));
    drop(stopped);
    assert!(!dir.path().join("PENDING").exists());
    assert_eq!(foreign_read(dir.path()), Ok(1_764_000_000_000));
    let driver = FileDriver::open_or_init(dir.path()).expect("serves after finish");
    assert_eq!(driver.high_water(), 1_764_000_000_000);
}

#[test]
fn a_finish_interrupted_after_the_live_record_is_completed_by_a_second_one() {
    use tsoracle_driver_file::Seed;
    let dir = tempfile::tempdir().expect("tempdir");
    FileDriver::init_from(dir.path(), &Seed::new(1_000).pending("note")).expect("seed");
    // The state a finish leaves when it stops between its two steps: the
    // live record written, the note still there.
    std::fs::write(
        dir.path().join("state"),
        tsoracle_driver_file::record::encode(2_000),
    )
    .expect("live record");
    assert!(matches!(
        FileDriver::open_or_init(dir.path()),
        Err(FileDriverError::MigrationPending { .. })
    ));
    let mut stopped = StoppedDir::lock(dir.path()).expect("lock");
    assert_eq!(stopped.finish_pending(1_500).expect("finish again"), 2_000);
    drop(stopped);
    assert_eq!(
        FileDriver::open_or_init(dir.path())
            .expect("serves")
            .high_water(),
        2_000
    );
}

#[tokio::test]
async fn a_closed_key_set_refuses_new_keys_until_one_is_added_with_its_floor() {
    use tsoracle_consensus::{ConsensusDriver, ConsensusError};
    use tsoracle_core::SeqKey;
    use tsoracle_driver_file::{LEADER_EPOCH, Seed};
    let dir = tempfile::tempdir().expect("tempdir");
    let (orders, users) = (
        SeqKey::try_new("orders").expect("key"),
        SeqKey::try_new("users").expect("key"),
    );
    FileDriver::init_from(
        dir.path(),
        &Seed::new(1_000)
            .with_counter(orders.clone(), 10)
            .with_key_cap(1),
    )
    .expect("seed");
    {
        let driver = FileDriver::open_or_init(dir.path()).expect("open");
        assert_eq!(
            driver
                .advance_dense(&orders, 5, LEADER_EPOCH)
                .await
                .expect("orders"),
            10
        );
        assert!(matches!(
            driver.advance_dense(&users, 1, LEADER_EPOCH).await,
            Err(ConsensusError::SeqKeyCardinalityExceeded { cap: 1 })
        ));
    }
    let mut stopped = StoppedDir::lock(dir.path()).expect("lock");
    assert_eq!(stopped.add_counter(&users, 7_000).expect("add"), 7_000);
    assert_eq!(stopped.add_counter(&orders, 3).expect("never lowered"), 15);
    assert!(matches!(
        stopped.set_key_cap(1),
        Err(FileDriverError::KeyCapBelowKeys {
            cap: 1,
            keys: 2,
            ..
        })
    ));
    drop(stopped);
    let driver = FileDriver::open_or_init(dir.path()).expect("open");
    assert_eq!(
        driver
            .advance_dense(&users, 1, LEADER_EPOCH)
            .await
            .expect("users"),
        7_000
    );
    assert_eq!(
        driver
            .advance_dense(&orders, 1, LEADER_EPOCH)
            .await
            .expect("orders"),
        15
    );
}
