//! The `ConsensusDriver` contract (`common::contract`) on a temporary
//! directory and on the simulated filesystem; `real_filesystems.rs` runs it
//! on ext4, xfs and btrfs images.

mod common;

use tsoracle_driver_file::vfs::SimFs;
use tsoracle_driver_file::{FileDriver, OpenOptions};

#[tokio::test]
async fn the_contract_holds_on_a_temporary_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("oracle");
    common::contract::run(|| FileDriver::open_or_init(&dir).expect("open")).await;
}

#[tokio::test]
async fn the_contract_holds_on_the_simulated_filesystem() {
    let fs = SimFs::new();
    common::contract::run(|| {
        OpenOptions::new()
            .vfs(fs.clone())
            .open_or_init("/data/oracle")
            .expect("open")
    })
    .await;
}
