//! The ring-buffer drain: the only code on the event loop's hot path. It decodes records and
//! hands them to the processor thread without ever touching the file system, so a slow file
//! system can delay records but never make the kernel drop events.
//!
//! It drains in batches. The kernel wakes the reader at once only for a new Python process
//! (whose `/proc` entry the processor reads while the process lives) and for a CPU sample of a
//! process in its first second (whose code objects the sampler reads while the process lives;
//! at most 50 a second, `tracer_common::sampling::YOUNG_NS`); opens, mappings, forks
//! and exits are written without a wake-up and read every [`DRAIN_EVERY`] (or with the next
//! wake-up). Woken per event, the reader and the processor thread paid a context switch per
//! module file, most of the daemon's CPU. The ring (16 MiB) holds far more than the events of
//! that interval, and records are produced when a process ends, so the delay is invisible.
//!
//! The queue to the processor is bounded ([`QUEUE_BATCHES`] batches of at most [`BATCH_MAX`]
//! events). When the processor falls behind (a slow file system, a flood), the drain keeps
//! its one batch in hand and stops reading the ring: the kernel then counts what the ring
//! cannot hold (`ring_full`), and the daemon's memory stays bounded whatever users do.
use std::{
    sync::mpsc::{SyncSender, TrySendError},
    time::Duration,
};

use aya::maps::{Array, MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracer_common::user::Event;

use crate::processor::Msg;

/// How often the ring is drained without a wake-up while events come.
pub const DRAIN_EVERY: Duration = Duration::from_millis(200);
/// The longest wait between timed drains of an idle ring: each that finds nothing doubles
/// the wait from [`DRAIN_EVERY`]. A wake-up of the event loop costs it about as much as a
/// drain of a start's events, and an idle node paid five a second.
pub const DRAIN_IDLE_MAX: Duration = Duration::from_secs(1);

/// The wait before the next timed drain, after one that read `read` events with the ring's
/// reader now `blocked` (or not), and `idle` timed drains in a row found nothing before it.
pub fn next_drain(read: usize, blocked: bool, idle: &mut u32) -> Duration {
    if read > 0 || blocked {
        *idle = 0;
        return DRAIN_EVERY;
    }
    *idle = (*idle + 1).min(8);
    (DRAIN_EVERY * (1 << *idle)).min(DRAIN_IDLE_MAX)
}
/// Batches the queue to the processor holds.
pub const QUEUE_BATCHES: usize = 64;
/// Events per batch at most.
pub const BATCH_MAX: usize = 4096;

/// The ring-buffer reader's state.
#[derive(Default)]
pub struct Source {
    /// The kernel's drain epoch, advanced after every drain: each uid's share of the ring
    /// (`tracer_common::UidUse::ring_bytes`) counts from the last one.
    epoch: Option<Array<MapData, u64>>,
    drains: u64,
    /// A batch the full queue did not take yet; nothing more is read until it goes.
    held: Option<Vec<Event>>,
    /// Records that did not decode.
    pub undecodable: u64,
    /// Times the queue to the processor was found full.
    pub queue_full: u64,
}

impl Source {
    /// A reader that advances `epoch` after each drain.
    pub fn new(epoch: Array<MapData, u64>) -> Source {
        Source {
            epoch: Some(epoch),
            ..Source::default()
        }
    }

    fn advance_epoch(&mut self) {
        self.drains += 1;
        if let Some(e) = &mut self.epoch {
            if let Err(e) = e.set(0, self.drains, 0) {
                tracing::warn!("advancing the drain epoch: {e}");
            }
        }
    }

    /// Whether a batch waits for room in the queue (the ring is not read meanwhile).
    pub fn blocked(&self) -> bool {
        self.held.is_some()
    }

    /// Hands the held batch, then what is in the ring, to the processor in batches, until the
    /// ring is empty or the queue is full; returns how many records were read.
    pub fn drain(&mut self, rb: &mut RingBuf<MapData>, tx: &SyncSender<Msg>) -> usize {
        if !self.offer(tx) {
            return 0;
        }
        let mut n = 0;
        loop {
            let mut batch = Vec::new();
            while batch.len() < BATCH_MAX {
                let Some(item) = rb.next() else { break };
                if batch.capacity() == 0 {
                    // A Python start is a few hundred events: growing from empty cost a tenth
                    // of this thread. Not before an event came: most drains on the timer find
                    // none, and allocating the room (and faulting its pages in) every 200 ms
                    // was most of an idle daemon's CPU.
                    batch.reserve(512);
                }
                n += 1;
                match Event::decode(&item) {
                    Ok(Event::Exec(mut info)) => {
                        if info.from_descriptor() {
                            // Read now: by the time the processor reaches this event, a short
                            // process run from a `memfd` may be gone with its `exe`.
                            info.exe = std::fs::read_link(format!("/proc/{}/exe", info.tgid))
                                .ok()
                                .map(|p| p.into_os_string().into_encoded_bytes());
                        }
                        batch.push(Event::Exec(info));
                    }
                    Ok(ev) => batch.push(ev),
                    Err(e) => {
                        self.undecodable += 1;
                        if self.undecodable == 1 {
                            tracing::error!(
                                "undecodable ring-buffer record (further ones only counted): {e}"
                            );
                        }
                    }
                }
            }
            if batch.is_empty() {
                if n > 0 {
                    self.advance_epoch();
                }
                return n;
            }
            let full = batch.len() == BATCH_MAX;
            self.held = Some(batch);
            if !self.offer(tx) || !full {
                self.advance_epoch();
                return n;
            }
        }
    }

    /// Tries to queue the held batch; `false` while the queue is full.
    fn offer(&mut self, tx: &SyncSender<Msg>) -> bool {
        let Some(batch) = self.held.take() else {
            return true;
        };
        match tx.try_send(Msg::Events(batch)) {
            Ok(()) => true,
            Err(TrySendError::Full(Msg::Events(b))) => {
                self.queue_full += 1;
                self.held = Some(b);
                false
            }
            // The processor is gone (shutting down): nothing to hand over.
            Err(_) => true,
        }
    }

    /// Waits until the ring buffer is readable, then drains it.
    pub async fn drain_when_ready(
        &mut self,
        fd: &mut AsyncFd<RingBuf<MapData>>,
        tx: &SyncSender<Msg>,
    ) -> std::io::Result<usize> {
        let mut guard = fd.readable_mut().await?;
        let n = self.drain(guard.get_inner_mut(), tx);
        guard.clear_ready();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_ring_is_drained_less_and_less_often_and_a_busy_one_every_200_ms() {
        let mut idle = 0;
        let waits: Vec<u64> = [0, 0, 0, 0, 0, 3, 0]
            .iter()
            .map(|&n| next_drain(n, false, &mut idle).as_millis() as u64)
            .collect();
        assert_eq!(waits, [400, 800, 1000, 1000, 1000, 200, 400]);
        assert_eq!(next_drain(0, true, &mut idle), DRAIN_EVERY, "a held batch");
    }

    #[test]
    fn a_full_queue_keeps_the_batch_in_hand_and_counts() {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let mut src = Source::default();
        tx.try_send(Msg::Shutdown).unwrap();
        src.held = Some(Vec::new());
        assert!(!src.offer(&tx), "the queue is full");
        assert!(src.blocked());
        assert_eq!(src.queue_full, 1);
        assert!(matches!(rx.recv().unwrap(), Msg::Shutdown));
        assert!(src.offer(&tx), "room again: the held batch goes");
        assert!(!src.blocked());
        assert!(matches!(rx.recv().unwrap(), Msg::Events(_)));
    }
}
