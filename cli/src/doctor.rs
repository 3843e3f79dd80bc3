//! `pyusage doctor`: can this node run the daemon? Checks what attaching needs (kernel, BTF,
//! tracefs and the tracepoints, BPF permission and the verifier) and what attribution relies
//! on (cgroup v2, Slurm's cgroup layout), says what is missing, and exits non-zero when the
//! daemon could not attach.
use std::{path::PathBuf, process::ExitCode};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// tracefs mount point.
    #[arg(long, default_value = "/sys/kernel/tracing")]
    tracefs: PathBuf,
    /// Fail (not only warn) when no Slurm job cgroups are found.
    #[arg(long)]
    slurm: bool,
}

struct Report {
    failed: bool,
}

impl Report {
    fn ok(&self, what: &str, detail: impl std::fmt::Display) {
        println!("ok    {what}: {detail}");
    }
    fn warn(&self, what: &str, detail: impl std::fmt::Display) {
        println!("warn  {what}: {detail}");
    }
    fn fail(&mut self, what: &str, detail: impl std::fmt::Display) {
        println!("FAIL  {what}: {detail}");
        self.failed = true;
    }
}

/// Runs every check; exit status 1 when one that attaching needs failed.
pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let mut r = Report { failed: false };
    kernel(&mut r);
    btf(&mut r);
    tracefs(&mut r, &args);
    bpf(&mut r, &args);
    sampler(&r, &args);
    cgroups(&mut r, &args);
    Ok(if r.failed {
        println!("pyusage cannot attach on this node: see FAIL above");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// 5.8 or later: the BPF ring buffer.
fn kernel(r: &mut Report) {
    match std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        Ok(rel) => {
            let rel = rel.trim().to_owned();
            let v: Vec<u32> = rel
                .split(|c: char| !c.is_ascii_digit())
                .take(2)
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() == 2 && (v[0], v[1]) >= (5, 8) {
                r.ok("kernel", &rel);
            } else {
                r.fail(
                    "kernel",
                    format!("{rel}: 5.8 or later needed (BPF ring buffer)"),
                );
            }
        }
        Err(e) => r.fail("kernel", e),
    }
}

/// The kernel's BTF: where the offsets of its structures come from (no CO-RE).
fn btf(r: &mut Report) {
    match pyusage_daemon::btf::Btf::from_sys_fs() {
        Ok(_) => r.ok("BTF", "/sys/kernel/btf/vmlinux"),
        Err(e) => r.fail(
            "BTF",
            format!("{e} (a kernel built with CONFIG_DEBUG_INFO_BTF is needed)"),
        ),
    }
}

/// tracefs: the tracepoints' formats.
fn tracefs(r: &mut Report, args: &Args) {
    if args.tracefs.join("events/syscalls").is_dir() {
        r.ok("tracefs", args.tracefs.display());
    } else {
        r.fail(
            "tracefs",
            format!(
                "{}/events/syscalls missing (mount -t tracefs nodev {})",
                args.tracefs.display(),
                args.tracefs.display()
            ),
        );
    }
}

/// Loads every program through the verifier (without attaching) and reports its size.
fn bpf(r: &mut Report, args: &Args) {
    match pyusage_daemon::loader::check_load(&args.tracefs) {
        Ok(progs) => {
            r.ok(
                "BPF",
                "permission to load, tracepoint formats and BTF offsets resolved",
            );
            for p in progs {
                let n = |v: Option<u32>| v.map_or("?".to_owned(), |v| v.to_string());
                r.ok(
                    &format!("verifier {}", p.name),
                    format!(
                        "{} instructions verified, {} bytes",
                        n(p.verified_insns),
                        n(p.xlated_bytes)
                    ),
                );
            }
        }
        Err(e) => r.fail(
            "BPF",
            format!("{e} (root, or CAP_BPF + CAP_PERFMON, is needed; a lockdown kernel refuses)"),
        ),
    }
}

/// The CPU sampler (`cpu_samples_*`): attaches to the CPU clock, and reads a real
/// interpreter's stack the way the daemon does. Only a warning when it cannot: imports are
/// recorded without it.
fn sampler(r: &Report, args: &Args) {
    match pyusage_daemon::loader::check_sampler(&args.tracefs) {
        Ok(cpus) => r.ok(
            "CPU sampler",
            format!("attaches to the software CPU clock of {cpus} CPUs"),
        ),
        Err(e) => {
            return r.warn(
                "CPU sampler",
                format!("{e}: records will have no cpu_samples_* (set sample_hz = 0 to say so)"),
            )
        }
    }
    let python = std::env::var("PYUSAGE_DOCTOR_PYTHON").unwrap_or_else(|_| "python3".into());
    match walk_one(&python) {
        Ok(v) => r.ok(
            "CPU sampler",
            format!("reads the stacks of `{python}` ({v}): its samples are attributed"),
        ),
        Err(e) => r.warn("CPU sampler", format!("`{python}`: {e}")),
    }
}

/// Starts `python` sleeping inside a function of a known file and finds that function on its
/// stack as the daemon would; returns the interpreter's version.
fn walk_one(python: &str) -> anyhow::Result<String> {
    use std::io::BufRead;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("pyusage_doctor_probe.py");
    std::fs::write(
        &file,
        "import sys, time\ndef probe():\n    print('ready', flush=True)\n    time.sleep(30)\nprobe()\n",
    )?;
    let mut child = std::process::Command::new(python)
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let found = (|| {
        let interp = pyusage_daemon::cpython::Interpreter::inspect(child.id())?;
        let stacks = interp.walk_threads()?;
        let files: Vec<String> = stacks
            .iter()
            .flat_map(|t| t.frames.iter())
            .filter_map(|&c| interp.code_filename(c).ok())
            .collect();
        anyhow::ensure!(
            files.iter().any(|f| f.ends_with("pyusage_doctor_probe.py")),
            "the probe's frame is not on its stack (read {files:?})"
        );
        Ok(format!("CPython {}", interp.version))
    })();
    let _ = child.kill();
    let _ = child.wait();
    found
}

/// The cgroup hierarchy and Slurm's cgroups, from which jobs are attributed.
fn cgroups(r: &mut Report, args: &Args) {
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        r.ok("cgroup", "v2 (unified)");
    } else {
        r.warn(
            "cgroup",
            "v1 or hybrid hierarchy (Slurm jobs are read from its slurm/ tree)",
        );
    }
    let slurm: Vec<PathBuf> = [
        "/sys/fs/cgroup/system.slice/slurmstepd.scope",
        "/sys/fs/cgroup/freezer/slurm",
    ]
    .iter()
    .map(PathBuf::from)
    .chain(
        std::fs::read_dir("/sys/fs/cgroup/freezer")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("slurm_"))
            }),
    )
    .filter(|p| p.is_dir())
    .collect();
    match slurm.first() {
        Some(p) => r.ok("Slurm cgroups", p.display()),
        None if args.slurm => r.fail(
            "Slurm cgroups",
            "none found (ProctrackType=proctrack/cgroup, or no slurmd on this node): jobs \
             would be attributed from the environment only",
        ),
        None => r.warn(
            "Slurm cgroups",
            "none found: jobs are attributed from the environment (job_source = env)",
        ),
    }
}
