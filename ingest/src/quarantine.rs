//! Malformed messages, kept: one JSON line each in `DATASET/_quarantine.jsonl` with the time,
//! the reason and the message (lossy UTF-8, control characters escaped by JSON). Written as
//! soon as the message is judged and synced with its transaction's commit, so a message is
//! never dropped unseen; a transaction that fails and is resent lists its malformed messages
//! twice (the count in `stats.json` counts committed transactions only).
use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use pyusage_record::atomic::PathError;

/// The quarantine file.
pub struct Quarantine {
    path: PathBuf,
    file: Option<File>,
    dirty: bool,
}

impl Quarantine {
    /// The file at `path` (created on first use).
    pub fn new(path: &Path) -> Quarantine {
        Quarantine {
            path: path.to_path_buf(),
            file: None,
            dirty: false,
        }
    }

    /// One line for `message`, rejected for `reason`, appended to `buf`.
    pub fn line(buf: &mut Vec<u8>, message: &[u8], reason: &str) {
        let v = serde_json::json!({
            "received": pyusage_record::format_micros(chrono::Utc::now().timestamp_micros()),
            "reason": reason,
            "message": String::from_utf8_lossy(message.strip_suffix(b"\n").unwrap_or(message)),
        });
        serde_json::to_writer(&mut *buf, &v).expect("writes to a Vec");
        buf.push(b'\n');
    }

    /// Appends lines made by [`Quarantine::line`] (not synced).
    pub fn append(&mut self, lines: &[u8]) -> Result<(), PathError> {
        if lines.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(PathError::at(&self.path))?;
            self.file = Some(f);
        }
        self.dirty = true;
        let f = self.file.as_mut().expect("opened");
        f.write_all(lines).map_err(PathError::at(&self.path))
    }

    /// Makes what was appended durable.
    pub fn sync(&mut self) -> Result<(), PathError> {
        if let (true, Some(f)) = (self.dirty, &self.file) {
            f.sync_data().map_err(PathError::at(&self.path))?;
            self.dirty = false;
        }
        Ok(())
    }
}
