//! A record decoded where it lies in its message: [`Record`]'s fields, its strings borrowed
//! from the payload instead of each copied into a `String` of its own (a record has about
//! thirty; their allocation, copying and freeing were a fifth of ingest's CPU, measured).
//!
//! The same serde form as [`Record`] (names, `deny_unknown_fields`, defaults, timestamps),
//! but a string with an escape (`\"`, `\n`, `\u…`) cannot be borrowed: such a payload does not
//! decode here and is decoded as a [`Record`] instead, which also gives a malformed payload
//! the record decoder's own message (`parse`). What decodes here decodes to the same record
//! (a test checks).
use pyusage_record::{EnvKind, Exit, JobSource, Micros, Record, Source};
use serde::{de, Deserialize, Deserializer};

/// A record whose strings are borrowed (from a payload, or from a [`Record`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct View<'a> {
    pub record_id: &'a str,
    pub seq: u64,
    pub source: Source,
    #[serde(default)]
    pub sources: Sources<'a>,
    pub host: &'a str,
    #[serde(borrow)]
    pub system: Option<&'a str>,
    #[serde(borrow)]
    pub subsystem: Option<&'a str>,
    pub is_compute: bool,
    pub pid: i32,
    pub ppid: i32,
    pub root_pid: i32,
    #[serde(with = "pyusage_record::ts")]
    pub process_start: Micros,
    #[serde(with = "pyusage_record::ts_opt")]
    pub process_end: Option<Micros>,
    pub exit: Exit,
    pub exit_code: Option<i32>,
    #[serde(borrow)]
    pub exit_signal: Option<&'a str>,
    pub executable: &'a str,
    #[serde(borrow)]
    pub python_version: Option<&'a str>,
    #[serde(borrow)]
    pub main: Option<&'a str>,
    pub uid: u32,
    #[serde(borrow)]
    pub username: Option<&'a str>,
    pub is_staff: bool,
    pub in_container: bool,
    #[serde(borrow)]
    pub container_runtime: Option<&'a str>,
    #[serde(borrow)]
    pub blas: Option<&'a str>,
    #[serde(borrow)]
    pub job_id: Option<&'a str>,
    #[serde(borrow)]
    pub step_id: Option<&'a str>,
    #[serde(default)]
    pub job_source: Option<JobSource>,
    pub rank: Option<i32>,
    #[serde(default)]
    pub n_ranks: Option<u32>,
    pub num_nodes: u32,
    #[serde(borrow)]
    pub qos: Option<&'a str>,
    #[serde(borrow)]
    pub account: Option<&'a str>,
    #[serde(borrow)]
    pub partition: Option<&'a str>,
    pub package: &'a str,
    #[serde(borrow)]
    pub distribution: Option<&'a str>,
    #[serde(borrow)]
    pub version: Option<&'a str>,
    pub env_kind: EnvKind,
    #[serde(borrow)]
    pub env_prefix: Option<&'a str>,
    pub first_path: &'a str,
    pub n_files: u32,
    #[serde(with = "pyusage_record::ts")]
    pub first_seen: Micros,
    #[serde(default)]
    pub cpu_user_us: Option<u64>,
    #[serde(default)]
    pub cpu_sys_us: Option<u64>,
}

impl<'a> View<'a> {
    /// A record's fields, borrowed.
    pub fn of(r: &'a Record) -> View<'a> {
        View {
            record_id: &r.record_id,
            seq: r.seq,
            source: r.source,
            sources: Sources::Borrowed(&r.sources),
            host: &r.host,
            system: r.system.as_deref(),
            subsystem: r.subsystem.as_deref(),
            is_compute: r.is_compute,
            pid: r.pid,
            ppid: r.ppid,
            root_pid: r.root_pid,
            process_start: r.process_start,
            process_end: r.process_end,
            exit: r.exit,
            exit_code: r.exit_code,
            exit_signal: r.exit_signal.as_deref(),
            executable: &r.executable,
            python_version: r.python_version.as_deref(),
            main: r.main.as_deref(),
            uid: r.uid,
            username: r.username.as_deref(),
            is_staff: r.is_staff,
            in_container: r.in_container,
            container_runtime: r.container_runtime.as_deref(),
            blas: r.blas.as_deref(),
            job_id: r.job_id.as_deref(),
            step_id: r.step_id.as_deref(),
            job_source: r.job_source,
            rank: r.rank,
            n_ranks: r.n_ranks,
            num_nodes: r.num_nodes,
            qos: r.qos.as_deref(),
            account: r.account.as_deref(),
            partition: r.partition.as_deref(),
            package: &r.package,
            distribution: r.distribution.as_deref(),
            version: r.version.as_deref(),
            env_kind: r.env_kind,
            env_prefix: r.env_prefix.as_deref(),
            first_path: &r.first_path,
            n_files: r.n_files,
            first_seen: r.first_seen,
            cpu_user_us: r.cpu_user_us,
            cpu_sys_us: r.cpu_sys_us,
        }
    }

    /// The record, owned.
    pub fn to_record(&self) -> Record {
        let s = |v: &str| v.to_owned();
        let o = |v: Option<&str>| v.map(str::to_owned);
        Record {
            record_id: s(self.record_id),
            seq: self.seq,
            source: self.source,
            sources: self.sources.as_slice().to_vec(),
            host: s(self.host),
            system: o(self.system),
            subsystem: o(self.subsystem),
            is_compute: self.is_compute,
            pid: self.pid,
            ppid: self.ppid,
            root_pid: self.root_pid,
            process_start: self.process_start,
            process_end: self.process_end,
            exit: self.exit,
            exit_code: self.exit_code,
            exit_signal: o(self.exit_signal),
            executable: s(self.executable),
            python_version: o(self.python_version),
            main: o(self.main),
            uid: self.uid,
            username: o(self.username),
            is_staff: self.is_staff,
            in_container: self.in_container,
            container_runtime: o(self.container_runtime),
            blas: o(self.blas),
            job_id: o(self.job_id),
            step_id: o(self.step_id),
            job_source: self.job_source,
            rank: self.rank,
            n_ranks: self.n_ranks,
            num_nodes: self.num_nodes,
            qos: o(self.qos),
            account: o(self.account),
            partition: o(self.partition),
            package: s(self.package),
            distribution: o(self.distribution),
            version: o(self.version),
            env_kind: self.env_kind,
            env_prefix: o(self.env_prefix),
            first_path: s(self.first_path),
            n_files: self.n_files,
            first_seen: self.first_seen,
            cpu_user_us: self.cpu_user_us,
            cpu_sys_us: self.cpu_sys_us,
        }
    }
}

/// `sources`: a few inline (no allocation for the usual one to three), more in a vector.
#[derive(Debug, Clone)]
pub enum Sources<'a> {
    /// Up to [`Sources::INLINE`].
    Inline(u8, [Source; Sources::INLINE]),
    /// A record's.
    Borrowed(&'a [Source]),
    /// More than fit inline.
    Owned(Vec<Source>),
}

impl Sources<'_> {
    /// Held without allocating.
    pub const INLINE: usize = 4;

    /// The sources.
    pub fn as_slice(&self) -> &[Source] {
        match self {
            Sources::Inline(n, a) => &a[..*n as usize],
            Sources::Borrowed(s) => s,
            Sources::Owned(v) => v,
        }
    }
}

impl PartialEq for Sources<'_> {
    fn eq(&self, o: &Self) -> bool {
        self.as_slice() == o.as_slice()
    }
}

impl Default for Sources<'_> {
    fn default() -> Self {
        Sources::Inline(0, [Source::Ebpf; Sources::INLINE])
    }
}

impl<'de> Deserialize<'de> for Sources<'_> {
    /// What `Vec<Source>` takes: a sequence of sources.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq;
        impl<'de> de::Visitor<'de> for Seq {
            type Value = Sources<'static>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence")
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut s = Sources::default();
                while let Some(v) = seq.next_element::<Source>()? {
                    s = match s {
                        Sources::Inline(n, mut a) if (n as usize) < Sources::INLINE => {
                            a[n as usize] = v;
                            Sources::Inline(n + 1, a)
                        }
                        Sources::Inline(n, a) => {
                            let mut all = a[..n as usize].to_vec();
                            all.push(v);
                            Sources::Owned(all)
                        }
                        Sources::Owned(mut all) => {
                            all.push(v);
                            Sources::Owned(all)
                        }
                        Sources::Borrowed(_) => unreachable!("never built here"),
                    };
                }
                Ok(s)
            }
        }
        d.deserialize_seq(Seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_decodes_as_a_view_decodes_to_the_same_record() {
        let mut all = Record::odd_examples();
        let mut many = Record::example();
        many.sources = vec![Source::Ebpf; Sources::INLINE + 2];
        all.push(many);
        let mut escaped = 0;
        for r in &all {
            let j = serde_json::to_string(r).unwrap();
            match serde_json::from_str::<View>(&j) {
                Ok(v) => {
                    assert_eq!(v.to_record(), *r);
                    assert_eq!(View::of(r), View::of(&v.to_record()));
                }
                // Only a string with an escape is left to the record decoder.
                Err(_) => {
                    assert!(j.contains('\\'), "{j}");
                    escaped += 1;
                }
            }
            assert_eq!(View::of(r).to_record(), *r);
        }
        assert_eq!(escaped, 1, "the odd text");
        // Defaults, and what the record refuses is refused here too.
        let mut v = serde_json::to_value(Record::example()).unwrap();
        for f in [
            "sources",
            "job_source",
            "n_ranks",
            "cpu_user_us",
            "cpu_sys_us",
        ] {
            v.as_object_mut().unwrap().remove(f);
        }
        let j = v.to_string();
        let r: Record = serde_json::from_str(&j).unwrap();
        assert_eq!(serde_json::from_str::<View>(&j).unwrap().to_record(), r);
        for bad in [
            j.replace("\"seq\":7", "\"seq\":7,\"bogus\":1"),
            j.replace("\"seq\":7", "\"seq\":-1"),
            j.replace("\"seq\":7", "\"seq\":7,\"seq\":8"),
            j.replace("\"host\":", "\"_host\":"),
            j[..j.len() - 1].to_string(),
        ] {
            assert!(serde_json::from_str::<Record>(&bad).is_err(), "{bad}");
            assert!(serde_json::from_str::<View>(&bad).is_err(), "{bad}");
        }
    }
}
