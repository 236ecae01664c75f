//! Catching the panic of a quick policy call, without printing it.
//!
//! A quick call runs on the daemon's reactor thread, inside its tokio
//! runtime. wasmtime-wasi's sync bindings run many WASI calls (writing to
//! stderr, opening a file, waiting on a stream) through tokio's `block_on`,
//! which panics there: "Cannot start a runtime from within a runtime". The
//! panic unwinds out of the guest (wasmtime resumes it past the wasm
//! frames) and is caught here: not a bug to print as one, but the sign
//! that this policy's calls belong off the reactor. The caller says so in
//! its own log line.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Set while this thread runs a closure under [`catch`].
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`; its panic, if any, as an error (the panic's message), and not
/// printed by the panic hook. Other threads' panics print as before.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let print = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.get() {
                print(info);
            }
        }));
    });
    let was = QUIET.replace(true);
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.set(was);
    outcome.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_comes_back_as_its_message_and_the_next_call_runs() {
        assert_eq!(catch(|| 7), Ok(7));
        assert_eq!(catch(|| -> u8 { panic!("no runtime here") }), Err("no runtime here".into()));
        let n = 3;
        assert_eq!(catch(|| -> u8 { panic!("{n} runtimes") }), Err("3 runtimes".into()));
        assert!(!QUIET.get(), "the thread prints panics again");
    }
}
