//! Marker files that keep a state directory from serving.
//!
//! - [`RETIRED_FILE`] (`RETIRED`) is written by `tsoracle-file migrate out`
//!   *before* it advances anything on the target oracle, and rewritten with
//!   the migration's receipt when it finishes. The directory's state now
//!   lives on in another oracle; a server started here by mistake would
//!   resume from the old high-water and counters and hand out values the
//!   other oracle hands out too. Two live oracles is the one way to lose
//!   every guarantee this crate makes, so [`FileDriver::open_or_init`]
//!   refuses a retired directory with [`FileDriverError::Retired`], naming
//!   the marker and the commands that lift it.
//! - [`SEEDING_FILE`] (`SEEDING`) is written by
//!   [`FileDriver::init_from`] before the first state file and removed
//!   (durably) only after the last one is durable. A crash in between leaves
//!   a directory that may hold a high-water without its counters, or
//!   counters without their high-water; serving that would rewind whatever
//!   is missing. Open refuses it with [`FileDriverError::SeedingInterrupted`].
//!
//! Both are checked after the directory's locks are taken, through the
//! opened directory, so a marker written by a process that held the lock is
//! seen by every later owner. Markers are written like the state files:
//! `NAME.tmp` created exclusively, fsync, rename, directory fsync; their
//! removal is followed by a directory fsync.
//!
//! [`FileDriver::open_or_init`]: crate::FileDriver::open_or_init
//! [`FileDriver::init_from`]: crate::FileDriver::init_from

use std::io;

use crate::error::{Bt, FileDriverError, FileOp};
use crate::store::Store;
use crate::vfs::Entry;

/// Name of the marker `migrate out` leaves in a state directory whose state
/// was carried to another oracle.
pub const RETIRED_FILE: &str = "RETIRED";

/// Name of the marker present while
/// [`FileDriver::init_from`](crate::FileDriver::init_from) writes a new
/// state directory.
pub const SEEDING_FILE: &str = "SEEDING";

/// At most this many bytes of a marker's first line go into an error.
const NOTE_LIMIT: usize = 512;

/// Refuses a directory that carries either marker. Called with the locks
/// held.
pub(crate) fn refuse_if_fenced(store: &Store) -> Result<(), FileDriverError> {
    if exists(store, SEEDING_FILE)? {
        return Err(FileDriverError::SeedingInterrupted {
            marker: store.dir().join(SEEDING_FILE),
            backtrace: Bt::capture(),
        });
    }
    if let Some(note) = read_marker(store, RETIRED_FILE)? {
        return Err(FileDriverError::Retired {
            marker: store.dir().join(RETIRED_FILE),
            note: first_line(&note).into(),
            backtrace: Bt::capture(),
        });
    }
    Ok(())
}

/// The first line of a marker, at most [`NOTE_LIMIT`] bytes, for a message.
pub(crate) fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    let mut end = line.len().min(NOTE_LIMIT);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}

/// Whether `name` exists in the opened directory (a symbolic link counts).
pub(crate) fn exists(store: &Store, name: &str) -> Result<bool, FileDriverError> {
    match store.handle().probe(name) {
        Ok(Entry::Missing) => Ok(false),
        Ok(_) => Ok(true),
        Err(err) => Err(FileDriverError::io(
            FileOp::Inspect,
            store.dir().join(name),
            err,
        )),
    }
}

/// The marker's content (lossy UTF-8), or `None` when it does not exist.
pub(crate) fn read_marker(store: &Store, name: &str) -> Result<Option<String>, FileDriverError> {
    match store.handle().read(name) {
        Ok(bytes) => Ok(bytes.map(|bytes| String::from_utf8_lossy(&bytes).into_owned())),
        Err(err) => Err(FileDriverError::io(
            FileOp::Read,
            store.dir().join(name),
            err,
        )),
    }
}

/// Writes the marker `name` durably (`name.tmp` is listed among the temp
/// files open removes, `store::temp_files`): created exclusively, fsync,
/// rename, directory fsync. When this returns, the marker survives a power
/// cut.
pub(crate) fn write_marker(
    store: &Store,
    name: &str,
    content: &[u8],
) -> Result<(), FileDriverError> {
    store.write_whole(&format!("{name}.tmp"), name, content)
}

pub(crate) fn remove_marker(store: &Store, name: &str) -> Result<(), FileDriverError> {
    match store.handle().remove(name) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(FileDriverError::io(
                FileOp::RemoveMarker,
                store.dir().join(name),
                err,
            ));
        }
    }
    store.sync_dir().map(drop)
}
