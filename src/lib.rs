//! A single-node, crash-safe storage driver for the
//! [tsoracle](https://crates.io/crates/tsoracle-server) timestamp oracle.
//!
//! [`FileDriver`] implements [`tsoracle_consensus::ConsensusDriver`] on one
//! directory of one disk, so the real `tsoracle-server` runs with no cluster.
//! Use it for an oracle that lives on one machine, in an embedded binary, or
//! as the driver of a test fixture.
//!
//! ```
//! use tsoracle_consensus::ConsensusDriver;
//! use tsoracle_core::SeqKey;
//! use tsoracle_driver_file::{FileDriver, LEADER_EPOCH};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir()?;
//! let driver = FileDriver::open_or_init(dir.path())?;
//!
//! // The high-water only moves forward, and is durable when the call returns.
//! driver.persist_high_water(1_764_000_000_000, LEADER_EPOCH).await?;
//! assert_eq!(driver.persist_high_water(5, LEADER_EPOCH).await?, 1_764_000_000_000);
//!
//! // Dense counters hand out gap-free blocks.
//! let orders = SeqKey::try_new("orders")?;
//! assert_eq!(driver.advance_dense(&orders, 10, LEADER_EPOCH).await?, 0);
//! assert_eq!(driver.advance_dense(&orders, 10, LEADER_EPOCH).await?, 10);
//! assert_eq!(driver.load_dense_seq(&orders).await?, 20);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! Hand it to the server as an `Arc<dyn ConsensusDriver>`:
//! `tsoracle_server::Server::builder().consensus_driver(driver)`. The
//! [`guide`] has the operator's view: when to choose this driver over a
//! replicated one, the durability argument step by step, moving to and from
//! a replicated deployment, and what each error means.
//!
//! # Moving elsewhere and back
//!
//! [`StoppedDir`] holds a directory stopped under its lock, describes it in
//! the ecosystem's stopped-state receipt (the `receipt` module, feature
//! `receipt`) and marks it `RETIRED` once its state lives on in another
//! oracle: every open then refuses it ([`FileDriverError::Retired`]). [`FileDriver::init_from`]
//! seeds a fresh directory with a high-water, dense counters and leases
//! together ([`Seed`]), all or nothing. The `tsoracle-file migrate`
//! commands (feature `migrate`) build on both; the [`guide`] says why no
//! value is handed out twice on the way.
//!
//! # How it stores
//!
//! A state directory holds `LOCK` (an flock held for the driver's life),
//! `state` (the 17-byte high-water [`record`]), `dense` (the
//! [`dense_record`] counters) and `leases` (the [`lease_record`] set), in the
//! byte format the tsoracle ecosystem already uses: point this crate at an
//! existing directory and carry on, and back: it holds nothing else, so
//! upstream's own tools (`tsoracle export file`, `serve file`) accept it.
//! Where a directory comes from (the [`identity_record`], which tells
//! copies of one oracle apart) is an extended attribute of the directory
//! itself, [`IDENTITY_XATTR`], where the filesystem has them.
//!
//! One committer thread performs all writes: concurrent calls queued while
//! a write is in flight share the next one (group commit), and memory —
//! which serves every read — moves only after the new files are durable.
//! Why a crash at any point never rewinds the oracle is argued step by step
//! in the [`guide`]'s "Durability, step by step" (the whole argument, with
//! the checks that keep one owner, heads the store's source,
//! `src/store/mod.rs`). Corruption is refused with an error naming the
//! file, never repaired.
//!
//! # Features
//!
//! - `failpoints`: `fail` points around every step of the write protocol,
//!   for chaos tests, named in [`FAILPOINTS`]:
//!   `file_driver::open` (before the files are read), then for each file
//!   written `file_driver::{before,after}_temp_write`,
//!   `file_driver::{before,after}_temp_fsync`, `file_driver::{before,after}_rename`,
//!   and once per batch `file_driver::{before,after}_dir_fsync`. Configured
//!   as `return` they inject an I/O error (`return(enospc)`,
//!   `return(erofs)`, `return(eacces)` choose its kind).
//! - `metrics`: the driver records fsync and directory-fsync latency, batch
//!   sizes, queue depth, write errors, poisoning, key and lease counts and
//!   recovery at open through the `metrics` 0.24 facade; the names are in
//!   [`metrics`]. Without the feature nothing is recorded
//!   and nothing is compiled in.
//! - `cli`: the `tsoracle-file` binary (`init`, `seed`, `inspect`,
//!   `verify`, `export`, `restore`, `dense`, `migrate reinstate`; implies
//!   `receipt`).
//! - `server`: adds `tsoracle-file serve`, the real `tsoracle-server` on a
//!   [`FileDriver`] with Prometheus metrics and health checks (implies
//!   `cli` and `metrics`).
//! - `bt`: every [`FileDriverError`] captures a `std::backtrace::Backtrace`
//!   ([`FileDriverError::backtrace`]).
//! - `receipt`: the `receipt` module, the ecosystem's stopped-state
//!   receipt (`tsoracle.stopped-file-state` v1) as serde types, with
//!   SHA-256 checksums (adds `serde`, `serde_json`, `sha2`).
//! - `migrate`: its `migrate out`, `migrate in` and `migrate finish`
//!   subcommands (implies `cli`; adds `tsoracle-client` and its gRPC
//!   stack).
//! - `simfs`: `vfs::SimFs`, an in-memory filesystem for tests that knows
//!   what a power cut keeps: it loses power, kills the process or fails an
//!   I/O call at any operation, lists every disk the power cut may leave
//!   and boots a fresh one on each (adds no dependency).
//!
//! # Errors
//!
//! [`FileDriverError`] says what failed and where. Through the trait it maps
//! to [`ConsensusError`](tsoracle_consensus::ConsensusError):
//! `TransientDriver` when the live files are untouched (a temp write or a
//! rename failed, disk full), `PermanentDriver` for corruption, a failed
//! fsync, a read-only filesystem or a stopped committer;
//! `AdvanceOutOfRange`, `SeqKeyCardinalityExceeded` and `SeqOverflow` as
//! the trait defines them. [`FileDriverError::in_consensus`] gets the
//! driver's error back out of a `ConsensusError`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
// docs.rs (`--cfg docsrs`, nightly) marks feature-gated items with their feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod committer;
mod driver;
mod error;
mod format;
mod layout;
mod marks;
pub mod metrics;
mod options;
mod poison;
#[cfg(feature = "receipt")]
#[cfg_attr(docsrs, doc(cfg(feature = "receipt")))]
pub mod receipt;
mod seed;
mod state_dir;
mod stopped;
mod store;
pub mod vfs;

/// The README, rendered: quick start, guarantees, when to choose this driver,
/// durability step by step, migration, errors and what to do, reliability
/// and performance figures.
#[doc = include_str!("../README.md")]
pub mod guide {}

pub use format::dense as dense_record;
pub use format::identity as identity_record;
pub use format::leases as lease_record;
pub use format::state as record;

pub use committer::CommitStats;
pub use driver::{FileDriver, LEADER_EPOCH};
pub use error::{Bt, FileDriverError, FileOp, error_chain};
pub use layout::{
    IDENTITY_FILE, IDENTITY_XATTR, LOCK_FILE, PENDING_FILE, RETIRED_FILE, SEEDING_FILE,
};
pub use options::OpenOptions;
#[cfg(feature = "receipt")]
#[cfg_attr(docsrs, doc(cfg(feature = "receipt")))]
pub use receipt::StoppedStateReceipt;
pub use seed::Seed;
pub use state_dir::{OriginSource, StateDir, read_state_dir};
pub use stopped::StoppedDir;
pub use store::FAILPOINTS;
