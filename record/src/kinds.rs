//! The record's closed vocabularies as enums: one spelling each, used by serde (JSON, spool,
//! syslog), the Arrow column (a `Utf8` value written through the JSON form), and every
//! comparison in the daemon and the analysis. A reader never compares against a literal.
use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A string that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {what} (one of: {})", expected.join(", "))]
pub struct UnknownValue {
    /// Which vocabulary.
    pub what: &'static str,
    /// What was given.
    pub value: String,
    /// The valid spellings.
    pub expected: &'static [&'static str],
}

/// Defines an enum with its one spelling per variant, `as_str`, `ALL`, `Display` and
/// `FromStr`; serde is given the same spellings.
macro_rules! vocabulary {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $v,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v,)+];
            const NAMES: &'static [&'static str] = &[$($s,)+];

            /// The schema's spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($s => Ok($name::$v),)+
                    _ => Err(UnknownValue {
                        what: $what,
                        value: s.to_owned(),
                        expected: Self::NAMES,
                    }),
                }
            }
        }
    };
}

vocabulary! {
    /// Which collector saw the import (`source`).
    Source, "source" {
        /// The eBPF tracer of `pyusage daemon`.
        Ebpf = "ebpf",
        /// The eBPF tracer, for a process already running when the daemon started: its
        /// imports before then are what `/proc` still showed (mapped extension modules, open
        /// module files), and everything after.
        EbpfSeeded = "ebpf-seeded",
        /// The `LD_PRELOAD` library.
        Preload = "preload",
        /// A `sitecustomize` reading `sys.modules` at exit.
        Atexit = "atexit",
    }
}

vocabulary! {
    /// How the process ended (`exit`).
    Exit, "exit" {
        /// Returned from `main` or called `exit`; `exit_code` says with what.
        Exited = "exited",
        /// Killed by a signal; `exit_signal` names it.
        Signaled = "signaled",
        /// Still running: a periodic snapshot, superseded by the final record.
        Running = "running",
        /// The end was not observed (the daemon restarted while the process ran).
        Unknown = "unknown",
    }
}

vocabulary! {
    /// Where the job fields came from (`job_source`).
    JobSource, "job_source" {
        /// The scheduler's cgroup, which the user cannot change.
        Cgroup = "cgroup",
        /// The process's environment, outside Slurm's cgroups (the user can set it).
        Env = "env",
    }
}

vocabulary! {
    /// What kind of environment a package was imported from (`env_kind`).
    EnvKind, "env_kind" {
        /// The interpreter's standard library (including `lib-dynload`).
        Stdlib = "stdlib",
        /// The interpreter's own or the OS's site/dist-packages.
        System = "system",
        /// A virtual environment (`pyvenv.cfg` at the prefix).
        Venv = "venv",
        /// A conda environment (`conda-meta/` at the prefix).
        Conda = "conda",
        /// The user site (`~/.local/lib/pythonX.Y/site-packages`).
        User = "user",
        /// A directory on `PYTHONPATH`.
        PythonPath = "pythonpath",
        /// A system location inside a container's mount namespace.
        Container = "container",
        /// Anything else that is still a module (e.g. next to the main script).
        Unknown = "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_matches<T>(all: &[T])
    where
        T: Serialize
            + for<'de> Deserialize<'de>
            + FromStr<Err = UnknownValue>
            + fmt::Display
            + PartialEq
            + fmt::Debug
            + Copy,
    {
        for v in all {
            let j = serde_json::to_string(v).unwrap();
            assert_eq!(j, format!("\"{v}\""), "serde and as_str agree");
            assert_eq!(serde_json::from_str::<T>(&j).unwrap(), *v);
            assert_eq!(v.to_string().parse::<T>().unwrap(), *v);
        }
    }

    #[test]
    fn one_spelling_for_serde_display_and_parse() {
        serde_matches(Source::ALL);
        serde_matches(Exit::ALL);
        serde_matches(JobSource::ALL);
        serde_matches(EnvKind::ALL);
        let e = "zombie".parse::<Exit>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"zombie\" is not a valid exit (one of: exited, signaled, running, unknown)"
        );
        assert!(serde_json::from_str::<EnvKind>("\"PythonPath\"").is_err());
    }
}
