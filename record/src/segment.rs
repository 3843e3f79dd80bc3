//! Spool segments: the daemon's durable JSON-lines files, `<data>/spool/<first seq, 20
//! digits>.jsonl`, one [`Record`] per line. The daemon writes them (`tracer-user`'s `spool`);
//! anyone may read them back, so the format's readers live here with the record.
use std::{
    fs::{self, File},
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
};

use crate::{ReadError, Record};

/// The segments in `dir`, oldest first; none when `dir` does not exist.
pub fn segments(dir: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let mut v: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(ReadError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    v.sort();
    Ok(v)
}

/// First `seq` of a segment, from its name.
pub fn first_seq(path: &Path) -> Option<u64> {
    path.file_stem()?.to_str()?.parse().ok()
}

/// Reads the records of a segment. A torn last line (the daemon was killed mid-write) is
/// skipped; any other bad line is an error naming the file and line.
pub fn read(path: &Path) -> Result<Vec<Record>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(io)?;
    let mut out = Vec::new();
    let mut lines = BufReader::new(f).split(b'\n').peekable();
    let mut n = 0;
    while let Some(line) = lines.next() {
        n += 1;
        let line = line.map_err(io)?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(r) => out.push(r),
            Err(_) if lines.peek().is_none() => break, // torn tail
            Err(source) => {
                return Err(ReadError::Line {
                    path: path.to_path_buf(),
                    line: n,
                    source,
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_skipped_but_corruption_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.jsonl");
        let good = serde_json::to_string(&Record::example()).unwrap();
        fs::write(&p, format!("{good}\n{}", &good[..good.len() / 2])).unwrap();
        assert_eq!(read(&p).unwrap(), vec![Record::example()]);
        fs::write(&p, format!("garbage\n{good}\n")).unwrap();
        let e = read(&p).unwrap_err();
        assert!(matches!(e, ReadError::Line { line: 1, .. }), "{e:?}");
        assert!(e.to_string().contains("x.jsonl:1: "), "{e}");
        assert_eq!(
            segments(&d.path().join("none")).unwrap(),
            Vec::<PathBuf>::new()
        );
        assert_eq!(
            first_seq(Path::new("/s/00000000000000000042.jsonl")),
            Some(42)
        );
    }
}
