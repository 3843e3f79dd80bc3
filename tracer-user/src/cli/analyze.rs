//! `pyusage analyze` (CPU, JSON; in progress): top-N packages by user, job and process (paper
//! fig. 3), job sizes (fig. 4), package × job size (fig. 5), Pearson correlations within jobs
//! among the top packages (fig. 6) and 1D slices for mpi4py, multiprocessing, dask (fig. 7),
//! with the filters applied.
use std::{io::Write, path::PathBuf, process::ExitCode};

use pyusage_analysis::{
    counts::{co_occurrence, job_sizes, package_by_job_size, paper_filter, top_packages, Dedup},
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
    // Correlations among the most used packages (by job), and 1D slices (paper figs. 6, 7).
    let co = co_occurrence(&t, f);
    let r = co.correlations();
    let n = co.packages.len();
    let idx = |p: &str| co.packages.iter().position(|x| x == p);
    let top_by_job: Vec<String> = top_packages(&t, Dedup::Job, f)
        .into_iter()
        .take(a.top)
        .map(|(p, _)| p)
        .collect();
    let matrix: Vec<Vec<Option<f64>>> = top_by_job
        .iter()
        .map(|p| {
            top_by_job
                .iter()
                .map(|q| r[idx(p).expect("known") * n + idx(q).expect("known")])
                .collect()
        })
        .collect();
    let slices: serde_json::Map<String, serde_json::Value> = ["mpi4py", "multiprocessing", "dask"]
        .iter()
        .filter_map(|p| idx(p).map(|i| (p, i)))
        .map(|(p, i)| {
            let mut v: Vec<(String, f64)> = (0..n)
                .filter(|&j| j != i)
                .filter_map(|j| r[i * n + j].map(|c| (co.packages[j].clone(), c)))
                .collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            (
                p.to_string(),
                serde_json::json!(v
                    .into_iter()
                    .take(a.top)
                    .map(|(q, c)| serde_json::json!({"package": q, "r": c}))
                    .collect::<Vec<_>>()),
            )
        })
        .collect();
    let out = serde_json::json!({
        "package_by_job_size": package_by_job_size(&t, f),
        "correlation": {"jobs": co.jobs, "packages": top_by_job, "matrix": matrix, "clip_view": [0.6, 0.8]},
        "correlation_slices": slices,
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
