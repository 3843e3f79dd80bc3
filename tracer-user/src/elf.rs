//! What an ELF file exports: tells an interpreter (`Py_Initialize`) and an extension module
//! (`PyInit_<name>`, CPython 2: `init<name>`) from other shared objects by what they are.
use std::{
    collections::{HashMap, HashSet},
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::Path,
};

use object::{Object, ObjectSymbol};

/// Largest file read (interpreters and `libpython` are tens of MiB).
const MAX_BYTES: u64 = 256 << 20;

/// The CPython entry points an ELF file defines, cached by (device, inode, mtime).
#[derive(Default)]
pub struct ElfCache(HashMap<(u64, u64, i64), HashSet<String>>);

impl ElfCache {
    /// A new, empty cache.
    pub fn new() -> ElfCache {
        ElfCache::default()
    }

    /// Whether `path` defines the dynamic symbol `name` (only CPython entry points are kept:
    /// `PyInit_*`, `init*`; `Py_Initialize` stands for defining or calling any embedding entry
    /// point). Not a regular file, unreadable, too large or
    /// not ELF: `false`. Opened non-blocking, so a FIFO cannot stall the caller.
    pub fn exports(&mut self, path: &Path, name: &str) -> bool {
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        else {
            return false;
        };
        let Ok(meta) = file.metadata() else {
            return false;
        };
        if !meta.is_file() || meta.len() > MAX_BYTES {
            return false;
        }
        let key = (meta.dev(), meta.ino(), meta.mtime());
        self.0
            .entry(key)
            .or_insert_with(|| {
                let mut data = Vec::with_capacity(meta.len() as usize);
                match file.take(MAX_BYTES).read_to_end(&mut data) {
                    Ok(_) => entry_points(&data),
                    Err(_) => HashSet::new(),
                }
            })
            .contains(name)
    }
}

/// CPython's embedding entry points: a program that defines one is an interpreter, one that
/// calls one (an undefined symbol, resolved in `libpython`) runs one.
const EMBEDDING: [&str; 5] = [
    "Py_Initialize",
    "Py_InitializeEx",
    "Py_InitializeFromConfig",
    "Py_BytesMain",
    "Py_Main",
];

/// Defined `PyInit_*`/`init*` names, plus `Py_Initialize` when the file defines or calls any of
/// [`EMBEDDING`].
fn entry_points(data: &[u8]) -> HashSet<String> {
    let Ok(file) = object::File::parse(data) else {
        return HashSet::new();
    };
    let mut out = HashSet::new();
    for s in file.dynamic_symbols() {
        let Ok(n) = s.name() else { continue };
        if EMBEDDING.contains(&n) {
            out.insert("Py_Initialize".to_owned());
        } else if s.is_definition() && (n.starts_with("PyInit_") || n.starts_with("init")) {
            out.insert(n.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyenv_python_calls_libpython() {
        let exe = std::fs::read_dir("/root/.pyenv/versions")
            .unwrap()
            .flatten()
            .map(|e| e.path().join("bin/python3"))
            .find(|p| p.exists())
            .unwrap();
        assert!(
            ElfCache::new().exports(&exe, "Py_Initialize"),
            "{}",
            exe.display()
        );
    }

    #[test]
    fn libc_is_neither_an_interpreter_nor_an_extension() {
        let mut c = ElfCache::new();
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        assert!(!c.exports(libc, "Py_Initialize"));
        assert!(!c.exports(Path::new("/etc/hostname"), "Py_Initialize"));
    }

    #[test]
    fn debian_python_is_an_interpreter() {
        let mut c = ElfCache::new();
        assert!(c.exports(Path::new("/usr/bin/python3.11"), "Py_Initialize"));
    }
}
