//! The guest's stdout and stderr, captured per call: what a policy prints
//! (a panic message, its own logs) goes into the error of a failed call or
//! into the host's log. Bounded: only the last bytes are kept (a panic
//! message comes last), the rest is dropped and counted, never a trap, so a
//! chatty policy cannot fail because of its output. What is taken is
//! escaped and capped (`wasmsnap_plan::untrusted_tail`): it goes into error
//! messages and log lines.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept of one call's output: more than is shown (the last
/// `MAX_POLICY_TEXT` bytes once escaped), so blank lines and std's
/// backtrace hint can be dropped from what is kept.
const KEPT: usize = 4 << 10;

/// A shared capture buffer; stdout and stderr write to the same one.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Buffer>>);

#[derive(Default)]
struct Buffer {
    kept: Vec<u8>,
    dropped: usize,
}

impl Capture {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A plain byte buffer: a panic while holding it breaks nothing.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, bytes: &[u8]) {
        let mut buf = self.lock();
        let bytes = if bytes.len() > KEPT {
            buf.dropped += bytes.len() - KEPT;
            &bytes[bytes.len() - KEPT..]
        } else {
            bytes
        };
        let excess = (buf.kept.len() + bytes.len()).saturating_sub(KEPT);
        buf.kept.drain(..excess);
        buf.dropped += excess;
        buf.kept.extend_from_slice(bytes);
    }

    /// Whether anything was written since the last [`take`](Self::take).
    pub(crate) fn is_empty(&self) -> bool {
        let buf = self.lock();
        buf.kept.is_empty() && buf.dropped == 0
    }

    /// The output since the last call, as one line of text (lines joined
    /// by ` | `), escaped and capped, and clear it.
    pub(crate) fn take(&self) -> String {
        let mut buf = self.lock();
        if buf.kept.is_empty() && buf.dropped == 0 {
            return String::new();
        }
        let mut text = String::new();
        if buf.dropped > 0 {
            text.push_str(&format!("[... {} earlier bytes dropped] ", buf.dropped));
        }
        // One line, for logs and error messages; std's hint about
        // RUST_BACKTRACE means nothing to the operator.
        let kept = String::from_utf8_lossy(&buf.kept);
        let lines = kept
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"));
        for (i, line) in lines.enumerate() {
            if i > 0 {
                text.push_str(" | ");
            }
            text.push_str(line);
        }
        buf.kept.clear();
        buf.dropped = 0;
        wasmsnap_plan::untrusted_tail(&text)
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready: excess output is dropped, not refused.
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes_and_counts_the_rest() {
        let c = Capture::default();
        assert!(c.is_empty());
        c.append(b"\nthread 'x' panicked at src/lib.rs:1:2:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable\n");
        assert_eq!(c.take(), "thread 'x' panicked at src/lib.rs:1:2: | boom");
        assert!(c.is_empty());
        c.append(&vec![b'x'; KEPT + 10]);
        c.append(b"the end");
        let text = c.take();
        let shown = "[... 17 earlier bytes dropped] ".len() + KEPT;
        let cut = format!("(truncated, {shown} bytes) ...xxx");
        assert!(text.starts_with(&cut), "{}", &text[..40]);
        assert!(text.ends_with("xxxthe end"));
        assert_eq!(text.len(), cut.len() - 3 + wasmsnap_plan::MAX_POLICY_TEXT);
        assert_eq!(c.take(), "");
    }

    #[test]
    fn control_characters_are_escaped() {
        let c = Capture::default();
        c.append(b"\x1b[2J\x1b[31mred\rlevel=ERROR forged\n");
        assert_eq!(c.take(), "\\u{1b}[2J\\u{1b}[31mred\\rlevel=ERROR forged");
    }
}
