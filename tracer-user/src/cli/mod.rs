//! Command-line arguments and dispatch; one file per subcommand.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod daemon;
mod show;

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
}

/// Runs the chosen subcommand.
pub fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Daemon(a) => daemon::execute(a),
        Command::Show(a) => show::execute(a),
    }
}
