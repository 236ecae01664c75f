//! The hot worker: one thread that runs jobs handed off the reactor and
//! stays awake for a moment between them.
//!
//! A Prepare, View or Commit does not run on the reactor (it calls an
//! untrusted policy and may walk or copy a tree; only where a flush costs
//! nothing is it tried there first, see `wire::server`), so it goes to
//! another thread and its reply comes back. On a VM, waking a sleeping thread
//! costs tens of µs (an inter-processor interrupt through the hypervisor),
//! and tokio's blocking pool parks its idle threads at once, so every write
//! paid for two wake-ups. containerd's client sends an unpack's next
//! request within about a hundred µs of a reply, so this thread, after each
//! job, polls for the next one for up to [`HOT_SPIN`] (yielding the CPU
//! between polls) before it sleeps; the reactor likewise keeps spinning
//! for a while after it hands a job off (`spin`), so the reply wakes
//! nobody. A job that finds the hot worker busy goes to tokio's blocking
//! pool as before: concurrent writers still run in parallel and share
//! their flushes. Measured: `docs/performance.md`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long the hot worker polls for its next job before it sleeps: the
/// time a local client takes to read a reply and send its next request.
pub const HOT_SPIN: Duration = Duration::from_micros(300);

type Job = Box<dyn FnOnce() + Send>;

pub struct HotWorker {
    jobs: Sender<Job>,
    /// Set while the thread waits for a job (spinning or asleep); taken by
    /// whoever hands it one.
    idle: Arc<AtomicBool>,
}

/// Jobs handed off the reactor and not yet finished, here or on the
/// blocking pool, and when the newest was handed off (ns since [`epoch`]).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static NEWEST_HANDOFF: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Whether a job handed off the reactor less than `window` ago is still
/// running: its reply is due soon, and the reactor spins for it.
pub fn job_due_within(window: Duration) -> bool {
    IN_FLIGHT.load(Ordering::Acquire) > 0
        && since_epoch().saturating_sub(NEWEST_HANDOFF.load(Ordering::Acquire))
            < u64::try_from(window.as_nanos()).unwrap_or(u64::MAX)
}

/// Counts a job in flight from hand-off to its end: dropped by the job's
/// thread when the job returns or unwinds.
struct InFlight;

impl InFlight {
    fn enter() -> InFlight {
        NEWEST_HANDOFF.store(since_epoch(), Ordering::Release);
        IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The daemon's hot worker, started at first use.
pub fn global() -> &'static HotWorker {
    static WORKER: OnceLock<HotWorker> = OnceLock::new();
    WORKER.get_or_init(HotWorker::start)
}

impl HotWorker {
    /// Starts the thread; if it cannot be started, every job goes to the
    /// blocking pool.
    pub fn start() -> HotWorker {
        let (jobs, queue) = channel::<Job>();
        let idle = Arc::new(AtomicBool::new(false));
        let started =
            std::thread::Builder::new().name("wasmsnap-hot".into()).spawn(move || serve(&queue));
        idle.store(started.is_ok(), Ordering::Release);
        HotWorker { jobs, idle }
    }

    /// Runs `f` off the reactor: on this thread when it is idle, else on
    /// tokio's blocking pool. An error, not a panic, if `f` panicked: the
    /// thread lives on.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let in_flight = InFlight::enter();
        if self.idle.swap(false, Ordering::AcqRel) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let idle = self.idle.clone();
            let job: Job = Box::new(move || {
                let result = catch_unwind(AssertUnwindSafe(f));
                drop(in_flight);
                // Idle again before the reply goes out, so the client's
                // next request finds this thread free.
                idle.store(true, Ordering::Release);
                let _ = tx.send(result);
            });
            if self.jobs.send(job).is_err() {
                return Err("the hot worker thread is gone".into());
            }
            return match rx.await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(_)) => Err("the operation panicked".into()),
                Err(_) => Err("the hot worker dropped the operation".into()),
            };
        }
        tokio::task::spawn_blocking(move || {
            let _in_flight = in_flight;
            f()
        })
        .await
        .map_err(|e| e.to_string())
    }
}

/// Runs jobs until the worker is dropped; each job marks the thread idle
/// itself before it replies.
fn serve(queue: &Receiver<Job>) {
    while let Some(job) = next(queue) {
        job();
    }
}

/// The next job: polled for [`HOT_SPIN`], then waited for. `None` once the
/// worker is dropped.
fn next(queue: &Receiver<Job>) -> Option<Job> {
    let started = Instant::now();
    while started.elapsed() < HOT_SPIN {
        match queue.try_recv() {
            Ok(job) => return Some(job),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    queue.recv().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_string()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn runs_on_the_hot_thread_and_falls_back_to_the_pool_when_busy() {
        let worker = Arc::new(HotWorker::start());
        assert_eq!(worker.run(thread_name).await.unwrap(), "wasmsnap-hot");

        // While the hot thread holds a job, the next one goes to the pool.
        let gate = Arc::new(Barrier::new(2));
        let held = {
            let (worker, gate) = (worker.clone(), gate.clone());
            tokio::spawn(async move {
                worker
                    .run(move || {
                        gate.wait();
                        thread_name()
                    })
                    .await
            })
        };
        // Let the spawned task hand its job to the hot thread first.
        while worker.idle.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        let elsewhere = worker.run(thread_name).await.unwrap();
        assert_ne!(elsewhere, "wasmsnap-hot", "a busy hot worker must not queue the job");
        gate.wait();
        assert_eq!(held.await.unwrap().unwrap(), "wasmsnap-hot");

        // A panic is an error, and the thread serves the next job.
        let panicked = worker.run(|| -> u32 { panic!("a job that panics") }).await;
        assert!(panicked.unwrap_err().contains("panicked"));
        while !worker.idle.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        assert_eq!(worker.run(thread_name).await.unwrap(), "wasmsnap-hot");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_running_job_keeps_the_reactor_spinning_until_it_ends() {
        let worker = HotWorker::start();
        let (started, finish) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let job = {
            let (started, finish) = (started.clone(), finish.clone());
            worker.run(move || {
                started.wait();
                finish.wait();
            })
        };
        let check = async {
            tokio::task::spawn_blocking(move || {
                started.wait();
                let due = job_due_within(Duration::from_secs(60));
                let stale = job_due_within(Duration::ZERO);
                finish.wait();
                (due, stale)
            })
            .await
            .unwrap()
        };
        let ((due, stale), ran) = tokio::join!(check, job);
        ran.unwrap();
        assert!(due, "a job handed off just now and still running is due");
        assert!(!stale, "a job older than the window is not waited for");
    }
}
