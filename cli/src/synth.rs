//! `pyusage synth`: a deterministic synthetic dataset in the record schema, written to Parquet
//! one block of a million records at a time, blocks in parallel (bounded memory, all cores).
//! The same seed writes the same records whatever the number of threads; see
//! [`pyusage_analysis::synth`] for what the data exercises (jobs over month and year
//! boundaries, login-node rows, running snapshots, array and het job ids, a long tail).
use std::{path::PathBuf, process::ExitCode};

use pyusage_analysis::synth::{block, blocks, write, Params};
use rayon::prelude::*;

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
    let p = Params {
        rows: a.rows,
        seed: a.seed,
        users: a.users,
    };
    (0..blocks(p)).into_par_iter().try_for_each(|k| {
        let records: Vec<_> = block(p, k).collect();
        write(&a.out, &records).map(|_| ())
    })?;
    let n = a.rows;
    println!("wrote {n} records under {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}
