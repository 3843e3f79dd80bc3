//! A record read where it lies in its message: [`Record`]'s fields, its strings borrowed from
//! the payload instead of each copied into a `String` of its own (a record has about thirty,
//! allocated on the ingest thread and freed on the writer's), and read by
//! [`View::parse`], a reader of the JSON a serialiser writes, instead of serde's generic
//! decoder (two fifths of the ingest thread's time, measured).
//!
//! The reader takes a subset of JSON: a string with an escape (`\"`, `\n`, `\u…`), a missing
//! field, an unknown or repeated one, a value of another type or a malformed payload are left
//! to [`Record`]'s decoder (`parse`), which has the last word and gives the error message.
//! What the reader reads, serde reads to the same record (a test checks, case by case).
use pyusage_record::{
    columns as c, sampling, CallerSamples, EnvKind, Exit, JobSource, Micros, Record, Source,
};

/// A record whose strings are borrowed (from a payload, or from a [`Record`]).
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct View<'a> {
    pub record_id: &'a str,
    pub seq: u64,
    pub source: Source,
    pub sources: Sources<'a>,
    pub host: &'a str,
    pub system: Option<&'a str>,
    pub subsystem: Option<&'a str>,
    pub is_compute: bool,
    pub pid: i32,
    pub ppid: i32,
    pub root_pid: i32,
    pub process_start: Micros,
    pub process_end: Option<Micros>,
    pub exit: Exit,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<&'a str>,
    pub executable: &'a str,
    pub python_version: Option<&'a str>,
    pub main: Option<&'a str>,
    pub uid: u32,
    pub username: Option<&'a str>,
    pub is_staff: bool,
    pub in_container: bool,
    pub container_runtime: Option<&'a str>,
    pub blas: Option<&'a str>,
    pub job_id: Option<&'a str>,
    pub step_id: Option<&'a str>,
    pub job_source: Option<JobSource>,
    pub rank: Option<i32>,
    pub n_ranks: Option<u32>,
    pub num_nodes: u32,
    pub qos: Option<&'a str>,
    pub account: Option<&'a str>,
    pub partition: Option<&'a str>,
    pub package: &'a str,
    pub distribution: Option<&'a str>,
    pub version: Option<&'a str>,
    pub env_kind: EnvKind,
    pub env_prefix: Option<&'a str>,
    pub first_path: &'a str,
    pub n_files: u32,
    pub first_seen: Micros,
    pub cpu_user_us: Option<u64>,
    pub cpu_sys_us: Option<u64>,
    pub cpu_sampling: Option<&'a str>,
    pub cpu_sample_hz: Option<u32>,
    pub cpu_samples_total: Option<u64>,
    pub cpu_samples_self: Option<u64>,
    pub cpu_samples_inclusive: Option<u64>,
    pub cpu_samples_callers: Callers<'a>,
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
            cpu_sampling: r.cpu_sampling.as_deref(),
            cpu_sample_hz: r.cpu_sample_hz,
            cpu_samples_total: r.cpu_samples_total,
            cpu_samples_self: r.cpu_samples_self,
            cpu_samples_inclusive: r.cpu_samples_inclusive,
            cpu_samples_callers: Callers::Borrowed(&r.cpu_samples_callers),
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
            cpu_sampling: o(self.cpu_sampling),
            cpu_sample_hz: self.cpu_sample_hz,
            cpu_samples_total: self.cpu_samples_total,
            cpu_samples_self: self.cpu_samples_self,
            cpu_samples_inclusive: self.cpu_samples_inclusive,
            cpu_samples_callers: self
                .cpu_samples_callers
                .iter()
                .map(|c| CallerSamples {
                    package: s(c.package),
                    samples: c.samples,
                })
                .collect(),
        }
    }
}

/// A field's number: its place in [`c::ALL`] (schema order, which is also the order the record
/// is serialised in).
const fn field(name: &str) -> usize {
    let mut i = 0;
    while i < c::ALL.len() {
        let (a, b) = (c::ALL[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("not a column")
}

/// The fields that may be absent (`#[serde(default)]`); any other absent field sends the payload
/// to the record decoder.
const OPTIONAL: u64 = 1 << field(c::SOURCES)
    | 1 << field(c::JOB_SOURCE)
    | 1 << field(c::N_RANKS)
    | 1 << field(c::CPU_USER_US)
    | 1 << field(c::CPU_SYS_US)
    | 1 << field(c::CPU_SAMPLING)
    | 1 << field(c::CPU_SAMPLE_HZ)
    | 1 << field(c::CPU_SAMPLES_TOTAL)
    | 1 << field(c::CPU_SAMPLES_SELF)
    | 1 << field(c::CPU_SAMPLES_INCLUSIVE)
    | 1 << field(c::CPU_SAMPLES_CALLERS);
const ALL_FIELDS: u64 = (1 << c::ALL.len()) - 1;

/// Whether two short byte strings are equal, compared inline (a call to `memcmp` for each of a
/// record's 44 keys was a twentieth of the reader's thread, measured).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

/// A payload read byte by byte: the JSON a serialiser writes, in a subset that is simple to
/// read right. Anything else (`None`) is left to serde.
struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        &self.text.as_bytes()[self.at..]
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().first() {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.bytes().first().copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.at += 1)
    }

    fn word(&mut self, w: &[u8]) -> bool {
        self.ws();
        let hit = self.bytes().starts_with(w);
        if hit {
            self.at += w.len();
        }
        hit
    }

    /// A string without escapes (a `\` or a control character: `None`).
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let rest = self.bytes();
        // Most values are short: one pass, no call.
        let mut n = 0;
        loop {
            match *rest.get(n)? {
                b'"' => break,
                b'\\' | 0..0x20 => return None,
                _ => n += 1,
            }
        }
        let s = &self.text[self.at..self.at + n];
        self.at += n + 1;
        Some(s)
    }

    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.word(b"null") {
            return Some(None);
        }
        f(self).map(Some)
    }

    /// A non-negative integer as serde_json reads one into an integer field (no sign, no
    /// leading zero, no fraction or exponent: those are refused by the next token's check).
    fn unsigned(&mut self) -> Option<u64> {
        self.ws();
        self.digits()
    }

    /// [`Reader::unsigned`] where it stands (after a sign: no white space).
    fn digits(&mut self) -> Option<u64> {
        let b = self.bytes();
        let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || (n > 1 && b[0] == b'0') {
            return None;
        }
        let mut v: u64 = 0;
        for &c in &b[..n] {
            v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
        }
        self.at += n;
        Some(v)
    }

    fn u32(&mut self) -> Option<u32> {
        self.unsigned()?.try_into().ok()
    }

    fn i32(&mut self) -> Option<i32> {
        if self.peek()? == b'-' {
            self.at += 1;
            // serde_json reads `-0` as a float, which an integer field refuses.
            let m = self.digits().filter(|&m| m > 0)?;
            return i32::try_from(-i64::try_from(m).ok()?).ok();
        }
        self.unsigned()?.try_into().ok()
    }

    fn boolean(&mut self) -> Option<bool> {
        if self.word(b"true") {
            Some(true)
        } else if self.word(b"false") {
            Some(false)
        } else {
            None
        }
    }

    fn named<T: std::str::FromStr>(&mut self) -> Option<T> {
        self.string()?.parse().ok()
    }

    fn time(&mut self) -> Option<Micros> {
        pyusage_record::parse_micros(self.string()?).ok()
    }

    fn sources(&mut self) -> Option<Sources<'a>> {
        self.eat(b'[')?;
        let mut s = Sources::default();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(s);
        }
        loop {
            let v: Source = self.named()?;
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
                Sources::Borrowed(_) => return None,
            };
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(s);
                }
                _ => return None,
            }
        }
    }

    /// `cpu_samples_callers`: up to [`sampling::MAX_CALLERS`] (more are invalid, and left to
    /// serde and the validation to refuse with its reason).
    fn callers(&mut self) -> Option<Callers<'a>> {
        self.eat(b'[')?;
        let mut all = [Caller::default(); sampling::MAX_CALLERS];
        let mut n = 0;
        if self.peek()? == b']' {
            self.at += 1;
            return Some(Callers::Inline(0, all));
        }
        loop {
            *all.get_mut(n)? = self.caller()?;
            n += 1;
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(Callers::Inline(n as u8, all));
                }
                _ => return None,
            }
        }
    }

    /// One caller: `{"package": …, "samples": …}`, both once, in either order.
    fn caller(&mut self) -> Option<Caller<'a>> {
        self.eat(b'{')?;
        let (mut package, mut samples) = (None, None);
        loop {
            let k = self.string()?;
            self.eat(b':')?;
            match k {
                "package" if package.is_none() => package = Some(self.string()?),
                "samples" if samples.is_none() => samples = Some(self.unsigned()?),
                _ => return None,
            }
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(Caller {
                        package: package?,
                        samples: samples?,
                    });
                }
                _ => return None,
            }
        }
    }

    /// The next key: the field after `prev` when it is that one (a serialiser's order), else
    /// looked up.
    fn key(&mut self, prev: usize) -> Option<usize> {
        self.ws();
        if let Some(&name) = c::ALL.get(prev.wrapping_add(1)) {
            let b = self.bytes();
            if b.len() > name.len() + 1
                && b[0] == b'"'
                && same(&b[1..=name.len()], name.as_bytes())
                && b[name.len() + 1] == b'"'
            {
                self.at += name.len() + 2;
                return Some(prev.wrapping_add(1));
            }
        }
        let k = self.string()?;
        c::ALL.iter().position(|&n| n == k)
    }
}

impl<'a> View<'a> {
    /// Reads a record's JSON without serde: the payload a serialiser writes (any order of the
    /// fields, white space, but no escapes in strings), several times faster. `None` for
    /// anything it does not read, which [`Record`]'s decoder then has the last word on; what
    /// it reads, serde reads to the same record (a test checks, case by case).
    pub fn parse(text: &'a str) -> Option<View<'a>> {
        View::parse_all(text).map(|(v, _)| v)
    }

    /// [`View::parse`], and whether the payload had every field (none left to its default).
    pub fn parse_all(text: &'a str) -> Option<(View<'a>, bool)> {
        let mut r = Reader { text, at: 0 };
        let mut v = View {
            record_id: "",
            seq: 0,
            source: Source::Ebpf,
            sources: Sources::default(),
            host: "",
            system: None,
            subsystem: None,
            is_compute: false,
            pid: 0,
            ppid: 0,
            root_pid: 0,
            process_start: 0,
            process_end: None,
            exit: Exit::Unknown,
            exit_code: None,
            exit_signal: None,
            executable: "",
            python_version: None,
            main: None,
            uid: 0,
            username: None,
            is_staff: false,
            in_container: false,
            container_runtime: None,
            blas: None,
            job_id: None,
            step_id: None,
            job_source: None,
            rank: None,
            n_ranks: None,
            num_nodes: 0,
            qos: None,
            account: None,
            partition: None,
            package: "",
            distribution: None,
            version: None,
            env_kind: EnvKind::Unknown,
            env_prefix: None,
            first_path: "",
            n_files: 0,
            first_seen: 0,
            cpu_user_us: None,
            cpu_sys_us: None,
            cpu_sampling: None,
            cpu_sample_hz: None,
            cpu_samples_total: None,
            cpu_samples_self: None,
            cpu_samples_inclusive: None,
            cpu_samples_callers: Callers::default(),
        };
        const RECORD_ID: usize = field(c::RECORD_ID);
        const SEQ: usize = field(c::SEQ);
        const SOURCE: usize = field(c::SOURCE);
        const SOURCES: usize = field(c::SOURCES);
        const HOST: usize = field(c::HOST);
        const SYSTEM: usize = field(c::SYSTEM);
        const SUBSYSTEM: usize = field(c::SUBSYSTEM);
        const IS_COMPUTE: usize = field(c::IS_COMPUTE);
        const PID: usize = field(c::PID);
        const PPID: usize = field(c::PPID);
        const ROOT_PID: usize = field(c::ROOT_PID);
        const PROCESS_START: usize = field(c::PROCESS_START);
        const PROCESS_END: usize = field(c::PROCESS_END);
        const EXIT: usize = field(c::EXIT);
        const EXIT_CODE: usize = field(c::EXIT_CODE);
        const EXIT_SIGNAL: usize = field(c::EXIT_SIGNAL);
        const EXECUTABLE: usize = field(c::EXECUTABLE);
        const PYTHON_VERSION: usize = field(c::PYTHON_VERSION);
        const MAIN: usize = field(c::MAIN);
        const UID: usize = field(c::UID);
        const USERNAME: usize = field(c::USERNAME);
        const IS_STAFF: usize = field(c::IS_STAFF);
        const IN_CONTAINER: usize = field(c::IN_CONTAINER);
        const CONTAINER_RUNTIME: usize = field(c::CONTAINER_RUNTIME);
        const BLAS: usize = field(c::BLAS);
        const JOB_ID: usize = field(c::JOB_ID);
        const STEP_ID: usize = field(c::STEP_ID);
        const JOB_SOURCE: usize = field(c::JOB_SOURCE);
        const RANK: usize = field(c::RANK);
        const N_RANKS: usize = field(c::N_RANKS);
        const NUM_NODES: usize = field(c::NUM_NODES);
        const QOS: usize = field(c::QOS);
        const ACCOUNT: usize = field(c::ACCOUNT);
        const PARTITION: usize = field(c::PARTITION);
        const PACKAGE: usize = field(c::PACKAGE);
        const DISTRIBUTION: usize = field(c::DISTRIBUTION);
        const VERSION: usize = field(c::VERSION);
        const ENV_KIND: usize = field(c::ENV_KIND);
        const ENV_PREFIX: usize = field(c::ENV_PREFIX);
        const FIRST_PATH: usize = field(c::FIRST_PATH);
        const N_FILES: usize = field(c::N_FILES);
        const FIRST_SEEN: usize = field(c::FIRST_SEEN);
        const CPU_USER_US: usize = field(c::CPU_USER_US);
        const CPU_SYS_US: usize = field(c::CPU_SYS_US);
        const CPU_SAMPLING: usize = field(c::CPU_SAMPLING);
        const CPU_SAMPLE_HZ: usize = field(c::CPU_SAMPLE_HZ);
        const CPU_SAMPLES_TOTAL: usize = field(c::CPU_SAMPLES_TOTAL);
        const CPU_SAMPLES_SELF: usize = field(c::CPU_SAMPLES_SELF);
        const CPU_SAMPLES_INCLUSIVE: usize = field(c::CPU_SAMPLES_INCLUSIVE);
        const CPU_SAMPLES_CALLERS: usize = field(c::CPU_SAMPLES_CALLERS);
        r.eat(b'{')?;
        let mut seen: u64 = 0;
        let mut prev = usize::MAX;
        if r.peek()? != b'}' {
            loop {
                let k = r.key(prev)?;
                if seen & 1 << k != 0 {
                    return None;
                }
                seen |= 1 << k;
                prev = k;
                r.eat(b':')?;
                match k {
                    RECORD_ID => v.record_id = r.string()?,
                    SEQ => v.seq = r.unsigned()?,
                    SOURCE => v.source = r.named()?,
                    SOURCES => v.sources = r.sources()?,
                    HOST => v.host = r.string()?,
                    SYSTEM => v.system = r.opt(Reader::string)?,
                    SUBSYSTEM => v.subsystem = r.opt(Reader::string)?,
                    IS_COMPUTE => v.is_compute = r.boolean()?,
                    PID => v.pid = r.i32()?,
                    PPID => v.ppid = r.i32()?,
                    ROOT_PID => v.root_pid = r.i32()?,
                    PROCESS_START => v.process_start = r.time()?,
                    PROCESS_END => v.process_end = r.opt(Reader::time)?,
                    EXIT => v.exit = r.named()?,
                    EXIT_CODE => v.exit_code = r.opt(Reader::i32)?,
                    EXIT_SIGNAL => v.exit_signal = r.opt(Reader::string)?,
                    EXECUTABLE => v.executable = r.string()?,
                    PYTHON_VERSION => v.python_version = r.opt(Reader::string)?,
                    MAIN => v.main = r.opt(Reader::string)?,
                    UID => v.uid = r.u32()?,
                    USERNAME => v.username = r.opt(Reader::string)?,
                    IS_STAFF => v.is_staff = r.boolean()?,
                    IN_CONTAINER => v.in_container = r.boolean()?,
                    CONTAINER_RUNTIME => v.container_runtime = r.opt(Reader::string)?,
                    BLAS => v.blas = r.opt(Reader::string)?,
                    JOB_ID => v.job_id = r.opt(Reader::string)?,
                    STEP_ID => v.step_id = r.opt(Reader::string)?,
                    JOB_SOURCE => v.job_source = r.opt(Reader::named)?,
                    RANK => v.rank = r.opt(Reader::i32)?,
                    N_RANKS => v.n_ranks = r.opt(Reader::u32)?,
                    NUM_NODES => v.num_nodes = r.u32()?,
                    QOS => v.qos = r.opt(Reader::string)?,
                    ACCOUNT => v.account = r.opt(Reader::string)?,
                    PARTITION => v.partition = r.opt(Reader::string)?,
                    PACKAGE => v.package = r.string()?,
                    DISTRIBUTION => v.distribution = r.opt(Reader::string)?,
                    VERSION => v.version = r.opt(Reader::string)?,
                    ENV_KIND => v.env_kind = r.named()?,
                    ENV_PREFIX => v.env_prefix = r.opt(Reader::string)?,
                    FIRST_PATH => v.first_path = r.string()?,
                    N_FILES => v.n_files = r.u32()?,
                    FIRST_SEEN => v.first_seen = r.time()?,
                    CPU_USER_US => v.cpu_user_us = r.opt(Reader::unsigned)?,
                    CPU_SYS_US => v.cpu_sys_us = r.opt(Reader::unsigned)?,
                    CPU_SAMPLING => v.cpu_sampling = r.opt(Reader::string)?,
                    CPU_SAMPLE_HZ => v.cpu_sample_hz = r.opt(Reader::u32)?,
                    CPU_SAMPLES_TOTAL => v.cpu_samples_total = r.opt(Reader::unsigned)?,
                    CPU_SAMPLES_SELF => v.cpu_samples_self = r.opt(Reader::unsigned)?,
                    CPU_SAMPLES_INCLUSIVE => v.cpu_samples_inclusive = r.opt(Reader::unsigned)?,
                    CPU_SAMPLES_CALLERS => v.cpu_samples_callers = r.callers()?,
                    _ => return None,
                }
                match r.peek()? {
                    b',' => r.at += 1,
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        r.at += 1;
        r.ws();
        (r.at == text.len() && seen | OPTIONAL == ALL_FIELDS).then_some((v, seen == ALL_FIELDS))
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

/// One entry of `cpu_samples_callers`, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caller<'a> {
    /// The calling package.
    pub package: &'a str,
    /// Its samples.
    pub samples: u64,
}

/// `cpu_samples_callers`: read into an array (no allocation; a valid record has at most
/// [`sampling::MAX_CALLERS`]), or a record's.
#[derive(Debug, Clone)]
pub enum Callers<'a> {
    /// Read from a payload.
    Inline(u8, [Caller<'a>; sampling::MAX_CALLERS]),
    /// A record's (any number: the validation refuses too many).
    Borrowed(&'a [CallerSamples]),
}

impl<'a> Callers<'a> {
    /// How many.
    pub fn len(&self) -> usize {
        match self {
            Callers::Inline(n, _) => *n as usize,
            Callers::Borrowed(s) => s.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`th (`i < len`).
    pub fn get(&self, i: usize) -> Caller<'a> {
        match *self {
            Callers::Inline(_, ref a) => a[i],
            Callers::Borrowed(s) => Caller {
                package: &s[i].package,
                samples: s[i].samples,
            },
        }
    }

    /// In order.
    pub fn iter(&self) -> impl Iterator<Item = Caller<'a>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

impl PartialEq for Callers<'_> {
    fn eq(&self, o: &Self) -> bool {
        self.iter().eq(o.iter())
    }
}

impl Default for Callers<'_> {
    fn default() -> Self {
        Callers::Inline(0, [Caller::default(); sampling::MAX_CALLERS])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the reader read `j`; what it reads, serde reads to the same record.
    fn read_alike(j: &str) -> bool {
        let fast = View::parse(j).map(|v| v.to_record());
        if let Some(f) = &fast {
            let serde = serde_json::from_str::<Record>(j);
            assert_eq!(Some(f), serde.as_ref().ok(), "{j}: {serde:?}");
        }
        fast.is_some()
    }

    /// A record's JSON with its fields' values as given (raw JSON), in schema order.
    fn object(fields: &[(&str, String)]) -> String {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }

    fn fields_of(r: &Record) -> Vec<(&'static str, String)> {
        let v = serde_json::to_value(r).unwrap();
        c::ALL.iter().map(|&k| (k, v[k].to_string())).collect()
    }

    #[test]
    fn the_reader_reads_what_serde_reads_and_leaves_the_rest_to_it() {
        let mut all = Record::odd_examples();
        let mut many = Record::example();
        many.sources = vec![Source::Atexit; Sources::INLINE + 3];
        all.push(many);
        // Callers: none, the most a valid record has, more (left to serde), odd values.
        for n in [0, 1, sampling::MAX_CALLERS, sampling::MAX_CALLERS + 1, 20] {
            let mut r = Record::odd_examples()[0].clone();
            r.cpu_samples_callers = (0..n)
                .map(|i| CallerSamples {
                    package: format!("p{i}"),
                    samples: [0, 1, u64::MAX, 1 << 53][i % 4],
                })
                .collect();
            all.push(r);
        }
        for r in &all {
            assert_eq!(View::of(r).to_record(), *r);
            let j = serde_json::to_string(r).unwrap();
            let readable =
                !j.contains('\\') && r.cpu_samples_callers.len() <= sampling::MAX_CALLERS;
            assert_eq!(read_alike(&j), readable, "{j}");
            let pretty = serde_json::to_string_pretty(r).unwrap();
            assert_eq!(read_alike(&pretty), readable, "{pretty}");
            // Another order (a `Value`'s keys are sorted, a caller's too).
            let sorted = serde_json::to_value(r).unwrap().to_string();
            assert_eq!(read_alike(&sorted), readable, "{sorted}");
            assert_eq!(read_alike(&format!(" {j}\n")), readable);
        }
        let base = fields_of(&Record::odd_examples()[0]);
        assert!(read_alike(&object(&base)));
        let values = [
            "null",
            "0",
            "-0",
            "-1",
            "- 1",
            "--1",
            "1.0",
            "1e3",
            "01",
            "7x",
            "true",
            "false",
            "truex",
            "nul",
            "[]",
            "{}",
            "4294967295",
            "4294967296",
            "-2147483648",
            "-2147483649",
            "2147483648",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "\"x\"",
            "\"\"",
            "\"ebpf\"",
            "\"atexit\"",
            "\"Ebpf\"",
            "\"exited\"",
            "\"running\"",
            "\"conda\"",
            "\"env\"",
            "\"a\\\"b\"",
            "\"a\tb\"",
            "\"\\u0041\"",
            "\"2026-11-25T10:00:00.000002Z\"",
            "\"2026-11-25T10:00:00Z\"",
            "\"2026-11-25T10:00:60.000000Z\"",
            "\"2026-13-25T10:00:00.000000Z\"",
            "[\"ebpf\"]",
            "[\"ebpf\",]",
            "[ \"preload\" , \"atexit\" ]",
            "[\"bogus\"]",
            "[null]",
            "{\"ebpf\":null}",
            "\"ünï\"",
            "\"sampled\"",
            "\"unsupported:python-3.7\"",
            // Callers.
            "[{\"package\":\"x\",\"samples\":1}]",
            "[ { \"samples\" : 0 , \"package\" : \"x\" } , {\"package\":\"y\",\"samples\":2} ]",
            "[{\"package\":\"x\",\"samples\":18446744073709551615}]",
            "[{\"package\":\"x\",\"samples\":18446744073709551616}]",
            "[{\"package\":\"x\",\"samples\":-1}]",
            "[{\"package\":\"x\",\"samples\":1.0}]",
            "[{\"package\":\"x\",\"samples\":01}]",
            "[{\"package\":\"x\",\"samples\":null}]",
            "[{\"package\":\"x\",\"samples\":\"1\"}]",
            "[{\"package\":null,\"samples\":1}]",
            "[{\"package\":\"\",\"samples\":1}]",
            "[{\"package\":\"ünï\",\"samples\":1}]",
            "[{\"package\":\"a\\\"b\",\"samples\":1}]",
            "[{\"package\":\"x\"}]",
            "[{\"samples\":1}]",
            "[{\"package\":\"x\",\"samples\":1,\"package\":\"y\"}]",
            "[{\"package\":\"x\",\"samples\":1,\"samples\":2}]",
            "[{\"package\":\"x\",\"samples\":1,\"bogus\":1}]",
            "[{\"package\":\"x\",\"samples\":1,}]",
            "[{\"package\":\"x\",\"samples\":1},]",
            "[{\"package\":\"x\" \"samples\":1}]",
            "[{\"package\":\"x\",\"samples\":1}",
            "[{\"package\":\"x\",\"samples\":1]",
            "[{\"pack\\u0061ge\":\"x\",\"samples\":1}]",
            "[[\"x\",1]]",
            "[{}]",
            "{\"package\":\"x\",\"samples\":1}",
        ];
        let (mut read, mut callers_read) = (0, 0);
        for i in 0..base.len() {
            for v in values {
                let mut f = base.clone();
                f[i].1 = v.to_string();
                let hit = read_alike(&object(&f));
                read += hit as usize;
                callers_read += (hit && base[i].0 == c::CPU_SAMPLES_CALLERS) as usize;
            }
            // Absent (read only where serde has a default), twice, unknown.
            let mut f = base.clone();
            f.remove(i);
            assert_eq!(
                read_alike(&object(&f)),
                OPTIONAL & 1 << i != 0,
                "{}",
                base[i].0
            );
            let mut f = base.clone();
            f.push(base[i].clone());
            assert!(!read_alike(&object(&f)), "twice: {}", base[i].0);
            let mut f = base.clone();
            f.insert(i, ("bogus", "1".into()));
            assert!(!read_alike(&object(&f)));
        }
        assert!(read > 100, "the reader read {read} of the variants");
        // `[]`, one, two in another order, the largest count, an empty and a non-ASCII name.
        assert_eq!(callers_read, 6, "callers variants read");
        let j = object(&base);
        for bad in [
            format!("{j}x"),
            format!("{j},"),
            j.replacen(',', ",,", 1),
            j.replacen(':', "", 1),
            j[..j.len() - 1].to_string(),
            "{}".into(),
            "".into(),
        ] {
            assert!(!read_alike(&bad), "{bad}");
        }
    }
}
