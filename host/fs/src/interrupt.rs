//! Cancellation of a long copy: the caller (a request whose client may go
//! away) lends the copy a flag, and the walking thread looks at it between
//! entries, so a Prepare whose client gave up stops copying a big parent
//! instead of finishing a copy nobody will use. The flag travels as a
//! thread-local (the walker runs on the caller's thread), so the copy's
//! signatures stay free of it.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::FsError;

thread_local! {
    static FLAG: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Runs `f` with `flag` as this thread's cancellation flag: a copy inside
/// stops with [`FsError::Cancelled`] once the flag is set.
pub fn watching<R>(flag: Arc<AtomicBool>, f: impl FnOnce() -> R) -> R {
    let previous = FLAG.with(|c| c.replace(Some(flag)));
    let _restore = Restore(previous);
    f()
}

struct Restore(Option<Arc<AtomicBool>>);

impl Drop for Restore {
    fn drop(&mut self) {
        FLAG.with(|c| *c.borrow_mut() = self.0.take());
    }
}

/// Cancelled if this thread's flag is set; `path` is where the copy was.
pub(crate) fn check(path: &Path) -> Result<(), FsError> {
    let set = FLAG.with(|c| c.borrow().as_ref().is_some_and(|f| f.load(Ordering::Acquire)));
    if set { Err(FsError::Cancelled { path: path.to_path_buf() }) } else { Ok(()) }
}
