//! `pyusage synth`: a deterministic synthetic dataset in the record schema.
use std::{path::PathBuf, process::ExitCode};

use pyusage_analysis::synth::{generate, Params};

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
    let records = generate(Params {
        rows: a.rows,
        seed: a.seed,
        users: a.users,
    });
    for chunk in records.chunks(200_000) {
        pyusage::parquet_sink::write(&a.out, chunk)?;
    }
    println!("wrote {} records under {}", records.len(), a.out.display());
    Ok(ExitCode::SUCCESS)
}
