//! `pyusage`: one binary, thin subcommands over the library (see `cli/`).
use std::process::ExitCode;

use clap::Parser;

mod cli;

/// Events are allocated on the event loop and freed on the processor thread, ~300 per Python
/// start; glibc's malloc spent more time consolidating arenas than the daemon spent decoding.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PYUSAGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::execute(args) {
        Ok(code) => code,
        Err(e) => {
            // A reader that went away (`pyusage show | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("pyusage: {e:#}");
            ExitCode::from(1)
        }
    }
}
