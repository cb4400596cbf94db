//! The `dense` file: every dense-sequence counter and the key-cardinality cap.
//!
//! Pure functions over bytes: nothing here touches the filesystem.
//!
//! | field | size |
//! |---|---|
//! | magic `TSOD` | 4 |
//! | version `1` | 1 |
//! | key-cardinality cap, u64 | 8 |
//! | key count, u32 | 4 |
//! | per key, strictly ascending by bytes: key length u16, key (UTF-8), counter u64 | 2 + len + 8 |
//! | CRC-32C of every byte before it | 4 |
//!
//! ```
//! use tsoracle_core::SeqKey;
//! use tsoracle_driver_file::dense_record::{self, DenseState};
//!
//! let mut state = DenseState::default();
//! state.counters.insert(SeqKey::try_new("orders").unwrap(), 42);
//! let bytes = dense_record::encode(&state);
//! assert_eq!(dense_record::decode(&bytes).unwrap(), state);
//! ```

use std::collections::BTreeMap;

use tsoracle_core::{MAX_SEQ_KEY_LEN, SeqKey};

use crate::codec::{self, CRC_LEN, Reader};
use crate::record::RecordError;

/// The four bytes every `dense` file starts with.
pub const MAGIC: [u8; 4] = *b"TSOD";

/// The layout version this crate reads and writes.
pub const VERSION: u8 = 1;

/// The key-cardinality cap of a directory that has no `dense` file yet.
pub const DEFAULT_KEY_CAP: u64 = 10_000;

/// Smallest valid file: header, cap, count, CRC.
pub const MIN_LEN: usize = 4 + 1 + 8 + 4 + CRC_LEN;

/// Fixed bytes per key besides the key itself: length prefix and counter.
const PER_KEY_OVERHEAD: usize = 2 + 8;

/// The content of a `dense` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenseState {
    /// How many distinct keys may ever exist; creating one more is refused.
    pub cap: u64,
    /// Each key's next unissued value. `SeqKey` orders by its bytes, which is
    /// the order the file stores keys in.
    pub counters: BTreeMap<SeqKey, u64>,
}

impl Default for DenseState {
    /// No counters, cap [`DEFAULT_KEY_CAP`]: what a missing `dense` file means.
    fn default() -> Self {
        Self {
            cap: DEFAULT_KEY_CAP,
            counters: BTreeMap::new(),
        }
    }
}

/// Encodes `state` as the bytes of a `dense` file.
///
/// Infallible: a [`SeqKey`] is at most 128 bytes, so every length fits its
/// field, and the map keeps keys in the order the format requires. The key
/// count is a u32; a map with more keys than that cannot be built in memory
/// on any machine this crate runs on, and the cap keeps real ones far below.
pub fn encode(state: &DenseState) -> Vec<u8> {
    let body: usize = state
        .counters
        .keys()
        .map(|key| PER_KEY_OVERHEAD + key.as_str().len())
        .sum();
    let mut out = Vec::with_capacity(MIN_LEN + body);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&state.cap.to_le_bytes());
    // The count cannot exceed u32::MAX (see above); saturate rather than wrap.
    let count = u32::try_from(state.counters.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for (key, value) in state.counters.iter().take(count as usize) {
        let key = key.as_str().as_bytes();
        // A SeqKey is at most MAX_SEQ_KEY_LEN (128) bytes: always fits a u16.
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&value.to_le_bytes());
    }
    codec::push_crc(&mut out);
    out
}

/// Decodes the bytes of a `dense` file.
///
/// # Errors
///
/// Any framing defect ([`RecordError::BadMagic`],
/// [`RecordError::UnsupportedVersion`], [`RecordError::TooShort`],
/// [`RecordError::CrcMismatch`]), a field cut short
/// ([`RecordError::Truncated`]), bytes after the last key
/// ([`RecordError::TrailingBytes`]), a key that is empty, too long or not
/// UTF-8 ([`RecordError::InvalidKey`]), or keys out of order or repeated
/// ([`RecordError::KeysNotAscending`]).
pub fn decode(bytes: &[u8]) -> Result<DenseState, RecordError> {
    let covered = codec::check_frame(bytes, MAGIC, VERSION, MIN_LEN)?;
    let mut reader = Reader::new(covered, 5);
    let cap = reader.u64("cap")?;
    let count = reader.u32("key count")?;
    let mut counters = BTreeMap::new();
    let mut previous: Option<SeqKey> = None;
    for index in 0..count as usize {
        let len = reader.u16("key length")?;
        let raw = reader.take(usize::from(len), "key")?;
        let value = reader.u64("counter")?;
        let key = parse_key(raw, index)?;
        if previous.as_ref().is_some_and(|prev| *prev >= key) {
            return Err(RecordError::KeysNotAscending { index });
        }
        previous = Some(key.clone());
        counters.insert(key, value);
    }
    reader.finish()?;
    Ok(DenseState { cap, counters })
}

fn parse_key(raw: &[u8], index: usize) -> Result<SeqKey, RecordError> {
    let invalid = |reason| RecordError::InvalidKey { index, reason };
    if raw.is_empty() {
        return Err(invalid("empty"));
    }
    if raw.len() > MAX_SEQ_KEY_LEN {
        return Err(invalid("longer than 128 bytes"));
    }
    let text = std::str::from_utf8(raw).map_err(|_| invalid("not UTF-8"))?;
    SeqKey::try_new(text).map_err(|_| invalid("rejected by SeqKey"))
}
