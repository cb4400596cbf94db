//! The library calls `migrate in`, `migrate finish` and `dense` make on a
//! stopped directory: a pending seed, its note, finishing it, adding a
//! counter and setting the key cap, each under the directory's lock.
//!
//! TODO(lead api): the library's `Seed::pending`, `StoppedDir::pending_note`,
//! `StoppedDir::finish_pending`, `StoppedDir::add_counter` and
//! `StoppedDir::set_key_cap` are being added on main. Until they land these
//! wrappers emulate them with the public API of today (a `RETIRED` marker
//! whose first line says PENDING, and a re-seed of the directory): once the
//! library has them, each function below becomes a one-line call and
//! [`STUB_PREFIX`] goes.

use std::path::Path;

use tsoracle_core::{PHYSICAL_MS_MAX, SeqKey};
use tsoracle_driver_file::{FileDriver, FileDriverError, Seed, StoppedDir};

use crate::cli::Failure;

/// TODO(lead api): the first line of the stand-in `RETIRED` marker of a
/// pending directory; the note follows on the next line.
const STUB_PREFIX: &str =
    "PENDING: seeded by `tsoracle-file migrate in`; run `tsoracle-file migrate finish` on it";

fn failure(err: &FileDriverError) -> Failure {
    Failure::from_error(err)
}

/// Creates `newdir` as a new oracle at `high_water` with `counters` and a
/// key cap of `cap`, all or nothing, left pending with `note`: every driver
/// refuses to serve it until [`finish`].
pub(crate) fn init_pending<'a>(
    newdir: &Path,
    high_water: u64,
    cap: u64,
    counters: impl IntoIterator<Item = (&'a str, u64)>,
    note: &str,
) -> Result<(), Failure> {
    // TODO(lead api): `seed.pending(note)` and one `init_from`.
    crate::commands::seed::init_new_oracle(newdir, high_water, cap, counters)?;
    let stopped = StoppedDir::lock(newdir).map_err(|err| failure(&err))?;
    stopped
        .retire(&format!("{STUB_PREFIX}\n{note}\n"))
        .map_err(|err| failure(&err))
}

/// The note of a pending directory held stopped; `None` when it is not
/// pending.
pub(crate) fn note(stopped: &StoppedDir) -> Result<Option<String>, Failure> {
    // TODO(lead api): `stopped.pending_note()`.
    let marker = stopped.retired_note().map_err(|err| failure(&err))?;
    Ok(marker.and_then(|text| {
        text.strip_prefix(STUB_PREFIX)
            .map(|rest| rest.trim().to_string())
    }))
}

/// The parts of a directory that a re-seed carries.
struct Parts {
    high_water: u64,
    counters: Vec<(SeqKey, u64)>,
    cap: u64,
    leases: Vec<tsoracle_core::LeaseRecord>,
    note: Option<String>,
}

/// TODO(lead api): re-seeds `dir` with `change` applied (the stand-in for the
/// library's in-place writes).
fn reseed(
    stopped: StoppedDir,
    change: impl FnOnce(&mut Parts) -> Result<(), Failure>,
) -> Result<Parts, Failure> {
    let dir = stopped.dir().to_path_buf();
    let dense = stopped.dense();
    if !dense.unaddressable.is_empty() {
        return Err(Failure::new(format!(
            "{}: holds dense keys SeqKey cannot hold; not rewritten",
            dir.display()
        )));
    }
    let mut parts = Parts {
        high_water: stopped.high_water().unwrap_or(0),
        counters: dense.counters.into_iter().collect(),
        cap: dense.cap,
        leases: stopped.leases().to_vec(),
        note: note(&stopped)?,
    };
    let marker = stopped.retired_note().map_err(|err| failure(&err))?;
    if marker.is_some() && parts.note.is_none() {
        return Err(Failure::new(format!(
            "{} is RETIRED (migrated out): refusing to change it",
            dir.display()
        )));
    }
    change(&mut parts)?;
    if parts.high_water > PHYSICAL_MS_MAX {
        return Err(Failure::new(format!(
            "{}: high-water {} is above the physical maximum {PHYSICAL_MS_MAX}: refused",
            dir.display(),
            parts.high_water
        )));
    }
    drop(stopped);
    for name in [
        "state",
        "dense",
        "leases",
        tsoracle_driver_file::RETIRED_FILE,
    ] {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(Failure::new(format!(
                    "cannot remove {}: {err}",
                    dir.join(name).display()
                )));
            }
        }
    }
    let mut seed = Seed::new(parts.high_water)
        .with_key_cap(parts.cap)
        .with_leases(parts.leases.clone());
    for (key, next) in &parts.counters {
        seed = seed.with_counter(key.clone(), *next);
    }
    FileDriver::init_from(&dir, &seed).map_err(|err| failure(&err))?;
    if let Some(note) = &parts.note {
        let stopped = StoppedDir::lock(&dir).map_err(|err| failure(&err))?;
        stopped
            .retire(&format!("{STUB_PREFIX}\n{note}\n"))
            .map_err(|err| failure(&err))?;
    }
    Ok(parts)
}

/// Makes the pending directory held by `stopped` servable at a high-water of
/// at least `high_water_at_least`; returns the high-water written.
pub(crate) fn finish(stopped: StoppedDir, high_water_at_least: u64) -> Result<u64, Failure> {
    // TODO(lead api): `stopped.finish_pending(high_water_at_least)`.
    let dir = stopped.dir().to_path_buf();
    if note(&stopped)?.is_none() {
        return Err(Failure::new(format!("{} is not pending", dir.display())));
    }
    let parts = reseed(stopped, |parts| {
        parts.high_water = parts.high_water.max(high_water_at_least);
        parts.note = None;
        Ok(())
    })?;
    Ok(parts.high_water)
}

/// Adds `key` at `floor`, or raises its counter to at least `floor`; raises
/// the cap by one only when a new key needs it. Returns the counter stored.
pub(crate) fn add_counter(stopped: StoppedDir, key: &SeqKey, floor: u64) -> Result<u64, Failure> {
    // TODO(lead api): `stopped.add_counter(key, floor)`.
    let mut stored = floor;
    reseed(stopped, |parts| {
        if let Some((_, next)) = parts.counters.iter_mut().find(|(k, _)| k == key) {
            *next = (*next).max(floor);
            stored = *next;
        } else {
            parts.counters.push((key.clone(), floor));
            let keys = parts.counters.len() as u64;
            parts.cap = parts.cap.max(keys);
        }
        Ok(())
    })?;
    Ok(stored)
}

/// Sets the key cap (refused below the number of keys held).
pub(crate) fn set_key_cap(stopped: StoppedDir, cap: u64) -> Result<(), Failure> {
    // TODO(lead api): `stopped.set_key_cap(cap)`.
    let dir = stopped.dir().to_path_buf();
    reseed(stopped, |parts| {
        let keys = parts.counters.len() as u64;
        if cap < keys {
            return Err(Failure::new(format!(
                "{}: refusing a key cap of {cap}: the directory holds {keys} dense keys",
                dir.display()
            )));
        }
        parts.cap = cap;
        Ok(())
    })
    .map(drop)
}
