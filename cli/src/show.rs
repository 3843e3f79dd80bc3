//! `pyusage show`.
use std::{
    io::{BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context;
use pyusage_compare::customs::CustomsRow;
use pyusage_record::data_dir::{load, Filter};
use pyusage_record::{columns as c, format_micros, parse_micros, Record};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Jsonl,
    Csv,
    /// JSON lines under the old `customs` field names (docs/customs.md), one per record.
    Customs,
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
    c::PROCESS_START,
    c::HOST,
    c::PID,
    c::EXIT,
    c::JOB_ID,
    c::RANK,
    c::USERNAME,
    c::PACKAGE,
    c::VERSION,
    c::ENV_KIND,
    c::CPU_USER_US,
    c::CPU_SYS_US,
    c::CPU_SAMPLES_SELF,
    c::CPU_SAMPLES_INCLUSIVE,
];

/// One field for the table or CSV. Strings are the users' (job ids, paths, versions, names):
/// control characters (ESC/CSI/OSC sequences, C1 codes) and bidirectional overrides are shown
/// as `\u{..}` escapes so that nothing reaches the administrator's terminal as a command; the
/// `jsonl` format keeps them exactly, JSON-escaped.
fn field(r: &Record, v: &serde_json::Value, name: &str) -> Cell {
    if name == c::PROCESS_START {
        return Cell::Other(format_micros(r.process_start));
    }
    match &v[name] {
        serde_json::Value::Null => Cell::Other(String::new()),
        serde_json::Value::String(s) => Cell::Text(terminal_safe(s)),
        // A list's JSON (`sources`, `cpu_samples_callers`): its strings may be the users'
        // (callers' package names), and JSON leaves C1 controls and bidi overrides as they
        // are. It starts with `[`, which no spreadsheet evaluates.
        v @ (serde_json::Value::Array(_) | serde_json::Value::Object(_)) => {
            Cell::Other(terminal_safe(&v.to_string()))
        }
        other => Cell::Other(other.to_string()),
    }
}

/// A field's text: user-controlled strings apart from numbers and times (the CSV formula
/// guard applies to the former only, so `-1` stays a number).
enum Cell {
    Text(String),
    Other(String),
}

impl Cell {
    fn text(self) -> String {
        match self {
            Cell::Text(s) | Cell::Other(s) => s,
        }
    }
}

/// `s` with every character a terminal could interpret escaped.
pub fn terminal_safe(s: &str) -> String {
    let hostile = pyusage_compare::customs::hostile;
    if !s.chars().any(hostile) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if hostile(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// RFC 4180 quoting, and the OWASP formula guard: a string cell a spreadsheet would evaluate
/// (`=`, `+`, `-`, `@`, tab, CR first) is prefixed with `'`.
fn csv_cell(c: Cell) -> String {
    let s = match c {
        Cell::Text(s) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => format!("'{s}"),
        c => c.text(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Prints records; exit status 2 when some file could not be read (the rest is printed).
pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let filter = Filter {
        package: args.package,
        job: args.job,
        since: args.since.as_deref().map(parse_since).transpose()?,
    };
    let loaded = load(&args.dir, &filter)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    match args.format {
        Format::Jsonl => {
            for r in &loaded.records {
                serde_json::to_writer(&mut out, r)?;
                out.write_all(b"\n")?;
            }
        }
        Format::Customs => {
            for r in &loaded.records {
                serde_json::to_writer(&mut out, &CustomsRow::from_record(r))?;
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
                let row: Vec<String> = names.iter().map(|n| csv_cell(field(r, &v, n))).collect();
                writeln!(out, "{}", row.join(","))?;
            }
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = loaded
                .records
                .iter()
                .map(|r| {
                    let v = serde_json::to_value(r).expect("record serialises");
                    TABLE_COLS.iter().map(|c| field(r, &v, c).text()).collect()
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
        eprintln!("pyusage: skipped {}", terminal_safe(&e.to_string()));
    }
    Ok(if loaded.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_columns_are_columns() {
        assert_eq!(c::all_known(TABLE_COLS.iter().copied()), Ok(()));
        let mut r = Record::example();
        r.job_id = Some("7".into());
        r.rank = Some(0);
        (r.cpu_user_us, r.cpu_sys_us) = (Some(1_250_000), Some(3_000));
        (r.cpu_samples_self, r.cpu_samples_inclusive) = (Some(12), Some(20));
        let v = serde_json::to_value(&r).unwrap();
        for col in TABLE_COLS {
            assert!(!field(&r, &v, col).text().is_empty(), "{col} read as empty");
        }
    }

    #[test]
    fn caller_names_in_a_list_cell_are_escaped() {
        let mut r = Record::example();
        r.cpu_samples_callers = vec![pyusage_record::CallerSamples {
            package: "x\u{9b}31m\u{202e}".into(),
            samples: 3,
        }];
        let v = serde_json::to_value(&r).unwrap();
        let cell = field(&r, &v, c::CPU_SAMPLES_CALLERS).text();
        assert!(
            !cell.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{cell}"
        );
        assert!(cell.starts_with("[{"), "{cell}");
    }

    #[test]
    fn terminal_sequences_are_escaped_and_formulas_guarded() {
        let osc = "\u{1b}]0;pwned\u{7}\u{9b}31m\u{202e}x";
        let safe = terminal_safe(osc);
        assert!(!safe.chars().any(|c| c.is_control()), "{safe}");
        assert_eq!(safe, "\\u{1b}]0;pwned\\u{7}\\u{9b}31m\\u{202e}x");
        assert_eq!(terminal_safe("numpy 2.1 é"), "numpy 2.1 é");
        assert_eq!(
            csv_cell(Cell::Text("=HYPERLINK(\"x\")".into())),
            "\"'=HYPERLINK(\"\"x\"\")\""
        );
        assert_eq!(csv_cell(Cell::Text("@SUM(A1)".into())), "'@SUM(A1)");
        assert_eq!(csv_cell(Cell::Other("-1".into())), "-1");
        assert_eq!(csv_cell(Cell::Text("a,b".into())), "\"a,b\"");
    }
}
