//! Stage 4a: the report as JSON (one document) and CSV (one file per table, every period in
//! long form), for notebooks and spreadsheets.
use std::{
    io::Write,
    path::{Path, PathBuf},
};

use crate::{
    accounting::OUTCOMES,
    report::{AccountingTables, Analysis, PeriodReport, Share},
};

/// Writes the whole analysis as pretty JSON.
pub fn write_json(a: &Analysis, w: impl Write) -> serde_json::Result<()> {
    let mut w = w;
    serde_json::to_writer_pretty(&mut w, a)?;
    writeln!(w).map_err(serde_json::Error::io)
}

/// A float as CSV text: Rust's shortest round-trip form; empty for none.
fn f(x: Option<f64>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

/// Writes one CSV per table into `dir`; returns the files written.
pub fn write_csv(a: &Analysis, dir: &Path) -> Result<Vec<PathBuf>, csv::Error> {
    let mut t = CsvTables::create(dir)?;
    let mut acct = a
        .periods
        .values()
        .flatten()
        .any(|r| r.accounting.is_some())
        .then(|| AccountingCsv::create(dir))
        .transpose()?;
    for (g, reports) in &a.periods {
        for r in reports {
            t.period(g, r)?;
            if let (Some(w), Some(x)) = (acct.as_mut(), &r.accounting) {
                w.period(g, r, x)?;
            }
        }
    }
    let mut files = t.finish()?;
    if let Some(w) = acct {
        files.extend(w.finish()?);
    }
    Ok(files)
}

/// With `--jobs`: `node_hours.csv` (package, jobs, node-hours), `outcomes.csv` (package,
/// outcome, jobs, of, share) and `accounts.csv` (account, jobs, node-hours, then one column
/// per outcome).
struct AccountingCsv {
    files: Vec<PathBuf>,
    hours: Writer,
    outcomes: Writer,
    accounts: Writer,
}

impl AccountingCsv {
    fn create(dir: &Path) -> Result<AccountingCsv, csv::Error> {
        let mut files = Vec::new();
        let mut open = |name: &str, header: &[&str]| open_csv(dir, &mut files, name, header);
        let hours = open("node_hours.csv", &["package", "jobs", "node_hours"])?;
        let outcomes = open(
            "outcomes.csv",
            &["package", "outcome", "jobs", "of", "share"],
        )?;
        let mut head = vec!["account", "jobs", "node_hours"];
        head.extend(OUTCOMES);
        let accounts = open("accounts.csv", &head)?;
        Ok(AccountingCsv {
            files,
            hours,
            outcomes,
            accounts,
        })
    }

    fn period(
        &mut self,
        g: &str,
        r: &PeriodReport,
        a: &AccountingTables,
    ) -> Result<(), csv::Error> {
        for n in &a.node_hours_by_package {
            let rest = vec![n.package.clone(), n.jobs.to_string(), f(Some(n.node_hours))];
            self.hours.write_record(row(g, r, rest))?;
        }
        keyed_share_rows(&mut self.outcomes, g, r, &a.outcomes_by_package)?;
        for x in &a.by_account {
            let mut rest = vec![x.account.clone(), x.jobs.to_string(), f(Some(x.node_hours))];
            rest.extend(OUTCOMES.iter().map(|o| {
                x.outcomes
                    .iter()
                    .find(|s| s.key == *o)
                    .map_or(0, |s| s.count)
                    .to_string()
            }));
            self.accounts.write_record(row(g, r, rest))?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<PathBuf>, csv::Error> {
        for w in [&mut self.hours, &mut self.outcomes, &mut self.accounts] {
            w.flush()?;
        }
        Ok(self.files)
    }
}

type Writer = csv::Writer<std::fs::File>;

/// The CSV files, one per table; every row starts with the granularity and the period.
struct CsvTables {
    files: Vec<PathBuf>,
    periods: Writer,
    top: Writer,
    sizes: Writer,
    pkg_sizes: Writer,
    corr: Writer,
    slices: Writer,
    versions: Writer,
    env: Writer,
    blas: Writer,
    sig: Writer,
    monthly: Writer,
    packages: Writer,
    pkg_env: Writer,
    cpu: Writer,
    sampled: Writer,
    not_on_cpu: Writer,
    callers: Writer,
}

/// Creates `dir/name` with the header `granularity, period, header…`, listing it in `files`.
fn open_csv(
    dir: &Path,
    files: &mut Vec<PathBuf>,
    name: &str,
    header: &[&str],
) -> Result<Writer, csv::Error> {
    let path = dir.join(name);
    files.push(path.clone());
    let mut w = csv::Writer::from_path(path)?;
    let mut h = vec!["granularity", "period"];
    h.extend(header);
    w.write_record(h)?;
    Ok(w)
}

/// A row of period `r` of granularity `g`.
fn row(g: &str, r: &PeriodReport, rest: Vec<String>) -> Vec<String> {
    let mut v = vec![g.to_owned(), r.period.clone()];
    v.extend(rest);
    v
}

impl CsvTables {
    /// Creates the files and writes their headers.
    fn create(dir: &Path) -> Result<CsvTables, csv::Error> {
        let mut files = Vec::new();
        let mut open = |name: &str, header: &[&str]| open_csv(dir, &mut files, name, header);
        let periods = open(
            "periods.csv",
            &[
                "rows",
                "jobs",
                "sampled_processes",
                "samples",
                "sampled_cpu_hours",
            ],
        )?;
        let top = open("top_packages.csv", &["by", "rank", "package", "count"])?;
        let sizes = open("job_sizes.csv", &["nodes", "jobs"])?;
        let pkg_sizes = open(
            "package_by_job_size.csv",
            &["package", "nodes_up_to", "jobs"],
        )?;
        let corr = open("correlation.csv", &["package", "other", "pearson"])?;
        let slices = open("correlation_slices.csv", &["package", "other", "pearson"])?;
        let versions = open(
            "versions.csv",
            &["package", "version", "users", "of", "share"],
        )?;
        let env = open("env_kinds.csv", &["env_kind", "processes", "of", "share"])?;
        let blas = open("blas_in_numpy_jobs.csv", &["blas", "jobs", "of", "share"])?;
        let sig = open(
            "signaled.csv",
            &["package", "signaled", "processes", "share"],
        )?;
        let monthly = open("monthly_users.csv", &["package", "month", "users"])?;
        let packages = open("packages.csv", &["package", "users", "jobs", "processes"])?;
        let cpu = open(
            "cpu_by_package.csv",
            &["package", "processes", "cpu_hours", "cpu_hours_split"],
        )?;
        let pkg_env = open(
            "package_env_kinds.csv",
            &["package", "env_kind", "processes", "of", "share"],
        )?;
        let sampled = open(
            "sampled_cpu_by_package.csv",
            &[
                "package",
                "processes",
                "jobs",
                "self_samples",
                "inclusive_samples",
                "self_share",
                "inclusive_share",
                "cpu_hours_self",
            ],
        )?;
        let not_on_cpu = open(
            "imported_not_on_cpu.csv",
            &["package", "jobs", "jobs_on_cpu", "share_never_on_cpu"],
        )?;
        let callers = open(
            "package_callers.csv",
            &["package", "caller", "samples", "of", "share"],
        )?;
        Ok(CsvTables {
            files,
            periods,
            top,
            sizes,
            pkg_sizes,
            corr,
            slices,
            versions,
            env,
            blas,
            sig,
            monthly,
            packages,
            pkg_env,
            cpu,
            sampled,
            not_on_cpu,
            callers,
        })
    }

    /// Every table's rows of one period.
    fn period(&mut self, g: &str, r: &PeriodReport) -> Result<(), csv::Error> {
        let p = |rest| row(g, r, rest);
        let s = &r.sampled_cpu;
        self.periods.write_record(p(vec![
            r.rows.to_string(),
            r.correlation.jobs.to_string(),
            s.processes.to_string(),
            s.samples.to_string(),
            f(Some(s.cpu_hours)),
        ]))?;
        for (by, list) in [
            ("user", &r.top_packages_by_user),
            ("job", &r.top_packages_by_job),
            ("process", &r.top_packages_by_process),
        ] {
            for (i, c) in list.iter().enumerate() {
                let rest = vec![
                    by.into(),
                    (i + 1).to_string(),
                    c.package.clone(),
                    c.count.to_string(),
                ];
                self.top.write_record(p(rest))?;
            }
        }
        for (n, c) in &r.job_sizes {
            self.sizes
                .write_record(p(vec![n.to_string(), c.to_string()]))?;
        }
        for (pkg, bins) in &r.package_by_job_size {
            for (n, c) in bins {
                let rest = vec![pkg.clone(), n.to_string(), c.to_string()];
                self.pkg_sizes.write_record(p(rest))?;
            }
        }
        self.correlations(g, r)?;
        keyed_share_rows(&mut self.versions, g, r, &r.versions)?;
        share_rows(&mut self.env, g, r, &r.env_kinds)?;
        share_rows(&mut self.blas, g, r, &r.blas_in_numpy_jobs)?;
        share_rows(&mut self.sig, g, r, &r.signaled)?;
        for (pkg, months) in &r.monthly_users {
            for (m, n) in months {
                self.monthly
                    .write_record(p(vec![pkg.clone(), m.clone(), n.to_string()]))?;
            }
        }
        for c in &r.package_counts {
            let rest = vec![
                c.package.clone(),
                c.users.to_string(),
                c.jobs.to_string(),
                c.processes.to_string(),
            ];
            self.packages.write_record(p(rest))?;
        }
        keyed_share_rows(&mut self.pkg_env, g, r, &r.package_env_kinds)?;
        for c in &r.cpu_by_package {
            let rest = vec![
                c.package.clone(),
                c.processes.to_string(),
                f(Some(c.cpu_hours)),
                f(Some(c.cpu_hours_split)),
            ];
            self.cpu.write_record(p(rest))?;
        }
        for c in &r.sampled_cpu_by_package {
            let rest = vec![
                c.package.clone(),
                c.processes.to_string(),
                c.jobs.to_string(),
                c.self_samples.to_string(),
                c.inclusive_samples.to_string(),
                f(c.self_share),
                f(c.inclusive_share),
                f(Some(c.cpu_hours_self)),
            ];
            self.sampled.write_record(p(rest))?;
        }
        for c in &r.imported_not_on_cpu {
            let rest = vec![
                c.package.clone(),
                c.jobs.to_string(),
                c.jobs_on_cpu.to_string(),
                f(c.share_never_on_cpu),
            ];
            self.not_on_cpu.write_record(p(rest))?;
        }
        keyed_share_rows(&mut self.callers, g, r, &r.package_callers)?;
        Ok(())
    }

    /// The correlation matrix (long form) and slices of one period.
    fn correlations(&mut self, g: &str, r: &PeriodReport) -> Result<(), csv::Error> {
        let c = &r.correlation;
        for (i, a) in c.packages.iter().enumerate() {
            for (j, b) in c.packages.iter().enumerate() {
                let rest = vec![a.clone(), b.clone(), f(c.matrix[i][j])];
                self.corr.write_record(row(g, r, rest))?;
            }
        }
        for (s, list) in &r.correlation_slices {
            for (o, v) in list {
                let rest = vec![s.clone(), o.clone(), f(Some(*v))];
                self.slices.write_record(row(g, r, rest))?;
            }
        }
        Ok(())
    }

    /// Flushes every file; the files written.
    fn finish(mut self) -> Result<Vec<PathBuf>, csv::Error> {
        for w in [
            &mut self.periods,
            &mut self.top,
            &mut self.sizes,
            &mut self.pkg_sizes,
            &mut self.corr,
            &mut self.slices,
            &mut self.versions,
            &mut self.env,
            &mut self.blas,
            &mut self.sig,
            &mut self.monthly,
            &mut self.packages,
            &mut self.pkg_env,
            &mut self.cpu,
            &mut self.sampled,
            &mut self.not_on_cpu,
            &mut self.callers,
        ] {
            w.flush()?;
        }
        Ok(self.files)
    }
}

/// Share tables keyed by package (versions, outcomes): `package, key, count, of, share`.
fn keyed_share_rows(
    w: &mut Writer,
    g: &str,
    r: &PeriodReport,
    tables: &std::collections::BTreeMap<String, Vec<Share>>,
) -> Result<(), csv::Error> {
    for (pkg, list) in tables {
        for s in list {
            let mut rest = vec![pkg.clone()];
            rest.extend(share_fields(s));
            w.write_record(row(g, r, rest))?;
        }
    }
    Ok(())
}

/// `key, count, of, share`.
fn share_fields(s: &Share) -> [String; 4] {
    [
        s.key.clone(),
        s.count.to_string(),
        s.of.to_string(),
        f(s.share),
    ]
}

/// A share table's rows of one period.
fn share_rows(w: &mut Writer, g: &str, r: &PeriodReport, list: &[Share]) -> Result<(), csv::Error> {
    for s in list {
        w.write_record(row(g, r, share_fields(s).to_vec()))?;
    }
    Ok(())
}
