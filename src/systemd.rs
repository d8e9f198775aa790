//! The systemd service-manager protocol (`sd_notify(3)`), spoken without libsystemd: one
//! datagram of `KEY=VALUE` lines to the Unix socket named by `NOTIFY_SOCKET` (a path, or an
//! abstract name written with a leading `@`). Without `NOTIFY_SOCKET` every call is a no-op,
//! so `drover run` behaves the same under systemd, in a container or in a terminal.
//!
//! The daemon sends `READY=1` once it serves HTTP and its syncs have started, `WATCHDOG=1`
//! from the watchdog actor (`actors::watchdog`), and `STOPPING=1` when a signal stops it.

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Tells the service manager `state` (newline-separated `KEY=VALUE` assignments). Returns
/// false when no manager listens (`NOTIFY_SOCKET` unset or empty).
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) {
        Some(socket) => send(&socket, state).map(|()| true),
        None => Ok(false),
    }
}

/// `notify`, logging a failure instead of returning it: a manager that stopped listening
/// must not stop replication (systemd then restarts us through the watchdog if it cares).
pub fn notify_or_warn(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(state, error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

fn send(socket: &OsString, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    let addr = match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
        Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(socket))?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "NOTIFY_SOCKET {socket:?} is neither a path nor an abstract socket (@name)"
                ),
            ))
        }
    };
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"));
    }
    Ok(())
}

/// How often to send `WATCHDOG=1`: half the manager's `WATCHDOG_USEC`, as `sd_watchdog_enabled(3)`
/// advises, or None when the watchdog is off or meant for another process (`WATCHDOG_PID`).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    interval_from(&usec, pid.as_deref(), std::process::id())
}

fn interval_from(usec: &str, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    let usec: u64 = usec.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_pings_at_half_the_timeout_for_this_process_only() {
        assert_eq!(
            interval_from("30000000", None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            interval_from("2000000", Some("7"), 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(interval_from("2000000", Some("8"), 7), None);
        assert_eq!(interval_from("0", None, 7), None);
        assert_eq!(interval_from("soon", None, 7), None);
    }

    #[test]
    fn notify_reaches_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(&path.clone().into_os_string(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("drover-test-{}", std::process::id());
        let abs = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        send(&OsString::from(format!("@{name}")), "WATCHDOG=1").unwrap();
        let n = abs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn a_relative_notify_socket_is_refused() {
        let e = send(&OsString::from("notify.sock"), "READY=1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
    }
}
