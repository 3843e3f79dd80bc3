//! Stage 4a: the report as JSON (one document) and CSV (one file per table, every period in
//! long form), for notebooks and spreadsheets.
use std::{io::Write, path::Path};

use crate::report::{Analysis, Share};

/// Writes the whole analysis as pretty JSON.
pub fn write_json(a: &Analysis, w: impl Write) -> serde_json::Result<()> {
    let mut w = w;
    serde_json::to_writer_pretty(&mut w, a)?;
    writeln!(w).map_err(serde_json::Error::io)
}

fn f(x: Option<f64>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

/// Writes one CSV per table into `dir`; returns the files written.
pub fn write_csv(a: &Analysis, dir: &Path) -> Result<Vec<std::path::PathBuf>, csv::Error> {
    let mut files = Vec::new();
    let mut open =
        |name: &str, header: &[&str]| -> Result<csv::Writer<std::fs::File>, csv::Error> {
            let path = dir.join(name);
            files.push(path.clone());
            let mut w = csv::Writer::from_path(path)?;
            let mut h = vec!["granularity", "period"];
            h.extend(header);
            w.write_record(h)?;
            Ok(w)
        };
    let mut periods = open("periods.csv", &["rows", "jobs"])?;
    let mut top = open("top_packages.csv", &["by", "rank", "package", "count"])?;
    let mut sizes = open("job_sizes.csv", &["nodes", "jobs"])?;
    let mut pkg_sizes = open(
        "package_by_job_size.csv",
        &["package", "nodes_up_to", "jobs"],
    )?;
    let mut corr = open("correlation.csv", &["package", "other", "pearson"])?;
    let mut slices = open("correlation_slices.csv", &["package", "other", "pearson"])?;
    let mut versions = open(
        "versions.csv",
        &["package", "version", "users", "of", "share"],
    )?;
    let mut env = open("env_kinds.csv", &["env_kind", "processes", "of", "share"])?;
    let mut blas = open("blas_in_numpy_jobs.csv", &["blas", "jobs", "of", "share"])?;
    let mut sig = open(
        "signaled.csv",
        &["package", "signaled", "processes", "share"],
    )?;
    let mut monthly = open("monthly_users.csv", &["package", "month", "users"])?;
    for (g, reports) in &a.periods {
        for r in reports {
            let p = |rest: Vec<String>| {
                let mut v = vec![g.clone(), r.period.clone()];
                v.extend(rest);
                v
            };
            periods.write_record(p(vec![r.rows.to_string(), r.correlation.jobs.to_string()]))?;
            for (by, list) in [
                ("user", &r.top_packages_by_user),
                ("job", &r.top_packages_by_job),
                ("process", &r.top_packages_by_process),
            ] {
                for (i, c) in list.iter().enumerate() {
                    let row = vec![
                        by.into(),
                        (i + 1).to_string(),
                        c.package.clone(),
                        c.count.to_string(),
                    ];
                    top.write_record(p(row))?;
                }
            }
            for (n, c) in &r.job_sizes {
                sizes.write_record(p(vec![n.to_string(), c.to_string()]))?;
            }
            for (pkg, bins) in &r.package_by_job_size {
                for (n, c) in bins {
                    pkg_sizes.write_record(p(vec![pkg.clone(), n.to_string(), c.to_string()]))?;
                }
            }
            let c = &r.correlation;
            for (i, a) in c.packages.iter().enumerate() {
                for (j, b) in c.packages.iter().enumerate() {
                    corr.write_record(p(vec![a.clone(), b.clone(), f(c.matrix[i][j])]))?;
                }
            }
            for (s, list) in &r.correlation_slices {
                for (o, v) in list {
                    slices.write_record(p(vec![s.clone(), o.clone(), f(Some(*v))]))?;
                }
            }
            for (pkg, list) in &r.versions {
                for s in list {
                    let row = vec![
                        pkg.clone(),
                        s.key.clone(),
                        s.count.to_string(),
                        s.of.to_string(),
                        f(s.share),
                    ];
                    versions.write_record(p(row))?;
                }
            }
            let share_rows = |w: &mut csv::Writer<std::fs::File>, list: &[Share]| {
                for s in list {
                    let row = vec![
                        s.key.clone(),
                        s.count.to_string(),
                        s.of.to_string(),
                        f(s.share),
                    ];
                    w.write_record(p(row))?;
                }
                Ok::<_, csv::Error>(())
            };
            share_rows(&mut env, &r.env_kinds)?;
            share_rows(&mut blas, &r.blas_in_numpy_jobs)?;
            share_rows(&mut sig, &r.signaled)?;
            for (pkg, months) in &r.monthly_users {
                for (m, n) in months {
                    monthly.write_record(p(vec![pkg.clone(), m.clone(), n.to_string()]))?;
                }
            }
        }
    }
    for w in [
        &mut periods,
        &mut top,
        &mut sizes,
        &mut pkg_sizes,
        &mut corr,
        &mut slices,
        &mut versions,
        &mut env,
        &mut blas,
        &mut sig,
        &mut monthly,
    ] {
        w.flush()?;
    }
    Ok(files)
}
