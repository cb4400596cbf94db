//! The protocol on real filesystems, not only the work disk: for each of
//! ext4, xfs and btrfs, a fresh image on a loop device gets the durability,
//! lock and disk-full checks, and one report line.
//!
//! - durability: values written, the driver closed, the filesystem
//!   unmounted and mounted again: a reopen finds exactly what was
//!   acknowledged; a child process writing in a loop is SIGKILLed and the
//!   reopen finds at least its last acknowledged value; and, the real crash,
//!   the filesystem is shut down under a running writer without flushing
//!   its journal (`xfs_io -x -c shutdown`: what survives is what fsync made
//!   durable, as after a power cut), mounted again, and the reopen finds at
//!   least the last acknowledged value;
//! - lock: a second open in-process and from a child is refused, also after
//!   `LOCK` is deleted;
//! - disk full: the filesystem filled to the last block: a write fails as
//!   transient without poisoning, reads stay exact, and the same write
//!   succeeds once space is freed;
//! - identity: a stopped directory holds exactly `LOCK`, `state`, `dense`
//!   and `leases`; its identity is in the directory's extended attribute,
//!   survives a remount and the filesystem shutdown above, and an
//!   `IDENTITY` file of an earlier version is carried into it.
//!
//! And on ramfs, which has no extended attributes at all: the driver works
//! without an identity, and an earlier version's `IDENTITY` file is removed.
//!
//! Needs root, loop devices and the `mkfs` tools (`.ci/run` installs
//! `xfsprogs` and `btrfs-progs`); each missing piece skips its filesystem
//! with a message saying which. `TSORACLE_REQUIRE_REAL_FS=1` turns a skip
//! into a failure (CI sets it).

mod common;
use common::child;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use tsoracle_consensus::{ConsensusDriver, ConsensusError};
use tsoracle_core::SeqKey;
use tsoracle_driver_file::identity_record::{self, Origin};
use tsoracle_driver_file::{
    FileDriver, FileDriverError, IDENTITY_FILE, LEADER_EPOCH, OriginSource, read_state_dir,
};

use child::{ChildProcess, fork_gate, report};

const ROLE_VAR: &str = "TSORACLE_REALFS_ROLE";
const DIR_VAR: &str = "TSORACLE_REALFS_DIR";
const CHILD_TEST: &str = "child_process_role";

/// The child: `open` reports whether it could open; `writer` writes
/// increasing high-waters and reports each acknowledged one until killed.
#[test]
fn child_process_role() {
    let (Ok(role), Ok(dir)) = (std::env::var(ROLE_VAR), std::env::var(DIR_VAR)) else {
        return;
    };
    match role.as_str() {
        "open" => match FileDriver::open_or_init(&dir) {
            Ok(_) => report("opened"),
            Err(FileDriverError::AlreadyLocked { .. }) => report("locked"),
            Err(err) => report(&format!("error {err}")),
        },
        "writer" => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                let driver = FileDriver::open_or_init(&dir).unwrap();
                let mut value = driver.high_water();
                loop {
                    value += 1;
                    match driver.persist_high_water(value, LEADER_EPOCH).await {
                        Ok(acked) => report(&format!("acked {acked}")),
                        // After a filesystem shutdown every write fails.
                        Err(err) => {
                            report(&format!("failed {err}"));
                            return;
                        }
                    }
                }
            });
        }
        other => panic!("unknown role {other}"),
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|err| format!("{program}: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A mounted loop image; unmounted when dropped.
struct Mounted {
    image: PathBuf,
    point: PathBuf,
    fs: &'static str,
}

impl Mounted {
    fn create(fs: &'static str, work: &Path) -> Result<Mounted, String> {
        let (mkfs, size, extra): (&str, &str, &[&str]) = match fs {
            "ext4" => ("mkfs.ext4", "64M", &["-q", "-F"]),
            "xfs" => ("mkfs.xfs", "320M", &["-q", "-f"]),
            "btrfs" => ("mkfs.btrfs", "128M", &["-q", "-f", "-M"]),
            _ => unreachable!(),
        };
        let image = work.join(format!("{fs}.img"));
        let point = work.join(fs);
        std::fs::create_dir(&point).map_err(|err| err.to_string())?;
        run("truncate", &["-s", size, image.to_str().unwrap()])?;
        let mut args = extra.to_vec();
        args.push(image.to_str().unwrap());
        run(mkfs, &args)?;
        let mounted = Mounted { image, point, fs };
        mounted.mount()?;
        Ok(mounted)
    }

    fn mount(&self) -> Result<(), String> {
        run(
            "mount",
            &[
                "-o",
                "loop",
                "-t",
                self.fs,
                self.image.to_str().unwrap(),
                self.point.to_str().unwrap(),
            ],
        )
    }

    fn unmount(&self) -> Result<(), String> {
        run("umount", &[self.point.to_str().unwrap()])
    }

    fn remount(&self) {
        self.unmount().expect("umount");
        self.mount().expect("mount again");
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

/// Why this machine cannot run the real-filesystem checks, if it cannot.
fn unavailable(fs: &str) -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root to mount loop images".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no loop devices (/dev/loop-control is missing)".into());
    }
    let mkfs = format!("mkfs.{fs}");
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(&mkfs).exists()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(&mkfs).exists()
        || Path::new("/sbin").join(&mkfs).exists();
    (!found).then(|| format!("{mkfs} is not installed"))
}

fn key(name: &str) -> SeqKey {
    SeqKey::try_new(name).unwrap()
}

fn child_open(dir: &Path) -> String {
    let gate = fork_gate();
    let mut child = ChildProcess::spawn(
        CHILD_TEST,
        &[(ROLE_VAR, "open"), (DIR_VAR, dir.to_str().unwrap())],
        &gate,
    );
    drop(gate);
    let line = child.next_report().expect("child reports");
    child.wait();
    line
}

async fn durability(mounted: &Mounted) -> String {
    let dir = mounted.point.join("oracle");
    let driver = FileDriver::open_or_init(&dir).unwrap();
    let origin = driver.origin();
    assert!(
        origin.is_some(),
        "{}: a new oracle has an identity",
        mounted.fs
    );
    let mut last = 0;
    for value in (1..=50u64).map(|i| 1_764_000_000_000 + i * 7) {
        last = driver
            .persist_high_water(value, LEADER_EPOCH)
            .await
            .unwrap();
    }
    let start = driver
        .advance_dense(&key("orders"), 40, LEADER_EPOCH)
        .await
        .unwrap();
    drop(driver);
    mounted.remount();
    let reopened = FileDriver::open_or_init(&dir).unwrap();
    assert_eq!(
        reopened.high_water(),
        last,
        "{}: high-water after remount",
        mounted.fs
    );
    assert_eq!(
        reopened.load_dense_seq(&key("orders")).await.unwrap(),
        start + 40
    );
    drop(reopened);

    // A writer killed mid-flight: nothing it acknowledged is lost.
    let (mut child, acked) = start_writer(&dir, 200);
    child.kill_and_wait();
    mounted.remount();
    let _gate = fork_gate();
    let after_kill = FileDriver::open_or_init(&dir).unwrap().high_water();
    assert!(
        after_kill >= acked,
        "{}: reopened at {after_kill} below acknowledged {acked}",
        mounted.fs
    );
    drop(_gate);

    // A crash of the filesystem itself while the writer runs: `shutdown`
    // without flushing the log (XFS_IOC_GOINGDOWN, NOLOGFLUSH) drops every
    // change not yet committed to the journal, as a power cut would; all
    // later I/O fails. After mounting again (log replay) the high-water
    // must be at least the last value the writer saw acknowledged.
    let shutdown = crash_filesystem(mounted, &dir);
    assert_eq!(
        read_state_dir(&dir).unwrap().origin,
        origin,
        "{}: the identity recorded at the first open survived everything",
        mounted.fs
    );
    format!(
        "durability ok (50 values + remount exact; SIGKILL after {acked}: reopened at {after_kill}; {shutdown})"
    )
}

/// Starts a child writing increasing high-waters into `dir` and waits for
/// its first `acks` acknowledgements; returns it and the last one.
fn start_writer(dir: &Path, acks: usize) -> (ChildProcess, u64) {
    let gate = fork_gate();
    let mut child = ChildProcess::spawn(
        CHILD_TEST,
        &[(ROLE_VAR, "writer"), (DIR_VAR, dir.to_str().unwrap())],
        &gate,
    );
    drop(gate);
    let mut acked = 0u64;
    for _ in 0..acks {
        let line = child.next_report().expect("writer reports");
        acked = line.strip_prefix("acked ").expect(&line).parse().unwrap();
    }
    (child, acked)
}

fn crash_filesystem(mounted: &Mounted, dir: &Path) -> String {
    let (mut child, mut acked) = start_writer(dir, 100);
    let point = mounted.point.to_str().unwrap();
    if let Err(why) = run("xfs_io", &["-x", "-c", "shutdown", point]) {
        child.kill_and_wait();
        return format!("filesystem shutdown not available on {}: {why}", mounted.fs);
    }
    // Every write now fails: the writer dies on its first error. Its last
    // report is the last value acknowledged before the crash.
    while let Some(line) = child.next_report() {
        if let Some(value) = line.strip_prefix("acked ") {
            acked = acked.max(value.parse().unwrap());
        }
    }
    child.kill_and_wait();
    mounted.remount();
    let _gate = fork_gate();
    let after = FileDriver::open_or_init(dir).unwrap().high_water();
    assert!(
        after >= acked,
        "{}: after a filesystem shutdown reopened at {after}, below acknowledged {acked}",
        mounted.fs
    );
    format!("filesystem shutdown without log flush after {acked}: reopened at {after}")
}

fn lock(mounted: &Mounted) -> String {
    let dir = mounted.point.join("oracle");
    let driver = FileDriver::open_or_init(&dir).unwrap();
    assert!(matches!(
        FileDriver::open_or_init(&dir),
        Err(FileDriverError::AlreadyLocked { .. })
    ));
    assert_eq!(child_open(&dir), "locked", "{}: child", mounted.fs);
    std::fs::remove_file(dir.join("LOCK")).unwrap();
    assert!(matches!(
        FileDriver::open_or_init(&dir),
        Err(FileDriverError::AlreadyLocked { .. })
    ));
    assert_eq!(
        child_open(&dir),
        "locked",
        "{}: child after rm LOCK",
        mounted.fs
    );
    drop(driver);
    "lock ok (in-process, child, after rm LOCK)".into()
}

/// Fills the filesystem: big chunks, then small ones, then empty files,
/// until nothing more fits.
fn fill(point: &Path) -> usize {
    let mut file = std::fs::File::create(point.join("filler")).unwrap();
    let mut written = 0usize;
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let bytes = vec![0xa5u8; chunk];
        while file.write_all(&bytes).is_ok() {
            written += chunk;
        }
    }
    let _ = file.sync_all();
    for i in 0.. {
        if std::fs::write(point.join(format!("filler-{i}")), b"x").is_err() || i > 100_000 {
            break;
        }
    }
    written
}

async fn disk_full(mounted: &Mounted) -> String {
    let dir = mounted.point.join("oracle");
    let driver: Arc<FileDriver> = FileDriver::open_or_init(&dir).unwrap();
    let before = driver.high_water();
    let filled = fill(&mounted.point);
    // The write the full disk refuses. A filesystem may still find room for
    // a few: write until one is refused (bounded), then check the refusal.
    let mut refused = None;
    let mut value = before;
    for _ in 0..64 {
        value += 1;
        match driver.persist_high_water(value, LEADER_EPOCH).await {
            Ok(acked) => assert_eq!(acked, value),
            Err(err) => {
                refused = Some(err);
                break;
            }
        }
    }
    let err = refused.unwrap_or_else(|| panic!("{}: no write refused on a full disk", mounted.fs));
    assert!(
        matches!(err, ConsensusError::TransientDriver(_)),
        "{}: a full disk is transient, got {err:?}",
        mounted.fs
    );
    assert!(!driver.is_poisoned(), "{}: not poisoned", mounted.fs);
    let durable = driver.high_water();
    assert_eq!(
        durable,
        value - 1,
        "reads stay at the last acknowledged value"
    );
    let cause = FileDriverError::in_consensus(&err)
        .map(|inner| {
            std::error::Error::source(inner)
                .map(ToString::to_string)
                .unwrap_or_default()
        })
        .unwrap_or_default();

    for entry in std::fs::read_dir(&mounted.point).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("filler"))
        {
            std::fs::remove_file(path).unwrap();
        }
    }
    assert_eq!(
        driver
            .persist_high_water(value, LEADER_EPOCH)
            .await
            .unwrap(),
        value,
        "{}: succeeds once space is freed",
        mounted.fs
    );
    format!(
        "disk full ok ({} MiB filler; refused as transient: {cause}; succeeded after freeing)",
        filled >> 20
    )
}

/// What a clean stop leaves, where the identity is, and an earlier
/// version's `IDENTITY` file carried over, across remounts.
async fn identity(mounted: &Mounted) -> String {
    let fs = mounted.fs;
    assert!(
        common::xattrs_supported_in(&mounted.point),
        "{fs} has user extended attributes"
    );
    let dir = mounted.point.join("identity");
    let driver = FileDriver::open_or_init(&dir).unwrap();
    let origin = driver.origin().expect("a new oracle has an identity");
    common::write_each_file(&driver).await;
    drop(driver);
    mounted.remount();
    assert_eq!(
        common::entry_names(&dir),
        ["LOCK", "dense", "leases", "state"],
        "{fs}"
    );
    assert_eq!(std::fs::read(dir.join("LOCK")).unwrap(), b"", "{fs}");
    let found = read_state_dir(&dir).unwrap();
    assert_eq!(found.origin, Some(origin), "{fs}: after a remount");
    assert_eq!(found.origin_source, OriginSource::Xattr, "{fs}");

    // As an earlier version left it: in an IDENTITY file.
    common::set_identity_xattr(&dir, None);
    std::fs::write(dir.join(IDENTITY_FILE), identity_record::encode(&origin)).unwrap();
    mounted.remount();
    assert_eq!(
        read_state_dir(&dir).unwrap().origin_source,
        OriginSource::IdentityFile
    );
    assert_eq!(
        FileDriver::open_or_init(&dir).unwrap().origin(),
        Some(origin)
    );
    mounted.remount();
    assert_eq!(
        common::entry_names(&dir),
        ["LOCK", "dense", "leases", "state"],
        "{fs}: the IDENTITY file is gone for good"
    );
    assert_eq!(
        common::identity_xattr(&dir),
        Some(identity_record::encode(&origin)),
        "{fs}: carried into the attribute, durably"
    );
    "identity ok (only LOCK, state, dense, leases; in the attribute across remounts; IDENTITY carried over)".into()
}

/// A ramfs mount (no extended attributes); unmounted when dropped.
struct RamFs(PathBuf);

impl Drop for RamFs {
    fn drop(&mut self) {
        let _ = run("umount", &[self.0.to_str().unwrap()]);
    }
}

#[tokio::test]
async fn without_extended_attributes_on_ramfs_the_driver_runs_without_an_identity() {
    let require = std::env::var_os("TSORACLE_REQUIRE_REAL_FS").is_some_and(|v| v == "1");
    if !nix::unistd::Uid::effective().is_root() {
        assert!(!require, "ramfs: needs root to mount");
        eprintln!("real_filesystems: ramfs: skipped: needs root to mount");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let point = work.path().join("ramfs");
    std::fs::create_dir(&point).unwrap();
    if let Err(why) = run(
        "mount",
        &[
            "-t",
            "ramfs",
            "-o",
            "mode=0700",
            "ramfs",
            point.to_str().unwrap(),
        ],
    ) {
        assert!(!require, "ramfs: {why}");
        eprintln!("real_filesystems: ramfs: skipped: {why}");
        return;
    }
    let _mounted = RamFs(point.clone());
    assert!(
        !common::xattrs_supported_in(&point),
        "ramfs has no extended attributes"
    );

    let dir = point.join("oracle");
    let driver = FileDriver::open_or_init(&dir).unwrap();
    assert_eq!(driver.origin(), None);
    common::write_each_file(&driver).await;
    drop(driver);
    assert_eq!(
        common::entry_names(&dir),
        ["LOCK", "dense", "leases", "state"]
    );
    let found = read_state_dir(&dir).unwrap();
    assert_eq!(found.origin, None);
    assert_eq!(found.origin_source, OriginSource::Unsupported);

    // An earlier version's IDENTITY file is removed: upstream's tools then
    // accept the directory; the identity cannot be kept here.
    let here = found.identity.unwrap();
    let origin = Origin {
        id: *b"ramfs-identity!!",
        created_ms: 1,
        opened_in: here,
    };
    std::fs::write(dir.join(IDENTITY_FILE), identity_record::encode(&origin)).unwrap();
    let found = read_state_dir(&dir).unwrap();
    assert_eq!(found.origin, Some(origin));
    assert_eq!(found.origin_source, OriginSource::IdentityFile);
    let driver = FileDriver::open_or_init(&dir).unwrap();
    assert_eq!(driver.origin(), None);
    assert_eq!(driver.high_water(), 1_000);
    drop(driver);
    assert_eq!(
        common::entry_names(&dir),
        ["LOCK", "dense", "leases", "state"]
    );
    eprintln!(
        "real_filesystems: ramfs: no identity ok (only LOCK, state, dense, leases; IDENTITY removed)"
    );
}

#[tokio::test]
async fn the_protocol_holds_on_ext4_xfs_and_btrfs() {
    let require = std::env::var_os("TSORACLE_REQUIRE_REAL_FS").is_some_and(|v| v == "1");
    let work = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for fs in ["ext4", "xfs", "btrfs"] {
        if let Some(why) = unavailable(fs) {
            assert!(!require, "{fs}: {why}");
            eprintln!("real_filesystems: {fs}: skipped: {why}");
            continue;
        }
        let mounted = match Mounted::create(fs, work.path()) {
            Ok(mounted) => mounted,
            Err(why) => {
                assert!(!require, "{fs}: {why}");
                eprintln!("real_filesystems: {fs}: skipped: cannot mount an image: {why}");
                continue;
            }
        };
        let durable = durability(&mounted).await;
        let locked = lock(&mounted);
        let full = disk_full(&mounted).await;
        let identity = identity(&mounted).await;
        let contract_dir = mounted.point.join("contract");
        let contract = common::contract::run(|| {
            FileDriver::open_or_init(&contract_dir).expect("open on the image")
        })
        .await;
        eprintln!("real_filesystems: {fs}: {durable}; {locked}; {full}; {identity}; {contract}");
        ran += 1;
    }
    eprintln!("real_filesystems: {ran} of 3 filesystems checked");
}
