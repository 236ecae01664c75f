//! Running the external tools of the end-to-end test (ctr, containerd's
//! helpers) with a deadline, capturing what they print and how long they took.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// The command line, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Run `cmd` to completion, or kill it after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let line = describe(cmd);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{line}`: {e}"))?;
    let pid = child.id() as i32;
    let stdout = reader(child.stdout.take().expect("piped stdout"));
    let stderr = reader(child.stderr.take().expect("piped stderr"));
    // A waiter thread owns the child so the elapsed time is exact; on timeout
    // we kill it by pid (still ours: it is not reaped until the waiter's wait returns).
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send((status, Instant::now()));
    });
    match rx.recv_timeout(timeout) {
        Ok((status, end)) => {
            let status = status.map_err(|e| format!("wait for `{line}`: {e}"))?;
            Ok(Output {
                status,
                stdout: collect(stdout),
                stderr: collect(stderr),
                elapsed: end - start,
            })
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = rx.recv_timeout(Duration::from_secs(10));
            Err(format!(
                "`{line}` did not finish within {timeout:?}; killed it.\nstdout:\n{}\nstderr:\n{}",
                collect(stdout),
                collect(stderr)
            ))
        }
    }
}

/// Run `cmd` and insist on success; the error names the command and shows its output.
pub fn ok(cmd: &mut Command, timeout: Duration) -> Output {
    let line = describe(cmd);
    match run(cmd, timeout) {
        Ok(out) if out.status.success() => out,
        Ok(out) => panic!(
            "`{line}` failed ({}).\nstdout:\n{}\nstderr:\n{}",
            out.status, out.stdout, out.stderr
        ),
        Err(e) => panic!("{e}"),
    }
}

fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn collect(h: std::thread::JoinHandle<String>) -> String {
    h.join().unwrap_or_default()
}
