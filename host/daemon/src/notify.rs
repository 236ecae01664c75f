//! systemd's readiness protocol (`sd_notify(3)`): newline-separated
//! `KEY=VALUE` assignments, one datagram per message, sent to the unix socket
//! named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//! Without `$NOTIFY_SOCKET` nothing is sent. A message that cannot be sent is
//! logged; serving goes on (systemd then times the start out and says so).
//!
//! What the daemon says, in order: `READY=1` once recovery has run and the
//! socket accepts; `RELOADING=1` with `MONOTONIC_USEC` when a SIGHUP reload
//! starts and `READY=1` when it is done (applied or not); `STOPPING=1` at
//! shutdown. Each carries a `STATUS=` line for `systemctl status`.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

/// A send waits this long at most (systemd reads its socket promptly).
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends readiness messages to systemd, or nothing without `$NOTIFY_SOCKET`.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    target: Option<Arc<(UnixDatagram, SocketAddr)>>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a value that is not a usable address is logged
    /// and nothing is sent.
    pub fn from_env() -> Notifier {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else { return Notifier::default() };
        match Notifier::to(&value.to_string_lossy()) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "NOTIFY_SOCKET unusable: systemd will not hear that wasmsnap is ready");
                Notifier::default()
            }
        }
    }

    /// To the socket `address` names (`/path` or `@abstract`).
    pub fn to(address: &str) -> anyhow::Result<Notifier> {
        let addr = parse_address(address)?;
        let socket = UnixDatagram::unbound().context("create a datagram socket")?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Notifier { target: Some(Arc::new((socket, addr))) })
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// A reload starts; [`Notifier::ready`] says it is done.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the config",
            monotonic_usec()
        ));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: finishing in-flight requests");
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    fn send(&self, message: &str) {
        let Some(target) = &self.target else { return };
        let (socket, addr) = &**target;
        if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
            let first = message.lines().next().unwrap_or_default();
            tracing::warn!(error = %e, message = first, "cannot tell systemd (NOTIFY_SOCKET)");
        }
    }
}

fn parse_address(address: &str) -> anyhow::Result<SocketAddr> {
    if let Some(name) = address.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        return SocketAddr::from_abstract_name(name.as_bytes())
            .with_context(|| format!("abstract socket address {address:?}"));
    }
    if !address.starts_with('/') {
        bail!("NOTIFY_SOCKET {address:?} is neither an absolute path nor @abstract");
    }
    SocketAddr::from_pathname(address).with_context(|| format!("socket address {address:?}"))
}

/// A value ends at a newline in the protocol: keep it on one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares
/// `MONOTONIC_USEC` with.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn messages_reach_a_path_socket_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::to(path.to_str().unwrap()).unwrap();
        n.ready("serving a\nb");
        let before = monotonic_usec();
        n.reloading();
        n.stopping();
        assert_eq!(recv(&listener), "READY=1\nSTATUS=serving a b");
        let reloading = recv(&listener);
        let usec: u64 = reloading
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|r| r.split('\n').next())
            .unwrap_or_else(|| panic!("{reloading:?}"))
            .parse()
            .unwrap();
        assert!(usec >= before && usec <= monotonic_usec(), "{usec} not in [{before}, now]");
        assert!(recv(&listener).starts_with("STOPPING=1\n"));
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("wasmsnap-notify-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        listener.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::to(&format!("@{name}")).unwrap().status("starting");
        assert_eq!(recv(&listener), "STATUS=starting");
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_bad_addresses_are_refused() {
        // Default is what from_env gives without NOTIFY_SOCKET: sending is a no-op.
        Notifier::default().ready("x");
        assert!(Notifier::to("relative/path").is_err());
        assert!(Notifier::to("").is_err());
    }
}
