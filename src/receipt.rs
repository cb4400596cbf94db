//! The stopped-state receipt: the tsoracle ecosystem's JSON description of a
//! stopped state directory, schema [`RECEIPT_SCHEMA`] version
//! [`RECEIPT_SCHEMA_VERSION`], so tools written for upstream read ours.
//!
//! [`StoppedDir::receipt`] builds one under the directory lock, with the
//! SHA-256 of each file's bytes and the values decoded from those very
//! bytes. Fields serialize in the schema's order; every number is an exact
//! integer.
//!
//! ```
//! use tsoracle_driver_file::{FileDriver, StoppedDir};
//!
//! let dir = tempfile::tempdir()?;
//! FileDriver::init_seeded(dir.path(), 1_764_000_000_123)?;
//! let receipt = StoppedDir::lock(dir.path())?.receipt()?;
//! assert_eq!(receipt.schema, "tsoracle.stopped-file-state");
//! assert_eq!(receipt.committed_reservation_high_water_physical_ms, 1_764_000_000_123);
//! let json = serde_json::to_string(&receipt)?;
//! assert!(json.starts_with(r#"{"schema":"tsoracle.stopped-file-state","schema_version":1,"#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dense_record::{self, DEFAULT_KEY_CAP};
use crate::error::{Bt, FileDriverError};
use crate::layout::FileKind;
use crate::stopped::{RawFile, StoppedDir};
use crate::{lease_record, record};

/// The receipt's `schema` value.
pub const RECEIPT_SCHEMA: &str = "tsoracle.stopped-file-state";

/// The receipt's `schema_version` value.
pub const RECEIPT_SCHEMA_VERSION: u32 = 1;

/// A stopped-state receipt, schema `tsoracle.stopped-file-state` version 1.
/// Field order is the schema's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedStateReceipt {
    /// Always [`RECEIPT_SCHEMA`].
    pub schema: String,
    /// Always [`RECEIPT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The tool that wrote the receipt.
    pub producer: Producer,
    /// Always `"file"`.
    pub driver: String,
    /// Always `0`: a file directory has no consensus epoch.
    pub epoch: u64,
    /// What the numbers mean.
    pub units: Units,
    /// `LOCK`, `dense`, `leases`, `state`, in that order.
    pub files: Vec<ReceiptFile>,
    /// The `state` high-water: every timestamp with a physical part at or
    /// below it may have been issued.
    pub committed_reservation_high_water_physical_ms: u64,
    /// The lease records, in file order.
    pub leases: Vec<ReceiptLease>,
    /// The largest lease upper bound; `null` without leases.
    pub maximum_lease_upper_bound_physical_ms: Option<u64>,
    /// The latest lease expiry; `null` without leases.
    pub maximum_lease_expires_at_unix_ms: Option<u64>,
    /// Each dense key's next unallocated value, keys sorted.
    pub dense_next_unallocated: BTreeMap<String, u64>,
    /// The dense key cap (10000 without a `dense` file).
    pub dense_cardinality_cap: u64,
}

/// `producer`: the crate that wrote the receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Producer {
    /// The crate name.
    pub name: String,
    /// The crate version.
    pub version: String,
}

/// `units`: the meaning of the receipt's numbers, as fixed strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Units {
    /// For the high-water and lease upper bounds.
    pub reservation_and_lease_upper_bound: String,
    /// For lease expiries.
    pub lease_expiry: String,
    /// For lease TTLs.
    pub lease_ttl: String,
    /// For dense counters.
    pub dense_high_water: String,
    /// For lease holders.
    pub holder: String,
}

impl Default for Units {
    /// The schema's five strings.
    fn default() -> Self {
        Units {
            reservation_and_lease_upper_bound:
                "unix-epoch physical milliseconds, inclusive, all logical values reserved".into(),
            lease_expiry: "absolute unix-epoch milliseconds on oracle server clock".into(),
            lease_ttl: "milliseconds".into(),
            dense_high_water:
                "next unallocated ordinal, exclusive upper bound of reserved ordinals".into(),
            holder: "opaque bytes encoded as lowercase hexadecimal".into(),
        }
    }
}

/// One entry of `files`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptFile {
    /// The file name.
    pub path: String,
    /// Whether the file exists.
    pub present: bool,
    /// Its length; `null` when absent.
    pub size_bytes: Option<u64>,
    /// Lowercase hex SHA-256 of its bytes; `null` when absent.
    pub sha256: Option<String>,
    /// `"native-lock-sentinel"` for `LOCK`, else the file's magic.
    pub format: String,
    /// `null` for `LOCK`, else `1`.
    pub format_version: Option<u32>,
}

/// One entry of `leases`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptLease {
    /// The lease id.
    pub lease_id: u64,
    /// The holder bytes in lowercase hex.
    pub holder_hex: String,
    /// The holder's epoch.
    pub holder_epoch: u64,
    /// The TTL in milliseconds.
    pub ttl_ms: u64,
    /// The timestamp upper bound, physical milliseconds.
    pub ts_upper_bound_physical_ms: u64,
    /// The expiry, Unix milliseconds on the oracle's clock.
    pub expires_at_unix_ms: u64,
    /// Whether a newer lease of the holder superseded it.
    pub superseded: bool,
}

impl StoppedDir {
    /// The stopped-state receipt of this directory, from the bytes read
    /// under the lock.
    ///
    /// # Errors
    ///
    /// [`FileDriverError::NoStateFile`] when there is no `state` file (the
    /// schema requires one: a directory that never committed a high-water
    /// never served).
    pub fn receipt(&self) -> Result<StoppedStateReceipt, FileDriverError> {
        let high_water = self
            .high_water()
            .ok_or_else(|| FileDriverError::NoStateFile {
                dir: self.dir().to_path_buf(),
                backtrace: Bt::capture(),
            })?;
        let files = self
            .files()
            .iter()
            .map(|file| self.receipt_file(file))
            .collect();
        let leases: Vec<ReceiptLease> = self.leases().iter().map(ReceiptLease::from).collect();
        let dense = self.dense();
        Ok(StoppedStateReceipt {
            schema: RECEIPT_SCHEMA.into(),
            schema_version: RECEIPT_SCHEMA_VERSION,
            producer: Producer {
                name: env!("CARGO_PKG_NAME").into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            driver: "file".into(),
            epoch: 0,
            units: Units::default(),
            files,
            committed_reservation_high_water_physical_ms: high_water,
            maximum_lease_upper_bound_physical_ms: leases
                .iter()
                .map(|lease| lease.ts_upper_bound_physical_ms)
                .max(),
            maximum_lease_expires_at_unix_ms: leases
                .iter()
                .map(|lease| lease.expires_at_unix_ms)
                .max(),
            leases,
            dense_next_unallocated: dense
                .counters
                .iter()
                .map(|(key, next)| (key.as_str().to_string(), *next))
                .collect(),
            dense_cardinality_cap: if self.file(FileKind::Dense).bytes.is_some() {
                dense.cap
            } else {
                DEFAULT_KEY_CAP
            },
        })
    }

    /// One `files` entry: the bytes read under the lock, their checksum,
    /// and the format they claim.
    fn receipt_file(&self, file: &RawFile) -> ReceiptFile {
        let (format, format_version) = match file.kind {
            Some(FileKind::Dense) => (
                magic(&dense_record::MAGIC),
                Some(u32::from(dense_record::VERSION)),
            ),
            Some(FileKind::Leases) => (
                magic(&lease_record::MAGIC),
                Some(u32::from(lease_record::VERSION)),
            ),
            // A marked record says so: its version byte is the mark.
            Some(FileKind::State) => (
                magic(&record::MAGIC),
                Some(u32::from(
                    self.mark().map_or(record::VERSION, record::Mark::version),
                )),
            ),
            None => ("native-lock-sentinel".to_string(), None),
        };
        ReceiptFile {
            path: file.name().to_string(),
            present: file.bytes.is_some(),
            size_bytes: file.bytes.as_ref().map(|bytes| bytes.len() as u64),
            sha256: file
                .bytes
                .as_deref()
                .map(|bytes| hex::encode(Sha256::digest(bytes))),
            format,
            format_version,
        }
    }
}

impl From<&tsoracle_core::LeaseRecord> for ReceiptLease {
    fn from(lease: &tsoracle_core::LeaseRecord) -> Self {
        ReceiptLease {
            lease_id: lease.lease_id,
            holder_hex: hex::encode(&lease.holder),
            holder_epoch: lease.holder_epoch,
            ttl_ms: lease.ttl_ms,
            ts_upper_bound_physical_ms: lease.ts_upper_bound,
            expires_at_unix_ms: lease.expires_at_ms,
            superseded: lease.superseded,
        }
    }
}

fn magic(bytes: &[u8; 4]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
