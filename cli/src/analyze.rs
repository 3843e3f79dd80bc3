//! `pyusage analyze`: the paper's figures and more from the Parquet dataset, for every period
//! requested, on the CPU or a GPU, as a self-contained HTML report plus JSON and CSV of every
//! table (`--out`), or JSON on stdout. `--partial` writes a shard's mergeable state instead,
//! `analyze merge` turns shards' states into the report, and `--cache` keeps each partition's
//! state for the next run.
use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Mutex,
};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use pyusage_analysis::{
    accounting::Accounting,
    counts::PeriodKind,
    export,
    filter::Filter,
    html,
    report::Analysis,
    run::{self, analyze, Device, Options, RunStats},
    scan::{HostGlob, Selection},
};
use pyusage_record::data_dir::dataset_root;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `report.html`: a self-contained dashboard (period picker, package search; inline script).
    Html,
    /// `report.json` (stdout without `--out`).
    Json,
    /// One CSV per table.
    Csv,
}

/// Arguments.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    sub: Option<Sub>,
    /// Dataset root (or a daemon data directory).
    #[arg(required = true)]
    dir: Option<PathBuf>,
    /// First date (YYYY-MM-DD), inclusive.
    #[arg(long)]
    from: Option<String>,
    /// Last date (YYYY-MM-DD), inclusive.
    #[arg(long)]
    to: Option<String>,
    /// Which records count, e.g. `is_staff == false and partition != debug` (replaces the
    /// paper's defaults: staff excluded; compute nodes only for job-based tables).
    #[arg(long)]
    filter: Option<String>,
    /// Back end.
    #[arg(long, value_enum, default_value = "auto")]
    device: Device,
    #[command(flatten)]
    report: ReportArgs,
    /// Only rows of hosts matching this glob (`nid00[0-4]*`): one shard of a sharded run.
    #[arg(long)]
    hosts: Option<String>,
    /// Keep each date partition's state in DIR and reuse it while the partition's files are
    /// unchanged: a daily re-run reads only new or changed partitions (CPU back end).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Write this shard's mergeable state to FILE instead of a report (for `analyze merge`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["out", "format"])]
    partial: Option<PathBuf>,
}

/// What the report holds and where it goes (a single run's and a merge's).
#[derive(Debug, clap::Args)]
struct ReportArgs {
    /// Period granularities, repeatable [default: month, quarter, year and all].
    #[arg(long, value_enum)]
    period: Vec<PeriodKind>,
    /// Report directory; without it, JSON goes to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Formats written to --out, repeatable [default: html, json and csv].
    #[arg(long, value_enum)]
    format: Vec<Format>,
    /// Packages in each top list.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=60))]
    top: u16,
    /// The scheduler's accounting, `sacct --parsable2 -o JobID,JobIDRaw,NNodes,ElapsedRaw,
    /// State,Account,…` output: adds node-hours and job outcomes per package and by account
    /// (CPU back end).
    #[arg(long, value_name = "FILE")]
    jobs: Option<PathBuf>,
}

impl ReportArgs {
    /// The granularities asked for (all four by default).
    fn kinds(&self) -> Vec<PeriodKind> {
        if self.period.is_empty() {
            PeriodKind::ALL.to_vec()
        } else {
            self.period.clone()
        }
    }
}

/// `analyze` subcommands.
#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// The report of several shards from their `--partial` states: byte-identical to a single
    /// run over the same data.
    Merge(MergeArgs),
}

/// Arguments of `analyze merge`.
#[derive(Debug, clap::Args)]
struct MergeArgs {
    /// The shards' `--partial` files.
    #[arg(required = true)]
    partials: Vec<PathBuf>,
    #[command(flatten)]
    report: ReportArgs,
}

/// Runs the analysis and writes the report (or the shard's state).
pub fn execute(a: Args) -> anyhow::Result<ExitCode> {
    if let Some(Sub::Merge(m)) = a.sub {
        return execute_merge(m);
    }
    let o = options(&a)?;
    let started = std::time::Instant::now();
    let bar = Bar::default();
    if let Some(path) = &a.partial {
        let (rows, stats) = run::partial(&o, path, &|t| bar.progress(t))?;
        bar.finish();
        eprintln!(
            "pyusage analyze: {rows} records of {} partitions{} in {:.2} s; state written to {}",
            stats.partitions,
            cache_words(&stats),
            started.elapsed().as_secs_f64(),
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (analysis, stats) = analyze(&o, &|line| eprintln!("pyusage analyze: {line}"), &|t| {
        bar.progress(t)
    })?;
    bar.finish();
    let Some((out, written)) = emit(&analysis, &a.report)? else {
        return Ok(ExitCode::SUCCESS);
    };
    eprintln!(
        "pyusage analyze: {} records on {} ({} threads){} in {:.2} s{}; wrote {} files under {}",
        analysis.header.rows,
        analysis.header.backend,
        rayon::current_num_threads(),
        cache_words(&stats),
        started.elapsed().as_secs_f64(),
        if stats.count_s > 0.0 {
            format!(" (counting {:.2} s)", stats.count_s)
        } else {
            String::new()
        },
        written.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `, cache: 364 partitions reused, 1 read` (nothing without a cache).
fn cache_words(s: &RunStats) -> String {
    match s.cache {
        None => String::new(),
        Some(c) => format!(
            ", cache: {} partitions reused, {} read ({} stale){}",
            c.hits,
            c.misses,
            c.stale,
            if c.pruned > 0 {
                format!(", {} entries of removed partitions dropped", c.pruned)
            } else {
                String::new()
            }
        ),
    }
}

/// `analyze merge`.
fn execute_merge(m: MergeArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let r = &m.report;
    let accounting = r.jobs.as_deref().map(Accounting::read).transpose()?;
    for line in accounting.iter().flat_map(|a| &a.bad_lines) {
        eprintln!("pyusage analyze merge: --jobs: {line} (line skipped)");
    }
    let analysis = run::merge(&m.partials, &r.kinds(), r.top as usize, accounting.as_ref())?;
    let Some((out, written)) = emit(&analysis, r)? else {
        return Ok(ExitCode::SUCCESS);
    };
    eprintln!(
        "pyusage analyze merge: {} records from {} partials in {:.2} s; wrote {} files under {}",
        analysis.header.rows,
        m.partials.len(),
        started.elapsed().as_secs_f64(),
        written.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The analysis's options from the command line.
fn options(a: &Args) -> anyhow::Result<Options> {
    let filter = a.filter.as_deref().map(Filter::parse).transpose()?;
    let kinds = a.report.kinds();
    let hosts = a
        .hosts
        .as_deref()
        .map(HostGlob::new)
        .transpose()
        .context("--hosts")?;
    let dir = a.dir.as_deref().context("no dataset given")?;
    Ok(Options {
        selection: Selection {
            root: dataset_root(dir),
            from: a.from.clone(),
            to: a.to.clone(),
            filter,
            hosts,
        },
        device: a.device,
        kinds,
        top: a.report.top as usize,
        cache: a.cache.clone(),
        jobs: a.report.jobs.clone(),
    })
}

/// Writes the report under `--out` (returned, with the files written), or as JSON to stdout
/// without it (`None`).
fn emit<'r>(
    analysis: &Analysis,
    r: &'r ReportArgs,
) -> anyhow::Result<Option<(&'r Path, Vec<PathBuf>)>> {
    let Some(out) = &r.out else {
        export::write_json(analysis, std::io::stdout().lock())?;
        return Ok(None);
    };
    Ok(Some((out, write(analysis, out, &r.format)?)))
}

/// A progress bar over partitions, on a terminal only (indicatif draws nothing when stderr
/// is not a TTY).
#[derive(Default)]
struct Bar(Mutex<Option<ProgressBar>>);

impl Bar {
    /// `Some(total)` once the partitions are known, then `None` per partition read.
    fn progress(&self, total: Option<u64>) {
        let mut b = self.0.lock().expect("bar");
        match total {
            Some(n) if std::io::stderr().is_terminal() => {
                let p = ProgressBar::new(n).with_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:40}] {pos}/{len} partitions, {eta} left",
                    )
                    .expect("template")
                    .progress_chars("=> "),
                );
                p.set_message("reading");
                *b = Some(p);
            }
            Some(_) => {}
            None => {
                if let Some(p) = b.as_ref() {
                    p.inc(1);
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(p) = self.0.lock().expect("bar").take() {
            p.finish_and_clear();
        }
    }
}

/// Writes the report under `out` in each of `formats` (all three when none is given);
/// returns the files written.
fn write(analysis: &Analysis, out: &Path, formats: &[Format]) -> anyhow::Result<Vec<PathBuf>> {
    let formats = if formats.is_empty() {
        &[Format::Html, Format::Json, Format::Csv][..]
    } else {
        formats
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    for f in formats {
        match f {
            Format::Json => {
                let p = out.join("report.json");
                let file = std::fs::File::create(&p).with_context(|| p.display().to_string())?;
                export::write_json(analysis, std::io::BufWriter::new(file))
                    .with_context(|| p.display().to_string())?;
                written.push(p);
            }
            Format::Csv => written.extend(
                export::write_csv(analysis, out)
                    .with_context(|| format!("writing CSV tables under {}", out.display()))?,
            ),
            Format::Html => {
                let p = out.join("report.html");
                let page = html::render(analysis)?;
                std::fs::write(&p, page).with_context(|| p.display().to_string())?;
                written.push(p);
            }
        }
    }
    Ok(written)
}
