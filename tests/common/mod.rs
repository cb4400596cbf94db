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
