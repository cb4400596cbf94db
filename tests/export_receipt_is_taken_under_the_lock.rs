//! `tsoracle-file export DIR --receipt` prints the stopped-state receipt,
//! taken under the directory's lock: refused while a driver runs, and the
//! same document the library builds once it is stopped.

mod common;

use std::ffi::OsStr;

use tsoracle_driver_file::{FileDriver, StoppedDir};

use common::cli::outcome;

fn export_receipt(dir: &std::path::Path) -> (bool, String, String) {
    outcome(&[
        OsStr::new("export"),
        dir.as_os_str(),
        OsStr::new("--receipt"),
    ])
}

#[test]
fn the_receipt_is_refused_while_a_driver_runs_and_matches_the_library_after() {
    let dir = common::copy_fixture("full");
    let driver = FileDriver::open_or_init(dir.path()).expect("open");
    let (ok, stdout, stderr) = export_receipt(dir.path());
    assert!(
        !ok,
        "a receipt was taken while a driver held the lock: {stdout}"
    );
    assert!(stderr.contains("locked"), "{stderr}");
    drop(driver);

    let (ok, stdout, stderr) = export_receipt(dir.path());
    assert!(ok, "{stderr}");
    let printed: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let library = StoppedDir::lock(dir.path())
        .expect("lock")
        .receipt()
        .expect("receipt");
    assert_eq!(printed, serde_json::to_value(&library).expect("json"));
    assert_eq!(
        printed["committed_reservation_high_water_physical_ms"],
        1_764_000_555_000u64
    );
    assert!(stdout.starts_with(
        "{\n  \"schema\": \"tsoracle.stopped-file-state\",\n  \"schema_version\": 1,"
    ));
}

#[test]
fn a_directory_without_state_has_no_receipt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, _, stderr) = export_receipt(dir.path());
    assert!(!ok);
    assert!(stderr.contains("has no state file"), "{stderr}");
    // Refused before the lock is taken: no LOCK was created.
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("read dir").count(),
        0,
        "export --receipt changed the empty directory"
    );
}
