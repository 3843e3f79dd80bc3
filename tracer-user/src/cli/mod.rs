//! Command-line arguments and dispatch; one file per subcommand.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod canary;
mod daemon;
mod show;
mod status;

/// pyusage: which Python packages the jobs on this node really import.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attach the eBPF tracer and record imports (root).
    Daemon(daemon::Args),
    /// Print recorded imports (Parquet dataset and spool, de-duplicated).
    Show(show::Args),
    /// Attach state, drop counters, spool depth, sink lag.
    Status(status::Args),
    /// Run a Python probe and wait for its record to come back.
    Canary(canary::Args),
}

/// Runs the chosen subcommand.
pub fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Daemon(a) => daemon::execute(a),
        Command::Show(a) => show::execute(a),
        Command::Status(a) => status::execute(a),
        Command::Canary(a) => canary::execute(a),
    }
}
