//! Every failed write is logged by the driver itself, with the OS error and
//! the file: a full disk shows in the server's log, not only as "outcome
//! uncertain" in a client. Transient failures at warn level, failures that
//! poison the driver at error level.
//!
//! One test in this binary: it installs the process-wide `tracing`
//! subscriber (the committer logs from its own thread).

mod common;

use std::io::{self, ErrorKind};
use std::sync::{Arc, Mutex};

use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::vfs::sim::{OpKind, SimFs};
use tsoracle_driver_file::{LEADER_EPOCH, OpenOptions};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

#[tokio::test]
async fn failed_writes_are_logged_with_the_os_error_and_the_file() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .init();

    let fs = SimFs::new();
    let driver = OpenOptions::new()
        .vfs(fs.clone())
        .open_or_init("/srv/oracle")
        .unwrap();
    driver.persist_high_water(10, LEADER_EPOCH).await.unwrap();
    assert_eq!(captured.take(), "", "a good write logs nothing at warn");

    // Disk full while writing the temp file: transient, warned.
    fs.fail_next(OpKind::Write, Some("state.tmp"), ErrorKind::StorageFull);
    driver
        .persist_high_water(20, LEADER_EPOCH)
        .await
        .unwrap_err();
    let log = captured.take();
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("/srv/oracle/state.tmp"), "{log}");
    assert!(
        log.contains("StorageFull"),
        "the OS error is in the line: {log}"
    );
    assert!(log.contains("retryable=true"), "{log}");

    // A failed fsync poisons: an error line, naming the file and the cause.
    fs.fail_next(OpKind::FileSync, Some("state.tmp"), ErrorKind::Other);
    driver
        .persist_high_water(30, LEADER_EPOCH)
        .await
        .unwrap_err();
    let log = captured.take();
    assert!(log.contains("ERROR"), "{log}");
    assert!(
        log.contains("fsync temp file /srv/oracle/state.tmp"),
        "{log}"
    );
    assert!(log.contains("injected"), "the cause is in the line: {log}");
}
