//! The ring-buffer drain: the only code on the event loop's hot path. It decodes records and
//! hands them to the processor thread without ever touching the file system, so a slow file
//! system can delay records but never make the kernel drop events.
//!
//! It drains in batches: once woken it waits [`BATCH_DELAY`] before reading. The kernel wakes
//! the reader only when a record lands in an empty ring, so a reader that drained at once would
//! be woken (and would wake the processor thread) for nearly every one of the ~400 events of a
//! Python start; a few milliseconds of delay turn that into one wake-up and one channel message
//! per batch. The ring (16 MiB) holds far more than the events of that delay, and records are
//! only produced when a process ends, so the delay costs no latency anyone sees.
use std::{sync::mpsc::Sender, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracer_common::user::Event;

use crate::daemon::Msg;

/// How long the drain waits after a wake-up before reading, to take events in batches.
pub const BATCH_DELAY: Duration = Duration::from_millis(200);

/// Drains everything currently in the ring buffer as one batch; returns how many records were
/// read.
pub fn drain(rb: &mut RingBuf<MapData>, tx: &Sender<Msg>, bad: &mut u64) -> usize {
    let mut n = 0;
    let mut batch = Vec::new();
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
    tokio::time::sleep(BATCH_DELAY).await;
    let n = drain(guard.get_inner_mut(), tx, bad);
    guard.clear_ready();
    Ok(n)
}
