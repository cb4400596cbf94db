//! Every I/O failure of the write protocol is classified as the README's
//! "Errors, and what to do" table says: a failed fsync is permanent and
//! poisons the driver; a failed temp write (disk full included) or rename is
//! transient and loses nothing; a read-only filesystem is permanent without
//! poisoning; a refused lock is a clear `Io { op: Lock }`.
//!
//! Faults are injected through [`SimFs`] (no `failpoints` feature needed);
//! one test fills a real, tiny tmpfs when it can mount one.

mod common;
use common::classify;

use std::io::{self, ErrorKind, Write};
use std::path::Path;
use std::sync::Arc;

use common::error_chain as chain;
use tokio::runtime::Runtime;
use tsoracle_consensus::{ConsensusDriver, ConsensusError};
use tsoracle_core::{LeaseRecord, SeqKey};
use tsoracle_driver_file::vfs::sim::{OpKind, SimFs};
use tsoracle_driver_file::{FileDriver, FileDriverError, FileOp, LEADER_EPOCH, OpenOptions};

const DIR: &str = "/srv/oracle";
const HW: u64 = 1_764_000_000_100;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

fn key(name: &str) -> SeqKey {
    SeqKey::try_new(name).expect("valid key")
}

fn lease(id: u64, holder: &str) -> LeaseRecord {
    LeaseRecord {
        lease_id: id,
        holder: holder.as_bytes().to_vec(),
        holder_epoch: 1,
        ttl_ms: 5_000,
        ts_upper_bound: id,
        expires_at_ms: id + 5_000,
        superseded: false,
    }
}

fn open(fs: &SimFs) -> Arc<FileDriver> {
    OpenOptions::new()
        .vfs(fs.clone())
        .open_or_init(DIR)
        .expect("open")
}

/// The durable starting point of most tests: high-water `HW`, `orders` at
/// 5, one lease.
struct Fixture {
    rt: Runtime,
    fs: SimFs,
    driver: Arc<FileDriver>,
    leases: Vec<LeaseRecord>,
}

impl Fixture {
    fn new() -> Self {
        let rt = runtime();
        let fs = SimFs::new();
        let driver = open(&fs);
        let leases = vec![lease(HW - 50, "svc-a")];
        rt.block_on(async {
            assert_eq!(
                driver.persist_high_water(HW, LEADER_EPOCH).await.unwrap(),
                HW
            );
            assert_eq!(
                driver
                    .advance_dense(&key("orders"), 5, LEADER_EPOCH)
                    .await
                    .unwrap(),
                0
            );
            driver.persist_leases(&leases, LEADER_EPOCH).await.unwrap();
        });
        Fixture {
            rt,
            fs,
            driver,
            leases,
        }
    }

    /// Asserts reads answer exactly `(hw, orders, leases)`.
    fn assert_reads(&self, driver: &FileDriver, hw: u64, orders: u64, leases: &[LeaseRecord]) {
        self.rt.block_on(async {
            assert_eq!(driver.load_high_water().await.unwrap(), hw);
            assert_eq!(driver.load_dense_seq(&key("orders")).await.unwrap(), orders);
            assert_eq!(driver.load_leases().await.unwrap(), leases);
        });
    }

    /// Drops the driver and opens the directory again on the same disk.
    fn reopen(self) -> Self {
        let Fixture {
            rt,
            fs,
            driver,
            leases,
        } = self;
        drop(driver);
        let driver = open(&fs);
        Fixture {
            rt,
            fs,
            driver,
            leases,
        }
    }
}

/// Asserts `err` is `Io { op, .. }` on a path ending in `name` whose
/// source has kind `kind`.
fn assert_io(err: &FileDriverError, op: FileOp, name: &str, kind: ErrorKind) {
    match err {
        FileDriverError::Io {
            op: got,
            path,
            source,
            ..
        } => {
            assert_eq!(*got, op, "{err}");
            assert!(path.ends_with(name), "{} is not {name}", path.display());
            assert_eq!(source.kind(), kind, "{source}");
        }
        other => panic!("expected Io {{ {op:?} }}, got {other:?}"),
    }
}

/// One write of each kind, all above what is durable.
#[derive(Clone, Copy, Debug)]
enum Write3 {
    State,
    Dense,
    Leases,
}

impl Write3 {
    const ALL: [Write3; 3] = [Write3::State, Write3::Dense, Write3::Leases];

    fn temp(self) -> &'static str {
        match self {
            Write3::State => "state.tmp",
            Write3::Dense => "dense.tmp",
            Write3::Leases => "leases.tmp",
        }
    }

    fn run(self, rt: &Runtime, driver: &FileDriver, bump: u64) -> Result<(), ConsensusError> {
        rt.block_on(async {
            match self {
                Write3::State => driver
                    .persist_high_water(HW + bump, LEADER_EPOCH)
                    .await
                    .map(drop),
                Write3::Dense => driver
                    .advance_dense(&key("orders"), 3, LEADER_EPOCH)
                    .await
                    .map(drop),
                Write3::Leases => {
                    driver
                        .persist_leases(&[lease(HW + bump, "svc-b")], LEADER_EPOCH)
                        .await
                }
            }
        })
    }
}

/// An EIO from the fsync of each temp file: permanent, poisoned, every
/// later write refused naming the first failure and touching no disk,
/// reads still the last durable values, a reopen recovers exactly them.
#[test]
fn eio_on_temp_fsync_poisons_until_reopen() {
    for write in Write3::ALL {
        let mut fx = Fixture::new();
        fx.fs
            .fail_next(OpKind::FileSync, Some(write.temp()), ErrorKind::Other);
        let err = write.run(&fx.rt, &fx.driver, 100).expect_err("fsync fails");
        let (transient, inner) = classify(&err);
        assert!(!transient, "{write:?}: a failed fsync is permanent");
        assert_io(inner, FileOp::FsyncTemp, write.temp(), ErrorKind::Other);
        assert!(fx.driver.is_poisoned(), "{write:?}");
        assert_eq!(fx.fs.pending_faults(), 0);

        // Every later write, of every kind, is refused without touching
        // the disk, and names the first failure.
        let ops_before = fx.fs.op_count();
        for later in Write3::ALL {
            let err = later.run(&fx.rt, &fx.driver, 200).expect_err("poisoned");
            let (transient, inner) = classify(&err);
            assert!(!transient, "{write:?} then {later:?}");
            match inner {
                FileDriverError::Poisoned { first, .. } => {
                    assert_io(first, FileOp::FsyncTemp, write.temp(), ErrorKind::Other);
                }
                other => panic!("expected Poisoned, got {other:?}"),
            }
            let text = chain(&err);
            assert!(
                text.contains("fsync temp file") && text.contains(write.temp()),
                "the chain does not name the first failure: {text}"
            );
        }
        assert_eq!(fx.fs.op_count(), ops_before, "a poisoned driver wrote");

        let leases = fx.leases.clone();
        fx.assert_reads(&fx.driver, HW, 5, &leases);
        fx = fx.reopen();
        assert!(!fx.driver.is_poisoned());
        fx.assert_reads(&fx.driver, HW, 5, &leases);
        write
            .run(&fx.rt, &fx.driver, 300)
            .expect("a reopened driver writes again");
    }
}

/// An EIO from the directory fsync: permanent and poisoning. The rename had
/// taken effect and the file's bytes were fsynced, so the live file holds
/// the new record; whatever a power cut at that moment leaves, a reopen
/// reads the old or the new value, never anything else. A reopen without a
/// power cut reads the new value and makes it durable before serving it.
#[test]
fn eio_on_dir_fsync_poisons_and_never_rewinds() {
    let mut fx = Fixture::new();
    fx.fs
        .fail_next(OpKind::SyncDir, Some("oracle"), ErrorKind::Other);
    let err = Write3::State
        .run(&fx.rt, &fx.driver, 100)
        .expect_err("dir fsync fails");
    let (transient, inner) = classify(&err);
    assert!(!transient);
    assert_io(inner, FileOp::FsyncDir, "oracle", ErrorKind::Other);
    assert!(fx.driver.is_poisoned());

    let err = Write3::Dense
        .run(&fx.rt, &fx.driver, 0)
        .expect_err("poisoned");
    match classify(&err) {
        (false, FileDriverError::Poisoned { first, .. }) => {
            assert_io(first, FileOp::FsyncDir, "oracle", ErrorKind::Other);
        }
        other => panic!("expected a permanent Poisoned, got {other:?}"),
    }
    assert!(chain(&err).contains("fsync directory"), "{}", chain(&err));
    let leases = fx.leases.clone();
    fx.assert_reads(&fx.driver, HW, 5, &leases);

    // If power were cut now: every disk it could leave opens at HW or
    // HW + 100, the dense counter and leases as they were.
    let images = fx.fs.crash_images();
    assert!(images.len() > 1, "the pending rename makes several disks");
    let mut seen = std::collections::BTreeSet::new();
    for image in &images {
        let disk = SimFs::from_image(image).expect("a crash image boots");
        let driver = open(&disk);
        let hw = driver.high_water();
        assert!(hw == HW || hw == HW + 100, "{}: {hw}", image.label);
        seen.insert(hw);
        fx.assert_reads(&driver, hw, 5, &leases);
    }
    assert_eq!(seen.len(), 2, "both the old and the new file can survive");

    // Without a power cut the renamed, fsynced file is what a reopen reads;
    // the reopen fsyncs the directory first, so that value is now durable:
    // a power cut from here on leaves exactly it.
    fx = fx.reopen();
    assert!(!fx.driver.is_poisoned());
    fx.assert_reads(&fx.driver, HW + 100, 5, &leases);
    for image in fx.fs.crash_images() {
        let driver = open(&SimFs::from_image(&image).expect("a crash image boots"));
        fx.assert_reads(&driver, HW + 100, 5, &leases);
    }
}

/// The fsync that makes a brand-new state directory durable in its parent
/// fails: opening fails with a clear `Io { FsyncDir }` on the parent.
#[test]
fn eio_on_new_directory_fsync_fails_open() {
    let fs = SimFs::new();
    fs.fail_next(OpKind::SyncDir, Some("srv"), ErrorKind::Other);
    let err = OpenOptions::new()
        .vfs(fs.clone())
        .open_or_init(DIR)
        .expect_err("fails");
    assert_io(&err, FileOp::FsyncDir, "srv", ErrorKind::Other);
    assert!(err.to_string().contains("fsync directory /srv"), "{err}");
}

/// Open fsyncs the state directory before it trusts what it reads; an EIO
/// there refuses the open with a clear `Io { FsyncDir }` on the directory.
#[test]
fn eio_on_the_directory_fsync_at_open_fails_open() {
    let fs = SimFs::new();
    drop(open(&fs));
    fs.fail_next(OpKind::SyncDir, Some("oracle"), ErrorKind::Other);
    let err = OpenOptions::new()
        .vfs(fs.clone())
        .open_or_init(DIR)
        .expect_err("fails");
    assert_io(&err, FileOp::FsyncDir, "oracle", ErrorKind::Other);
    assert!(!err.is_transient());
    assert_eq!(fs.pending_faults(), 0);
    drop(open(&fs));
}

/// Disk full while writing (or creating) each temp file: transient, not
/// poisoned, nothing lost, and the retry succeeds with the same answer the
/// failed call would have had.
#[test]
fn enospc_on_temp_write_is_transient_and_loses_nothing() {
    for op in [OpKind::Write, OpKind::Create] {
        for write in Write3::ALL {
            let mut fx = Fixture::new();
            fx.fs
                .fail_next(op, Some(write.temp()), ErrorKind::StorageFull);
            let err = write.run(&fx.rt, &fx.driver, 100).expect_err("disk full");
            let (transient, inner) = classify(&err);
            assert!(transient, "{op:?} {write:?}: disk full is transient");
            assert_io(
                inner,
                FileOp::WriteTemp,
                write.temp(),
                ErrorKind::StorageFull,
            );
            assert!(!fx.driver.is_poisoned());
            let leases = fx.leases.clone();
            fx.assert_reads(&fx.driver, HW, 5, &leases);

            // The retry gets what the failed call would have: no gap in
            // the dense counter, nothing half-applied.
            fx.rt.block_on(async {
                match write {
                    Write3::State => assert_eq!(
                        fx.driver
                            .persist_high_water(HW + 100, LEADER_EPOCH)
                            .await
                            .unwrap(),
                        HW + 100
                    ),
                    Write3::Dense => assert_eq!(
                        fx.driver
                            .advance_dense(&key("orders"), 3, LEADER_EPOCH)
                            .await
                            .unwrap(),
                        5
                    ),
                    Write3::Leases => fx
                        .driver
                        .persist_leases(&[lease(HW + 100, "svc-b")], LEADER_EPOCH)
                        .await
                        .unwrap(),
                }
            });
            let (hw, orders, leases) = match write {
                Write3::State => (HW + 100, 5, leases),
                Write3::Dense => (HW, 8, leases),
                Write3::Leases => (HW, 5, vec![lease(HW + 100, "svc-b")]),
            };
            fx.assert_reads(&fx.driver, hw, orders, &leases);
            fx = fx.reopen();
            fx.assert_reads(&fx.driver, hw, orders, &leases);
        }
    }
}

/// A failed rename renamed nothing: transient, not poisoned, retry works.
#[test]
fn failed_rename_is_transient() {
    for write in Write3::ALL {
        let mut fx = Fixture::new();
        fx.fs
            .fail_next(OpKind::Rename, Some(write.temp()), ErrorKind::Other);
        let err = write
            .run(&fx.rt, &fx.driver, 100)
            .expect_err("rename fails");
        let (transient, inner) = classify(&err);
        assert!(transient, "{write:?}");
        let live = write.temp().trim_end_matches(".tmp");
        assert_io(inner, FileOp::Rename, live, ErrorKind::Other);
        assert!(!fx.driver.is_poisoned());
        let leases = fx.leases.clone();
        fx.assert_reads(&fx.driver, HW, 5, &leases);
        write
            .run(&fx.rt, &fx.driver, 100)
            .expect("the retry succeeds");
        fx = fx.reopen();
        assert_ne!(fx.driver.high_water(), 0);
    }
}

/// A read-only filesystem needs an operator: permanent. But nothing was
/// written and no fsync failed, so the driver is not poisoned and writes
/// once the filesystem is writable again.
#[test]
fn read_only_filesystem_is_permanent_but_does_not_poison() {
    let fx = Fixture::new();
    fx.fs.fail_next(
        OpKind::Create,
        Some("state.tmp"),
        ErrorKind::ReadOnlyFilesystem,
    );
    let err = Write3::State
        .run(&fx.rt, &fx.driver, 100)
        .expect_err("read-only");
    let (transient, inner) = classify(&err);
    assert!(!transient, "a read-only filesystem is permanent");
    assert_io(
        inner,
        FileOp::WriteTemp,
        "state.tmp",
        ErrorKind::ReadOnlyFilesystem,
    );
    assert!(!fx.driver.is_poisoned());
    fx.assert_reads(&fx.driver, HW, 5, &fx.leases);
    Write3::State
        .run(&fx.rt, &fx.driver, 100)
        .expect("writable again");
    assert_eq!(fx.driver.high_water(), HW + 100);
}

/// Permission denied creating a temp file (an operator changed the
/// directory's owner or mode): the live files are untouched, so it is
/// transient as the README says; the server keeps retrying and succeeds as
/// soon as the permissions are fixed, without a restart.
#[test]
fn permission_denied_on_a_temp_file_is_transient_and_retryable() {
    let fx = Fixture::new();
    for write in [Write3::State, Write3::Dense, Write3::Leases] {
        fx.fs.fail_next(
            OpKind::Create,
            Some(write.temp()),
            ErrorKind::PermissionDenied,
        );
        let err = write.run(&fx.rt, &fx.driver, 100).expect_err("denied");
        let (transient, inner) = classify(&err);
        assert!(
            transient,
            "{}: EACCES on a temp file is transient",
            write.temp()
        );
        assert_io(
            inner,
            FileOp::WriteTemp,
            write.temp(),
            ErrorKind::PermissionDenied,
        );
        assert!(!fx.driver.is_poisoned());
    }
    fx.assert_reads(&fx.driver, HW, 5, &fx.leases);
    Write3::State
        .run(&fx.rt, &fx.driver, 100)
        .expect("permissions fixed");
    assert_eq!(fx.driver.high_water(), HW + 100);
}

/// Permission denied opening the lock file: a clear `Io { op: Lock }`
/// naming the `LOCK` path, not "already locked".
#[test]
fn permission_denied_on_lock_is_a_clear_error() {
    let fs = SimFs::new();
    fs.fail_next(OpKind::TryLock, None, ErrorKind::PermissionDenied);
    let err = OpenOptions::new()
        .vfs(fs.clone())
        .open_or_init(DIR)
        .expect_err("denied");
    assert_io(&err, FileOp::Lock, "LOCK", ErrorKind::PermissionDenied);
    assert_eq!(err.to_string(), "cannot lock /srv/oracle/LOCK");
    assert!(!err.is_transient());
    assert!(matches!(
        ConsensusError::from(err),
        ConsensusError::PermanentDriver(_)
    ));
    // Nothing was read or written after the refusal.
    assert_eq!(
        fs.op_log().last().map(|op| op.kind),
        Some(OpKind::TryLock),
        "{:?}",
        fs.op_log()
    );
    // The fault is gone; the lock is not held by anyone.
    drop(open(&fs));
}

/// `fail_at` targets one operation by its global index: the fsync of the
/// dense temp file found in a reference run's op log.
#[test]
fn fault_at_an_op_index_hits_exactly_that_operation() {
    let run = |fs: &SimFs| {
        let rt = runtime();
        let driver = open(fs);
        rt.block_on(async {
            let hw = driver.persist_high_water(HW, LEADER_EPOCH).await;
            let dense = driver.advance_dense(&key("a"), 2, LEADER_EPOCH).await;
            (hw, dense, driver.is_poisoned())
        })
    };
    let reference = SimFs::new();
    let (hw, dense, poisoned) = run(&reference);
    assert_eq!((hw.unwrap(), dense.unwrap(), poisoned), (HW, 0, false));
    let target = reference
        .op_log()
        .into_iter()
        .find(|op| op.kind == OpKind::FileSync && op.name() == "dense.tmp")
        .expect("the dense temp file was fsynced");

    let fs = SimFs::new();
    fs.fail_at(target.index, ErrorKind::Other);
    let (hw, dense, poisoned) = run(&fs);
    assert_eq!(hw.unwrap(), HW, "the earlier write is untouched");
    let err = dense.expect_err("the dense fsync fails");
    assert_io(
        classify(&err).1,
        FileOp::FsyncTemp,
        "dense.tmp",
        ErrorKind::Other,
    );
    assert!(poisoned);
    assert_eq!(fs.injected().len(), 1);
    assert_eq!(fs.injected()[0], target);
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Mount<'a>(&'a Path);

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        let status = std::process::Command::new("umount").arg(self.0).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "warning: could not unmount {}: {status:?}",
                self.0.display()
            );
        }
    }
}

/// A real disk-full: a 64 KiB tmpfs, filled to the last page. A persist
/// fails transient and not poisoned; once space is freed the next persist
/// succeeds and survives a reopen. Needs root and `mount`; skips otherwise.
#[test]
fn real_tmpfs_enospc_is_transient() {
    if !running_as_root() {
        println!("skipped: mounting a tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(tmp.path())
        .output();
    match mount {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            println!(
                "skipped: mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return;
        }
        Err(err) => {
            println!("skipped: cannot run mount: {err}");
            return;
        }
    }
    let _unmount = Mount(tmp.path());
    let dir = tmp.path().join("oracle");
    let rt = runtime();
    let filled;
    {
        let driver = FileDriver::open_or_init(&dir).expect("open on tmpfs");
        rt.block_on(driver.persist_high_water(HW, LEADER_EPOCH))
            .expect("room for the first record");

        let filler_path = tmp.path().join("filler");
        let mut filler = std::fs::File::create(&filler_path).expect("filler");
        let page = [0xA5u8; 4096];
        let mut written = 0usize;
        let full = loop {
            match filler.write_all(&page) {
                Ok(()) => written += page.len(),
                Err(err) => break err,
            }
        };
        assert_eq!(full.kind(), ErrorKind::StorageFull, "{full}");
        filled = written;
        drop(filler);

        let err = rt
            .block_on(driver.persist_high_water(HW + 1, LEADER_EPOCH))
            .expect_err("the disk is full");
        let (transient, inner) = classify(&err);
        assert!(transient, "disk full is transient: {}", chain(&err));
        match inner {
            FileDriverError::Io { op, source, .. } => {
                assert_eq!(*op, FileOp::WriteTemp);
                assert_eq!(source.kind(), ErrorKind::StorageFull);
            }
            other => panic!("expected Io, got {other:?}"),
        }
        assert!(!driver.is_poisoned());
        assert_eq!(driver.high_water(), HW);

        std::fs::remove_file(&filler_path).expect("free the space");
        assert_eq!(
            rt.block_on(driver.persist_high_water(HW + 1, LEADER_EPOCH))
                .expect("room again"),
            HW + 1
        );
    }
    let reopened = FileDriver::open_or_init(&dir).expect("reopen");
    assert_eq!(reopened.high_water(), HW + 1);
    drop(reopened);
    let leftover: io::Result<Vec<_>> = std::fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.map(|e| e.file_name()))
        .collect();
    let leftover = leftover.expect("entries");
    assert!(
        !leftover
            .iter()
            .any(|name| name.to_string_lossy().ends_with(".tmp")),
        "{leftover:?}"
    );
    println!(
        "tmpfs: full after {filled} filler bytes; persist failed transient; \
         succeeded once space was freed"
    );
}

/// The harness's lock table behaves like flock: a second driver on the same
/// disk is refused while the first lives, and gets in once it is dropped.
#[test]
fn simfs_lock_table_is_exclusive() {
    let fs = SimFs::new();
    let first = open(&fs);
    match OpenOptions::new().vfs(fs.clone()).open_or_init(DIR) {
        Err(FileDriverError::AlreadyLocked { path, .. }) => {
            assert_eq!(path, Path::new(DIR).join("LOCK"));
        }
        other => panic!("expected AlreadyLocked, got {other:?}"),
    }
    drop(first);
    drop(open(&fs));
}
