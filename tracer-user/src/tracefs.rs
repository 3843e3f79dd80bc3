//! Tracepoint field offsets from tracefs `format` files, read at load time: the layout of a
//! tracepoint is a kernel-internal detail (e.g. `sched_process_fork`'s comm fields became
//! `__data_loc` strings), so the programs receive offsets instead of hard-coding them.
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A format file could not be read or lacks a field.
#[derive(Debug, Error)]
pub enum TracefsError {
    /// Reading the format file failed (tracefs not mounted?).
    #[error("reading {path}: {source} (is tracefs mounted at /sys/kernel/tracing?)")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The field is not in the format.
    #[error("{path}: no field {field}")]
    NoField {
        /// The file.
        path: PathBuf,
        /// The field asked for.
        field: String,
    },
}

/// Parsed `format` of one tracepoint.
pub struct Format {
    path: PathBuf,
    fields: Vec<(String, u32)>,
}

impl Format {
    /// Reads `<root>/events/<category>/<name>/format`.
    pub fn read(root: &Path, category: &str, name: &str) -> Result<Format, TracefsError> {
        let path = root.join("events").join(category).join(name).join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Format::parse(path, &text))
    }

    /// Parses the text of a format file.
    pub fn parse(path: PathBuf, text: &str) -> Format {
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut decl = "";
            let mut offset = None;
            for part in rest.split(';') {
                let part = part.trim();
                if let Some(o) = part.strip_prefix("offset:") {
                    offset = o.parse().ok();
                } else if decl.is_empty() {
                    decl = part;
                }
            }
            // `const char * filename`, `char comm[16]`, `__data_loc char[] filename`
            let name = decl
                .rsplit(|c: char| c.is_whitespace() || c == '*')
                .next()
                .unwrap_or("")
                .split('[')
                .next()
                .unwrap_or("");
            if let (false, Some(o)) = (name.is_empty(), offset) {
                fields.push((name.to_owned(), o));
            }
        }
        Format { path, fields }
    }

    /// Offset of `field`.
    pub fn offset(&self, field: &str) -> Result<u32, TracefsError> {
        self.optional(field).ok_or_else(|| TracefsError::NoField {
            path: self.path.clone(),
            field: field.to_owned(),
        })
    }

    /// Offset of `field`, if present.
    pub fn optional(&self, field: &str) -> Option<u32> {
        self.fields
            .iter()
            .find(|(n, _)| n == field)
            .map(|(_, o)| *o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT: &str = "name: sched_process_exit\nID: 300\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";

    #[test]
    fn parses_arrays_pointers_and_data_loc() {
        let f = Format::parse("x".into(), EXIT);
        assert_eq!(f.offset("comm").unwrap(), 8);
        assert_eq!(f.offset("pid").unwrap(), 24);
        assert_eq!(f.optional("group_dead"), Some(32));
        assert!(f.offset("prio").is_err());
        let open = "\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\tfield:__data_loc char[] name;\toffset:8;\tsize:4;\tsigned:0;";
        let f = Format::parse("y".into(), open);
        assert_eq!(f.offset("filename").unwrap(), 24);
        assert_eq!(f.offset("name").unwrap(), 8);
    }
}
