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
    let text = err.to_string();
    assert!(text.contains("migrate in"), "{text}");
    assert!(text.contains("migrate reinstate"), "{text}");
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
