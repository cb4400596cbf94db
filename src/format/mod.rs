//! The on-disk format of a state directory: pure codecs over bytes, one
//! module per file, and the framing they share. Nothing here touches the
//! filesystem (that is [`store`](crate::store)'s job).
//!
//! | module | file | public path |
//! |---|---|---|
//! | [`state`] | `state`: the high-water record and its marks | `tsoracle_driver_file::record` |
//! | [`dense`] | `dense`: the dense counters and key cap | `tsoracle_driver_file::dense_record` |
//! | [`leases`] | `leases`: the lease set | `tsoracle_driver_file::lease_record` |
//! | [`identity`] | the directory's identity attribute | `tsoracle_driver_file::identity_record` |
//! | `framing` | header, reader and CRC-32C trailer shared by all four | (private) |

pub mod dense;
mod framing;
pub mod identity;
pub mod leases;
pub mod state;

use state::Mark;

/// Why a record file's bytes were refused.
///
/// Shared by the codecs ([`record`](crate::record),
/// [`dense_record`](crate::dense_record), [`lease_record`](crate::lease_record),
/// [`identity_record`](crate::identity_record)):
/// each variant names the defect; the file it came from is added by
/// [`FileDriverError::Corrupt`](crate::FileDriverError::Corrupt).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Fewer bytes than the smallest valid record.
    #[error("too short: {len} bytes, at least {min} expected")]
    TooShort {
        /// Bytes present.
        len: usize,
        /// Smallest valid length.
        min: usize,
    },
    /// More bytes than a fixed-length record has.
    #[error("too long: {len} bytes, exactly {expected} expected")]
    TooLong {
        /// Bytes present.
        len: usize,
        /// The fixed record length.
        expected: usize,
    },
    /// The first four bytes are not this file's magic.
    #[error("bad magic {found:02x?}, expected {expected:02x?}")]
    BadMagic {
        /// The magic this file must start with.
        expected: [u8; 4],
        /// The bytes found instead.
        found: [u8; 4],
    },
    /// A layout version this crate does not know.
    #[error("unsupported version {found}, this build reads version {supported}")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// The version this crate reads.
        supported: u8,
    },
    /// A valid `state` record that carries a [`Mark`]: the directory must
    /// not serve (read by [`record::decode`](crate::record::decode);
    /// [`record::decode_record`](crate::record::decode_record) accepts it).
    #[error("the record is marked {mark} (version byte {version:#04x}) and must not be served", version = .mark.version())]
    Marked {
        /// The mark.
        mark: Mark,
        /// The high-water it keeps.
        high_water: u64,
    },
    /// The stored CRC-32C does not match the bytes it covers.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC read from the trailer.
        stored: u32,
        /// CRC computed over the covered bytes.
        computed: u32,
    },
    /// The high-water exceeds `tsoracle_core::PHYSICAL_MS_MAX`.
    #[error("high-water {value} is above the 46-bit physical-millisecond maximum {max}")]
    HighWaterOutOfRange {
        /// The stored value.
        value: u64,
        /// `PHYSICAL_MS_MAX`.
        max: u64,
    },
    /// The body ended inside a field.
    #[error("truncated: field `{field}` at offset {offset} runs past the end")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where it started.
        offset: usize,
    },
    /// Bytes remain after the last entry the header announced.
    #[error("{count} trailing bytes after the last entry at offset {offset}")]
    TrailingBytes {
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
    /// A dense key is not a valid sequence key (UTF-8, 1 to 128 bytes).
    #[error("dense key #{index} is invalid: {reason}")]
    InvalidKey {
        /// Zero-based position of the key in the file.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Dense keys are not in strictly ascending byte order (or repeat).
    #[error("dense key #{index} is not strictly after the key before it")]
    KeysNotAscending {
        /// Zero-based position of the offending key.
        index: usize,
    },
    /// Lease ids are not strictly ascending (or repeat).
    #[error("lease #{index} (id {lease_id}) is not strictly after the lease before it")]
    LeaseIdsNotAscending {
        /// Zero-based position of the offending lease.
        index: usize,
        /// Its id.
        lease_id: u64,
    },
    /// A lease's `superseded` flag byte is neither 0 nor 1.
    #[error("lease #{index} has superseded flag {found}, only 0 or 1 are valid")]
    BadSupersededFlag {
        /// Zero-based position of the lease.
        index: usize,
        /// The byte found.
        found: u8,
    },
    /// Encoding refused: a field does not fit its on-disk width, or two
    /// leases share an id.
    #[error("cannot encode: {0}")]
    Unencodable(&'static str),
}
