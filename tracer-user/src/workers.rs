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
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver},
        Arc, Condvar, Mutex,
    },
    time::{Duration, Instant},
};

/// A pool of threads running one function over jobs. The threads start with the first job,
/// so that none exists before the daemon has dropped its privileges and switched user (a
/// user switch applies to every thread, and one that already dropped `CAP_SETUID` could not
/// follow).
pub struct Workers<J, R> {
    jobs: Arc<Queue<J>>,
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
    tx: mpsc::Sender<R>,
    f: Job<J, R>,
}

/// The jobs, taken by whichever thread is free. A mutex and a condition variable, so that a
/// job wakes exactly one waiting thread and a waiting thread holds no lock: behind a mutex
/// around a channel's receiver, each job woke the thread waiting in `recv` and then the one
/// waiting for the mutex (40 % of the sampler threads' CPU), and a spinning multi-consumer
/// channel (`crossbeam`) burnt more in `sched_yield`.
struct Queue<J> {
    state: Mutex<QueueState<J>>,
    ready: Condvar,
    capacity: usize,
}

struct QueueState<J> {
    jobs: VecDeque<J>,
    closed: bool,
}

impl<J> Queue<J> {
    /// Queues `job` and wakes one thread; gives it back when full or closed.
    fn push(&self, job: J) -> Result<(), J> {
        let Ok(mut st) = self.state.lock() else {
            return Err(job);
        };
        if st.closed || st.jobs.len() >= self.capacity {
            return Err(job);
        }
        st.jobs.push_back(job);
        drop(st);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job, waiting for one; `None` once closed.
    fn pop(&self) -> Option<J> {
        let mut st = self.state.lock().ok()?;
        loop {
            if st.closed {
                return None;
            }
            if let Some(j) = st.jobs.pop_front() {
                return Some(j);
            }
            st = self.ready.wait(st).ok()?;
        }
    }

    fn close(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.closed = true;
        }
        self.ready.notify_all();
    }
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
        let (tx, done) = mpsc::channel();
        Workers {
            jobs: Arc::new(Queue {
                state: Mutex::new(QueueState {
                    jobs: VecDeque::new(),
                    closed: false,
                }),
                ready: Condvar::new(),
                capacity: queued,
            }),
            done,
            busy: Arc::new((0..n).map(|_| AtomicU64::new(0)).collect()),
            epoch: Instant::now(),
            start: Some(Start {
                name: name.to_owned(),
                tx,
                f: Arc::new(f),
            }),
        }
    }

    fn spawn(&mut self) {
        let Some(Start { name, tx, f }) = self.start.take() else {
            return;
        };
        let epoch = self.epoch;
        for i in 0..self.busy.len() {
            let (jobs, tx, f, busy) = (self.jobs.clone(), tx.clone(), f.clone(), self.busy.clone());
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    if let Err(e) = crate::privileges::drop_after_attach(None) {
                        tracing::error!("worker thread cannot drop capabilities: {e}");
                        return;
                    }
                    // Each thread takes its next job itself: one stuck on a hung file system
                    // holds up no other.
                    while let Some(job) = jobs.pop() {
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
        self.jobs.push(job)
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

impl<J, R> Drop for Workers<J, R> {
    /// The threads end once they are done with their current job.
    fn drop(&mut self) {
        self.jobs.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool whose job 0 blocks like a hung mount until the gate is sent to (or dropped);
    /// any other job `j` answers `j * factor`.
    fn gated(threads: usize, queued: usize, factor: u32) -> (Workers<u32, u32>, mpsc::Sender<()>) {
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let gate = Mutex::new(gate_rx);
        let w = Workers::new("t", threads, queued, move |j: u32| {
            if j == 0 {
                let _ = gate.lock().unwrap().recv();
            }
            j * factor
        });
        (w, gate_tx)
    }

    #[test]
    fn a_stuck_pool_is_known_and_answers_keep_coming_from_free_threads() {
        let (mut w, gate_tx) = gated(2, 8, 1);
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

    #[test]
    fn a_full_queue_gives_the_job_back_and_every_queued_job_is_answered() {
        let (mut w, gate_tx) = gated(1, 2, 10);
        w.submit(0).unwrap();
        // The one thread takes job 0 and blocks; two more fit in the queue, a third does not.
        let until = Instant::now() + Duration::from_secs(5);
        while !w.stuck(Duration::ZERO) {
            assert!(Instant::now() < until, "the thread never took job 0");
            std::thread::sleep(Duration::from_millis(5));
        }
        w.submit(1).unwrap();
        w.submit(2).unwrap();
        assert_eq!(w.submit(3), Err(3));
        gate_tx.send(()).unwrap();
        let answers: Vec<u32> = (0..3)
            .map(|_| {
                w.recv_until(Instant::now() + Duration::from_secs(5))
                    .unwrap()
            })
            .collect();
        assert_eq!(answers, [0, 10, 20]);
        // Room again once they are taken.
        w.submit(4).unwrap();
        assert_eq!(
            w.recv_until(Instant::now() + Duration::from_secs(5)),
            Some(40)
        );
    }
}
