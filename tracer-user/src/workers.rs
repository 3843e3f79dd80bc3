//! Threads that read users' files off the record path.
//!
//! `O_NONBLOCK` keeps a FIFO from blocking a reader, but nothing keeps a hung FUSE or NFS
//! mount from blocking one in `open` or `read`. So every read of a file a user chose (package
//! metadata, the programs and libraries checked for CPython's entry points) runs here, and the
//! processor waits for an answer only until a deadline. A thread that never comes back is
//! lost to the pool; once every thread has been busy for longer than the deadline, callers
//! stop waiting at all ([`Workers::stuck`]), so a user's hung mount costs the node one
//! deadline, not one per process.
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

/// A pool of threads running one function over jobs. The threads start with the first job,
/// so that none exists before the daemon has dropped its privileges and switched user (a
/// user switch applies to every thread, and one that already dropped `CAP_SETUID` could not
/// follow).
pub struct Workers<J, R> {
    jobs: SyncSender<J>,
    done: Receiver<R>,
    /// Per thread: when its current job started (ms since `epoch`, plus one), 0 when idle.
    busy: Arc<Vec<AtomicU64>>,
    epoch: Instant,
    /// What starting the threads needs, until they are started.
    start: Option<Start<J, R>>,
}

type Job<J, R> = Arc<dyn Fn(J) -> R + Send + Sync>;

struct Start<J, R> {
    name: String,
    rx: Arc<Mutex<Receiver<J>>>,
    tx: mpsc::Sender<R>,
    f: Job<J, R>,
}

impl<J: Send + 'static, R: Send + 'static> Workers<J, R> {
    /// `n` threads named `name-<i>` with a queue of `queued` jobs. Each thread first drops
    /// its capabilities to the daemon's kept set (capabilities are per thread).
    pub fn new(
        name: &str,
        n: usize,
        queued: usize,
        f: impl Fn(J) -> R + Send + Sync + 'static,
    ) -> Workers<J, R> {
        let (jobs, rx) = mpsc::sync_channel::<J>(queued);
        let (tx, done) = mpsc::channel();
        Workers {
            jobs,
            done,
            busy: Arc::new((0..n).map(|_| AtomicU64::new(0)).collect()),
            epoch: Instant::now(),
            start: Some(Start {
                name: name.to_owned(),
                rx: Arc::new(Mutex::new(rx)),
                tx,
                f: Arc::new(f),
            }),
        }
    }

    fn spawn(&mut self) {
        let Some(Start { name, rx, tx, f }) = self.start.take() else {
            return;
        };
        let epoch = self.epoch;
        for i in 0..self.busy.len() {
            let (rx, tx, f, busy) = (rx.clone(), tx.clone(), f.clone(), self.busy.clone());
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    if let Err(e) = crate::privileges::drop_after_attach(None) {
                        tracing::error!("worker thread cannot drop capabilities: {e}");
                        return;
                    }
                    loop {
                        // The lock is held while waiting for a job, never while working: a
                        // thread stuck on a hung file system must not hold up the others.
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        busy[i].store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
                        let r = f(job);
                        busy[i].store(0, Ordering::Relaxed);
                        if tx.send(r).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawning a worker thread");
        }
    }

    /// Queues a job; gives it back when the queue is full.
    pub fn submit(&mut self, job: J) -> Result<(), J> {
        self.spawn();
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
        })
    }

    /// Whether every thread has been on its job for longer than `deadline`: a new job would
    /// wait for one of them to come back, so callers should not wait for it.
    pub fn stuck(&self, deadline: Duration) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let limit = deadline.as_millis() as u64;
        self.busy.iter().all(|b| {
            let since = b.load(Ordering::Relaxed);
            since != 0 && now.saturating_sub(since) > limit
        })
    }

    /// The next answer, waiting until `until` at most.
    pub fn recv_until(&self, until: Instant) -> Option<R> {
        self.done
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .ok()
    }

    /// An answer already there, if any.
    pub fn try_recv(&self) -> Option<R> {
        self.done.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_pool_is_known_and_answers_keep_coming_from_free_threads() {
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let gate = Mutex::new(gate_rx);
        let mut w = Workers::new("t", 2, 8, move |j: u32| {
            if j == 0 {
                // Blocks like a hung mount until the test ends.
                let _ = gate.lock().unwrap().recv();
            }
            j
        });
        w.submit(0).unwrap();
        w.submit(7).unwrap();
        assert_eq!(
            w.recv_until(Instant::now() + Duration::from_secs(5)),
            Some(7)
        );
        assert!(!w.stuck(Duration::from_millis(10)), "one thread is free");
        w.submit(0).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(w.stuck(Duration::from_millis(20)));
        assert_eq!(
            w.recv_until(Instant::now() + Duration::from_millis(20)),
            None
        );
        drop(gate_tx);
    }
}
