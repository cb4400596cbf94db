//! Runs the `tsoracle-file` binary against copies of the reference
//! directories and corrupted copies: exit codes, the lines an operator reads,
//! JSON that agrees with what the driver loads, and read-only subcommands
//! that change nothing, even while a driver holds the lock.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tsoracle_consensus::ConsensusDriver;
use tsoracle_core::LeaseRecord;
use tsoracle_driver_file::{FileDriver, lease_record};

use common::cli::{block_on, run, tsoracle_file};
use common::{copy_fixture, dir_contents, key};

const FULL_HIGH_WATER: u64 = 1_764_000_555_000;
const PHYSICAL_MS_MAX: u64 = (1 << 46) - 1;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
}

/// What a driver opening `dir` loads: high-water, each named counter,
/// the lease set.
fn driver_view(dir: &Path, keys: &[&str]) -> (u64, Vec<u64>, Vec<LeaseRecord>) {
    let driver = FileDriver::open_or_init(dir).expect("open copy");
    block_on(async {
        let high_water = driver.load_high_water().await.expect("load_high_water");
        let mut counters = Vec::new();
        for name in keys {
            counters.push(
                driver
                    .load_dense_seq(&key(name))
                    .await
                    .expect("load_dense_seq"),
            );
        }
        let leases = driver.load_leases().await.expect("load_leases");
        (high_water, counters, leases)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_lease_json_matches(json: &Value, lease: &LeaseRecord) {
    assert_eq!(json["lease_id"], lease.lease_id);
    assert_eq!(json["holder_hex"], hex(&lease.holder));
    match std::str::from_utf8(&lease.holder) {
        Ok(text) => assert_eq!(json["holder"], text),
        Err(_) => assert!(json["holder"].is_null()),
    }
    assert_eq!(json["holder_epoch"], lease.holder_epoch);
    assert_eq!(json["ttl_ms"], lease.ttl_ms);
    assert_eq!(json["ts_upper_bound"], lease.ts_upper_bound);
    assert_eq!(json["expires_at_ms"], lease.expires_at_ms);
    assert_eq!(json["superseded"], lease.superseded);
}

#[test]
fn inspect_full_shows_every_value_of_the_reference_directory() {
    let dir = copy_fixture("full");
    let run = tsoracle_file([OsStr::new("inspect"), dir.path().as_os_str()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains("high-water:  1764000555000 (2025-11-24T16:09:15.000Z)"),
        "{out}"
    );
    assert!(out.contains("key cap 10000"), "{out}");
    assert!(out.contains("  orders = 42\n"), "{out}");
    assert!(out.contains("  users = 7\n"), "{out}");
    let lease2 = out
        .lines()
        .find(|l| l.starts_with("  lease 2:"))
        .expect("lease 2 line");
    assert!(lease2.contains("\"svc-b\""), "{lease2}");
    assert!(lease2.contains("epoch 1"), "{lease2}");
    assert!(lease2.contains("ttl 5000 ms"), "{lease2}");
    assert!(lease2.contains("upper bound 1764000500000"), "{lease2}");
    assert!(
        lease2.contains("expires 2025-11-24T16:08:25.000Z (1764000505000)"),
        "{lease2}"
    );
    assert!(lease2.ends_with("superseded"), "{lease2}");
    let lease7 = out
        .lines()
        .find(|l| l.starts_with("  lease 7:"))
        .expect("lease 7 line");
    assert!(lease7.contains("\"svc-a\""), "{lease7}");
    assert!(lease7.contains("epoch 3"), "{lease7}");
    assert!(
        lease7.contains("expires 2025-11-24T16:09:25.000Z (1764000565000)"),
        "{lease7}"
    );
    assert!(out.contains("lock:        not held\n"), "{out}");
    assert!(out.contains("temp files:  none\n"), "{out}");
}

#[test]
fn inspect_judges_lease_expiry_at_the_given_time() {
    let dir = copy_fixture("full");
    let at = |now: u64| {
        let run = tsoracle_file([
            OsStr::new("inspect"),
            OsStr::new("--now-ms"),
            OsStr::new(&now.to_string()),
            dir.path().as_os_str(),
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let line = |id: &str| {
            run.stdout
                .lines()
                .find(|l| l.starts_with(&format!("  lease {id}:")))
                .expect("lease line")
                .to_string()
        };
        (line("2"), line("7"))
    };
    // Lease 7 expires at 1764000565000: live one millisecond before,
    // expired at that instant (expires_at_ms <= now). Superseded wins.
    let (lease2, lease7) = at(1_764_000_564_999);
    assert!(lease7.ends_with(", live"), "{lease7}");
    assert!(lease2.ends_with(", superseded"), "{lease2}");
    let (lease2, lease7) = at(1_764_000_565_000);
    assert!(lease7.ends_with(", expired"), "{lease7}");
    assert!(lease2.ends_with(", superseded"), "{lease2}");
}

#[test]
fn inspect_changes_nothing_in_any_reference_directory() {
    for name in ["full", "highwater", "seeded"] {
        let dir = copy_fixture(name);
        // Debris of an interrupted write: reported, not removed.
        std::fs::write(dir.path().join("state.tmp"), b"partial").expect("write temp");
        let before = dir_contents(dir.path());
        for json_flag in [false, true] {
            let mut args = vec![OsStr::new("inspect"), dir.path().as_os_str()];
            if json_flag {
                args.push(OsStr::new("--json"));
            }
            let run = tsoracle_file(args);
            assert_eq!(run.code, 0, "{name}: {}", run.stderr);
            if json_flag {
                let leftover = json(&run.stdout)["leftover_temp_files"].clone();
                assert_eq!(leftover.as_array().map(Vec::len), Some(1), "{name}");
                assert!(leftover[0].as_str().unwrap().ends_with("state.tmp"));
            } else {
                assert!(run.stdout.contains("temp files:  1 leftover"), "{name}");
            }
        }
        for sub in ["verify", "export"] {
            let run = tsoracle_file([OsStr::new(sub), dir.path().as_os_str()]);
            assert_eq!(run.code, 0, "{name} {sub}: {}", run.stderr);
        }
        // Byte for byte, and no LOCK file appeared in `seeded`.
        assert_eq!(dir_contents(dir.path()), before, "{name}");
    }
}

#[test]
fn inspect_json_agrees_with_the_driver() {
    let dir = copy_fixture("full");
    let run = tsoracle_file([
        OsStr::new("inspect"),
        OsStr::new("--json"),
        OsStr::new("--now-ms"),
        OsStr::new("1764000560000"),
        dir.path().as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = json(&run.stdout);
    assert_eq!(doc["format"], "tsoracle-file-inspect");
    assert_eq!(doc["now_ms"], 1_764_000_560_000u64);
    assert_eq!(doc["high_water_utc"], "2025-11-24T16:09:15.000Z");
    assert_eq!(doc["lock"]["lock_file"], true);
    assert_eq!(doc["lock"]["held"], false);
    assert_eq!(doc["dense"]["cap"], 10_000);
    let counters = doc["dense"]["counters"].as_object().expect("counters");
    let names: Vec<&str> = counters.keys().map(String::as_str).collect();
    assert_eq!(names, ["orders", "users"]);
    let statuses: Vec<&Value> = doc["leases"]
        .as_array()
        .expect("leases")
        .iter()
        .map(|l| &l["status"])
        .collect();
    assert_eq!(statuses, ["superseded", "live"]);

    let (high_water, values, leases) = driver_view(dir.path(), &names);
    assert_eq!(doc["high_water"], high_water);
    assert_eq!(high_water, FULL_HIGH_WATER);
    for (name, value) in names.iter().zip(&values) {
        assert_eq!(counters[*name], *value, "{name}");
    }
    assert_eq!(values, [42, 7]);
    let json_leases = doc["leases"].as_array().expect("leases");
    assert_eq!(json_leases.len(), leases.len());
    assert_eq!(leases.len(), 2);
    for (json_lease, lease) in json_leases.iter().zip(&leases) {
        assert_lease_json_matches(json_lease, lease);
    }
}

#[test]
fn export_carries_the_whole_state_as_the_driver_loads_it() {
    let dir = copy_fixture("full");
    let run = tsoracle_file([OsStr::new("export"), dir.path().as_os_str()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = json(&run.stdout);
    assert_eq!(doc["format"], "tsoracle-file-state");
    assert_eq!(doc["version"], 1);
    let mut fields: Vec<&str> = doc
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["dense", "format", "high_water", "leases", "version"]
    );

    let (high_water, values, leases) = driver_view(dir.path(), &["orders", "users"]);
    assert_eq!(doc["high_water"], high_water);
    assert_eq!(doc["dense"]["cap"], 10_000);
    assert_eq!(doc["dense"]["counters"]["orders"], values[0]);
    assert_eq!(doc["dense"]["counters"]["users"], values[1]);
    assert_eq!(doc["dense"]["counters"].as_object().unwrap().len(), 2);
    let json_leases = doc["leases"].as_array().expect("leases");
    assert_eq!(json_leases.len(), leases.len());
    for (json_lease, lease) in json_leases.iter().zip(&leases) {
        assert_lease_json_matches(json_lease, lease);
        let mut lease_fields: Vec<&str> = json_lease
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        lease_fields.sort_unstable();
        assert_eq!(
            lease_fields,
            [
                "expires_at_ms",
                "holder",
                "holder_epoch",
                "holder_hex",
                "lease_id",
                "superseded",
                "ts_upper_bound",
                "ttl_ms"
            ]
        );
    }
}

#[test]
fn export_of_a_fresh_directory_is_what_a_driver_starts_from() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Asked for explicitly: without --allow-empty it is refused (see
    // tests/operator_mistakes_are_refused.rs).
    let run = tsoracle_file([
        OsStr::new("export"),
        OsStr::new("--allow-empty"),
        dir.path().as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = json(&run.stdout);
    assert_eq!(doc["high_water"], 0);
    assert_eq!(doc["dense"]["cap"], 10_000);
    assert_eq!(doc["dense"]["counters"], serde_json::json!({}));
    assert_eq!(doc["leases"], serde_json::json!([]));
    assert_eq!(dir_contents(dir.path()).len(), 0, "export wrote nothing");
}

#[test]
fn a_holder_that_is_not_utf8_is_shown_in_hex() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lease = LeaseRecord {
        lease_id: 9,
        holder: vec![0xff, 0xfe, 0x01],
        holder_epoch: 4,
        ttl_ms: 1000,
        ts_upper_bound: 10,
        expires_at_ms: 20,
        superseded: false,
    };
    let bytes = lease_record::encode(std::slice::from_ref(&lease)).expect("encode");
    std::fs::write(dir.path().join("leases"), bytes).expect("write leases");

    let run = tsoracle_file([OsStr::new("export"), dir.path().as_os_str()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_lease_json_matches(&json(&run.stdout)["leases"][0], &lease);
    assert!(json(&run.stdout)["leases"][0]["holder"].is_null());

    let run = tsoracle_file([OsStr::new("inspect"), dir.path().as_os_str()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("holder hex:fffe01,"), "{}", run.stdout);
    assert!(run.stdout.contains("high-water:  none"), "{}", run.stdout);
}

#[test]
fn inspect_works_and_reports_the_lock_while_a_driver_holds_it() {
    let dir = copy_fixture("full");
    // flock belongs to an open file description: this process holds it,
    // the CLI child is another holder and could not take it.
    let driver = FileDriver::open_or_init(dir.path()).expect("open copy");
    let before = dir_contents(dir.path());

    let run = tsoracle_file([
        OsStr::new("inspect"),
        OsStr::new("--json"),
        dir.path().as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = json(&run.stdout);
    assert_eq!(doc["high_water"], FULL_HIGH_WATER);
    if cfg!(target_os = "linux") {
        assert_eq!(doc["lock"]["held"], true, "{}", run.stdout);
        let pids = doc["lock"]["holder_pids"].as_array().expect("pids");
        assert!(
            pids.contains(&Value::from(std::process::id())),
            "{pids:?} should list this test process"
        );
        let text = tsoracle_file([OsStr::new("inspect"), dir.path().as_os_str()]);
        assert!(
            text.stdout.contains(&format!(
                "lock:        held by a running process (pid {}",
                std::process::id()
            )),
            "{}",
            text.stdout
        );
    } else {
        assert!(doc["lock"]["held"].is_null());
    }
    // Still readable, still unchanged, and the driver still owns it.
    let run = tsoracle_file([OsStr::new("verify"), dir.path().as_os_str()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(dir_contents(dir.path()), before);
    assert_eq!(driver.high_water(), FULL_HIGH_WATER);

    // Seeding must not race the running driver.
    let run = tsoracle_file([OsStr::new("seed"), dir.path().as_os_str(), OsStr::new("5")]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("locked"), "{}", run.stderr);
    if cfg!(target_os = "linux") {
        // The refusal names the holder, as inspect does.
        assert!(
            run.stderr
                .contains(&format!("; held by pid {}", std::process::id())),
            "{}",
            run.stderr
        );
        let run = tsoracle_file([OsStr::new("init"), dir.path().as_os_str()]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("; held by pid {}", std::process::id())),
            "{}",
            run.stderr
        );
    }

    drop(driver);
    let run = tsoracle_file([
        OsStr::new("inspect"),
        OsStr::new("--json"),
        dir.path().as_os_str(),
    ]);
    if cfg!(target_os = "linux") {
        assert_eq!(json(&run.stdout)["lock"]["held"], false);
    }
}

#[test]
fn verify_passes_every_reference_directory() {
    for (name, summary) in [
        (
            "full",
            "(high-water 1764000555000, 2 dense key(s), 2 lease(s))",
        ),
        (
            "highwater",
            "(high-water 1764000000123, 0 dense key(s), 0 lease(s))",
        ),
        (
            "seeded",
            "(high-water 1700000000000, 0 dense key(s), 0 lease(s))",
        ),
    ] {
        let dir = copy_fixture(name);
        let run = tsoracle_file([OsStr::new("verify"), dir.path().as_os_str()]);
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        assert_eq!(
            run.stdout,
            format!("ok: {} {summary}\n", dir.path().display())
        );
        let run = tsoracle_file([
            OsStr::new("verify"),
            OsStr::new("--json"),
            dir.path().as_os_str(),
        ]);
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        assert_eq!(json(&run.stdout)["ok"], true);
    }
}

/// Flips one byte of a CRC-covered field, truncates or pads: each file of
/// `full`, each damage, is named in a one-line reason with exit code 1.
#[test]
fn verify_names_the_corrupt_file_and_exits_1() {
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 3] = [
        ("flip", |bytes| bytes[6] ^= 0x01),
        ("truncate", |bytes| bytes.truncate(bytes.len() - 1)),
        ("magic", |bytes| bytes[0] = b'X'),
    ];
    for file in ["state", "dense", "leases"] {
        for (what, damage) in damages {
            let dir = copy_fixture("full");
            let path = dir.path().join(file);
            let mut bytes = std::fs::read(&path).expect("read");
            damage(&mut bytes);
            std::fs::write(&path, &bytes).expect("write");

            let run = tsoracle_file([OsStr::new("verify"), dir.path().as_os_str()]);
            assert_eq!(run.code, 1, "{file} {what}: {}", run.stdout);
            assert_eq!(run.stdout, "", "{file} {what}");
            assert_eq!(
                run.stderr.lines().count(),
                1,
                "{file} {what}: {}",
                run.stderr
            );
            assert!(
                run.stderr
                    .contains(&format!("state file {} is corrupt: ", path.display())),
                "{file} {what}: {}",
                run.stderr
            );

            let run = tsoracle_file([
                OsStr::new("verify"),
                OsStr::new("--json"),
                dir.path().as_os_str(),
            ]);
            assert_eq!(run.code, 1, "{file} {what}");
            let doc = json(&run.stdout);
            assert_eq!(doc["ok"], false);
            assert!(
                doc["error"]
                    .as_str()
                    .expect("error")
                    .contains(&path.display().to_string()),
                "{doc}"
            );

            // inspect and export refuse it the same way.
            for sub in ["inspect", "export"] {
                let run = tsoracle_file([OsStr::new(sub), dir.path().as_os_str()]);
                assert_eq!(run.code, 1, "{sub} {file} {what}");
                assert_eq!(run.stdout, "", "{sub} {file} {what}");
                assert!(run.stderr.contains("is corrupt"), "{}", run.stderr);
            }
        }
    }
}

#[test]
fn verify_reports_the_defect_from_the_source_chain() {
    let dir = copy_fixture("full");
    let path = dir.path().join("state");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes.push(0);
    std::fs::write(&path, &bytes).expect("write");
    let run = tsoracle_file([OsStr::new("verify"), dir.path().as_os_str()]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        format!(
            "error: state file {} is corrupt: too long: 18 bytes, exactly 17 expected\n",
            path.display()
        )
    );
}

/// A driver error's remedy is its hint, printed on a line of its own under
/// the one-clause reason; an error without one prints the reason alone
/// (as `verify_reports_the_defect_from_the_source_chain` shows).
#[cfg(unix)]
#[test]
fn a_refusal_prints_the_remedy_on_a_hint_line() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let run = tsoracle_file([OsStr::new("init"), dir.as_os_str()]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(
        run.stderr,
        format!(
            "error: state directory {dir} is writable by its group or others (mode 0777)\n\
             hint: only the oracle's own user may write it: run `chmod go-w {dir}`\n",
            dir = dir.display()
        )
    );
    assert!(dir_contents(&dir).is_empty(), "nothing created");
}

#[test]
fn seed_starts_a_fresh_directory_once_and_then_refuses() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");
    let run = tsoracle_file([
        OsStr::new("seed"),
        dir.as_os_str(),
        OsStr::new("1700000000000"),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("high-water 1700000000000 (2023-11-14T22:13:20.000Z)"),
        "{}",
        run.stdout
    );
    // Same bytes as the seeded reference directory.
    assert_eq!(
        std::fs::read(dir.join("state")).expect("state"),
        std::fs::read(common::fixture_dir("seeded").join("state")).expect("fixture")
    );
    let before = dir_contents(&dir);

    let run = tsoracle_file([OsStr::new("seed"), dir.as_os_str(), OsStr::new("5")]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains(&format!(
            "refusing to seed: {} already exists",
            dir.join("state").display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(dir_contents(&dir), before, "a refused seed writes nothing");

    let (high_water, _, leases) = driver_view(&dir, &[]);
    assert_eq!(high_water, 1_700_000_000_000);
    assert!(leases.is_empty());
}

#[test]
fn seed_refuses_a_directory_holding_dense_state_only() {
    let dir = copy_fixture("full");
    std::fs::remove_file(dir.path().join("state")).expect("remove state");
    let run = tsoracle_file([OsStr::new("seed"), dir.path().as_os_str(), OsStr::new("1")]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("refusing to seed"), "{}", run.stderr);
    assert!(!dir.path().join("state").exists());
}

#[test]
fn seed_rejects_bad_values_before_touching_anything() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("oracle");

    let above = (PHYSICAL_MS_MAX + 1).to_string();
    let run = tsoracle_file([OsStr::new("seed"), dir.as_os_str(), OsStr::new(&above)]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "seed {above} is above the 46-bit physical-millisecond maximum {PHYSICAL_MS_MAX}"
        )),
        "{}",
        run.stderr
    );

    for (value, reason) in [
        ("abc", "invalid digit"),
        ("-1", "unexpected argument"),
        ("18446744073709551616", "too large"),
        ("", "empty"),
    ] {
        let run = tsoracle_file([OsStr::new("seed"), dir.as_os_str(), OsStr::new(value)]);
        assert_eq!(run.code, 2, "{value:?}: {}", run.stderr);
        assert!(run.stderr.contains(reason), "{value:?}: {}", run.stderr);
    }
    assert!(!dir.exists(), "no bad seed created the directory");

    // The largest seed a server can still make progress from, with the
    // default window ahead (3 s) and failover advance (1 s), is accepted
    // (tests/operator_mistakes_are_refused.rs: one more is refused).
    let last = (PHYSICAL_MS_MAX - 1 - 1000 - 3000).to_string();
    let run = tsoracle_file([
        OsStr::new("seed"),
        dir.as_os_str(),
        OsStr::new(&last),
        OsStr::new("--force"),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("4199-11-24T01:22:53.662Z"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_missing_directory_is_a_clear_error() {
    let parent = tempfile::tempdir().expect("temp dir");
    let missing = parent.path().join("nope");
    for sub in ["inspect", "verify", "export"] {
        let run = tsoracle_file([OsStr::new(sub), missing.as_os_str()]);
        assert_eq!(run.code, 1, "{sub}");
        assert_eq!(run.stdout, "", "{sub}");
        assert_eq!(
            run.stderr,
            format!(
                "error: cannot inspect {}: no such directory\n",
                missing.display()
            ),
            "{sub}"
        );
    }
    assert!(!missing.exists(), "nothing created it");
}

#[test]
fn a_path_that_is_a_file_is_a_clear_error() {
    let dir = copy_fixture("full");
    let file = dir.path().join("state");
    for sub in ["inspect", "verify", "export"] {
        let run = tsoracle_file([OsStr::new(sub), file.as_os_str()]);
        assert_eq!(run.code, 1, "{sub}");
        assert_eq!(
            run.stderr,
            format!("error: {} is not a directory\n", file.display()),
            "{sub}"
        );
    }
    let run = tsoracle_file([OsStr::new("seed"), file.as_os_str(), OsStr::new("1")]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("is not a directory"), "{}", run.stderr);
}

#[cfg(unix)]
#[test]
fn an_unreadable_file_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;

    let dir = copy_fixture("full");
    let mode = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    let path = dir.path().join("dense");
    mode(dir.path(), 0o755);
    for name in ["LOCK", "state", "leases"] {
        mode(&dir.path().join(name), 0o644);
    }
    mode(&path, 0o000);

    let mut command = if std::fs::read(&path).is_ok() {
        // Root reads a mode-000 file: run the CLI as `nobody` instead, when
        // util-linux's setpriv is there to drop privileges.
        let mut command = Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        command.arg(common::cli::BIN);
        command
    } else {
        Command::new(common::cli::BIN)
    };
    command.arg("verify").arg(dir.path());
    if command.get_program() == "setpriv"
        && Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args([common::cli::BIN, "--version"])
            .output()
            .map_or(true, |probe| !probe.status.success())
    {
        // No setpriv, or `nobody` cannot reach the binary.
        eprintln!("skipped: running as root and cannot run the CLI as nobody");
        return;
    }
    let run = run(command);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stderr,
        format!(
            "error: cannot read {}: Permission denied (os error 13)\n",
            path.display()
        )
    );
}

#[test]
fn usage_errors_exit_2_and_help_documents_exit_codes_and_export_fields() {
    let run = tsoracle_file(Vec::<&str>::new());
    assert_eq!(run.code, 2);
    let run = tsoracle_file(["frobnicate"]);
    assert_eq!(run.code, 2);
    let run = tsoracle_file(["inspect"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("<DIR>"), "{}", run.stderr);

    let run = tsoracle_file(["--help"]);
    assert_eq!(run.code, 0);
    for needle in ["EXIT CODES", "usage error", "holder_hex", "high_water"] {
        assert!(run.stdout.contains(needle), "{needle}: {}", run.stdout);
    }
    let run = tsoracle_file(["export", "--help"]);
    assert_eq!(run.code, 0);
    for needle in ["tsoracle-file-state", "dense.counters", "expires_at_ms"] {
        assert!(run.stdout.contains(needle), "{needle}: {}", run.stdout);
    }
}

// ---------------------------------------------------------------------------
// What inspect and export show of ownership (issue 9): the lock still held
// after `rm LOCK`, a copy told from its original, keys SeqKey cannot hold.
// ---------------------------------------------------------------------------

#[test]
fn inspect_sees_the_directory_lock_after_lock_is_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("oracle");
    let driver = FileDriver::open_or_init(&dir).unwrap();
    std::fs::remove_file(dir.join("LOCK")).unwrap();
    let run = tsoracle_file(["inspect".as_ref(), "--json".as_ref(), dir.as_os_str()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = json(&run.stdout);
    assert_eq!(doc["lock"]["held"], Value::Bool(true), "{doc}");
    assert_eq!(
        doc["lock"]["holder_pids"][0],
        Value::from(std::process::id()),
        "{doc}"
    );
    drop(driver);
}

#[test]
fn inspect_tells_a_copy_from_its_original() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    drop(FileDriver::open_or_init(&original).unwrap());
    // A copy as an operator makes one: `cp -a` keeps the extended
    // attributes, and with them the identity.
    let copy = tmp.path().join("copy");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&original)
        .arg(&copy)
        .status()
        .expect("run cp -a");
    assert!(status.success());
    let look = |dir: &Path| {
        let run = tsoracle_file(["inspect".as_ref(), "--json".as_ref(), dir.as_os_str()]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        json(&run.stdout)
    };
    let (a, b) = (look(&original), look(&copy));
    assert_ne!(a["identity"], b["identity"]);
    let text = tsoracle_file(["inspect".as_ref(), copy.as_os_str()]).stdout;
    let export = |dir: &Path| {
        let run = tsoracle_file(["export".as_ref(), "--allow-empty".as_ref(), dir.as_os_str()]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        json(&run.stdout)
    };
    if !common::xattrs_supported_in(tmp.path()) {
        // No extended attributes: no identity to compare, and inspect says
        // why.
        for doc in [&a, &b] {
            assert_eq!(doc["origin"], Value::Null, "{doc}");
            assert_eq!(doc["origin_source"], "unsupported", "{doc}");
        }
        assert!(
            text.contains(
                "origin:      none (no identity: the filesystem has no extended attributes)"
            ),
            "{text}"
        );
        assert_eq!(export(&original).get("origin_id"), None);
        return;
    }
    assert_eq!(
        a["origin"]["id"], b["origin"]["id"],
        "copies share the origin"
    );
    assert_eq!(a["origin"]["id"].as_str().unwrap().len(), 32);
    assert_eq!(a["origin"]["opened_here"], Value::Bool(true));
    assert_eq!(b["origin"]["opened_here"], Value::Bool(false));
    for doc in [&a, &b] {
        assert_eq!(doc["origin_source"], "xattr", "{doc}");
        assert_eq!(doc["identity_file"], Value::Bool(false), "{doc}");
    }
    assert!(
        text.contains("this is a copy, a restore or a move"),
        "{text}"
    );
    for dir in [&original, &copy] {
        assert_eq!(export(dir)["origin_id"], a["origin"]["id"]);
    }

    // A copy without its extended attributes (`cp -r`) has no identity.
    let bare = tmp.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    std::fs::copy(original.join("LOCK"), bare.join("LOCK")).unwrap();
    let c = look(&bare);
    assert_eq!(c["origin"], Value::Null);
    assert_eq!(c["origin_source"], "missing");
    let text = tsoracle_file(["inspect".as_ref(), bare.as_os_str()]).stdout;
    assert!(
        text.contains("copied without its extended attributes"),
        "{text}"
    );
}

#[test]
fn inspect_shows_an_identity_file_of_an_earlier_version_and_refuses_a_damaged_attribute() {
    use tsoracle_driver_file::identity_record::{self, Origin};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("oracle");
    FileDriver::init_seeded(&dir, 1_700_000_000_000).unwrap();
    let origin = Origin {
        id: *b"earlier-version!",
        created_ms: 1_764_000_000_000,
        opened_in: tsoracle_driver_file::vfs::DirIdentity {
            device: 1,
            inode: 2,
        },
    };
    let supported = common::xattrs_supported_in(tmp.path());
    if supported {
        common::set_identity_xattr(&dir, None);
    }
    std::fs::write(dir.join("IDENTITY"), identity_record::encode(&origin)).unwrap();
    let run = tsoracle_file(["inspect".as_ref(), "--json".as_ref(), dir.as_os_str()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = json(&run.stdout);
    assert_eq!(doc["origin"]["id"], origin.id_hex());
    assert_eq!(doc["origin_source"], "identity-file");
    assert_eq!(doc["identity_file"], Value::Bool(true));
    let text = tsoracle_file(["inspect".as_ref(), dir.as_os_str()]).stdout;
    assert!(
        text.contains("kept in an IDENTITY file by an earlier version"),
        "{text}"
    );
    let run = tsoracle_file(["export".as_ref(), dir.as_os_str()]);
    assert_eq!(json(&run.stdout)["origin_id"], origin.id_hex());

    // Opened once: the file is gone, and the identity is in the attribute
    // (or, without extended attributes, gone with it).
    drop(FileDriver::open_or_init(&dir).unwrap());
    assert!(!dir.join("IDENTITY").exists());
    let doc = json(&tsoracle_file(["inspect".as_ref(), "--json".as_ref(), dir.as_os_str()]).stdout);
    assert_eq!(doc["identity_file"], Value::Bool(false));
    if !supported {
        assert_eq!(doc["origin_source"], "unsupported");
        return;
    }
    assert_eq!(doc["origin_source"], "xattr");
    assert_eq!(doc["origin"]["id"], origin.id_hex());
    assert_eq!(doc["origin"]["opened_here"], Value::Bool(true));

    // A damaged attribute: inspect fails with one line naming the
    // directory and the attribute.
    let mut bytes = common::identity_xattr(&dir).unwrap();
    bytes[0] = b'X';
    common::set_identity_xattr(&dir, Some(&bytes));
    let run = tsoracle_file(["inspect".as_ref(), dir.as_os_str()]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!(
            "the identity of state directory {}",
            dir.display()
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("user.tsoracle.identity"),
        "{}",
        run.stderr
    );
}

#[test]
fn inspect_and_export_show_keys_seqkey_cannot_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let mut body = b"TSOD\x01".to_vec();
    body.extend_from_slice(&10u64.to_le_bytes());
    body.extend_from_slice(&2u32.to_le_bytes());
    for (name, value) in [(&b""[..], 5u64), (&b"orders"[..], 9)] {
        body.extend_from_slice(&(name.len() as u16).to_le_bytes());
        body.extend_from_slice(name);
        body.extend_from_slice(&value.to_le_bytes());
    }
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(tmp.path().join("dense"), body).unwrap();

    let run = tsoracle_file(["export".as_ref(), tmp.path().as_os_str()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = json(&run.stdout);
    assert_eq!(doc["dense"]["counters"]["orders"], Value::from(9u64));
    assert_eq!(
        doc["dense"]["unaddressable"][""],
        Value::from(5u64),
        "{doc}"
    );
    let text = tsoracle_file(["inspect".as_ref(), tmp.path().as_os_str()]).stdout;
    assert!(text.contains("2 counter(s)"), "{text}");
    assert!(
        text.contains("\"\" = 5 (kept, but no call can reach it"),
        "{text}"
    );
}

/// `init` over existing state says it refuses to initialize (the library's
/// wording was seed's), names the file, and writes nothing.
#[test]
fn init_refuses_existing_state_in_its_own_words() {
    let dir = copy_fixture("full");
    let before = dir_contents(dir.path());
    let run = tsoracle_file([OsStr::new("init"), dir.path().as_os_str()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "refusing to initialize {}: {} already exists",
            dir.path().display(),
            dir.path().join("state").display()
        )),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("seed"), "{}", run.stderr);
    assert_eq!(dir_contents(dir.path()), before);
}
