//! `inspect DIR [--json] [--now-ms MS]`: the high-water, every dense
//! counter and the key cap, every lease with its status, the lock holder,
//! the directory's identity (from its extended attribute, or an `IDENTITY`
//! file an earlier version left) and leftover temp files. Reads without
//! taking the lock.

use std::path::PathBuf;

use serde::Serialize;
use tsoracle_core::LeaseRecord;
use tsoracle_driver_file::dense_record::DEFAULT_KEY_CAP;
use tsoracle_driver_file::identity_record::Origin;
use tsoracle_driver_file::{IDENTITY_XATTR, OriginSource, StateDir};

use super::export::{DenseJson, LeaseJson};
use crate::cli::{self, CmdResult};
use crate::locks::{self, LockJson, LockStatus};

/// The long help of `inspect` (`tsoracle-file inspect --help`).
pub(crate) const LONG_ABOUT: &str = concat!(
    "Show the high-water (integer and UTC), every dense counter and the key cap, ",
    "every lease (id, holder, epoch, ttl, upper bound, expiry, and status: live, ",
    "expired when expires_at_ms <= now, or superseded), whether a process holds ",
    "the directory lock (Linux: read from /proc/locks, never by taking the lock; ",
    "\"unknown\" elsewhere), and leftover *.tmp files.\n\n",
    "Reads without taking the lock and changes nothing.\n\n",
    crate::cli::exit_codes!(),
);

/// Arguments of `inspect`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The state directory
    pub(crate) dir: PathBuf,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub(crate) json: bool,
    /// Judge lease expiry at this time (ms since the Unix epoch) instead
    /// of now
    #[arg(long, value_name = "MS")]
    pub(crate) now_ms: Option<u64>,
}

/// The `inspect --json` document.
#[derive(Debug, Serialize)]
pub(crate) struct InspectDoc {
    /// Always `"tsoracle-file-inspect"`.
    pub(crate) format: &'static str,
    /// The layout of this document, 1.
    pub(crate) version: u32,
    pub(crate) dir: String,
    /// The time lease expiry was judged at.
    pub(crate) now_ms: u64,
    /// `null` when there is no `state` file.
    pub(crate) high_water: Option<u64>,
    pub(crate) high_water_utc: Option<String>,
    /// `null` when there is no `dense` file.
    pub(crate) dense: Option<DenseJson>,
    /// `null` when there is no `leases` file.
    pub(crate) leases: Option<Vec<InspectLease>>,
    pub(crate) lock: LockJson,
    pub(crate) leftover_temp_files: Vec<String>,
    /// The directory's device and inode (every copy has its own); `null`
    /// where the platform has none.
    pub(crate) identity: Option<IdentityJson>,
    /// The directory's identity: the origin id every copy of this oracle
    /// shares; `null` when there is none.
    pub(crate) origin: Option<OriginJson>,
    /// Where `origin` was read from, or why there is none: `xattr` (the
    /// directory's extended attribute), `identity-file` (an `IDENTITY` file
    /// of an earlier version), `missing`, or `unsupported` (the filesystem
    /// has no extended attributes).
    pub(crate) origin_source: &'static str,
    /// Whether an `IDENTITY` file of an earlier version is in the directory
    /// (upstream's tools refuse it; the next open removes it).
    pub(crate) identity_file: bool,
    /// Whether a `RETIRED` marker refuses every open (migrated away).
    pub(crate) retired: bool,
    /// Whether a `SEEDING` marker refuses every open (an interrupted seed).
    pub(crate) seeding: bool,
    /// Whether the directory waits for `migrate finish`, refusing every open.
    pub(crate) pending: bool,
    /// The `state` record's mark (`retired`, `seeding`, `pending`), or null.
    pub(crate) state_mark: Option<&'static str>,
}

/// The `identity` object of `inspect --json`.
#[derive(Debug, Serialize)]
pub(crate) struct IdentityJson {
    pub(crate) device: u64,
    pub(crate) inode: u64,
}

/// The `origin` object of `inspect --json`.
#[derive(Debug, Serialize)]
pub(crate) struct OriginJson {
    /// 32 lowercase hexadecimal digits.
    pub(crate) id: String,
    pub(crate) created_ms: u64,
    pub(crate) created_utc: Option<String>,
    /// Where the directory was last opened by a driver.
    pub(crate) device: u64,
    pub(crate) inode: u64,
    /// Whether that is this directory; `false`: this one is a copy, a
    /// restore or a move of that one, not opened since.
    pub(crate) opened_here: Option<bool>,
}

/// Whether the origin's recorded place is the directory itself; `None`
/// where there is no identity to compare with.
fn opened_here(state: &StateDir, origin: &Origin) -> Option<bool> {
    state.identity.map(|here| here == origin.opened_in)
}

/// A lease as `inspect --json` shows it: the `export` fields, its expiry
/// as UTC (`null` after the year 9999) and its status.
#[derive(Debug, Serialize)]
pub(crate) struct InspectLease {
    #[serde(flatten)]
    pub(crate) lease: LeaseJson,
    pub(crate) expires_at_utc: Option<String>,
    /// `live`, `expired` or `superseded`.
    pub(crate) status: &'static str,
}

/// Shows what the directory holds.
pub(crate) fn exec(args: &Args) -> CmdResult {
    let state = cli::read(&args.dir)?;
    let now = args.now_ms.unwrap_or_else(cli::now_ms_since_epoch);
    let lock = locks::lock_status(&args.dir, state.has_lock_file);
    if args.json {
        Ok(cli::json_pretty(&document(&state, now, &lock)))
    } else {
        Ok(text(&state, now, &lock))
    }
}

fn document(state: &StateDir, now: u64, lock: &LockStatus) -> InspectDoc {
    InspectDoc {
        format: "tsoracle-file-inspect",
        version: 1,
        dir: state.dir.to_string_lossy().into_owned(),
        now_ms: now,
        high_water: state.high_water,
        high_water_utc: state.high_water.and_then(cli::utc),
        dense: state.dense.as_ref().map(DenseJson::new),
        leases: state.leases.as_ref().map(|leases| {
            leases
                .iter()
                .map(|lease| InspectLease {
                    lease: LeaseJson::new(lease),
                    expires_at_utc: cli::utc(lease.expires_at_ms),
                    status: lease_status(lease, now),
                })
                .collect()
        }),
        lock: lock.to_json(state.has_lock_file),
        leftover_temp_files: state
            .leftover_temp_files
            .iter()
            .map(|path| path.to_string_lossy().into_owned())
            .collect(),
        identity: state.identity.map(|id| IdentityJson {
            device: id.device,
            inode: id.inode,
        }),
        origin: state.origin.map(|origin| OriginJson {
            id: origin.id_hex(),
            created_ms: origin.created_ms,
            created_utc: cli::utc(origin.created_ms),
            device: origin.opened_in.device,
            inode: origin.opened_in.inode,
            opened_here: opened_here(state, &origin),
        }),
        origin_source: source_name(state.origin_source),
        identity_file: state.identity_file,
        retired: state.retired,
        seeding: state.seeding,
        pending: state.pending,
        state_mark: state.mark.map(|mark| mark.name()),
    }
}

/// `origin_source` in `inspect --json`.
fn source_name(source: OriginSource) -> &'static str {
    match source {
        OriginSource::Xattr => "xattr",
        OriginSource::IdentityFile => "identity-file",
        OriginSource::Unsupported => "unsupported",
        // `Missing`, and whatever a later version of the library adds.
        _ => "missing",
    }
}

/// The text `inspect` prints: one section per part of the directory.
fn text(state: &StateDir, now: u64, lock: &LockStatus) -> String {
    let mut lines = vec![format!("directory:   {}", state.dir.display())];
    high_water_text(state, &mut lines);
    dense_text(state, &mut lines);
    leases_text(state, now, &mut lines);
    lines.push(format!("lock:        {}", lock.describe()));
    identity_text(state, &mut lines);
    status_text(state, &mut lines);
    temp_files_text(state, &mut lines);
    let mut out = String::new();
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The high-water, as an integer and as a UTC time.
fn high_water_text(state: &StateDir, lines: &mut Vec<String>) {
    match state.high_water {
        Some(hw) => lines.push(format!("high-water:  {hw} ({})", cli::utc_text(hw))),
        None => {
            lines.push("high-water:  none (no state file; a driver opening it starts at 0)".into())
        }
    }
}

/// Every dense counter and the key cap, with the keys no call can reach.
fn dense_text(state: &StateDir, lines: &mut Vec<String>) {
    match &state.dense {
        Some(dense) => {
            lines.push(format!(
                "dense:       {} counter(s), key cap {}",
                dense.key_count(),
                dense.cap
            ));
            for (key, value) in &dense.counters {
                lines.push(format!("  {} = {value}", key.as_str()));
            }
            for (key, value) in &dense.unaddressable {
                lines.push(format!(
                    "  {:?} = {value} (kept, but no call can reach it: SeqKey refuses a key {})",
                    key.as_str(),
                    key.reason()
                ));
            }
        }
        None => lines.push(format!(
            "dense:       none (no dense file; no counters, key cap {DEFAULT_KEY_CAP})"
        )),
    }
}

/// Every lease with its status as of `now`.
fn leases_text(state: &StateDir, now: u64, lines: &mut Vec<String>) {
    match &state.leases {
        Some(leases) => {
            lines.push(format!(
                "leases:      {} lease(s), status as of {} ({now})",
                leases.len(),
                cli::utc_text(now)
            ));
            for lease in leases {
                lines.push(format!(
                    "  lease {}: holder {}, epoch {}, ttl {} ms, upper bound {}, expires {} ({}), {}",
                    lease.lease_id,
                    holder_display(&lease.holder),
                    lease.holder_epoch,
                    lease.ttl_ms,
                    lease.ts_upper_bound,
                    cli::utc_text(lease.expires_at_ms),
                    lease.expires_at_ms,
                    lease_status(lease, now),
                ));
            }
        }
        None => lines.push("leases:      none (no leases file)".into()),
    }
}

/// The directory's identity and origin, and an `IDENTITY` file an earlier
/// version left.
fn identity_text(state: &StateDir, lines: &mut Vec<String>) {
    if let Some(id) = state.identity {
        lines.push(format!(
            "identity:    {id} (every copy of a directory has its own)"
        ));
    }
    match &state.origin {
        Some(origin) => {
            lines.push(format!(
                "origin:      {}, created {} ({})",
                origin.id_hex(),
                cli::utc_text(origin.created_ms),
                origin.created_ms
            ));
            if opened_here(state, origin) == Some(false) {
                lines.push(format!(
                    "             last opened at {}, not here: this is a copy, a restore or a move of that directory; copies share the origin id, and at most one of them may ever serve",
                    origin.opened_in
                ));
            }
        }
        None if state.origin_source == OriginSource::Unsupported => lines.push(
            "origin:      none (no identity: the filesystem has no extended attributes)".into(),
        ),
        None => lines.push(format!(
            "origin:      none (no identity attribute {IDENTITY_XATTR}: made by another tool, never opened by this crate, or copied without its extended attributes)"
        )),
    }
    if state.identity_file {
        lines.push(if state.origin_source == OriginSource::IdentityFile {
            "             kept in an IDENTITY file by an earlier version, which upstream's tools refuse: the next open moves it into the directory's extended attribute (removes it, where the filesystem has none)".into()
        } else {
            "             an IDENTITY file of an earlier version is left, which upstream's tools refuse: the next open removes it".into()
        });
    }
}

/// The markers every open refuses: `RETIRED`, `SEEDING`, `PENDING`.
fn status_text(state: &StateDir, lines: &mut Vec<String>) {
    if state.retired {
        lines
            .push("status:      RETIRED: migrated to another oracle; every open refuses it".into());
    }
    if state.seeding {
        lines.push("status:      SEEDING: an interrupted seed; every open refuses it (remove the directory and seed again)".into());
    }
    if state.pending {
        lines.push(format!(
            "status:      PENDING: seeded by `migrate in`; every open refuses it until `tsoracle-file migrate finish {}`",
            state.dir.display()
        ));
    }
}

/// Leftover temp files, which the next open removes.
fn temp_files_text(state: &StateDir, lines: &mut Vec<String>) {
    if state.leftover_temp_files.is_empty() {
        lines.push("temp files:  none".into());
    } else {
        lines.push(format!(
            "temp files:  {} leftover (the next open removes them)",
            state.leftover_temp_files.len()
        ));
        for temp in &state.leftover_temp_files {
            lines.push(format!("  {}", temp.display()));
        }
    }
}

/// `superseded` wins over time: a superseded lease no longer counts
/// whatever its expiry. Otherwise expired at `now >= expires_at_ms`, as
/// `LeaseRecord::is_expired` says.
fn lease_status(lease: &LeaseRecord, now: u64) -> &'static str {
    if lease.superseded {
        "superseded"
    } else if lease.is_expired(now) {
        "expired"
    } else {
        "live"
    }
}

/// The holder as text when it is UTF-8 without control characters, else
/// `hex:` and its bytes.
fn holder_display(holder: &[u8]) -> String {
    match std::str::from_utf8(holder) {
        Ok(text) if !text.chars().any(char::is_control) => format!("{text:?}"),
        _ => format!("hex:{}", hex::encode(holder)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_show_as_text_or_hex() {
        assert_eq!(holder_display(b"svc-a"), "\"svc-a\"");
        assert_eq!(holder_display(&[0xff, 0x00]), "hex:ff00");
        assert_eq!(holder_display(b"a\nb"), "hex:610a62");
    }
}
