//! A full WAL segment → Parquet files in the dataset, on a thread of its own so that
//! encoding and compression (most of the CPU a record costs) overlap with reading and
//! validating the next messages.
//!
//! Per segment: one file per date partition, `date=YYYY-MM-DD/<name>-<first number, 20
//! digits>.parquet`, written to `.<file>.tmp`, fsynced and renamed (the record crate's
//! [`write_atomic`]); then the segment's index entries are appended to the day files, the next
//! number is saved, and the segment is deleted. Every step is idempotent: a crash anywhere
//! means the segment is converted again on the next start, into files of the same names and
//! content.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Duration,
};

use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, ZstdLevel},
    file::properties::WriterProperties,
    schema::types::ColumnPath,
};
use pyusage_record::{
    arrow_schema,
    atomic::{write_atomic, write_bytes_atomic, Durability, PathError},
    columns as c, Record,
};

use crate::{
    block::{self, Block},
    compact::{self, CompactOptions},
    index::{self, date_of, Day, Entry},
    view::View,
    wal, Paths,
};

/// Writing the dataset failed; each error names the file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Writing, syncing, renaming or deleting a file.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A WAL line that does not decode (the WAL holds only validated records: this is
    /// damage).
    #[error("{}:{line}: {source}", path.display())]
    WalLine {
        /// The segment.
        path: PathBuf,
        /// 1-based number among its committed lines.
        line: usize,
        /// Cause.
        source: serde_json::Error,
    },
    /// Records → Arrow.
    #[error("{}: {source}", path.display())]
    Arrow {
        /// The Parquet file being made.
        path: PathBuf,
        /// Cause.
        source: arrow_schema::ArrowError,
    },
    /// Parquet encoding.
    #[error("{}: {source}", path.display())]
    Parquet {
        /// The Parquet file being made.
        path: PathBuf,
        /// Cause.
        source: parquet::errors::ParquetError,
    },
}

/// One date's records of a segment.
#[derive(Debug, Default)]
pub struct Chunk {
    /// Number of the first.
    pub first: u64,
    /// The records, in blocks of at most [`block::ROWS`]: blocks instead of one growing set of
    /// columns, so a segment of a few hundred MB is never copied to grow it.
    pub blocks: Vec<Block>,
    /// How many.
    pub rows: usize,
}

/// Emptied blocks kept for the next segments: a block is a few MiB of fresh memory otherwise,
/// which the kernel zeroes page by page.
#[derive(Debug, Clone, Default)]
pub struct BlockPool(Arc<Mutex<Vec<Block>>>);

impl BlockPool {
    /// Blocks kept at most (a segment's worth).
    const KEEP: usize = 16;

    fn take(&self) -> Block {
        self.0.lock().expect("pool").pop().unwrap_or_default()
    }

    /// Takes a block back, emptied (on the writer's thread).
    fn give(&self, mut b: Block) {
        b.clear();
        let mut pool = self.0.lock().expect("pool");
        if pool.len() < Self::KEEP {
            pool.push(b);
        }
    }
}

impl Chunk {
    fn push(&mut self, v: &View, pool: &BlockPool) {
        match self.blocks.last_mut() {
            Some(b) if b.rows() < block::ROWS => b.push(v),
            _ => {
                let mut b = pool.take();
                b.push(v);
                self.blocks.push(b);
            }
        }
        self.rows += 1;
    }

    /// Keeps the first `n` rows.
    fn truncate(&mut self, n: usize, pool: &BlockPool) {
        let mut left = n;
        let mut keep = 0;
        for b in &mut self.blocks {
            if left == 0 {
                break;
            }
            let k = left.min(b.rows());
            b.truncate(k);
            left -= k;
            keep += 1;
        }
        for b in self.blocks.drain(keep..) {
            pool.give(b);
        }
        self.rows = n;
    }
}

/// A segment closed for appending, with its content at hand (no need to read it back).
#[derive(Debug, Default)]
pub struct Sealed {
    /// The WAL file, deleted once converted.
    pub wal: PathBuf,
    /// Records by day.
    pub chunks: BTreeMap<Day, Chunk>,
    /// Index entries of the records.
    pub entries: Vec<Entry>,
    /// The number after the segment's last record.
    pub next: u64,
    /// Where its blocks come from and go back to.
    pub pool: BlockPool,
}

impl Sealed {
    /// Adds record number `n` (numbers must increase).
    pub fn push(&mut self, e: Entry, n: u64, v: &View) {
        let c = self.chunks.entry(e.day).or_insert_with(|| Chunk {
            first: n,
            ..Chunk::default()
        });
        c.push(v, &self.pool);
        self.entries.push(e);
        self.next = n + 1;
    }

    /// Keeps the first `rows` records, `next` the number after them (a transaction's records
    /// taken back out).
    pub fn truncate(&mut self, rows: usize, next: u64) {
        if rows >= self.entries.len() {
            return;
        }
        let mut cut: BTreeMap<Day, usize> = BTreeMap::new();
        for e in self.entries.drain(rows..) {
            *cut.entry(e.day).or_default() += 1;
        }
        for (day, k) in cut {
            let c = self
                .chunks
                .get_mut(&day)
                .expect("a chunk per day of an entry");
            if c.rows == k {
                let c = self.chunks.remove(&day).expect("present");
                for b in c.blocks {
                    self.pool.give(b);
                }
            } else {
                c.truncate(c.rows - k, &self.pool);
            }
        }
        self.next = next;
    }

    /// Records held.
    pub fn rows(&self) -> usize {
        self.entries.len()
    }

    /// A segment read back from its file (recovery): its lines numbered from `first`.
    pub fn from_wal(path: &Path, first: u64) -> Result<Sealed, WriteError> {
        let mut s = Sealed {
            wal: path.to_path_buf(),
            next: first,
            ..Sealed::default()
        };
        for (i, line) in wal::lines(path)?.iter().enumerate() {
            let r: Record = serde_json::from_slice(line).map_err(|source| WriteError::WalLine {
                path: path.to_path_buf(),
                line: i + 1,
                source,
            })?;
            let v = View::of(&r);
            s.push(Entry::of(&v), first + i as u64, &v);
        }
        Ok(s)
    }
}

/// Columns whose values are nearly all distinct (identifiers, times, CPU and sample counts),
/// written without a dictionary. A dictionary of a segment's ~100 k distinct values is larger
/// than the values it replaces, and interning them was the writer's largest cost: measured on
/// 8 segment files of synth records (bench/ingest.py's), 45.1 → 29.1 bytes per record and
/// ~25 % less encoding CPU; merged into one file, 36.9 → 28.7.
pub const NEAR_UNIQUE: [&str; 14] = [
    c::RECORD_ID,
    c::SEQ,
    c::PID,
    c::PPID,
    c::ROOT_PID,
    c::PROCESS_START,
    c::PROCESS_END,
    c::FIRST_SEEN,
    c::JOB_ID,
    c::CPU_USER_US,
    c::CPU_SYS_US,
    c::CPU_SAMPLES_TOTAL,
    c::CPU_SAMPLES_SELF,
    c::CPU_SAMPLES_INCLUSIVE,
];

/// The dataset's Parquet settings: the node daemon's (zstd, dictionary encoding), without a
/// dictionary for the [`NEAR_UNIQUE`] columns, and zstd at level 1 rather than 3: as small
/// (on synth records 28.9 bytes per record in segment files and 28.4 merged, against 29.1 and
/// 28.7 at level 3) and cheaper, its smaller tables included (each column of each file has a
/// context of its own, allocated and cleared anew).
pub fn properties() -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("valid level"),
        ))
        .set_dictionary_enabled(true);
    for name in NEAR_UNIQUE {
        b = b.set_column_dictionary_enabled(ColumnPath::from(name), false);
    }
    b.build()
}

/// The Parquet file of a date's chunk.
pub fn chunk_path(out: &Path, name: &str, day: Day, first: u64) -> PathBuf {
    out.join(format!("date={}", date_of(day)))
        .join(format!("{name}-{first:020}.parquet"))
}

/// Converts a segment: Parquet files, index entries, the next number, then deletes the
/// segment. Returns the days written.
pub fn write_sealed(paths: &Paths, name: &str, s: &Sealed) -> Result<Vec<Day>, WriteError> {
    for (&day, c) in &s.chunks {
        let path = chunk_path(&paths.out, name, day, c.first);
        let dir = path.parent().expect("in a partition");
        fs::create_dir_all(dir).map_err(PathError::at(dir))?;
        let arrow = |source| WriteError::Arrow {
            path: path.clone(),
            source,
        };
        let pq = |source| WriteError::Parquet {
            path: path.clone(),
            source,
        };
        write_atomic(&path, Durability::Durable, |file| {
            let mut w =
                ArrowWriter::try_new(file, arrow_schema(), Some(properties())).map_err(pq)?;
            for block in &c.blocks {
                let batch = block.batch().map_err(arrow)?;
                w.write(&batch).map_err(pq)?;
            }
            w.into_inner().map_err(pq)
        })?;
    }
    index::persist(&paths.index, &s.entries)?;
    write_bytes_atomic(
        &paths.state,
        format!("{{\"next\":{}}}\n", s.next).as_bytes(),
        Durability::Durable,
    )?;
    match fs::remove_file(&s.wal) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(PathError::at(&s.wal)(e).into()),
    }
    Ok(s.chunks.keys().copied().collect())
}

/// The next number saved by the last conversion, if any.
pub fn saved_next(paths: &Paths) -> Result<Option<u64>, PathError> {
    match fs::read(&paths.state) {
        Ok(b) => Ok(serde_json::from_slice::<serde_json::Value>(&b)
            .ok()
            .and_then(|v| v["next"].as_u64())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PathError::at(&paths.state)(e)),
    }
}

/// What the writer thread did, for the stats.
#[derive(Debug, Default, Clone)]
pub struct WriterStats {
    /// Parquet files written from segments.
    pub files: u64,
    /// Compactions (each merges several files into one).
    pub compactions: u64,
    /// Files removed by compaction.
    pub compacted_files: u64,
    /// `running` snapshots left out by compaction (their final record is in the dataset).
    pub superseded_dropped: u64,
    /// Failed attempts (each retried).
    pub errors: u64,
    /// The last error, while it persists.
    pub last_error: Option<String>,
}

/// The writer thread and its channels.
pub struct Writer {
    jobs: Option<mpsc::SyncSender<Sealed>>,
    done: mpsc::Receiver<Vec<Entry>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Shared with the thread.
    pub stats: Arc<Mutex<WriterStats>>,
}

impl Writer {
    /// Starts the thread.
    pub fn start(paths: Paths, name: String, compact: CompactOptions) -> Writer {
        let (jobs, rx) = mpsc::sync_channel::<Sealed>(1);
        let (done_tx, done) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(WriterStats::default()));
        let (st, stop2) = (stats.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("ingest-writer".into())
            .spawn(move || {
                for s in rx {
                    let mut backoff = Duration::from_millis(200);
                    let days = loop {
                        match write_sealed(&paths, &name, &s) {
                            Ok(days) => {
                                let mut g = st.lock().expect("stats");
                                g.files += s.chunks.len() as u64;
                                if g.last_error.take().is_some() {
                                    tracing::info!("ingest: writing the dataset again");
                                }
                                break Some(days);
                            }
                            Err(e) => {
                                let msg = pyusage_record::error_line(&e);
                                let mut g = st.lock().expect("stats");
                                g.errors += 1;
                                if g.last_error.as_deref() != Some(&msg) {
                                    tracing::error!(
                                        "ingest: converting {} failed, retrying (it stays in the WAL): {msg}",
                                        s.wal.display()
                                    );
                                    g.last_error = Some(msg);
                                }
                            }
                        }
                        if stop2.load(Ordering::Relaxed) {
                            break None;
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    };
                    let Some(days) = days else { continue };
                    let Sealed {
                        chunks,
                        entries,
                        pool,
                        ..
                    } = s;
                    for b in chunks.into_values().flat_map(|c| c.blocks) {
                        pool.give(b);
                    }
                    for day in days {
                        match compact::compact_day(&paths, &name, day, &compact) {
                            Ok(c) => {
                                let mut g = st.lock().expect("stats");
                                g.compactions += c.outputs;
                                g.compacted_files += c.inputs;
                                g.superseded_dropped += c.superseded;
                            }
                            Err(e) => tracing::warn!(
                                "ingest: compacting {} failed (retried after the next flush): {}",
                                date_of(day),
                                pyusage_record::error_line(&e)
                            ),
                        }
                    }
                    if done_tx.send(entries).is_err() {
                        break;
                    }
                }
            })
            .expect("spawning the writer thread");
        Writer {
            jobs: Some(jobs),
            done,
            stop,
            thread: Some(thread),
            stats,
        }
    }

    /// Hands a segment over, waiting for room.
    pub fn send(&self, s: Sealed) {
        // The thread only ends when the sender is dropped: a send cannot fail before.
        let _ = self.jobs.as_ref().expect("running").send(s);
    }

    /// Entries of segments converted since the last call.
    pub fn converted(&self) -> Vec<Vec<Entry>> {
        self.done.try_iter().collect()
    }

    /// Converts what was handed over (one attempt each if the last attempt fails: the rest
    /// stays in the WAL for the next start) and ends the thread.
    pub fn finish(mut self) -> Vec<Vec<Entry>> {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            // Failing segments are retried until stop; ask for it only when the queue is
            // empty, so that a healthy disk converts everything.
            while !t.is_finished() {
                if self.stats.lock().expect("stats").last_error.is_some() {
                    self.stop.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = t.join();
        }
        self.done.try_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::RecordBatch;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// The WAL's lines through Arrow's JSON decoder: how segments were converted before the
    /// batches were built from the validated records.
    fn via_json(lines: &[u8], rows: usize) -> RecordBatch {
        let mut dec = arrow_json::ReaderBuilder::new(arrow_schema())
            .with_batch_size(rows)
            .build_decoder()
            .unwrap();
        assert_eq!(dec.decode(lines).unwrap(), lines.len());
        dec.flush().unwrap().unwrap()
    }

    #[test]
    fn segments_become_the_files_the_json_decoder_made() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(&d.path().join("ds"));
        fs::create_dir_all(&paths.index).unwrap();
        fs::create_dir_all(&paths.wal).unwrap();
        // Odd values, all on one day, and more records than a block holds.
        let mut recs = Record::odd_examples();
        for r in &mut recs {
            r.process_start = Record::example().process_start;
        }
        let base = recs.clone();
        for i in 0..block::ROWS + 10 {
            let mut r = base[i % base.len()].clone();
            r.record_id = format!("{}-{i}", r.record_id);
            recs.push(r);
        }
        let mut lines = Vec::new();
        for r in &recs {
            serde_json::to_writer(&mut lines, r).unwrap();
            lines.extend_from_slice(b"\n#\n");
        }
        let wal = wal::segment_path(&paths.wal, 5);
        fs::write(&wal, &lines).unwrap();
        let s = Sealed::from_wal(&wal, 5).unwrap();
        assert_eq!((s.rows(), s.next), (recs.len(), 5 + recs.len() as u64));
        let c = s.chunks.values().next().unwrap();
        assert_eq!(c.blocks.len(), 2);
        assert_eq!(write_sealed(&paths, "ingest", &s).unwrap().len(), 1);
        assert!(!wal.exists(), "the converted segment is deleted");
        let day = index::day_of(recs[0].process_start);
        let f = fs::File::open(chunk_path(&paths.out, "ingest", day, 5)).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
        // The near-unique columns without a dictionary, the others (but booleans) with one.
        c::all_known(NEAR_UNIQUE).unwrap();
        for col in reader.metadata().row_group(0).columns() {
            if col.column_type() == parquet::basic::Type::BOOLEAN {
                continue;
            }
            let name = col.column_path().string();
            assert_eq!(
                col.dictionary_page_offset().is_none(),
                NEAR_UNIQUE.contains(&name.as_str()),
                "{name}"
            );
        }
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        let got = arrow_select::concat::concat_batches(&arrow_schema(), &batches).unwrap();
        let json_lines: Vec<u8> = lines
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty() && *l != b"#")
            .flat_map(|l| l.iter().copied().chain([b'\n']))
            .collect();
        assert_eq!(got, via_json(&json_lines, recs.len()));
    }
}
