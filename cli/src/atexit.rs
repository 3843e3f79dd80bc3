//! `pyusage atexit install`: writes the atexit collector (`pyusage_compare::atexit`).
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use pyusage_compare::atexit::{compile, install, Install};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Write `sitecustomize.py` into a directory, for users' `PYTHONPATH` (as the old tools did).
    Install(InstallArgs),
}

#[derive(Debug, clap::Args)]
struct InstallArgs {
    /// Directory to write `sitecustomize.py` into (put it on `PYTHONPATH`).
    #[arg(long)]
    prefix: PathBuf,
    /// Spool directory for JSON lines when no daemon listens (created mode 1733 if missing).
    #[arg(long = "out")]
    spool: Option<PathBuf>,
    /// The daemon's preload socket, used when it exists.
    #[arg(long, default_value = "/run/pyusage/preload.sock")]
    socket: PathBuf,
    /// Never send to the daemon's socket: the spool only.
    #[arg(long)]
    no_socket: bool,
    /// Only these top-level packages (comma-separated), as the old tools' fixed list.
    #[arg(long, value_delimiter = ',')]
    packages: Option<Vec<String>>,
    /// Only rank 0 of an MPI job reports (the old tool's behaviour).
    #[arg(long)]
    rank0_only: bool,
    /// Time budget of the exit-time work, in ms; past it the report stops (and is counted).
    #[arg(long, default_value_t = 50)]
    budget_ms: u32,
    /// Members of this group (name or gid) are recorded as staff.
    #[arg(long)]
    staff_group: Option<String>,
    /// Cluster name (else the job's `SLURM_CLUSTER_NAME`).
    #[arg(long)]
    system: Option<String>,
    /// Node class.
    #[arg(long)]
    subsystem: Option<String>,
    /// Byte-compile the hook with these interpreters (comma-separated; default: `python3` and
    /// `python` on PATH), so that no user's exit pays for compiling it.
    #[arg(long, value_delimiter = ',')]
    compile_with: Option<Vec<PathBuf>>,
}

/// `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The gid of a group name or number, from `/etc/group`.
fn gid_of(group: &str) -> anyhow::Result<u32> {
    if let Ok(g) = group.parse() {
        return Ok(g);
    }
    let text = std::fs::read_to_string("/etc/group").context("reading /etc/group")?;
    text.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(group)).then(|| f.nth(1)?.parse().ok())?
        })
        .with_context(|| format!("--staff-group {group:?}: no such group in /etc/group"))
}

/// Installs the hook.
pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let Action::Install(a) = args.action;
    if a.no_socket && a.spool.is_none() {
        anyhow::bail!("--no-socket needs --out: the hook would have nowhere to write");
    }
    let cfg = Install {
        spool: a.spool.map(|p| std::path::absolute(&p)).transpose()?,
        socket: (!a.no_socket).then_some(a.socket),
        packages: a.packages,
        rank0_only: a.rank0_only,
        budget_ms: a.budget_ms,
        staff_gid: a.staff_group.as_deref().map(gid_of).transpose()?,
        system: a.system,
        subsystem: a.subsystem,
    };
    // Absolute: the PYTHONPATH printed below is pasted into other shells and job scripts.
    let prefix = std::path::absolute(&a.prefix)?;
    let files = install(&prefix, &cfg)?;
    for f in &files {
        println!("wrote {}", f.display());
    }
    let pythons = a.compile_with.unwrap_or_else(|| {
        ["python3", "python"]
            .iter()
            .filter_map(|n| on_path(n))
            .collect()
    });
    for py in &pythons {
        match compile(&prefix, py) {
            Ok(()) => println!("compiled with {}", py.display()),
            // The hook still works: that interpreter compiles it at each exit.
            Err(e) => eprintln!("pyusage: warning: {}", pyusage_record::error_line(&e)),
        }
    }
    println!(
        "use it with: export PYTHONPATH={}${{PYTHONPATH:+:$PYTHONPATH}}",
        prefix.display()
    );
    Ok(ExitCode::SUCCESS)
}
