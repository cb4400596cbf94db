//! Every name in a state directory, once: the lock, the three state files,
//! the notes beside a marked `state` record, the identity attribute, and
//! the temp name each is written through. Adding a file means adding it
//! here; [`temp_files`] then lists its debris for open to remove.

use crate::record::Mark;

/// Name of the lock file inside a state directory.
pub const LOCK_FILE: &str = "LOCK";

/// Name of the extended attribute of a state directory (of the directory
/// itself, not of a file in it) that records where the directory comes
/// from (see [`identity_record`](crate::identity_record)).
pub const IDENTITY_XATTR: &str = "user.tsoracle.identity";

/// Name of the file in which earlier versions of this crate kept the
/// identity, inside the state directory, where upstream's tools refuse it.
/// Open carries it into [`IDENTITY_XATTR`] and removes it.
pub const IDENTITY_FILE: &str = "IDENTITY";

/// The temp file of an `IDENTITY` an earlier version was writing.
pub(crate) const IDENTITY_TEMP: &str = "IDENTITY.tmp";

/// Name of the note `migrate out` leaves beside a retired `state` record:
/// where the state went (its first line) and the receipt.
pub const RETIRED_FILE: &str = "RETIRED";

/// Name of the note earlier versions of this crate kept while
/// [`FileDriver::init_from`](crate::FileDriver::init_from) wrote a new state
/// directory; today the record's seeding mark does that job, and the note
/// is only refused when found.
pub const SEEDING_FILE: &str = "SEEDING";

/// Name of the note beside a pending `state` record: what `migrate in`
/// observed, which `migrate finish` reads.
pub const PENDING_FILE: &str = "PENDING";

/// One of the three files of a state directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    State,
    Dense,
    Leases,
}

impl FileKind {
    pub(crate) const ALL: [FileKind; 3] = [FileKind::State, FileKind::Dense, FileKind::Leases];

    pub(crate) fn name(self) -> &'static str {
        match self {
            FileKind::State => "state",
            FileKind::Dense => "dense",
            FileKind::Leases => "leases",
        }
    }

    pub(crate) fn temp_name(self) -> &'static str {
        match self {
            FileKind::State => "state.tmp",
            FileKind::Dense => "dense.tmp",
            FileKind::Leases => "leases.tmp",
        }
    }
}

/// The note file that goes with `mark`, beside the marked `state` record
/// (see `crate::marks`).
pub(crate) fn note_name(mark: Mark) -> &'static str {
    match mark {
        Mark::Retired => RETIRED_FILE,
        Mark::Seeding => SEEDING_FILE,
        Mark::Pending => PENDING_FILE,
    }
}

/// The temp name the note of `mark` is written through.
pub(crate) fn note_temp_name(mark: Mark) -> &'static str {
    match mark {
        Mark::Retired => "RETIRED.tmp",
        Mark::Seeding => "SEEDING.tmp",
        Mark::Pending => "PENDING.tmp",
    }
}

/// The temp name of every file this crate replaces (the three state files,
/// the notes, and `IDENTITY`, which earlier versions wrote): the debris
/// open removes, and what `read_state_dir` reports as leftover.
pub(crate) fn temp_files() -> [&'static str; 7] {
    let [state, dense, leases] = FileKind::ALL.map(FileKind::temp_name);
    let [retired, seeding, pending] = Mark::ALL.map(note_temp_name);
    [
        state,
        dense,
        leases,
        IDENTITY_TEMP,
        retired,
        seeding,
        pending,
    ]
}
