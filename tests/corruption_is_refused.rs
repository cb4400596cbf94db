//! Every kind of damage to `state`, `dense` or `leases` is refused, with the
//! `RecordError` variant that names it: by the codecs, and by
//! `FileDriver::open_or_init`, which names the file and leaves the directory
//! exactly as it found it.
//!
//! The semantically bad inputs (a value out of range, keys out of order, a
//! bad flag, ...) carry a *valid* CRC, built here by hand from FORMAT.md, so
//! they prove the check behind the CRC, not the CRC itself.

mod common;

use std::path::Path;

use tsoracle_core::PHYSICAL_MS_MAX;
use tsoracle_driver_file::record::RecordError;
use tsoracle_driver_file::{FileDriver, FileDriverError, dense_record, lease_record, record};

use common::{
    copy_fixture, crc_mismatch, decode_as, dir_contents, fixture_file, invalid_key, normalized,
    seal, truncated,
};

// ---------------------------------------------------------------------------
// Hand-built bytes, from FORMAT.md.
// ---------------------------------------------------------------------------

fn header(magic: &[u8; 4], version: u8) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.push(version);
    out
}

fn state_bytes(version: u8, high_water: u64) -> Vec<u8> {
    let mut body = header(b"TSOR", version);
    body.extend_from_slice(&high_water.to_le_bytes());
    seal(body)
}

/// A dense body (not sealed) with an explicit key count, so the count may
/// disagree with the entries.
fn dense_body(version: u8, count: u32, entries: &[(&[u8], u64)]) -> Vec<u8> {
    let mut body = header(b"TSOD", version);
    body.extend_from_slice(&10_000u64.to_le_bytes());
    body.extend_from_slice(&count.to_le_bytes());
    for (key, counter) in entries {
        body.extend_from_slice(&(key.len() as u16).to_le_bytes());
        body.extend_from_slice(key);
        body.extend_from_slice(&counter.to_le_bytes());
    }
    body
}

fn dense_bytes(count: u32, entries: &[(&[u8], u64)]) -> Vec<u8> {
    seal(dense_body(1, count, entries))
}

/// The per-lease fields that matter for corruption; the rest are fixed.
struct RawLease<'a> {
    id: u64,
    holder: &'a [u8],
    flag: u8,
}

const fn raw(id: u64, holder: &[u8], flag: u8) -> RawLease<'_> {
    RawLease { id, holder, flag }
}

fn lease_body(version: u8, count: u32, leases: &[RawLease<'_>]) -> Vec<u8> {
    let mut body = header(b"TSOO", version);
    body.extend_from_slice(&count.to_le_bytes());
    for lease in leases {
        body.extend_from_slice(&lease.id.to_le_bytes());
        body.extend_from_slice(&(lease.holder.len() as u16).to_le_bytes());
        body.extend_from_slice(lease.holder);
        for field in [3u64, 10_000, 1_764_000_555_000, 1_764_000_565_000] {
            body.extend_from_slice(&field.to_le_bytes());
        }
        body.push(lease.flag);
    }
    body
}

fn lease_bytes(count: u32, leases: &[RawLease<'_>]) -> Vec<u8> {
    seal(lease_body(1, count, leases))
}

fn flip(mut bytes: Vec<u8>, index: usize, mask: u8) -> Vec<u8> {
    bytes[index] ^= mask;
    bytes
}

/// One damaged file and the error it must be refused with.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expected: RecordError,
}

fn case(name: &'static str, bytes: Vec<u8>, expected: RecordError) -> Case {
    Case {
        name,
        bytes,
        expected,
    }
}

const STATE_LEN: usize = 17;
const DENSE_MIN: usize = 21;
const LEASES_MIN: usize = 13;
/// Header + cap + key count.
const DENSE_BODY_START: usize = 4 + 1 + 8 + 4;
/// Header + record count.
const LEASES_BODY_START: usize = 4 + 1 + 4;
/// Fixed bytes of one lease besides its holder.
const LEASE_FIXED: usize = 8 + 2 + 8 + 8 + 8 + 8 + 1;

fn state_cases() -> Vec<Case> {
    let valid = fixture_file("highwater", "state");
    let mut too_long = valid.clone();
    too_long.push(0);
    vec![
        case(
            "empty",
            vec![],
            RecordError::TooShort {
                len: 0,
                min: STATE_LEN,
            },
        ),
        case(
            "one byte short",
            valid[..16].to_vec(),
            RecordError::TooShort {
                len: 16,
                min: STATE_LEN,
            },
        ),
        case(
            "one byte too long",
            too_long,
            RecordError::TooLong {
                len: 18,
                expected: STATE_LEN,
            },
        ),
        case(
            "a dense file in its place",
            fixture_file("full", "dense"),
            RecordError::BadMagic {
                expected: *b"TSOR",
                found: *b"TSOD",
            },
        ),
        case(
            "bad magic with a valid crc",
            seal(flip(valid[..13].to_vec(), 0, 0x20)),
            RecordError::BadMagic {
                expected: *b"TSOR",
                found: *b"tSOR",
            },
        ),
        case(
            "version 2 with a valid crc",
            state_bytes(2, 1_764_000_000_123),
            RecordError::UnsupportedVersion {
                found: 2,
                supported: 1,
            },
        ),
        case(
            "crc trailer damaged",
            flip(valid.clone(), 16, 0x01),
            crc_mismatch(&flip(valid.clone(), 16, 0x01)),
        ),
        case(
            "high-water bit flipped",
            flip(valid.clone(), 9, 0x80),
            crc_mismatch(&flip(valid.clone(), 9, 0x80)),
        ),
        case(
            "high-water one above the maximum, valid crc",
            state_bytes(1, PHYSICAL_MS_MAX + 1),
            RecordError::HighWaterOutOfRange {
                value: PHYSICAL_MS_MAX + 1,
                max: PHYSICAL_MS_MAX,
            },
        ),
        case(
            "high-water u64::MAX, valid crc",
            state_bytes(1, u64::MAX),
            RecordError::HighWaterOutOfRange {
                value: u64::MAX,
                max: PHYSICAL_MS_MAX,
            },
        ),
    ]
}

fn dense_cases() -> Vec<Case> {
    let valid = fixture_file("full", "dense");
    let empty = dense_bytes(0, &[]);
    let orders_len = 2 + 6 + 8;
    let users_len = 2 + 5 + 8;
    let mut cut_key = dense_body(1, 1, &[]);
    cut_key.extend_from_slice(&50u16.to_le_bytes());
    cut_key.extend_from_slice(b"orders");
    let mut cut_counter = dense_body(1, 1, &[]);
    cut_counter.extend_from_slice(&6u16.to_le_bytes());
    cut_counter.extend_from_slice(b"orders");
    cut_counter.extend_from_slice(&[42, 0, 0]);
    vec![
        case(
            "one byte short",
            empty[..DENSE_MIN - 1].to_vec(),
            RecordError::TooShort {
                len: DENSE_MIN - 1,
                min: DENSE_MIN,
            },
        ),
        case(
            "a leases file in its place",
            fixture_file("full", "leases"),
            RecordError::BadMagic {
                expected: *b"TSOD",
                found: *b"TSOO",
            },
        ),
        case(
            "version 0 with a valid crc",
            seal(dense_body(0, 0, &[])),
            RecordError::UnsupportedVersion {
                found: 0,
                supported: 1,
            },
        ),
        case(
            "counter bit flipped",
            flip(valid.clone(), 25, 0x04),
            crc_mismatch(&flip(valid.clone(), 25, 0x04)),
        ),
        case(
            "count says 3, two keys present",
            dense_bytes(3, &[(b"orders", 42), (b"users", 7)]),
            truncated(DENSE_BODY_START + orders_len + users_len),
        ),
        case(
            "key length runs past the end",
            seal(cut_key),
            truncated(DENSE_BODY_START + 2),
        ),
        case(
            "counter cut short",
            seal(cut_counter),
            truncated(DENSE_BODY_START + 2 + 6),
        ),
        case(
            "count says 1, two keys present",
            dense_bytes(1, &[(b"orders", 42), (b"users", 7)]),
            RecordError::TrailingBytes {
                offset: DENSE_BODY_START + orders_len,
                count: users_len,
            },
        ),
        case(
            "non-UTF-8 key, valid crc",
            dense_bytes(2, &[(b"orders", 42), (&[0xff, 0xfe, 0x80], 7)]),
            invalid_key(1),
        ),
        case(
            "keys descending, valid crc",
            dense_bytes(2, &[(b"users", 7), (b"orders", 42)]),
            RecordError::KeysNotAscending { index: 1 },
        ),
        case(
            "a key and its prefix, descending, valid crc",
            dense_bytes(3, &[(b"a", 1), (b"ab", 2), (b"a", 3)]),
            RecordError::KeysNotAscending { index: 2 },
        ),
        case(
            "duplicate key, valid crc",
            dense_bytes(2, &[(b"orders", 1), (b"orders", 2)]),
            RecordError::KeysNotAscending { index: 1 },
        ),
    ]
}

fn lease_cases() -> Vec<Case> {
    let valid = fixture_file("full", "leases");
    let empty = lease_bytes(0, &[]);
    let mut cut_holder = lease_body(1, 1, &[]);
    cut_holder.extend_from_slice(&7u64.to_le_bytes());
    cut_holder.extend_from_slice(&10u16.to_le_bytes());
    cut_holder.extend_from_slice(b"svc");
    vec![
        case(
            "one byte short",
            empty[..LEASES_MIN - 1].to_vec(),
            RecordError::TooShort {
                len: LEASES_MIN - 1,
                min: LEASES_MIN,
            },
        ),
        case(
            "a state file in its place",
            fixture_file("full", "state"),
            RecordError::BadMagic {
                expected: *b"TSOO",
                found: *b"TSOR",
            },
        ),
        case(
            "version 255 with a valid crc",
            seal(lease_body(255, 0, &[])),
            RecordError::UnsupportedVersion {
                found: 255,
                supported: 1,
            },
        ),
        case(
            "holder bit flipped",
            flip(valid.clone(), 20, 0x40),
            crc_mismatch(&flip(valid.clone(), 20, 0x40)),
        ),
        case(
            "count says 1, no lease present",
            lease_bytes(1, &[]),
            truncated(LEASES_BODY_START),
        ),
        case(
            "holder runs past the end",
            seal(cut_holder),
            truncated(LEASES_BODY_START + 8 + 2),
        ),
        case(
            "count says 1, two leases present",
            lease_bytes(1, &[raw(2, b"svc-b", 1), raw(7, b"svc-a", 0)]),
            RecordError::TrailingBytes {
                offset: LEASES_BODY_START + LEASE_FIXED + 5,
                count: LEASE_FIXED + 5,
            },
        ),
        case(
            "ids descending, valid crc",
            lease_bytes(2, &[raw(7, b"svc-a", 0), raw(2, b"svc-b", 1)]),
            RecordError::LeaseIdsNotAscending {
                index: 1,
                lease_id: 2,
            },
        ),
        case(
            "duplicate id, valid crc",
            lease_bytes(
                3,
                &[raw(1, b"x", 0), raw(7, b"svc-a", 0), raw(7, b"svc-b", 1)],
            ),
            RecordError::LeaseIdsNotAscending {
                index: 2,
                lease_id: 7,
            },
        ),
        case(
            "superseded flag 2, valid crc",
            lease_bytes(1, &[raw(7, b"svc-a", 2)]),
            RecordError::BadSupersededFlag { index: 0, found: 2 },
        ),
        case(
            "superseded flag 0xff on the second lease, valid crc",
            lease_bytes(2, &[raw(2, b"svc-b", 1), raw(7, b"svc-a", 0xff)]),
            RecordError::BadSupersededFlag {
                index: 1,
                found: 0xff,
            },
        ),
    ]
}

fn cases_for(file: &str) -> Vec<Case> {
    match file {
        "state" => state_cases(),
        "dense" => dense_cases(),
        "leases" => lease_cases(),
        other => panic!("no cases for {other}"),
    }
}

// ---------------------------------------------------------------------------
// Codec level.
// ---------------------------------------------------------------------------

fn assert_codec_refuses(file: &str) {
    let cases = cases_for(file);
    for case in &cases {
        let err = decode_as(file, &case.bytes)
            .expect_err(&format!("{file}: `{}` must be refused", case.name));
        assert_eq!(
            normalized(err.clone()),
            case.expected,
            "{file}: `{}` refused as {err}",
            case.name
        );
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn the_state_codec_refuses_every_corruption_class() {
    // The valid bytes the damaged ones derive from are themselves accepted.
    assert_eq!(
        record::decode(&fixture_file("highwater", "state")),
        Ok(1_764_000_000_123)
    );
    assert_eq!(
        record::decode(&state_bytes(1, PHYSICAL_MS_MAX)),
        Ok(PHYSICAL_MS_MAX)
    );
    assert_codec_refuses("state");
}

#[test]
fn the_dense_codec_refuses_every_corruption_class() {
    // The builder itself makes valid files when the content is valid.
    let good = dense_bytes(3, &[(b"a", 1), (b"ab", 2), (&[0xc3, 0xa9], 3)]);
    assert_eq!(
        dense_record::decode(&good).expect("valid").counters.len(),
        3
    );
    assert_eq!(
        good.len(),
        DENSE_MIN + (2 + 1 + 8) + (2 + 2 + 8) + (2 + 2 + 8)
    );
    assert_codec_refuses("dense");
}

#[test]
fn the_lease_codec_refuses_every_corruption_class() {
    let good = lease_bytes(2, &[raw(2, b"svc-b", 1), raw(7, b"svc-a", 0)]);
    let decoded = lease_record::decode(&good).expect("valid");
    assert_eq!(decoded.len(), 2);
    assert!(decoded[0].superseded && !decoded[1].superseded);
    assert_codec_refuses("leases");
}

// ---------------------------------------------------------------------------
// Driver level.
// ---------------------------------------------------------------------------

/// Opens `dir` and checks it is refused as a corrupt `file` with `expected`.
fn assert_open_refuses(dir: &Path, file: &str, expected: &RecordError, what: &str) {
    let err =
        FileDriver::open_or_init(dir).expect_err(&format!("{file}: `{what}` must be refused"));
    let message = err.to_string();
    match &err {
        FileDriverError::Corrupt { path, source, .. } => {
            assert_eq!(path, &dir.join(file), "{file}: `{what}`: path");
            assert!(path.ends_with(file));
            assert_eq!(
                &normalized(source.clone()),
                expected,
                "{file}: `{what}` refused as {source}"
            );
            // The message names the file; the defect is the error's source.
            assert!(
                message.contains(&path.display().to_string()),
                "{file}: `{what}`: message `{message}` does not name the file"
            );
            let cause = std::error::Error::source(&err).expect("corruption has a source");
            assert_eq!(cause.to_string(), source.to_string());
        }
        other => panic!("{file}: `{what}`: expected Corrupt, got {other:?}"),
    }
}

fn assert_driver_refuses(file: &str) {
    let dir = copy_fixture("full");
    for case in cases_for(file) {
        std::fs::write(dir.path().join(file), &case.bytes).expect("plant corrupt file");
        let before = dir_contents(dir.path());
        assert!(before.contains_key("LOCK"), "the fixture brings its LOCK");
        assert_open_refuses(dir.path(), file, &case.expected, case.name);
        assert_eq!(
            dir_contents(dir.path()),
            before,
            "{file}: `{}`: directory changed by a refused open",
            case.name
        );
        // The refused open released its lock: a second try is refused for
        // the same reason, not as AlreadyLocked.
        assert_open_refuses(dir.path(), file, &case.expected, case.name);
    }
}

#[test]
fn open_refuses_a_corrupt_state_file_naming_it_and_changing_nothing() {
    assert_driver_refuses("state");
}

#[test]
fn open_refuses_a_corrupt_dense_file_naming_it_and_changing_nothing() {
    assert_driver_refuses("dense");
}

#[test]
fn open_refuses_a_corrupt_leases_file_naming_it_and_changing_nothing() {
    assert_driver_refuses("leases");
}

#[test]
fn a_refused_directory_keeps_its_temp_debris() {
    // Debris is only cleaned up once every file decoded: a refused directory
    // is left exactly as found, `*.tmp` files included.
    let dir = copy_fixture("full");
    for temp in ["state.tmp", "dense.tmp", "leases.tmp"] {
        std::fs::write(dir.path().join(temp), b"half-written").expect("plant debris");
    }
    let bad = lease_bytes(1, &[raw(7, b"svc-a", 3)]);
    std::fs::write(dir.path().join("leases"), &bad).expect("plant corrupt leases");
    let before = dir_contents(dir.path());
    assert_open_refuses(
        dir.path(),
        "leases",
        &RecordError::BadSupersededFlag { index: 0, found: 3 },
        "bad flag with debris",
    );
    assert_eq!(dir_contents(dir.path()), before);
}

// ---------------------------------------------------------------------------
// Exhaustive damage to the fixtures.
// ---------------------------------------------------------------------------

#[test]
fn every_single_bit_flip_of_the_state_fixture_is_refused() {
    let valid = fixture_file("highwater", "state");
    assert_eq!(valid.len(), STATE_LEN);
    let dir = copy_fixture("highwater");
    for index in 0..valid.len() {
        for bit in 0..8 {
            let damaged = flip(valid.clone(), index, 1 << bit);
            let expected = match index {
                0..=3 => RecordError::BadMagic {
                    expected: *b"TSOR",
                    found: damaged[..4].try_into().expect("4 bytes"),
                },
                4 => RecordError::UnsupportedVersion {
                    found: damaged[4],
                    supported: 1,
                },
                // The CRC is checked before the value is read.
                _ => crc_mismatch(&damaged),
            };
            assert_eq!(
                record::decode(&damaged),
                Err(expected.clone()),
                "byte {index} bit {bit}"
            );
            std::fs::write(dir.path().join("state"), &damaged).expect("plant flipped state");
            let before = dir_contents(dir.path());
            assert_open_refuses(dir.path(), "state", &expected, "single bit flip");
            assert_eq!(dir_contents(dir.path()), before);
        }
    }
}

#[test]
fn every_truncation_of_every_fixture_file_is_refused() {
    for (fixture_name, file) in [
        ("highwater", "state"),
        ("seeded", "state"),
        ("full", "state"),
        ("full", "dense"),
        ("full", "leases"),
    ] {
        let valid = fixture_file(fixture_name, file);
        decode_as(file, &valid).expect("the untruncated fixture is valid");
        let dir = copy_fixture(fixture_name);
        // `seeded` has no LOCK; give it one so a refused open creates nothing.
        std::fs::write(dir.path().join("LOCK"), b"").expect("LOCK");
        for len in 0..valid.len() {
            let cut = &valid[..len];
            let err = decode_as(file, cut)
                .expect_err(&format!("{fixture_name}/{file} cut to {len} bytes"));
            let min = match file {
                "state" => STATE_LEN,
                "dense" => DENSE_MIN,
                _ => LEASES_MIN,
            };
            if len < min {
                assert_eq!(err, RecordError::TooShort { len, min });
            }
            std::fs::write(dir.path().join(file), cut).expect("plant truncated file");
            let before = dir_contents(dir.path());
            assert_open_refuses(dir.path(), file, &normalized(err), "truncation");
            assert_eq!(dir_contents(dir.path()), before);
        }
    }
}
