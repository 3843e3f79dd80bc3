//! `pyusage daemon`.
use std::{path::PathBuf, process::ExitCode};

use pyusage_daemon::config::Config;

/// Flags override the configuration file field by field.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file [default: /etc/pyusage/config.toml if it exists].
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Data directory (spool, Parquet dataset, status.json).
    #[arg(long, short = 'd')]
    data_dir: Option<PathBuf>,
    /// Host name written in records.
    #[arg(long)]
    host: Option<String>,
    /// Cluster name (`system`).
    #[arg(long)]
    system: Option<String>,
    /// Node class (`subsystem`).
    #[arg(long)]
    subsystem: Option<String>,
    /// This is a compute node.
    #[arg(long)]
    compute: bool,
    /// Group whose members are staff.
    #[arg(long)]
    staff_group: Option<String>,
    /// Seconds between `running` snapshots of long-lived processes.
    #[arg(long)]
    flush_secs: Option<u64>,
    /// Seconds after which the spool is converted to Parquet.
    #[arg(long)]
    rotate_secs: Option<u64>,
    /// Spool bytes after which it is converted to Parquet.
    #[arg(long)]
    rotate_bytes: Option<u64>,
    /// Bound on the spool directory, bytes.
    #[arg(long)]
    spool_max_bytes: Option<u64>,
    /// Syslog target: unix:PATH, udp:HOST:PORT or tcp:HOST:PORT.
    #[arg(long)]
    syslog: Option<String>,
    /// Largest syslog message, bytes.
    #[arg(long)]
    syslog_max_bytes: Option<usize>,
    /// Most syslog messages per second (0 = unlimited).
    #[arg(long)]
    syslog_rate_limit: Option<u32>,
    /// Records of MPI ranks: every rank, the first per job step and package, or one per node
    /// with a count of ranks.
    #[arg(long, value_enum)]
    ranks: Option<pyusage_daemon::ranks::RankPolicy>,
    /// Seconds after the last rank ended before a per-node aggregate is written.
    #[arg(long)]
    rank_window_secs: Option<u64>,
    /// Entries of the kernel's process map (each non-root uid may hold a sixteenth of them on
    /// probation).
    #[arg(long)]
    kernel_procs: Option<u32>,
    /// Size of the kernel's ring buffer of events, MiB (a power of two).
    #[arg(long)]
    kernel_ring_mib: Option<u32>,
    /// CPU samples per CPU-second of Python processes (0: sampling off; default 19).
    #[arg(long)]
    sample_hz: Option<u32>,
    /// Listen for the preload library (`libpyusage_preload.so`) on this socket (the library's
    /// default is /run/pyusage/preload.sock).
    #[arg(long)]
    preload_socket: Option<PathBuf>,
    /// Do not attach the eBPF tracer: preload-only mode (needs --preload-socket).
    #[arg(long)]
    no_ebpf: bool,
    /// Become this user once attached (keeping only the capabilities reading needs).
    #[arg(long)]
    user: Option<String>,
    /// Write this file (atomically, with the pid) once attached; its directory must be
    /// writable by the daemon's user.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

impl Args {
    fn into_config(self) -> anyhow::Result<(Config, Option<PathBuf>)> {
        let mut c = Config::load(self.config.as_deref())?;
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        c.host = self.host.or(c.host);
        c.system = self.system.or(c.system);
        c.subsystem = self.subsystem.or(c.subsystem);
        c.is_compute |= self.compute;
        c.staff_group = self.staff_group.or(c.staff_group);
        if let Some(v) = self.flush_secs {
            c.flush_secs = v;
        }
        if let Some(v) = self.rotate_secs {
            c.rotate_secs = v;
        }
        if let Some(v) = self.rotate_bytes {
            c.rotate_bytes = v;
        }
        if let Some(v) = self.spool_max_bytes {
            c.spool_max_bytes = v;
        }
        c.syslog.target = self.syslog.or(c.syslog.target);
        if let Some(v) = self.ranks {
            c.ranks = v;
        }
        if let Some(v) = self.rank_window_secs {
            c.rank_window_secs = v;
        }
        if let Some(v) = self.syslog_max_bytes {
            c.syslog.max_message_bytes = v;
        }
        if let Some(v) = self.syslog_rate_limit {
            c.syslog.rate_limit = v;
        }
        if let Some(v) = self.kernel_procs {
            c.kernel_procs = v;
        }
        if let Some(v) = self.kernel_ring_mib {
            c.kernel_ring_mib = v;
        }
        if let Some(v) = self.sample_hz {
            c.sample_hz = v;
        }
        c.preload_socket = self.preload_socket.or(c.preload_socket);
        if self.no_ebpf {
            c.ebpf = false;
        }
        c.user = self.user.or(c.user);
        c.validate()?;
        Ok((c, self.ready_file))
    }
}

/// Runs the daemon.
pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let (cfg, ready) = args.into_config()?;
    pyusage_daemon::daemon::run(cfg, ready)?;
    Ok(ExitCode::SUCCESS)
}
