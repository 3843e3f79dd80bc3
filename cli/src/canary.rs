//! `pyusage canary`: proves the pipeline end to end. Starts a Python probe that imports a
//! package with a unique name, then waits for its record to come back — from the file a
//! collector writes (`--syslog-file`) or from the data directory — and fails with a reason
//! when it does not arrive in time.
use std::{
    path::PathBuf,
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::Context;
use pyusage_daemon::status::Status;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory of the daemon.
    #[arg(default_value = "data")]
    dir: PathBuf,
    /// Wait for the record in this file (e.g. what rsyslog writes) instead of the spool.
    #[arg(long)]
    syslog_file: Option<PathBuf>,
    /// Seconds to wait.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Interpreter for the probe.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
}

/// Runs the probe; exit status 1 with a reason when the record does not arrive.
pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let marker = format!("pyusage_canary_{}", uuid::Uuid::now_v7().simple());
    let dir = std::env::temp_dir().join(&marker);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{marker}.py")), "")?;
    let status = Command::new(&args.python)
        .env("PYTHONPATH", &dir)
        .args(["-c", &format!("import {marker}")])
        .status()
        .with_context(|| format!("starting the probe {}", args.python.display()));
    let _ = std::fs::remove_dir_all(&dir);
    let status = status?;
    if !status.success() {
        eprintln!(
            "pyusage canary: FAILED: the probe {} exited with {status}",
            args.python.display()
        );
        return Ok(ExitCode::from(1));
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let started = Instant::now();
    loop {
        let found = match &args.syslog_file {
            Some(f) => std::fs::read(f)
                .map(|b| b.windows(marker.len()).any(|w| w == marker.as_bytes()))
                .unwrap_or(false),
            None => pyusage_record::data_dir::load(
                &args.dir,
                &pyusage_record::data_dir::Filter {
                    package: Some(marker.clone()),
                    ..Default::default()
                },
            )
            .map(|l| !l.records.is_empty())
            .unwrap_or(false),
        };
        if found {
            println!(
                "pyusage canary: ok: {marker} arrived after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            let whence = match &args.syslog_file {
                Some(f) => format!("in {}", f.display()),
                None => format!("in {}", args.dir.display()),
            };
            let mut why = format!(
                "the probe's record ({marker}) did not arrive {whence} within {} s",
                args.timeout
            );
            match Status::read(&args.dir) {
                Ok(st) => {
                    for (name, s) in &st.sinks {
                        if let Some(e) = &s.last_error {
                            why.push_str(&format!("; {name} sink error: {e}"));
                        }
                    }
                }
                Err(_) => {
                    why.push_str("; no daemon status in the data directory: is the daemon running?")
                }
            }
            eprintln!("pyusage canary: FAILED: {why}");
            return Ok(ExitCode::from(1));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
