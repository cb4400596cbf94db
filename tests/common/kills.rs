//! What the process-kill tests share (`tests/process_kills_never_rewind.rs`
//! and `tests/failpoints/process_kills.rs`): the child's environment, what it
//! writes, and what the parent learns from its report lines.

use std::collections::BTreeMap;
use std::sync::Arc;

use tsoracle_core::LeaseRecord;
use tsoracle_driver_file::{FileDriver, FileDriverError};

use super::child::report;

/// The role a re-run child plays.
pub const ROLE_VAR: &str = "TSORACLE_KILL_TEST_ROLE";
/// The directory it opens.
pub const DIR_VAR: &str = "TSORACLE_KILL_TEST_DIR";

/// The dense keys the children write; the `full` fixture also has `orders`
/// and `users`.
pub const KEYS: [&str; 3] = ["k0", "k1", "k2"];
pub const TEMP_FILES: [&str; 3] = ["state.tmp", "dense.tmp", "leases.tmp"];

pub fn lease(lease_id: u64) -> LeaseRecord {
    LeaseRecord {
        lease_id,
        holder: b"killed-writer".to_vec(),
        holder_epoch: lease_id,
        ttl_ms: 5_000,
        ts_upper_bound: 1_764_000_000_000 + lease_id,
        expires_at_ms: 1_764_000_005_000 + lease_id,
        superseded: lease_id.is_multiple_of(2),
    }
}

/// Opens `dir`, reporting `ready`, or reports why it could not.
pub fn open_for_child(dir: &str) -> Option<Arc<FileDriver>> {
    match FileDriver::open_or_init(dir) {
        Ok(driver) => {
            report("ready");
            Some(driver)
        }
        Err(FileDriverError::AlreadyLocked { path, .. }) => {
            report(&format!("locked {}", path.display()));
            None
        }
        Err(other) => {
            report(&format!("error {other}"));
            None
        }
    }
}

/// Every acknowledgement a parent has read, across rounds.
#[derive(Debug, Default)]
pub struct Acked {
    pub high_water: u64,
    /// Per key, every acknowledged block `(start, end)`.
    pub blocks: BTreeMap<String, Vec<(u64, u64)>>,
    /// The highest lease id acknowledged (each set holds one lease).
    pub lease: Option<u64>,
    /// How many acknowledgements were read.
    pub count: usize,
}

impl Acked {
    /// Records one report line; panics on a line that is not an
    /// acknowledgement. `floor` is what the directory held for each key when
    /// the child opened it: no block may start below it (that would reissue
    /// values acknowledged in an earlier life).
    pub fn ingest(&mut self, line: &str, floor: &Floor, round: usize) {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["hw", value] => {
                let value: u64 = value.parse().expect("hw value");
                assert!(
                    value > floor.high_water,
                    "round {round}: acknowledged high-water {value} not above the {} the child opened with",
                    floor.high_water
                );
                self.high_water = self.high_water.max(value);
            }
            ["dense", name, start, count] => {
                let start: u64 = start.parse().expect("block start");
                let count: u64 = count.parse().expect("block count");
                let opened_at = floor.dense.get(*name).copied().unwrap_or(0);
                assert!(
                    start >= opened_at,
                    "round {round}: `{name}` block {start}+{count} starts below {opened_at}, \
                     which an earlier life already acknowledged: values reissued"
                );
                self.blocks
                    .entry((*name).to_owned())
                    .or_default()
                    .push((start, start + count));
            }
            ["lease", id] => {
                let id: u64 = id.parse().expect("lease id");
                if let Some(opened_with) = floor.lease {
                    assert!(id > opened_with, "round {round}: lease id {id} reused");
                }
                self.lease = Some(self.lease.map_or(id, |seen| seen.max(id)));
            }
            _ => panic!("round {round}: the child reported `{line}`, not an acknowledgement"),
        }
        self.count += 1;
    }

    pub fn max_end(&self, name: &str) -> u64 {
        self.blocks
            .get(name)
            .and_then(|blocks| blocks.iter().map(|&(_, end)| end).max())
            .unwrap_or(0)
    }

    /// Acknowledged blocks of one key never overlap, in one life or across
    /// lives.
    pub fn assert_blocks_disjoint(&self, round: usize) {
        for (name, blocks) in &self.blocks {
            let mut sorted = blocks.clone();
            sorted.sort_unstable();
            for pair in sorted.windows(2) {
                assert!(
                    pair[0].1 <= pair[1].0,
                    "round {round}: `{name}` blocks {:?} and {:?} overlap",
                    pair[0],
                    pair[1]
                );
            }
        }
    }
}

/// What a reopened directory held, for the next round to build on.
#[derive(Debug, Default)]
pub struct Floor {
    pub high_water: u64,
    pub dense: BTreeMap<String, u64>,
    pub lease: Option<u64>,
}

/// Runs one of the driver's reads, which answer from memory at once, from
/// synchronous test code (so no lock guard is held across an `.await`).
pub fn now<F: std::future::Future>(read: F) -> F::Output {
    futures::executor::block_on(read)
}
