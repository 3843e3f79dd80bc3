//! Stage two of resolving: one site directory's distribution metadata (`*.dist-info`,
//! `*.egg-info`, `top_level.txt`, `conda-meta/*.json`) read into a [`DistIndex`], and the
//! index's answers (which distribution owns a top-level package, or declares it).
//!
//! Separate because these are the users' files: everything here runs on the resolver's worker
//! threads (see `site`), reads through [`untrusted`], and is bounded and fuzzed.
use std::{collections::HashMap, ffi::OsStr, path::Path};

use super::classify::top_level;
use crate::untrusted::{self, Creds, FileMode, Refusals};

/// Distributions installed in one site directory.
#[derive(Debug, Default)]
pub struct DistIndex {
    /// (name, version) of each distribution, with the mode of the file (or directory) they
    /// were read from, checked against the reading process's credentials.
    dists: Vec<(String, Option<String>, FileMode)>,
    /// The site directory's own mode (listing it is what found the distributions).
    site_mode: FileMode,
    /// Top-level name → distributions that install files under it.
    by_top: HashMap<String, Vec<usize>>,
    /// (top-level, second component) → distribution, to split namespace packages.
    by_sub: HashMap<(String, String), usize>,
    /// Top-level names a distribution declares in `top_level.txt` though its files live
    /// elsewhere: editable installs (`pip install -e`), whose RECORD lists only a `.pth` or an
    /// `__editable__` finder.
    declared: HashMap<String, usize>,
}

fn normalize(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Bytes read of one metadata file at most (headers come first; RECORD lists of the largest
/// distributions are a few hundred KiB).
const MAX_FILE: usize = 4 << 20;
/// Entries looked at per directory scan at most.
const MAX_ENTRIES: usize = 20_000;

pub(crate) fn read_headers(
    path: &Path,
    count: &Refusals,
) -> (Option<String>, Option<String>, Option<FileMode>) {
    let Some((text, mode)) = untrusted::read_text(path, 64 << 10, count) else {
        return (None, None, None);
    };
    let (mut name, mut version) = (None, None);
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Name:") {
            name = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("Version:") {
            version = Some(v.trim().to_owned());
        }
    }
    (name, version, Some(mode))
}

impl DistIndex {
    /// Reads the `*.dist-info` / `*.egg-info` entries of `dir` (and `conda-meta` of `prefix`).
    pub fn load(dir: &Path, conda_prefix: Option<&Path>, count: &Refusals) -> DistIndex {
        let mut idx = DistIndex::default();
        let Some(site_mode) = untrusted::dir_mode(dir, count) else {
            return idx;
        };
        idx.site_mode = site_mode;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return idx;
        };
        for (i, e) in entries.flatten().enumerate() {
            if i == MAX_ENTRIES {
                Refusals::bump(&count.truncated);
                break;
            }
            idx.load_entry(&e, count);
        }
        if let Some(prefix) = conda_prefix {
            idx.load_conda(dir, prefix, count);
        }
        idx
    }

    /// One entry of the site directory: a `*.dist-info` or `*.egg-info` (never through a link)
    /// adds its distribution, under the top-level names its files are in.
    fn load_entry(&mut self, e: &std::fs::DirEntry, count: &Refusals) {
        let fname = e.file_name();
        let fname = fname.to_string_lossy();
        let (stem, is_dist) = if let Some(s) = fname.strip_suffix(".dist-info") {
            (s, true)
        } else if let Some(s) = fname.strip_suffix(".egg-info") {
            (s, false)
        } else {
            return;
        };
        let p = e.path();
        // Never through a link: `x.dist-info -> /home/other/env/…/y.dist-info`.
        let Ok(ft) = e.file_type() else { return };
        if ft.is_symlink() {
            Refusals::bump(&count.symlink);
            return;
        }
        let is_dir = ft.is_dir();
        let meta = if is_dir {
            p.join(if is_dist { "METADATA" } else { "PKG-INFO" })
        } else {
            p.clone() // Debian ships some .egg-info as a single PKG-INFO file
        };
        let (name, version, mode) = read_headers(&meta, count);
        let Some(mode) = mode.or_else(|| is_dir.then(|| untrusted::dir_mode(&p, count)).flatten())
        else {
            return;
        };
        let mut parts = stem.splitn(2, '-');
        let dir_name = parts.next().unwrap_or(stem).to_owned();
        let dir_version = parts
            .next()
            .map(|v| v.split('-').next().unwrap_or(v).to_owned());
        let name = name.unwrap_or(dir_name);
        let id = self.dists.len();
        self.dists
            .push((name.clone(), version.or(dir_version), mode));
        let tops = self.entry_tops(id, &name, &p, is_dir, count);
        self.add(id, tops);
    }

    /// The top-level names (and second components) distribution `id`, read from `p`, installs
    /// files under: from its RECORD (or `installed-files.txt`), else its `top_level.txt`, else
    /// its own name. What `top_level.txt` declares is kept for editable installs.
    fn entry_tops(
        &mut self,
        id: usize,
        name: &str,
        p: &Path,
        is_dir: bool,
        count: &Refusals,
    ) -> Vec<(String, Option<String>)> {
        let mut tops: Vec<(String, Option<String>)> = Vec::new();
        let read = |f: &str| {
            is_dir
                .then(|| untrusted::read_text(&p.join(f), MAX_FILE, count))
                .flatten()
                .map(|(t, _)| t)
        };
        if let Some(record) = read("RECORD") {
            for line in record.lines() {
                let file = line.split(',').next().unwrap_or("");
                tops.extend(record_top(file));
            }
        } else if let Some(files) = read("installed-files.txt") {
            for line in files.lines() {
                tops.extend(record_top(line.trim_start_matches("../")));
            }
        }
        let declared: Vec<String> = read("top_level.txt")
            .map(|t| {
                t.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        for d in &declared {
            self.declared.entry(d.clone()).or_insert(id);
        }
        if tops.is_empty() {
            tops.extend(declared.into_iter().map(|l| (l, None)));
        }
        if tops.is_empty() {
            tops.push((normalize(name), None));
        }
        tops
    }

    fn add(&mut self, id: usize, tops: Vec<(String, Option<String>)>) {
        for (top, sub) in tops {
            let v = self.by_top.entry(top.clone()).or_default();
            if !v.contains(&id) {
                v.push(id);
            }
            if let Some(sub) = sub {
                self.by_sub.entry((top, sub)).or_insert(id);
            }
        }
    }

    fn load_conda(&mut self, dir: &Path, prefix: &Path, count: &Refusals) {
        let Ok(rel_site) = dir.strip_prefix(prefix) else {
            return;
        };
        let rel_site = rel_site.to_string_lossy().into_owned() + "/";
        let meta_dir = prefix.join("conda-meta");
        if untrusted::dir_mode(&meta_dir, count).is_none() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&meta_dir) else {
            return;
        };
        for (i, e) in entries.flatten().enumerate() {
            if i == MAX_ENTRIES {
                Refusals::bump(&count.truncated);
                break;
            }
            if e.path().extension() != Some(OsStr::new("json")) {
                continue;
            }
            let Some((text, mode)) = untrusted::read_text(&e.path(), MAX_FILE, count) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let (Some(name), version) = (v["name"].as_str(), v["version"].as_str()) else {
                continue;
            };
            let tops: Vec<_> = v["files"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str()?.strip_prefix(rel_site.as_str()))
                .flat_map(record_top)
                .filter(|(t, _)| !self.by_top.contains_key(t))
                .collect();
            if tops.is_empty() {
                continue;
            }
            let id = self.dists.len();
            self.dists
                .push((name.to_owned(), version.map(str::to_owned), mode));
            self.add(id, tops);
        }
    }

    /// The distribution declaring `package` in its `top_level.txt` (an editable install).
    pub fn declared(&self, package: &str, creds: &Creds) -> Found {
        match self.declared.get(package) {
            Some(&id) => self.permitted(id, creds),
            None => Found::None,
        }
    }

    /// Distribution `id`, if the process's user could have read what it came from.
    fn permitted(&self, id: usize, creds: &Creds) -> Found {
        match self.dists.get(id) {
            Some((n, v, mode)) if creds.may_read(&self.site_mode) && creds.may_read(mode) => {
                Found::Dist(n.clone(), v.clone())
            }
            Some(_) => Found::NotPermitted,
            None => Found::None,
        }
    }

    /// The distribution owning `package` (using the module's path below the site directory to
    /// split namespace packages shared by several distributions).
    pub fn lookup(&self, package: &str, sub: Option<&str>, creds: &Creds) -> Found {
        let Some(ids) = self.by_top.get(package) else {
            return Found::None;
        };
        let id = match (ids.len(), sub) {
            (1, _) => ids[0],
            (_, Some(sub)) => *self
                .by_sub
                .get(&(package.to_owned(), sub.to_owned()))
                .unwrap_or(&ids[0]),
            _ => ids[0],
        };
        self.permitted(id, creds)
    }
}

/// A distribution lookup's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// (name, version).
    Dist(String, Option<String>),
    /// Known, but from files the process's user could not read: not used.
    NotPermitted,
    /// No distribution owns it.
    None,
}

/// Top-level (and second component) of one RECORD path, if it is a module.
pub(crate) fn record_top(file: &str) -> Option<(String, Option<String>)> {
    if file.starts_with("..") || file.starts_with('/') {
        return None;
    }
    let parts: Vec<&OsStr> = file.split('/').map(OsStr::new).collect();
    let top = top_level(&parts)?;
    let sub = (parts.len() > 2).then(|| parts[1].to_string_lossy().into_owned());
    Some((top, sub))
}
