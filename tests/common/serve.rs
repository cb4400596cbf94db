//! `tsoracle-file serve` as a child process: started with a clean
//! environment on loopback ports, waited on by its readiness line, its
//! systemd notifications or its log lines, scraped over HTTP and gRPC
//! health, and stopped by a signal, every wait under a bound. What
//! `tests/serve.rs` and `tests/failpoints/serve.rs` drive (only with the
//! `server` feature).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tsoracle_client::Client;

use super::cli::BIN;

/// The bound on any single wait; reached only when something is broken.
pub const BOUND: Duration = Duration::from_secs(60);

/// The environment variables `serve` reads, cleared so the caller's
/// environment cannot change a test.
pub const SERVE_ENV: [&str; 19] = [
    "TSORACLE_LISTEN",
    "TSORACLE_STATE_DIR",
    "TSORACLE_INIT",
    "TSORACLE_WINDOW_AHEAD",
    "TSORACLE_FAILOVER_ADVANCE",
    "TSORACLE_LEASE_TTL_FLOOR",
    "TSORACLE_LEASE_TTL_CEILING",
    "TSORACLE_HEARTBEAT_INTERVAL",
    "TSORACLE_SHUTDOWN_TIMEOUT",
    "TSORACLE_LOG",
    "TSORACLE_METRICS_LISTEN",
    "TSORACLE_NO_METRICS",
    "TSORACLE_TLS_CERT",
    "TSORACLE_TLS_KEY",
    "TSORACLE_TLS_CLIENT_CA",
    "FAILPOINTS",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

pub fn command(args: &[&str], dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null());
    for name in SERVE_ENV {
        command.env_remove(name);
    }
    command
}

/// A `serve` process that has not been reaped yet.
pub struct Serving {
    pub child: Option<Child>,
    pub grpc: SocketAddr,
    /// `None` with `--no-metrics`.
    pub http: Option<SocketAddr>,
    /// Everything the process wrote to stderr, once it closed it.
    pub stderr: mpsc::Receiver<String>,
}

impl Serving {
    /// Starts `serve` and waits for its readiness line on stdout.
    pub fn start(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Serving {
        let mut command = command(args, dir);
        command.envs(env.iter().copied());
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tsoracle-file serve");
        let stderr = collect_stderr(&mut child);
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut serving = Serving {
            child: Some(child),
            grpc: "0.0.0.0:0".parse().expect("placeholder"),
            http: None,
            stderr,
        };
        let line = received.recv_timeout(BOUND).unwrap_or_else(|_| {
            if let Some(child) = serving.child.as_mut() {
                let _ = child.kill();
            }
            panic!(
                "no readiness line; stderr: {}",
                serving.stderr.recv_timeout(BOUND).unwrap_or_default()
            )
        });
        // tsoracle-file: serving gRPC on ADDR, metrics on http://ADDR/metrics
        let grpc = line
            .split("serving gRPC on ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_else(|| panic!("unexpected readiness line {line:?}"));
        serving.grpc = grpc.parse().expect("gRPC address");
        serving.http = if line.ends_with(", metrics disabled") {
            None
        } else {
            let http = line
                .split("metrics on http://")
                .nth(1)
                .and_then(|rest| rest.strip_suffix("/metrics"))
                .unwrap_or_else(|| panic!("unexpected readiness line {line:?}"));
            Some(http.parse().expect("metrics address"))
        };
        serving
    }

    pub async fn client(&self) -> Client {
        Client::connect(vec![format!("http://{}", self.grpc)])
            .await
            .expect("build a client")
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http.expect("serving metrics"), path)
    }

    /// Sends `signal` and waits for the exit; returns the status and stderr.
    pub fn stop(self, signal: Signal) -> (ExitStatus, String) {
        self.signal(signal);
        self.wait()
    }

    /// Sends `signal`, without waiting.
    pub fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("not reaped");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal serve");
    }

    /// Waits for the exit; returns the status and stderr.
    pub fn wait(mut self) -> (ExitStatus, String) {
        let status = wait_bounded(self.child.take().expect("not reaped"));
        // The stderr reader ends at EOF, once the process is gone.
        let stderr = self
            .stderr
            .recv_timeout(BOUND)
            .expect("stderr closes when the process exits");
        (status, stderr)
    }
}

impl Drop for Serving {
    /// A test that fails midway must not leave a server running.
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for `child` to exit within the bound (killing it otherwise).
pub fn wait_bounded(mut child: Child) -> ExitStatus {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    match exited.recv_timeout(BOUND) {
        Ok(status) => status.expect("wait for serve"),
        Err(_) => {
            // Do not leave it running; the waiter thread reaps it.
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            panic!("serve did not exit within the bound");
        }
    }
}

/// Reads the child's piped stderr to its end on a thread; the receiver
/// gets everything once the process closes it.
pub fn collect_stderr(child: &mut Child) -> mpsc::Receiver<String> {
    let mut pipe = child.stderr.take().expect("piped stderr");
    let (send_stderr, stderr) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        let _ = send_stderr.send(text);
    });
    stderr
}

/// Runs `serve` expecting it to refuse to start: its exit code and stderr.
pub fn refused(args: &[&str], dir: &Path) -> (i32, String) {
    let mut child = command(args, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tsoracle-file serve");
    let stderr = collect_stderr(&mut child);
    let status = wait_bounded(child);
    let stderr = stderr.recv_timeout(BOUND).expect("stderr closes at exit");
    assert!(!stderr.contains("panicked"), "{stderr}");
    (status.code().unwrap_or(-1), stderr)
}

/// One HTTP/1.1 GET on a fresh connection: status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, BOUND).expect("connect to /metrics");
    stream.set_read_timeout(Some(BOUND)).expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

/// The value of the Prometheus sample `series` (name and labels, exactly
/// as rendered) in `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// A client of the standard gRPC health service on `addr`.
pub async fn health_client(addr: SocketAddr) -> HealthClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(BOUND)
        .connect()
        .await
        .expect("connect to the gRPC port");
    HealthClient::new(channel)
}

/// One health `Check` of `service`, bounded.
pub async fn check(
    client: &mut HealthClient<Channel>,
    service: &str,
) -> Result<i32, tonic::Status> {
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    let response = tokio::time::timeout(BOUND, client.check(request))
        .await
        .expect("the health check answers within the bound")?;
    Ok(response.into_inner().status)
}

/// Opens a health `Watch` of `service`.
pub async fn watch(
    client: &mut HealthClient<Channel>,
    service: &str,
) -> tonic::Streaming<HealthCheckResponse> {
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    tokio::time::timeout(BOUND, client.watch(request))
        .await
        .expect("the watch opens within the bound")
        .expect("watch")
        .into_inner()
}

/// The next item of a health `Watch`, bounded: `None` when it ended.
pub async fn next_status(stream: &mut tonic::Streaming<HealthCheckResponse>) -> Option<i32> {
    tokio::time::timeout(BOUND, stream.message())
        .await
        .expect("the watch moves within the bound")
        .expect("the watch stream fails not")
        .map(|response| response.status)
}

pub const SERVING: i32 = ServingStatus::Serving as i32;
pub const NOT_SERVING: i32 = ServingStatus::NotServing as i32;
pub const TSO_SERVICE: &str = "tsoracle.v1.TsoService";

pub fn init(dir: &Path) {
    let output = Command::new(BIN)
        .arg("init")
        .arg(dir)
        .output()
        .expect("run tsoracle-file init");
    assert!(
        output.status.success(),
        "init: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A notification socket as systemd binds it, for `NOTIFY_SOCKET`.
pub struct NotifySocket {
    pub socket: UnixDatagram,
    /// What `NOTIFY_SOCKET` is set to.
    pub name: String,
    /// The socket file's directory, when it is a path.
    pub _dir: Option<tempfile::TempDir>,
}

impl NotifySocket {
    pub fn at_path() -> NotifySocket {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            socket,
            name: path.to_str().expect("UTF-8 temp path").to_string(),
            _dir: Some(dir),
        }
    }

    #[cfg(target_os = "linux")]
    pub fn abstract_named() -> NotifySocket {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "tsoracle-file-test-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        );
        let address =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
        let socket = UnixDatagram::bind_addr(&address).expect("bind an abstract socket");
        NotifySocket {
            socket,
            name: format!("@{name}"),
            _dir: None,
        }
    }

    /// The next message, within the bound.
    pub fn next(&self) -> String {
        self.socket
            .set_read_timeout(Some(BOUND))
            .expect("read timeout");
        let mut buffer = vec![0; 4096];
        let length = self
            .socket
            .recv(&mut buffer)
            .expect("a notification within the bound");
        String::from_utf8(buffer[..length].to_vec()).expect("UTF-8 notification")
    }

    /// Messages up to and including the first that satisfies `until`.
    pub fn until(&self, until: impl Fn(&str) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let message = self.next();
            let done = until(&message);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
}

/// The lines `KEY=value` of a notification, as (key, value).
pub fn fields(message: &str) -> Vec<(&str, &str)> {
    message
        .lines()
        .map(|line| line.split_once('=').expect("KEY=value"))
        .collect()
}

pub fn has(message: &str, key: &str, value: &str) -> bool {
    fields(message).contains(&(key, value))
}

pub fn status_of(message: &str) -> Option<&str> {
    fields(message)
        .into_iter()
        .find_map(|(key, value)| (key == "STATUS").then_some(value))
}

/// Starts `serve` with `NOTIFY_SOCKET` (and `env`), without waiting for
/// its stdout line: the READY=1 notification is what says it serves.
pub fn start_notified(dir: &Path, notify: &NotifySocket, env: &[(&str, &str)]) -> Serving {
    let mut command = command(&["--no-metrics"], dir);
    command.env("NOTIFY_SOCKET", &notify.name);
    command.envs(env.iter().copied());
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tsoracle-file serve");
    let stderr = collect_stderr(&mut child);
    Serving {
        child: Some(child),
        grpc: "0.0.0.0:0".parse().expect("placeholder"),
        http: None,
        stderr,
    }
}

/// The gRPC address in a `STATUS=serving gRPC on ADDR; ...` line.
pub fn served_addr(status: &str) -> SocketAddr {
    status
        .strip_prefix("serving gRPC on ")
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("unexpected status {status:?}"))
        .parse()
        .expect("the gRPC address")
}

/// A `serve` process whose stderr is read line by line as it comes.
pub struct Logged {
    pub child: Option<Child>,
    pub lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Logged {
    /// Starts `serve` with `stdout` as its standard output.
    pub fn start(args: &[&str], dir: &Path, env: &[(&str, &str)], stdout: Stdio) -> Logged {
        let mut command = command(args, dir);
        command.envs(env.iter().copied());
        let mut child = command
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tsoracle-file serve");
        let pipe = child.stderr.take().expect("piped stderr");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        Logged {
            child: Some(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a stderr line containing `text`; returns it.
    pub fn wait_for(&mut self, text: &str) -> String {
        if let Some(line) = self.seen.iter().find(|line| line.contains(text)) {
            return line.clone();
        }
        let deadline = std::time::Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line with {text:?}; stderr:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Sends `signal`, waits for the exit; returns the status and all of stderr.
    pub fn stop(mut self, signal: Signal) -> (ExitStatus, String) {
        let child = self.child.take().expect("not reaped");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal serve");
        let status = wait_bounded(child);
        // The reader ends at EOF, once the process is gone.
        let deadline = std::time::Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("stderr did not close"),
            }
        }
        (status, self.seen.join("\n"))
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
