//! Sinks: readers of the spool with their own committed offsets. The spool is the source of
//! truth; a sink only ever re-reads it, so a crash anywhere resumes from what is durable
//! (at-least-once; `record_id` lets consumers drop duplicates).
//!
//! A sink is a folder (`config.rs` for its settings, `sink.rs` for delivery, more files for
//! its own stages) that implements [`Sink`]; the daemon runs each on a thread of its own and
//! retires a spool segment once every sink's offset has passed it (the Parquet dataset is
//! written from closed segments before that, by the processor). A new output plugs in as a
//! new folder here and one line where `daemon.rs` builds the sinks.
pub mod syslog;

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use pyusage_record::atomic::{write_bytes_atomic, Durability, PathError};
use serde::{Deserialize, Serialize};

/// An output fed from the spool.
pub trait Sink: Send + 'static {
    /// Its name: the key of its status in `status.json` and of its offset file.
    fn name(&self) -> &'static str;
    /// Its committed offset, read by the processor for retention.
    fn offset(&self) -> Arc<Offset>;
    /// Its status, shared with `status.json`.
    fn status(&self) -> Arc<Mutex<SinkStatus>>;
    /// Delivers until told to stop (each sink is given its stop flag when built); then keeps
    /// delivering what is spooled for at most `drain`.
    fn run(self: Box<Self>, drain: Duration);
}

/// What the processor keeps of a running sink: enough for retention and status.
#[derive(Clone)]
pub struct SinkHandle {
    /// [`Sink::name`].
    pub name: &'static str,
    /// [`Sink::offset`].
    pub offset: Arc<Offset>,
    /// [`Sink::status`].
    pub status: Arc<Mutex<SinkStatus>>,
}

impl SinkHandle {
    /// The handle of `sink`.
    pub fn of(sink: &dyn Sink) -> SinkHandle {
        SinkHandle {
            name: sink.name(),
            offset: sink.offset(),
            status: sink.status(),
        }
    }
}

/// The offset below which every sink has delivered: what the spool may retire.
pub fn delivered_by_all(sinks: &[SinkHandle]) -> u64 {
    sinks
        .iter()
        .map(|s| s.offset.get())
        .min()
        .unwrap_or(u64::MAX)
}

/// What `status.json` shows of a sink.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SinkStatus {
    /// The configured target.
    pub target: String,
    /// Every record up to this `seq` is delivered.
    pub delivered_seq: u64,
    /// Wall-clock µs of the last successful commit.
    pub last_delivery: Option<i64>,
    /// Connected now.
    pub connected: bool,
    /// Send/connect errors since start.
    pub errors: u64,
    /// The current error condition, if any.
    pub last_error: Option<String>,
    /// Times the rate limit deferred a message.
    pub deferred: u64,
    /// Records retired from the spool before delivery (spool bound reached).
    pub dropped: u64,
}

/// A committed offset: every record with `seq <= offset` has been delivered.
pub struct Offset {
    path: PathBuf,
    value: AtomicU64,
}

impl Offset {
    /// Loads `<data>/sinks/<name>.offset` (0 when absent).
    pub fn load(data: &Path, name: &str) -> Result<Offset, PathError> {
        let dir = data.join("sinks");
        std::fs::create_dir_all(&dir).map_err(PathError::at(&dir))?;
        let path = dir.join(format!("{name}.offset"));
        let value = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Ok(Offset {
            path,
            value: AtomicU64::new(value),
        })
    }

    /// The committed value.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }

    /// Durably commits `seq`.
    pub fn commit(&self, seq: u64) -> Result<(), PathError> {
        write_bytes_atomic(
            &self.path,
            format!("{seq}\n").as_bytes(),
            Durability::Durable,
        )?;
        self.value.store(seq, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_survive_a_restart_and_retention_waits_for_the_slowest_sink() {
        let d = tempfile::tempdir().unwrap();
        let a = Offset::load(d.path(), "a").unwrap();
        a.commit(42).unwrap();
        assert_eq!(Offset::load(d.path(), "a").unwrap().get(), 42);
        let handle = |name, v: u64| {
            let o = Offset::load(d.path(), name).unwrap();
            if v > 0 {
                o.commit(v).unwrap();
            }
            SinkHandle {
                name,
                offset: Arc::new(o),
                status: Default::default(),
            }
        };
        let sinks = [handle("fast", 90), handle("slow", 7)];
        assert_eq!(delivered_by_all(&sinks), 7);
        assert_eq!(
            delivered_by_all(&[]),
            u64::MAX,
            "no sink: the dataset is enough"
        );
    }
}
