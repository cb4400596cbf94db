//! A state directory holds exactly what upstream's tools accept (`LOCK`,
//! empty, `state`, `dense`, `leases`): the identity lives in the
//! directory's extended attribute `user.tsoracle.identity`, never in a file.
//!
//! - On the real filesystem: what a driver, a seed and `init_from` leave
//!   after a clean stop; an `IDENTITY` file of an earlier version carried
//!   into the attribute and removed (and its place updated when it names
//!   another directory); a damaged attribute refused, naming the directory,
//!   and removing it safe. Where the filesystem under the temp directory has
//!   no user extended attributes, each test asserts the fallback instead (no
//!   identity, the file still removed): it is checked, not skipped.
//! - On `SimFs`: a filesystem without extended attributes; a failed
//!   attribute write, which never stops an open; a damaged attribute; and a
//!   power cut at every operation of carrying an `IDENTITY` file over, after
//!   which the identity is in the file, the attribute or both, never in
//!   neither.

mod common;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::identity_record::{self, Origin};
use tsoracle_driver_file::vfs::sim::{OpKind, SimFs};
use tsoracle_driver_file::{
    FileDriver, FileDriverError, IDENTITY_FILE, IDENTITY_XATTR, LEADER_EPOCH, OpenOptions,
    OriginSource, Seed, read_state_dir, record,
};

use common::{
    dir_contents, dir_xattrs, entry_names, full_leases, identity_xattr, key, set_identity_xattr,
    xattrs_supported_in,
};

/// What upstream's `tsoracle export file` accepts, at most.
const UPSTREAM_FILES: [&str; 4] = ["LOCK", "dense", "leases", "state"];

/// Asserts that `dir` holds exactly `names` (sorted), all of them among
/// upstream's four, with an empty `LOCK`.
fn assert_upstream_layout(dir: &Path, names: &[&str]) {
    assert_eq!(entry_names(dir), names, "{}", dir.display());
    assert!(names.iter().all(|name| UPSTREAM_FILES.contains(name)));
    assert_eq!(
        std::fs::read(dir.join("LOCK")).expect("LOCK"),
        b"",
        "LOCK is empty"
    );
}

/// Asserts what the identity of `dir`, where a driver of this crate made a
/// new oracle whose origin was `origin`, looks like: in the attribute when
/// the filesystem has them, nowhere otherwise.
fn assert_identity(dir: &Path, origin: Option<Origin>, supported: bool) {
    let found = read_state_dir(dir).expect("read_state_dir");
    assert!(!found.identity_file);
    if supported {
        let origin = origin.expect("a new oracle gets an origin");
        let stored = identity_xattr(dir).expect("the identity attribute is set");
        assert_eq!(identity_record::decode(&stored), Ok(origin));
        assert_eq!(found.origin, Some(origin));
        assert_eq!(found.origin_source, OriginSource::Xattr);
        let here = found.identity.expect("Unix has device and inode");
        assert_eq!(origin.opened_in, here);
    } else {
        assert_eq!(origin, None, "no extended attributes, no identity");
        assert_eq!(found.origin, None);
        assert_eq!(found.origin_source, OriginSource::Unsupported);
    }
}

fn private_dir(path: &Path) {
    std::fs::create_dir(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
}

// ---------------------------------------------------------------------------
// The real filesystem.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_driver_stopped_cleanly_leaves_exactly_lock_state_dense_and_leases() {
    let tmp = tempfile::tempdir().unwrap();
    let supported = xattrs_supported_in(tmp.path());
    let dir = tmp.path().join("oracle");
    let driver = FileDriver::open_or_init(&dir).unwrap();
    let origin = driver.origin();
    assert_upstream_layout(&dir, &["LOCK"]);
    driver
        .persist_high_water(1_764_000_000_000, LEADER_EPOCH)
        .await
        .unwrap();
    driver
        .advance_dense(&key("orders"), 5, LEADER_EPOCH)
        .await
        .unwrap();
    driver
        .persist_leases(&full_leases(), LEADER_EPOCH)
        .await
        .unwrap();
    drop(driver);
    assert_upstream_layout(&dir, &UPSTREAM_FILES);
    assert_identity(&dir, origin, supported);

    // Reopened and stopped again: still the same four files and the same
    // identity (an open of its own directory changes nothing).
    let before = dir_xattrs(&dir);
    let reopened = FileDriver::open_or_init(&dir).unwrap();
    assert_eq!(reopened.origin(), origin);
    drop(reopened);
    assert_upstream_layout(&dir, &UPSTREAM_FILES);
    assert_eq!(dir_xattrs(&dir), before);
}

#[test]
fn seeding_leaves_exactly_upstreams_files() {
    let tmp = tempfile::tempdir().unwrap();
    let supported = xattrs_supported_in(tmp.path());

    let seeded = tmp.path().join("seeded");
    FileDriver::init_seeded(&seeded, 1_700_000_000_000).unwrap();
    assert_upstream_layout(&seeded, &["LOCK", "state"]);
    let origin = read_state_dir(&seeded).unwrap().origin;
    assert_identity(&seeded, origin, supported);

    let from = tmp.path().join("from");
    let seed = Seed::new(1_764_000_555_000)
        .with_counter(key("orders"), 42)
        .with_leases(full_leases());
    FileDriver::init_from(&from, &seed).unwrap();
    assert_upstream_layout(&from, &UPSTREAM_FILES);
    let origin = read_state_dir(&from).unwrap().origin;
    assert_identity(&from, origin, supported);
}

/// Turns a directory this version made into what an earlier one left: the
/// identity in an `IDENTITY` file (0600), none in the attribute. Returns
/// the origin written. Where the filesystem has no extended attributes the
/// record is made up, recording `dir`'s own place.
fn make_legacy(dir: &Path, supported: bool) -> Origin {
    let origin = if supported {
        let bytes = identity_xattr(dir).expect("an identity to move into a file");
        set_identity_xattr(dir, None);
        identity_record::decode(&bytes).unwrap()
    } else {
        let here = read_state_dir(dir).unwrap().identity.unwrap();
        Origin {
            id: *b"earlier-version!",
            created_ms: 1_764_000_000_000,
            opened_in: here,
        }
    };
    let path = dir.join(IDENTITY_FILE);
    std::fs::write(&path, identity_record::encode(&origin)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    origin
}

#[tokio::test]
async fn an_identity_file_of_an_earlier_version_is_carried_into_the_attribute_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let supported = xattrs_supported_in(tmp.path());
    let dir = tmp.path().join("oracle");
    let driver = FileDriver::open_or_init(&dir).unwrap();
    driver.persist_high_water(100, LEADER_EPOCH).await.unwrap();
    drop(driver);
    let origin = make_legacy(&dir, supported);

    // Before the next open, inspect reads it from the file and says so.
    let found = read_state_dir(&dir).unwrap();
    assert_eq!(found.origin, Some(origin));
    assert_eq!(found.origin_source, OriginSource::IdentityFile);
    assert!(found.identity_file);
    assert_eq!(entry_names(&dir), ["IDENTITY", "LOCK", "state"]);

    let driver = FileDriver::open_or_init(&dir).unwrap();
    assert_upstream_layout(&dir, &["LOCK", "state"]);
    assert_eq!(driver.high_water(), 100, "the state is untouched");
    if supported {
        assert_eq!(driver.origin(), Some(origin), "the same identity");
        assert_eq!(identity_xattr(&dir), Some(identity_record::encode(&origin)));
    } else {
        // No extended attributes: the file goes so that upstream's tools
        // accept the directory, and the identity with it.
        assert_eq!(driver.origin(), None);
        assert_eq!(identity_xattr(&dir), None);
    }
    drop(driver);
    assert_identity(&dir, supported.then_some(origin), supported);
}

#[test]
fn an_identity_file_naming_another_directory_is_carried_with_this_place() {
    let tmp = tempfile::tempdir().unwrap();
    let supported = xattrs_supported_in(tmp.path());
    let dir = tmp.path().join("restored");
    FileDriver::init_seeded(&dir, 1_700_000_000_000).unwrap();
    let here = read_state_dir(&dir).unwrap().identity.unwrap();
    if supported {
        set_identity_xattr(&dir, None);
    }
    // A restore of an earlier version's backup: its IDENTITY names the
    // directory it was taken from.
    let elsewhere = Origin {
        id: *b"restored-backup!",
        created_ms: 1_700_000_000_000,
        opened_in: tsoracle_driver_file::vfs::DirIdentity {
            device: here.device,
            inode: here.inode + 1,
        },
    };
    std::fs::write(dir.join(IDENTITY_FILE), identity_record::encode(&elsewhere)).unwrap();

    let driver = FileDriver::open_or_init(&dir).unwrap();
    assert_upstream_layout(&dir, &["LOCK", "state"]);
    if supported {
        let moved = Origin {
            opened_in: here,
            ..elsewhere
        };
        assert_eq!(driver.origin(), Some(moved));
        assert_eq!(identity_xattr(&dir), Some(identity_record::encode(&moved)));
    } else {
        assert_eq!(driver.origin(), None);
    }
}

#[test]
fn a_damaged_identity_attribute_is_refused_naming_the_directory_and_removing_it_is_safe() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("oracle");
    drop(FileDriver::open_or_init(&dir).unwrap());
    if !xattrs_supported_in(tmp.path()) {
        // Nothing can be damaged; the fallback is what there is.
        assert_identity(&dir, None, false);
        assert_eq!(FileDriver::open_or_init(&dir).unwrap().origin(), None);
        return;
    }
    let mut bytes = identity_xattr(&dir).unwrap();
    bytes[9] ^= 0x01;
    set_identity_xattr(&dir, Some(&bytes));
    let files = dir_contents(&dir);
    for err in [
        FileDriver::open_or_init(&dir).unwrap_err(),
        read_state_dir(&dir).unwrap_err(),
    ] {
        let text = common::error_chain(&err);
        let hint = err.hint().expect("the remedy");
        match err {
            FileDriverError::CorruptIdentity { dir: named, .. } => assert_eq!(named, dir),
            other => panic!("expected CorruptIdentity, got {other:?}"),
        }
        assert!(text.contains(&dir.display().to_string()), "{text}");
        assert!(text.contains(IDENTITY_XATTR), "{text}");
        assert!(hint.contains("setfattr -x"), "{hint}");
        assert!(text.contains("crc mismatch"), "the defect is named: {text}");
    }
    assert_eq!(dir_contents(&dir), files, "nothing written");
    assert_eq!(identity_xattr(&dir), Some(bytes), "nothing repaired");

    // Removing it is safe: a directory without state gets a new origin.
    set_identity_xattr(&dir, None);
    let driver = FileDriver::open_or_init(&dir).unwrap();
    let origin = driver.origin().expect("a new origin");
    assert_eq!(
        identity_xattr(&dir).map(|bytes| identity_record::decode(&bytes)),
        Some(Ok(origin))
    );
}

#[test]
fn a_directory_with_state_and_no_identity_is_opened_without_setting_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("other-tool");
    private_dir(&dir);
    std::fs::write(dir.join("state"), record::encode(1_764_000_000_123)).unwrap();
    std::fs::write(dir.join("LOCK"), b"").unwrap();
    let (files, xattrs) = (dir_contents(&dir), dir_xattrs(&dir));
    let driver = FileDriver::open_or_init(&dir).unwrap();
    assert_eq!(driver.origin(), None);
    drop(driver);
    assert_eq!(dir_contents(&dir), files);
    assert_eq!(dir_xattrs(&dir), xattrs, "no attribute set");
    assert_eq!(
        read_state_dir(&dir).unwrap().origin_source,
        if xattrs_supported_in(tmp.path()) {
            OriginSource::Missing
        } else {
            OriginSource::Unsupported
        }
    );
}

// ---------------------------------------------------------------------------
// SimFs.
// ---------------------------------------------------------------------------

fn sim_dir() -> PathBuf {
    PathBuf::from("/srv/oracle")
}

fn sim() -> SimFs {
    SimFs::new()
}

/// The names of the visible files of SimFs directory `dir`.
fn sim_entries(fs: &SimFs, dir: &Path) -> Vec<String> {
    fs.visible_files()
        .keys()
        .filter(|path| path.parent() == Some(dir))
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn sim_identity(fs: &SimFs, dir: &Path) -> Option<Origin> {
    fs.xattrs(dir)
        .get(IDENTITY_XATTR)
        .map(|bytes| identity_record::decode(bytes).expect("the attribute decodes"))
}

/// A made-up origin, as SimFs records places (device and inode 0).
fn sim_origin() -> Origin {
    Origin {
        id: *b"sim-earlier-vers",
        created_ms: 1_764_000_000_000,
        opened_in: tsoracle_driver_file::vfs::DirIdentity {
            device: 0,
            inode: 0,
        },
    }
}

#[tokio::test]
async fn without_extended_attributes_the_driver_runs_without_an_identity() {
    let fs = sim();
    fs.set_xattrs_supported(false);
    let dir = sim_dir();
    let driver = OpenOptions::new()
        .vfs(fs.clone())
        .open_or_init(&dir)
        .unwrap();
    assert_eq!(driver.origin(), None);
    driver.persist_high_water(500, LEADER_EPOCH).await.unwrap();
    drop(driver);
    assert_eq!(sim_entries(&fs, &dir), ["LOCK", "state"]);
    let found = OpenOptions::new()
        .vfs(fs.clone())
        .read_state_dir(&dir)
        .unwrap();
    assert_eq!(found.origin, None);
    assert_eq!(found.origin_source, OriginSource::Unsupported);

    // An earlier version's IDENTITY file there is removed, durably: the
    // directory is then one upstream's tools accept.
    fs.put_file(
        &dir.join(IDENTITY_FILE),
        &identity_record::encode(&sim_origin()),
    )
    .expect("put a file");
    let found = OpenOptions::new()
        .vfs(fs.clone())
        .read_state_dir(&dir)
        .unwrap();
    assert_eq!(found.origin, Some(sim_origin()));
    assert_eq!(found.origin_source, OriginSource::IdentityFile);
    let from = fs.op_count();
    let driver = OpenOptions::new()
        .vfs(fs.clone())
        .open_or_init(&dir)
        .unwrap();
    assert_eq!(driver.origin(), None);
    assert_eq!(driver.high_water(), 500);
    let ops: Vec<_> = fs.op_log().into_iter().skip(from as usize).collect();
    let removed = ops
        .iter()
        .position(|op| op.kind == OpKind::Remove && op.name() == IDENTITY_FILE)
        .expect("IDENTITY removed");
    assert_eq!(ops[removed + 1].kind, OpKind::SyncDir, "{ops:?}");
    assert!(!ops.iter().any(|op| op.kind == OpKind::SetXattr));
    drop(driver);
    assert_eq!(sim_entries(&fs, &dir), ["LOCK", "state"]);
}

#[tokio::test]
async fn a_failed_attribute_write_never_stops_an_open() {
    for kind in [
        io::ErrorKind::StorageFull,
        io::ErrorKind::PermissionDenied,
        io::ErrorKind::QuotaExceeded,
        io::ErrorKind::ReadOnlyFilesystem,
        io::ErrorKind::Other,
    ] {
        let fs = sim();
        let dir = sim_dir();
        fs.fail_next(OpKind::SetXattr, Some("oracle"), kind);
        let driver = OpenOptions::new()
            .vfs(fs.clone())
            .open_or_init(&dir)
            .unwrap();
        assert_eq!(fs.pending_faults(), 0, "{kind:?}: the write was tried");
        assert_eq!(driver.origin(), None, "{kind:?}: not recorded");
        assert_eq!(
            driver.persist_high_water(7, LEADER_EPOCH).await.unwrap(),
            7,
            "{kind:?}: the oracle serves"
        );
        drop(driver);
        assert_eq!(sim_identity(&fs, &dir), None);
        // The directory now holds state: another open does not make one up.
        let driver = OpenOptions::new()
            .vfs(fs.clone())
            .open_or_init(&dir)
            .unwrap();
        assert_eq!(driver.origin(), None);
        drop(driver);
        assert_eq!(sim_entries(&fs, &dir), ["LOCK", "state"]);
    }

    // An earlier version's file whose carrying fails stays where it is, and
    // the next open carries it.
    let fs = sim();
    let dir = sim_dir();
    drop(
        OpenOptions::new()
            .vfs(fs.clone())
            .open_or_init(&dir)
            .unwrap(),
    );
    fs.put_xattr(&dir, IDENTITY_XATTR, None)
        .expect("put an attribute");
    fs.put_file(
        &dir.join(IDENTITY_FILE),
        &identity_record::encode(&sim_origin()),
    )
    .expect("put a file");
    fs.fail_next(OpKind::SetXattr, Some("oracle"), io::ErrorKind::StorageFull);
    let driver = OpenOptions::new()
        .vfs(fs.clone())
        .open_or_init(&dir)
        .unwrap();
    assert_eq!(driver.origin(), Some(sim_origin()), "still in the file");
    drop(driver);
    assert_eq!(sim_entries(&fs, &dir), ["IDENTITY", "LOCK"]);
    let driver = OpenOptions::new()
        .vfs(fs.clone())
        .open_or_init(&dir)
        .unwrap();
    assert_eq!(driver.origin(), Some(sim_origin()));
    drop(driver);
    assert_eq!(sim_entries(&fs, &dir), ["LOCK"]);
    assert_eq!(sim_identity(&fs, &dir), Some(sim_origin()));
}

#[test]
fn an_identity_file_that_cannot_be_removed_is_left_for_the_next_open() {
    let fs = sim_legacy();
    let dir = sim_dir();
    fs.fail_next(
        OpKind::Remove,
        Some(IDENTITY_FILE),
        io::ErrorKind::PermissionDenied,
    );
    let driver = OpenOptions::new()
        .vfs(fs.clone())
        .open_or_init(&dir)
        .unwrap();
    assert_eq!(fs.pending_faults(), 0, "the unlink was tried");
    assert_eq!(driver.origin(), Some(sim_origin()));
    drop(driver);
    assert_eq!(sim_entries(&fs, &dir), ["IDENTITY", "LOCK", "state"]);
    assert_eq!(sim_identity(&fs, &dir), Some(sim_origin()), "carried");
    drop(
        OpenOptions::new()
            .vfs(fs.clone())
            .open_or_init(&dir)
            .unwrap(),
    );
    assert_eq!(sim_entries(&fs, &dir), ["LOCK", "state"]);
}

#[test]
fn a_failed_directory_fsync_while_carrying_stops_the_open_and_keeps_the_file() {
    let dir = sim_dir();
    let reference = sim_legacy();
    drop(
        OpenOptions::new()
            .vfs(reference.clone())
            .open_or_init(&dir)
            .unwrap(),
    );
    let log = reference.op_log();
    let set = log
        .iter()
        .position(|op| op.kind == OpKind::SetXattr)
        .expect("the attribute is set");
    let fsync = set + 1;
    assert_eq!(log[fsync].kind, OpKind::SyncDir, "{log:?}");

    let fs = sim_legacy();
    fs.fail_at(fsync as u64, io::ErrorKind::Other);
    match OpenOptions::new().vfs(fs.clone()).open_or_init(&dir) {
        Err(FileDriverError::Io { op, path, .. }) => {
            assert_eq!(op, tsoracle_driver_file::FileOp::FsyncDir);
            assert_eq!(path, dir);
        }
        other => panic!("expected Io(FsyncDir), got {other:?}"),
    }
    assert!(
        sim_entries(&fs, &dir).contains(&IDENTITY_FILE.to_owned()),
        "not unlinked before the attribute was durable"
    );
}

#[test]
fn an_attribute_that_cannot_be_read_is_refused() {
    let fs = sim();
    let dir = sim_dir();
    drop(
        OpenOptions::new()
            .vfs(fs.clone())
            .open_or_init(&dir)
            .unwrap(),
    );
    fs.fail_next(OpKind::GetXattr, Some("oracle"), io::ErrorKind::Other);
    match OpenOptions::new().vfs(fs.clone()).open_or_init(&dir) {
        Err(FileDriverError::Io { op, path, .. }) => {
            assert_eq!(op, tsoracle_driver_file::FileOp::ReadIdentity);
            assert_eq!(path, dir);
        }
        other => panic!("expected Io(ReadIdentity), got {other:?}"),
    }
}

#[test]
fn a_damaged_identity_attribute_is_refused_on_simfs_too() {
    let fs = sim();
    let dir = sim_dir();
    drop(
        OpenOptions::new()
            .vfs(fs.clone())
            .open_or_init(&dir)
            .unwrap(),
    );
    for damaged in [&b""[..], b"TSOI", &[0u8; identity_record::RECORD_LEN][..]] {
        fs.put_xattr(&dir, IDENTITY_XATTR, Some(damaged))
            .expect("put an attribute");
        let files = fs.visible_files();
        match OpenOptions::new().vfs(fs.clone()).open_or_init(&dir) {
            Err(FileDriverError::CorruptIdentity { dir: named, .. }) => assert_eq!(named, dir),
            other => panic!("expected CorruptIdentity for {damaged:?}, got {other:?}"),
        }
        assert!(matches!(
            OpenOptions::new().vfs(fs.clone()).read_state_dir(&dir),
            Err(FileDriverError::CorruptIdentity { .. })
        ));
        assert_eq!(fs.visible_files(), files, "nothing written");
        assert_eq!(
            fs.xattrs(&dir).get(IDENTITY_XATTR).map(Vec::as_slice),
            Some(damaged),
            "nothing repaired"
        );
    }
}

/// A SimFs directory as an earlier version left it: state, `LOCK` and an
/// `IDENTITY` file, all durable.
fn sim_legacy() -> SimFs {
    let fs = sim();
    let dir = sim_dir();
    fs.put_dir(&dir).expect("put a directory");
    fs.put_file(&dir.join("LOCK"), b"").expect("put a file");
    fs.put_file(&dir.join("state"), &record::encode(1_764_000_000_000))
        .expect("put a file");
    fs.put_file(
        &dir.join(IDENTITY_FILE),
        &identity_record::encode(&sim_origin()),
    )
    .expect("put a file");
    fs
}

#[test]
fn carrying_an_identity_file_over_survives_a_power_cut_at_every_step() {
    let dir = sim_dir();
    let reference = sim_legacy();
    let from = reference.op_count();
    let driver = OpenOptions::new()
        .vfs(reference.clone())
        .open_or_init(&dir)
        .unwrap();
    assert_eq!(driver.origin(), Some(sim_origin()));
    drop(driver);
    let total = reference.op_count();
    assert_eq!(sim_entries(&reference, &dir), ["LOCK", "state"]);
    assert_eq!(sim_identity(&reference, &dir), Some(sim_origin()));
    // The order: the attribute, a directory fsync, the unlink, an fsync.
    let log = reference.op_log();
    let set = log
        .iter()
        .position(|op| op.kind == OpKind::SetXattr)
        .expect("the attribute is set");
    let unlink = log
        .iter()
        .position(|op| op.kind == OpKind::Remove && op.name() == IDENTITY_FILE)
        .expect("the file is removed");
    assert!(set < unlink, "{log:?}");
    assert!(
        log[set..unlink].iter().any(|op| op.kind == OpKind::SyncDir),
        "fsync between: {log:?}"
    );
    assert_eq!(log[unlink + 1].kind, OpKind::SyncDir, "{log:?}");

    let legacy_file = dir.join(IDENTITY_FILE);
    let mut images = 0;
    for crash in from..total {
        let fs = sim_legacy();
        fs.crash_at(crash);
        let _ = OpenOptions::new().vfs(fs.clone()).open_or_init(&dir);
        for image in fs.crash_images() {
            images += 1;
            let in_file = image
                .files
                .get(&legacy_file)
                .map(|bytes| identity_record::decode(bytes).expect("the file is whole"));
            let in_xattr = image
                .xattrs
                .get(&dir)
                .and_then(|xattrs| xattrs.get(IDENTITY_XATTR))
                .map(|bytes| identity_record::decode(bytes).expect("the attribute is whole"));
            assert!(
                in_file.is_some() || in_xattr.is_some(),
                "crash at op {crash}, image {}: the identity is in neither",
                image.label
            );
            for found in [in_file, in_xattr].into_iter().flatten() {
                assert_eq!(found, sim_origin(), "image {}", image.label);
            }
            // The next boot finishes the move.
            let booted = SimFs::from_image(&image).expect("a crash image boots");
            let driver = OpenOptions::new()
                .vfs(booted.clone())
                .open_or_init(&dir)
                .unwrap_or_else(|err| panic!("image {}: {err}", image.label));
            assert_eq!(driver.origin(), Some(sim_origin()), "image {}", image.label);
            assert_eq!(driver.high_water(), 1_764_000_000_000);
            drop(driver);
            assert_eq!(sim_entries(&booted, &dir), ["LOCK", "state"]);
            assert_eq!(sim_identity(&booted, &dir), Some(sim_origin()));
        }
    }
    assert!(images > 0);
}

#[test]
fn a_new_oracle_on_simfs_records_its_identity_durably_before_serving() {
    let fs = sim();
    let dir = sim_dir();
    let driver = OpenOptions::new()
        .vfs(fs.clone())
        .open_or_init(&dir)
        .unwrap();
    let origin = driver.origin().expect("a new origin");
    // Durable already: a power cut now keeps it.
    fs.crash_at(fs.op_count());
    for image in fs.crash_images() {
        let stored = image.xattrs[&dir][IDENTITY_XATTR].clone();
        assert_eq!(
            identity_record::decode(&stored),
            Ok(origin),
            "{}",
            image.label
        );
    }
    drop(driver);
}
