//! The `IDENTITY` file: where a state directory comes from, so that two
//! copies of one oracle can be told for what they are.
//!
//! Pure functions over bytes: nothing here touches the filesystem.
//!
//! A driver writes `IDENTITY` the first time it opens a directory that has
//! none (a new oracle, or one an older tool made), with a random origin id,
//! and records the device and inode of the directory it sits in. A copy of
//! the directory (a `cp -a`, a restored backup, a copy on another machine)
//! carries the same origin id, but sits in another directory: the next open
//! logs that it runs on a copy, a restore or a move of the origin, and
//! records the new place. Two directories with one origin id are copies of
//! one oracle: at most one of them may ever serve again.
//!
//! The file carries nothing the oracle's values depend on: a damaged one is
//! refused like any other (nothing is guessed), and deleting it is safe (the
//! next open writes a new origin).
//!
//! | field | size |
//! |---|---|
//! | magic `TSOI` | 4 |
//! | version `1` | 1 |
//! | origin id | 16 |
//! | created at, Unix ms, u64 | 8 |
//! | device where last opened, u64 | 8 |
//! | inode where last opened, u64 | 8 |
//! | CRC-32C of every byte before it | 4 |
//!
//! ```
//! use tsoracle_driver_file::identity_record::{self, Origin};
//!
//! let origin = Origin { id: [7; 16], created_ms: 1_764_000_000_000, device: 2049, inode: 131_073 };
//! let bytes = identity_record::encode(&origin);
//! assert_eq!(bytes.len(), identity_record::RECORD_LEN);
//! assert_eq!(identity_record::decode(&bytes), Ok(origin));
//! ```

use std::fmt;

use crate::codec::{self, CRC_LEN, Reader};
use crate::record::RecordError;

/// The four bytes every `IDENTITY` file starts with.
pub const MAGIC: [u8; 4] = *b"TSOI";

/// The layout version this crate reads and writes.
pub const VERSION: u8 = 1;

/// Exact length of an `IDENTITY` file.
pub const RECORD_LEN: usize = 4 + 1 + 16 + 8 + 8 + 8 + CRC_LEN;

/// What an `IDENTITY` file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Random, written once: shared by every copy of the directory.
    pub id: [u8; 16],
    /// When it was written, Unix milliseconds.
    pub created_ms: u64,
    /// The device of the directory the file was last opened in.
    pub device: u64,
    /// The inode of the directory the file was last opened in.
    pub inode: u64,
}

impl Origin {
    /// The origin id in lowercase hexadecimal (32 characters).
    pub fn id_hex(&self) -> String {
        self.id.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "origin {} (created at {} ms), last opened at device {:#x} inode {}",
            self.id_hex(),
            self.created_ms,
            self.device,
            self.inode
        )
    }
}

/// Encodes an `IDENTITY` file.
pub fn encode(origin: &Origin) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&origin.id);
    out.extend_from_slice(&origin.created_ms.to_le_bytes());
    out.extend_from_slice(&origin.device.to_le_bytes());
    out.extend_from_slice(&origin.inode.to_le_bytes());
    codec::push_crc(&mut out);
    out
}

/// Decodes an `IDENTITY` file.
///
/// # Errors
///
/// A framing defect ([`RecordError::BadMagic`],
/// [`RecordError::UnsupportedVersion`], [`RecordError::TooShort`],
/// [`RecordError::CrcMismatch`]) or a length other than [`RECORD_LEN`]
/// ([`RecordError::TooLong`]).
pub fn decode(bytes: &[u8]) -> Result<Origin, RecordError> {
    codec::check_header(bytes, MAGIC, VERSION)?;
    if bytes.len() > RECORD_LEN {
        return Err(RecordError::TooLong {
            len: bytes.len(),
            expected: RECORD_LEN,
        });
    }
    let covered = codec::check_frame(bytes, MAGIC, VERSION, RECORD_LEN)?;
    let mut reader = Reader::new(covered, 5);
    let mut id = [0u8; 16];
    id.copy_from_slice(reader.take(16, "origin id")?);
    let origin = Origin {
        id,
        created_ms: reader.u64("created at")?,
        device: reader.u64("device")?,
        inode: reader.u64("inode")?,
    };
    reader.finish()?;
    Ok(origin)
}
