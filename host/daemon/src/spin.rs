//! A short spin before the reactor thread sleeps.
//!
//! On a VM, waking a sleeping thread costs far more than the work of a
//! Stat: the wake-up goes through the hypervisor (an inter-processor
//! interrupt, a vCPU halted and resumed). A client of containerd's API
//! sends its next request, or a write finishes on another thread, a few
//! tens of microseconds after our reply; a reactor that is still awake
//! then picks it up without either side paying for a wake-up. So before
//! the reactor sleeps in `epoll_wait`, it polls its epoll descriptor for
//! up to [`SPIN`], yielding the CPU between polls (a client on the same
//! CPU still runs), and stops as soon as anything is ready. Go's scheduler,
//! which serves containerd's own snapshotters, spins the same way.
//!
//! While a write it handed off (`hot_worker`) runs, the reactor spins on,
//! up to [`SPIN_FOR_JOBS`] after the hand-off, so the write's reply wakes
//! nobody either.
//!
//! The cost is bounded: at most [`SPIN`] of CPU each time the daemon goes
//! idle and [`SPIN_FOR_JOBS`] per write, none while it sleeps.
//! Measurements: `docs/performance.md`.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// How long the reactor looks for more work before it sleeps: a local
/// gRPC client's next request, or a write another thread finishes on a
/// file system where a flush costs little (tmpfs: 200 to 400 µs), comes
/// within it. Measured against 50 µs: writes on tmpfs 10 to 35 % faster,
/// the same on disks.
pub const SPIN: Duration = Duration::from_micros(200);

/// The epoll descriptors this process has open now.
pub fn epoll_fds() -> Vec<RawFd> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            (target.as_os_str() == "anon_inode:[eventpoll]")
                .then(|| e.file_name().to_str()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// The epoll descriptors in `after` but not in `before`: the runtime's,
/// when taken around its build (tokio opens two, its driver's and one
/// nested in it).
pub fn new_epoll_fds(before: &[RawFd], after: &[RawFd]) -> Vec<RawFd> {
    after.iter().copied().filter(|fd| !before.contains(fd)).collect()
}

/// How long after handing a job off (`hot_worker`) the reactor keeps
/// spinning while the job runs: its reply then wakes nobody. A Prepare or
/// Commit takes 0.3 to 2 ms; a longer job lets the reactor sleep, so a slow
/// policy or copy costs at most this much spinning per request.
pub const SPIN_FOR_JOBS: Duration = Duration::from_millis(2);

/// The reactor's spin before it sleeps: [`SPIN`], and on while a job
/// handed off less than [`SPIN_FOR_JOBS`] ago still runs.
pub fn reactor(epolls: &[RawFd]) {
    until_ready(epolls, |spun| spun < SPIN || crate::hot_worker::job_due_within(SPIN_FOR_JOBS));
}

/// Polls `epolls` (without blocking) until one has an event or
/// `keep_spinning(time spun so far)` says stop, yielding the CPU between
/// polls.
pub fn until_ready(epolls: &[RawFd], mut keep_spinning: impl FnMut(Duration) -> bool) {
    let started = Instant::now();
    let mut polls: Vec<libc::pollfd> =
        epolls.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    while keep_spinning(started.elapsed()) {
        // SAFETY: `polls` is a valid array of its length; a zero timeout.
        if unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 0) } != 0 {
            return;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_epoll_descriptors_a_runtime_opens() {
        let before = epoll_fds();
        let _runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let fds = new_epoll_fds(&before, &epoll_fds());
        assert!(!fds.is_empty(), "the runtime's epoll fds");
        // Nothing is ready on a runtime doing nothing: the spin runs its budget.
        let started = Instant::now();
        until_ready(&fds, |spun| spun < Duration::from_millis(5));
        assert!(started.elapsed() >= Duration::from_millis(5), "{:?}", started.elapsed());
    }

    #[test]
    fn stops_as_soon_as_the_epoll_has_an_event() {
        // SAFETY: plain syscalls on descriptors made and closed here.
        unsafe {
            let epoll = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            let event = libc::eventfd(0, libc::EFD_CLOEXEC);
            assert!(epoll >= 0 && event >= 0);
            let mut interest = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 0 };
            assert_eq!(libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, event, &mut interest), 0);
            assert_eq!(libc::write(event, 1u64.to_ne_bytes().as_ptr().cast(), 8), 8);
            let started = Instant::now();
            until_ready(&[epoll], |spun| spun < Duration::from_secs(10));
            let took = started.elapsed();
            libc::close(event);
            libc::close(epoll);
            assert!(took < Duration::from_secs(5), "spun for {took:?} with an event ready");
        }
    }
}
