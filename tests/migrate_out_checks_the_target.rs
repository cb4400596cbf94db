//! `tsoracle-file migrate out` checks the target by its state (issue 15,
//! cases 5, 6, 7 and the `--receipt` part of 9), against real
//! `tsoracle-server`s on other `FileDriver`s:
//!
//! - a first run into an oracle that already handed out values of one of
//!   DIR's keys is refused before DIR is marked;
//! - a key moved by someone else while the migration runs stops it;
//! - a re-run proves the target is the oracle DIR was carried to by its
//!   counters and timestamps, not its URLs: a fresh oracle is refused, the
//!   same one at another URL accepted, after a completed migration and
//!   after an interrupted one;
//! - `migrate reinstate --target-never-served` is refused once the
//!   migration completed, and lifts the marker of an interrupted one;
//! - `--receipt FILE` holds the whole receipt, with no temporary file left.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tsoracle_client::Client;
use tsoracle_consensus::{ConsensusDriver, ConsensusError};
use tsoracle_core::{Epoch, SeqKey};
use tsoracle_driver_file::{FileDriver, FileDriverError, Seed, StoppedDir};

use common::cli::outcome;
use common::served::{serve, serve_driver};
use common::{key, now_ms};

fn utf8(path: &Path) -> &str {
    path.to_str().expect("utf-8")
}

/// `migrate out DIR --to URL` and any further arguments.
fn migrate_out(dir: &Path, to: &str, more: &[&str]) -> (bool, String, String) {
    let mut args = vec!["migrate", "out", utf8(dir), "--to", to];
    args.extend_from_slice(more);
    outcome(&args)
}

/// The note in DIR's `RETIRED` marker, read under the lock.
fn note(dir: &Path) -> Option<String> {
    StoppedDir::lock(dir)
        .expect("lock the source")
        .retired_note()
        .expect("read the marker")
}

/// The JSON document after the note's first line.
fn note_json(dir: &Path) -> serde_json::Value {
    let note = note(dir).expect("marked");
    let (_, json) = note.split_once('\n').expect("a document after the line");
    serde_json::from_str(json).expect("the note's JSON")
}

/// A source a little behind the clock (so the wait is instant), with two
/// counters.
fn seed_source(dir: &Path, orders: u64) {
    FileDriver::init_from(
        dir,
        &Seed::new(now_ms() - 10_000)
            .with_counter(key("orders"), orders)
            .with_counter(key("users"), 7),
    )
    .expect("seed the source");
}

/// The file's inode: a rename over it gives a new one (`None` where there
/// are no inodes).
fn inode(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(std::fs::metadata(path).expect("metadata").ino())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The next value of `key` on the oracle at `url` (taking it).
async fn next_value(url: &str, name: &str) -> u64 {
    let client = Client::connect(vec![url.to_string()])
        .await
        .expect("client");
    client.get_seq(name, 1).await.expect("get_seq").start
}

/// Case 7: the target already handed out values of `users`, DIR's second
/// key (the preflight used to probe only the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_into_a_target_that_served_a_key_is_refused_before_marking() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    seed_source(&source, 1_000);
    let target = serve(&tmp.path().join("target")).await;
    let client = Client::connect(vec![target.url.clone()])
        .await
        .expect("client");
    assert_eq!(client.get_seq("users", 3).await.expect("users").start, 0);

    let (ok, _, stderr) = migrate_out(&source, &target.url, &[]);
    assert!(!ok, "a target that served `users` was accepted: {stderr}");
    assert!(
        stderr.contains("already handed out values")
            && stderr.contains("\"users\" at 3")
            && !stderr.contains("\"orders\" at")
            && stderr.contains(&target.url)
            && stderr.contains("nothing was changed")
            && stderr.contains("is not marked RETIRED and may still serve"),
        "{stderr}"
    );
    assert_eq!(note(&source), None, "a refused migration marked the source");
    drop(FileDriver::open_or_init(&source).expect("the source still serves"));
    // The target was changed by the probes alone: one value of each key.
    assert_eq!(client.get_seq("orders", 1).await.expect("orders").start, 1);
    assert_eq!(client.get_seq("users", 1).await.expect("users").start, 4);

    target.stop().await;
}

/// A driver that, as another client of the target would, takes 10 values
/// of `orders` just before the second call for it (the one after the
/// preflight's probe).
struct Interloper {
    inner: Arc<FileDriver>,
    orders_calls: AtomicU32,
}

#[async_trait::async_trait]
impl ConsensusDriver for Interloper {
    fn leadership_events(
        &self,
    ) -> std::pin::Pin<Box<dyn futures::Stream<Item = tsoracle_consensus::LeaderState> + Send>>
    {
        self.inner.leadership_events()
    }
    async fn load_high_water(&self) -> Result<u64, ConsensusError> {
        self.inner.load_high_water().await
    }
    async fn persist_high_water(&self, at_least: u64, epoch: Epoch) -> Result<u64, ConsensusError> {
        self.inner.persist_high_water(at_least, epoch).await
    }
    async fn load_dense_seq(&self, key: &SeqKey) -> Result<u64, ConsensusError> {
        self.inner.load_dense_seq(key).await
    }
    async fn advance_dense(
        &self,
        key: &SeqKey,
        count: u32,
        epoch: Epoch,
    ) -> Result<u64, ConsensusError> {
        if key.as_str() == "orders" && self.orders_calls.fetch_add(1, Ordering::SeqCst) == 1 {
            self.inner.advance_dense(key, 10, epoch).await?;
        }
        self.inner.advance_dense(key, count, epoch).await
    }
}

/// Case 7, during the run: a counter past the preflight's probe + 1 stops
/// the migration (DIR is marked by then); a re-run once nothing else takes
/// values completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_taken_from_during_the_migration_stops_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    seed_source(&source, 1_000);
    let inner = FileDriver::open_or_init(tmp.path().join("target")).expect("open target");
    let target = serve_driver(Arc::new(Interloper {
        inner,
        orders_calls: AtomicU32::new(0),
    }))
    .await;

    let (ok, _, stderr) = migrate_out(&source, &target.url, &[]);
    assert!(!ok, "a key moved during the migration went unnoticed");
    assert!(
        stderr.contains("dense key \"orders\"")
            && stderr.contains("was at 11, past the 1 the preflight left it at")
            && stderr.contains("something else is taking values")
            && stderr.contains("already marked RETIRED")
            && stderr.contains("Re-running `migrate out` is safe"),
        "{stderr}"
    );
    assert_eq!(note_json(&source)["completed"], false);

    let (ok, _, stderr) = migrate_out(&source, &target.url, &[]);
    assert!(ok, "the re-run failed: {stderr}");
    assert_eq!(note_json(&source)["completed"], true);
    assert!(next_value(&target.url, "orders").await >= 1_000);

    target.stop().await;
}

/// Cases 6, 5 and 9: after a completed migration, a re-run into a fresh
/// oracle is refused and changes nothing, one into the same oracle at
/// another URL is accepted, and reinstating is refused; the --receipt file
/// is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_completed_migration_the_target_is_proven_by_its_state() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    let receipt = tmp.path().join("receipt.json");
    seed_source(&source, 1_000);
    let target = serve(&tmp.path().join("target")).await;
    // An older file where the receipt goes: it is replaced by a rename (a
    // new file), never rewritten in place, where a crash could leave half.
    std::fs::write(&receipt, "an older receipt").expect("older receipt");
    let older = inode(&receipt);

    let (ok, _, stderr) = migrate_out(&source, &target.url, &["--receipt", utf8(&receipt)]);
    assert!(ok, "migrate out failed: {stderr}");
    if older.is_some() {
        assert_ne!(inode(&receipt), older, "the receipt was rewritten in place");
    }
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&receipt).expect("the receipt"))
            .expect("the receipt is whole JSON");
    assert_eq!(written["schema"], "tsoracle-file.migrate-out");
    assert_eq!(written["completed"], true);
    assert_eq!(written["dense"][0]["key"], "orders");
    assert!(
        written["dense"][0]["target_next"]
            .as_u64()
            .expect("target_next")
            >= 1_000
    );
    assert_eq!(written, note_json(&source), "the receipt is the note's");
    assert!(
        !tmp.path().join("receipt.json.tmp").exists(),
        "a temporary file was left beside the receipt"
    );
    let completed = note(&source).expect("marked");
    assert!(
        completed.starts_with("migrated out to "),
        "{}",
        completed.lines().next().unwrap_or("")
    );

    // A fresh oracle (a rebuilt one) is refused, whatever its URL.
    let fresh = serve(&tmp.path().join("fresh")).await;
    let (ok, _, stderr) = migrate_out(&source, &fresh.url, &[]);
    assert!(!ok, "a re-run into a fresh oracle was accepted");
    assert!(
        stderr.contains(&format!("the oracle at {} is not the one", fresh.url))
            && stderr.contains("key \"orders\" is at 0, below the")
            && stderr.contains("completed migration")
            && stderr.contains("a rebuilt or different oracle")
            && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert_eq!(note(&source).as_deref(), Some(completed.as_str()));
    // Only the probes touched it: `orders` next is 1, `users` untaken
    // beyond its probe.
    assert_eq!(next_value(&fresh.url, "orders").await, 1);
    assert_eq!(next_value(&fresh.url, "users").await, 1);
    fresh.stop().await;

    // The same oracle by another name is accepted.
    let other_name = format!("http://localhost:{}", target.port);
    let (ok, stdout, stderr) = migrate_out(&source, &other_name, &[]);
    assert!(ok, "the same oracle at {other_name} was refused: {stderr}");
    assert!(stdout.contains(&other_name), "{stdout}");
    assert_eq!(note_json(&source)["to"][0], other_name.as_str());

    // Reinstating a completed migration is refused, and the marker stays.
    let (ok, _, stderr) = outcome(&[
        "migrate",
        "reinstate",
        utf8(&source),
        "--target-never-served",
    ]);
    assert!(!ok, "a completed migration was reinstated");
    assert!(
        stderr.contains("that migration completed")
            && stderr.contains("the marker stays")
            && stderr.contains("migrate in NEWDIR"),
        "{stderr}"
    );
    assert!(note(&source).is_some(), "the marker was lifted");
    assert!(matches!(
        FileDriver::open_or_init(&source),
        Err(FileDriverError::Retired { .. })
    ));

    target.stop().await;
}

/// Cases 6 and 5 after an interrupted first run (a counter too far for
/// `--max-seq-count 1` fails it after DIR is marked): a re-run into a fresh
/// oracle is refused, into the same one accepted; and an interrupted
/// migration can be reinstated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_interrupted_migration_the_target_is_proven_by_its_state() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    seed_source(&source, 2_000_000);
    let target = serve(&tmp.path().join("target")).await;

    let (ok, _, stderr) = migrate_out(&source, &target.url, &["--max-seq-count", "1"]);
    assert!(!ok, "2,000,000 values one at a time were accepted");
    assert!(stderr.contains("--max-seq-count"), "{stderr}");
    let early = note(&source).expect("marked before advancing");
    let line = early.lines().next().unwrap_or("");
    assert!(
        line.starts_with(&format!("being migrated out to {} by ", target.url)),
        "{line}"
    );
    let doc = note_json(&source);
    assert_eq!(doc["schema"], "tsoracle-file.migrate-out-started");
    assert_eq!(doc["completed"], false);
    assert_eq!(doc["to"][0], target.url.as_str());
    assert_eq!(doc["preflight"]["dense"][0]["key"], "orders");
    assert_eq!(doc["preflight"]["dense"][0]["probe"], 0);
    assert_eq!(doc["preflight"]["dense"][1]["key"], "users");
    assert!(doc["preflight"]["timestamp"].as_u64().expect("timestamp") > 0);
    assert!(
        doc["preflight"]["timestamp_physical_ms"]
            .as_u64()
            .expect("physical")
            > 0
    );

    let fresh = serve(&tmp.path().join("fresh")).await;
    let (ok, _, stderr) = migrate_out(&source, &fresh.url, &[]);
    assert!(!ok, "a re-run into a fresh oracle was accepted");
    assert!(
        stderr.contains(&format!("the oracle at {} is not the one", fresh.url))
            && stderr.contains("key \"orders\" is at 0, below the 1")
            && stderr.contains("interrupted migration")
            && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert_eq!(note(&source).as_deref(), Some(early.as_str()));
    fresh.stop().await;

    let (ok, _, stderr) = migrate_out(&source, &format!("http://localhost:{}", target.port), &[]);
    assert!(ok, "the re-run into the same oracle failed: {stderr}");
    assert_eq!(note_json(&source)["completed"], true);
    assert!(next_value(&target.url, "orders").await >= 2_000_000);
    target.stop().await;

    // An interrupted migration can be reinstated (this one, marked again
    // by hand with the early note, whose target is gone).
    StoppedDir::lock(&source)
        .expect("lock")
        .retire(&early)
        .expect("mark again");
    let (ok, stdout, stderr) = outcome(&[
        "migrate",
        "reinstate",
        utf8(&source),
        "--target-never-served",
    ]);
    assert!(
        ok,
        "an interrupted migration could not be reinstated: {stderr}"
    );
    assert!(stdout.contains("lifted the RETIRED marker"), "{stdout}");
    assert_eq!(note(&source), None);
    drop(FileDriver::open_or_init(&source).expect("serves again"));
}

/// Case 6, the timestamps: a target whose timestamps are not above the one
/// the note recorded is not that oracle, even with every counter in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_into_a_target_whose_timestamps_are_behind_the_note_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    seed_source(&source, 1_000);
    let target = serve(&tmp.path().join("target")).await;
    // An early note whose preflight timestamp is an hour ahead of the
    // target's, its counters at what the target has (nothing).
    let ahead = (now_ms() + 3_600_000) << 18;
    let document = serde_json::json!({
        "schema": "tsoracle-file.migrate-out-started",
        "schema_version": 1,
        "completed": false,
        "dir": utf8(&source),
        "to": [target.url.clone()],
        "started_at_unix_ms": now_ms(),
        "preflight": {"timestamp": ahead, "timestamp_physical_ms": ahead >> 18, "dense": []}
    });
    StoppedDir::lock(&source)
        .expect("lock")
        .retire(&format!(
            "being migrated out to {} by `tsoracle-file migrate out` since then\n{document}",
            target.url
        ))
        .expect("mark");

    let (ok, _, stderr) = migrate_out(&source, &target.url, &[]);
    assert!(!ok, "a target behind the recorded timestamp was accepted");
    assert!(
        stderr.contains("is not the one")
            && stderr.contains(&format!("not above the {ahead}"))
            && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    // Refused before any key was probed.
    assert_eq!(next_value(&target.url, "orders").await, 0);

    target.stop().await;
}

/// A marker `migrate out` cannot read is refused by a re-run and by
/// `migrate reinstate` alike (it might be a completed migration's); one
/// written by something else is refused by the re-run, as before.
#[test]
fn a_marker_that_does_not_read_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    seed_source(&source, 1_000);
    StoppedDir::lock(&source)
        .expect("lock")
        .retire(
            "migrated out to http://127.0.0.1:1 by `tsoracle-file migrate out` at then; x\n\
             {\"schema\": \"tsoracle-file.migrate-out\"}\n",
        )
        .expect("mark");
    let (ok, _, stderr) = migrate_out(&source, "http://127.0.0.1:1", &[]);
    assert!(!ok, "an unreadable note was carried on from");
    assert!(
        stderr.contains("receipt does not read") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    let (ok, _, stderr) = outcome(&[
        "migrate",
        "reinstate",
        utf8(&source),
        "--target-never-served",
    ]);
    assert!(!ok, "an unreadable note was lifted");
    assert!(
        stderr.contains("cannot be told from the receipt of a completed migration")
            && stderr.contains("the marker stays"),
        "{stderr}"
    );
    assert!(note(&source).is_some());

    StoppedDir::lock(&source)
        .expect("lock")
        .retire("retired by hand\n")
        .expect("mark");
    let (ok, _, stderr) = migrate_out(&source, "http://127.0.0.1:1", &[]);
    assert!(
        !ok && stderr.contains("by something other than `migrate out`"),
        "{stderr}"
    );
}

/// The early note of an earlier version (its first line alone) records no
/// state of the target: a re-run is checked by its URLs, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_note_of_an_earlier_version_is_checked_by_its_urls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    seed_source(&source, 1_000);
    let target = serve(&tmp.path().join("target")).await;
    StoppedDir::lock(&source)
        .expect("lock")
        .retire(&format!(
            "being migrated out to {} by `tsoracle-file migrate out` since then; this directory must not serve again\n",
            target.url
        ))
        .expect("mark");

    let other = format!("http://localhost:{}", target.port);
    let (ok, _, stderr) = migrate_out(&source, &other, &[]);
    assert!(
        !ok && stderr.contains("already migrated out to"),
        "{stderr}"
    );
    let (ok, _, stderr) = migrate_out(&source, &format!("{}/", target.url), &[]);
    assert!(ok, "the re-run to the URL the note names failed: {stderr}");
    assert!(
        stderr.contains("recorded only the target's URLs"),
        "{stderr}"
    );
    assert_eq!(note_json(&source)["completed"], true);
    assert!(next_value(&target.url, "orders").await >= 1_000);

    target.stop().await;
}
