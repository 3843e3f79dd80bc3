//! The ring-buffer drain: the only code on the event loop's hot path. It decodes records and
//! hands them to the processor thread without ever touching the file system, so a slow file
//! system can delay records but never make the kernel drop events.
use std::sync::mpsc::Sender;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracer_common::user::Event;

use crate::daemon::Msg;

/// Drains everything currently in the ring buffer; returns how many records were read.
pub fn drain(rb: &mut RingBuf<MapData>, tx: &Sender<Msg>, bad: &mut u64) -> usize {
    let mut n = 0;
    while let Some(item) = rb.next() {
        n += 1;
        match Event::decode(&item) {
            Ok(ev) => {
                if tx.send(Msg::Event(ev)).is_err() {
                    return n;
                }
            }
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
