//! Helpers shared by the integration tests. Each test file uses a subset.
//!
//! Every test target includes them with `mod common;`, and nothing else:
//! the helpers at this level need no feature, nor does [`child`] (the test
//! binary re-run as a child process); the in-memory filesystem that knows
//! what a power cut keeps is the library's `vfs::SimFs` (feature `simfs`,
//! which the crate's dev-dependency on itself turns on); [`cli`] runs the
//! `tsoracle-file` binary, which only the `cli` feature builds, and
//! [`served`] runs a server in-process for the migration tests, [`serve`]
//! the `serve` subcommand as a child process; [`seed`]
//! and [`owner`] are what the seeding and owner tests share with
//! `tests/failpoints/`.
#![allow(dead_code)]

pub mod child;
#[cfg(feature = "cli")]
pub mod cli;
pub mod contract;
pub mod kills;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod owner;
pub mod seed;
#[cfg(feature = "server")]
pub mod serve;
#[cfg(feature = "migrate")]
pub mod served;
pub mod sim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tsoracle_driver_file::record::RecordError;

/// The reference directories written by the tsoracle ecosystem's driver,
/// copied from `shared/fixtures/reference-v2.2.0`.
pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference-v2.2.0")
        .join(name)
}

/// Copies a reference directory into a fresh temporary directory (opening
/// takes the lock and may write: the fixtures themselves stay untouched).
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("create temp dir");
    for entry in std::fs::read_dir(fixture_dir(name)).expect("read fixture dir") {
        let entry = entry.expect("fixture entry");
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).expect("copy fixture file");
    }
    tmp
}

/// Every regular file in `dir` with its bytes: compare two of these to prove
/// a directory was left byte-for-byte unchanged.
pub fn dir_contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("dir entry");
        if entry.file_type().expect("file type").is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            out.insert(name, std::fs::read(entry.path()).expect("read file"));
        }
    }
    out
}

/// Every entry of `dir` (files and directories), by name, sorted.
pub fn entry_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------
// Extended attributes, read and written by path with rustix: independent of
// the driver's own seam, so a test checks what is really on the directory.
// ---------------------------------------------------------------------------

/// Whether the filesystem `parent` lives on gives directories user extended
/// attributes: probed on a fresh directory made in `parent` for the
/// purpose (never on a directory under test). Panics on any answer but
/// yes or "not supported".
pub fn xattrs_supported_in(parent: &Path) -> bool {
    use rustix::io::Errno;
    let probe = tempfile::tempdir_in(parent).expect("a probe directory");
    let name = "user.tsoracle.test-probe";
    match rustix::fs::setxattr(probe.path(), name, b"1", rustix::fs::XattrFlags::empty()) {
        Ok(()) => {
            rustix::fs::removexattr(probe.path(), name).expect("remove the probe attribute");
            true
        }
        Err(err) if err == Errno::NOTSUP || err == Errno::OPNOTSUPP => false,
        Err(err) => panic!("probing extended attributes in {}: {err}", parent.display()),
    }
}

/// The identity attribute of `dir`, read by path; `None` when it has none
/// or the filesystem has no extended attributes.
pub fn identity_xattr(dir: &Path) -> Option<Vec<u8>> {
    dir_xattrs(dir).remove(tsoracle_driver_file::IDENTITY_XATTR)
}

/// Sets (`Some`) or removes (`None`) the identity attribute of `dir`, by
/// path, as an operator's `setfattr` would.
pub fn set_identity_xattr(dir: &Path, value: Option<&[u8]>) {
    let name = tsoracle_driver_file::IDENTITY_XATTR;
    match value {
        Some(value) => rustix::fs::setxattr(dir, name, value, rustix::fs::XattrFlags::empty())
            .expect("set the identity attribute"),
        None => rustix::fs::removexattr(dir, name).expect("remove the identity attribute"),
    }
}

/// Every `user.` extended attribute of `dir` with its value; empty where
/// the filesystem has none. Compare two of these to prove nothing was set.
pub fn dir_xattrs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    use rustix::io::Errno;
    let mut out = BTreeMap::new();
    let len = match rustix::fs::listxattr_query(dir) {
        Ok(len) => len,
        Err(err) if err == Errno::NOTSUP || err == Errno::OPNOTSUPP => return out,
        Err(err) => panic!("listxattr {}: {err}", dir.display()),
    };
    let mut names = vec![0u8; len];
    let len = rustix::fs::listxattr(dir, &mut names[..]).expect("listxattr");
    names.truncate(len);
    for name in names
        .split(|&byte| byte == 0)
        .filter(|name| !name.is_empty())
    {
        let name = String::from_utf8_lossy(name).into_owned();
        if !name.starts_with("user.") {
            continue;
        }
        let len = rustix::fs::getxattr_query(dir, name.as_str()).expect("getxattr size");
        let mut value = vec![0u8; len];
        let len = rustix::fs::getxattr(dir, name.as_str(), &mut value[..]).expect("getxattr");
        value.truncate(len);
        out.insert(name, value);
    }
    out
}

/// A key for dense-counter tests.
pub fn key(name: &str) -> tsoracle_core::SeqKey {
    tsoracle_core::SeqKey::try_new(name).expect("valid SeqKey")
}

/// The bytes of one file of a reference directory.
pub fn fixture_file(name: &str, file: &str) -> Vec<u8> {
    std::fs::read(fixture_dir(name).join(file)).expect("read fixture file")
}

/// The `full/` lease set as FORMAT.md lists it, ascending by id.
pub fn full_leases() -> Vec<tsoracle_core::LeaseRecord> {
    use tsoracle_core::LeaseRecord;
    vec![
        LeaseRecord {
            lease_id: 2,
            holder: b"svc-b".to_vec(),
            holder_epoch: 1,
            ttl_ms: 5000,
            ts_upper_bound: 1_764_000_500_000,
            expires_at_ms: 1_764_000_505_000,
            superseded: true,
        },
        LeaseRecord {
            lease_id: 7,
            holder: b"svc-a".to_vec(),
            holder_epoch: 3,
            ttl_ms: 10_000,
            ts_upper_bound: 1_764_000_555_000,
            expires_at_ms: 1_764_000_565_000,
            superseded: false,
        },
    ]
}

/// An error and its whole `source()` chain, joined with ": ", for message
/// checks.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    tsoracle_driver_file::error_chain(err)
}

/// The `FileDriverError` inside a driver-level `ConsensusError`, and
/// whether it was classified transient.
pub fn classify(
    err: &tsoracle_consensus::ConsensusError,
) -> (bool, &tsoracle_driver_file::FileDriverError) {
    use tsoracle_consensus::ConsensusError;
    let transient = match err {
        ConsensusError::TransientDriver(_) => true,
        ConsensusError::PermanentDriver(_) => false,
        other => panic!("not a driver error: {other:?}"),
    };
    let file_err = tsoracle_driver_file::FileDriverError::in_consensus(err)
        .unwrap_or_else(|| panic!("not an Arc<FileDriverError>: {err:?}"));
    (transient, file_err)
}

/// Pauses the committer at a failpoint until dropped. Declare it after the
/// driver, so a failing test releases the committer before the driver's
/// drop joins it.
#[cfg(feature = "failpoints")]
pub struct Paused(&'static str);

#[cfg(feature = "failpoints")]
impl Paused {
    pub fn at(name: &'static str) -> Self {
        fail::cfg(name, "pause").expect("configure pause");
        Paused(name)
    }
}

#[cfg(feature = "failpoints")]
impl Drop for Paused {
    fn drop(&mut self) {
        let _ = fail::cfg(self.0, "off");
    }
}

// ---------------------------------------------------------------------------
// Corruption expectations, shared by the corruption tests.
// ---------------------------------------------------------------------------

/// Appends the CRC-32C of `body`, little-endian, as FORMAT.md says.
pub fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

/// Decodes `bytes` with the codec of `file` (`state`, `dense` or `leases`).
pub fn decode_as(file: &str, bytes: &[u8]) -> Result<(), RecordError> {
    use tsoracle_driver_file::{dense_record, lease_record, record};
    match file {
        "state" => record::decode(bytes).map(drop),
        "dense" => dense_record::decode(bytes).map(drop),
        "leases" => lease_record::decode(bytes).map(drop),
        other => panic!("no codec for {other}"),
    }
}

/// The `CrcMismatch` that `bytes` (a body and its 4-byte trailer) must be
/// refused with.
pub fn crc_mismatch(bytes: &[u8]) -> RecordError {
    let (covered, trailer) = bytes.split_at(bytes.len() - 4);
    RecordError::CrcMismatch {
        stored: u32::from_le_bytes(trailer.try_into().expect("4 bytes")),
        computed: crc32c::crc32c(covered),
    }
}

/// Field names and reasons are prose; compare the variant and its numbers.
pub fn normalized(err: RecordError) -> RecordError {
    match err {
        RecordError::Truncated { offset, .. } => RecordError::Truncated { field: "", offset },
        RecordError::InvalidKey { index, .. } => RecordError::InvalidKey { index, reason: "" },
        other => other,
    }
}

/// A `Truncated` at `offset`, [`normalized`].
pub fn truncated(offset: usize) -> RecordError {
    RecordError::Truncated { field: "", offset }
}

/// An `InvalidKey` at `index`, [`normalized`].
pub fn invalid_key(index: usize) -> RecordError {
    RecordError::InvalidKey { index, reason: "" }
}

// ---------------------------------------------------------------------------
// Dense blocks handed out concurrently.
// ---------------------------------------------------------------------------

/// What a task that advanced a dense key returns: the key's name, the count
/// it asked for, and the driver's answer.
pub type DenseAdvance<E> = (&'static str, u32, Result<u64, E>);

/// Joins `tasks`, each of which advanced the dense key `name` by `count`
/// and returns `(name, count, result)`. Asserts that every call succeeded,
/// that each key's blocks tile `0..total` exactly (no gap, no overlap), and
/// that `driver` reads each key's counter as that total. Returns the totals.
pub async fn assert_dense_blocks_tile<E: std::fmt::Debug>(
    driver: &tsoracle_driver_file::FileDriver,
    tasks: Vec<tokio::task::JoinHandle<DenseAdvance<E>>>,
) -> BTreeMap<&'static str, u64> {
    use tsoracle_consensus::ConsensusDriver;
    let mut blocks: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for task in tasks {
        let (name, count, result) = task.await.expect("task");
        let start = result.expect("advance_dense succeeds");
        blocks
            .entry(name)
            .or_default()
            .push((start, u64::from(count)));
    }
    let mut totals = BTreeMap::new();
    for (name, mut list) in blocks {
        list.sort_unstable();
        let mut next = 0;
        for (start, count) in list {
            assert_eq!(start, next, "{name}: block at {start}, expected {next}");
            next = start + count;
        }
        assert_eq!(driver.load_dense_seq(&key(name)).await.expect("load"), next);
        totals.insert(name, next);
    }
    totals
}

/// Asserts that `driver` reads each key's dense counter as `totals` says
/// (e.g. after a reopen).
pub async fn assert_dense_totals(
    driver: &tsoracle_driver_file::FileDriver,
    totals: &BTreeMap<&'static str, u64>,
) {
    use tsoracle_consensus::ConsensusDriver;
    for (name, total) in totals {
        assert_eq!(
            driver.load_dense_seq(&key(name)).await.expect("load"),
            *total
        );
    }
}

/// `target/<profile>/examples/NAME`, the example binaries `cargo test`
/// builds beside the test binaries.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // The test binary is target/<profile>/deps/<name>-<hash>.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary inside target/<profile>/deps");
    let bin = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "example binary {} is missing: run `cargo test` (which builds the examples) \
         or `cargo build --examples` first",
        bin.display()
    );
    bin
}

/// Milliseconds since the Unix epoch by the system clock.
pub fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
    )
    .expect("milliseconds fit u64")
}

/// Writes each of the driver's files once: `state` (high-water 1000),
/// `dense` (3 values of "orders") and `leases` ([`full_leases`]).
pub async fn write_each_file(driver: &tsoracle_driver_file::FileDriver) {
    use tsoracle_consensus::ConsensusDriver;
    use tsoracle_driver_file::LEADER_EPOCH;
    driver
        .persist_high_water(1_000, LEADER_EPOCH)
        .await
        .unwrap();
    driver
        .advance_dense(&key("orders"), 3, LEADER_EPOCH)
        .await
        .unwrap();
    driver
        .persist_leases(&full_leases(), LEADER_EPOCH)
        .await
        .unwrap();
}
