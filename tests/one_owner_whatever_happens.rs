//! One owner, whatever happens to the directory while a driver runs on it:
//! `LOCK` deleted, the directory moved, replaced by a restore or a copy, its
//! path (a symbolic link) pointed elsewhere, files planted in it. In each
//! case a second driver never shares the directory with the first, the
//! first never writes into a directory it did not lock, and it stops
//! acknowledging as soon as a restart on its path would not see its writes.
//!
//! Multi-process steps re-run this binary as a child (see
//! `common/child.rs`); every step that holds a driver while a child may be
//! spawned holds the fork gate.

mod common;
use common::child;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::vfs::Ownership;
use tsoracle_driver_file::{FileDriver, FileDriverError, LEADER_EPOCH, OpenOptions};

use child::{ChildProcess, fork_gate, report};
use common::dir_contents;
use common::owner::{assert_permanent, displaced};

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

/// Copies one directory's regular files into a new private directory,
/// with its extended attributes, as `cp -a` does.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    if let Some(identity) = common::identity_xattr(from) {
        common::set_identity_xattr(to, Some(&identity));
    }
}

#[tokio::test]
async fn copies_share_their_origin_and_each_open_records_where_it_runs() {
    use tsoracle_driver_file::read_state_dir;
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    let copy = tmp.path().join("copy");
    let driver = FileDriver::open_or_init(&original).unwrap();
    driver.persist_high_water(100, LEADER_EPOCH).await.unwrap();
    let origin = driver.origin();
    drop(driver);
    let _gate = fork_gate();
    if !common::xattrs_supported_in(tmp.path()) {
        // No extended attributes: no identity, so nothing tells copies
        // apart; the oracle still serves.
        assert_eq!(origin, None);
        copy_dir(&original, &copy);
        assert_eq!(read_state_dir(&copy).unwrap().origin, None);
        assert_eq!(FileDriver::open_or_init(&copy).unwrap().high_water(), 100);
        return;
    }
    let origin = origin.expect("a new oracle gets an origin");

    let found = read_state_dir(&original).unwrap();
    assert_eq!(found.origin, Some(origin));
    let here = found.identity.unwrap();
    assert_eq!(origin.opened_in, here);

    // A copy (a backup restored beside the original) shares the origin id
    // but sits elsewhere: inspect can tell it is a copy before it runs.
    copy_dir(&original, &copy);
    let copied = read_state_dir(&copy).unwrap();
    let copied_origin = copied.origin.unwrap();
    assert_eq!(copied_origin.id, origin.id, "copies share the origin id");
    let copy_here = copied.identity.unwrap();
    assert_ne!(
        copied_origin.opened_in, copy_here,
        "the copy's identity still names the original's place"
    );

    // Opening the copy records its place, keeping the origin id.
    let on_copy = FileDriver::open_or_init(&copy).unwrap();
    let reopened = on_copy.origin().unwrap();
    assert_eq!(reopened.id, origin.id);
    assert_eq!(reopened.created_ms, origin.created_ms);
    assert_eq!(reopened.opened_in, copy_here);
    drop(on_copy);
    assert_eq!(read_state_dir(&copy).unwrap().origin, Some(reopened));
    assert_eq!(
        common::entry_names(&copy),
        ["LOCK", "state"],
        "recorded in the attribute, not in a file"
    );
    // The original is untouched by it.
    assert_eq!(read_state_dir(&original).unwrap().origin, Some(origin));
}

#[test]
fn a_directory_made_by_another_tool_is_opened_without_writing_an_identity() {
    for fixture in ["full", "highwater", "seeded"] {
        let dir = common::copy_fixture(fixture);
        let before = dir_contents(dir.path());
        let attributes = common::dir_xattrs(dir.path());
        let _gate = fork_gate();
        let driver = FileDriver::open_or_init(dir.path()).unwrap();
        assert_eq!(driver.origin(), None);
        drop(driver);
        let mut after = dir_contents(dir.path());
        if fixture == "seeded" {
            // The reference seeded directory has no LOCK; opening makes
            // the empty sentinel, as FORMAT.md's table says.
            assert_eq!(after.remove("LOCK").as_deref(), Some(&b""[..]));
        }
        assert_eq!(after, before, "{fixture}");
        assert_eq!(
            common::dir_xattrs(dir.path()),
            attributes,
            "{fixture}: no attribute set either"
        );
    }
}

#[test]
fn a_damaged_identity_is_refused_and_deleting_it_is_safe() {
    use tsoracle_driver_file::identity_record;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("oracle");
    let _gate = fork_gate();
    drop(FileDriver::open_or_init(&dir).unwrap());
    // An IDENTITY file of an earlier version, damaged (the attribute, where
    // there is one, goes first, so the file is what is read).
    let bytes = common::identity_xattr(&dir).unwrap_or_else(|| {
        identity_record::encode(&identity_record::Origin {
            id: [3; 16],
            created_ms: 1,
            opened_in: tsoracle_driver_file::vfs::DirIdentity {
                device: 0,
                inode: 0,
            },
        })
    });
    if common::identity_xattr(&dir).is_some() {
        common::set_identity_xattr(&dir, None);
    }
    let mut damaged = bytes.clone();
    damaged[9] ^= 0x01;
    std::fs::write(dir.join("IDENTITY"), &damaged).unwrap();
    match FileDriver::open_or_init(&dir) {
        Err(FileDriverError::Corrupt { path, .. }) => assert_eq!(path, dir.join("IDENTITY")),
        other => panic!("expected Corrupt IDENTITY, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(dir.join("IDENTITY")).unwrap(),
        damaged,
        "kept as found"
    );
    std::fs::remove_file(dir.join("IDENTITY")).unwrap();
    let driver = FileDriver::open_or_init(&dir).unwrap();
    assert_eq!(
        driver.origin().is_some(),
        common::xattrs_supported_in(tmp.path()),
        "a new origin for a directory without state, where it can be kept"
    );
}

#[test]
fn identity_records_round_trip_and_refuse_every_bit_flip() {
    use tsoracle_driver_file::identity_record::{self, Origin, RECORD_LEN};
    let origin = Origin {
        id: *b"0123456789abcdef",
        created_ms: 1_764_000_000_000,
        opened_in: tsoracle_driver_file::vfs::DirIdentity {
            device: 0x803,
            inode: 4242,
        },
    };
    let bytes = identity_record::encode(&origin);
    assert_eq!(bytes.len(), RECORD_LEN);
    assert_eq!(&bytes[..5], b"TSOI\x01");
    assert_eq!(identity_record::decode(&bytes), Ok(origin));
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(identity_record::decode(&flipped).is_err(), "bit {bit}");
    }
    for len in 0..bytes.len() {
        assert!(
            identity_record::decode(&bytes[..len]).is_err(),
            "cut at {len}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(identity_record::decode(&longer).is_err());
}

/// The reviewer's scenario: after `rm LOCK` a peer that knows only `LOCK`
/// takes over and acknowledges a higher value; the old driver must not
/// rename its older value over the peer's file before it notices.
#[tokio::test]
async fn a_displaced_driver_never_overwrites_a_peers_acknowledged_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let old = FileDriver::open_or_init(dir).unwrap();
    old.persist_high_water(100, LEADER_EPOCH).await.unwrap();

    std::fs::remove_file(dir.join("LOCK")).unwrap();
    let peer_lock = std::fs::File::create(dir.join("LOCK")).unwrap();
    fs2::FileExt::try_lock_exclusive(&peer_lock).expect("the peer locks the new LOCK");
    let peer_state = tsoracle_driver_file::record::encode(1000);
    std::fs::write(dir.join("state.peer"), peer_state).unwrap();
    std::fs::rename(dir.join("state.peer"), dir.join("state")).unwrap();

    let err = old.persist_high_water(200, LEADER_EPOCH).await.unwrap_err();
    assert_eq!(displaced(&err), Ownership::LockReplaced);
    let on_disk = tsoracle_driver_file::read_state_dir(dir).unwrap();
    assert_eq!(
        on_disk.high_water,
        Some(1000),
        "the peer's state was overwritten"
    );
    let err = old
        .advance_dense(&common::key("k"), 1, LEADER_EPOCH)
        .await
        .unwrap_err();
    assert_permanent(&err);
    assert!(!dir.join("dense").exists(), "nothing renamed into place");
}

// ---------------------------------------------------------------------------
// The owner check's own failures, through a filesystem that misbehaves.
// ---------------------------------------------------------------------------

mod tampered {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tsoracle_driver_file::vfs::{
        DirIdentity, Entry, LockGuard, Ownership, StdFs, Vfs, VfsDir, VfsFile,
    };

    /// `StdFs`, except that `resolve` may lead elsewhere (the path switched
    /// between resolving and opening) and the owner check may fail.
    #[derive(Debug)]
    pub struct Tampered {
        pub resolve_to: Option<PathBuf>,
        pub owner_check_fails: Arc<AtomicBool>,
    }

    impl Vfs for Tampered {
        fn probe(&self, path: &Path) -> io::Result<Entry> {
            StdFs.probe(path)
        }
        fn create_dir(&self, path: &Path) -> io::Result<()> {
            StdFs.create_dir(path)
        }
        fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
            match &self.resolve_to {
                Some(other) => Ok(other.clone()),
                None => StdFs.resolve(path),
            }
        }
        fn sync_dir(&self, path: &Path) -> io::Result<()> {
            StdFs.sync_dir(path)
        }
        fn open_dir(&self, path: &Path) -> io::Result<Box<dyn VfsDir>> {
            Ok(Box::new(TamperedDir {
                inner: StdFs.open_dir(path)?,
                owner_check_fails: Arc::clone(&self.owner_check_fails),
            }))
        }
    }

    #[derive(Debug)]
    struct TamperedDir {
        inner: Box<dyn VfsDir>,
        owner_check_fails: Arc<AtomicBool>,
    }

    impl VfsDir for TamperedDir {
        fn mode(&self) -> io::Result<Option<u32>> {
            self.inner.mode()
        }
        fn try_lock_dir(&self) -> io::Result<Option<LockGuard>> {
            self.inner.try_lock_dir()
        }
        fn try_lock_file(&self, name: &str) -> io::Result<Option<LockGuard>> {
            self.inner.try_lock_file(name)
        }
        fn probe(&self, name: &str) -> io::Result<Entry> {
            self.inner.probe(name)
        }
        fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
            self.inner.read(name)
        }
        fn create_new(&self, name: &str) -> io::Result<Box<dyn VfsFile>> {
            self.inner.create_new(name)
        }
        fn rename(&self, from: &str, to: &str) -> io::Result<()> {
            self.inner.rename(from, to)
        }
        fn sync(&self) -> io::Result<()> {
            self.inner.sync()
        }
        fn remove(&self, name: &str) -> io::Result<()> {
            self.inner.remove(name)
        }
        fn check_owner(&self, path: &Path, lock_name: &str) -> io::Result<Ownership> {
            if self.owner_check_fails.load(Ordering::SeqCst) {
                return Err(io::Error::from(io::ErrorKind::PermissionDenied));
            }
            self.inner.check_owner(path, lock_name)
        }
        fn check_lock(&self, lock_name: &str) -> io::Result<Ownership> {
            self.inner.check_lock(lock_name)
        }
        fn identity(&self) -> Option<DirIdentity> {
            self.inner.identity()
        }
        fn get_xattr(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
            self.inner.get_xattr(name)
        }
        fn set_xattr(&self, name: &str, value: &[u8]) -> io::Result<()> {
            self.inner.set_xattr(name, value)
        }
        fn remove_xattr(&self, name: &str) -> io::Result<()> {
            self.inner.remove_xattr(name)
        }
    }
}

#[test]
fn a_path_switched_while_opening_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let asked = tmp.path().join("asked");
    let other = tmp.path().join("other");
    for dir in [&asked, &other] {
        std::fs::create_dir(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let vfs = tampered::Tampered {
        resolve_to: Some(other),
        owner_check_fails: Default::default(),
    };
    let err = OpenOptions::new()
        .vfs(vfs)
        .open_or_init(&asked)
        .unwrap_err();
    let text = common::error_chain(&err);
    assert!(text.contains("changed while it was being opened"), "{text}");
}

#[tokio::test]
async fn an_owner_check_that_cannot_run_stops_acknowledging() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("oracle");
    let fails = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let vfs = tampered::Tampered {
        resolve_to: None,
        owner_check_fails: Arc::clone(&fails),
    };
    let driver = OpenOptions::new().vfs(vfs).open_or_init(&dir).unwrap();
    driver.persist_high_water(10, LEADER_EPOCH).await.unwrap();

    // The check cannot run (a parent was made unreadable, say): nothing
    // more is acknowledged, for good.
    fails.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = driver
        .persist_high_water(20, LEADER_EPOCH)
        .await
        .unwrap_err();
    assert_permanent(&err);
    match FileDriverError::in_consensus(&err) {
        Some(FileDriverError::Io { op, .. }) => {
            assert_eq!(*op, tsoracle_driver_file::FileOp::CheckOwner)
        }
        other => panic!("expected Io(CheckOwner), got {other:?}"),
    }
    // Later writes name it as the first failure.
    fails.store(false, std::sync::atomic::Ordering::SeqCst);
    let later = driver
        .persist_high_water(30, LEADER_EPOCH)
        .await
        .unwrap_err();
    match FileDriverError::in_consensus(&later) {
        Some(FileDriverError::Poisoned { first, .. }) => {
            assert!(matches!(first.as_ref(), FileDriverError::Io { .. }))
        }
        other => panic!("expected Poisoned, got {other:?}"),
    }
    assert_eq!(driver.high_water(), 10);
    drop(driver);

    // And an open whose check cannot run is refused.
    fails.store(true, std::sync::atomic::Ordering::SeqCst);
    let vfs = tampered::Tampered {
        resolve_to: None,
        owner_check_fails: Arc::clone(&fails),
    };
    match OpenOptions::new().vfs(vfs).open_or_init(&dir) {
        Err(FileDriverError::Io { op, .. }) => {
            assert_eq!(op, tsoracle_driver_file::FileOp::CheckOwner);
        }
        other => panic!("expected Io(CheckOwner) at open, got {other:?}"),
    }
}
