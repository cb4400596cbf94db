//! [`FileDriverError`]: what went wrong, in which file, during which
//! operation; and its mapping to the trait's [`ConsensusError`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tsoracle_consensus::ConsensusError;

use crate::record::RecordError;
use crate::vfs::Ownership;

/// A backtrace captured where an error was made, with the `bt` feature.
///
/// Without the feature this is zero-sized and
/// [`FileDriverError::backtrace`] is always `None`.
/// With it, capture follows `std::backtrace::Backtrace::capture`: set
/// `RUST_LIB_BACKTRACE=1` (or `RUST_BACKTRACE=1`) to get frames.
pub struct Bt(#[cfg(feature = "bt")] std::backtrace::Backtrace);

impl Bt {
    pub(crate) fn capture() -> Self {
        Self(
            #[cfg(feature = "bt")]
            std::backtrace::Backtrace::capture(),
        )
    }

    /// The captured backtrace; `None` without the `bt` feature. Users
    /// reach it through [`FileDriverError::backtrace`].
    fn get(&self) -> Option<&std::backtrace::Backtrace> {
        #[cfg(feature = "bt")]
        {
            Some(&self.0)
        }
        #[cfg(not(feature = "bt"))]
        {
            None
        }
    }
}

impl fmt::Debug for Bt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.get() {
            Some(bt) => fmt::Debug::fmt(bt, f),
            None => f.write_str("<no backtrace: enable feature `bt`>"),
        }
    }
}

/// The filesystem operation an [`FileDriverError::Io`] failed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileOp {
    /// Looking at what a path is (`stat`).
    Inspect,
    /// Creating the state directory.
    CreateDir,
    /// Opening or creating the `LOCK` file and locking it.
    Lock,
    /// Reading a state file.
    Read,
    /// Creating or writing a `*.tmp` file.
    WriteTemp,
    /// Fsyncing a `*.tmp` file.
    FsyncTemp,
    /// Renaming a `*.tmp` file over its live file.
    Rename,
    /// Fsyncing the state directory (or the parent of a new one).
    FsyncDir,
    /// Removing leftover `*.tmp` debris.
    RemoveTemp,
    /// Opening the state directory.
    OpenDir,
    /// Checking that the path still leads to the locked directory and its
    /// `LOCK` file.
    CheckOwner,
    /// Removing a marker file (`RETIRED`, `SEEDING`).
    RemoveMarker,
    /// Reading the state directory's identity, its extended attribute
    /// [`IDENTITY_XATTR`](crate::IDENTITY_XATTR).
    ReadIdentity,
}

impl FileOp {
    fn verb(self) -> &'static str {
        match self {
            FileOp::Inspect => "inspect",
            FileOp::CreateDir => "create directory",
            FileOp::Lock => "lock",
            FileOp::Read => "read",
            FileOp::WriteTemp => "write temp file",
            FileOp::FsyncTemp => "fsync temp file",
            FileOp::Rename => "rename temp file over",
            FileOp::FsyncDir => "fsync directory",
            FileOp::RemoveTemp => "remove leftover temp file",
            FileOp::OpenDir => "open directory",
            FileOp::CheckOwner => "check the owner of",
            FileOp::RemoveMarker => "remove marker file",
            FileOp::ReadIdentity => "read the identity attribute of",
        }
    }
}

impl fmt::Display for FileOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb())
    }
}

/// Everything that can go wrong in a [`FileDriver`](crate::FileDriver).
///
/// Each variant names the path involved; I/O failures also name the
/// operation. The `Display` text is one clause saying what is wrong; the
/// cause, when there is one, is the error's
/// [`source`](std::error::Error::source), and what to do about it is its
/// [`hint`](FileDriverError::hint).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileDriverError {
    /// Another `FileDriver`, in this process or another, holds the
    /// directory's lock. Stop the other owner, or use another directory.
    #[error(
        "state directory {} is locked by another FileDriver, in this or another process (lock file {})",
        .path.parent().unwrap_or(.path).display(),
        .path.display()
    )]
    AlreadyLocked {
        /// The `LOCK` file.
        path: PathBuf,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// A filesystem operation failed.
    #[error("cannot {op} {}", .path.display())]
    Io {
        /// The operation.
        op: FileOp,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// A state file exists but its bytes are not a valid record. Nothing was
    /// changed; restore the file from a backup or investigate the disk.
    #[error("state file {} is corrupt", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: RecordError,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// The state directory's identity, its extended attribute
    /// [`IDENTITY_XATTR`](crate::IDENTITY_XATTR), is not a valid record.
    /// Nothing was changed. The identity carries nothing the oracle's
    /// values depend on, so removing the attribute is safe (`setfattr -x`);
    /// a directory that holds state then opens without an identity, one
    /// that holds none gets a new one.
    #[error(
        "the identity of state directory {} (extended attribute {}) is corrupt",
        .dir.display(),
        crate::IDENTITY_XATTR
    )]
    CorruptIdentity {
        /// The state directory, whose attribute
        /// [`IDENTITY_XATTR`](crate::IDENTITY_XATTR) is damaged.
        dir: PathBuf,
        /// What is wrong with it.
        #[source]
        source: RecordError,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// The state directory path names something that is not a directory.
    #[error("{} is not a directory", .path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// `init_seeded` found state already there and wrote nothing.
    #[error("refusing to seed: {} already exists", .existing.display())]
    StateExists {
        /// The state file found.
        existing: PathBuf,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// `init_seeded` was given a value no timestamp can carry.
    #[error("seed {seed} is above the 46-bit physical-millisecond maximum {max}")]
    SeedOutOfRange {
        /// The seed given.
        seed: u64,
        /// `tsoracle_core::PHYSICAL_MS_MAX`.
        max: u64,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// An earlier write failed in a way that leaves the disk's content
    /// unknown (a failed fsync, or a failure after the rename), so the
    /// driver refuses every write. Reopen it (drop and `open_or_init` again) to
    /// re-read what is durable.
    #[error("driver for {} refuses writes after an earlier failure left the disk state unknown", .dir.display())]
    Poisoned {
        /// The state directory.
        dir: PathBuf,
        /// The failure that poisoned the driver.
        #[source]
        first: Arc<FileDriverError>,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// The state directory can be written by its group or others, who could
    /// then replace its files and make the oracle hand out values twice.
    /// Nothing was read or written. Fix it with `chmod 700 DIR` (or
    /// `chmod go-w DIR`).
    #[error(
        "state directory {} is writable by its group or others (mode {:04o})",
        .dir.display(), .mode
    )]
    InsecurePermissions {
        /// The state directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// While the driver ran, its path stopped leading to the directory it
    /// locked (moved, removed, replaced by a restore) or its `LOCK` file was
    /// removed or replaced. A server restarted on the path would not see
    /// what this driver writes, so it refuses every write from now on.
    #[error("{}", displaced_message(.dir, *.found))]
    Displaced {
        /// The state directory path the driver was opened with.
        dir: PathBuf,
        /// What the check found ([`Ownership::DirectoryReplaced`] or
        /// [`Ownership::LockReplaced`]).
        found: Ownership,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// The lease set given to `persist_leases` cannot be stored.
    #[error("cannot store the lease set in {}", .dir.display())]
    InvalidLeases {
        /// The state directory.
        dir: PathBuf,
        /// Why (two leases with one id, a holder too long).
        #[source]
        source: RecordError,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// The operating system refused to start the committer thread.
    #[error("cannot start the committer thread for {}", .dir.display())]
    CommitterSpawn {
        /// The state directory.
        dir: PathBuf,
        /// The spawn error.
        #[source]
        source: io::Error,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// The directory carries a `RETIRED` marker: its state was carried to
    /// another oracle (`tsoracle-file migrate out`), which may be serving.
    /// Serving here as well could hand out the same values twice, so the
    /// directory is refused until the operator lifts the marker.
    #[error(
        "state directory {} was migrated to another oracle and must not serve ({}: {note})",
        .marker.parent().unwrap_or(.marker).display(),
        .marker.display()
    )]
    Retired {
        /// The `RETIRED` marker file, in the state directory.
        marker: PathBuf,
        /// The marker's first line: where the state went, and when.
        note: Box<str>,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// The directory carries a `SEEDING` marker: a
    /// [`FileDriver::init_from`](crate::FileDriver::init_from) was
    /// interrupted before every file was durable, so the directory may lack
    /// counters or leases it was meant to hold. It never served; remove it
    /// and seed again.
    #[error(
        "state directory {} was not completely seeded (marker {} left by an interrupted init_from)",
        .marker.parent().unwrap_or(.marker).display(),
        .marker.display()
    )]
    SeedingInterrupted {
        /// The `SEEDING` marker file.
        marker: PathBuf,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// The directory was seeded by `tsoracle-file migrate in` and waits for
    /// `tsoracle-file migrate finish`, which proves that the source oracle
    /// stopped and raises the high-water over everything it could have
    /// issued. Serving before that could hand out what the source still
    /// hands out.
    #[error(
        "state directory {} is pending a migration ({}) and must not serve yet",
        .marker.parent().unwrap_or(.marker).display(),
        .marker.display()
    )]
    MigrationPending {
        /// The `state` file that carries the mark, or the `PENDING` note.
        marker: PathBuf,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// [`StoppedDir::finish_pending`](crate::StoppedDir::finish_pending) on
    /// a directory that is not pending: nothing was changed.
    #[error("state directory {} is not pending a migration: nothing to finish", .dir.display())]
    NotPending {
        /// The state directory.
        dir: PathBuf,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// A dense key cap below the number of keys the directory holds.
    #[error(
        "dense key cap {cap} is below the {keys} key(s) {} holds: refused, nothing was changed",
        .dir.display()
    )]
    KeyCapBelowKeys {
        /// The state directory.
        dir: PathBuf,
        /// The cap asked for.
        cap: u64,
        /// The keys held.
        keys: u64,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// A stopped-state receipt was asked of a directory without a `state`
    /// file: it never committed a high-water, so it has nothing to carry.
    #[error("state directory {} has no state file, so there is no committed state to describe", .dir.display())]
    NoStateFile {
        /// The state directory.
        dir: PathBuf,
        /// Where the error was made.
        backtrace: Bt,
    },
    /// The committer thread is gone (it panicked); no write can complete.
    #[error("the committer thread for {} has stopped", .dir.display())]
    CommitterStopped {
        /// The state directory.
        dir: PathBuf,
        /// Where the error was made.
        backtrace: Bt,
    },
}

impl FileDriverError {
    pub(crate) fn io(op: FileOp, path: impl Into<PathBuf>, source: io::Error) -> Self {
        FileDriverError::Io {
            op,
            path: path.into(),
            source,
            backtrace: Bt::capture(),
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, source: RecordError) -> Self {
        FileDriverError::Corrupt {
            path: path.into(),
            source,
            backtrace: Bt::capture(),
        }
    }

    /// Whether retrying the same call may succeed without anyone acting.
    ///
    /// True for failures that left the live files untouched and may clear
    /// without restarting the driver: a temp file that could not be created
    /// or written (disk full, a passing I/O error, permissions an operator
    /// can fix while the server keeps retrying) or a rename that failed.
    /// False for corruption, a failed fsync (the driver is poisoned), a
    /// read-only filesystem (Linux remounts one read-only after errors; it
    /// does not come back by itself), a displaced directory, and every
    /// failure at open but a leftover temp file that could not be removed.
    pub fn is_transient(&self) -> bool {
        match self {
            FileDriverError::Io { op, source, .. } => {
                matches!(op, FileOp::WriteTemp | FileOp::Rename | FileOp::RemoveTemp)
                    && source.kind() != io::ErrorKind::ReadOnlyFilesystem
            }
            _ => false,
        }
    }

    /// What the operator can do about it, where the error alone does not
    /// say: the remedy that the one-clause [`Display`](fmt::Display) leaves
    /// out (as PostgreSQL's `HINT` line beside its message), often a
    /// `tsoracle-file` command. `tsoracle-file` prints it on a `hint:` line
    /// under the error. `None` where the error says it all (a corrupt file,
    /// a held lock: the variant's docs say what to do).
    ///
    /// ```
    /// use std::os::unix::fs::PermissionsExt;
    /// use tsoracle_driver_file::{FileDriver, FileDriverError};
    ///
    /// let tmp = tempfile::tempdir()?;
    /// let dir = tmp.path().join("oracle");
    /// std::fs::create_dir(&dir)?;
    /// std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
    /// let err = FileDriver::open_or_init(&dir).unwrap_err();
    /// assert!(matches!(err, FileDriverError::InsecurePermissions { .. }));
    /// assert!(err.to_string().ends_with("is writable by its group or others (mode 0777)"));
    /// assert_eq!(err.hint(), Some(format!(
    ///     "only the oracle's own user may write it: run `chmod go-w {}`", dir.display()
    /// )));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn hint(&self) -> Option<String> {
        let dir_of = |file: &Path| file.parent().unwrap_or(file).display().to_string();
        Some(match self {
            FileDriverError::CorruptIdentity { dir, .. } => format!(
                "nothing the oracle serves depends on it, it only tells copies apart: remove it with `setfattr -x {} {}` to open the directory without one",
                crate::IDENTITY_XATTR,
                dir.display()
            ),
            FileDriverError::Poisoned { .. } => {
                "reopen it (drop the driver and open the directory again) to re-read what is durable"
                    .to_owned()
            }
            FileDriverError::InsecurePermissions { dir, .. } => format!(
                "only the oracle's own user may write it: run `chmod go-w {}`",
                dir.display()
            ),
            FileDriverError::Displaced {
                found: Ownership::LockReplaced,
                ..
            } => "so that no second owner can interleave with this one: stop this server, then start it again"
                .to_owned(),
            FileDriverError::Displaced { dir, .. } => format!(
                "a server restarted on {} would not see this driver's writes: stop this server and find out which directory holds the newest state",
                dir.display()
            ),
            FileDriverError::Retired { marker, .. } => format!(
                "to come back from that oracle run `tsoracle-file migrate in NEWDIR --from URL --keys-from RECEIPT`, \
                 or, only if that oracle never served anyone and never will, lift the marker with \
                 `tsoracle-file migrate reinstate {} --target-never-served`",
                dir_of(marker)
            ),
            FileDriverError::SeedingInterrupted { .. } => {
                "it never served: remove the directory and seed it again".to_owned()
            }
            FileDriverError::MigrationPending { marker, .. } => format!(
                "stop the source oracle, then run `tsoracle-file migrate finish {}`",
                dir_of(marker)
            ),
            FileDriverError::AlreadyLocked { .. }
            | FileDriverError::Corrupt { .. }
            | FileDriverError::StateExists { .. }
            | FileDriverError::CommitterStopped { .. }
            | FileDriverError::KeyCapBelowKeys { .. }
            | FileDriverError::Io { .. }
            | FileDriverError::NotADirectory { .. }
            | FileDriverError::SeedOutOfRange { .. }
            | FileDriverError::InvalidLeases { .. }
            | FileDriverError::CommitterSpawn { .. }
            | FileDriverError::NotPending { .. }
            | FileDriverError::NoStateFile { .. } => return None,
        })
    }

    /// The driver's error inside a [`ConsensusError`] this crate returned:
    /// `TransientDriver` and `PermanentDriver` always box an
    /// `Arc<FileDriverError>`. `None` for every other variant.
    ///
    /// ```
    /// use tsoracle_consensus::{ConsensusDriver, ConsensusError};
    /// use tsoracle_driver_file::{FileDriver, FileDriverError, LEADER_EPOCH};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let driver = FileDriver::open_or_init(dir.path())?;
    /// let too_big = driver.persist_high_water(u64::MAX, LEADER_EPOCH).await.unwrap_err();
    /// // A range error is the trait's own variant, not a driver failure.
    /// assert!(FileDriverError::in_consensus(&too_big).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn in_consensus(err: &ConsensusError) -> Option<&FileDriverError> {
        match err {
            ConsensusError::TransientDriver(inner) | ConsensusError::PermanentDriver(inner) => {
                inner
                    .downcast_ref::<Arc<FileDriverError>>()
                    .map(|shared| shared.as_ref())
            }
            _ => None,
        }
    }

    /// The backtrace captured where the error was made (feature `bt`).
    pub fn backtrace(&self) -> Option<&std::backtrace::Backtrace> {
        match self {
            FileDriverError::AlreadyLocked { backtrace, .. }
            | FileDriverError::Io { backtrace, .. }
            | FileDriverError::Corrupt { backtrace, .. }
            | FileDriverError::CorruptIdentity { backtrace, .. }
            | FileDriverError::NotADirectory { backtrace, .. }
            | FileDriverError::StateExists { backtrace, .. }
            | FileDriverError::SeedOutOfRange { backtrace, .. }
            | FileDriverError::Poisoned { backtrace, .. }
            | FileDriverError::InvalidLeases { backtrace, .. }
            | FileDriverError::InsecurePermissions { backtrace, .. }
            | FileDriverError::Displaced { backtrace, .. }
            | FileDriverError::CommitterSpawn { backtrace, .. }
            | FileDriverError::CommitterStopped { backtrace, .. }
            | FileDriverError::Retired { backtrace, .. }
            | FileDriverError::SeedingInterrupted { backtrace, .. }
            | FileDriverError::MigrationPending { backtrace, .. }
            | FileDriverError::NotPending { backtrace, .. }
            | FileDriverError::KeyCapBelowKeys { backtrace, .. }
            | FileDriverError::NoStateFile { backtrace, .. } => backtrace.get(),
        }
    }
}

/// An error and its whole [`source`](std::error::Error::source) chain on
/// one line, joined with `": "`: how this crate logs a failure, and a
/// ready-made line for a program that reports one.
///
/// ```
/// use tsoracle_driver_file::{FileDriver, error_chain};
///
/// let file = tempfile::NamedTempFile::new()?;
/// let err = FileDriver::open_or_init(file.path().join("state")).unwrap_err();
/// assert!(error_chain(&err).ends_with("is not a directory"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

fn displaced_message(dir: &Path, found: Ownership) -> String {
    let dir = dir.display();
    match found {
        Ownership::LockReplaced => format!(
            "the lock file {dir}/LOCK was removed or replaced while this driver held it, so it refuses every write"
        ),
        _ => format!(
            "{dir} no longer leads to the directory this driver locked (it was moved, removed or replaced), so it refuses every write"
        ),
    }
}

/// Classifies a shared driver error (the README's "Errors, and what to do"):
/// transient when the live files are untouched, permanent otherwise.
pub(crate) fn to_consensus(err: Arc<FileDriverError>) -> ConsensusError {
    if err.is_transient() {
        ConsensusError::TransientDriver(Box::new(err))
    } else {
        ConsensusError::PermanentDriver(Box::new(err))
    }
}

impl From<FileDriverError> for ConsensusError {
    /// [`ConsensusError::TransientDriver`] when
    /// [`FileDriverError::is_transient`], else
    /// [`ConsensusError::PermanentDriver`].
    fn from(err: FileDriverError) -> Self {
        to_consensus(Arc::new(err))
    }
}
