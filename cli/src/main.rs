//! `pyusage`: one binary, one file per subcommand, each a thin layer over the library crates:
//! the daemon (`tracer-user`, lib `pyusage_daemon`), the record and its dataset
//! (`pyusage-record`) and the analysis (`pyusage-analysis`). Errors are `anyhow` here, with
//! context added where a library error alone would not say which file or which step.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod analyze;
mod atexit;
#[cfg(feature = "daemon")]
mod canary;
mod compare;
#[cfg(feature = "daemon")]
mod daemon;
#[cfg(feature = "daemon")]
mod doctor;
mod import_customs;
mod ingest;
mod show;
#[cfg(feature = "daemon")]
mod status;
mod synth;

/// Events are allocated on the event loop and freed on the processor thread, ~300 per Python
/// start; glibc's malloc spent more time consolidating arenas than the daemon spent decoding.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// pyusage: which Python packages the jobs on this node really import.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attach the eBPF tracer and record imports (root).
    #[cfg(feature = "daemon")]
    Daemon(daemon::Args),
    /// Check that this node can run the daemon, and say what is missing (root).
    #[cfg(feature = "daemon")]
    Doctor(doctor::Args),
    /// Print recorded imports (Parquet dataset and spool, de-duplicated).
    Show(show::Args),
    /// Attach state, drop counters, spool depth, sink lag.
    #[cfg(feature = "daemon")]
    Status(status::Args),
    /// Run a Python probe and wait for its record to come back.
    #[cfg(feature = "daemon")]
    Canary(canary::Args),
    /// Write a synthetic dataset in the record schema.
    Synth(synth::Args),
    /// Analyse a dataset: the report's tables as JSON, CSV or an HTML page, on the CPU or a GPU.
    Analyze(Box<analyze::Args>),
    /// The atexit collector: a `sitecustomize.py` for `PYTHONPATH`, as NERSC-style tools used.
    Atexit(atexit::Args),
    /// Import customs-style JSON lines (old atexit data) into a Parquet dataset of this schema.
    ImportCustoms(import_customs::Args),
    /// Compare the kernel's (or the library's) records against atexit records.
    Compare(compare::Args),
    /// Central ingest: records from rsyslog (omprog, stdin) or node datasets into one dataset.
    Ingest(ingest::Args),
}

fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        #[cfg(feature = "daemon")]
        Command::Daemon(a) => daemon::execute(a),
        #[cfg(feature = "daemon")]
        Command::Doctor(a) => doctor::execute(a),
        Command::Show(a) => show::execute(a),
        #[cfg(feature = "daemon")]
        Command::Status(a) => status::execute(a),
        #[cfg(feature = "daemon")]
        Command::Canary(a) => canary::execute(a),
        Command::Synth(a) => synth::execute(a),
        Command::Analyze(a) => analyze::execute(*a),
        Command::Atexit(a) => atexit::execute(a),
        Command::ImportCustoms(a) => import_customs::execute(a),
        Command::Compare(a) => compare::execute(a),
        Command::Ingest(a) => ingest::execute(a),
    }
}

fn main() -> ExitCode {
    let args = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PYUSAGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match execute(args) {
        Ok(code) => code,
        Err(e) => {
            // A reader that went away (`pyusage show | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("pyusage: {}", chain(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line (the record crate's `error_line`, shared with the
/// analysis's notes).
fn chain(e: &anyhow::Error) -> String {
    pyusage_record::error_line(e.as_ref())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::new(pyusage_record::atomic::PathError {
            path: "/d/offset".into(),
            source: io,
        })
        .context("committing");
        assert_eq!(super::chain(&e), "committing: /d/offset: disk full");
        let io = std::io::Error::other("gone");
        let e = anyhow::Error::new(io).context("reading f: gone (is it mounted?)");
        assert_eq!(super::chain(&e), "reading f: gone (is it mounted?)");
    }
}
