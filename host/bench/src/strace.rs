//! Counting a running process's flush syscalls with `strace`: attached to
//! every thread (`-f`, so threads made later are followed too), one line
//! per call to a file, counted when strace detaches.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The syscalls that ask the kernel to make data durable (msync only with
/// MS_SYNC: MS_ASYNC flushes nothing).
pub const FLUSHES: [&str; 5] = ["fsync", "fdatasync", "syncfs", "sync_file_range", "msync"];

/// Calls per syscall name (every name of [`FLUSHES`] present, 0 if none).
pub type Counts = BTreeMap<&'static str, u64>;

/// How long strace may take to attach to every thread.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `strace` is installed.
pub fn available() -> anyhow::Result<bool> {
    match Command::new("strace").arg("-V").stdout(Stdio::null()).status() {
        Ok(status) => {
            anyhow::ensure!(status.success(), "strace -V failed with {status}");
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context("run strace -V")),
    }
}

/// strace attached to a process, writing its calls to `trace`.
pub struct Tracer {
    child: Child,
    pid: u32,
    trace: PathBuf,
    messages: PathBuf,
}

impl Tracer {
    /// Attaches to `pid` and returns once strace says it is attached (the
    /// calls made from then on are counted). `dir` holds its files.
    pub async fn attach(pid: u32, dir: &Path) -> anyhow::Result<Tracer> {
        let trace = dir.join(format!("strace-{pid}.txt"));
        let messages = dir.join(format!("strace-{pid}.err"));
        let child = Command::new("strace")
            .args(["-f", "-e", "signal=none", "-e"])
            .arg(format!("trace={}", FLUSHES.join(",")))
            .arg("-o")
            .arg(&trace)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&messages).context("strace's message file")?)
            .spawn()
            .with_context(|| format!("start strace -p {pid}"))?;
        let mut tracer = Tracer { child, pid, trace, messages };
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        // strace writes "Process N attached [with M threads]" once every thread is seized.
        while !tracer.messages().contains(" attached") {
            if let Some(status) = tracer.child.try_wait()? {
                anyhow::bail!(
                    "strace -p {pid} exited with {status} before it attached: {}",
                    tracer.messages().trim()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "strace -p {pid} did not attach within {ATTACH_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Its first syscall stops come just after the message.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(tracer)
    }

    /// Detaches (SIGINT, as ^C does) and counts the calls made while attached.
    pub async fn stop(mut self) -> anyhow::Result<Counts> {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT)
            .with_context(|| format!("stop strace -p {}", self.pid))?;
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        while self.child.try_wait()?.is_none() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "strace -p {} did not detach within {ATTACH_TIMEOUT:?}",
                self.pid
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let text = std::fs::read_to_string(&self.trace)
            .with_context(|| format!("read strace's output {}", self.trace.display()))?;
        Ok(count(&text))
    }

    fn messages(&self) -> String {
        std::fs::read_to_string(&self.messages).unwrap_or_default()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // Not stopped (an error on the way): detach anyway, never leave the server traced.
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
            let _ = self.child.wait();
        }
    }
}

/// Counts the calls in strace's `-f -o` output. A call is the line that
/// starts it, `PID name(args...`; a call interrupted by another thread's
/// ends in `<unfinished ...>` there and is resumed on a line starting with
/// `<...`, which is not counted again.
fn count(trace: &str) -> Counts {
    let mut counts: Counts = FLUSHES.iter().map(|&name| (name, 0)).collect();
    for line in trace.lines() {
        let call = line.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start();
        let Some((name, args)) = call.split_once('(') else { continue };
        let Some(&name) = FLUSHES.iter().find(|&&f| f == name) else { continue };
        if name == "msync" && !args.contains("MS_SYNC") {
            continue;
        }
        *counts.get_mut(name).expect("every flush name is counted") += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_call_once_and_msync_only_when_it_syncs() {
        let trace = "\
554   fsync(3)                          = 0
554   fdatasync(3)                      = 0
554   fsync(4 <unfinished ...>
921   fsync(3 <unfinished ...>
554   <... fsync resumed>)              = 0
921   <... fsync resumed>)              = 0
921   +++ exited with 0 +++
923   msync(0x7f0000000000, 4096, MS_ASYNC) = 0
923   msync(0x7f0000000000, 4096, MS_SYNC) = 0
923   sync_file_range(5, 0, 0, SYNC_FILE_RANGE_WRITE) = 0
";
        let counts = count(trace);
        assert_eq!(counts["fsync"], 3);
        assert_eq!(counts["fdatasync"], 1);
        assert_eq!(counts["msync"], 1);
        assert_eq!(counts["sync_file_range"], 1);
        assert_eq!(counts["syncfs"], 0);
    }
}
