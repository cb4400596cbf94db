//! Directories that must not serve: the marks of the `state` record, and
//! the note files beside them.
//!
//! A state directory must not serve, whichever driver opens it, when
//!
//! - its state was carried to another oracle (`tsoracle-file migrate out`:
//!   [`Mark::Retired`]): that oracle hands out values above this
//!   directory's, which a server here would hand out again;
//! - a seed is being written ([`FileDriver::init_from`]: [`Mark::Seeding`]):
//!   the directory may hold a high-water without its counters;
//! - it waits for `tsoracle-file migrate finish` ([`Mark::Pending`]): the
//!   source oracle may still be serving.
//!
//! The mark is the version byte of the `state` record (see
//! [`record`](crate::record)), so upstream's drivers, which refuse a
//! version they do not know, refuse the directory too; the high-water stays
//! in the record for the tools that describe or carry it. Beside it, a note
//! file says why, for people: [`RETIRED_FILE`](crate::RETIRED_FILE) holds `migrate out`'s
//! receipt, [`PENDING_FILE`](crate::PENDING_FILE) what `migrate in` observed.
//!
//! Earlier versions of this crate fenced with the note files alone
//! (`RETIRED`, `SEEDING`), which only this crate honours. A note file is
//! still refused on its own, and an open that finds one beside a live
//! record first marks the record ([`refuse_if_fenced`]), so that
//! upstream's driver refuses the directory from then on.
//!
//! Both are checked after the directory's locks are taken, through the
//! opened directory, so a mark written by a process that held the lock is
//! seen by every later owner. Marks and notes are written like the state
//! files: `NAME.tmp` created exclusively, fsync, rename, directory fsync.
//!
//! [`Mark::Retired`]: crate::record::Mark::Retired
//! [`Mark::Seeding`]: crate::record::Mark::Seeding
//! [`Mark::Pending`]: crate::record::Mark::Pending
//! [`FileDriver::init_from`]: crate::FileDriver::init_from

use std::io;

use crate::error::{Bt, FileDriverError, FileOp};
use crate::layout::{FileKind, note_name, note_temp_name};
use crate::record::{self, Mark};
use crate::store::{Files, Store};
use crate::vfs::Entry;

/// At most this many bytes of a marker's first line go into an error.
const NOTE_LIMIT: usize = 512;

/// Refuses a directory whose `state` record carries a mark, or that holds
/// a note file. Called with the locks held, after `files` were read.
///
/// A note found beside a live record (left by an earlier version of this
/// crate, which fenced with the note alone) is first carried into the
/// record, durably, so that other drivers refuse the directory as well.
pub(crate) fn refuse_if_fenced(store: &Store, files: &Files) -> Result<(), FileDriverError> {
    let mut mark = files.mark;
    if mark.is_none() {
        for candidate in Mark::ALL {
            if exists(store, candidate)? {
                mark = Some(candidate);
                break;
            }
        }
        // Without a `state` file too: every other driver reads a missing
        // `state` as a fresh oracle at 0, so the mark goes in at 0.
        if let Some(found) = mark {
            tracing::warn!(
                dir = %store.dir().display(),
                mark = %found,
                "the directory carries a {} note but a live state record (an earlier version fenced with the note alone): marking the record so that every driver refuses it",
                note_name(found)
            );
            write_mark(store, files.high_water.unwrap_or(0), Some(found))?;
        }
    }
    let Some(mark) = mark else {
        return Ok(());
    };
    let state = store.dir().join(FileKind::State.name());
    let note_path = store.dir().join(note_name(mark));
    let marker = if exists(store, mark)? {
        note_path
    } else {
        state
    };
    Err(match mark {
        Mark::Seeding => FileDriverError::SeedingInterrupted {
            marker,
            backtrace: Bt::capture(),
        },
        Mark::Pending => FileDriverError::MigrationPending {
            marker,
            backtrace: Bt::capture(),
        },
        Mark::Retired => {
            let note = read_marker(store, Mark::Retired)?
                .map(|note| first_line(&note))
                .unwrap_or_else(|| "its state record is marked retired".into());
            FileDriverError::Retired {
                marker,
                note: note.into(),
                backtrace: Bt::capture(),
            }
        }
    })
}

/// Writes the `state` record at `high_water` with `mark` (`None`: live),
/// durably, with the owner check after the directory fsync.
pub(crate) fn write_mark(
    store: &Store,
    high_water: u64,
    mark: Option<Mark>,
) -> Result<(), FileDriverError> {
    let bytes = match mark {
        Some(mark) => record::encode_marked(high_water, mark),
        None => record::encode(high_water),
    };
    store.write_file(FileKind::State, &bytes)
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

/// Whether the note of `mark` exists in the opened directory (a symbolic
/// link counts).
pub(crate) fn exists(store: &Store, mark: Mark) -> Result<bool, FileDriverError> {
    let name = note_name(mark);
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

/// The content (lossy UTF-8) of the note of `mark`, or `None` when it does
/// not exist.
pub(crate) fn read_marker(store: &Store, mark: Mark) -> Result<Option<String>, FileDriverError> {
    let name = note_name(mark);
    match store.handle().read(name) {
        Ok(bytes) => Ok(bytes.map(|bytes| String::from_utf8_lossy(&bytes).into_owned())),
        Err(err) => Err(FileDriverError::io(
            FileOp::Read,
            store.dir().join(name),
            err,
        )),
    }
}

/// Writes the note of `mark` durably through its temp name (which open
/// removes as debris, `layout::temp_files`): created exclusively, fsync,
/// rename, directory fsync. When this returns, the note survives a power
/// cut.
pub(crate) fn write_marker(
    store: &Store,
    mark: Mark,
    content: &[u8],
) -> Result<(), FileDriverError> {
    store.write_whole(note_temp_name(mark), note_name(mark), content)
}

/// Steps 1 to 3 of the protocol for the note of `mark`: the caller's
/// directory fsync, shared with the files staged beside it, makes it
/// durable.
pub(crate) fn stage_marker(
    store: &Store,
    mark: Mark,
    content: &[u8],
) -> Result<(), FileDriverError> {
    store
        .stage_named(note_temp_name(mark), note_name(mark), content)
        .map(drop)
        .map_err(|failure| failure.error)
}

/// Removes the note of `mark`, then fsyncs the directory.
pub(crate) fn remove_marker(store: &Store, mark: Mark) -> Result<(), FileDriverError> {
    let name = note_name(mark);
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
