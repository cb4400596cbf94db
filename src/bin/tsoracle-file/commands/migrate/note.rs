//! What a `RETIRED` note written by `migrate out` records about the oracle
//! the directory was carried to, read back by a re-run (to prove by the
//! target's state that it is the same oracle, whatever its URLs) and by
//! `migrate reinstate` (which refuses once the migration completed).
//!
//! A note is one human-readable line (the library quotes it in its
//! `Retired` error), then a JSON document:
//!
//! - while the migration runs (written before anything on the target is
//!   advanced): a [`MigrateOutStarted`] (`completed: false`) with the
//!   preflight's timestamp and one probe per dense key;
//! - once it succeeded: the full `migrate out` receipt (`completed: true`;
//!   a receipt without the field, from an earlier version, is a completed
//!   one too).
//!
//! A note of an earlier version written before anything was advanced is
//! its first line alone; only its URLs are known.

// Without feature `migrate` only `migrate reinstate` reads notes: writing
// them and the state a re-run checks are unused.
#![cfg_attr(not(feature = "migrate"), allow(dead_code))]

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The `schema` of the receipt `migrate out` writes on success.
pub(crate) const MIGRATE_OUT_SCHEMA: &str = "tsoracle-file.migrate-out";

/// The `schema` of the document in the `RETIRED` note `migrate out` writes
/// before it advances anything on the target.
pub(crate) const MIGRATE_OUT_STARTED_SCHEMA: &str = "tsoracle-file.migrate-out-started";

/// The early note's document: where DIR is being carried, and what the
/// preflight saw there before anything was advanced.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MigrateOutStarted {
    /// Always [`MIGRATE_OUT_STARTED_SCHEMA`].
    pub(crate) schema: String,
    /// The layout of this document, 1.
    pub(crate) schema_version: u32,
    /// Always `false`: the migration has not reported success.
    pub(crate) completed: bool,
    /// The directory carried.
    pub(crate) dir: String,
    /// The target's endpoints.
    pub(crate) to: Vec<String>,
    /// When the command started (Unix ms, this machine).
    pub(crate) started_at_unix_ms: u64,
    /// What the preflight took from the target.
    pub(crate) preflight: Preflight,
}

/// The preflight's probes: one timestamp, and one (burned) value of every
/// dense key of DIR.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Preflight {
    /// The timestamp the target issued, and its physical part.
    pub(crate) timestamp: u64,
    pub(crate) timestamp_physical_ms: u64,
    /// The value each key's probe took: the counter's position then.
    pub(crate) dense: Vec<KeyProbe>,
}

/// One key's preflight probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyProbe {
    pub(crate) key: String,
    pub(crate) probe: u64,
}

/// What a `RETIRED` note says.
#[derive(Debug)]
pub(crate) enum Note {
    /// A migration that reported success (the full receipt).
    Completed(Recorded),
    /// A migration that marked DIR and may have advanced the target, but
    /// did not report success (the early note).
    Started(Recorded),
    /// An early note of an earlier version: the first line alone.
    Legacy { to: Vec<String> },
    /// Something else wrote the marker (or by hand): the first line.
    Foreign { line: String },
    /// Ours by its first line or schema, but its document does not read.
    Unreadable { reason: String },
}

/// The target's state a note records: the target DIR was carried to is at
/// or above every one of these from then on.
#[derive(Debug)]
pub(crate) struct Recorded {
    /// The endpoints it was reached at.
    pub(crate) to: Vec<String>,
    /// When the note was written (Unix ms, this machine).
    pub(crate) at_unix_ms: u64,
    /// A timestamp the target issued; every later one is above it.
    pub(crate) timestamp: u64,
    /// Per dense key, the target's next value then: it is never below.
    pub(crate) dense_next: BTreeMap<String, u64>,
}

/// The few fields of a completed receipt a re-run checks.
#[derive(Deserialize)]
struct CompletedView {
    to: Vec<String>,
    finished_at_unix_ms: u64,
    timestamps: TimestampsView,
    dense: Vec<DenseView>,
}

#[derive(Deserialize)]
struct TimestampsView {
    first_above: u64,
}

#[derive(Deserialize)]
struct DenseView {
    key: String,
    target_next: u64,
}

/// The URLs of a first line `... out to URL,URL by ...`.
fn listed_urls(line: &str) -> Option<Vec<String>> {
    let urls = line
        .split_once(" out to ")
        .and_then(|(_, rest)| rest.split_once(" by "))
        .map(|(urls, _)| urls)?;
    Some(
        urls.split(',')
            .map(|url| url.trim().to_string())
            .filter(|url| !url.is_empty())
            .collect(),
    )
}

/// Reads a `RETIRED` note.
pub(crate) fn read_note(note: &str) -> Note {
    let (line, rest) = note.split_once('\n').unwrap_or((note, ""));
    let line = line.trim().to_string();
    let rest = rest.trim();
    if rest.is_empty() {
        return match listed_urls(&line) {
            Some(to) => Note::Legacy { to },
            None => Note::Foreign { line },
        };
    }
    let value: serde_json::Value = match serde_json::from_str(rest) {
        Ok(value) => value,
        Err(err) => {
            return match listed_urls(&line) {
                Some(_) => Note::Unreadable {
                    reason: format!("its JSON does not parse: {err}"),
                },
                None => Note::Foreign { line },
            };
        }
    };
    match value.get("schema").and_then(serde_json::Value::as_str) {
        Some(MIGRATE_OUT_SCHEMA) => match serde_json::from_value::<CompletedView>(value) {
            Ok(view) => Note::Completed(Recorded {
                to: view.to,
                at_unix_ms: view.finished_at_unix_ms,
                timestamp: view.timestamps.first_above,
                dense_next: view
                    .dense
                    .into_iter()
                    .map(|d| (d.key, d.target_next))
                    .collect(),
            }),
            Err(err) => Note::Unreadable {
                reason: format!("its {MIGRATE_OUT_SCHEMA} receipt does not read: {err}"),
            },
        },
        Some(MIGRATE_OUT_STARTED_SCHEMA) => {
            match serde_json::from_value::<MigrateOutStarted>(value) {
                Ok(started) => Note::Started(Recorded {
                    to: started.to,
                    at_unix_ms: started.started_at_unix_ms,
                    timestamp: started.preflight.timestamp,
                    dense_next: started
                        .preflight
                        .dense
                        .into_iter()
                        .map(|p| (p.key, p.probe.saturating_add(1)))
                        .collect(),
                }),
                Err(err) => Note::Unreadable {
                    reason: format!(
                        "its {MIGRATE_OUT_STARTED_SCHEMA} document does not read: {err}"
                    ),
                },
            }
        }
        _ => match listed_urls(&line) {
            Some(_) => Note::Unreadable {
                reason: "its JSON has no schema `migrate out` writes".to_string(),
            },
            None => Note::Foreign { line },
        },
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file (or
/// none) or the whole new one: a temporary file beside it, fsynced, renamed
/// over it, and the directory fsynced.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let Some(name) = path.file_name() else {
        return Err(format!("{} names no file", path.display()));
    };
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let parent: PathBuf = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|err| format!("cannot create {}: {err}", tmp.display()))?;
        file.write_all(bytes)
            .map_err(|err| format!("cannot write {}: {err}", tmp.display()))?;
        file.sync_all()
            .map_err(|err| format!("cannot fsync {}: {err}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|err| {
            format!(
                "cannot rename {} to {}: {err}",
                tmp.display(),
                path.display()
            )
        })
    })();
    if let Err(err) = written {
        // Best effort: the file it was to replace is untouched either way.
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    File::open(&parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|err| {
            format!(
                "wrote {} but cannot fsync its directory {}: {err}",
                path.display(),
                parent.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_read() {
        assert!(matches!(
            read_note("migrated out to x\n"),
            Note::Foreign { line } if line == "migrated out to x"
        ));
        assert!(matches!(
            read_note("being migrated out to http://a:1,http://b:2 by `tsoracle-file migrate out` since T; x\n"),
            Note::Legacy { to } if to == ["http://a:1", "http://b:2"]
        ));
        let started = serde_json::json!({
            "schema": MIGRATE_OUT_STARTED_SCHEMA, "schema_version": 1, "completed": false,
            "dir": "/d", "to": ["http://a:1"], "started_at_unix_ms": 5,
            "preflight": {"timestamp": 77, "timestamp_physical_ms": 0,
                          "dense": [{"key": "k", "probe": 9}]}
        });
        match read_note(&format!("being migrated out to http://a:1 by x\n{started}")) {
            Note::Started(recorded) => {
                assert_eq!(recorded.timestamp, 77);
                assert_eq!(recorded.dense_next.get("k"), Some(&10));
                assert_eq!(recorded.at_unix_ms, 5);
            }
            other => panic!("{other:?}"),
        }
        // A receipt without `completed` (an earlier version) is a completed one.
        let receipt = serde_json::json!({
            "schema": MIGRATE_OUT_SCHEMA, "to": ["http://a:1"], "finished_at_unix_ms": 6,
            "timestamps": {"first_above": 88}, "dense": [{"key": "k", "target_next": 12}]
        });
        match read_note(&format!("migrated out to http://a:1 by x\n{receipt}")) {
            Note::Completed(recorded) => {
                assert_eq!(recorded.timestamp, 88);
                assert_eq!(recorded.dense_next.get("k"), Some(&12));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_note(
                "migrated out to http://a:1 by x\n{\"schema\": \"tsoracle-file.migrate-out\"}"
            ),
            Note::Unreadable { .. }
        ));
        assert!(matches!(
            read_note("migrated out to http://a:1 by x\n{not json"),
            Note::Unreadable { .. }
        ));
    }
}
