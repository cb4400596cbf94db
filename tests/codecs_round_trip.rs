//! The three record codecs are exact inverses of each other on valid input,
//! agree byte for byte with an independent model of FORMAT.md, and read and
//! re-write the reference fixtures without changing a byte. So is the
//! identity record, the value of the directory's `user.tsoracle.identity`
//! attribute, against a model of its module docs.

mod common;

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use tsoracle_core::{LeaseRecord, PHYSICAL_MS_MAX, SeqKey};
use tsoracle_driver_file::dense_record::{self, DenseState};
use tsoracle_driver_file::lease_record;
use tsoracle_driver_file::record::{self, RecordError};

use common::{fixture_file, full_leases, key};

// ---------------------------------------------------------------------------
// An independent model of FORMAT.md: plain byte pushing, no library code.
// ---------------------------------------------------------------------------

fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

fn model_state(high_water: u64) -> Vec<u8> {
    let mut body = b"TSOR".to_vec();
    body.push(1);
    body.extend_from_slice(&high_water.to_le_bytes());
    seal(body)
}

/// `entries` in any order; the model sorts them by key bytes as FORMAT.md says.
fn model_dense(cap: u64, entries: &[(String, u64)]) -> Vec<u8> {
    let mut sorted: Vec<&(String, u64)> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut body = b"TSOD".to_vec();
    body.push(1);
    body.extend_from_slice(&cap.to_le_bytes());
    body.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
    for (key, counter) in sorted {
        body.extend_from_slice(&(key.len() as u16).to_le_bytes());
        body.extend_from_slice(key.as_bytes());
        body.extend_from_slice(&counter.to_le_bytes());
    }
    seal(body)
}

/// `leases` must already be in ascending id order.
fn model_leases(leases: &[LeaseRecord]) -> Vec<u8> {
    let mut body = b"TSOO".to_vec();
    body.push(1);
    body.extend_from_slice(&(leases.len() as u32).to_le_bytes());
    for lease in leases {
        body.extend_from_slice(&lease.lease_id.to_le_bytes());
        body.extend_from_slice(&(lease.holder.len() as u16).to_le_bytes());
        body.extend_from_slice(&lease.holder);
        body.extend_from_slice(&lease.holder_epoch.to_le_bytes());
        body.extend_from_slice(&lease.ttl_ms.to_le_bytes());
        body.extend_from_slice(&lease.ts_upper_bound.to_le_bytes());
        body.extend_from_slice(&lease.expires_at_ms.to_le_bytes());
        body.push(u8::from(lease.superseded));
    }
    seal(body)
}

fn dense_state(cap: u64, entries: &BTreeMap<String, u64>) -> DenseState {
    DenseState {
        cap,
        counters: entries
            .iter()
            .map(|(k, v)| {
                (
                    SeqKey::try_new(k.clone()).expect("strategy keys are valid"),
                    *v,
                )
            })
            .collect(),
        unaddressable: BTreeMap::new(),
    }
}

// ---------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------

/// Valid sequence keys: 1 to 128 bytes of UTF-8. Up to 32 arbitrary chars
/// (at most 4 bytes each, so at most 128 bytes), or long ASCII keys up to
/// the 128-byte limit itself.
fn seq_key() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any::<char>(), 1..=32).prop_map(String::from_iter),
        "[a-z0-9_.-]{1,128}",
    ]
}

fn lease_body() -> impl Strategy<Value = (Vec<u8>, u64, u64, u64, u64, bool)> {
    (
        vec(any::<u8>(), 0..48),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
    )
}

fn lease(id: u64, body: (Vec<u8>, u64, u64, u64, u64, bool)) -> LeaseRecord {
    let (holder, holder_epoch, ttl_ms, ts_upper_bound, expires_at_ms, superseded) = body;
    LeaseRecord {
        lease_id: id,
        holder,
        holder_epoch,
        ttl_ms,
        ts_upper_bound,
        expires_at_ms,
        superseded,
    }
}

/// A set of leases with distinct ids, in ascending id order.
fn lease_set() -> impl Strategy<Value = Vec<LeaseRecord>> {
    btree_map(any::<u64>(), lease_body(), 0..12)
        .prop_map(|map| map.into_iter().map(|(id, body)| lease(id, body)).collect())
}

/// The same set, plus a permutation of it.
fn lease_set_shuffled() -> impl Strategy<Value = (Vec<LeaseRecord>, Vec<LeaseRecord>)> {
    lease_set().prop_flat_map(|sorted| {
        let shuffled = Just(sorted.clone()).prop_shuffle();
        (Just(sorted), shuffled)
    })
}

// ---------------------------------------------------------------------------
// state
// ---------------------------------------------------------------------------

proptest! {
    #[test]
    fn state_encode_then_decode_is_identity(high_water in 0..=PHYSICAL_MS_MAX) {
        let bytes = record::encode(high_water);
        prop_assert_eq!(bytes.len(), record::RECORD_LEN);
        prop_assert_eq!(bytes.to_vec(), model_state(high_water));
        prop_assert_eq!(record::decode(&bytes), Ok(high_water));
    }

    /// Any 17 bytes with the right magic, version and CRC: decoding then
    /// re-encoding gives the same bytes back, or the value is out of range
    /// and refused.
    #[test]
    fn state_decode_then_encode_is_identity(
        raw in prop_oneof![0..=PHYSICAL_MS_MAX, PHYSICAL_MS_MAX + 1..=u64::MAX],
    ) {
        let bytes = model_state(raw);
        match record::decode(&bytes) {
            Ok(value) => {
                prop_assert!(raw <= PHYSICAL_MS_MAX);
                prop_assert_eq!(value, raw);
                prop_assert_eq!(record::encode(value).to_vec(), bytes);
            }
            Err(err) => {
                prop_assert!(raw > PHYSICAL_MS_MAX);
                prop_assert_eq!(err, RecordError::HighWaterOutOfRange { value: raw, max: PHYSICAL_MS_MAX });
            }
        }
    }
}

#[test]
fn state_round_trips_at_the_range_edges() {
    for value in [0, 1, PHYSICAL_MS_MAX - 1, PHYSICAL_MS_MAX] {
        assert_eq!(record::decode(&record::encode(value)), Ok(value));
        assert_eq!(record::encode(value).to_vec(), model_state(value));
    }
}

// ---------------------------------------------------------------------------
// dense
// ---------------------------------------------------------------------------

proptest! {
    #[test]
    fn dense_encode_then_decode_is_identity(
        cap in any::<u64>(),
        entries in btree_map(seq_key(), any::<u64>(), 0..24),
    ) {
        let state = dense_state(cap, &entries);
        let bytes = dense_record::encode(&state);
        prop_assert_eq!(dense_record::decode(&bytes), Ok(state));
    }

    /// Bytes built by the model from FORMAT.md decode to the state they
    /// describe, and the library re-encodes them to the very same bytes.
    #[test]
    fn dense_decode_then_encode_is_identity(
        cap in any::<u64>(),
        entries in btree_map(seq_key(), any::<u64>(), 0..24),
    ) {
        let pairs: Vec<(String, u64)> = entries.iter().map(|(k, v)| (k.clone(), *v)).rev().collect();
        let bytes = model_dense(cap, &pairs);
        let decoded = dense_record::decode(&bytes)?;
        prop_assert_eq!(&decoded, &dense_state(cap, &entries));
        prop_assert_eq!(dense_record::encode(&decoded), bytes);
    }
}

#[test]
fn dense_round_trips_empty_and_default() {
    let empty = DenseState::default();
    assert_eq!(empty.cap, 10_000, "FORMAT.md: default key cap 10,000");
    let bytes = dense_record::encode(&empty);
    assert_eq!(bytes.len(), 21, "FORMAT.md: at least 21 bytes");
    assert_eq!(bytes, model_dense(10_000, &[]));
    assert_eq!(dense_record::decode(&bytes), Ok(empty));
}

// ---------------------------------------------------------------------------
// leases
// ---------------------------------------------------------------------------

proptest! {
    /// Encoding any permutation of a lease set gives the bytes of the set
    /// sorted by id, which decode back to the sorted set.
    #[test]
    fn leases_encode_sorts_by_id_then_decode_is_identity(
        (sorted, shuffled) in lease_set_shuffled(),
    ) {
        let bytes = lease_record::encode(&shuffled)?;
        prop_assert_eq!(&bytes, &model_leases(&sorted));
        prop_assert_eq!(lease_record::decode(&bytes)?, sorted);
    }

    #[test]
    fn leases_decode_then_encode_is_identity(sorted in lease_set()) {
        let bytes = model_leases(&sorted);
        let decoded = lease_record::decode(&bytes)?;
        prop_assert_eq!(&decoded, &sorted);
        prop_assert_eq!(lease_record::encode(&decoded)?, bytes);
    }

    /// Two leases sharing an id cannot be stored (ids are strictly
    /// ascending on disk), whatever else differs between them.
    #[test]
    fn leases_with_a_repeated_id_are_unencodable(
        sorted in lease_set().prop_filter("need one lease", |s| !s.is_empty()),
        pick in any::<prop::sample::Index>(),
        other in lease_body(),
        position in any::<prop::sample::Index>(),
    ) {
        let original = &sorted[pick.index(sorted.len())];
        let twin = lease(original.lease_id, other);
        let mut leases = sorted.clone();
        leases.insert(position.index(leases.len() + 1), twin);
        prop_assert!(matches!(
            lease_record::encode(&leases),
            Err(RecordError::Unencodable(_))
        ));
    }

    #[test]
    fn leases_with_a_holder_over_65535_bytes_are_unencodable(
        sorted in lease_set(),
        extra in 0usize..64,
        body in lease_body(),
    ) {
        // An id no other lease has, so only the holder length is wrong.
        let id = sorted.iter().map(|l| l.lease_id).max().map_or(0, |m| m.wrapping_add(1));
        prop_assume!(sorted.iter().all(|l| l.lease_id != id));
        let mut long = lease(id, body);
        long.holder = vec![b'h'; 65_536 + extra];
        let mut leases = sorted;
        leases.push(long);
        prop_assert!(matches!(
            lease_record::encode(&leases),
            Err(RecordError::Unencodable(_))
        ));
    }
}

#[test]
fn lease_holder_of_exactly_65535_bytes_round_trips() {
    let mut longest = lease(1, (vec![b'x'; 65_535], 2, 3, 4, 5, true));
    longest.holder[0] = 0xff;
    let bytes = lease_record::encode(std::slice::from_ref(&longest)).expect("65535 fits a u16");
    assert_eq!(bytes, model_leases(std::slice::from_ref(&longest)));
    assert_eq!(lease_record::decode(&bytes), Ok(vec![longest]));
}

#[test]
fn empty_lease_set_round_trips() {
    let bytes = lease_record::encode(&[]).expect("empty set");
    assert_eq!(bytes.len(), 13, "FORMAT.md: at least 13 bytes");
    assert_eq!(bytes, model_leases(&[]));
    assert_eq!(lease_record::decode(&bytes), Ok(vec![]));
}

// ---------------------------------------------------------------------------
// The reference fixtures: decode to FORMAT.md's values, re-encode to the
// same bytes.
// ---------------------------------------------------------------------------

#[test]
fn fixture_state_files_decode_to_the_listed_values_and_re_encode_identically() {
    for (dir, expected) in [
        ("highwater", 1_764_000_000_123u64),
        ("seeded", 1_700_000_000_000),
        ("full", 1_764_000_555_000),
    ] {
        let bytes = fixture_file(dir, "state");
        assert_eq!(record::decode(&bytes), Ok(expected), "{dir}/state");
        assert_eq!(record::encode(expected).to_vec(), bytes, "{dir}/state");
        assert_eq!(model_state(expected), bytes, "{dir}/state (model)");
    }
}

#[test]
fn fixture_dense_file_decodes_to_the_listed_values_and_re_encodes_identically() {
    let bytes = fixture_file("full", "dense");
    let expected = DenseState {
        cap: 10_000,
        counters: [(key("orders"), 42), (key("users"), 7)]
            .into_iter()
            .collect(),
        unaddressable: BTreeMap::new(),
    };
    let decoded = dense_record::decode(&bytes).expect("full/dense decodes");
    assert_eq!(decoded, expected);
    assert_eq!(dense_record::encode(&expected), bytes);
    assert_eq!(
        model_dense(10_000, &[("users".into(), 7), ("orders".into(), 42)]),
        bytes
    );
}

#[test]
fn fixture_leases_file_decodes_to_the_listed_values_and_re_encodes_identically() {
    let bytes = fixture_file("full", "leases");
    let expected = full_leases();
    assert_eq!(lease_record::decode(&bytes), Ok(expected.clone()));
    // Given in reverse order, the encoder still writes ascending ids.
    let reversed: Vec<LeaseRecord> = expected.iter().rev().cloned().collect();
    assert_eq!(lease_record::encode(&reversed).expect("encodable"), bytes);
    assert_eq!(model_leases(&expected), bytes);
}

// ---------------------------------------------------------------------------
// The identity record (the directory's extended attribute)
// ---------------------------------------------------------------------------

/// The layout `identity_record`'s module docs give: `TSOI`, version 1, the
/// origin id, created at, device, inode (u64 LE each), CRC-32C.
fn model_identity(id: [u8; 16], created_ms: u64, device: u64, inode: u64) -> Vec<u8> {
    let mut body = b"TSOI".to_vec();
    body.push(1);
    body.extend_from_slice(&id);
    for value in [created_ms, device, inode] {
        body.extend_from_slice(&value.to_le_bytes());
    }
    seal(body)
}

proptest! {
    #[test]
    fn identity_encode_then_decode_is_identity(
        id in any::<[u8; 16]>(),
        created_ms in any::<u64>(),
        device in any::<u64>(),
        inode in any::<u64>(),
    ) {
        use tsoracle_driver_file::identity_record::{self, Origin};
        let origin = Origin { id, created_ms, opened_in: tsoracle_driver_file::vfs::DirIdentity { device, inode } };
        let bytes = identity_record::encode(&origin);
        prop_assert_eq!(bytes.len(), identity_record::RECORD_LEN);
        prop_assert_eq!(&bytes, &model_identity(id, created_ms, device, inode));
        prop_assert_eq!(identity_record::decode(&bytes), Ok(origin));
    }
}
