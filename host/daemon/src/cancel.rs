//! Cancellation of a request whose client gave up (a deadline, a dropped
//! call): the wire layer marks the request cancelled when tonic drops its
//! handler, and an operation that changes state checks the mark right
//! before its transaction commits, so a request cancelled before that point
//! leaves nothing behind (its directory removed, its record never written).
//! One cancelled after it still completes: the client cannot tell the two
//! apart, as with any lost reply, and containerd's GC removes what it does
//! not know.
//!
//! The mark travels to the blocking operation as a thread-local, so the
//! core's signatures stay free of it.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

thread_local! {
    static CURRENT: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Set when the request it belongs to is cancelled.
#[derive(Clone, Default)]
pub struct Token(Arc<AtomicBool>);

impl Token {
    /// Runs `f` with this token as the current thread's.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let previous = CURRENT.with(|c| c.replace(Some(self.0.clone())));
        let _restore = Restore(previous);
        f()
    }

    #[cfg(test)]
    fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// A guard that cancels the token when dropped, unless disarmed: held
    /// by the request's future, which tonic drops when the client goes.
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop { token: Some(self.clone()) }
    }
}

struct Restore(Option<Arc<AtomicBool>>);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = self.0.take());
    }
}

pub struct CancelOnDrop {
    token: Option<Token>,
}

impl CancelOnDrop {
    /// The request completed: dropping the guard no longer cancels.
    pub fn disarm(mut self) {
        self.token = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = &self.token {
            token.0.store(true, Ordering::Release);
        }
    }
}

/// Cancelled if the current request was: call it right before committing.
/// Outside a request (no token) it never fails.
pub fn check(op: &str, key: &str) -> Result<()> {
    let cancelled =
        CURRENT.with(|c| c.borrow().as_ref().is_some_and(|t| t.load(Ordering::Acquire)));
    if cancelled {
        tracing::info!(
            op,
            key,
            "the client cancelled the request before it committed: rolled back"
        );
        return Err(Error::Cancelled(format!(
            "{op} of {key:?}: the client cancelled the request; nothing was changed"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_fails_only_inside_a_cancelled_token() {
        check("prepare", "k").unwrap();
        let token = Token::default();
        let guard = token.cancel_on_drop();
        token.run(|| check("prepare", "k")).unwrap();
        drop(guard);
        assert!(token.is_cancelled());
        let err = token.run(|| check("prepare", "k")).unwrap_err();
        assert!(matches!(&err, Error::Cancelled(m) if m.contains("prepare of \"k\"")), "{err}");
        check("prepare", "k").unwrap();
    }

    #[test]
    fn a_disarmed_guard_does_not_cancel() {
        let token = Token::default();
        token.cancel_on_drop().disarm();
        assert!(!token.is_cancelled());
    }
}
