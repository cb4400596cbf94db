//! One owner, whatever happens to the directory while a driver runs on it:
//! `LOCK` deleted, the directory moved, replaced by a restore or a copy, its
//! path (a symbolic link) pointed elsewhere, files planted in it. In each
//! case a second driver never shares the directory with the first, the
//! first never writes into a directory it did not lock, and it stops
//! acknowledging as soon as a restart on its path would not see its writes.
//!
//! Multi-process steps re-run this binary as a child (see
//! `support/child.rs`); every step that holds a driver while a child may be
//! spawned holds the fork gate.

#[path = "support/child.rs"]
mod child;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tsoracle_consensus::{ConsensusDriver, ConsensusError};
use tsoracle_driver_file::vfs::Ownership;
use tsoracle_driver_file::{FileDriver, FileDriverError, LEADER_EPOCH};

use child::{ChildProcess, fork_gate, report};
use common::dir_contents;

const ROLE_VAR: &str = "TSORACLE_OWNER_TEST_ROLE";
const DIR_VAR: &str = "TSORACLE_OWNER_TEST_DIR";
const CHILD_TEST: &str = "child_process_role";

/// The child: opens the directory once and reports what happened.
#[test]
fn child_process_role() {
    let (Ok(role), Ok(dir)) = (std::env::var(ROLE_VAR), std::env::var(DIR_VAR)) else {
        return; // Run as an ordinary test: nothing to do.
    };
    match role.as_str() {
        "open" => match FileDriver::open_or_init(&dir) {
            Ok(_) => report("opened"),
            Err(FileDriverError::AlreadyLocked { .. }) => report("locked"),
            Err(err) => report(&format!("error {err}")),
        },
        "flock-lock-file" => {
            // A peer that knows only LOCK (an older driver, a script).
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(Path::new(&dir).join("LOCK"))
                .expect("open LOCK");
            match fs2::FileExt::try_lock_exclusive(&file) {
                Ok(()) => report("opened"),
                Err(_) => report("locked"),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn child_open(role: &str, dir: &Path) -> String {
    let gate = fork_gate();
    let mut child = ChildProcess::spawn(
        CHILD_TEST,
        &[(ROLE_VAR, role), (DIR_VAR, dir.to_str().unwrap())],
        &gate,
    );
    drop(gate);
    let line = child.next_report().expect("the child reports");
    assert!(child.wait().success());
    line
}

fn displaced(err: &ConsensusError) -> Ownership {
    let inner = FileDriverError::in_consensus(err).expect("a driver error");
    let first = match inner {
        FileDriverError::Poisoned { first, .. } => first.as_ref(),
        other => other,
    };
    match first {
        FileDriverError::Displaced { found, .. } => *found,
        other => panic!("expected Displaced, got {other:?}"),
    }
}

fn assert_permanent(err: &ConsensusError) {
    assert!(
        matches!(err, ConsensusError::PermanentDriver(_)),
        "a displaced driver must fail permanently, got {err:?}"
    );
}

// ---------------------------------------------------------------------------
// 1. LOCK deleted while running.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn deleting_lock_does_not_let_a_second_driver_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = FileDriver::open_or_init(dir).unwrap();
    first.persist_high_water(100, LEADER_EPOCH).await.unwrap();

    std::fs::remove_file(dir.join("LOCK")).unwrap();

    // In this process...
    match FileDriver::open_or_init(dir) {
        Err(FileDriverError::AlreadyLocked { .. }) => {}
        other => panic!("second open after rm LOCK: expected AlreadyLocked, got {other:?}"),
    }
    // ...and in another one.
    assert_eq!(child_open("open", dir), "locked");
    // The refused opens did not recreate LOCK behind the owner's back.
    assert!(!dir.join("LOCK").exists());

    // The owner notices at its next write and stops acknowledging.
    let err = first
        .persist_high_water(200, LEADER_EPOCH)
        .await
        .unwrap_err();
    assert_permanent(&err);
    assert_eq!(displaced(&err), Ownership::LockReplaced);
    assert!(err.to_string().contains("LOCK") || format!("{err:?}").contains("LOCK"));
    assert!(first.is_poisoned());
    assert_eq!(first.high_water(), 100, "nothing unacknowledged published");

    // Reopened, it carries on from at least what was acknowledged.
    drop(first);
    let _gate = fork_gate();
    let reopened = FileDriver::open_or_init(dir).unwrap();
    assert!(reopened.high_water() >= 100);
}

#[tokio::test]
async fn a_replaced_lock_file_stops_the_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = FileDriver::open_or_init(dir).unwrap();
    first.persist_high_water(100, LEADER_EPOCH).await.unwrap();

    // A peer that knows only LOCK recreates it and locks the new inode.
    std::fs::remove_file(dir.join("LOCK")).unwrap();
    std::fs::write(dir.join("LOCK"), b"").unwrap();
    assert_eq!(child_open("flock-lock-file", dir), "opened");

    let err = first
        .persist_high_water(200, LEADER_EPOCH)
        .await
        .unwrap_err();
    assert_eq!(displaced(&err), Ownership::LockReplaced);
    let err = first
        .advance_dense(&common::key("k"), 1, LEADER_EPOCH)
        .await
        .unwrap_err();
    assert_permanent(&err);
}

#[tokio::test]
async fn a_peer_that_knows_only_lock_is_still_excluded() {
    let tmp = tempfile::tempdir().unwrap();
    let _driver = FileDriver::open_or_init(tmp.path()).unwrap();
    assert_eq!(child_open("flock-lock-file", tmp.path()), "locked");
}

// ---------------------------------------------------------------------------
// 2. The directory moved or replaced while running.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_moved_directory_is_written_no_more_and_stops_acknowledging() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("oracle");
    let moved = tmp.path().join("oracle.moved");
    let driver = FileDriver::open_or_init(&path).unwrap();
    driver.persist_high_water(100, LEADER_EPOCH).await.unwrap();

    std::fs::rename(&path, &moved).unwrap();
    let err = driver
        .persist_high_water(200, LEADER_EPOCH)
        .await
        .unwrap_err();
    assert_permanent(&err);
    assert_eq!(displaced(&err), Ownership::DirectoryReplaced);
    assert!(
        !path.exists(),
        "the driver recreated its old path: {}",
        path.display()
    );
    assert_eq!(driver.high_water(), 100);
    // Poisoned for good: later writes fail too, reads still answer.
    assert!(driver.persist_high_water(300, LEADER_EPOCH).await.is_err());
    assert_eq!(driver.load_high_water().await.unwrap(), 100);
}

#[tokio::test]
async fn a_directory_restored_at_the_path_is_never_written_by_the_old_driver() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("oracle");
    let old = tmp.path().join("oracle.old");
    let first = FileDriver::open_or_init(&path).unwrap();
    first.persist_high_water(100, LEADER_EPOCH).await.unwrap();

    // An operator moves the live directory away and restores a copy at the
    // path; a new server starts on it.
    std::fs::rename(&path, &old).unwrap();
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(old.join("state"), path.join("state")).unwrap();
    let second = FileDriver::open_or_init(&path).unwrap();
    second.persist_high_water(150, LEADER_EPOCH).await.unwrap();
    let owned_by_second = dir_contents(&path);

    // The old driver writes into the directory it locked, never into the
    // new one, and refuses to acknowledge.
    let err = first
        .persist_high_water(500, LEADER_EPOCH)
        .await
        .unwrap_err();
    assert_eq!(displaced(&err), Ownership::DirectoryReplaced);
    assert_eq!(dir_contents(&path), owned_by_second);
    assert_eq!(second.high_water(), 150);
    second.persist_high_water(160, LEADER_EPOCH).await.unwrap();
}

#[tokio::test]
async fn a_symlinked_path_pointed_elsewhere_stops_acknowledging() {
    let tmp = tempfile::tempdir().unwrap();
    let real_a = tmp.path().join("a");
    let real_b = tmp.path().join("b");
    let link = tmp.path().join("current");
    std::os::unix::fs::symlink(&real_a, &link).unwrap();
    std::fs::create_dir(&real_a).unwrap();
    std::fs::set_permissions(&real_a, std::fs::Permissions::from_mode(0o700)).unwrap();
    let driver = FileDriver::open_or_init(&link).unwrap();
    driver.persist_high_water(100, LEADER_EPOCH).await.unwrap();
    assert!(real_a.join("state").exists(), "writes land in the real dir");

    std::fs::create_dir(&real_b).unwrap();
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&real_b, &link).unwrap();
    let err = driver
        .persist_high_water(200, LEADER_EPOCH)
        .await
        .unwrap_err();
    assert_eq!(displaced(&err), Ownership::DirectoryReplaced);
    assert!(!real_b.join("state").exists());
}

#[tokio::test]
async fn a_removed_directory_stops_acknowledging() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("oracle");
    let driver = FileDriver::open_or_init(&path).unwrap();
    driver.persist_high_water(100, LEADER_EPOCH).await.unwrap();
    std::fs::remove_dir_all(&path).unwrap();
    let err = driver
        .advance_dense(&common::key("orders"), 5, LEADER_EPOCH)
        .await
        .unwrap_err();
    assert_eq!(displaced(&err), Ownership::DirectoryReplaced);
    assert!(!path.exists());
}

#[tokio::test]
async fn an_intact_directory_keeps_acknowledging_after_an_unrelated_rename_nearby() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("oracle");
    let driver: Arc<FileDriver> = FileDriver::open_or_init(&path).unwrap();
    std::fs::write(tmp.path().join("x"), b"").unwrap();
    std::fs::rename(tmp.path().join("x"), tmp.path().join("y")).unwrap();
    for value in 1..=20u64 {
        assert_eq!(
            driver
                .persist_high_water(value, LEADER_EPOCH)
                .await
                .unwrap(),
            value
        );
    }
    assert!(!driver.is_poisoned());
}

// ---------------------------------------------------------------------------
// 5. Nothing planted in the directory is followed or written through.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_symlink_planted_at_a_temp_path_is_never_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("oracle");
    let victim = tmp.path().join("precious");
    std::fs::write(&victim, b"precious bytes").unwrap();
    let driver = FileDriver::open_or_init(&dir).unwrap();

    for temp in ["state.tmp", "dense.tmp", "leases.tmp"] {
        std::os::unix::fs::symlink(&victim, dir.join(temp)).unwrap();
    }
    driver.persist_high_water(100, LEADER_EPOCH).await.unwrap();
    driver
        .advance_dense(&common::key("k"), 3, LEADER_EPOCH)
        .await
        .unwrap();
    driver
        .persist_leases(&common::full_leases(), LEADER_EPOCH)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious bytes");
    for live in ["state", "dense", "leases"] {
        let meta = std::fs::symlink_metadata(dir.join(live)).unwrap();
        assert!(meta.file_type().is_file(), "{live} is a regular file");
    }
}

#[tokio::test]
async fn a_hard_link_planted_at_a_temp_path_is_never_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("oracle");
    let victim = tmp.path().join("precious");
    std::fs::write(&victim, b"precious bytes").unwrap();
    let driver = FileDriver::open_or_init(&dir).unwrap();
    std::fs::hard_link(&victim, dir.join("state.tmp")).unwrap();
    driver.persist_high_water(100, LEADER_EPOCH).await.unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious bytes");
}

#[test]
fn symlinks_in_place_of_state_files_are_refused_at_open() {
    for name in ["state", "dense", "leases", "LOCK"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("oracle");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let target = tmp.path().join("elsewhere");
        std::fs::copy(
            common::fixture_dir("full").join(if name == "LOCK" { "state" } else { name }),
            &target,
        )
        .unwrap();
        std::os::unix::fs::symlink(&target, dir.join(name)).unwrap();
        let before = std::fs::read(&target).unwrap();
        let err = FileDriver::open_or_init(&dir).expect_err(name);
        let text = common::error_chain(&err);
        assert!(
            text.contains("symbolic link") && text.contains(name),
            "{name}: {text}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), before, "{name}: target");
    }
}

#[tokio::test]
async fn a_symlinked_state_directory_works_through_its_real_path() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let driver = FileDriver::open_or_init(&link).unwrap();
    driver.persist_high_water(42, LEADER_EPOCH).await.unwrap();
    drop(driver);
    let _gate = fork_gate();
    assert_eq!(FileDriver::open_or_init(&real).unwrap().high_water(), 42);
}

// ---------------------------------------------------------------------------
// 3. Copies: nothing on one machine can stop two copies from both serving,
// but `read_state_dir` (and the CLI's inspect and export) shows what tells
// them apart.
// ---------------------------------------------------------------------------

#[test]
fn copies_of_a_directory_have_different_identities_and_one_directory_has_one() {
    let original = common::copy_fixture("full");
    let copy = common::copy_fixture("full");
    let a = tsoracle_driver_file::read_state_dir(original.path()).unwrap();
    let b = tsoracle_driver_file::read_state_dir(copy.path()).unwrap();
    assert_eq!(a.high_water, b.high_water, "equal content");
    let (a_id, b_id) = (a.identity.unwrap(), b.identity.unwrap());
    assert_ne!(a_id, b_id, "two copies tell apart");

    let link = tempfile::tempdir().unwrap();
    let via = link.path().join("via");
    std::os::unix::fs::symlink(original.path(), &via).unwrap();
    let again = tsoracle_driver_file::read_state_dir(&via).unwrap();
    assert_eq!(
        again.identity.unwrap(),
        a_id,
        "the same directory by another path"
    );
}
