//! `pyusage analyze` (CPU, JSON; in progress): for every period requested, top-N packages by
//! user, job and process (paper fig. 3), job sizes (fig. 4), package × job size (fig. 5),
//! Pearson correlations within jobs among the top packages (fig. 6) and 1D slices for mpi4py,
//! multiprocessing, dask (fig. 7), with the paper's default filters, printed as JSON.
use std::{io::Write, path::PathBuf, process::ExitCode};

use pyusage_analysis::{
    counts::paper_filter,
    report::{run, PeriodKind},
    table::Table,
};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dataset root (or a daemon data directory).
    dir: PathBuf,
    /// First date (YYYY-MM-DD), inclusive.
    #[arg(long)]
    from: Option<String>,
    /// Last date (YYYY-MM-DD), inclusive.
    #[arg(long)]
    to: Option<String>,
    /// Period granularities, repeatable [default: month, quarter, year and all].
    #[arg(long, value_enum)]
    period: Vec<PeriodKind>,
    /// Packages in each top list.
    #[arg(long, default_value_t = 20)]
    top: usize,
}

/// Prints the analysis as JSON.
pub fn execute(a: Args) -> anyhow::Result<ExitCode> {
    let root = if a.dir.join("parquet").is_dir() {
        a.dir.join("parquet")
    } else {
        a.dir.clone()
    };
    let t = Table::load(&root, a.from.as_deref(), a.to.as_deref())?;
    let kinds = if a.period.is_empty() {
        vec![
            PeriodKind::Month,
            PeriodKind::Quarter,
            PeriodKind::Year,
            PeriodKind::All,
        ]
    } else {
        a.period.clone()
    };
    let by_kind: serde_json::Map<String, serde_json::Value> = kinds
        .iter()
        .map(|&k| {
            let reports = run(&t, k, a.top, |row| paper_filter(&t, row));
            let key = serde_json::to_value(k)
                .expect("serialises")
                .as_str()
                .expect("a string")
                .to_owned();
            (key, serde_json::to_value(reports).expect("serialises"))
        })
        .collect();
    let out = serde_json::json!({
        "dataset": root,
        "rows": t.len(),
        "range": {"from": a.from, "to": a.to},
        "backend": "cpu",
        "filters": {
            "all tables": "is_staff == false",
            "job-based tables (job sizes, package x job size, correlations)": "is_compute == true, in a job"
        },
        "periods": by_kind,
    });
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &out)?;
    writeln!(stdout)?;
    Ok(ExitCode::SUCCESS)
}
