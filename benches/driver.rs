//! The driver's cost against the fsync floor of the disk it runs on.
//!
//! `cargo bench --bench driver` (add `-- --quick`, or set
//! `TSORACLE_BENCH_QUICK=1`, for a short run). State directories are made
//! under `target/bench-tmp` (override with `TSORACLE_BENCH_DIR`), so the
//! floor and the driver are measured on the same filesystem. Prints one
//! Markdown table; README's "Performance" section is a copy of one run.
//!
//! `cargo bench --bench driver --features metrics -- --metrics-cost`
//! measures only what the `metrics` feature costs: sequential and 64-task
//! `persist_high_water` on a driver recording into a real Prometheus
//! recorder against one whose handles record nothing, interleaved round by
//! round so both see the same disk. Without the feature both drivers are
//! the same code (the recording is compiled out): run it that way too for
//! the noise floor. `TSORACLE_BENCH_RUNS` sets the number of 64-task runs.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::{LeaseRecord, SeqKey};
use tsoracle_driver_file::dense_record::{self, DenseState};
use tsoracle_driver_file::{FileDriver, LEADER_EPOCH, lease_record, record};

struct Config {
    quick: bool,
    base: PathBuf,
}

impl Config {
    fn samples(&self) -> usize {
        if self.quick { 100 } else { 1000 }
    }

    fn calls_per_run(&self) -> usize {
        if self.quick { 400 } else { 3000 }
    }

    fn fresh_dir(&self, name: &str) -> PathBuf {
        let dir = self.base.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create bench dir");
        dir
    }
}

/// Latency distribution of one measured operation.
struct Latencies(Vec<Duration>);

impl Latencies {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[rank]
    }
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// The bare protocol written by hand: create temp, write 17 bytes, fsync,
/// rename, fsync the directory. Nothing can be faster and still durable.
fn floor_once(dir: &Path, value: u64) -> Duration {
    let start = Instant::now();
    let temp = dir.join("state.tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .expect("open temp");
    file.write_all(&record::encode(value)).expect("write temp");
    file.sync_all().expect("fsync temp");
    drop(file);
    std::fs::rename(&temp, dir.join("state")).expect("rename");
    File::open(dir)
        .expect("open dir")
        .sync_all()
        .expect("fsync dir");
    start.elapsed()
}

/// Floor and sequential persist, interleaved in rounds so that both see the
/// same disk weather.
fn sequential(cfg: &Config, rt: &tokio::runtime::Runtime) -> (Latencies, Latencies) {
    let floor_dir = cfg.fresh_dir("floor");
    let driver_dir = cfg.fresh_dir("sequential");
    let driver = FileDriver::open_or_init(&driver_dir).expect("open");
    let rounds = 10;
    let per_round = cfg.samples() / rounds;
    let mut floor = Vec::new();
    let mut persist = Vec::new();
    let mut value = 1_000_000u64;
    for _ in 0..rounds {
        for _ in 0..per_round {
            value += 1;
            floor.push(floor_once(&floor_dir, value));
        }
        for _ in 0..per_round {
            value += 1;
            let start = Instant::now();
            rt.block_on(driver.persist_high_water(value, LEADER_EPOCH))
                .expect("persist");
            persist.push(start.elapsed());
        }
    }
    (Latencies(floor), Latencies(persist))
}

struct Throughput {
    calls_per_sec: f64,
    fsyncs_per_call: f64,
}

/// `tasks` concurrent callers sharing `calls` calls of `op` on one driver.
fn concurrent<F, Fut>(
    rt: &tokio::runtime::Runtime,
    driver: &Arc<FileDriver>,
    tasks: usize,
    calls: usize,
    op: F,
) -> Throughput
where
    F: Fn(Arc<FileDriver>, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let before = driver.stats();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    rt.block_on(async {
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (driver, next, op) = (Arc::clone(driver), Arc::clone(&next), op.clone());
            handles.push(tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= calls as u64 {
                        break;
                    }
                    op(Arc::clone(&driver), n).await;
                }
            }));
        }
        for handle in handles {
            handle.await.expect("task");
        }
    });
    let elapsed = start.elapsed();
    let after = driver.stats();
    Throughput {
        calls_per_sec: calls as f64 / elapsed.as_secs_f64(),
        fsyncs_per_call: (after.fsyncs - before.fsyncs) as f64 / calls as f64,
    }
}

fn persist_throughput(cfg: &Config, rt: &tokio::runtime::Runtime, tasks: usize) -> Throughput {
    let driver =
        FileDriver::open_or_init(cfg.fresh_dir(&format!("persist-{tasks}"))).expect("open");
    let calls = if tasks == 1 {
        cfg.calls_per_run() / 4
    } else {
        cfg.calls_per_run()
    };
    persist_increasing(rt, &driver, tasks, calls, 1_000_000)
}

/// `calls` `persist_high_water` calls from `tasks` tasks, each asking for a
/// value above all earlier ones (from `start` up), as a server extending its
/// window does; a call overtaken by a larger one is answered from memory.
fn persist_increasing(
    rt: &tokio::runtime::Runtime,
    driver: &Arc<FileDriver>,
    tasks: usize,
    calls: usize,
    start: u64,
) -> Throughput {
    let clock = Arc::new(AtomicU64::new(start));
    concurrent(rt, driver, tasks, calls, move |driver, _| {
        let clock = Arc::clone(&clock);
        async move {
            let value = clock.fetch_add(1, Ordering::Relaxed);
            driver
                .persist_high_water(value, LEADER_EPOCH)
                .await
                .expect("persist");
        }
    })
}

fn dense_throughput(
    cfg: &Config,
    rt: &tokio::runtime::Runtime,
    tasks: usize,
    keys: usize,
) -> Throughput {
    let dir = cfg.fresh_dir(&format!("dense-{keys}-{tasks}"));
    let keys: Arc<Vec<SeqKey>> = Arc::new(
        (0..keys)
            .map(|i| SeqKey::try_new(format!("key-{i:05}")).expect("key"))
            .collect(),
    );
    // Start from a directory that already holds every key.
    let mut state = DenseState::default();
    for key in keys.iter() {
        state.counters.insert(key.clone(), 0);
    }
    std::fs::write(dir.join("dense"), dense_record::encode(&state)).expect("seed dense");
    let driver = FileDriver::open_or_init(&dir).expect("open");
    let calls = if tasks == 1 {
        cfg.calls_per_run() / 4
    } else {
        cfg.calls_per_run()
    };
    concurrent(rt, &driver, tasks, calls, move |driver, n| {
        let keys = Arc::clone(&keys);
        async move {
            let key = &keys[(n as usize * 7919) % keys.len()];
            driver
                .advance_dense(key, 1, LEADER_EPOCH)
                .await
                .expect("advance");
        }
    })
}

fn open_time(cfg: &Config) -> Duration {
    let dir = cfg.fresh_dir("open");
    let mut dense = DenseState::default();
    for i in 0..10_000 {
        dense.counters.insert(
            SeqKey::try_new(format!("tenant-{i:05}/orders")).expect("key"),
            i,
        );
    }
    let leases: Vec<LeaseRecord> = (0..1_000)
        .map(|i| LeaseRecord {
            lease_id: 1_764_000_000_000 + i,
            holder: format!("service-{i:04}").into_bytes(),
            holder_epoch: i,
            ttl_ms: 10_000,
            ts_upper_bound: 1_764_000_000_000 + i,
            expires_at_ms: 1_764_000_010_000 + i,
            superseded: i % 3 == 0,
        })
        .collect();
    std::fs::write(dir.join("state"), record::encode(1_764_000_999_999)).expect("state");
    std::fs::write(dir.join("dense"), dense_record::encode(&dense)).expect("dense");
    std::fs::write(
        dir.join("leases"),
        lease_record::encode(&leases).expect("encode"),
    )
    .expect("leases");
    let runs = if cfg.quick { 5 } else { 21 };
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let driver = FileDriver::open_or_init(&dir).expect("open");
            let elapsed = start.elapsed();
            drop(driver);
            elapsed
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

/// Opens `dir` with the driver's metric handles registered in `recorder`
/// (with the `metrics` feature), or registered nowhere.
fn open_measured(dir: &Path, recorded: bool, recorder: &Recorder) -> Arc<FileDriver> {
    #[cfg(feature = "metrics")]
    if recorded {
        return metrics::with_local_recorder(recorder, || FileDriver::open_or_init(dir))
            .expect("open");
    }
    let _ = (recorded, recorder);
    FileDriver::open_or_init(dir).expect("open")
}

#[cfg(feature = "metrics")]
type Recorder = metrics_exporter_prometheus::PrometheusRecorder;
#[cfg(not(feature = "metrics"))]
type Recorder = ();

/// `--metrics-cost`: the same work on a recording and a non-recording
/// driver. Sequential calls alternate between the two one call at a time;
/// 64-task runs alternate run by run (which one goes first alternates too),
/// and the result is the median of the per-pair ratios, so a change in
/// disk weather hits both sides alike.
fn metrics_cost(cfg: &Config, rt: &tokio::runtime::Runtime) {
    #[cfg(feature = "metrics")]
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    #[cfg(not(feature = "metrics"))]
    let recorder = ();
    let drivers = [
        open_measured(&cfg.fresh_dir("metrics-cost-recorded"), true, &recorder),
        open_measured(&cfg.fresh_dir("metrics-cost-plain"), false, &recorder),
    ];
    let mut value = 1_000_000u64;

    let mut sequential = [Vec::new(), Vec::new()];
    for i in 0..cfg.samples() * 4 {
        value += 1;
        // Alternate which side goes first in each pair of calls.
        for turn in 0..2 {
            let side = (i + turn) % 2;
            let start = Instant::now();
            rt.block_on(drivers[side].persist_high_water(value, LEADER_EPOCH))
                .expect("persist");
            sequential[side].push(start.elapsed());
        }
    }

    // TSORACLE_BENCH_RUNS overrides the number of 64-task runs per side.
    let runs = std::env::var("TSORACLE_BENCH_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(if cfg.quick { 6 } else { 30 });
    let calls = cfg.calls_per_run();
    let mut ratios = Vec::new();
    let mut rates = [Vec::new(), Vec::new()];
    for run in 0..runs {
        let mut pair = [0.0; 2];
        for turn in 0..2 {
            let side = (run + turn) % 2;
            let t = persist_increasing(rt, &drivers[side], 64, calls, value + 1);
            value += calls as u64 + 1;
            pair[side] = t.calls_per_sec;
            rates[side].push(t.calls_per_sec);
        }
        ratios.push(pair[0] / pair[1]);
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let [on, off] = sequential.map(Latencies);
    let [rate_on, rate_off] = rates.map(median);
    let feature = if cfg!(feature = "metrics") {
        "feature on"
    } else {
        "feature off: both sides are the same code"
    };
    println!("| metrics cost ({feature}) | recorded | not recorded | recorded / not |");
    println!("|---|---|---|---|");
    for p in [0.5, 0.99] {
        println!(
            "| sequential persist_high_water p{:.0} ({} calls each) | {} | {} | {:.3}× |",
            p * 100.0,
            on.0.len(),
            micros(on.percentile(p)),
            micros(off.percentile(p)),
            on.percentile(p).as_secs_f64() / off.percentile(p).as_secs_f64(),
        );
    }
    println!(
        "| persist_high_water, 64 tasks (median of {runs} runs; ratio: median of pairs) | {rate_on:.0} calls/s | {rate_off:.0} calls/s | {:.3}× |",
        median(ratios)
    );
    #[cfg(feature = "metrics")]
    {
        // Proof that the recording side recorded: its exposition.
        let text = recorder.handle().render();
        let samples = text
            .lines()
            .find_map(|line| line.strip_prefix("tsoracle_file_driver_fsync_seconds_count "))
            .unwrap_or("none");
        println!();
        println!("recorded fsync samples: {samples}");
    }
    drop(drivers);
    let _ = std::fs::remove_dir_all(&cfg.base);
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick")
        || std::env::var_os("TSORACLE_BENCH_QUICK").is_some();
    let base = std::env::var_os("TSORACLE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp"));
    let cfg = Config { quick, base };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    if std::env::args().any(|arg| arg == "--metrics-cost") {
        println!(
            "# tsoracle-driver-file metrics cost ({})",
            if cfg.quick { "quick" } else { "full" }
        );
        println!("directory: {}", cfg.base.display());
        println!();
        metrics_cost(&cfg, &rt);
        return;
    }
    println!(
        "# tsoracle-driver-file benchmarks ({})",
        if quick { "quick" } else { "full" }
    );
    println!("directory: {}", cfg.base.display());
    println!();
    println!("| measurement | result | ratio / target |");
    println!("|---|---|---|");

    let (floor, persist) = sequential(&cfg, &rt);
    let (f50, f99) = (floor.percentile(0.5), floor.percentile(0.99));
    let (p50, p99) = (persist.percentile(0.5), persist.percentile(0.99));
    println!(
        "| floor (hand-written protocol) p50 / p99 | {} / {} | 1.00× |",
        micros(f50),
        micros(f99)
    );
    println!(
        "| sequential persist_high_water p50 / p99 | {} / {} | {:.2}× / {:.2}× (target ≤ 1.10×) |",
        micros(p50),
        micros(p99),
        p50.as_secs_f64() / f50.as_secs_f64(),
        p99.as_secs_f64() / f99.as_secs_f64(),
    );

    let mut base_rate = 0.0;
    for tasks in [1, 16, 64] {
        let t = persist_throughput(&cfg, &rt, tasks);
        if tasks == 1 {
            base_rate = t.calls_per_sec;
        }
        println!(
            "| persist_high_water, {tasks} tasks | {:.0} calls/s, {:.3} fsyncs/call | {:.1}× 1-task{} |",
            t.calls_per_sec,
            t.fsyncs_per_call,
            t.calls_per_sec / base_rate,
            if tasks == 64 {
                " (target ≥ 10×)"
            } else {
                ""
            },
        );
    }
    for keys in [8, 10_000] {
        let mut base_rate = 0.0;
        for tasks in [1, 16, 64] {
            let t = dense_throughput(&cfg, &rt, tasks, keys);
            if tasks == 1 {
                base_rate = t.calls_per_sec;
            }
            println!(
                "| advance_dense, {keys} keys, {tasks} tasks | {:.0} calls/s, {:.3} fsyncs/call | {:.1}× 1-task{} |",
                t.calls_per_sec,
                t.fsyncs_per_call,
                t.calls_per_sec / base_rate,
                if tasks == 64 && keys == 8 {
                    " (target ≥ 20×)"
                } else {
                    ""
                },
            );
        }
    }

    let open = open_time(&cfg);
    println!(
        "| open_or_init, 10,000 dense keys + 1,000 leases (median) | {:.1} ms | target < 50 ms |",
        open.as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&cfg.base);
}
