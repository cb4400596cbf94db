//! `export DIR`: the whole state as JSON on stdout, for a migration to
//! another driver. The field list is in the binary's docs and in
//! `tsoracle-file export --help`.
//!
//! `export DIR --receipt` prints the ecosystem's stopped-state receipt
//! (`tsoracle.stopped-file-state` v1) instead, taken under the directory
//! lock, so tools written for upstream read it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tsoracle_core::LeaseRecord;
use tsoracle_driver_file::dense_record::{DEFAULT_KEY_CAP, DenseState};

use tsoracle_driver_file::StoppedDir;

use crate::cli::{self, CmdResult, Failure};

/// The field list of the `export` JSON, shared by the top-level and the
/// `export` long help (a macro, so that `concat!` takes it).
macro_rules! export_fields {
    () => {
        "THE EXPORT JSON
  One object; field names are stable (fields may be added, none renamed or
  removed without bumping `version`):
    format          always \"tsoracle-file-state\"
    version         layout of this JSON, 1
    high_water      committed high-water, physical ms since the Unix epoch
                    (0 when there is no `state` file, as a driver loads it)
    dense.cap       key-cardinality cap (10000 when there is no `dense` file)
    dense.counters  object: dense key -> next unissued value
    dense.unaddressable  object, only when present: keys SeqKey cannot
                    hold (empty, over 128 bytes) -> next unissued value
    leases          array in ascending lease_id of objects with:
      lease_id, holder (UTF-8 string, or null when the bytes are not UTF-8),
      holder_hex (the holder bytes in lowercase hex), holder_epoch, ttl_ms,
      ts_upper_bound, expires_at_ms, superseded (boolean)
    origin_id       only when the directory has an identity: its origin id
                    (32 hex digits), shared by every copy of this oracle
  Numbers are exact unsigned 64-bit integers.
"
    };
}
pub(crate) use export_fields;

/// The long help of `export` (`tsoracle-file export --help`).
pub(crate) const LONG_ABOUT: &str = concat!(
    "Print the whole state as JSON on stdout, so a migration to another driver ",
    "can carry the high-water, counters and leases over. Reads without taking ",
    "the lock and changes nothing. A directory that holds no state (no state, ",
    "dense or leases file: a mistyped path?) is refused unless --allow-empty: its ",
    "export would say high-water 0.\n\n",
    "With --receipt, prints instead the ecosystem's stopped-state receipt (schema ",
    "tsoracle.stopped-file-state version 1: the high-water, leases, dense counters ",
    "and the SHA-256 of each file), taken while holding the directory's lock, so ",
    "it is refused (exit 1) while a server runs on the directory.\n\n",
    export_fields!(),
    "\n",
    crate::cli::exit_codes!(),
);

/// Arguments of `export`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The state directory
    pub(crate) dir: PathBuf,
    /// Print the stopped-state receipt (schema tsoracle.stopped-file-state
    /// v1, with the SHA-256 of each file) instead, taken under the
    /// directory's lock: refused while a server runs on it
    #[arg(long)]
    pub(crate) receipt: bool,
    /// Export a directory that holds no state (no state, dense or leases
    /// file) as high-water 0 instead of refusing it
    #[arg(long)]
    pub(crate) allow_empty: bool,
}

/// The `export` document: its field names are stable (fields may be added,
/// none renamed or removed without bumping `version`).
#[derive(Debug, Serialize)]
pub(crate) struct ExportDoc {
    /// Always [`EXPORT_FORMAT`].
    pub(crate) format: &'static str,
    /// The layout of this document, [`EXPORT_VERSION`].
    pub(crate) version: u32,
    /// The committed high-water, physical ms since the Unix epoch (0 when
    /// there is no `state` file, as a driver loads it).
    pub(crate) high_water: u64,
    /// The dense counters and their key cap.
    pub(crate) dense: DenseJson,
    /// The lease set, ascending by `lease_id`.
    pub(crate) leases: Vec<LeaseJson>,
    /// The origin id of the directory's identity (32 hex digits), shared
    /// by every copy of this oracle; absent when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) origin_id: Option<String>,
}

/// The `format` of an [`ExportDoc`].
pub(crate) const EXPORT_FORMAT: &str = "tsoracle-file-state";
/// The `version` of an [`ExportDoc`].
pub(crate) const EXPORT_VERSION: u32 = 1;

/// The dense counters and key cap.
#[derive(Debug, Serialize)]
pub(crate) struct DenseJson {
    /// The key-cardinality cap.
    pub(crate) cap: u64,
    /// Each dense key and its next unissued value, sorted by key.
    pub(crate) counters: BTreeMap<String, u64>,
    /// Counters whose keys `SeqKey` cannot hold (empty, or longer than 128
    /// bytes), which no call can reach but another tool may; absent when
    /// there are none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) unaddressable: BTreeMap<String, u64>,
}

impl DenseJson {
    pub(crate) fn new(dense: &DenseState) -> Self {
        DenseJson {
            cap: dense.cap,
            counters: dense
                .counters
                .iter()
                .map(|(key, value)| (key.as_str().to_string(), *value))
                .collect(),
            unaddressable: dense
                .unaddressable
                .iter()
                .map(|(key, value)| (key.as_str().to_string(), *value))
                .collect(),
        }
    }
}

/// One lease, as `export` and `inspect --json` show it.
#[derive(Debug, Serialize)]
pub(crate) struct LeaseJson {
    pub(crate) lease_id: u64,
    /// The holder bytes as a string when they are UTF-8, else `null`.
    pub(crate) holder: Option<String>,
    /// The holder bytes in lowercase hex, always present.
    pub(crate) holder_hex: String,
    pub(crate) holder_epoch: u64,
    pub(crate) ttl_ms: u64,
    pub(crate) ts_upper_bound: u64,
    pub(crate) expires_at_ms: u64,
    pub(crate) superseded: bool,
}

impl LeaseJson {
    pub(crate) fn new(lease: &LeaseRecord) -> Self {
        LeaseJson {
            lease_id: lease.lease_id,
            holder: std::str::from_utf8(&lease.holder).ok().map(str::to_string),
            holder_hex: hex::encode(&lease.holder),
            holder_epoch: lease.holder_epoch,
            ttl_ms: lease.ttl_ms,
            ts_upper_bound: lease.ts_upper_bound,
            expires_at_ms: lease.expires_at_ms,
            superseded: lease.superseded,
        }
    }
}

/// Prints the whole state as JSON.
pub(crate) fn exec(args: &Args) -> CmdResult {
    if args.receipt {
        return receipt(&args.dir);
    }
    let state = cli::read(&args.dir)?;
    if state.high_water.is_none()
        && state.dense.is_none()
        && state.leases.is_none()
        && !args.allow_empty
    {
        // A migration seeds the next oracle from this document: high-water
        // 0 from a mistyped path would rewind it.
        return Err(Failure::new(format!(
            "refusing to export {}: it holds no oracle state (no state, dense or leases \
             file), so the export would say high-water 0, and a migration seeded from it \
             would hand out timestamps again; check the path, or pass --allow-empty to \
             export an empty state on purpose",
            args.dir.display()
        )));
    }
    let dense = match &state.dense {
        Some(dense) => DenseJson::new(dense),
        None => DenseJson {
            cap: DEFAULT_KEY_CAP,
            counters: BTreeMap::new(),
            unaddressable: BTreeMap::new(),
        },
    };
    let doc = ExportDoc {
        format: EXPORT_FORMAT,
        version: EXPORT_VERSION,
        high_water: state.high_water.unwrap_or(0),
        dense,
        leases: state
            .leases
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(LeaseJson::new)
            .collect(),
        origin_id: state.origin.as_ref().map(|origin| origin.id_hex()),
    };
    Ok(cli::json_pretty(&doc))
}

/// The stopped-state receipt, taken under the lock: the directory cannot
/// change (no driver can open it) between reading and hashing its files.
///
/// A directory without a `state` file has no receipt, and is refused before
/// the lock is taken: taking it would create `LOCK` in, say, an empty
/// directory, and export changes nothing.
fn receipt(dir: &Path) -> CmdResult {
    let found = cli::read(dir)?;
    if found.high_water.is_none() {
        return Err(Failure::new(format!(
            "state directory {} has no state file, so there is no committed state to describe",
            dir.display()
        )));
    }
    let stopped = StoppedDir::lock(dir).map_err(|err| Failure::from_error(&err))?;
    let receipt = stopped.receipt().map_err(|err| Failure::from_error(&err))?;
    Ok(cli::json_pretty(&receipt))
}
