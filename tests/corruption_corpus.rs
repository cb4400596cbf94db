//! A corpus of damaged state directories, each refused by
//! `FileDriver::open_or_init` with an error that names the file and the
//! defect, and each left byte-for-byte as it was found.
//!
//! This complements `corruption_is_refused.rs` (one case per corruption
//! class, every bit flip of the `highwater` fixture's `state`, every
//! truncation of every fixture file) with what it does not do: every single
//! bit flip of each file of the `full` fixture, bytes appended after the
//! CRC (with and without a CRC re-sealed over them), each file's bytes in
//! the files it was not written for, semantic nonsense under a valid CRC
//! derived from the real fixture bytes, empty `dense` and `leases` files,
//! and a directory where a file should be.
//!
//! One temporary copy of the fixture serves every case: only the damaged
//! file is rewritten, and restored afterwards.

mod common;

use std::io;
use std::path::Path;

use tsoracle_driver_file::record::RecordError;
use tsoracle_driver_file::{
    FileDriver, FileDriverError, FileOp, dense_record, lease_record, record,
};

use common::{
    copy_fixture, crc_mismatch, decode_as, dir_contents, fixture_dir, fixture_file, normalized,
    seal, truncated,
};

const FILES: [&str; 3] = ["state", "dense", "leases"];

fn fixture(file: &str) -> Vec<u8> {
    fixture_file("full", file)
}

fn magic_of(file: &str) -> [u8; 4] {
    match file {
        "state" => record::MAGIC,
        "dense" => dense_record::MAGIC,
        "leases" => lease_record::MAGIC,
        other => panic!("no magic for {other}"),
    }
}

fn min_len(file: &str) -> usize {
    match file {
        "state" => record::RECORD_LEN,
        "dense" => dense_record::MIN_LEN,
        "leases" => lease_record::MIN_LEN,
        other => panic!("no minimum for {other}"),
    }
}

/// `bytes` without their CRC trailer.
fn body(bytes: &[u8]) -> Vec<u8> {
    bytes[..bytes.len() - 4].to_vec()
}

/// What a case must be refused with.
#[derive(Debug)]
enum Refusal {
    /// `Corrupt` naming the file, with this defect as its source.
    Corrupt(RecordError),
    /// `Io` naming the path, failing in this operation with this kind.
    Io(FileOp, io::ErrorKind),
}

/// One damaged directory: `file` replaced by `damage`.
struct Case {
    file: &'static str,
    name: String,
    damage: Damage,
    refusal: Refusal,
}

enum Damage {
    Bytes(Vec<u8>),
    Directory,
}

fn bytes_case(file: &'static str, name: String, bytes: Vec<u8>, expected: RecordError) -> Case {
    Case {
        file,
        name,
        damage: Damage::Bytes(bytes),
        refusal: Refusal::Corrupt(expected),
    }
}

/// The directory every case is planted in: a copy of the `full` fixture.
struct Corpus {
    dir: tempfile::TempDir,
    cases: usize,
}

impl Corpus {
    fn new() -> Self {
        let dir = copy_fixture("full");
        assert!(
            dir.path().join("LOCK").exists(),
            "the fixture brings its LOCK"
        );
        Corpus { dir, cases: 0 }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Plants the case, checks the refusal twice (the refused open released
    /// its lock, so the second is refused for the same reason) and that the
    /// directory is unchanged, then restores the file.
    fn run(&mut self, case: Case) {
        let dir = self.path().to_path_buf();
        let target = dir.join(case.file);
        let what = format!("{}: {}", case.file, case.name);
        match &case.damage {
            Damage::Bytes(bytes) => {
                if let Refusal::Corrupt(expected) = &case.refusal {
                    // The codec agrees on the defect before the driver is asked.
                    let err = decode_as(case.file, bytes)
                        .expect_err(&format!("{what}: the codec must refuse it"));
                    assert_eq!(&normalized(err), expected, "{what}: codec");
                }
                std::fs::write(&target, bytes).expect("plant damaged file");
            }
            Damage::Directory => {
                std::fs::remove_file(&target).expect("remove file");
                std::fs::create_dir(&target).expect("plant directory");
                std::fs::write(target.join("inside"), b"x").expect("file inside");
            }
        }
        let before = dir_contents(&dir);
        for attempt in ["first", "second"] {
            let err = match FileDriver::open_or_init(&dir) {
                Ok(_) => panic!("{what}: opened ({attempt} attempt)"),
                Err(err) => err,
            };
            assert_refusal(&err, &target, &case.refusal, &format!("{what} ({attempt})"));
            assert_eq!(
                dir_contents(&dir),
                before,
                "{what}: directory changed by a refused open"
            );
        }
        match case.damage {
            Damage::Bytes(_) => {}
            Damage::Directory => {
                assert_eq!(
                    std::fs::read(target.join("inside")).expect("still there"),
                    b"x",
                    "{what}: the directory's content changed"
                );
                assert_eq!(
                    std::fs::read_dir(&target).expect("dir").count(),
                    1,
                    "{what}"
                );
                std::fs::remove_dir_all(&target).expect("remove planted directory");
            }
        }
        std::fs::write(&target, fixture(case.file)).expect("restore fixture file");
        self.cases += 1;
    }
}

fn assert_refusal(err: &FileDriverError, target: &Path, refusal: &Refusal, what: &str) {
    let message = err.to_string();
    assert!(
        message.contains(&target.display().to_string()),
        "{what}: message `{message}` does not name the file"
    );
    let cause = std::error::Error::source(err).expect("a refusal has a source");
    match (err, refusal) {
        (FileDriverError::Corrupt { path, source, .. }, Refusal::Corrupt(expected)) => {
            assert_eq!(path, target, "{what}: path");
            assert_eq!(&normalized(source.clone()), expected, "{what}: defect");
            assert_eq!(cause.to_string(), source.to_string(), "{what}: source");
        }
        (
            FileDriverError::Io {
                op, path, source, ..
            },
            Refusal::Io(want_op, kind),
        ) => {
            assert_eq!(path, target, "{what}: path");
            assert_eq!(op, want_op, "{what}: operation");
            assert_eq!(source.kind(), *kind, "{what}: cause {source}");
            assert_eq!(cause.to_string(), source.to_string(), "{what}: source");
        }
        (other, _) => panic!("{what}: expected {refusal:?}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Every single-bit flip.
// ---------------------------------------------------------------------------

/// What a flipped bit at `index` must be reported as: the header is checked
/// first, then the CRC (which every other flip breaks).
fn flip_refusal(file: &str, damaged: &[u8], index: usize) -> RecordError {
    match index {
        0..=3 => RecordError::BadMagic {
            expected: magic_of(file),
            found: damaged[..4].try_into().expect("4 bytes"),
        },
        4 => RecordError::UnsupportedVersion {
            found: damaged[4],
            supported: 1,
        },
        _ => crc_mismatch(damaged),
    }
}

fn every_bit_flip_of(file: &'static str) -> usize {
    let valid = fixture(file);
    decode_as(file, &valid).expect("the fixture file is valid");
    let mut corpus = Corpus::new();
    for index in 0..valid.len() {
        for bit in 0..8 {
            let mut damaged = valid.clone();
            damaged[index] ^= 1 << bit;
            let expected = flip_refusal(file, &damaged, index);
            corpus.run(bytes_case(
                file,
                format!("byte {index} bit {bit} flipped"),
                damaged,
                expected,
            ));
        }
    }
    assert_eq!(corpus.cases, valid.len() * 8);
    println!(
        "corruption_corpus: {} single-bit flips of full/{file} refused, directory unchanged",
        corpus.cases
    );
    corpus.cases
}

#[test]
fn every_bit_flip_of_the_full_state_file_is_refused() {
    assert_eq!(every_bit_flip_of("state"), 17 * 8);
}

#[test]
fn every_bit_flip_of_the_full_dense_file_is_refused() {
    assert_eq!(every_bit_flip_of("dense"), 52 * 8);
}

#[test]
fn every_bit_flip_of_the_full_leases_file_is_refused() {
    assert_eq!(every_bit_flip_of("leases"), 109 * 8);
}

// ---------------------------------------------------------------------------
// Everything else.
// ---------------------------------------------------------------------------

/// Bytes appended after the CRC, raw and with a CRC re-sealed over them.
fn trailing_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for file in FILES {
        let valid = fixture(file);
        for extra in [1usize, 4, 17] {
            let junk: Vec<u8> = (0..extra).map(|i| 0xa5 ^ i as u8).collect();
            let mut appended = valid.clone();
            appended.extend_from_slice(&junk);
            let raw_expected = match file {
                "state" => RecordError::TooLong {
                    len: valid.len() + extra,
                    expected: record::RECORD_LEN,
                },
                _ => crc_mismatch(&appended),
            };
            cases.push(bytes_case(
                file,
                format!("{extra} bytes appended after the crc"),
                appended,
                raw_expected,
            ));

            let mut resealed = body(&valid);
            resealed.extend_from_slice(&junk);
            let resealed = seal(resealed);
            let sealed_expected = match file {
                "state" => RecordError::TooLong {
                    len: valid.len() + extra,
                    expected: record::RECORD_LEN,
                },
                _ => RecordError::TrailingBytes {
                    offset: valid.len() - 4,
                    count: extra,
                },
            };
            cases.push(bytes_case(
                file,
                format!("{extra} bytes appended before a re-sealed crc"),
                resealed,
                sealed_expected,
            ));
        }
        // The old trailer kept as data and a new CRC over the whole file:
        // what a writer that appended instead of truncating would leave.
        let doubled = seal(valid.clone());
        let expected = match file {
            "state" => RecordError::TooLong {
                len: valid.len() + 4,
                expected: record::RECORD_LEN,
            },
            _ => RecordError::TrailingBytes {
                offset: valid.len() - 4,
                count: 4,
            },
        };
        cases.push(bytes_case(
            file,
            "the whole file sealed again".to_owned(),
            doubled,
            expected,
        ));
    }
    cases
}

/// Each file's bytes where another file should be. `corruption_is_refused`
/// has dense→state, leases→dense and state→leases; these are the others.
fn wrong_file_cases() -> Vec<Case> {
    [("state", "dense"), ("dense", "leases"), ("leases", "state")]
        .into_iter()
        .map(|(source, target)| {
            bytes_case(
                target,
                format!("the {source} file's bytes"),
                fixture(source),
                RecordError::BadMagic {
                    expected: magic_of(target),
                    found: magic_of(source),
                },
            )
        })
        .collect()
}

/// Offsets in the `full` fixture, from FORMAT.md.
const DENSE_BODY_START: usize = 4 + 1 + 8 + 4;
const LEASES_BODY_START: usize = 4 + 1 + 4;
/// `orders`: 2 + 6 + 8 bytes; `users` follows.
const DENSE_SECOND_KEY: usize = DENSE_BODY_START + 2 + 6 + 8;
/// The first lease (id 2, holder `svc-b`) is 43 + 5 bytes.
const FIRST_LEASE_LEN: usize = 43 + 5;
const FIRST_LEASE_FLAG: usize = LEASES_BODY_START + FIRST_LEASE_LEN - 1;

/// `edit` applied to the fixture's covered bytes, then a valid CRC over them.
fn resealed(file: &str, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut covered = body(&fixture(file));
    edit(&mut covered);
    seal(covered)
}

/// Semantic nonsense under a valid CRC, made from the real fixture bytes
/// (`corruption_is_refused` builds its own files from FORMAT.md).
fn semantic_cases() -> Vec<Case> {
    let version = |file: &'static str, found: u8| {
        bytes_case(
            file,
            format!("version {found}, valid crc"),
            resealed(file, |bytes| bytes[4] = found),
            RecordError::UnsupportedVersion {
                found,
                supported: 1,
            },
        )
    };
    let lower_magic = |file: &'static str| {
        let mut found = magic_of(file);
        found[0] = found[0].to_ascii_lowercase();
        bytes_case(
            file,
            "lower-case magic, valid crc".to_owned(),
            resealed(file, |bytes| bytes[0] = found[0]),
            RecordError::BadMagic {
                expected: magic_of(file),
                found,
            },
        )
    };
    vec![
        version("state", 0),
        version("dense", 2),
        version("leases", 2),
        lower_magic("dense"),
        lower_magic("leases"),
        bytes_case(
            "state",
            "high-water 2^46 (one above the maximum), valid crc".to_owned(),
            resealed("state", |bytes| {
                bytes[5..13].copy_from_slice(&(1u64 << 46).to_le_bytes());
            }),
            RecordError::HighWaterOutOfRange {
                value: 1 << 46,
                max: (1 << 46) - 1,
            },
        ),
        bytes_case(
            "dense",
            "`orders` and `users` swapped, valid crc".to_owned(),
            resealed("dense", |bytes| {
                let orders = bytes[DENSE_BODY_START..DENSE_SECOND_KEY].to_vec();
                let users = bytes[DENSE_SECOND_KEY..].to_vec();
                bytes.truncate(DENSE_BODY_START);
                bytes.extend_from_slice(&users);
                bytes.extend_from_slice(&orders);
            }),
            RecordError::KeysNotAscending { index: 1 },
        ),
        bytes_case(
            "dense",
            "`users` renamed `order`, before `orders`, valid crc".to_owned(),
            resealed("dense", |bytes| {
                // Same length: `users` (5 bytes) becomes `order`.
                bytes[DENSE_SECOND_KEY + 2..DENSE_SECOND_KEY + 7].copy_from_slice(b"order");
            }),
            RecordError::KeysNotAscending { index: 1 },
        ),
        bytes_case(
            "dense",
            "key count u32::MAX, valid crc".to_owned(),
            resealed("dense", |bytes| {
                bytes[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
            }),
            truncated(body(&fixture("dense")).len()),
        ),
        bytes_case(
            "leases",
            "the first lease's id raised to the second's, valid crc".to_owned(),
            resealed("leases", |bytes| {
                bytes[LEASES_BODY_START..LEASES_BODY_START + 8]
                    .copy_from_slice(&7u64.to_le_bytes());
            }),
            RecordError::LeaseIdsNotAscending {
                index: 1,
                lease_id: 7,
            },
        ),
        bytes_case(
            "leases",
            "superseded flag 2 on the fixture's first lease, valid crc".to_owned(),
            resealed("leases", |bytes| bytes[FIRST_LEASE_FLAG] = 2),
            RecordError::BadSupersededFlag { index: 0, found: 2 },
        ),
        bytes_case(
            "leases",
            "record count u32::MAX, valid crc".to_owned(),
            resealed("leases", |bytes| {
                bytes[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
            }),
            truncated(body(&fixture("leases")).len()),
        ),
        bytes_case(
            "leases",
            "holder length 65535, valid crc".to_owned(),
            resealed("leases", |bytes| {
                bytes[LEASES_BODY_START + 8..LEASES_BODY_START + 10]
                    .copy_from_slice(&u16::MAX.to_le_bytes());
            }),
            truncated(LEASES_BODY_START + 10),
        ),
    ]
}

fn empty_and_directory_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = ["dense", "leases"]
        .into_iter()
        .map(|file| {
            bytes_case(
                file,
                "zero-length file".to_owned(),
                Vec::new(),
                RecordError::TooShort {
                    len: 0,
                    min: min_len(file),
                },
            )
        })
        .collect();
    for file in FILES {
        cases.push(Case {
            file,
            name: "a directory in its place".to_owned(),
            damage: Damage::Directory,
            refusal: Refusal::Io(FileOp::Read, io::ErrorKind::IsADirectory),
        });
    }
    cases
}

#[test]
fn appended_misplaced_nonsensical_empty_and_directory_files_are_refused() {
    let mut corpus = Corpus::new();
    let groups = [
        ("trailing bytes", trailing_cases()),
        ("wrong file", wrong_file_cases()),
        ("semantic nonsense with a valid crc", semantic_cases()),
        ("empty or a directory", empty_and_directory_cases()),
    ];
    let mut counts = Vec::new();
    for (group, cases) in groups {
        let before = corpus.cases;
        for case in cases {
            corpus.run(case);
        }
        counts.push(format!("{} {group}", corpus.cases - before));
    }
    // Every case restored what it damaged: the copy is the fixture again,
    // and it opens.
    assert_eq!(
        dir_contents(corpus.path()),
        dir_contents(&fixture_dir("full"))
    );
    FileDriver::open_or_init(corpus.path()).expect("the restored copy opens");
    println!(
        "corruption_corpus: {} cases refused ({}), directory unchanged",
        corpus.cases,
        counts.join(", ")
    );
}

#[test]
fn a_directory_where_the_lock_file_should_be_is_refused() {
    let corpus = Corpus::new();
    let dir = corpus.path();
    let lock = dir.join("LOCK");
    std::fs::remove_file(&lock).expect("remove LOCK");
    std::fs::create_dir(&lock).expect("plant directory");
    let before = dir_contents(dir);
    let err = FileDriver::open_or_init(dir).expect_err("refused");
    match &err {
        FileDriverError::Io {
            op, path, source, ..
        } => {
            assert_eq!(*op, FileOp::Lock);
            assert_eq!(path, &lock);
            assert_eq!(source.kind(), io::ErrorKind::IsADirectory, "{source}");
        }
        other => panic!("expected an Io error, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&lock.display().to_string()),
        "{err}"
    );
    let err = FileDriver::init_seeded(dir, 1).expect_err("seeding refused too");
    assert!(
        matches!(
            err,
            FileDriverError::Io {
                op: FileOp::Lock,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(dir_contents(dir), before);
    assert!(lock.is_dir());
}
