//! Helpers shared by the integration tests. Each test file uses a subset.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    text
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
