//! [`OpenOptions`]: the one place that chooses the filesystem a state
//! directory is reached through. Every entry point of the crate
//! ([`FileDriver::open_or_init`], [`FileDriver::init_from`] and its
//! high-water-only form [`FileDriver::init_seeded`], [`StoppedDir::lock`],
//! [`read_state_dir`]) is a method of the default options, on the real
//! filesystem.
//!
//! [`read_state_dir`]: crate::read_state_dir

use std::path::Path;
use std::sync::Arc;

use crate::vfs::{StdFs, Vfs};
use crate::{FileDriver, FileDriverError, Seed, StateDir, StoppedDir};

/// How a state directory is reached: by default through the real
/// filesystem ([`StdFs`]); through another [`Vfs`] for tests that inject
/// faults or simulate power loss (the crate's own `vfs::SimFs`, feature
/// `simfs`, does both).
///
/// The plain entry points ([`FileDriver::open_or_init`] and the others)
/// are these methods on `OpenOptions::new()`.
///
/// ```
/// use tsoracle_driver_file::{OpenOptions, Seed};
/// use tsoracle_driver_file::vfs::StdFs;
///
/// let dir = tempfile::tempdir()?;
/// let options = OpenOptions::new().vfs(StdFs);
/// options.init_from(dir.path(), &Seed::new(1_700_000_000_000))?;
/// assert_eq!(options.read_state_dir(dir.path())?.high_water, Some(1_700_000_000_000));
/// let driver = options.open_or_init(dir.path())?;
/// assert_eq!(driver.high_water(), 1_700_000_000_000);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct OpenOptions {
    vfs: Arc<dyn Vfs>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// The default options: the real filesystem.
    pub fn new() -> Self {
        OpenOptions {
            vfs: Arc::new(StdFs),
        }
    }

    /// Reaches the directory through `vfs` instead of the real filesystem.
    pub fn vfs(mut self, vfs: impl Vfs) -> Self {
        self.vfs = Arc::new(vfs);
        self
    }

    /// [`FileDriver::open_or_init`] through these options.
    ///
    /// # Errors
    ///
    /// As [`FileDriver::open_or_init`].
    pub fn open_or_init(&self, dir: impl AsRef<Path>) -> Result<Arc<FileDriver>, FileDriverError> {
        FileDriver::open(dir.as_ref(), Arc::clone(&self.vfs))
    }

    /// [`FileDriver::init_from`] through these options.
    ///
    /// # Errors
    ///
    /// As [`FileDriver::init_from`].
    pub fn init_from(&self, dir: impl AsRef<Path>, seed: &Seed) -> Result<(), FileDriverError> {
        crate::seed::init(dir.as_ref(), seed, Arc::clone(&self.vfs))
    }

    /// [`StoppedDir::lock`] through these options.
    ///
    /// # Errors
    ///
    /// As [`StoppedDir::lock`].
    pub fn lock_stopped(&self, dir: impl AsRef<Path>) -> Result<StoppedDir, FileDriverError> {
        StoppedDir::lock_on(dir.as_ref(), Arc::clone(&self.vfs))
    }

    /// [`read_state_dir`](crate::read_state_dir) through these options.
    ///
    /// # Errors
    ///
    /// As [`read_state_dir`](crate::read_state_dir).
    pub fn read_state_dir(&self, dir: impl AsRef<Path>) -> Result<StateDir, FileDriverError> {
        crate::state_dir::read(dir.as_ref(), self.vfs.as_ref())
    }
}
