//! The library calls `migrate in`, `migrate finish` and `dense` make on a
//! stopped directory: a pending seed, its note, finishing it, adding a
//! counter and setting the key cap, each under the directory's lock, with
//! the library's errors made into the binary's failures.

use std::path::Path;

use tsoracle_core::SeqKey;
use tsoracle_driver_file::{FileDriver, FileDriverError, StoppedDir};

use crate::cli::Failure;

fn failure(err: &FileDriverError) -> Failure {
    Failure::from_error(err)
}

/// Creates `newdir` as a new oracle at `high_water` with `counters` and a
/// key cap of `cap`, all or nothing, left pending with `note`: every driver
/// refuses to serve it until [`finish`].
#[cfg_attr(not(feature = "migrate"), allow(dead_code))] // used by `migrate in` / `finish`
pub(crate) fn init_pending<'a>(
    newdir: &Path,
    high_water: u64,
    cap: u64,
    counters: impl IntoIterator<Item = (&'a str, u64)>,
    note: &str,
) -> Result<(), Failure> {
    let seed = crate::commands::seed::oracle_seed(high_water, cap, counters)?.pending(note);
    FileDriver::init_from(newdir, &seed).map_err(|err| failure(&err))
}

/// The note of a directory held stopped; `None` when it is not pending.
#[cfg_attr(not(feature = "migrate"), allow(dead_code))] // used by `migrate in` / `finish`
pub(crate) fn note(stopped: &StoppedDir) -> Result<Option<String>, Failure> {
    if !stopped.is_pending().map_err(|err| failure(&err))? {
        return Ok(None);
    }
    match stopped.pending_note().map_err(|err| failure(&err))? {
        Some(note) => Ok(Some(note)),
        None => Err(Failure::new(format!(
            "{} is marked pending but carries no PENDING note: it was not seeded by \
             `tsoracle-file migrate in`; nothing was changed",
            stopped.dir().display()
        ))),
    }
}

/// Makes the pending directory held by `stopped` servable at a high-water of
/// at least `high_water_at_least`; returns the high-water written.
#[cfg_attr(not(feature = "migrate"), allow(dead_code))] // used by `migrate in` / `finish`
pub(crate) fn finish(mut stopped: StoppedDir, high_water_at_least: u64) -> Result<u64, Failure> {
    stopped
        .finish_pending(high_water_at_least)
        .map_err(|err| failure(&err))
}

/// Adds `key` at `floor`, or raises its counter to at least `floor`; raises
/// the cap by one only when a new key needs it. Returns the counter stored.
pub(crate) fn add_counter(
    mut stopped: StoppedDir,
    key: &SeqKey,
    floor: u64,
) -> Result<u64, Failure> {
    refuse_retired(&stopped)?;
    stopped.add_counter(key, floor).map_err(|err| failure(&err))
}

/// Sets the key cap (refused below the number of keys held).
pub(crate) fn set_key_cap(mut stopped: StoppedDir, cap: u64) -> Result<(), Failure> {
    refuse_retired(&stopped)?;
    stopped.set_key_cap(cap).map_err(|err| failure(&err))
}

/// A retired directory's state lives on elsewhere: changing it is
/// pointless, and `migrate reinstate` would serve the change.
fn refuse_retired(stopped: &StoppedDir) -> Result<(), Failure> {
    match stopped.retired_note().map_err(|err| failure(&err))? {
        Some(note) => Err(Failure::new(format!(
            "{} is RETIRED ({}): its state was carried to another oracle; refusing to change it",
            stopped.dir().display(),
            note.lines().next().unwrap_or("").trim()
        ))),
        None => Ok(()),
    }
}
