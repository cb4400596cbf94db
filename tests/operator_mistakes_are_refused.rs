//! Mistakes a new operator makes, each refused at the door with a message
//! that says what is wrong, instead of being accepted and failing later
//! (or silently):
//!
//! - seeding a high-water from which no server can make progress (the
//!   46-bit maximum was accepted, and then no server could start);
//! - seeding a packed timestamp where physical milliseconds are meant;
//! - seeding a high-water more than a day ahead of the clock (one digit
//!   too many) without `--force`;
//! - exporting a directory that holds no state (a mistyped path exported
//!   `"high_water": 0`, exactly what a migration would seed from);
//! - `verify` saying "ok" on directories `serve` refuses (empty, 0777, a
//!   `LOCK` symlink, `RETIRED`, `SEEDING`), though its help recommends it
//!   for readiness probes;
//! - a window ahead beyond an hour on the embedded-server example;
//! - the client example on a closed stdout (`client | head`) panicked.
//!
//! `serve`'s own refusals (a missing directory without `--init`, windows
//! beyond an hour, no headroom) are in `tests/serve.rs`.
//!
//! The example tests run `target/<profile>/examples/*`, which `cargo test`
//! builds; with `cargo test --test operator_mistakes_are_refused` alone,
//! build them first (`cargo build --examples`).

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tsoracle_consensus::ConsensusDriver;
use tsoracle_driver_file::{FileDriver, LEADER_EPOCH};

use common::cli;

/// The bound on any single wait; reached only when something is broken.
const BOUND: Duration = Duration::from_secs(60);

const PHYSICAL_MS_MAX: u64 = (1 << 46) - 1;

/// The largest seed a server with the default window ahead (3 s) and
/// failover advance (1 s) can make progress from.
const LAST_USABLE: u64 = PHYSICAL_MS_MAX - 1 - 1000 - 3000;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// One digit too many seeded the year 2528 and exited 0, and every
/// timestamp from then on came from there: an `H` more than a day ahead
/// of the clock needs `--force`, and the refusal shows its date.
#[test]
fn seed_refuses_a_high_water_far_ahead_of_the_clock_without_force() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    // 1764000555000 (2025-11-24) with one more digit.
    let output = cli::output([
        OsStr::new("seed"),
        dir.as_os_str(),
        OsStr::new("17640005550000"),
    ]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("refusing to seed 17640005550000 (2528-12-27T17:32:30.000Z)"),
        "{text}"
    );
    assert!(
        text.contains("more than a day ahead of the clock (now "),
        "{text}"
    );
    assert!(text.contains("--force"), "{text}");
    assert!(!dir.exists(), "a refused seed created nothing");

    // An hour ahead, as a migration from a server with a long window or
    // lease may be, needs no --force.
    let now = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits");
    let hour_ahead = (now + 3_600_000).to_string();
    let output = cli::output([OsStr::new("seed"), dir.as_os_str(), OsStr::new(&hour_ahead)]);
    assert!(output.status.success(), "{}", stderr(&output));
    std::fs::remove_dir_all(&dir).expect("clean up");

    // --force seeds it, as asked.
    let output = cli::output([
        OsStr::new("seed"),
        dir.as_os_str(),
        OsStr::new("17640005550000"),
        OsStr::new("--force"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let driver = FileDriver::open_or_init(&dir).expect("open the seeded directory");
    assert_eq!(driver.high_water(), 17_640_005_550_000);
}

#[test]
fn seed_refuses_a_high_water_from_which_no_server_can_make_progress() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    for value in [PHYSICAL_MS_MAX, PHYSICAL_MS_MAX - 1, LAST_USABLE + 1] {
        let output = cli::output([
            OsStr::new("seed"),
            dir.as_os_str(),
            OsStr::new(&value.to_string()),
        ]);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{value}: {text}");
        assert!(text.contains("no server could make progress"), "{text}");
        assert!(
            text.contains(&format!(
                "the largest usable high-water with these settings is {LAST_USABLE}"
            )),
            "{text}"
        );
        assert!(!dir.exists(), "a refused seed created nothing");
    }

    // The bound follows the window the server will run with.
    let output = cli::output([
        OsStr::new("seed"),
        dir.as_os_str(),
        OsStr::new(&LAST_USABLE.to_string()),
        OsStr::new("--window-ahead"),
        OsStr::new("1m"),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(!dir.exists());

    // The last usable seed is accepted (with --force: it is in the year
    // 4199), and a server's first advances from it (a failover advance,
    // then a window) are within range.
    let output = cli::output([
        OsStr::new("seed"),
        dir.as_os_str(),
        OsStr::new(&LAST_USABLE.to_string()),
        OsStr::new("--force"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let driver = FileDriver::open_or_init(&dir).expect("open the seeded directory");
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(async {
            let fenced = LAST_USABLE + 1 + 1000;
            assert_eq!(
                driver.persist_high_water(fenced, LEADER_EPOCH).await.ok(),
                Some(fenced)
            );
            assert_eq!(
                driver
                    .persist_high_water(fenced + 3000, LEADER_EPOCH)
                    .await
                    .ok(),
                Some(PHYSICAL_MS_MAX)
            );
        });
}

#[test]
fn seed_says_h_is_physical_milliseconds_not_a_packed_timestamp() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    // A timestamp of 2025-11-24T16:00:00Z as the server packs it: the
    // physical milliseconds shifted left by 18 logical bits.
    let physical = 1_764_000_000_000u64;
    let packed = physical << 18;
    let output = cli::output([
        OsStr::new("seed"),
        dir.as_os_str(),
        OsStr::new(&packed.to_string()),
    ]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("H is physical milliseconds, not a packed timestamp"),
        "{text}"
    );
    assert!(
        text.contains(&format!("physical part {physical}")),
        "{text}"
    );
    assert!(text.contains("2025-11-24T16:00:00.000Z"), "{text}");
    assert!(!dir.exists());
}

#[test]
fn export_of_a_directory_without_state_is_refused_unless_asked_for() {
    // An empty directory, and one a driver opened without ever writing
    // (only its LOCK file): a mistyped path or an unmounted volume.
    let empty = tempfile::tempdir().expect("temp dir");
    let opened = tempfile::tempdir().expect("temp dir");
    drop(FileDriver::open_or_init(opened.path()).expect("open"));
    for dir in [empty.path(), opened.path()] {
        let before = common::dir_contents(dir);
        let output = cli::output([OsStr::new("export"), dir.as_os_str()]);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(output.stdout.is_empty(), "no JSON to seed a migration from");
        assert!(text.contains("holds no oracle state"), "{text}");
        assert!(text.contains("--allow-empty"), "{text}");
        assert!(text.contains(&dir.display().to_string()), "{text}");

        let output = cli::output([
            OsStr::new("export"),
            OsStr::new("--allow-empty"),
            dir.as_os_str(),
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        assert_eq!(doc["high_water"], 0);
        assert_eq!(common::dir_contents(dir), before, "export wrote nothing");
    }
}

/// Kills and reaps the child when dropped, so a failed test leaves
/// nothing running.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `child` to exit within the bound.
fn exit_within_bound(child: Child) -> Output {
    let (done, exited) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    exited
        .recv_timeout(BOUND)
        .unwrap_or_else(|_| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("the process kept running instead of exiting")
        })
        .expect("wait for the process")
}

#[test]
fn the_example_server_refuses_a_window_beyond_an_hour() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    for window_ms in ["100000000000000", "18446744073709551615", "3600001"] {
        let child = Command::new(common::example_binary("embedded-server"))
            .args(["--listen", "127.0.0.1:0", "--window-ms", window_ms])
            .arg("--state-dir")
            .arg(&dir)
            .env_remove("TSORACLE_WINDOW_MS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the example server");
        let output = exit_within_bound(child);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{window_ms}: {text}");
        assert!(text.contains("--window-ms"), "{text}");
        assert!(!dir.exists(), "a refused start created nothing");
    }
}

#[test]
fn the_client_example_exits_quietly_when_stdout_is_closed() {
    let parent = tempfile::tempdir().expect("temp dir");
    let mut server = Command::new(common::example_binary("embedded-server"))
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(parent.path().join("oracle"))
        .env_remove("TSORACLE_LISTEN")
        .env_remove("TSORACLE_STATE_DIR")
        .env_remove("TSORACLE_WINDOW_MS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example server");
    let stderr_pipe = server.stderr.take().expect("piped stderr");
    let server = Reaped(server);
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let addr = loop {
        let line = received
            .recv_timeout(BOUND)
            .expect("the example server says `listening on`");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };

    // `client | head -0`: the reading end is closed before the client
    // writes its first line, so every write fails with EPIPE.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let client = Command::new(common::example_binary("client"))
        .args(["--endpoint", &format!("http://{addr}")])
        .env_remove("TSORACLE_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client example");
    let output = exit_within_bound(client);
    let text = stderr(&output);
    assert!(!text.contains("panicked"), "the client panicked: {text}");
    assert_eq!(text, "", "a reader that went away needs no message");
    assert_eq!(output.status.code(), Some(1), "{text}");
    drop(server);
}

/// `verify` said "ok", exit 0, on directories `serve` refuses, though its
/// help recommends it for readiness probes: it now fails on each, with a
/// reason, and changes nothing. With `server`, `serve` is run on each to
/// show it refuses them too.
#[test]
fn verify_fails_on_directories_serve_refuses() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().expect("temp dir");
    let made = |name: &str| {
        let dir = parent.path().join(name);
        let output = cli::output([OsStr::new("init"), dir.as_os_str()]);
        assert!(output.status.success(), "{}", stderr(&output));
        dir
    };
    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let open = made("open");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let linked = made("linked");
    std::fs::remove_file(linked.join("LOCK")).expect("rm LOCK");
    std::os::unix::fs::symlink(parent.path().join("elsewhere"), linked.join("LOCK"))
        .expect("symlink LOCK");
    let retired = made("retired");
    std::fs::write(
        retired.join("RETIRED"),
        "migrated to cluster at 2026-12-01\n",
    )
    .expect("RETIRED");
    let seeding = made("seeding");
    std::fs::write(seeding.join("SEEDING"), "").expect("SEEDING");

    for (dir, why) in [
        (&empty, "holds no oracle state"),
        (&open, "may be written by its group or others (mode 0777)"),
        (&linked, "LOCK is a symbolic link"),
        (&retired, "is retired (marker"),
        (&seeding, "was not completely seeded"),
    ] {
        let before = common::dir_contents(dir);
        let output = cli::output([OsStr::new("verify"), dir.as_os_str()]);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{}: {text}", dir.display());
        assert!(text.contains(why), "{}: {text}", dir.display());
        assert_eq!(String::from_utf8_lossy(&output.stdout), "");
        let output = cli::output([OsStr::new("verify"), OsStr::new("--json"), dir.as_os_str()]);
        assert_eq!(output.status.code(), Some(1));
        let verdict: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("the JSON verdict");
        assert_eq!(verdict["ok"], false);
        assert!(
            verdict["error"]
                .as_str()
                .is_some_and(|error| error.contains(why)),
            "{verdict}"
        );
        assert_eq!(common::dir_contents(dir), before, "verify changed nothing");

        #[cfg(feature = "server")]
        {
            let child = Command::new(cli::BIN)
                .arg("serve")
                .arg("--state-dir")
                .arg(dir)
                .args(["--listen", "127.0.0.1:0", "--no-metrics"])
                .env_remove("NOTIFY_SOCKET")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start serve");
            let output = exit_within_bound(child);
            assert_eq!(
                output.status.code(),
                Some(1),
                "serve refuses {} too: {}",
                dir.display(),
                stderr(&output)
            );
        }
    }

    // A directory that serves verifies.
    let good = made("good");
    let output = cli::output([OsStr::new("verify"), good.as_os_str()]);
    assert!(output.status.success(), "{}", stderr(&output));
}
