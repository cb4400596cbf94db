//! Private by default, and openable where real services live: new
//! directories are 0700 and new files 0600 whatever the umask; a state
//! directory others may write is refused with the fix; open fsyncs what the
//! protocol needs (the state directory, its real parent) and tolerates what
//! PostgreSQL tolerates on a parent: `EACCES` (a 0711 home directory) and
//! `EINVAL` (no directory fsync on this filesystem).

mod common;
use common::child;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::vfs::sim::{OpKind, SimFs};
use tsoracle_driver_file::vfs::{Entry, StdFs, Vfs, VfsDir};
use tsoracle_driver_file::{FileDriver, FileDriverError, FileOp, LEADER_EPOCH, OpenOptions};

use child::{fork_gate, report};

const ROLE_VAR: &str = "TSORACLE_PRIVATE_TEST_ROLE";
const DIR_VAR: &str = "TSORACLE_PRIVATE_TEST_DIR";
const CHILD_TEST: &str = "child_process_role";
const EINVAL: i32 = 22;

/// The child: sets up its process-wide state (umask), opens the directory,
/// writes every file, and reports.
#[test]
fn child_process_role() {
    let (Ok(role), Ok(dir)) = (std::env::var(ROLE_VAR), std::env::var(DIR_VAR)) else {
        return;
    };
    let umask = match role.as_str() {
        "umask-0" => 0o000,
        "umask-777" => 0o777,
        "plain" => 0o022,
        other => panic!("unknown role {other}"),
    };
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        match FileDriver::open_or_init(&dir) {
            Ok(driver) => {
                driver.persist_high_water(7, LEADER_EPOCH).await.unwrap();
                let key = tsoracle_core::SeqKey::try_new("k").unwrap();
                driver.advance_dense(&key, 1, LEADER_EPOCH).await.unwrap();
                driver.persist_leases(&[], LEADER_EPOCH).await.unwrap();
                report(&format!("ok {}", driver.high_water()));
            }
            Err(err) => report(&format!("error {err}")),
        }
    });
}

fn run_child(role: &str, dir: &Path, uid: Option<u32>) -> String {
    let gate = fork_gate();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .env(DIR_VAR, dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    let output = command.output().expect("run child");
    drop(gate);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.split_once(child::REPORT).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("the child reported nothing: {stdout}"));
    line.trim().to_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

// ---------------------------------------------------------------------------
// 4. Modes.
// ---------------------------------------------------------------------------

#[test]
fn new_directories_are_0700_and_files_0600_whatever_the_umask() {
    for role in ["umask-0", "umask-777", "plain"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/oracle");
        assert_eq!(run_child(role, &dir, None), "ok 7", "{role}");
        for created in ["a", "a/b", "a/b/oracle"] {
            assert_eq!(mode(&tmp.path().join(created)), 0o700, "{role}: {created}");
        }
        for file in ["LOCK", "state", "dense", "leases"] {
            assert_eq!(mode(&dir.join(file)), 0o600, "{role}: {file}");
        }
    }
}

#[test]
fn a_directory_others_may_write_is_refused_with_the_fix_and_left_untouched() {
    for bad in [0o775, 0o757, 0o777, 0o722] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("oracle");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(bad)).unwrap();
        let err = FileDriver::open_or_init(&dir).expect_err("refused");
        match &err {
            FileDriverError::InsecurePermissions {
                dir: named, mode, ..
            } => {
                assert_eq!(named, &dir);
                assert_eq!(*mode, bad);
            }
            other => panic!("{bad:o}: expected InsecurePermissions, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(&format!("{bad:04o}")), "{text}");
        let hint = err.hint().expect("the remedy");
        assert!(hint.contains("chmod go-w"), "{hint}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "{bad:o}: nothing created"
        );
        assert!(FileDriver::init_seeded(&dir, 5).is_err());
    }
    for fine in [0o700, 0o750, 0o755, 0o711] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("oracle");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(fine)).unwrap();
        let _gate = fork_gate();
        FileDriver::open_or_init(&dir).unwrap_or_else(|err| panic!("{fine:o}: {err}"));
    }
}

// ---------------------------------------------------------------------------
// 6. Parents: what is fsynced, and what is tolerated.
// ---------------------------------------------------------------------------

/// The service user `nobody` below a root-owned 0711 directory it may
/// traverse but not read: open must work (it fsyncs the state directory,
/// and tolerates `EACCES` on the parent).
#[test]
fn open_works_below_a_parent_the_service_user_cannot_read() {
    const NOBODY: u32 = 65534;
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to run a child as another user");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    // The child runs this binary as nobody: every directory above it must
    // be traversable by others.
    if exe
        .ancestors()
        .skip(1)
        .any(|dir| dir.exists() && mode(dir) & 0o001 == 0)
    {
        eprintln!("skipped: {} is not reachable by other users", exe.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o711)).unwrap();
    let dir = home.join("oracle");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(
        &dir,
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        Some(nix::unistd::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    assert_eq!(run_child("plain", &dir, Some(NOBODY)), "ok 7");
    assert_eq!(std::fs::metadata(dir.join("state")).unwrap().uid(), NOBODY);
}

#[tokio::test]
async fn a_filesystem_without_directory_fsync_still_serves() {
    let fs = SimFs::new();
    // Every directory fsync answers EINVAL: the parent's at open, the state
    // directory's at open, and one per batch.
    for _ in 0..16 {
        fs.fail_next_os(OpKind::SyncDir, None, EINVAL);
    }
    let driver = OpenOptions::new()
        .vfs(fs.clone())
        .open_or_init("/oracle")
        .unwrap();
    for value in [10, 20, 30] {
        assert_eq!(
            driver
                .persist_high_water(value, LEADER_EPOCH)
                .await
                .unwrap(),
            value
        );
    }
    assert!(!driver.is_poisoned());
    drop(driver);
    let reopened = OpenOptions::new()
        .vfs(fs.clone())
        .open_or_init("/oracle")
        .unwrap();
    assert_eq!(reopened.high_water(), 30);
}

#[test]
fn permission_denied_on_the_parent_of_an_existing_directory_is_tolerated() {
    let fs = SimFs::new();
    drop(
        OpenOptions::new()
            .vfs(fs.clone())
            .open_or_init("/srv/oracle")
            .unwrap(),
    );
    fs.fail_next(
        OpKind::SyncDir,
        Some("srv"),
        std::io::ErrorKind::PermissionDenied,
    );
    OpenOptions::new()
        .vfs(fs.clone())
        .open_or_init("/srv/oracle")
        .unwrap();
    assert_eq!(fs.pending_faults(), 0, "the parent fsync was attempted");
}

#[test]
fn an_io_error_on_the_parent_of_a_new_directory_fails_the_open() {
    let fs = SimFs::new();
    fs.fail_next(OpKind::SyncDir, Some("srv"), std::io::ErrorKind::Other);
    let err = OpenOptions::new()
        .vfs(fs)
        .open_or_init("/srv/oracle")
        .unwrap_err();
    match err {
        FileDriverError::Io { op, path, .. } => {
            assert_eq!(op, FileOp::FsyncDir);
            assert_eq!(path, Path::new("/srv"));
        }
        other => panic!("expected Io(FsyncDir), got {other:?}"),
    }
}

/// `StdFs`, recording every directory fsync by path.
#[derive(Debug, Default)]
struct Recording {
    synced: Mutex<Vec<PathBuf>>,
}

#[derive(Debug)]
struct RecordingFs(Arc<Recording>);

impl Vfs for RecordingFs {
    fn probe(&self, path: &Path) -> std::io::Result<Entry> {
        StdFs.probe(path)
    }
    fn create_dir(&self, path: &Path) -> std::io::Result<()> {
        StdFs.create_dir(path)
    }
    fn resolve(&self, path: &Path) -> std::io::Result<PathBuf> {
        StdFs.resolve(path)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        self.0.synced.lock().unwrap().push(path.to_path_buf());
        StdFs.sync_dir(path)
    }
    fn open_dir(&self, path: &Path) -> std::io::Result<Box<dyn VfsDir>> {
        StdFs.open_dir(path)
    }
}

#[test]
fn a_symlinked_state_directory_has_its_real_parent_fsynced_and_nothing_above() {
    let tmp = tempfile::tempdir().unwrap();
    let real_parent = tmp.path().join("disk/data");
    std::fs::create_dir_all(&real_parent).unwrap();
    let real = real_parent.join("oracle");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = tmp.path().join("oracle-link");
    std::os::unix::fs::symlink(&real, &link).unwrap();

    let recording = Arc::new(Recording::default());
    let _gate = fork_gate();
    drop(
        OpenOptions::new()
            .vfs(RecordingFs(Arc::clone(&recording)))
            .open_or_init(&link)
            .unwrap(),
    );
    let synced = recording.synced.lock().unwrap().clone();
    let real_parent = std::fs::canonicalize(&real_parent).unwrap();
    assert_eq!(synced, vec![real_parent], "only the real parent, by path");
}
