//! A state directory's identity: where it comes from, so that two copies of
//! one oracle can be told for what they are.
//!
//! Pure functions over bytes: nothing here touches the filesystem.
//!
//! # Where it is kept
//!
//! In the extended attribute [`IDENTITY_XATTR`](crate::IDENTITY_XATTR)
//! (`user.tsoracle.identity`) of the state directory itself, set and read
//! through the opened directory's descriptor. Not in a file inside it:
//! upstream's tools (`tsoracle export file`, `serve file`) refuse a state
//! directory that holds anything but `LOCK`, `state`, `dense` and `leases`.
//! Earlier versions of this crate wrote the same record as an `IDENTITY`
//! file ([`IDENTITY_FILE`](crate::IDENTITY_FILE)); opening such a directory
//! carries the file into the attribute, then removes the file, so that the
//! identity is in one or the other (or both) whenever a crash strikes.
//!
//! Where the filesystem has no user extended attributes (ramfs, vfat, most
//! network filesystems, tmpfs before Linux 6.6, Windows) the driver works
//! without an identity, and an `IDENTITY` file found there is removed: it
//! would keep upstream's tools from reading the directory, and nothing the
//! oracle serves depends on it.
//!
//! # What it records
//!
//! A driver records an identity the first time it opens a directory that
//! holds no state yet (a new oracle), with a random origin id, and the
//! device and inode of the directory. A copy of the directory carries the
//! same origin id when the copy keeps extended attributes (`cp -a`,
//! `rsync -X`, `tar --xattrs`; a plain `cp -r` does not), but sits in
//! another directory: the next open logs that it runs on a copy, a restore
//! or a move of the origin, and records the new place. Two directories with
//! one origin id are copies of one oracle: at most one of them may ever
//! serve again. A directory that holds state but no identity (another
//! tool's, or a copy that lost its attributes) is opened without writing
//! one.
//!
//! The record carries nothing the oracle's values depend on: a damaged one
//! is refused like a damaged state file (nothing is guessed), and removing
//! it is safe (a directory without state gets a new origin at its next
//! open). Failing to set it never keeps a driver from opening.
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
//! use tsoracle_driver_file::vfs::DirIdentity;
//!
//! let opened_in = DirIdentity { device: 2049, inode: 131_073 };
//! let origin = Origin { id: [7; 16], created_ms: 1_764_000_000_000, opened_in };
//! let bytes = identity_record::encode(&origin);
//! assert_eq!(bytes.len(), identity_record::RECORD_LEN);
//! assert_eq!(identity_record::decode(&bytes), Ok(origin));
//! ```

use std::fmt;

use super::RecordError;
use super::framing::{self as codec, CRC_LEN, Reader};
// The place a record names is what the filesystem seam reports: a plain
// pair of numbers, no I/O.
use crate::vfs::DirIdentity;

/// The four bytes every identity record starts with.
pub const MAGIC: [u8; 4] = *b"TSOI";

/// The layout version this crate reads and writes.
pub const VERSION: u8 = 1;

/// Exact length of an identity record.
pub const RECORD_LEN: usize = 4 + 1 + 16 + 8 + 8 + 8 + CRC_LEN;

/// What an identity record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Random, written once: shared by every copy of the directory.
    pub id: [u8; 16],
    /// When it was written, Unix milliseconds.
    pub created_ms: u64,
    /// The directory the record was last opened in (its device and inode).
    pub opened_in: DirIdentity,
}

impl Origin {
    /// The origin id in lowercase hexadecimal (32 characters).
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "origin {} (created at {} ms), last opened at {}",
            self.id_hex(),
            self.created_ms,
            self.opened_in
        )
    }
}

/// Encodes an identity record (the attribute's value).
pub fn encode(origin: &Origin) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&origin.id);
    out.extend_from_slice(&origin.created_ms.to_le_bytes());
    out.extend_from_slice(&origin.opened_in.device.to_le_bytes());
    out.extend_from_slice(&origin.opened_in.inode.to_le_bytes());
    codec::push_crc(&mut out);
    out
}

/// Decodes an identity record (the attribute's value, or an `IDENTITY`
/// file's bytes).
///
/// # Errors
///
/// A framing defect ([`RecordError::BadMagic`],
/// [`RecordError::UnsupportedVersion`], [`RecordError::TooShort`],
/// [`RecordError::CrcMismatch`]) or a length other than [`RECORD_LEN`]
/// ([`RecordError::TooLong`]).
pub fn decode(bytes: &[u8]) -> Result<Origin, RecordError> {
    let covered = codec::check_fixed_frame(bytes, MAGIC, VERSION, RECORD_LEN)?;
    let mut reader = Reader::new(covered, 5);
    let mut id = [0u8; 16];
    id.copy_from_slice(reader.take(16, "origin id")?);
    let origin = Origin {
        id,
        created_ms: reader.u64("created at")?,
        opened_in: DirIdentity {
            device: reader.u64("device")?,
            inode: reader.u64("inode")?,
        },
    };
    reader.finish()?;
    Ok(origin)
}
