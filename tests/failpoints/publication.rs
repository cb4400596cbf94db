//! When the committer answers a caller, memory already shows everything its
//! batch made durable: a caller that reads right after its reply never sees
//! a value older than what is on disk.
//!
//! The moment of the reply is observed exactly: each call is polled with a
//! waker that, when the committer wakes it (on the committer's own thread,
//! synchronously inside the reply), reads the driver's memory at once.
//! A failpoint callback holds the committer inside a first write while a
//! lease write, a dense advance and a high-water advance queue behind it, so
//! all three land in the same batch.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};

use fail::FailScenario;
use futures::FutureExt;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::LeaseRecord;
use tsoracle_driver_file::{FileDriver, LEADER_EPOCH};

use crate::common::key;

/// What memory held at the instant a reply woke its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    who: &'static str,
    high_water: u64,
    orders: u64,
    leases: Vec<LeaseRecord>,
}

/// A waker that reads the driver's memory when woken.
struct ReadOnWake {
    who: &'static str,
    driver: Weak<FileDriver>,
    seen: Mutex<mpsc::Sender<Seen>>,
}

impl Wake for ReadOnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // The test holds the driver until every reply arrived.
        let Some(driver) = self.driver.upgrade() else {
            return;
        };
        let seen = Seen {
            who: self.who,
            high_water: driver.high_water(),
            orders: read(driver.load_dense_seq(&key("orders"))).expect("load dense"),
            leases: read(driver.load_leases()).expect("load leases"),
        };
        let _ = self.seen.lock().expect("sender").send(seen);
    }
}

/// Runs a read to completion: reads answer from memory, never waiting.
fn read<T>(future: Pin<Box<dyn Future<Output = T> + Send + '_>>) -> T {
    future
        .now_or_never()
        .expect("reads answer from memory at once")
}

fn lease(lease_id: u64) -> LeaseRecord {
    LeaseRecord {
        lease_id,
        holder: b"svc-a".to_vec(),
        holder_epoch: 1,
        ttl_ms: 5_000,
        ts_upper_bound: 10,
        expires_at_ms: 5_010,
        superseded: false,
    }
}

/// Polls `future` once with `waker`; it must be pending (queued).
fn queue<F: Future + ?Sized>(future: Pin<&mut F>, waker: &Waker) {
    let pending = future.poll(&mut Context::from_waker(waker)).is_pending();
    assert!(pending, "answered while the committer was held");
}

#[test]
fn a_reply_is_sent_only_after_its_whole_batch_is_in_memory() {
    let _scenario = FailScenario::setup();
    let tmp = tempfile::tempdir().expect("temp dir");
    let driver = FileDriver::open_or_init(tmp.path()).expect("open");
    let orders = key("orders");
    let new_leases = vec![lease(7)];

    // Hold the committer inside the first write it makes.
    let (reached, committer_held) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let gate = Mutex::new(Some((reached, released)));
    fail::cfg_callback("file_driver::before_temp_write", move || {
        let taken = gate.lock().expect("gate").take();
        if let Some((reached, released)) = taken {
            let _ = reached.send(());
            // Returns when the test releases it, or drops `release`.
            let _ = released.recv();
        }
    })
    .expect("configure callback");

    let noop = Waker::noop();
    let mut first = driver.persist_high_water(10, LEADER_EPOCH);
    queue(first.as_mut(), noop);
    committer_held
        .recv()
        .expect("committer reached the first write");

    // Queued behind it, in this order; served together in the next batch.
    let (seen_tx, seen_rx) = mpsc::channel();
    let waker = |who| {
        Waker::from(Arc::new(ReadOnWake {
            who,
            driver: Arc::downgrade(&driver),
            seen: Mutex::new(seen_tx.clone()),
        }))
    };
    let leases_waker = waker("persist_leases");
    let dense_waker = waker("advance_dense");
    let high_waker = waker("persist_high_water");
    let mut leases = driver.persist_leases(&new_leases, LEADER_EPOCH);
    queue(leases.as_mut(), &leases_waker);
    let mut dense = driver.advance_dense(&orders, 5, LEADER_EPOCH);
    queue(dense.as_mut(), &dense_waker);
    let mut high = driver.persist_high_water(20, LEADER_EPOCH);
    queue(high.as_mut(), &high_waker);

    release.send(()).expect("committer waits for release");
    let mut seen: Vec<Seen> = (0..3)
        .map(|_| seen_rx.recv().expect("each reply wakes its caller"))
        .collect();
    seen.sort_by_key(|s| s.who);

    // Every reply of the batch: memory already holds all of it.
    for s in &seen {
        assert_eq!(
            (s.high_water, s.orders, &s.leases),
            (20, 5, &new_leases),
            "memory when {} was answered: {s:?}",
            s.who
        );
    }

    // And the calls completed with the right answers.
    let mut cx = Context::from_waker(noop);
    assert!(matches!(first.as_mut().poll(&mut cx), Poll::Ready(Ok(v)) if v >= 10));
    assert!(matches!(leases.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
    assert!(matches!(dense.as_mut().poll(&mut cx), Poll::Ready(Ok(0))));
    assert!(matches!(high.as_mut().poll(&mut cx), Poll::Ready(Ok(20))));
}
