//! `pyusage analyze` (CPU; so far the top-N packages by user, job and process — paper fig. 3 —
//! and the job-size histogram — fig. 4 — as JSON, with the filters applied).
use std::{io::Write, path::PathBuf, process::ExitCode};

use pyusage_analysis::{
    counts::{job_sizes, paper_filter, top_packages, Dedup},
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
    let f = |row| paper_filter(&t, row);
    let top = |by| -> Vec<serde_json::Value> {
        top_packages(&t, by, f)
            .into_iter()
            .take(a.top)
            .map(|(p, c)| serde_json::json!({"package": p, "count": c}))
            .collect()
    };
    let out = serde_json::json!({
        "rows": t.len(),
        "period": {"from": a.from, "to": a.to},
        "filters": {"top_packages": "is_staff == false", "job_sizes": "is_staff == false && is_compute == true"},
        "top_packages_by_user": top(Dedup::User),
        "top_packages_by_job": top(Dedup::Job),
        "top_packages_by_process": top(Dedup::Process),
        "job_sizes": job_sizes(&t, f).into_iter().map(|(n, c)| serde_json::json!({"num_nodes": n, "jobs": c})).collect::<Vec<_>>(),
    });
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &out)?;
    writeln!(stdout)?;
    Ok(ExitCode::SUCCESS)
}
