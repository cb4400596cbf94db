//! `contrib/tsoracle-file.service`, the systemd unit the README gives: it
//! verifies with `systemd-analyze verify` (ExecStart pointed at the binary
//! just built, since verify checks that it exists) with no warning at all,
//! it uses the readiness protocol `serve` speaks, and its settings agree
//! with each other and with what `serve` refuses.

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::BIN;

fn unit() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/tsoracle-file.service"),
    )
    .expect("read contrib/tsoracle-file.service")
}

/// Every `Key=value` of the unit, in order, comments left out.
fn settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with('['))
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not Key=value: {line:?}"));
            (key.to_string(), value.to_string())
        })
        .collect()
}

fn value<'a>(settings: &'a [(String, String)], key: &str) -> &'a str {
    settings
        .iter()
        .find_map(|(k, v)| (k == key).then_some(v.as_str()))
        .unwrap_or_else(|| panic!("{key}= missing from the unit"))
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify_without_a_warning() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!(
            "SKIPPED: systemd-analyze is not installed (apt-get install systemd); \
             the unit file was not verified"
        );
        return;
    };
    let text = unit();
    assert!(text.contains("ExecStart=/usr/local/bin/tsoracle-file serve"));
    let built = text.replace(
        "ExecStart=/usr/local/bin/tsoracle-file",
        &format!("ExecStart={BIN}"),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tsoracle-file.service");
    std::fs::write(&path, built).expect("write the unit");
    let output = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "verify failed: {stderr}");
    // verify exits 0 on an unknown key or an unparsable value, and says so.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned: {stderr}"
    );

    // The check is real: a misspelt key is reported.
    let broken = std::fs::read_to_string(&path)
        .expect("read back")
        .replace("PrivateTmp=yes", "PrivateTemp=yes");
    std::fs::write(&path, broken).expect("write the broken unit");
    let output = Command::new(which("systemd-analyze").expect("found above"))
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze verify");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("PrivateTemp"),
        "a misspelt key went unnoticed"
    );
}

#[test]
fn the_unit_file_uses_notify_a_watchdog_its_state_directory_and_hardening() {
    let text = unit();
    let settings = settings(&text);
    assert_eq!(value(&settings, "Type"), "notify");
    assert_eq!(value(&settings, "NotifyAccess"), "main");
    // systemd creates /var/lib/<StateDirectory>, and serve is pointed there.
    let state_directory = value(&settings, "StateDirectory");
    let environment: Vec<&str> = settings
        .iter()
        .filter(|(key, _)| key == "Environment")
        .map(|(_, value)| value.as_str())
        .collect();
    assert!(
        environment.contains(&format!("TSORACLE_STATE_DIR=/var/lib/{state_directory}").as_str()),
        "{environment:?}"
    );
    assert!(
        value(&settings, "RequiresMountsFor").starts_with(&format!("/var/lib/{state_directory}")),
        "the state directory's volume is mounted first"
    );
    assert_eq!(value(&settings, "StateDirectoryMode"), "0700");
    // The unit never creates an oracle: no --init, on the command line or
    // in the environment.
    let exec = value(&settings, "ExecStart");
    assert!(exec.ends_with("tsoracle-file serve"), "{exec}");
    assert!(!exec.contains("--init"), "{exec}");
    assert!(
        !environment
            .iter()
            .any(|line| line.starts_with("TSORACLE_INIT"))
    );
    // A watchdog, so that a poisoned driver (whose pings stop) is restarted.
    let watchdog = humantime::parse_duration(value(&settings, "WatchdogSec")).expect("WatchdogSec");
    assert!(
        watchdog >= std::time::Duration::from_secs(2),
        "{watchdog:?}"
    );
    assert_eq!(value(&settings, "Restart"), "on-failure");
    // A stop takes at most --shutdown-timeout (10 s by default; the unit
    // does not change it) for the drain and as much again for the server's
    // leader watch: systemd must not SIGKILL it before.
    assert!(
        !environment
            .iter()
            .any(|line| line.starts_with("TSORACLE_SHUTDOWN_TIMEOUT"))
    );
    let stop =
        humantime::parse_duration(value(&settings, "TimeoutStopSec")).expect("TimeoutStopSec");
    assert!(stop > std::time::Duration::from_secs(20), "{stop:?}");
    // Hardening that fits a process needing one directory and two ports.
    for (key, expected) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "0077"),
    ] {
        assert_eq!(value(&settings, key), expected, "{key}");
    }
    // No ReadWritePaths: with ProtectSystem=strict only the state directory
    // is writable, which is all the driver writes.
    assert!(!settings.iter().any(|(key, _)| key == "ReadWritePaths"));

    // The addresses and the state directory in Environment= are accepted by
    // serve's own parser (`--help` lists each variable it reads).
    let output = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("serve --help");
    let help = String::from_utf8_lossy(&output.stdout);
    for line in &environment {
        let (name, _) = line.split_once('=').expect("NAME=value");
        assert!(
            help.contains(&format!("[env: {name}")),
            "{name} is not read by serve"
        );
    }
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or(())
}
