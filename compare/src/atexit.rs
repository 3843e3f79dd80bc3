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
    io::{BufRead, BufReader, Read},
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use pyusage_record::{
    atomic::{write_atomic, Durability, PathError},
    ReadError, Record,
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

/// A Python literal for a string, ASCII only (Python 2 rejects other bytes in a source file
/// without a coding line): `u"…"` with `\\uXXXX` / `\\UXXXXXXXX` escapes.
fn py_str(s: &str) -> String {
    let mut out = String::from("u\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn py_opt(s: Option<&str>) -> String {
    s.map_or_else(|| "None".into(), py_str)
}

/// A path that is not UTF-8: the hook could not name it.
#[derive(Debug, thiserror::Error)]
#[error("{}: not UTF-8", path.display())]
pub struct NotUtf8 {
    /// The path.
    pub path: PathBuf,
}

/// The exit-time part's source with `cfg` baked in.
pub fn render(cfg: &Install) -> Result<String, NotUtf8> {
    let text = |p: &Option<PathBuf>| -> Result<String, NotUtf8> {
        match p {
            None => Ok("None".into()),
            Some(p) => p
                .to_str()
                .map(py_str)
                .ok_or_else(|| NotUtf8 { path: p.clone() }),
        }
    };
    let (spool, socket) = (text(&cfg.spool)?, text(&cfg.socket)?);
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
        spool,
        socket,
        if cfg.rank0_only { "True" } else { "False" },
        cfg.budget_ms,
        cfg.staff_gid.map_or_else(|| "None".into(), |g| g.to_string()),
        py_opt(cfg.system.as_deref()),
        py_opt(cfg.subsystem.as_deref()),
    );
    Ok(BODY.replacen(CONFIG_LINE, &config, 1))
}

/// Installing the hook failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Writing a file or making a directory.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A configured path the hook could not name.
    #[error(transparent)]
    NotUtf8(#[from] NotUtf8),
    /// An existing spool directory others could tamper with.
    #[error("{}: mode {mode:o}: a spool every user writes into must have the sticky bit (1733)", path.display())]
    UnsafeSpool {
        /// The directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
}

/// Writes `<prefix>/sitecustomize.py` and `<prefix>/_pyusage_atexit.py` (atomically, mode
/// 0644) and creates the spool directory if it is missing (mode 1733: every user may add files,
/// only the owner may list them, and no one may remove another's; parents it creates get the
/// usual mode). An existing spool writable by others must have the sticky bit. Returns the
/// files written.
pub fn install(prefix: &Path, cfg: &Install) -> Result<Vec<PathBuf>, InstallError> {
    let body = render(cfg)?;
    fs::create_dir_all(prefix).map_err(PathError::at(prefix))?;
    if let Some(spool) = &cfg.spool {
        match fs::symlink_metadata(spool) {
            Ok(m) => {
                let mode = m.mode() & 0o7777;
                if !m.is_dir() || (mode & 0o022 != 0 && mode & 0o1000 == 0) {
                    return Err(InstallError::UnsafeSpool {
                        path: spool.clone(),
                        mode,
                    });
                }
            }
            Err(_) => {
                if let Some(parent) = spool.parent() {
                    fs::create_dir_all(parent).map_err(PathError::at(parent))?;
                }
                fs::DirBuilder::new()
                    .mode(0o1733)
                    .create(spool)
                    .map_err(PathError::at(spool))?;
                // The umask narrowed the mode above.
                fs::set_permissions(spool, fs::Permissions::from_mode(0o1733))
                    .map_err(PathError::at(spool))?;
            }
        }
    }
    let mut written = Vec::new();
    for (name, text) in [
        ("_pyusage_atexit.py", body),
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
    /// The owner of the file it was read from (the line's own word is not taken for it).
    #[serde(skip)]
    pub uid: u32,
}

/// What a spool directory holds.
#[derive(Debug, Default)]
pub struct Spool {
    /// Every record.
    pub records: Vec<Record>,
    /// Every hook that reported errors.
    pub errors: Vec<HookErrors>,
    /// Files that could not be read, and the first bad lines (the rest is kept).
    pub unreadable: Vec<ReadError>,
    /// Lines that were not a record (a torn write, a hand edit): skipped, the rest kept.
    pub bad_lines: u64,
    /// Records dropped because they claimed another uid than their file's owner, and
    /// `.errors` files not owned by the uid in their name: any user can write anything into
    /// a file of their own, but only about themselves.
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

/// Longest line read from a spool file; a longer one is skipped as bad.
const MAX_LINE: usize = 1 << 20;
/// Bad lines reported one by one (the rest only counted).
const REPORTED_LINES: usize = 20;

/// Opens a spool file as it is: never through a link, never blocking on a FIFO, and only a
/// regular file; its owner from the open file (users own their files and may swap them).
fn open_spool_file(path: &Path) -> std::io::Result<(fs::File, u32)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((f, m.uid()))
}

/// Calls `each` with every line of `r` (1-based number, bytes without the newline); a line
/// longer than [`MAX_LINE`] is passed as `None`, and skipped.
fn lines(r: impl BufRead, mut each: impl FnMut(usize, Option<&[u8]>)) -> std::io::Result<()> {
    let mut r = r;
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        let got = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if got == 0 {
            return Ok(());
        }
        n += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            each(n, Some(&buf));
        } else if buf.len() > MAX_LINE {
            // Skip the rest of the long line.
            let mut sink = Vec::new();
            loop {
                sink.clear();
                let more = (&mut r)
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut sink)?;
                if more == 0 || sink.last() == Some(&b'\n') {
                    break;
                }
            }
            each(n, None);
        } else {
            each(n, Some(&buf)); // the last line, without a newline
        }
    }
}

/// Reads a spool directory: the records of every `atexit-*.jsonl` regular file, line by line
/// (a bad line, e.g. a hook killed mid-write, is skipped and counted, the rest kept; a record
/// of another uid than the file's owner is dropped and counted) and the `.errors` lines of
/// files owned by the uid their name gives.
pub fn read_spool(dir: &Path) -> Result<Spool, ReadError> {
    let mut out = Spool::default();
    let mut reported = 0;
    for f in spool_files(dir, "jsonl")? {
        let (file, owner) = match open_spool_file(&f) {
            Ok(x) => x,
            Err(source) => {
                out.unreadable.push(ReadError::Io { path: f, source });
                continue;
            }
        };
        let mut bad = Vec::new();
        let read = lines(BufReader::new(file), |n, line| {
            let parsed = line.map(serde_json::from_slice::<Record>);
            match parsed {
                Some(Ok(r)) if owner == 0 || r.uid == owner => out.records.push(r),
                Some(Ok(_)) => out.forged += 1,
                Some(Err(e)) => bad.push((n, e)),
                None => bad.push((
                    n,
                    serde_json::Error::io(std::io::Error::other("line too long")),
                )),
            }
        });
        if let Err(source) = read {
            out.unreadable.push(ReadError::Io {
                path: f.clone(),
                source,
            });
        }
        out.bad_lines += bad.len() as u64;
        for (line, source) in bad {
            if reported < REPORTED_LINES {
                reported += 1;
                out.unreadable.push(ReadError::Line {
                    path: f.clone(),
                    line,
                    source,
                });
            }
        }
    }
    for f in spool_files(dir, "errors")? {
        let (file, owner) = match open_spool_file(&f) {
            Ok(x) => x,
            Err(source) => {
                out.unreadable.push(ReadError::Io { path: f, source });
                continue;
            }
        };
        // `atexit-<host>-<uid>.errors`: only its user (or root) may have written it.
        let named = f
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.rsplit('-').next())
            .and_then(|u| u.parse::<u32>().ok());
        if owner != 0 && named != Some(owner) {
            out.forged += 1;
            continue;
        }
        let read = lines(BufReader::new(file), |_, line| {
            match line.map(serde_json::from_slice::<HookErrors>) {
                Some(Ok(mut e)) => {
                    e.uid = named.unwrap_or(owner);
                    out.errors.push(e);
                }
                _ => out.bad_lines += 1,
            }
        });
        if let Err(source) = read {
            out.unreadable.push(ReadError::Io { path: f, source });
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
            spool: Some("/s/\"quoted\"\né".into()),
            packages: Some(vec!["numpy".into(), "sci\\py".into()]),
            rank0_only: true,
            budget_ms: 20,
            staff_gid: Some(7),
            ..Default::default()
        };
        let text = render(&cfg).unwrap();
        assert!(!text.contains(CONFIG_LINE), "placeholder left");
        assert!(
            text.contains(r#""spool": u"/s/\"quoted\"\u000a\u00e9","#),
            "{}",
            &text[..800]
        );
        assert!(text.contains(r#"frozenset([u"numpy", u"sci\\py"])"#));
        assert!(text.contains("\"rank0_only\": True,"));
        assert!(text.contains("\"socket\": None,"));
        assert!(text.contains("\"staff_gid\": 7,"));
    }

    #[test]
    fn a_bad_line_costs_itself_only_and_a_fifo_is_no_spool_file() {
        let d = tempfile::tempdir().unwrap();
        let mut r = Record::example();
        r.source = pyusage_record::Source::Atexit;
        let line = serde_json::to_string(&r).unwrap();
        let text = format!(
            "{line}\n{{\"torn\": \n{line}\n{}\n",
            "x".repeat(MAX_LINE + 10)
        );
        fs::write(d.path().join("atexit-h-0-2026-11-29.jsonl"), text).unwrap();
        let fifo = d.path().join("atexit-h-1-2026-11-29.jsonl");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
        let s = read_spool(d.path()).unwrap();
        assert_eq!((s.records.len(), s.bad_lines), (2, 2));
        let msgs: Vec<String> = s.unreadable.iter().map(|e| e.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("atexit-h-1-") && m.contains("not a regular file")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("atexit-h-0-2026-11-29.jsonl:2:")),
            "{msgs:?}"
        );
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
