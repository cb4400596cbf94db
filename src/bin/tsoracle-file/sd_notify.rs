//! systemd's readiness protocol (`sd_notify(3)`), spoken by `serve` when
//! `NOTIFY_SOCKET` is set: one datagram of `KEY=value` lines per message
//! on that Unix socket (a path, or an abstract socket written `@name`). No
//! libsystemd: the protocol is one `sendto`.
//!
//! `serve` sends `READY=1` (with a `STATUS=` line) once it accepts calls on
//! an open driver, `STOPPING=1` when it begins to stop, and, when
//! `WATCHDOG_USEC` is set (for this process: `WATCHDOG_PID`, when set, must
//! be ours), `WATCHDOG=1` every half of that interval with a fresh
//! `STATUS=`. Once the driver is poisoned the pings stop (each tick then
//! sends only a `STATUS=` saying so), so systemd's watchdog restarts the
//! service, which is the only way a poisoned driver recovers.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use crate::cli::Failure;

/// A connection to the service manager's notification socket.
pub(crate) struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    /// What `NOTIFY_SOCKET` said, for messages.
    name: String,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for, or `None` when it is unset or
    /// empty (not started by systemd with `Type=notify`).
    pub(crate) fn from_env() -> Result<Option<Notifier>, Failure> {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let Some(name) = name.to_str().map(str::to_owned) else {
            return Err(Failure::new(
                "NOTIFY_SOCKET is not valid UTF-8: expected a socket path or @name",
            ));
        };
        if name.is_empty() {
            return Ok(None);
        }
        let address = address(&name).map_err(|err| {
            Failure::new(format!(
                "NOTIFY_SOCKET={name:?} cannot be used: {err} (expected an absolute path \
                 or an abstract socket @name)"
            ))
        })?;
        let socket = UnixDatagram::unbound().map_err(|err| {
            Failure::new(format!("cannot create a socket for NOTIFY_SOCKET: {err}"))
        })?;
        Ok(Some(Notifier {
            socket,
            address,
            name,
        }))
    }

    /// Sends one message (`KEY=value` lines); a failure is logged, never
    /// fatal: the service keeps serving.
    pub(crate) fn send(&self, message: &str) {
        if let Err(err) = self.socket.send_to_addr(message.as_bytes(), &self.address) {
            tracing::warn!(
                notify_socket = %self.name,
                error = %err,
                "cannot notify the service manager"
            );
        }
    }
}

fn address(name: &str) -> io::Result<SocketAddr> {
    if let Some(abstract_name) = name.strip_prefix('@') {
        return abstract_address(abstract_name.as_bytes());
    }
    if !name.starts_with('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor @name",
        ));
    }
    SocketAddr::from_pathname(name)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_address(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_address(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

/// Half of `WATCHDOG_USEC`, the ping interval systemd's documentation
/// asks for, when the watchdog is on for this process; `Err` when the
/// variables are malformed.
pub(crate) fn watchdog_interval() -> Result<Option<Duration>, Failure> {
    let Some(usec) = std::env::var_os("WATCHDOG_USEC") else {
        return Ok(None);
    };
    let usec = usec
        .to_str()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|usec| *usec > 0)
        .ok_or_else(|| {
            Failure::new(format!(
                "WATCHDOG_USEC={usec:?} is not a positive number of microseconds"
            ))
        })?;
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        // Meant for another process (a parent that set it for itself).
        if pid
            .to_str()
            .and_then(|text| text.trim().parse::<u32>().ok())
            != Some(std::process::id())
        {
            return Ok(None);
        }
    }
    Ok(Some(
        Duration::from_micros(usec / 2).max(Duration::from_millis(1)),
    ))
}
