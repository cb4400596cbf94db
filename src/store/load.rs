//! Loading a state directory: reading and decoding its three files (a
//! defect is refused naming the file, never repaired), then removing the
//! `*.tmp` debris of interrupted writes.

use std::io;
use std::path::Path;

use tsoracle_core::LeaseRecord;

use super::{Snapshot, Store, failpoint};
use crate::dense_record::{self, DenseState};
use crate::error::{FileDriverError, FileOp};
use crate::layout::{FileKind, temp_files};
use crate::vfs::VfsDir;
use crate::{lease_record, record};

impl Store {
    /// Reads and validates all three files, then removes `*.tmp` debris.
    /// Returns them as found ([`Snapshot::from`] gives what a driver
    /// serves), so the caller also knows which exist.
    ///
    /// Debris is removed only after every file decoded and `accept` agreed
    /// to what they hold, so a directory that is refused as corrupt, or by
    /// `accept` (a marked one), is left exactly as it was found.
    pub(crate) fn load(
        &self,
        accept: impl FnOnce(&Files) -> Result<(), FileDriverError>,
    ) -> Result<Files, FileDriverError> {
        failpoint("file_driver::open")
            .map_err(|err| FileDriverError::io(FileOp::Read, &self.dir, err))?;
        // A process that died between a rename and its directory fsync left
        // the new file visible but not yet durable: make it durable before
        // anything read here is served or acknowledged as durable.
        self.sync_handle()
            .map_err(|err| FileDriverError::io(FileOp::FsyncDir, &self.dir, err))?;
        let files = read_files(self.handle.as_ref(), &self.dir)?;
        accept(&files)?;
        let mut removed = 0;
        for temp in temp_files() {
            match self.handle.remove(temp) {
                Ok(()) => removed += 1,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(FileDriverError::io(
                        FileOp::RemoveTemp,
                        self.path(temp),
                        err,
                    ));
                }
            }
        }
        crate::metrics::temp_files_removed(removed);
        Ok(files)
    }
}

/// The three files of a state directory, decoded; `None` where a file is
/// missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Files {
    pub(crate) high_water: Option<u64>,
    /// The mark of the `state` record, if it carries one (the directory
    /// must not serve; `crate::marks` refuses it).
    pub(crate) mark: Option<record::Mark>,
    pub(crate) dense: Option<DenseState>,
    pub(crate) leases: Option<Vec<LeaseRecord>>,
}

impl Files {
    /// Whether any of the three files exists: a directory without one holds
    /// no state yet.
    pub(crate) fn hold_state(&self) -> bool {
        self.high_water.is_some() || self.dense.is_some() || self.leases.is_some()
    }
}

impl From<Files> for Snapshot {
    /// What a missing file means: high-water 0, no counters (default cap),
    /// no leases.
    fn from(files: Files) -> Self {
        Snapshot {
            high_water: files.high_water.unwrap_or(0),
            dense: files.dense.unwrap_or_default(),
            leases: files.leases.unwrap_or_default(),
        }
    }
}

/// Reads and decodes `state`, `dense` and `leases` of the opened directory
/// `handle` (named `dir` in errors). Reads only: safe without the lock,
/// because live files are only ever replaced whole by rename.
pub(crate) fn read_files(handle: &dyn VfsDir, dir: &Path) -> Result<Files, FileDriverError> {
    let state = read_decoded(handle, dir, FileKind::State, record::decode_record)?;
    Ok(Files {
        high_water: state.map(|state| state.high_water),
        mark: state.and_then(|state| state.mark),
        dense: read_decoded(handle, dir, FileKind::Dense, dense_record::decode)?,
        leases: read_decoded(handle, dir, FileKind::Leases, lease_record::decode)?,
    })
}

fn read_decoded<T>(
    handle: &dyn VfsDir,
    dir: &Path,
    kind: FileKind,
    decode: impl FnOnce(&[u8]) -> Result<T, crate::record::RecordError>,
) -> Result<Option<T>, FileDriverError> {
    read_decoded_named(handle, dir, kind.name(), decode)
}

/// Reads and decodes the file `name` of the opened directory; `None` when
/// it does not exist.
pub(crate) fn read_decoded_named<T>(
    handle: &dyn VfsDir,
    dir: &Path,
    name: &str,
    decode: impl FnOnce(&[u8]) -> Result<T, crate::record::RecordError>,
) -> Result<Option<T>, FileDriverError> {
    match handle.read(name) {
        Ok(bytes) => decode_named(dir, name, bytes.as_deref(), decode),
        Err(err) => Err(FileDriverError::io(FileOp::Read, dir.join(name), err)),
    }
}

/// Decodes the bytes of the file `name` of `dir`, already read (`None`:
/// the file is missing); a defect is [`FileDriverError::Corrupt`] naming it.
pub(crate) fn decode_named<T>(
    dir: &Path,
    name: &str,
    bytes: Option<&[u8]>,
    decode: impl FnOnce(&[u8]) -> Result<T, crate::record::RecordError>,
) -> Result<Option<T>, FileDriverError> {
    bytes
        .map(|bytes| decode(bytes).map_err(|err| FileDriverError::corrupt(dir.join(name), err)))
        .transpose()
}
