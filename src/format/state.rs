//! The 17-byte high-water record stored in the `state` file, and the
//! [`RecordError`] every record codec of this crate reports.
//!
//! Pure functions over bytes: nothing here touches the filesystem.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `TSOR` |
//! | 4 | 1 | version: `1` for a live record, or a [`Mark`] (below) |
//! | 5 | 8 | high-water, u64 little-endian |
//! | 13 | 4 | CRC-32C (Castagnoli) of bytes `0..13`, little-endian |
//!
//! # Marks: a directory that must not serve
//!
//! A state directory whose state was carried to another oracle (retired),
//! that is being seeded, or that waits for `migrate finish` (pending) must
//! not serve, whichever driver opens it. Every driver of the ecosystem reads
//! `state` first and refuses a version it does not know, and none reads a
//! missing `state` as anything but a fresh oracle at 0. So the mark is the
//! version byte of the `state` record itself, with the high-water kept in
//! place (tools that describe or carry the directory still read it):
//!
//! | version byte | mark |
//! |---|---|
//! | `1` | none: a live record |
//! | `0x52` (`R`) | [`Mark::Retired`] |
//! | `0x53` (`S`) | [`Mark::Seeding`] |
//! | `0x50` (`P`) | [`Mark::Pending`] |
//!
//! The rest of the layout and the CRC (over bytes `0..13`, version
//! included) are those of version 1. [`decode`] reads live records only and
//! refuses a marked one with [`RecordError::Marked`]; [`decode_record`]
//! reads both.
//!
//! ```
//! use tsoracle_driver_file::record;
//!
//! let bytes = record::encode(1_764_000_000_123);
//! assert_eq!(bytes.len(), record::RECORD_LEN);
//! assert_eq!(&bytes[..4], b"TSOR");
//! assert_eq!(record::decode(&bytes), Ok(1_764_000_000_123));
//!
//! // One flipped bit anywhere is caught.
//! let mut damaged = bytes;
//! damaged[7] ^= 0x10;
//! assert!(matches!(
//!     record::decode(&damaged),
//!     Err(record::RecordError::CrcMismatch { .. })
//! ));
//! ```

use tsoracle_core::PHYSICAL_MS_MAX;

pub use super::RecordError;
use super::framing::{self as codec, CRC_LEN};

/// Exact length of an encoded high-water record.
pub const RECORD_LEN: usize = 17;

/// The four bytes every `state` file starts with.
pub const MAGIC: [u8; 4] = *b"TSOR";

/// The record layout version of a live `state` record.
pub const VERSION: u8 = 1;

/// Why a `state` record must not be served, carried in its version byte
/// (see the [module docs](self)).
///
/// ```
/// use tsoracle_driver_file::record::{self, Mark, RecordError, StateRecord};
///
/// let bytes = record::encode_marked(1_764_000_000_123, Mark::Retired);
/// assert_eq!(bytes[4], b'R');
/// assert_eq!(
///     record::decode_record(&bytes),
///     Ok(StateRecord { high_water: 1_764_000_000_123, mark: Some(Mark::Retired) })
/// );
/// // The live-only decoder refuses it, as every other driver does.
/// assert!(matches!(record::decode(&bytes), Err(RecordError::Marked { mark: Mark::Retired, .. })));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mark {
    /// The state was carried to another oracle (`migrate out`): serving it
    /// would hand out what that oracle hands out.
    Retired,
    /// A seed is being written: the directory may lack counters or leases.
    Seeding,
    /// Seeded by `migrate in`, waiting for `migrate finish` to prove the
    /// source stopped and raise the high-water over what it issued.
    Pending,
}

impl Mark {
    /// Every mark.
    pub const ALL: [Mark; 3] = [Mark::Retired, Mark::Seeding, Mark::Pending];

    /// The version byte that carries this mark.
    pub const fn version(self) -> u8 {
        match self {
            Mark::Retired => b'R',
            Mark::Seeding => b'S',
            Mark::Pending => b'P',
        }
    }

    /// The mark a version byte carries; `None` for any other byte.
    pub fn from_version(version: u8) -> Option<Mark> {
        Mark::ALL.into_iter().find(|mark| mark.version() == version)
    }

    /// One lowercase word: `retired`, `seeding`, `pending`.
    pub const fn name(self) -> &'static str {
        match self {
            Mark::Retired => "retired",
            Mark::Seeding => "seeding",
            Mark::Pending => "pending",
        }
    }
}

impl std::fmt::Display for Mark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded `state` record: the high-water and its mark, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRecord {
    /// The committed high-water, physical milliseconds.
    pub high_water: u64,
    /// `None` for a live record.
    pub mark: Option<Mark>,
}

const HIGH_WATER_OFFSET: usize = 5;
const CRC_OFFSET: usize = RECORD_LEN - CRC_LEN;

/// Encodes `high_water` as a 17-byte live `state` record.
///
/// Infallible: range checks belong to the caller (the driver refuses any
/// advance above `PHYSICAL_MS_MAX` before it encodes), and [`decode`]
/// refuses such a value when it reads it back.
pub fn encode(high_water: u64) -> [u8; RECORD_LEN] {
    encode_version(high_water, VERSION)
}

/// Encodes `high_water` as a 17-byte `state` record carrying `mark`.
pub fn encode_marked(high_water: u64, mark: Mark) -> [u8; RECORD_LEN] {
    encode_version(high_water, mark.version())
}

fn encode_version(high_water: u64, version: u8) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4] = version;
    out[HIGH_WATER_OFFSET..CRC_OFFSET].copy_from_slice(&high_water.to_le_bytes());
    let crc = crc32c::crc32c(&out[..CRC_OFFSET]);
    out[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a live `state` record and returns the high-water it holds.
///
/// # Errors
///
/// [`RecordError::Marked`] for a valid record that carries a [`Mark`];
/// [`RecordError::BadMagic`], [`RecordError::UnsupportedVersion`],
/// [`RecordError::TooShort`], [`RecordError::TooLong`],
/// [`RecordError::CrcMismatch`], or [`RecordError::HighWaterOutOfRange`]
/// when the value is above `tsoracle_core::PHYSICAL_MS_MAX`.
pub fn decode(bytes: &[u8]) -> Result<u64, RecordError> {
    match decode_record(bytes)? {
        StateRecord {
            high_water,
            mark: None,
        } => Ok(high_water),
        StateRecord {
            high_water,
            mark: Some(mark),
        } => Err(RecordError::Marked { mark, high_water }),
    }
}

/// Decodes a `state` record, live or marked.
///
/// # Errors
///
/// As [`decode`], but for [`RecordError::Marked`].
pub fn decode_record(bytes: &[u8]) -> Result<StateRecord, RecordError> {
    // The version byte, when present, is checked against the one it
    // claims to be: a known mark reads as that mark, anything else as an
    // unsupported version of a live record.
    let mark = bytes.get(4).copied().and_then(Mark::from_version);
    let version = mark.map_or(VERSION, Mark::version);
    let covered = codec::check_fixed_frame(bytes, MAGIC, version, RECORD_LEN)?;
    let mut value = [0u8; 8];
    value.copy_from_slice(&covered[HIGH_WATER_OFFSET..CRC_OFFSET]);
    let value = u64::from_le_bytes(value);
    if value > PHYSICAL_MS_MAX {
        return Err(RecordError::HighWaterOutOfRange {
            value,
            max: PHYSICAL_MS_MAX,
        });
    }
    Ok(StateRecord {
        high_water: value,
        mark,
    })
}
