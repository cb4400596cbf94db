//! Seeding is all or nothing at its commit point too: the owner check
//! after the seed's last directory fsync.

use tsoracle_driver_file::{FileDriver, FileDriverError};

use crate::common::seed::seed;

/// The owner check after the seed's last directory fsync: a directory moved
/// away just as its final record became durable is reported as a failed
/// seed (`Displaced`), not as a seed that a server restarted on the path
/// would find.
#[test]
fn a_seed_whose_directory_moved_away_at_its_commit_point_is_refused() {
    let _scenario = fail::FailScenario::setup();
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("oracle");
    let moved = parent.path().join("moved");
    let (watched, target) = (dir.clone(), moved.clone());
    fail::cfg_callback("file_driver::after_dir_fsync", move || {
        // Only once the final, live record is durable: the commit point.
        let live = std::fs::read(watched.join("state")).is_ok_and(|bytes| bytes.get(4) == Some(&1));
        if live && !target.exists() {
            std::fs::rename(&watched, &target).expect("move the directory away");
        }
    })
    .expect("failpoint");
    let result = FileDriver::init_from(&dir, &seed());
    fail::cfg("file_driver::after_dir_fsync", "off").expect("failpoint off");
    assert!(moved.exists(), "the failpoint never fired");
    match result {
        Err(FileDriverError::Displaced { .. }) => {}
        other => panic!("a seed that moved away was reported as done: {other:?}"),
    }
}
