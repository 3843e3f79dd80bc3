//! `pyusage status`: attach state, drop counters, spool depth, last delivery, sink lag.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use pyusage_daemon::{sinks::SinkStatus, status::Status};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory of the daemon.
    #[arg(default_value = "data")]
    dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// Prints the status; exit status 3 when the daemon is not running.
pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let st = Status::read(&args.dir).context("no daemon status (has the daemon run here?)")?;
    let running = std::path::Path::new(&format!("/proc/{}", st.pid)).exists();
    let written = st.next_seq.saturating_sub(1);
    let lag = |s: &SinkStatus| written.saturating_sub(s.delivered_seq);
    match args.format {
        Format::Json => {
            let mut v = serde_json::to_value(&st)?;
            v["running"] = running.into();
            for (name, s) in &st.sinks {
                v[format!("{name}_lag")] = lag(s).into();
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Text => {
            use pyusage_daemon::loader::Counter::*;
            let c = &st.counters;
            println!(
                "daemon:      {} (pid {})",
                if running { "attached" } else { "not running" },
                st.pid
            );
            println!("kernel:      {} python execs, {} events sent, {} ring-full drops, {} read failures, {} map-full, {} unread kernel paths",
                c[PythonExecs], c[EventsSent], c[RingFull], c[ReadFailed], c[StashFull] + c[ProcsFull], c[KpathUnread]);
            println!(
                "refused:     {} probation (uid share), {} opens (uid share), {} events (uid ring share), {} batches (queue full)",
                c[ProbationQuota], c[StashQuota], c[RingShare], st.queue_full
            );
            if let Some(p) = &st.preload {
                println!(
                    "preload:     {} ({}); {} connections ({} refused), {} messages, {} atexit reports, {} malformed, {} without Hello, {} uid pauses, {} Hellos over budget, {} connector overruns",
                    st.collectors.join(" + "),
                    if st.collectors.iter().any(|c| c == "ebpf") { "both" } else { "preload-only" },
                    p.connections, p.refused, p.messages, p.atexit, p.malformed, p.no_hello, p.paused,
                    p.hello_limited, p.cnproc_overruns
                );
            }
            let m = &st.metadata;
            println!(
                "metadata:    {} links, {} special files, {} cut, {} not the user's to read, {} deadlines missed ({} ELF), {} jobs dropped",
                m.symlink, m.not_regular, m.truncated, m.not_permitted, m.deadline_missed,
                m.elf_deadline_missed, m.queue_full
            );
            println!(
                "records:     {} spooled since start, last seq {}, {} live processes",
                st.records_spooled, written, st.live_processes
            );
            println!(
                "spool:       {} bytes, {} write errors, {} bound hits",
                st.spool_bytes, st.spool_errors, st.spool_bound_hits
            );
            if st.sinks.is_empty() {
                println!("sinks:       none configured (the Parquet dataset only)");
            }
            for (name, s) in &st.sinks {
                println!(
                    "{:<13}{} {}, delivered up to seq {} (lag {}), last delivery {}, {} errors{}",
                    format!("{name}:"),
                    s.target,
                    if s.connected {
                        "connected"
                    } else {
                        "disconnected"
                    },
                    s.delivered_seq,
                    lag(s),
                    s.last_delivery
                        .map(pyusage_record::format_micros)
                        .unwrap_or_else(|| "never".into()),
                    s.errors,
                    s.last_error
                        .as_deref()
                        .map(|e| format!(" (now: {e})"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(if running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
