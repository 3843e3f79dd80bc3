//! Our own atexit collector: a dependency-free `sitecustomize.py` (Python 2.7 and 3.x) that, at
//! interpreter exit, writes the top-level packages of `sys.modules` as records of this schema
//! with `source = "atexit"`, as NERSC-style monitoring did. It exists to measure that method
//! against the kernel's, with the same fields on both sides: `pyusage compare` reads what it
//! writes.
//!
//! Where it writes: to the daemon's preload socket when the socket exists (wire kind `Atexit`:
//! the daemon attributes the report by the kernel's credentials and marks the packages
//! `atexit` in the same records), else to `<spool>/atexit-<host>-<uid>-<date>.jsonl`, one
//! record per line, appended in one `write` to a file of the user's own (mode 0600, opened
//! without following links, its owner checked). Errors and a blown time budget are counted in
//! `<spool>/atexit-<host>-<uid>.errors`.
use std::{
    fs,
    io::{BufRead, BufReader},
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use pyusage_record::{
    atomic::{write_atomic, Durability, PathError},
    segment, ReadError, Record,
};
use serde::Deserialize;

/// `sitecustomize.py`: imported at every start-up, so it only registers the exit handler (and
/// chains to a `sitecustomize` it shadows).
pub const STUB: &str = include_str!("atexit/sitecustomize.py");
/// `_pyusage_atexit.py`, the exit-time part, imported by the handler; its `_CONFIG = {}` line
/// is replaced at install.
pub const BODY: &str = include_str!("atexit/_pyusage_atexit.py");
const CONFIG_LINE: &str = "_CONFIG = {}\n";

/// What the installed hook does; baked into the file (the hook reads no configuration at
/// run time: nothing a user could point elsewhere).
#[derive(Debug, Clone, Default)]
pub struct Install {
    /// JSON-lines spool directory (none: socket only).
    pub spool: Option<PathBuf>,
    /// The daemon's preload socket, used when it exists.
    pub socket: Option<PathBuf>,
    /// Only these top-level packages (the old tools' fixed list); all when `None`.
    pub packages: Option<Vec<String>>,
    /// Only rank 0 of an MPI job reports (the old tool's behaviour).
    pub rank0_only: bool,
    /// Time budget for the exit-time work, ms.
    pub budget_ms: u32,
    /// Members of this group (gid) are `is_staff`.
    pub staff_gid: Option<u32>,
    /// `system` (else `SLURM_CLUSTER_NAME`).
    pub system: Option<String>,
    /// `subsystem`.
    pub subsystem: Option<String>,
}

/// A Python literal for a string: JSON's escapes are Python's (`u""` for Python 2).
fn py_str(s: &str) -> String {
    format!("u{}", serde_json::Value::from(s))
}

fn py_opt(s: Option<&str>) -> String {
    s.map_or_else(|| "None".into(), py_str)
}

/// The exit-time part's source with `cfg` baked in.
pub fn render(cfg: &Install) -> String {
    let path = |p: &Option<PathBuf>| py_opt(p.as_ref().map(|p| p.to_string_lossy()).as_deref());
    let packages = cfg.packages.as_ref().map_or_else(
        || "None".to_owned(),
        |v| {
            let items: Vec<String> = v.iter().map(|p| py_str(p)).collect();
            format!("frozenset([{}])", items.join(", "))
        },
    );
    let config = format!(
        "_CONFIG = {{\n    \"spool\": {},\n    \"socket\": {},\n    \"packages\": {packages},\n    \
         \"rank0_only\": {},\n    \"budget_ms\": {},\n    \"staff_gid\": {},\n    \"system\": {},\n    \
         \"subsystem\": {},\n}}\n",
        path(&cfg.spool),
        path(&cfg.socket),
        if cfg.rank0_only { "True" } else { "False" },
        cfg.budget_ms,
        cfg.staff_gid.map_or_else(|| "None".into(), |g| g.to_string()),
        py_opt(cfg.system.as_deref()),
        py_opt(cfg.subsystem.as_deref()),
    );
    BODY.replacen(CONFIG_LINE, &config, 1)
}

/// Writes `<prefix>/sitecustomize.py` and `<prefix>/_pyusage_atexit.py` (atomically, mode
/// 0644) and creates the spool directory if it is missing (mode 1733: every user may add files,
/// only the owner may list them, and no one may remove another's). Returns the files written.
pub fn install(prefix: &Path, cfg: &Install) -> Result<Vec<PathBuf>, PathError> {
    fs::create_dir_all(prefix).map_err(PathError::at(prefix))?;
    if let Some(spool) = &cfg.spool {
        if !spool.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o1733)
                .create(spool)
                .map_err(PathError::at(spool))?;
            // The umask narrowed the mode above.
            fs::set_permissions(spool, fs::Permissions::from_mode(0o1733))
                .map_err(PathError::at(spool))?;
        }
    }
    let mut written = Vec::new();
    for (name, text) in [
        ("_pyusage_atexit.py", render(cfg)),
        ("sitecustomize.py", STUB.to_owned()),
    ] {
        let file = prefix.join(name);
        write_atomic(&file, Durability::Durable, |mut f| {
            use std::io::Write;
            f.write_all(text.as_bytes()).map_err(PathError::at(&file))?;
            f.set_permissions(fs::Permissions::from_mode(0o644))
                .map_err(PathError::at(&file))?;
            Ok::<_, PathError>(f)
        })?;
        written.push(file);
    }
    Ok(written)
}

/// Byte-compiling the hook with an interpreter failed.
#[derive(Debug, thiserror::Error)]
#[error("compiling the hook with {}: {reason}", python.display())]
pub struct CompileError {
    /// The interpreter.
    pub python: PathBuf,
    /// What went wrong (its stderr, or the spawn error).
    pub reason: String,
}

/// Byte-compiles the hook's two files with `python` (`compileall`, which writes the cache even
/// under `PYTHONDONTWRITEBYTECODE`): a user's interpreter then loads them without compiling
/// (12-16 ms for the exit-time part on the reference VM, at every exit otherwise, since users
/// cannot write the cache into the administrator's directory). One cache per version tag.
pub fn compile(prefix: &Path, python: &Path) -> Result<(), CompileError> {
    let err = |reason: String| CompileError {
        python: python.to_path_buf(),
        reason,
    };
    let out = std::process::Command::new(python)
        .args(["-m", "compileall", "-q", "-f", "-l"])
        .arg(prefix)
        .env_remove("PYTHONPATH")
        .output()
        .map_err(|e| err(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(String::from_utf8_lossy(&out.stderr).trim().to_owned()))
    }
}

/// One line of an `.errors` file: what went wrong in one process's hook.
#[derive(Debug, Clone, Deserialize)]
pub struct HookErrors {
    /// The process.
    pub pid: i32,
    /// Its host.
    pub host: String,
    /// The exit-time work stopped at the time budget (the report is partial).
    pub budget_exceeded: bool,
    /// Each error, as `Type: message`.
    pub errors: Vec<String>,
}

/// What a spool directory holds.
#[derive(Debug, Default)]
pub struct Spool {
    /// Every record.
    pub records: Vec<Record>,
    /// Every hook that reported errors.
    pub errors: Vec<HookErrors>,
    /// Files or lines that could not be read (the rest is kept).
    pub unreadable: Vec<ReadError>,
    /// Records dropped because they claimed another uid than their file's owner: any user
    /// can write anything into a file of their own, but only about themselves.
    pub forged: u64,
}

/// Whether `dir` holds an atexit spool (any `atexit-*.jsonl`).
pub fn is_spool(dir: &Path) -> bool {
    spool_files(dir, "jsonl").is_ok_and(|v| !v.is_empty())
}

fn spool_files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, ReadError> {
    let rd = fs::read_dir(dir).map_err(|source| ReadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == ext)
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("atexit-"))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Reads a spool directory: the records of every `atexit-*.jsonl` regular file (a torn last
/// line, a hook killed mid-write, is skipped; a record of another uid than the file's owner is
/// dropped and counted) and the `.errors` lines.
pub fn read_spool(dir: &Path) -> Result<Spool, ReadError> {
    let mut out = Spool::default();
    for f in spool_files(dir, "jsonl")? {
        let owner = match fs::symlink_metadata(&f) {
            Ok(m) if m.file_type().is_file() => m.uid(),
            Ok(_) => continue, // a link or a FIFO is no hook's file
            Err(source) => {
                out.unreadable.push(ReadError::Io { path: f, source });
                continue;
            }
        };
        match segment::read(&f) {
            Ok(rs) => {
                for r in rs {
                    if owner == 0 || r.uid == owner {
                        out.records.push(r);
                    } else {
                        out.forged += 1;
                    }
                }
            }
            Err(e) => out.unreadable.push(e),
        }
    }
    for f in spool_files(dir, "errors")? {
        let file = match fs::File::open(&f) {
            Ok(file) => file,
            Err(source) => {
                out.unreadable.push(ReadError::Io { path: f, source });
                continue;
            }
        };
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let parsed = line
                .map_err(serde_json::Error::io)
                .and_then(|l| serde_json::from_str::<HookErrors>(&l));
            match parsed {
                Ok(e) => out.errors.push(e),
                Err(source) => out.unreadable.push(ReadError::Line {
                    path: f.clone(),
                    line: i + 1,
                    source,
                }),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_baked_as_python_literals() {
        let cfg = Install {
            spool: Some("/s/\"quoted\"\n".into()),
            packages: Some(vec!["numpy".into(), "sci\\py".into()]),
            rank0_only: true,
            budget_ms: 20,
            staff_gid: Some(7),
            ..Default::default()
        };
        let text = render(&cfg);
        assert!(!text.contains(CONFIG_LINE), "placeholder left");
        assert!(
            text.contains(r#""spool": u"/s/\"quoted\"\n","#),
            "{}",
            &text[..800]
        );
        assert!(text.contains(r#"frozenset([u"numpy", u"sci\\py"])"#));
        assert!(text.contains("\"rank0_only\": True,"));
        assert!(text.contains("\"socket\": None,"));
        assert!(text.contains("\"staff_gid\": 7,"));
    }

    #[test]
    fn install_writes_the_file_and_a_private_spool() {
        let d = tempfile::tempdir().unwrap();
        let spool = d.path().join("spool");
        let files = install(
            &d.path().join("hook"),
            &Install {
                spool: Some(spool.clone()),
                budget_ms: 50,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(fs::read_to_string(&files[0])
            .unwrap()
            .contains("def at_exit(modules)"));
        assert!(fs::read_to_string(&files[1])
            .unwrap()
            .contains("atexit\").register"));
        let mode = fs::metadata(&spool).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o1733);
        assert!(!is_spool(&spool));
    }
}
