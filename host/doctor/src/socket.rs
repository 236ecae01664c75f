//! The daemon's socket: there, answering, and not open to everyone.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::Report;

pub fn check(address: &Path, report: &mut Report) {
    let meta = match std::fs::metadata(address) {
        Ok(m) => m,
        Err(e) => {
            report.fail(
                "socket.reachable",
                format!("{}: {e}", address.display()),
                "start wasmsnap (systemctl start wasmsnap), or pass --address / --config naming its socket",
            );
            return;
        }
    };
    if !meta.file_type().is_socket() {
        report.fail(
            "socket.reachable",
            format!("{} is not a socket", address.display()),
            "remove it and restart wasmsnap, or point `address` elsewhere",
        );
        return;
    }
    match std::os::unix::net::UnixStream::connect(address) {
        Ok(_) => report.ok("socket.reachable", format!("{} accepts connections", address.display())),
        Err(e) => report.fail(
            "socket.reachable",
            format!("{}: connect: {e}", address.display()),
            "a stale socket: is wasmsnap running? (systemctl status wasmsnap; journalctl -u wasmsnap)",
        ),
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o007 != 0 {
        report.fail(
            "socket.permissions",
            format!(
                "mode {mode:04o}: every user on the node can create and mount snapshots as root"
            ),
            format!(
                "chmod 0660 {} (wasmsnap sets 0660 itself: something changed it)",
                address.display()
            ),
        );
    } else if meta.uid() != 0 {
        report.warn(
            "socket.permissions",
            format!("mode {mode:04o}, owned by uid {} (not root)", meta.uid()),
            "run wasmsnap as root, as containerd is",
        );
    } else {
        report.ok("socket.permissions", format!("mode {mode:04o}, owned by root"));
    }
}
