//! The ring-buffer drain: the only code on the event loop's hot path. It decodes records and
//! hands them to the processor thread without ever touching the file system, so a slow file
//! system can delay records but never make the kernel drop events.
//!
//! It drains in batches. The kernel wakes the reader at once only for a new Python process
//! (whose `/proc` entry the processor reads while the process lives); opens, mappings, forks
//! and exits are written without a wake-up and read every [`DRAIN_EVERY`] (or with the next
//! wake-up). Woken per event, the reader and the processor thread paid a context switch per
//! module file, most of the daemon's CPU. The ring (16 MiB) holds far more than the events of
//! that interval, and records are produced when a process ends, so the delay is invisible.
use std::{sync::mpsc::Sender, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracer_common::user::Event;

use crate::daemon::Msg;

/// How often the ring is drained without a wake-up.
pub const DRAIN_EVERY: Duration = Duration::from_millis(200);

/// Drains everything currently in the ring buffer as one batch; returns how many records were
/// read.
pub fn drain(rb: &mut RingBuf<MapData>, tx: &Sender<Msg>, bad: &mut u64) -> usize {
    let mut n = 0;
    // A Python start is a few hundred events: growing from empty cost a tenth of this thread.
    let mut batch = Vec::with_capacity(512);
    while let Some(item) = rb.next() {
        n += 1;
        match Event::decode(&item) {
            Ok(ev) => batch.push(ev),
            Err(e) => {
                *bad += 1;
                if *bad == 1 {
                    tracing::error!(
                        "undecodable ring-buffer record (further ones only counted): {e}"
                    );
                }
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Msg::Events(batch));
    }
    n
}

/// Waits until the ring buffer is readable, then drains it.
pub async fn drain_when_ready(
    fd: &mut AsyncFd<RingBuf<MapData>>,
    tx: &Sender<Msg>,
    bad: &mut u64,
) -> std::io::Result<usize> {
    let mut guard = fd.readable_mut().await?;
    let n = drain(guard.get_inner_mut(), tx, bad);
    guard.clear_ready();
    Ok(n)
}
