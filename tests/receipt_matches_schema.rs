//! `StoppedDir::receipt` writes the ecosystem's `tsoracle.stopped-file-state`
//! v1 receipt: the schema's fields in the schema's order, the reference
//! directory's values, and the SHA-256 of each file's bytes.

mod common;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tsoracle_driver_file::receipt::StoppedStateReceipt;
use tsoracle_driver_file::{FileDriverError, StoppedDir};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[test]
fn the_full_reference_directory_gives_the_schema_in_order() {
    let dir = common::copy_fixture("full");
    let receipt = StoppedDir::lock(dir.path())
        .expect("lock")
        .receipt()
        .expect("receipt");
    let value: Value = serde_json::to_value(&receipt).expect("json");
    // `Value` sorts its keys; the order is checked on the text itself, where
    // each top-level key starts a line indented by two spaces.
    let text = serde_json::to_string_pretty(&receipt).expect("text");
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("  \""))
        .filter_map(|rest| rest.split_once("\":").map(|(key, _)| key))
        .collect();
    assert_eq!(
        keys,
        [
            "schema",
            "schema_version",
            "producer",
            "driver",
            "epoch",
            "units",
            "files",
            "committed_reservation_high_water_physical_ms",
            "leases",
            "maximum_lease_upper_bound_physical_ms",
            "maximum_lease_expires_at_unix_ms",
            "dense_next_unallocated",
            "dense_cardinality_cap",
        ]
    );
    assert_eq!(value["schema"], "tsoracle.stopped-file-state");
    assert_eq!(value["schema_version"], 1);
    assert_eq!(value["producer"]["name"], "tsoracle-driver-file");
    assert_eq!(value["driver"], "file");
    assert_eq!(value["epoch"], 0);
    assert_eq!(
        value["units"]["dense_high_water"],
        "next unallocated ordinal, exclusive upper bound of reserved ordinals"
    );
    assert_eq!(
        value["committed_reservation_high_water_physical_ms"],
        1_764_000_555_000u64
    );
    assert_eq!(value["dense_next_unallocated"]["orders"], 42);
    assert_eq!(value["dense_next_unallocated"]["users"], 7);
    assert_eq!(value["dense_cardinality_cap"], 10_000);
    assert_eq!(
        value["maximum_lease_upper_bound_physical_ms"],
        1_764_000_555_000u64
    );
    assert_eq!(
        value["maximum_lease_expires_at_unix_ms"],
        1_764_000_565_000u64
    );
    let leases = value["leases"].as_array().expect("leases");
    assert_eq!(leases.len(), 2);
    assert_eq!(leases[0]["lease_id"], 2);
    assert_eq!(leases[0]["holder_hex"], "7376632d62"); // "svc-b"
    assert_eq!(leases[0]["superseded"], true);
    assert_eq!(leases[1]["lease_id"], 7);
    assert_eq!(
        leases[1]["ts_upper_bound_physical_ms"],
        1_764_000_555_000u64
    );

    let files = value["files"].as_array().expect("files");
    let names: Vec<&str> = files
        .iter()
        .map(|f| f["path"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["LOCK", "dense", "leases", "state"]);
    for file in files {
        let name = file["path"].as_str().expect("path");
        let bytes = std::fs::read(dir.path().join(name)).expect("read");
        assert_eq!(file["present"], true);
        assert_eq!(file["size_bytes"], bytes.len() as u64);
        assert_eq!(file["sha256"], sha256_hex(&bytes), "{name}");
    }
    assert_eq!(files[0]["format"], "native-lock-sentinel");
    assert_eq!(files[0]["format_version"], Value::Null);
    assert_eq!(files[1]["format"], "TSOD");
    assert_eq!(files[2]["format"], "TSOO");
    assert_eq!(files[3]["format"], "TSOR");
    assert_eq!(files[3]["format_version"], 1);

    // It reads back as the same receipt.
    let back: StoppedStateReceipt = serde_json::from_str(&text).expect("parse");
    assert_eq!(back, receipt);
}

#[test]
fn absent_files_are_null_and_a_missing_state_is_refused() {
    let dir = common::copy_fixture("seeded");
    let receipt = StoppedDir::lock(dir.path())
        .expect("lock")
        .receipt()
        .expect("receipt");
    let value = serde_json::to_value(&receipt).expect("json");
    let files = value["files"].as_array().expect("files");
    // Locking created the LOCK sentinel; dense and leases are absent.
    assert_eq!(files[0]["present"], true);
    for absent in &files[1..3] {
        assert_eq!(absent["present"], false);
        assert_eq!(absent["size_bytes"], Value::Null);
        assert_eq!(absent["sha256"], Value::Null);
    }
    assert_eq!(value["leases"], Value::Array(Vec::new()));
    assert_eq!(value["maximum_lease_upper_bound_physical_ms"], Value::Null);
    assert_eq!(value["dense_cardinality_cap"], 10_000);

    let empty = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        StoppedDir::lock(empty.path()).expect("lock").receipt(),
        Err(FileDriverError::NoStateFile { .. })
    ));
}
