//! `pyusage show`.
use std::{
    io::{BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context;
use pyusage::show::{load, Filter};
use pyusage_record::{format_micros, parse_micros, Record};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Jsonl,
    Csv,
}

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory (or a bare Parquet dataset root).
    #[arg(default_value = "data")]
    dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Only this package.
    #[arg(long)]
    package: Option<String>,
    /// Only this Slurm job.
    #[arg(long)]
    job: Option<String>,
    /// Only processes started at or after this time (RFC 3339, or a date YYYY-MM-DD).
    #[arg(long)]
    since: Option<String>,
}

fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Ok(us) = parse_micros(s) {
        return Ok(us);
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("--since {s:?}: expected RFC 3339 or YYYY-MM-DD"))?;
    Ok(d.and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_micros())
}

const TABLE_COLS: &[&str] = &[
    "process_start",
    "host",
    "pid",
    "exit",
    "job_id",
    "rank",
    "username",
    "package",
    "version",
    "env_kind",
];

fn field(r: &Record, v: &serde_json::Value, name: &str) -> String {
    if name == "process_start" {
        return format_micros(r.process_start);
    }
    match &v[name] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn csv_escape(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Prints records; exit status 2 when some file could not be read (the rest is printed).
pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let filter = Filter {
        package: args.package,
        job: args.job,
        since: args.since.as_deref().map(parse_since).transpose()?,
    };
    let loaded = load(&args.dir, &filter).map_err(anyhow::Error::msg)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    match args.format {
        Format::Jsonl => {
            for r in &loaded.records {
                serde_json::to_writer(&mut out, r)?;
                out.write_all(b"\n")?;
            }
        }
        Format::Csv => {
            let names: Vec<String> = pyusage_record::arrow_schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            writeln!(out, "{}", names.join(","))?;
            for r in &loaded.records {
                let v = serde_json::to_value(r)?;
                let row: Vec<String> = names.iter().map(|n| csv_escape(&field(r, &v, n))).collect();
                writeln!(out, "{}", row.join(","))?;
            }
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = loaded
                .records
                .iter()
                .map(|r| {
                    let v = serde_json::to_value(r).expect("record serialises");
                    TABLE_COLS.iter().map(|c| field(r, &v, c)).collect()
                })
                .collect();
            let mut w: Vec<usize> = TABLE_COLS.iter().map(|c| c.len()).collect();
            for row in &rows {
                for (i, c) in row.iter().enumerate() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
            let line = |cells: &[String]| -> String {
                cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{c:<width$}", width = w[i]))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
            };
            let head: Vec<String> = TABLE_COLS.iter().map(|s| s.to_string()).collect();
            writeln!(out, "{}", line(&head))?;
            for row in &rows {
                writeln!(out, "{}", line(row))?;
            }
        }
    }
    out.flush()?;
    for e in &loaded.errors {
        eprintln!("pyusage: skipped {e}");
    }
    Ok(if loaded.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
