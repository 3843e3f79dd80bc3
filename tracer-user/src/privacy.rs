//! Privacy switches, applied to every record before it is written anywhere (spool, Parquet,
//! syslog): pseudonymous users, redacted paths, dropped fields. Configured in `[privacy]`
//! (see `SECURITY.md`).
//!
//! - **Pseudonymous users** (`username_key_file`): `username` becomes `u-` and 24 hex digits
//!   of a keyed BLAKE3 hash (a PRF: without the site's key, names cannot be recovered by
//!   hashing a list of candidates), and `uid` a keyed hash of it below 2³¹. The same user keeps
//!   one pseudonym across nodes and years as long as the key is the same, so per-user counts
//!   still work. `is_staff` is decided before.
//! - **Redacted paths** (`redact_prefixes`): `main`, `executable`, `first_path` and
//!   `env_prefix` under one of the prefixes (home directories, project spaces) keep the prefix
//!   only: `/home/…`.
//! - **Dropped fields** (`drop_fields`): any optional field, set to null.
use std::path::{Path, PathBuf};

use pyusage_record::{columns as c, Record};
use serde::{Deserialize, Serialize};

/// The `[privacy]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// A file (owned by root, not readable by group or others) whose contents key the hash of
    /// user names and uids; unset: names and uids are recorded as they are.
    pub username_key_file: Option<PathBuf>,
    /// Path prefixes whose paths are redacted to the prefix.
    pub redact_prefixes: Vec<String>,
    /// Optional fields to drop from every record.
    pub drop_fields: Vec<String>,
}

/// Optional string fields that `drop_fields` may name. Not the CPU sampler's status
/// (`cpu_sampling`): it says nothing about a person, and without it the sample counts would
/// be counts of nothing (ingest refuses such a record).
pub const DROPPABLE: &[&str] = &[
    c::SYSTEM,
    c::SUBSYSTEM,
    c::EXIT_SIGNAL,
    c::PYTHON_VERSION,
    c::MAIN,
    c::USERNAME,
    c::CONTAINER_RUNTIME,
    c::BLAS,
    c::JOB_ID,
    c::STEP_ID,
    c::JOB_SOURCE,
    c::QOS,
    c::ACCOUNT,
    c::PARTITION,
    c::DISTRIBUTION,
    c::VERSION,
    c::ENV_PREFIX,
];

/// Why the privacy settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// The key file could not be read.
    #[error("privacy.username_key_file {path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file is unsafe or too short.
    #[error("privacy.username_key_file {path}: {why}")]
    KeyUnsafe {
        /// The file.
        path: PathBuf,
        /// Why.
        why: &'static str,
    },
    /// `drop_fields` names a field that cannot be dropped.
    #[error("privacy.drop_fields: {0:?} is not an optional field (those are: {list})", list = DROPPABLE.join(", "))]
    NotDroppable(String),
    /// A prefix is not an absolute path.
    #[error("privacy.redact_prefixes: {0:?} is not an absolute path")]
    Prefix(String),
}

/// The switches, ready to apply.
#[derive(Debug, Clone, Default)]
pub struct Privacy {
    key: Option<[u8; 32]>,
    prefixes: Vec<String>,
    drop: Vec<String>,
}

impl Privacy {
    /// Checks the settings and reads the key.
    pub fn new(c: &PrivacyConfig) -> Result<Privacy, PrivacyError> {
        if let Some(f) = c
            .drop_fields
            .iter()
            .find(|f| !DROPPABLE.contains(&f.as_str()))
        {
            return Err(PrivacyError::NotDroppable(f.clone()));
        }
        let mut prefixes = Vec::new();
        for p in &c.redact_prefixes {
            if !p.starts_with('/') {
                return Err(PrivacyError::Prefix(p.clone()));
            }
            prefixes.push(p.trim_end_matches('/').to_owned());
        }
        let key = c.username_key_file.as_deref().map(read_key).transpose()?;
        Ok(Privacy {
            key,
            prefixes,
            drop: c.drop_fields.clone(),
        })
    }

    /// Whether any switch is on.
    pub fn is_active(&self) -> bool {
        self.key.is_some() || !self.prefixes.is_empty() || !self.drop.is_empty()
    }

    /// Applies the switches to one record.
    pub fn apply(&self, r: &mut Record) {
        if let Some(key) = &self.key {
            if let Some(u) = r.username.take() {
                let h = blake3::keyed_hash(key, format!("user\0{u}").as_bytes());
                r.username = Some(format!("u-{}", &h.to_hex()[..24]));
            }
            let h = blake3::keyed_hash(key, format!("uid\0{}", r.uid).as_bytes());
            let b = h.as_bytes();
            r.uid = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff;
        }
        if !self.prefixes.is_empty() {
            for s in [&mut r.executable, &mut r.first_path] {
                self.redact(s);
            }
            for s in [&mut r.main, &mut r.env_prefix].into_iter().flatten() {
                self.redact(s);
            }
        }
        for f in &self.drop {
            clear(r, f);
        }
    }

    fn redact(&self, s: &mut String) {
        if let Some(p) = self.prefixes.iter().find(|p| {
            s.strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }) {
            *s = format!("{p}/…");
        }
    }
}

/// Sets the optional field `name` (one of [`DROPPABLE`]) to null.
fn clear(r: &mut Record, name: &str) {
    let slot = match name {
        c::SYSTEM => &mut r.system,
        c::SUBSYSTEM => &mut r.subsystem,
        c::EXIT_SIGNAL => &mut r.exit_signal,
        c::PYTHON_VERSION => &mut r.python_version,
        c::MAIN => &mut r.main,
        c::USERNAME => &mut r.username,
        c::CONTAINER_RUNTIME => &mut r.container_runtime,
        c::BLAS => &mut r.blas,
        c::JOB_ID => &mut r.job_id,
        c::STEP_ID => &mut r.step_id,
        c::JOB_SOURCE => {
            r.job_source = None;
            return;
        }
        c::QOS => &mut r.qos,
        c::ACCOUNT => &mut r.account,
        c::PARTITION => &mut r.partition,
        c::DISTRIBUTION => &mut r.distribution,
        c::VERSION => &mut r.version,
        c::ENV_PREFIX => &mut r.env_prefix,
        _ => return,
    };
    *slot = None;
}

/// The site key: a regular file, not a link, owned by root, mode 0600 or stricter, at least 32
/// bytes; its BLAKE3 hash is the key.
fn read_key(path: &Path) -> Result<[u8; 32], PrivacyError> {
    use std::os::unix::fs::MetadataExt;
    let unsafe_key = |why| PrivacyError::KeyUnsafe {
        path: path.to_path_buf(),
        why,
    };
    let meta = std::fs::symlink_metadata(path).map_err(|source| PrivacyError::Key {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(unsafe_key("not a regular file"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_key(
            "readable or writable by group or others (chmod 600)",
        ));
    }
    if meta.uid() != 0 && nix::unistd::geteuid().is_root() {
        return Err(unsafe_key("not owned by root"));
    }
    let data = std::fs::read(path).map_err(|source| PrivacyError::Key {
        path: path.to_path_buf(),
        source,
    })?;
    if data.len() < 32 {
        return Err(unsafe_key(
            "shorter than 32 bytes (e.g. head -c 32 /dev/urandom)",
        ));
    }
    Ok(*blake3::hash(&data).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_droppable_field_is_an_optional_string_column_and_is_cleared() {
        let schema = pyusage_record::arrow_schema();
        let mut r = Record::example();
        r.job_id = Some("7".into());
        r.job_source = Some(pyusage_record::JobSource::Cgroup);
        for name in DROPPABLE {
            let f = schema.field_with_name(name).unwrap();
            assert!(f.is_nullable(), "{name}");
            clear(&mut r, name);
        }
        let v = serde_json::to_value(&r).unwrap();
        for name in DROPPABLE {
            assert!(v[name].is_null(), "{name} not cleared");
        }
        assert!(!DROPPABLE.contains(&c::CPU_SAMPLING));
    }
    use std::os::unix::fs::PermissionsExt;

    fn record() -> Record {
        let mut r = pyusage_record::Record::example();
        r.username = Some("alice".into());
        r.uid = 1000;
        r.main = Some("/home/alice/run.py".into());
        r.executable = "/home/alice/env/bin/python".into();
        r.first_path = "/home/alice/env/lib/python3.11/site-packages/x/__init__.py".into();
        r.env_prefix = Some("/home/alice/env".into());
        r.account = Some("m1234".into());
        r
    }

    /// A 32-byte site key in `dir` with `mode`.
    fn key_file(dir: &Path, mode: u32) -> PathBuf {
        let key = dir.join("key");
        std::fs::write(&key, [7u8; 32]).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        key
    }

    #[test]
    fn users_are_pseudonymous_paths_redacted_fields_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let key = key_file(dir.path(), 0o600);
        let p = Privacy::new(&PrivacyConfig {
            username_key_file: Some(key.clone()),
            redact_prefixes: vec!["/home/".into()],
            drop_fields: vec!["account".into()],
        })
        .unwrap();
        let (mut a, mut b) = (record(), record());
        p.apply(&mut a);
        p.apply(&mut b);
        let name = a.username.clone().unwrap();
        assert!(name.starts_with("u-") && name.len() == 26 && !name.contains("alice"));
        assert_eq!((a.username.clone(), a.uid), (b.username, b.uid), "stable");
        assert_ne!(a.uid, 1000);
        assert_eq!(a.main.as_deref(), Some("/home/…"));
        assert_eq!(a.executable, "/home/…");
        assert_eq!(a.first_path, "/home/…");
        assert_eq!(a.env_prefix.as_deref(), Some("/home/…"));
        assert_eq!(a.account, None);
        // `/homework` is not under `/home`.
        let mut c = record();
        c.main = Some("/homework/x.py".into());
        p.apply(&mut c);
        assert_eq!(c.main.as_deref(), Some("/homework/x.py"));
        // Another key, another pseudonym.
        std::fs::write(&key, [8u8; 32]).unwrap();
        let q = Privacy::new(&PrivacyConfig {
            username_key_file: Some(key.clone()),
            ..Default::default()
        })
        .unwrap();
        let mut d = record();
        q.apply(&mut d);
        assert_ne!(d.username, a.username);
    }

    #[test]
    fn unsafe_settings_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let key = key_file(dir.path(), 0o644);
        let c = |f: &Path| PrivacyConfig {
            username_key_file: Some(f.to_path_buf()),
            ..Default::default()
        };
        let e = Privacy::new(&c(&key)).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&key, b"short").unwrap();
        assert!(Privacy::new(&c(&key))
            .unwrap_err()
            .to_string()
            .contains("32 bytes"));
        let e = Privacy::new(&PrivacyConfig {
            drop_fields: vec!["uid".into()],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"uid\" is not an optional field"), "{e}");
    }
}
