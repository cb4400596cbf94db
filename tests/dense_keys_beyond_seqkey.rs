//! Every valid `dense` file is read: FORMAT.md allows any UTF-8 key of up to
//! 65,535 bytes, while the trait's `SeqKey` holds 1 to 128 bytes. Keys it
//! cannot hold (empty, or longer) are reported as such
//! (`DenseState::unaddressable`, a warning at open), kept byte for byte
//! through every rewrite, and counted toward the cap; they are never taken
//! for corruption.

mod common;

use tsoracle_consensus::{ConsensusDriver, ConsensusError};
use tsoracle_driver_file::dense_record::{self, DenseState, UnaddressableKey};
use tsoracle_driver_file::{FileDriver, LEADER_EPOCH, read_state_dir};

use common::{key, seal};

/// A `dense` file built by hand from FORMAT.md, keys in the order given.
fn dense_file(cap: u64, keys: &[(&[u8], u64)]) -> Vec<u8> {
    let mut body = b"TSOD\x01".to_vec();
    body.extend_from_slice(&cap.to_le_bytes());
    body.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    for (name, value) in keys {
        body.extend_from_slice(&(name.len() as u16).to_le_bytes());
        body.extend_from_slice(name);
        body.extend_from_slice(&value.to_le_bytes());
    }
    seal(body)
}

fn keys() -> (Vec<u8>, Vec<u8>) {
    (vec![b'm'; 129], vec![b'z'; usize::from(u16::MAX)])
}

#[test]
fn empty_long_and_maximal_keys_decode_and_re_encode_identically() {
    let (long, longest) = keys();
    let bytes = dense_file(
        10,
        &[
            (b"", 1),
            (b"a", 2),
            (&long, 3),
            (b"orders", 4),
            (&longest, 5),
        ],
    );
    let state = dense_record::decode(&bytes).expect("a valid file decodes");
    assert_eq!(state.counters.len(), 2);
    assert_eq!(state.counters[&key("a")], 2);
    assert_eq!(state.counters[&key("orders")], 4);
    assert_eq!(state.unaddressable.len(), 3);
    let empty = UnaddressableKey::new("").unwrap();
    assert_eq!(state.unaddressable[&empty], 1);
    assert_eq!(empty.reason(), "empty");
    let long_key = UnaddressableKey::new(String::from_utf8(long).unwrap()).unwrap();
    assert_eq!(state.unaddressable[&long_key], 3);
    assert_eq!(long_key.reason(), "longer than 128 bytes");
    assert_eq!(state.key_count(), 5);
    assert_eq!(dense_record::encode(&state), bytes, "byte for byte");
}

#[test]
fn unaddressable_keys_cannot_be_built_from_addressable_or_oversized_ones() {
    assert!(UnaddressableKey::new("orders").is_none());
    assert!(UnaddressableKey::new("x".repeat(128)).is_none());
    assert!(UnaddressableKey::new("x".repeat(usize::from(u16::MAX) + 1)).is_none());
    assert!(UnaddressableKey::new("x".repeat(usize::from(u16::MAX))).is_some());
}

#[tokio::test]
async fn the_driver_opens_such_a_file_keeps_the_keys_and_counts_them_toward_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let (long, _) = keys();
    std::fs::write(
        tmp.path().join("dense"),
        dense_file(3, &[(b"", 100), (&long, 200), (b"orders", 7)]),
    )
    .unwrap();

    let driver = FileDriver::open_or_init(tmp.path()).expect("a valid file opens");
    assert_eq!(driver.load_dense_seq(&key("orders")).await.unwrap(), 7);
    assert_eq!(
        driver
            .advance_dense(&key("orders"), 5, LEADER_EPOCH)
            .await
            .unwrap(),
        7
    );
    // Cap 3, three keys held: a new key is refused.
    match driver.advance_dense(&key("new"), 1, LEADER_EPOCH).await {
        Err(ConsensusError::SeqKeyCardinalityExceeded { cap: 3 }) => {}
        other => panic!("expected the cap, got {other:?}"),
    }
    drop(driver);

    let found = read_state_dir(tmp.path()).unwrap();
    let dense: DenseState = found.dense.expect("dense file");
    assert_eq!(dense.counters[&key("orders")], 12);
    assert_eq!(
        dense.unaddressable[&UnaddressableKey::new("").unwrap()],
        100,
        "kept through the rewrite"
    );
    assert_eq!(
        dense.unaddressable[&UnaddressableKey::new(String::from_utf8(long).unwrap()).unwrap()],
        200
    );
}

#[test]
fn non_utf8_keys_are_still_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("dense"),
        dense_file(10, &[(&[0xff, 0xfe], 1)]),
    )
    .unwrap();
    let err = FileDriver::open_or_init(tmp.path()).unwrap_err();
    assert!(common::error_chain(&err).contains("not UTF-8"), "{err}");
}
