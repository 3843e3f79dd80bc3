//! `pyusage analyze`: the paper's figures and more from the Parquet dataset, for every period
//! requested, on the CPU or a GPU, as a self-contained HTML report plus JSON and CSV of every
//! table (`--out`), or JSON on stdout.
use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Mutex,
};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use pyusage_analysis::{
    counts::PeriodKind,
    export,
    filter::Filter,
    html,
    report::Analysis,
    run::{analyze, Device, Options},
    scan::Selection,
};
use pyusage_record::data_dir::dataset_root;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `report.html`: self-contained, inline SVG figures.
    Html,
    /// `report.json` (stdout without `--out`).
    Json,
    /// One CSV per table.
    Csv,
}

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
    /// Which records count, e.g. `is_staff == false and partition != debug` (replaces the
    /// paper's defaults: staff excluded; compute nodes only for job-based tables).
    #[arg(long)]
    filter: Option<String>,
    /// Back end.
    #[arg(long, value_enum, default_value = "auto")]
    device: Device,
    /// Report directory; without it, JSON goes to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Formats written to --out, repeatable [default: html, json and csv].
    #[arg(long, value_enum)]
    format: Vec<Format>,
    /// Packages in each top list.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=60))]
    top: u16,
}

/// Runs the analysis and writes the report.
pub fn execute(a: Args) -> anyhow::Result<ExitCode> {
    let o = options(&a)?;
    let started = std::time::Instant::now();
    let analysis = {
        let bar = Bar::default();
        let analysis = analyze(&o, &|line| eprintln!("pyusage analyze: {line}"), &|t| {
            bar.progress(t)
        })?;
        bar.finish();
        analysis
    };
    let Some(out) = &a.out else {
        export::write_json(&analysis, std::io::stdout().lock())?;
        return Ok(ExitCode::SUCCESS);
    };
    let written = write(&analysis, out, &a.format)?;
    eprintln!(
        "pyusage analyze: {} records on {} in {:.2} s; wrote {} files under {}",
        analysis.header.rows,
        analysis.header.backend,
        started.elapsed().as_secs_f64(),
        written.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The analysis's options from the command line.
fn options(a: &Args) -> anyhow::Result<Options> {
    let filter = a.filter.as_deref().map(Filter::parse).transpose()?;
    let kinds = if a.period.is_empty() {
        PeriodKind::ALL.to_vec()
    } else {
        a.period.clone()
    };
    Ok(Options {
        selection: Selection {
            root: dataset_root(&a.dir),
            from: a.from.clone(),
            to: a.to.clone(),
            filter,
        },
        device: a.device,
        kinds,
        top: a.top as usize,
    })
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
