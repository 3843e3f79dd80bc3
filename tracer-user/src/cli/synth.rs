//! `pyusage synth`: a deterministic synthetic dataset in the record schema, streamed to
//! Parquet one million records at a time (a 100 M-record dataset fits in bounded memory).
use std::{path::PathBuf, process::ExitCode};

use pyusage_analysis::synth::{stream, Params};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Records to write.
    #[arg(long)]
    rows: usize,
    /// Dataset root to write (`date=…/` partitions).
    #[arg(long)]
    out: PathBuf,
    /// Seed; the same seed writes the same data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Distinct users.
    #[arg(long, default_value_t = 2500)]
    users: u32,
}

/// Writes the dataset.
pub fn execute(a: Args) -> anyhow::Result<ExitCode> {
    let mut records = stream(Params {
        rows: a.rows,
        seed: a.seed,
        users: a.users,
    });
    let mut n = 0;
    loop {
        let chunk: Vec<_> = records.by_ref().take(1_000_000).collect();
        if chunk.is_empty() {
            break;
        }
        n += chunk.len();
        pyusage::parquet_sink::write(&a.out, &chunk)?;
    }
    println!("wrote {n} records under {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}
