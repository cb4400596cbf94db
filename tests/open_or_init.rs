//! Opening and seeding a state directory: what a fresh, a reopened and a
//! reference directory hold; that this crate writes the reference bytes; how
//! debris, wrong paths and existing state are handled; the trait's range,
//! fast-path, leadership and dense-counter contracts.

mod common;

use std::collections::BTreeMap;

use futures::{FutureExt, StreamExt};
use tsoracle_consensus::{ConsensusDriver, ConsensusError, LeaderState};
use tsoracle_core::PHYSICAL_MS_MAX;
use tsoracle_driver_file::dense_record::{self, DenseState};
use tsoracle_driver_file::{FileDriver, FileDriverError, LEADER_EPOCH, record};

use common::{
    copy_fixture, dir_contents, entry_names, fixture_dir, fixture_file, full_leases, key,
};

// ---------------------------------------------------------------------------
// Fresh and reopened directories.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_fresh_directory_holds_only_lock_until_a_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("oracle");
    assert!(!dir.exists());
    let driver = FileDriver::open_or_init(&dir).expect("open fresh");
    assert!(dir.is_dir(), "the directory was created");
    assert_eq!(driver.dir(), dir.as_path());
    assert_eq!(driver.load_high_water().await.unwrap(), 0);
    assert_eq!(driver.high_water(), 0);
    assert_eq!(driver.load_dense_seq(&key("orders")).await.unwrap(), 0);
    assert_eq!(driver.load_leases().await.unwrap(), vec![]);
    assert_eq!(entry_names(&dir), ["LOCK"]);
    assert_eq!(dir_contents(&dir)["LOCK"], b"", "LOCK is an empty sentinel");

    // A fast-path persist (0 <= durable 0) writes nothing either.
    assert_eq!(driver.persist_high_water(0, LEADER_EPOCH).await.unwrap(), 0);
    assert_eq!(entry_names(&dir), ["LOCK"]);

    // The first real write creates exactly `state`.
    assert_eq!(
        driver
            .persist_high_water(1_000, LEADER_EPOCH)
            .await
            .unwrap(),
        1_000
    );
    assert_eq!(entry_names(&dir), ["LOCK", "state"]);
    assert_eq!(dir_contents(&dir)["state"], record::encode(1_000).to_vec());
}

#[tokio::test]
async fn a_nested_missing_path_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a").join("b").join("c");
    let driver = FileDriver::open_or_init(&dir).expect("open nested");
    assert!(dir.is_dir());
    assert_eq!(entry_names(&dir), ["LOCK"]);
    assert_eq!(entry_names(&tmp.path().join("a")), ["b"]);
    assert_eq!(driver.load_high_water().await.unwrap(), 0);
}

#[tokio::test]
async fn a_reopened_directory_has_everything_that_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let leases = full_leases();
    {
        let driver = FileDriver::open_or_init(tmp.path()).unwrap();
        driver
            .persist_high_water(1_764_000_123_456, LEADER_EPOCH)
            .await
            .unwrap();
        assert_eq!(
            driver
                .advance_dense(&key("orders"), 5, LEADER_EPOCH)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            driver
                .advance_dense_batch(&[(key("orders"), 3), (key("users"), 9)], LEADER_EPOCH)
                .await
                .unwrap(),
            vec![5, 0]
        );
        driver.persist_leases(&leases, LEADER_EPOCH).await.unwrap();
    }
    let driver = FileDriver::open_or_init(tmp.path()).expect("reopen");
    assert_eq!(driver.load_high_water().await.unwrap(), 1_764_000_123_456);
    assert_eq!(driver.load_dense_seq(&key("orders")).await.unwrap(), 8);
    assert_eq!(driver.load_dense_seq(&key("users")).await.unwrap(), 9);
    assert_eq!(driver.load_dense_seq(&key("absent")).await.unwrap(), 0);
    assert_eq!(driver.load_leases().await.unwrap(), leases);
    // Counters continue from where they were.
    assert_eq!(
        driver
            .advance_dense(&key("orders"), 1, LEADER_EPOCH)
            .await
            .unwrap(),
        8
    );
}

// ---------------------------------------------------------------------------
// The reference directories.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_highwater_fixture_opens_with_its_listed_values() {
    let dir = copy_fixture("highwater");
    let driver = FileDriver::open_or_init(dir.path()).unwrap();
    assert_eq!(driver.load_high_water().await.unwrap(), 1_764_000_000_123);
    assert_eq!(driver.load_dense_seq(&key("orders")).await.unwrap(), 0);
    assert_eq!(driver.load_leases().await.unwrap(), vec![]);
}

#[tokio::test]
async fn the_seeded_fixture_opens_with_its_listed_values() {
    let dir = copy_fixture("seeded");
    let driver = FileDriver::open_or_init(dir.path()).unwrap();
    assert_eq!(driver.load_high_water().await.unwrap(), 1_700_000_000_000);
    assert_eq!(driver.load_leases().await.unwrap(), vec![]);
}

#[tokio::test]
async fn the_full_fixture_opens_with_its_listed_values() {
    let dir = copy_fixture("full");
    let before = dir_contents(dir.path());
    let driver = FileDriver::open_or_init(dir.path()).unwrap();
    assert_eq!(driver.load_high_water().await.unwrap(), 1_764_000_555_000);
    assert_eq!(driver.load_dense_seq(&key("orders")).await.unwrap(), 42);
    assert_eq!(driver.load_dense_seq(&key("users")).await.unwrap(), 7);
    assert_eq!(driver.load_dense_seq(&key("other")).await.unwrap(), 0);
    assert_eq!(driver.load_leases().await.unwrap(), full_leases());
    // Opening reads; it does not rewrite.
    assert_eq!(dir_contents(dir.path()), before);
}

#[test]
fn seeding_writes_the_seeded_fixture_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("seeded");
    FileDriver::init_seeded(&dir, 1_700_000_000_000).expect("seed");
    assert_eq!(
        std::fs::read(dir.join("state")).unwrap(),
        fixture_file("seeded", "state")
    );
    assert!(!dir.join("state.tmp").exists());
}

#[tokio::test]
async fn persisting_a_high_water_writes_the_highwater_fixture_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = FileDriver::open_or_init(tmp.path()).unwrap();
    driver
        .persist_high_water(1_764_000_000_123, LEADER_EPOCH)
        .await
        .unwrap();
    drop(driver);
    assert_eq!(
        dir_contents(tmp.path()),
        dir_contents(&fixture_dir("highwater")),
        "LOCK and state, byte for byte"
    );
}

#[tokio::test]
async fn recreating_the_full_content_writes_the_full_fixture_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = FileDriver::open_or_init(tmp.path()).unwrap();
    driver
        .persist_high_water(1_764_000_555_000, LEADER_EPOCH)
        .await
        .unwrap();
    assert_eq!(
        driver
            .advance_dense(&key("orders"), 42, LEADER_EPOCH)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        driver
            .advance_dense(&key("users"), 7, LEADER_EPOCH)
            .await
            .unwrap(),
        0
    );
    // Handed over in descending id order: the file stores them ascending.
    let mut leases = full_leases();
    leases.reverse();
    driver.persist_leases(&leases, LEADER_EPOCH).await.unwrap();
    assert_eq!(driver.load_leases().await.unwrap(), full_leases());
    drop(driver);
    assert_eq!(
        dir_contents(tmp.path()),
        dir_contents(&fixture_dir("full")),
        "LOCK, state, dense and leases, byte for byte"
    );
}

// ---------------------------------------------------------------------------
// Debris and bad paths.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn leftover_temp_files_are_ignored_and_removed() {
    let dir = copy_fixture("full");
    let live = dir_contents(dir.path());
    // Garbage, and — worse — a well-formed record with a *higher* value:
    // neither may be read as state.
    std::fs::write(
        dir.path().join("state.tmp"),
        record::encode(PHYSICAL_MS_MAX),
    )
    .unwrap();
    std::fs::write(dir.path().join("dense.tmp"), b"\x00garbage\xff").unwrap();
    std::fs::write(dir.path().join("leases.tmp"), b"").unwrap();
    let driver = FileDriver::open_or_init(dir.path()).expect("open with debris");
    assert_eq!(driver.load_high_water().await.unwrap(), 1_764_000_555_000);
    assert_eq!(driver.load_dense_seq(&key("orders")).await.unwrap(), 42);
    assert_eq!(driver.load_leases().await.unwrap(), full_leases());
    assert_eq!(
        dir_contents(dir.path()),
        live,
        "debris gone, live files kept"
    );
}

#[tokio::test]
async fn temp_debris_in_a_fresh_directory_is_not_state() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("state.tmp"),
        record::encode(1_764_000_000_000),
    )
    .unwrap();
    let mut dense = DenseState::default();
    dense.counters.insert(key("orders"), 99);
    std::fs::write(tmp.path().join("dense.tmp"), dense_record::encode(&dense)).unwrap();
    let driver = FileDriver::open_or_init(tmp.path()).unwrap();
    assert_eq!(driver.load_high_water().await.unwrap(), 0);
    assert_eq!(driver.load_dense_seq(&key("orders")).await.unwrap(), 0);
    assert_eq!(entry_names(tmp.path()), ["LOCK"]);
}

#[test]
fn a_path_that_is_a_regular_file_is_not_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"keep me").unwrap();
    match FileDriver::open_or_init(&file) {
        Err(FileDriverError::NotADirectory { path, .. }) => assert_eq!(path, file),
        other => panic!("expected NotADirectory, got {other:?}"),
    }
    let err = FileDriver::open_or_init(&file).unwrap_err();
    assert!(err.to_string().contains(&file.display().to_string()));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    // A path *under* a regular file is refused too (the OS reports ENOTDIR
    // while inspecting it), naming the path.
    match FileDriver::open_or_init(file.join("sub")) {
        Err(FileDriverError::NotADirectory { path, .. }) => assert_eq!(path, file),
        Err(FileDriverError::Io { path, source, .. }) => {
            assert!(path.starts_with(&file), "{path:?}");
            assert_eq!(source.kind(), std::io::ErrorKind::NotADirectory);
        }
        other => panic!("expected NotADirectory, got {other:?}"),
    }
    match FileDriver::init_seeded(&file, 5) {
        Err(FileDriverError::NotADirectory { path, .. }) => assert_eq!(path, file),
        other => panic!("expected NotADirectory, got {other:?}"),
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[cfg(unix)]
#[test]
fn an_unreadable_directory_is_an_io_error_naming_the_path() {
    use std::os::unix::fs::PermissionsExt;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("locked-out");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root (or CAP_DAC_OVERRIDE) ignores permission bits: nothing to test.
    let privileged = std::fs::read_dir(&dir).is_ok();
    let result = if privileged {
        None
    } else {
        Some(FileDriver::open_or_init(&dir))
    };
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let Some(result) = result else {
        println!("skipped: running with privileges that ignore permission bits (root?)");
        return;
    };
    match result {
        Err(err @ FileDriverError::Io { .. }) => {
            let FileDriverError::Io { path, source, .. } = &err else {
                unreachable!()
            };
            assert!(path.starts_with(&dir), "{path:?} is not under {dir:?}");
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(err.to_string().contains(&dir.display().to_string()));
        }
        other => panic!("expected an Io error, got {other:?}"),
    }
    assert_eq!(entry_names(&dir), Vec::<String>::new(), "nothing created");
}

// ---------------------------------------------------------------------------
// init_seeded.
// ---------------------------------------------------------------------------

#[test]
fn seeding_refuses_a_directory_with_any_state_file() {
    for present in ["state", "dense", "leases"] {
        // The full fixture (it has a LOCK) reduced to LOCK and one file.
        let dir = copy_fixture("full");
        for other in ["state", "dense", "leases"] {
            if other != present {
                std::fs::remove_file(dir.path().join(other)).unwrap();
            }
        }
        let before = dir_contents(dir.path());
        assert_eq!(before.len(), 2);
        match FileDriver::init_seeded(dir.path(), 5) {
            Err(FileDriverError::StateExists { existing, .. }) => {
                assert_eq!(existing, dir.path().join(present));
            }
            other => panic!("{present}: expected StateExists, got {other:?}"),
        }
        assert_eq!(
            dir_contents(dir.path()),
            before,
            "{present}: nothing written"
        );
        assert_eq!(entry_names(dir.path()).len(), 2);
    }
}

#[test]
fn seeding_refuses_a_seed_above_the_maximum_before_touching_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("never-made");
    for seed in [PHYSICAL_MS_MAX + 1, u64::MAX] {
        match FileDriver::init_seeded(&dir, seed) {
            Err(FileDriverError::SeedOutOfRange { seed: got, max, .. }) => {
                assert_eq!(got, seed);
                assert_eq!(max, PHYSICAL_MS_MAX);
            }
            other => panic!("expected SeedOutOfRange, got {other:?}"),
        }
        assert!(!dir.exists(), "the directory was not even created");
    }
}

#[tokio::test]
async fn the_seed_is_read_back_after_reopen() {
    for seed in [0, 1_700_000_000_000, PHYSICAL_MS_MAX] {
        let tmp = tempfile::tempdir().unwrap();
        FileDriver::init_seeded(tmp.path(), seed).expect("seed");
        let driver = FileDriver::open_or_init(tmp.path()).expect("open seeded");
        assert_eq!(driver.load_high_water().await.unwrap(), seed);
        assert_eq!(
            driver.persist_high_water(seed, LEADER_EPOCH).await.unwrap(),
            seed
        );
    }
}

#[test]
fn seeding_is_refused_while_a_driver_holds_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = FileDriver::open_or_init(tmp.path()).unwrap();
    match FileDriver::init_seeded(tmp.path(), 1_700_000_000_000) {
        Err(FileDriverError::AlreadyLocked { path, .. }) => {
            assert_eq!(path, tmp.path().join("LOCK"));
        }
        other => panic!("expected AlreadyLocked, got {other:?}"),
    }
    assert_eq!(
        entry_names(tmp.path()),
        ["LOCK"],
        "nothing written: the holder's identity is an attribute, not a file"
    );
    drop(driver);
    FileDriver::init_seeded(tmp.path(), 1_700_000_000_000).expect("seed once released");
    assert_eq!(
        std::fs::read(tmp.path().join("state")).unwrap(),
        fixture_file("seeded", "state")
    );
}

// ---------------------------------------------------------------------------
// The trait's high-water contract.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn persisting_above_the_maximum_is_advance_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = FileDriver::open_or_init(tmp.path()).unwrap();
    driver.persist_high_water(10, LEADER_EPOCH).await.unwrap();
    let stats = driver.stats();
    for value in [PHYSICAL_MS_MAX + 1, u64::MAX] {
        match driver.persist_high_water(value, LEADER_EPOCH).await {
            Err(ConsensusError::AdvanceOutOfRange(got)) => assert_eq!(got, value),
            other => panic!("expected AdvanceOutOfRange, got {other:?}"),
        }
    }
    assert_eq!(driver.load_high_water().await.unwrap(), 10);
    assert_eq!(driver.stats().file_writes, stats.file_writes);
    // The maximum itself is accepted.
    assert_eq!(
        driver
            .persist_high_water(PHYSICAL_MS_MAX, LEADER_EPOCH)
            .await
            .unwrap(),
        PHYSICAL_MS_MAX
    );
}

#[tokio::test]
async fn persisting_at_or_below_the_durable_value_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = FileDriver::open_or_init(tmp.path()).unwrap();
    assert_eq!(
        driver
            .persist_high_water(5_000, LEADER_EPOCH)
            .await
            .unwrap(),
        5_000
    );
    let state = std::fs::read(tmp.path().join("state")).unwrap();
    let before = driver.stats();
    assert_eq!(before.file_writes, 1);
    for at_least in [5_000, 4_999, 0] {
        assert_eq!(
            driver
                .persist_high_water(at_least, LEADER_EPOCH)
                .await
                .unwrap(),
            5_000,
            "persist({at_least}) returns the durable value"
        );
    }
    let after = driver.stats();
    assert_eq!(after.file_writes, before.file_writes, "no file written");
    assert_eq!(after.fsyncs, before.fsyncs, "no fsync");
    assert_eq!(after.requests, before.requests, "committer not involved");
    assert_eq!(after.fast_path, before.fast_path + 3);
    assert_eq!(std::fs::read(tmp.path().join("state")).unwrap(), state);
    // One above is a real write.
    assert_eq!(
        driver
            .persist_high_water(5_001, LEADER_EPOCH)
            .await
            .unwrap(),
        5_001
    );
    assert_eq!(driver.stats().file_writes, before.file_writes + 1);
}

// ---------------------------------------------------------------------------
// Leadership.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn leadership_is_announced_at_once_and_the_stream_lives_as_long_as_the_driver() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = FileDriver::open_or_init(tmp.path()).unwrap();
    // Epoch 0, as the published file driver reports it (not a constant of
    // ours, so a change of LEADER_EPOCH fails here).
    let leader = LeaderState::Leader {
        epoch: tsoracle_core::Epoch(0),
    };
    assert_eq!(LEADER_EPOCH, tsoracle_core::Epoch::ZERO);
    let mut events = driver.leadership_events();
    assert_eq!(events.next().now_or_never(), Some(Some(leader.clone())));
    assert_eq!(
        events.next().now_or_never(),
        None,
        "no second item, not ended"
    );
    // Another subscriber gets the same first item.
    let mut second = driver.leadership_events();
    assert_eq!(second.next().now_or_never(), Some(Some(leader)));
    // Writes do not disturb leadership.
    driver.persist_high_water(1, LEADER_EPOCH).await.unwrap();
    assert_eq!(events.next().now_or_never(), None);
    drop(driver);
    assert_eq!(
        events.next().now_or_never(),
        Some(None),
        "ended with the driver"
    );
    assert_eq!(second.next().now_or_never(), Some(None));
}

// ---------------------------------------------------------------------------
// Dense counters.
// ---------------------------------------------------------------------------

fn numbered_key(i: usize) -> tsoracle_core::SeqKey {
    key(&format!("k{i:05}"))
}

#[tokio::test]
async fn the_dense_key_cap_of_10000_is_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = FileDriver::open_or_init(tmp.path()).unwrap();
    // 9,999 keys in chunks: one batch is one write.
    for chunk_start in (0..9_999).step_by(2_500) {
        let chunk: Vec<_> = (chunk_start..(chunk_start + 2_500).min(9_999))
            .map(|i| (numbered_key(i), 1))
            .collect();
        let starts = driver
            .advance_dense_batch(&chunk, LEADER_EPOCH)
            .await
            .unwrap();
        assert!(starts.iter().all(|&s| s == 0));
    }
    let dense_before = std::fs::read(tmp.path().join("dense")).unwrap();

    // Two new keys with one slot left: refused as a whole.
    match driver
        .advance_dense_batch(&[(key("new-a"), 1), (key("new-b"), 1)], LEADER_EPOCH)
        .await
    {
        Err(ConsensusError::SeqKeyCardinalityExceeded { cap }) => assert_eq!(cap, 10_000),
        other => panic!("expected SeqKeyCardinalityExceeded, got {other:?}"),
    }
    assert_eq!(driver.load_dense_seq(&key("new-a")).await.unwrap(), 0);
    assert_eq!(
        std::fs::read(tmp.path().join("dense")).unwrap(),
        dense_before
    );

    // Key 10,000 fits exactly.
    assert_eq!(
        driver
            .advance_dense(&numbered_key(9_999), 1, LEADER_EPOCH)
            .await
            .unwrap(),
        0
    );
    // Key 10,001 does not.
    match driver
        .advance_dense(&numbered_key(10_000), 1, LEADER_EPOCH)
        .await
    {
        Err(ConsensusError::SeqKeyCardinalityExceeded { cap }) => assert_eq!(cap, 10_000),
        other => panic!("expected SeqKeyCardinalityExceeded, got {other:?}"),
    }
    assert_eq!(
        driver.load_dense_seq(&numbered_key(10_000)).await.unwrap(),
        0
    );
    // Existing keys still advance.
    assert_eq!(
        driver
            .advance_dense(&numbered_key(0), 1, LEADER_EPOCH)
            .await
            .unwrap(),
        1
    );
    drop(driver);

    // The cap still holds after a reopen.
    let driver = FileDriver::open_or_init(tmp.path()).unwrap();
    assert_eq!(
        driver.load_dense_seq(&numbered_key(9_999)).await.unwrap(),
        1
    );
    assert!(matches!(
        driver
            .advance_dense(&key("after-reopen"), 1, LEADER_EPOCH)
            .await,
        Err(ConsensusError::SeqKeyCardinalityExceeded { cap: 10_000 })
    ));
    let stored = dense_record::decode(&std::fs::read(tmp.path().join("dense")).unwrap()).unwrap();
    assert_eq!(stored.counters.len(), 10_000);
    assert_eq!(stored.cap, 10_000);
}

/// A directory whose `dense` file holds `counters`, as the codec writes it.
fn dir_with_counters(counters: &[(&str, u64)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let state = DenseState {
        cap: 10_000,
        counters: counters
            .iter()
            .map(|(name, value)| (key(name), *value))
            .collect::<BTreeMap<_, _>>(),
        unaddressable: BTreeMap::new(),
    };
    std::fs::write(tmp.path().join("dense"), dense_record::encode(&state)).unwrap();
    tmp
}

#[tokio::test]
async fn a_counter_that_would_pass_u64_max_is_seq_overflow_and_unchanged() {
    let near = u64::MAX - 5;
    let tmp = dir_with_counters(&[("big", near)]);
    let driver = FileDriver::open_or_init(tmp.path()).unwrap();
    let dense_before = std::fs::read(tmp.path().join("dense")).unwrap();
    assert!(matches!(
        driver.advance_dense(&key("big"), 6, LEADER_EPOCH).await,
        Err(ConsensusError::SeqOverflow)
    ));
    assert!(matches!(
        driver
            .advance_dense(&key("big"), u32::MAX, LEADER_EPOCH)
            .await,
        Err(ConsensusError::SeqOverflow)
    ));
    assert_eq!(driver.load_dense_seq(&key("big")).await.unwrap(), near);
    assert_eq!(
        std::fs::read(tmp.path().join("dense")).unwrap(),
        dense_before
    );
    // Exactly reaching u64::MAX is fine; one more is not.
    assert_eq!(
        driver
            .advance_dense(&key("big"), 5, LEADER_EPOCH)
            .await
            .unwrap(),
        near
    );
    assert_eq!(driver.load_dense_seq(&key("big")).await.unwrap(), u64::MAX);
    assert!(matches!(
        driver.advance_dense(&key("big"), 1, LEADER_EPOCH).await,
        Err(ConsensusError::SeqOverflow)
    ));
    assert_eq!(driver.load_dense_seq(&key("big")).await.unwrap(), u64::MAX);
}

#[tokio::test]
async fn a_batch_with_one_overflowing_entry_changes_no_key() {
    let near = u64::MAX - 3;
    let tmp = dir_with_counters(&[("a", 10), ("big", near)]);
    let driver = FileDriver::open_or_init(tmp.path()).unwrap();
    let dense_before = std::fs::read(tmp.path().join("dense")).unwrap();
    let batch = [
        (key("a"), 5),
        (key("fresh"), 1),
        (key("big"), 2),
        (key("big"), 2), // the second block passes u64::MAX
    ];
    assert!(matches!(
        driver.advance_dense_batch(&batch, LEADER_EPOCH).await,
        Err(ConsensusError::SeqOverflow)
    ));
    assert_eq!(driver.load_dense_seq(&key("a")).await.unwrap(), 10);
    assert_eq!(driver.load_dense_seq(&key("fresh")).await.unwrap(), 0);
    assert_eq!(driver.load_dense_seq(&key("big")).await.unwrap(), near);
    assert_eq!(
        std::fs::read(tmp.path().join("dense")).unwrap(),
        dense_before
    );
    drop(driver);
    let driver = FileDriver::open_or_init(tmp.path()).unwrap();
    assert_eq!(driver.load_dense_seq(&key("a")).await.unwrap(), 10);
    assert_eq!(driver.load_dense_seq(&key("fresh")).await.unwrap(), 0);
    // Without the overflowing entry the same batch goes through.
    assert_eq!(
        driver
            .advance_dense_batch(&batch[..3], LEADER_EPOCH)
            .await
            .unwrap(),
        vec![10, 0, near]
    );
}

#[tokio::test]
async fn a_key_repeated_in_one_batch_gets_consecutive_blocks() {
    let tmp = dir_with_counters(&[("a", 10)]);
    let driver = FileDriver::open_or_init(tmp.path()).unwrap();
    let starts = driver
        .advance_dense_batch(
            &[
                (key("a"), 3),
                (key("b"), 2),
                (key("a"), 4),
                (key("b"), 0),
                (key("a"), 1),
            ],
            LEADER_EPOCH,
        )
        .await
        .unwrap();
    assert_eq!(starts, vec![10, 0, 13, 2, 17]);
    assert_eq!(driver.load_dense_seq(&key("a")).await.unwrap(), 18);
    assert_eq!(driver.load_dense_seq(&key("b")).await.unwrap(), 2);
    drop(driver);
    let stored = dense_record::decode(&std::fs::read(tmp.path().join("dense")).unwrap()).unwrap();
    assert_eq!(stored.counters.get(&key("a")), Some(&18));
    assert_eq!(stored.counters.get(&key("b")), Some(&2));
}
