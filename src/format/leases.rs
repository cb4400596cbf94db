//! The `leases` file: the live lease set.
//!
//! Pure functions over bytes: nothing here touches the filesystem.
//!
//! | field | size |
//! |---|---|
//! | magic `TSOO` | 4 |
//! | version `1` | 1 |
//! | record count, u32 | 4 |
//! | per record, strictly ascending `lease_id`: lease_id u64, holder length u16, holder, holder_epoch u64, ttl_ms u64, ts_upper_bound u64, expires_at_ms u64, superseded u8 (0 or 1) | 43 + holder len |
//! | CRC-32C of every byte before it | 4 |
//!
//! ```
//! use tsoracle_core::LeaseRecord;
//! use tsoracle_driver_file::lease_record;
//!
//! let lease = LeaseRecord {
//!     lease_id: 7,
//!     holder: b"svc-a".to_vec(),
//!     holder_epoch: 3,
//!     ttl_ms: 10_000,
//!     ts_upper_bound: 1_764_000_555_000,
//!     expires_at_ms: 1_764_000_565_000,
//!     superseded: false,
//! };
//! let bytes = lease_record::encode(&[lease.clone()]).unwrap();
//! assert_eq!(lease_record::decode(&bytes).unwrap(), vec![lease]);
//! ```

use tsoracle_core::LeaseRecord;

use super::RecordError;
use super::framing::{self as codec, CRC_LEN, Reader};

/// The four bytes every `leases` file starts with.
pub const MAGIC: [u8; 4] = *b"TSOO";

/// The layout version this crate reads and writes.
pub const VERSION: u8 = 1;

/// Smallest valid file: header, count, CRC.
pub const MIN_LEN: usize = 4 + 1 + 4 + CRC_LEN;

/// Fixed bytes per lease besides its holder.
const PER_LEASE_OVERHEAD: usize = 8 + 2 + 8 + 8 + 8 + 8 + 1;

/// Encodes a lease set as the bytes of a `leases` file, in ascending
/// `lease_id` order whatever the order of `leases`.
///
/// # Errors
///
/// [`RecordError::Unencodable`] when two leases share an id (the format
/// stores ids strictly ascending), a holder is longer than 65,535 bytes, or
/// there are more than `u32::MAX` leases.
pub fn encode(leases: &[LeaseRecord]) -> Result<Vec<u8>, RecordError> {
    let count = u32::try_from(leases.len())
        .map_err(|_| RecordError::Unencodable("more than u32::MAX leases"))?;
    let mut sorted: Vec<&LeaseRecord> = leases.iter().collect();
    sorted.sort_unstable_by_key(|lease| lease.lease_id);
    if sorted
        .windows(2)
        .any(|pair| pair[0].lease_id == pair[1].lease_id)
    {
        return Err(RecordError::Unencodable("two leases share a lease_id"));
    }
    let body: usize = sorted
        .iter()
        .map(|lease| PER_LEASE_OVERHEAD + lease.holder.len())
        .sum();
    let mut out = Vec::with_capacity(MIN_LEN + body);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&count.to_le_bytes());
    for lease in sorted {
        let holder_len = u16::try_from(lease.holder.len())
            .map_err(|_| RecordError::Unencodable("lease holder longer than 65535 bytes"))?;
        out.extend_from_slice(&lease.lease_id.to_le_bytes());
        out.extend_from_slice(&holder_len.to_le_bytes());
        out.extend_from_slice(&lease.holder);
        out.extend_from_slice(&lease.holder_epoch.to_le_bytes());
        out.extend_from_slice(&lease.ttl_ms.to_le_bytes());
        out.extend_from_slice(&lease.ts_upper_bound.to_le_bytes());
        out.extend_from_slice(&lease.expires_at_ms.to_le_bytes());
        out.push(u8::from(lease.superseded));
    }
    codec::push_crc(&mut out);
    Ok(out)
}

/// Decodes the bytes of a `leases` file into leases in ascending `lease_id`.
///
/// # Errors
///
/// Any framing defect ([`RecordError::BadMagic`],
/// [`RecordError::UnsupportedVersion`], [`RecordError::TooShort`],
/// [`RecordError::CrcMismatch`]), a field cut short
/// ([`RecordError::Truncated`]), bytes after the last lease
/// ([`RecordError::TrailingBytes`]), ids out of order or repeated
/// ([`RecordError::LeaseIdsNotAscending`]) or a flag byte other than 0 or 1
/// ([`RecordError::BadSupersededFlag`]).
pub fn decode(bytes: &[u8]) -> Result<Vec<LeaseRecord>, RecordError> {
    let covered = codec::check_frame(bytes, MAGIC, VERSION, MIN_LEN)?;
    let mut reader = Reader::new(covered, 5);
    let count = reader.u32("record count")?;
    // Each lease takes at least PER_LEASE_OVERHEAD bytes: never reserve more
    // than the body could hold, whatever the count field claims.
    let plausible = covered.len() / PER_LEASE_OVERHEAD;
    let mut leases: Vec<LeaseRecord> = Vec::with_capacity((count as usize).min(plausible));
    for index in 0..count as usize {
        let lease_id = reader.u64("lease_id")?;
        let holder_len = reader.u16("holder length")?;
        let holder = reader.take(usize::from(holder_len), "holder")?.to_vec();
        let holder_epoch = reader.u64("holder_epoch")?;
        let ttl_ms = reader.u64("ttl_ms")?;
        let ts_upper_bound = reader.u64("ts_upper_bound")?;
        let expires_at_ms = reader.u64("expires_at_ms")?;
        let superseded = match reader.u8("superseded")? {
            0 => false,
            1 => true,
            found => return Err(RecordError::BadSupersededFlag { index, found }),
        };
        if leases.last().is_some_and(|prev| prev.lease_id >= lease_id) {
            return Err(RecordError::LeaseIdsNotAscending { index, lease_id });
        }
        leases.push(LeaseRecord {
            lease_id,
            holder,
            holder_epoch,
            ttl_ms,
            ts_upper_bound,
            expires_at_ms,
            superseded,
        });
    }
    reader.finish()?;
    Ok(leases)
}
