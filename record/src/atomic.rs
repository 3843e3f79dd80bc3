//! Replacing a file atomically: write `.<name>.tmp` next to it, then rename it into place, so
//! a reader sees the old content or the new, never a part. Every file pyusage rewrites goes
//! through [`write_atomic`], with its durability stated at the call:
//!
//! - [`Durability::Durable`]: the temporary file is `fsync`ed before the rename and the
//!   directory after it, so the new content survives a power loss once this returns. For
//!   what delivery depends on: dataset files, sink offsets, the spool's high-water mark.
//! - [`Durability::BestEffort`]: no `fsync`. For what is rewritten every few seconds and
//!   only describes the present (`status.json`): a crash may leave the previous version, never
//!   a torn one.
use std::{
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
};

/// An I/O error and the file it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct PathError {
    /// The file or directory.
    pub path: PathBuf,
    /// Cause.
    #[source]
    pub source: io::Error,
}

impl PathError {
    /// A closure that attaches `path` to an I/O error, for `map_err`.
    pub fn at(path: &Path) -> impl FnOnce(io::Error) -> PathError + '_ {
        move |source| PathError {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Whether a replaced file must survive a power loss; see the module's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync` the file before the rename and its directory after.
    Durable,
    /// Rename only.
    BestEffort,
}

/// Replaces `path` with what `write` writes into the (new, empty) temporary file it is given
/// and returns. On any error the temporary file is removed and `path` is untouched.
pub fn write_atomic<E: From<PathError>>(
    path: &Path,
    durability: Durability,
    write: impl FnOnce(File) -> Result<File, E>,
) -> Result<(), E> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let file = File::create(&tmp).map_err(PathError::at(&tmp))?;
        let file = write(file)?;
        if durability == Durability::Durable {
            file.sync_all().map_err(PathError::at(&tmp))?;
        }
        drop(file);
        fs::rename(&tmp, path).map_err(PathError::at(path))?;
        if durability == Durability::Durable {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(PathError::at(dir))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic`] of a byte string.
pub fn write_bytes_atomic(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), PathError> {
    write_atomic(path, durability, |mut f: File| {
        f.write_all(bytes).map_err(|source| PathError {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(f)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_nothing_behind_on_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("offset");
        write_bytes_atomic(&p, b"1\n", Durability::Durable).unwrap();
        write_bytes_atomic(&p, b"22\n", Durability::BestEffort).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"22\n");
        let failed: Result<(), PathError> = write_atomic(&p, Durability::Durable, |_f| {
            Err(PathError {
                path: p.clone(),
                source: io::Error::other("disk full"),
            })
        });
        assert!(failed
            .unwrap_err()
            .to_string()
            .ends_with("offset: disk full"));
        assert_eq!(fs::read(&p).unwrap(), b"22\n", "old content kept");
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["offset"], "no temporary file left");
        let e = write_bytes_atomic(&d.path().join("no/such/dir/f"), b"x", Durability::Durable)
            .unwrap_err();
        assert!(e.path.ends_with("no/such/dir/.f.tmp"), "{e}");
    }
}
