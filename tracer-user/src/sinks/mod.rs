//! Sinks: readers of the spool with their own committed offsets. The spool is the source of
//! truth; a sink only ever re-reads it, so a crash anywhere resumes from what is durable
//! (at-least-once; `record_id` lets consumers drop duplicates).
pub mod syslog;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// A committed offset: every record with `seq <= offset` has been delivered.
pub struct Offset {
    path: PathBuf,
    value: AtomicU64,
}

impl Offset {
    /// Loads `<data>/sinks/<name>.offset` (0 when absent).
    pub fn load(data: &Path, name: &str) -> std::io::Result<Offset> {
        let dir = data.join("sinks");
        std::fs::create_dir_all(&dir)?;
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

    /// Durably commits `seq` (tmp + fsync + rename).
    pub fn commit(&self, seq: u64) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{seq}\n"))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.value.store(seq, Ordering::Release);
        Ok(())
    }
}
