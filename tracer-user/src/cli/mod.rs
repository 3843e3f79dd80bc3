//! Command-line arguments and dispatch; one file per subcommand.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod analyze;
mod canary;
mod daemon;
mod doctor;
mod show;
mod status;
mod synth;

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
    /// Check that this node can run the daemon, and say what is missing (root).
    Doctor(doctor::Args),
    /// Print recorded imports (Parquet dataset and spool, de-duplicated).
    Show(show::Args),
    /// Attach state, drop counters, spool depth, sink lag.
    Status(status::Args),
    /// Run a Python probe and wait for its record to come back.
    Canary(canary::Args),
    /// Write a synthetic dataset in the record schema.
    Synth(synth::Args),
    /// Analyse a dataset (CPU; top-N packages and job sizes so far), as JSON.
    Analyze(analyze::Args),
}

/// Runs the chosen subcommand.
pub fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Daemon(a) => daemon::execute(a),
        Command::Doctor(a) => doctor::execute(a),
        Command::Show(a) => show::execute(a),
        Command::Status(a) => status::execute(a),
        Command::Canary(a) => canary::execute(a),
        Command::Synth(a) => synth::execute(a),
        Command::Analyze(a) => analyze::execute(a),
    }
}
