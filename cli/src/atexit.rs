//! `pyusage atexit install`.
use std::process::ExitCode;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Not yet built.
pub fn execute(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet built")
}
