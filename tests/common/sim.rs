//! A driver on a [`SimFs`] at one directory: what the cases of the
//! independent review of the crash-safety argument open
//! (`power_loss_never_rewinds.rs` and `failpoints/`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tsoracle_driver_file::vfs::sim::{Hold, SimFs};
use tsoracle_driver_file::{FileDriver, FileDriverError, OpenOptions};

/// The directory opened on the `SimFs`.
pub const DIR: &str = "/oracle";
/// A high-water the tests write.
pub const HW: u64 = 1_764_000_000_000;

/// Opens a driver on `DIR` of `fs`.
pub fn open(fs: &SimFs) -> Result<Arc<FileDriver>, FileDriverError> {
    OpenOptions::new().vfs(fs.clone()).open_or_init(DIR)
}

/// `mkdir` through the Vfs, like a process that is not the driver: no
/// fsync of the parent follows.
pub fn simfs_create_dir(fs: &SimFs, dir: &str) {
    use tsoracle_driver_file::vfs::Vfs;
    fs.create_dir(Path::new(dir)).expect("mkdir");
}

/// How long a test waits for an operation to reach a [`Hold`] before it
/// fails: a deadlock guard, not a timing assumption.
pub const HOLD_DEADLOCK_GUARD: Duration = Duration::from_secs(120);

/// Blocks until some thread's next operation is parked at `hold`.
///
/// # Panics
///
/// When no operation arrives within [`HOLD_DEADLOCK_GUARD`] (the test
/// deadlocked).
pub fn wait_reached(hold: &Hold) {
    assert!(
        hold.wait_reached(HOLD_DEADLOCK_GUARD),
        "no operation reached the hold"
    );
}
