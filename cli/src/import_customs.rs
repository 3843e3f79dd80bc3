//! `pyusage import-customs`: customs-style JSON lines (NERSC's old `sitecustomize` data) →
//! a Parquet dataset of this schema, streamed: at most [`CHUNK`] records in memory, written
//! as they fill. The mapping is `pyusage_compare::customs` (docs/customs.md).
use std::{
    collections::HashMap,
    fs::File,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use pyusage_compare::customs::{self, CustomsRow};
use pyusage_record::{error_line, Micros, Record};

use crate::show::terminal_safe;

/// Records held before they are written: a few hundred MB at the most.
const CHUNK: usize = 250_000;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Customs-style JSON-lines files, one object per line (`-`: standard input).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Dataset root to write (`date=…/` partitions; created if absent).
    #[arg(long)]
    out: PathBuf,
    /// Host of the records whose line names none.
    #[arg(long, default_value = customs::UNKNOWN_HOST)]
    host: String,
}

/// One process's package, as far as the old data tells processes apart: a dotted name
/// (`numpy.linalg`) and its top-level package (`numpy`) of one process are one record.
type Key = (
    String,
    i32,
    Micros,
    String,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
);

fn key(r: &Record) -> Key {
    (
        r.host.clone(),
        r.pid,
        r.process_start,
        r.package.clone(),
        r.job_id.clone(),
        r.username.clone(),
        r.executable.clone(),
        r.main.clone(),
    )
}

/// The records waiting to be written, one per [`Key`].
struct Chunk {
    out: PathBuf,
    records: Vec<Record>,
    index: HashMap<Key, usize>,
    written: u64,
}

impl Chunk {
    /// Adds `r`, or merges it into the record of the same key (keeping the first one, with the
    /// version of the later one when the first had none).
    fn push(&mut self, r: Record) -> anyhow::Result<()> {
        let k = key(&r);
        if let Some(&i) = self.index.get(&k) {
            let first = &mut self.records[i];
            if first.version.is_none() {
                first.version = r.version;
            }
            return Ok(());
        }
        self.index.insert(k, self.records.len());
        self.records.push(r);
        if self.records.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.records.is_empty() {
            return Ok(());
        }
        pyusage_record::dataset::write(&self.out, &self.records)
            .with_context(|| format!("writing the dataset under {}", self.out.display()))?;
        self.written += self.records.len() as u64;
        self.records.clear();
        self.index.clear();
        Ok(())
    }
}

/// Imports every file; exit status 2 when a line was bad (each is reported as `FILE:LINE:
/// reason` and the rest imported).
pub fn execute(a: Args) -> anyhow::Result<ExitCode> {
    // Every input opened before anything is written: a typo in a name writes nothing.
    let inputs = a
        .files
        .iter()
        .map(|f| open(f).map(|r| (f.as_path(), r)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut chunk = Chunk {
        out: a.out.clone(),
        records: Vec::new(),
        index: HashMap::new(),
        written: 0,
    };
    let mut bad = 0u64;
    let mut seq = None;
    let mut buf = Vec::new();
    for (path, mut input) in inputs {
        let name = if path == Path::new("-") {
            "-".to_owned()
        } else {
            path.display().to_string()
        };
        for n in 1u64.. {
            buf.clear();
            let len = input
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("{}:{n}: reading", terminal_safe(&name)))?;
            if len == 0 {
                break;
            }
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let base = *seq.get_or_insert_with(|| customs::seq_base(line));
            match CustomsRow::parse_bytes(line) {
                Ok(row) => {
                    let next = base + chunk.written + chunk.records.len() as u64 + 1;
                    chunk.push(row.to_record(&a.host, customs::record_id(line, n), next))?;
                }
                Err(e) => {
                    bad += 1;
                    eprintln!(
                        "{}:{n}: {}",
                        terminal_safe(&name),
                        terminal_safe(&error_line(&e))
                    );
                }
            }
        }
    }
    chunk.flush()?;
    println!(
        "imported {} records from {} files, {bad} bad lines",
        chunk.written,
        a.files.len()
    );
    Ok(if bad > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// A file, or standard input for `-`.
fn open(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    if path == Path::new("-") {
        return Ok(Box::new(BufReader::new(std::io::stdin())));
    }
    let f = File::open(path)
        .with_context(|| format!("opening {}", terminal_safe(&path.display().to_string())))?;
    Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
}
