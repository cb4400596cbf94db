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

use super::RecordError;
use super::framing::{self as codec, CRC_LEN, Reader};

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
    /// Counters whose keys the format allows but [`SeqKey`] cannot hold
    /// (see [`UnaddressableKey`]). The trait cannot name them, so no call
    /// advances them; they count toward the cap and are written back
    /// unchanged with every rewrite of the file.
    pub unaddressable: BTreeMap<UnaddressableKey, u64>,
}

impl Default for DenseState {
    /// No counters, cap [`DEFAULT_KEY_CAP`]: what a missing `dense` file means.
    fn default() -> Self {
        Self {
            cap: DEFAULT_KEY_CAP,
            counters: BTreeMap::new(),
            unaddressable: BTreeMap::new(),
        }
    }
}

impl DenseState {
    /// How many keys the file holds, addressable or not: what the cap
    /// limits.
    pub fn key_count(&self) -> usize {
        self.counters.len() + self.unaddressable.len()
    }
}

/// A dense key that the `dense` format can store (any UTF-8 up to 65,535
/// bytes) but that [`SeqKey`] refuses: the empty key, or one longer than
/// [`MAX_SEQ_KEY_LEN`] bytes. Other tools of the ecosystem may have written
/// such keys; this crate reads and keeps them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnaddressableKey(String);

impl UnaddressableKey {
    /// `Some` when `key` fits the format but not a [`SeqKey`]; `None` for a
    /// key `SeqKey` accepts (use that) or one over 65,535 bytes (which no
    /// `dense` file can hold).
    ///
    /// ```
    /// use tsoracle_driver_file::dense_record::UnaddressableKey;
    ///
    /// assert!(UnaddressableKey::new("").is_some());
    /// assert!(UnaddressableKey::new("x".repeat(200)).is_some());
    /// assert!(UnaddressableKey::new("orders").is_none());
    /// ```
    pub fn new(key: impl Into<String>) -> Option<Self> {
        let key = key.into();
        let fits_format = key.len() <= usize::from(u16::MAX);
        (fits_format && SeqKey::try_new(key.as_str()).is_err()).then_some(Self(key))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Why `SeqKey` cannot hold it: `"empty"` or `"longer than 128 bytes"`.
    pub fn reason(&self) -> &'static str {
        if self.0.is_empty() {
            "empty"
        } else {
            "longer than 128 bytes"
        }
    }
}

/// Encodes `state` as the bytes of a `dense` file.
///
/// Infallible: a [`SeqKey`] is at most 128 bytes and an
/// [`UnaddressableKey`] at most 65,535, so every length fits its field, and
/// both maps keep keys in byte order, which the merge below preserves. The
/// key count is a u32; a map with more keys than that cannot be built in
/// memory on any machine this crate runs on, and the cap keeps real ones
/// far below.
pub fn encode(state: &DenseState) -> Vec<u8> {
    let body: usize = all_keys(state)
        .map(|(key, _)| PER_KEY_OVERHEAD + key.len())
        .sum();
    let mut out = Vec::with_capacity(MIN_LEN + body);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&state.cap.to_le_bytes());
    // The count cannot exceed u32::MAX (see above); saturate rather than wrap.
    let count = u32::try_from(state.key_count()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for (key, value) in all_keys(state).take(count as usize) {
        let key = key.as_bytes();
        // Both key types are at most u16::MAX bytes (see above).
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&value.to_le_bytes());
    }
    codec::push_crc(&mut out);
    out
}

/// Every key of `state` with its counter, addressable or not, in ascending
/// byte order (the order the file stores them in). The two maps never share
/// a key: one holds what `SeqKey` accepts, the other what it refuses.
fn all_keys(state: &DenseState) -> impl Iterator<Item = (&str, u64)> {
    let mut ours = state
        .counters
        .iter()
        .map(|(key, value)| (key.as_str(), *value))
        .peekable();
    let mut theirs = state
        .unaddressable
        .iter()
        .map(|(key, value)| (key.as_str(), *value))
        .peekable();
    std::iter::from_fn(move || match (ours.peek(), theirs.peek()) {
        (Some(a), Some(b)) if b.0 < a.0 => theirs.next(),
        (Some(_), _) => ours.next(),
        (None, _) => theirs.next(),
    })
}

/// Decodes the bytes of a `dense` file.
///
/// # Errors
///
/// Any framing defect ([`RecordError::BadMagic`],
/// [`RecordError::UnsupportedVersion`], [`RecordError::TooShort`],
/// [`RecordError::CrcMismatch`]), a field cut short
/// ([`RecordError::Truncated`]), bytes after the last key
/// ([`RecordError::TrailingBytes`]), a key that is not UTF-8
/// ([`RecordError::InvalidKey`]), or keys out of order or repeated
/// ([`RecordError::KeysNotAscending`]). An empty key, or one longer than
/// `SeqKey` allows, is valid: it lands in [`DenseState::unaddressable`].
pub fn decode(bytes: &[u8]) -> Result<DenseState, RecordError> {
    let covered = codec::check_frame(bytes, MAGIC, VERSION, MIN_LEN)?;
    let mut reader = Reader::new(covered, 5);
    let cap = reader.u64("cap")?;
    let count = reader.u32("key count")?;
    let mut state = DenseState {
        cap,
        ..DenseState::default()
    };
    let mut previous: Option<&[u8]> = None;
    for index in 0..count as usize {
        let len = reader.u16("key length")?;
        let raw = reader.take(usize::from(len), "key")?;
        let value = reader.u64("counter")?;
        if previous.is_some_and(|prev| prev >= raw) {
            return Err(RecordError::KeysNotAscending { index });
        }
        previous = Some(raw);
        let text = std::str::from_utf8(raw).map_err(|_| RecordError::InvalidKey {
            index,
            reason: "not UTF-8",
        })?;
        if raw.len() <= MAX_SEQ_KEY_LEN
            && let Ok(key) = SeqKey::try_new(text)
        {
            state.counters.insert(key, value);
        } else {
            // At most u16::MAX bytes (its length field) and refused by
            // SeqKey: exactly what UnaddressableKey holds.
            state
                .unaddressable
                .insert(UnaddressableKey(text.to_owned()), value);
        }
    }
    reader.finish()?;
    Ok(state)
}
