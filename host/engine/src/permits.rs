//! Turns for a policy's calls: at most `max_calls` run at once, each in its
//! own instance, so N concurrent requests hold at most `max_calls`
//! instances (and their memory), never N. A call waits for a turn at most
//! [`WAIT`]; calls are bounded by their deadline, so a turn comes soon
//! unless the policy is flooded, and then the request fails Unavailable
//! rather than piling up blocked threads.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest wait for a turn.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Permits {
    max: usize,
    busy: Mutex<usize>,
    freed: Condvar,
}

/// A turn; given back when dropped.
pub(crate) struct Permit<'a>(&'a Permits);

impl Permits {
    pub(crate) fn new(max: usize) -> Permits {
        Permits { max: max.max(1), busy: Mutex::new(0), freed: Condvar::new() }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// A turn, or `None` after waiting `wait` for one.
    pub(crate) fn acquire(&self, wait: Duration) -> Option<Permit<'_>> {
        let deadline = Instant::now() + wait;
        let mut busy = self.lock();
        while *busy >= self.max {
            let left = deadline.checked_duration_since(Instant::now())?;
            busy = self.freed.wait_timeout(busy, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        *busy += 1;
        Some(Permit(self))
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        // A counter: a panic elsewhere cannot leave it half-written.
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.lock() -= 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_at_once_and_a_bounded_wait() {
        let permits = Permits::new(2);
        let a = permits.acquire(WAIT).unwrap();
        let _b = permits.acquire(WAIT).unwrap();
        let started = Instant::now();
        assert!(permits.acquire(Duration::from_millis(50)).is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(a);
        assert!(permits.acquire(Duration::ZERO).is_some());
    }

    #[test]
    fn a_waiter_gets_the_turn_given_back() {
        let permits = Permits::new(1);
        let held = permits.acquire(WAIT).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| permits.acquire(Duration::from_secs(5)).is_some());
            std::thread::sleep(Duration::from_millis(20));
            drop(held);
            assert!(waiter.join().unwrap());
        });
    }
}
