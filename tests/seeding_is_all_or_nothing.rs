//! `FileDriver::init_from` seeds high-water, counters and leases together:
//! whatever a power cut at any operation leaves, a driver opening the disk
//! either refuses it, finds no state at all, or finds the complete seed.
//! Never a high-water without its counters, or counters without their
//! high-water (either would let the seeded oracle hand a value out twice).

mod common;
use common::key;
use common::seed::{HIGH_WATER, seed};

use std::path::Path;

use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::LeaseRecord;
use tsoracle_driver_file::record::Mark;
use tsoracle_driver_file::vfs::sim::{OpKind, SimFs};
use tsoracle_driver_file::{FileDriver, FileDriverError, LEADER_EPOCH, OpenOptions, Seed};

const DIR: &str = "/data/oracle";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// What a driver opening the disk sees: `None` when it refuses the disk as
/// half-seeded, else (high-water, orders, users, lease count).
fn observe(fs: &SimFs) -> Option<(u64, u64, u64, usize)> {
    match OpenOptions::new().vfs(fs.clone()).open_or_init(DIR) {
        Err(FileDriverError::SeedingInterrupted { marker, .. }) => {
            // Refused by the `state` record's mark, which upstream's driver
            // refuses too (it reads only version 1), not by a note file
            // only this crate honours.
            assert_eq!(marker, Path::new(DIR).join("state"));
            let found = OpenOptions::new()
                .vfs(fs.clone())
                .read_state_dir(DIR)
                .expect("readable");
            assert_eq!(found.mark, Some(Mark::Seeding));
            assert_eq!(found.high_water, Some(HIGH_WATER));
            None
        }
        Err(other) => panic!("unexpected refusal: {other}"),
        Ok(driver) => {
            let rt = runtime();
            Some(rt.block_on(async {
                (
                    driver.load_high_water().await.expect("high-water"),
                    driver.load_dense_seq(&key("orders")).await.expect("orders"),
                    driver.load_dense_seq(&key("users")).await.expect("users"),
                    driver.load_leases().await.expect("leases").len(),
                )
            }))
        }
    }
}

#[test]
fn a_power_cut_at_any_operation_never_leaves_a_partial_seed() {
    // A clean run first: how many operations seeding takes.
    let clean = SimFs::new();
    OpenOptions::new()
        .vfs(clean.clone())
        .init_from(DIR, &seed())
        .expect("clean seed");
    let total = clean.op_count();
    assert!(total > 10, "seeding took only {total} operations");
    assert_eq!(observe(&clean), Some((HIGH_WATER, 42_000, 7, 1)));

    let (mut refused, mut empty, mut complete, mut images_seen) = (0, 0, 0, 0);
    for crash_at in 0..total {
        let fs = SimFs::new();
        fs.crash_at(crash_at);
        let result = OpenOptions::new().vfs(fs.clone()).init_from(DIR, &seed());
        // The last step records the new oracle's identity, whose failure
        // never fails the seed: everything else is durable by then.
        let recording_identity = fs.op_log()[crash_at as usize].kind == OpKind::SetXattr;
        assert!(
            result.is_err() || recording_identity,
            "seeding cannot succeed when power fails at op {crash_at}"
        );
        for image in fs.crash_images() {
            images_seen += 1;
            let disk = SimFs::from_image(&image).expect("a crash image boots");
            match observe(&disk) {
                None => refused += 1,
                Some((0, 0, 0, 0)) if result.is_err() => empty += 1,
                Some(found) => {
                    assert_eq!(
                        found,
                        (HIGH_WATER, 42_000, 7, 1),
                        "crash at op {crash_at} ({}) served a partial seed",
                        image.label
                    );
                    complete += 1;
                }
            }
        }
    }
    eprintln!(
        "{total} crash points, {images_seen} disks: {refused} refused as half-seeded, \
         {empty} empty, {complete} complete"
    );
    assert!(
        refused > 0 && empty > 0,
        "the crash points must reach both sides of the marker"
    );
}

#[test]
fn seeding_refuses_existing_state_and_markers() {
    let dir = tempfile::tempdir().expect("tempdir");
    FileDriver::init_seeded(dir.path(), 5).expect("seed");
    match FileDriver::init_from(dir.path(), &seed()) {
        Err(FileDriverError::StateExists { existing, .. }) => {
            assert_eq!(existing, dir.path().join("state"))
        }
        other => panic!("seeded over existing state: {other:?}"),
    }

    let marked = tempfile::tempdir().expect("tempdir");
    std::fs::write(marked.path().join("RETIRED"), "migrated\n").expect("marker");
    match FileDriver::init_from(marked.path(), &seed()) {
        Err(FileDriverError::StateExists { existing, .. }) => {
            assert_eq!(existing, marked.path().join("RETIRED"))
        }
        other => panic!("seeded over a retired directory: {other:?}"),
    }
}

#[test]
fn bad_seeds_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("new");
    let too_high = Seed::new(tsoracle_core::PHYSICAL_MS_MAX + 1);
    assert!(matches!(
        FileDriver::init_from(&target, &too_high),
        Err(FileDriverError::SeedOutOfRange { .. })
    ));
    let lease = LeaseRecord {
        lease_id: 1,
        holder: b"a".to_vec(),
        holder_epoch: 1,
        ttl_ms: 1,
        ts_upper_bound: 1,
        expires_at_ms: 1,
        superseded: false,
    };
    let duplicate = Seed::new(1).with_leases(vec![lease.clone(), lease]);
    assert!(matches!(
        FileDriver::init_from(&target, &duplicate),
        Err(FileDriverError::InvalidLeases { .. })
    ));
    assert!(!target.exists(), "a refused seed created the directory");
}

#[test]
fn a_seeded_directory_continues_every_counter_above_its_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    FileDriver::init_from(dir.path(), &seed()).expect("seed");
    assert!(!dir.path().join("SEEDING").exists());
    let driver = FileDriver::open_or_init(dir.path()).expect("open");
    let rt = runtime();
    rt.block_on(async {
        assert_eq!(
            driver
                .advance_dense(&key("orders"), 10, LEADER_EPOCH)
                .await
                .expect("advance"),
            42_000
        );
        assert_eq!(
            driver
                .persist_high_water(HIGH_WATER - 1, LEADER_EPOCH)
                .await
                .expect("persist"),
            HIGH_WATER
        );
    });
}
