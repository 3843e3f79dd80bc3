//! `pyusage compare`: the kernel's records against atexit records (`pyusage_compare`).
use std::{
    collections::HashSet,
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use pyusage_compare::{
    atexit,
    join::Side,
    report::{compare, HookHealth, Options},
};
use pyusage_record::{
    data_dir::{load, Filter},
    Record,
};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
    Html,
}

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The kernel side: a daemon's data directory or a dataset root (records seen by eBPF or
    /// the preload library).
    #[arg(long = "ebpf")]
    kernel: PathBuf,
    /// The atexit side: an atexit spool directory, a dataset imported with `import-customs`,
    /// or the same data directory (a daemon that received the hook's reports).
    #[arg(long)]
    atexit: PathBuf,
    /// Output format on stdout (with `--out`, all of them are written there instead).
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write compare.txt, compare.json and compare.html into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Tolerance between the two sides' start times of one process, in seconds.
    #[arg(long, default_value_t = 2.0)]
    skew: f64,
    /// First month (YYYY-MM) of the kernel side in the stitched monthly series.
    #[arg(long)]
    cutover: Option<String>,
    /// Packages per ranking.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Rank standard-library packages too.
    #[arg(long)]
    with_stdlib: bool,
    /// Examples listed per reason.
    #[arg(long, default_value_t = 3)]
    examples: usize,
    /// `sacct -P -n -o JobID,State` output: processes of TIMEOUT jobs killed by a signal are
    /// counted as killed at the time limit.
    #[arg(long)]
    sacct: Option<PathBuf>,
}

/// Records of one side and what could not be read.
struct Loaded {
    records: Vec<Record>,
    health: HookHealth,
    /// (host, pid, uid) of processes whose hook recorded an error.
    errored: HashSet<(String, i32, u32)>,
    unreadable: Vec<String>,
}

fn read(path: &Path) -> anyhow::Result<Loaded> {
    if atexit::is_spool(path) {
        let s = atexit::read_spool(path)
            .with_context(|| format!("reading the atexit spool {}", path.display()))?;
        let health = HookHealth {
            processes_with_errors: s.errors.iter().filter(|e| !e.errors.is_empty()).count() as u64,
            errors: s.errors.iter().map(|e| e.errors.len() as u64).sum(),
            budget_exceeded: s.errors.iter().filter(|e| e.budget_exceeded).count() as u64,
            forged_records: s.forged,
            bad_lines: s.bad_lines,
        };
        return Ok(Loaded {
            records: s.records,
            health,
            errored: s
                .errors
                .iter()
                .map(|e| (e.host.clone(), e.pid, e.uid))
                .collect(),
            unreadable: s.unreadable.iter().map(|e| e.to_string()).collect(),
        });
    }
    let l =
        load(path, &Filter::default()).with_context(|| format!("reading {}", path.display()))?;
    Ok(Loaded {
        records: l.records,
        health: HookHealth::default(),
        errored: HashSet::new(),
        unreadable: l.errors.iter().map(|e| e.to_string()).collect(),
    })
}

fn timeouts(path: &Path) -> anyhow::Result<HashSet<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (job, state) = l.split_once('|')?;
            state
                .starts_with("TIMEOUT")
                .then(|| job.split('.').next().unwrap_or(job).to_owned())
        })
        .collect())
}

/// Compares and prints (or writes) the report; exit status 2 when some input was unreadable.
pub fn execute(a: Args) -> anyhow::Result<ExitCode> {
    // Normalised (`2026-2` → `2026-02`): the series compare months as text.
    let cutover = a
        .cutover
        .as_deref()
        .map(|c| {
            chrono::NaiveDate::parse_from_str(&format!("{c}-01"), "%Y-%m-%d")
                .map(|d| d.format("%Y-%m").to_string())
                .with_context(|| format!("--cutover {c:?}: expected YYYY-MM"))
        })
        .transpose()?;
    if !(a.skew.is_finite() && a.skew >= 0.0) {
        anyhow::bail!("--skew {}: expected seconds ≥ 0", a.skew);
    }
    let kernel = read(&a.kernel)?;
    let same = a.kernel.canonicalize().ok() == a.atexit.canonicalize().ok();
    let mut atexit = if same { None } else { Some(read(&a.atexit)?) };
    // A hook installed with a spool and the daemon's socket writes to whichever it finds: the
    // reports the daemon received are in the kernel side's dataset, marked `atexit`.
    if let Some(x) = atexit.as_mut() {
        x.records.extend(
            kernel
                .records
                .iter()
                .filter(|r| Side::Atexit.saw(r))
                .cloned(),
        );
    }
    let at = atexit.as_ref().unwrap_or(&kernel);
    let mut unreadable = kernel.unreadable.clone();
    if let Some(x) = &atexit {
        unreadable.extend(x.unreadable.iter().cloned());
    }
    let o = Options {
        skew_us: (a.skew * 1e6) as i64,
        cutover,
        top: a.top,
        with_stdlib: a.with_stdlib,
        timeouts: a
            .sacct
            .as_deref()
            .map(timeouts)
            .transpose()?
            .unwrap_or_default(),
        examples: a.examples,
    };
    let names = (
        a.kernel.display().to_string(),
        a.atexit.display().to_string(),
    );
    let c = compare(
        &kernel.records,
        &at.records,
        names,
        at.health.clone(),
        at.errored.clone(),
        unreadable,
        &o,
    );
    let text = || pyusage_compare::text::render(&c, &crate::show::terminal_safe);
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let write = |name: &str, body: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))
        };
        write("compare.txt", text().as_bytes())?;
        write("compare.json", &serde_json::to_vec_pretty(&c)?)?;
        write("compare.html", pyusage_compare::html::render(&c).as_bytes())?;
        eprintln!(
            "wrote compare.txt, compare.json and compare.html to {}",
            dir.display()
        );
    } else {
        let mut out = std::io::stdout().lock();
        match a.format {
            Format::Table => out.write_all(text().as_bytes())?,
            Format::Json => {
                serde_json::to_writer_pretty(&mut out, &c)?;
                out.write_all(b"\n")?;
            }
            Format::Html => out.write_all(pyusage_compare::html::render(&c).as_bytes())?,
        }
    }
    for u in &c.unreadable {
        eprintln!("pyusage: skipped {}", crate::show::terminal_safe(u));
    }
    Ok(if c.unreadable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
