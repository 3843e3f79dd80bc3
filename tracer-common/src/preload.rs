//! Wire format of the `LD_PRELOAD` library (`preload/`), defined once for both sides.
//!
//! The library sends one `SOCK_SEQPACKET` message per observed event; a message is exactly one
//! datagram, so no framing is needed beyond the header below. The library [`encode`]s into a
//! caller-provided buffer (no allocation, usable in an audit hook); the daemon [`decode`]s a
//! received datagram into borrowed slices and must treat every byte as hostile: any process on
//! the node can connect and write anything, so `decode` checks every field and never panics.
//!
//! # Layout (version 1), all integers little-endian
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | `version`, [`VERSION`] |
//! | 1 | 1 | `kind`, a [`MessageKind`] |
//! | 2 | 1 | `flags`: one `FLAG_*_TRUNCATED` bit per field; other bits must be 0 |
//! | 3 | 1 | reserved, must be 0 |
//! | 4 | 2 | `name_len` (`u16`) |
//! | 6 | 2 | `path_len` (`u16`) |
//! | 8 | 2 | `args_len` (`u16`) |
//! | 10 | 2 | `env_len` (`u16`) |
//! | 12 | … | name (UTF-8), path, args, env: the four fields back to back |
//!
//! The datagram is exactly `12 +` the four lengths, and each field is at most its `*_MAX`.
//! Which fields a kind carries is fixed ([`MessageKind`]); a field it does not carry must be
//! empty. A truncated path names no real file: the daemon counts it, it does not resolve it.
//!
//! # What the format does not carry
//!
//! No pid, uid, gid, timestamp or job id. Whatever a message claimed about its sender would be
//! written by the (untrusted) sender. The daemon takes the sender's identity from the kernel:
//! with `SO_PASSCRED` set each datagram arrives with `SCM_CREDENTIALS`, the pid/uid/gid of the
//! process that sent *that* message. (`SO_PEERCRED` alone is not enough: it is fixed at
//! `connect`, and a child of `fork()` keeps writing on its parent's connection.) The time the
//! daemon reads a message bounds the event's time from above: the library never buffers.
//!
//! The [`MessageKind::Hello`] fields (program, command line, environment) are what an exec
//! event of the eBPF tracer carries, read by the library at load, before any Python code of the
//! process ran: the same untrusted input the kernel copies from the process's memory at exec.
//!
//! # The atexit hook
//!
//! Not only the library writes to the socket: a `sitecustomize` hook lists, at interpreter
//! exit, the top-level modules in `sys.modules` and sends them as [`MessageKind::Atexit`]
//! messages on a connection of its own, with no `Hello`. Its args are a pair list,
//! `package NUL path NUL` repeated (checked by [`AtexitModules::parse`]; a list that does not
//! fit in [`ARGS_MAX`] is split over several messages, never cut). From Python:
//!
//! ```text
//! struct.pack('<BBBBHHHH', 1, 6, 0, 0, 0, 0, len(args), 0) + args
//! ```

/// Version byte of the current format. A daemon rejects other versions (and counts them).
pub const VERSION: u8 = 1;
/// Size of the fixed header before the fields.
pub const HEADER_LEN: usize = 12;
/// Longest module name kept; longer names are cut (real dotted names are far shorter).
pub const NAME_MAX: usize = 1024;
/// Longest path kept (Linux `PATH_MAX`).
pub const PATH_MAX: usize = crate::PATH_MAX;
/// Longest command line kept, as the eBPF exec event ([`crate::ARGS_MAX`]).
pub const ARGS_MAX: usize = crate::ARGS_MAX;
/// Longest environment block kept, as the eBPF exec event ([`crate::ENV_MAX`]).
pub const ENV_MAX: usize = crate::ENV_MAX;
/// Largest import message (name and path), the buffer an audit hook needs.
pub const IMPORT_MAX: usize = HEADER_LEN + NAME_MAX + PATH_MAX;
/// Largest message of any kind (a [`MessageKind::Hello`] with every field full). The daemon
/// receives into a buffer of this size and rejects anything longer (`MSG_TRUNC`).
pub const MAX_MESSAGE: usize = HEADER_LEN + PATH_MAX + ARGS_MAX + ENV_MAX;
/// `flags` bit: the name was cut to fit.
pub const FLAG_NAME_TRUNCATED: u8 = 1;
/// `flags` bit: the path was cut to fit.
pub const FLAG_PATH_TRUNCATED: u8 = 2;
/// `flags` bit: the command line was cut to fit.
pub const FLAG_ARGS_TRUNCATED: u8 = 4;
/// `flags` bit: the environment was cut to fit.
pub const FLAG_ENV_TRUNCATED: u8 = 8;
const KNOWN_FLAGS: u8 =
    FLAG_NAME_TRUNCATED | FLAG_PATH_TRUNCATED | FLAG_ARGS_TRUNCATED | FLAG_ENV_TRUNCATED;

/// What the library observed.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// The `import` audit event with no filename: an import was *attempted* (raised before the
    /// finder runs, so also for imports that then fail). Carries the module name.
    Import = 1,
    /// The `import` audit event with a filename: an extension module's shared object was
    /// loaded. Carries the module name and the `.so` path.
    ExtensionImport = 2,
    /// The `exec` audit event of a code object whose `co_filename` is an absolute path: a
    /// module body (source or `.pyc`) ran. Carries the source path.
    Exec = 3,
    /// The first message of a connection, sent by the library's constructor in a Python
    /// process: the program as executed (`AT_EXECFN`) as the path, the NUL-separated command
    /// line as args, the NUL-separated environment as env (args and env may be empty).
    Hello = 4,
    /// An interpreter without audit hooks (CPython 2.7–3.7) opened, or failed to open, a
    /// module-like file (`.py`, `.pyc`, `.pyo`, `.so`) through the libc `open` family: the
    /// path as passed (possibly relative) and, in args, an [`OpenRecord`] of
    /// [`OPEN_RECORD_LEN`] bytes. The daemon tells imports from reads by the same sequence
    /// rules as for the eBPF tracer's opens.
    Open = 5,
    /// The `sitecustomize` atexit hook's list of the top-level modules in `sys.modules` at
    /// interpreter exit: in args, `package NUL path NUL` pairs ([`AtexitModules`]), at least
    /// one; name, path and env empty. Sent on a connection of its own, without a `Hello`.
    Atexit = 6,
}

/// Length of the [`OpenRecord`] an [`MessageKind::Open`] carries in its args.
pub const OPEN_RECORD_LEN: usize = 16;

/// What an [`MessageKind::Open`] says besides the path: which thread, what the call returned,
/// relative to which directory, with which flags. Little-endian `u32 tid, i32 ret, i32 dfd,
/// i32 oflags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenRecord {
    /// The calling thread (`gettid`). The daemon keys the import sequence rules per thread.
    pub tid: u32,
    /// The descriptor, or `-errno` of a failed open.
    pub ret: i32,
    /// Directory descriptor a relative path is relative to (`AT_FDCWD`, -100, for `open`).
    pub dfd: i32,
    /// The `open(2)` flags (`O_WRONLY`/`O_RDWR` mark a write).
    pub oflags: i32,
}

impl OpenRecord {
    /// The record's bytes.
    pub fn to_bytes(&self) -> [u8; OPEN_RECORD_LEN] {
        let [a, b, c, d] = self.tid.to_le_bytes();
        let [e, f, g, h] = self.ret.to_le_bytes();
        let [i, j, k, l] = self.dfd.to_le_bytes();
        let [m, n, o, p] = self.oflags.to_le_bytes();
        [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p]
    }

    /// Parses the args of an [`MessageKind::Open`] (exactly [`OPEN_RECORD_LEN`] bytes).
    pub fn from_bytes(b: &[u8]) -> Option<OpenRecord> {
        let b: &[u8; OPEN_RECORD_LEN] = b.try_into().ok()?;
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        Some(OpenRecord {
            tid: u32::from_le_bytes(word(0)),
            ret: i32::from_le_bytes(word(4)),
            dfd: i32::from_le_bytes(word(8)),
            oflags: i32::from_le_bytes(word(12)),
        })
    }
}

impl MessageKind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Import),
            2 => Some(Self::ExtensionImport),
            3 => Some(Self::Exec),
            4 => Some(Self::Hello),
            5 => Some(Self::Open),
            6 => Some(Self::Atexit),
            _ => None,
        }
    }

    fn has_name(self) -> bool {
        matches!(self, Self::Import | Self::ExtensionImport)
    }

    fn has_path(self) -> bool {
        !matches!(self, Self::Import | Self::Atexit)
    }

    fn has_process(self) -> bool {
        matches!(self, Self::Hello)
    }

    fn has_args(self) -> bool {
        matches!(self, Self::Hello | Self::Open | Self::Atexit)
    }
}

/// What an atexit report says of a module's file (the pair's second item).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleFile<'a> {
    /// `__file__`, an absolute path (at most [`PATH_MAX`] bytes).
    Path(&'a [u8]),
    /// `<built-in>`: compiled into the interpreter (`sys`, `builtins`).
    BuiltIn,
    /// `<frozen>`: frozen into the interpreter, no file read.
    Frozen,
    /// Empty: no file is known (a namespace package, a module without `__file__`).
    Unknown,
}

impl<'a> ModuleFile<'a> {
    /// The item as sent; `None` for anything else than the four forms (a relative path).
    pub fn parse(b: &'a [u8]) -> Option<Self> {
        match b {
            b"" => Some(Self::Unknown),
            b"<built-in>" => Some(Self::BuiltIn),
            b"<frozen>" => Some(Self::Frozen),
            [b'/', ..] if b.len() <= PATH_MAX => Some(Self::Path(b)),
            _ => None,
        }
    }

    /// The item as sent.
    pub fn as_bytes(self) -> &'a [u8] {
        match self {
            Self::Path(p) => p,
            Self::BuiltIn => b"<built-in>",
            Self::Frozen => b"<frozen>",
            Self::Unknown => b"",
        }
    }
}

/// One pair of an atexit report: a top-level module and its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtexitModule<'a> {
    /// A top-level module name: UTF-8, 1 to [`NAME_MAX`] bytes, no `.`, `/` or NUL.
    pub package: &'a str,
    /// Its file.
    pub file: ModuleFile<'a>,
}

/// The pairs of an [`MessageKind::Atexit`]'s args, `package NUL path NUL` repeated: checked
/// whole by [`AtexitModules::parse`] (so that a list is used entirely or not at all), then
/// iterated. Never panics, never allocates.
#[derive(Clone, Debug)]
pub struct AtexitModules<'a> {
    rest: &'a [u8],
}

/// The item of `rest` up to its NUL, and what follows the NUL; `None` without a NUL.
fn item(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = rest.iter().position(|&b| b == 0)?;
    Some((rest.get(..end)?, rest.get(end + 1..)?))
}

/// The first pair of `rest` and what follows it.
fn pair<'a>(rest: &'a [u8]) -> Result<(AtexitModule<'a>, &'a [u8]), DecodeError> {
    let (package, rest) = item(rest).ok_or(DecodeError::Modules)?;
    let (file, rest) = item(rest).ok_or(DecodeError::Modules)?;
    let package = core::str::from_utf8(package).map_err(|_| DecodeError::Modules)?;
    if package.is_empty() || package.len() > NAME_MAX || package.contains(['.', '/']) {
        return Err(DecodeError::Modules);
    }
    let file = ModuleFile::parse(file).ok_or(DecodeError::Modules)?;
    Ok((AtexitModule { package, file }, rest))
}

impl<'a> AtexitModules<'a> {
    /// Checks every pair of `args`: at least one, each item NUL-terminated, an even number of
    /// items, each package a top-level name and each file one of [`ModuleFile`]'s forms.
    pub fn parse(args: &'a [u8]) -> Result<Self, DecodeError> {
        if args.is_empty() {
            return Err(DecodeError::Modules);
        }
        let mut rest = args;
        while !rest.is_empty() {
            rest = pair(rest)?.1;
        }
        Ok(AtexitModules { rest: args })
    }
}

impl<'a> Iterator for AtexitModules<'a> {
    type Item = AtexitModule<'a>;

    fn next(&mut self) -> Option<AtexitModule<'a>> {
        let (m, rest) = pair(self.rest).ok()?;
        self.rest = rest;
        Some(m)
    }
}

/// A message; when decoded, the slices borrow from the received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// What was observed.
    pub kind: MessageKind,
    /// Module name (empty unless [`MessageKind::Import`] or [`MessageKind::ExtensionImport`]).
    pub name: &'a str,
    /// File path bytes (empty for [`MessageKind::Import`]).
    pub path: &'a [u8],
    /// Command line, NUL-separated ([`MessageKind::Hello`]); the [`OpenRecord`]
    /// ([`MessageKind::Open`]); the module pairs ([`MessageKind::Atexit`]).
    pub args: &'a [u8],
    /// Environment, NUL-separated `KEY=value` (only [`MessageKind::Hello`]).
    pub env: &'a [u8],
    /// `FLAG_*_TRUNCATED` bits: which fields were cut.
    pub flags: u8,
}

impl<'a> Message<'a> {
    /// A message of `kind` with every field empty.
    pub fn new(kind: MessageKind) -> Self {
        Message {
            kind,
            name: "",
            path: &[],
            args: &[],
            env: &[],
            flags: 0,
        }
    }

    /// Whether the field of `flag` was cut by the sender.
    pub fn truncated(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Why a datagram is not a valid message. The daemon counts these and drops the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than [`HEADER_LEN`].
    Short,
    /// Longer than [`MAX_MESSAGE`].
    Long,
    /// A `version` other than [`VERSION`].
    Version(u8),
    /// An unknown `kind`.
    Kind(u8),
    /// Unknown `flags` bits or a non-zero reserved byte.
    Flags,
    /// The header's lengths differ from the datagram's, or a field is over its maximum.
    Length,
    /// A field the kind requires is empty, or one it forbids is present.
    Shape,
    /// The name is not UTF-8.
    Utf8,
    /// The module pairs of an [`MessageKind::Atexit`] are malformed (see [`AtexitModules`]).
    Modules,
}

/// Why [`encode`] wrote nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The buffer is shorter than the message ([`IMPORT_MAX`] fits every import message,
    /// [`MAX_MESSAGE`] every message).
    Buffer,
    /// A field the kind requires is empty (or an atexit report's pairs are malformed or
    /// longer than [`ARGS_MAX`]: they are split over several messages, never cut).
    Shape,
}

/// Longest prefix of `s` of at most `max` bytes that ends at a character boundary.
fn cut_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// `b` cut to `max` bytes, and whether it was cut.
fn cut(b: &[u8], max: usize) -> (&[u8], bool) {
    match b.get(..max) {
        Some(k) if k.len() < b.len() => (k, true),
        _ => (b, false),
    }
}

/// Encode `m` into `buf` and return its length. Each field is cut to its maximum with its
/// flag set (the sender's flags are ignored); fields the kind does not carry are dropped.
/// Never panics and never allocates.
pub fn encode(m: &Message<'_>, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let kind = m.kind;
    let name = if kind.has_name() { m.name } else { "" };
    let path = if kind.has_path() { m.path } else { &[] };
    let args = if kind.has_args() { m.args } else { &[] };
    let env = if kind.has_process() { m.env } else { &[] };
    if kind == MessageKind::Open && args.len() != OPEN_RECORD_LEN {
        return Err(EncodeError::Shape);
    }
    if kind == MessageKind::Atexit && (args.len() > ARGS_MAX || AtexitModules::parse(args).is_err())
    {
        return Err(EncodeError::Shape);
    }
    if (kind.has_name() && name.is_empty()) || (kind.has_path() && path.is_empty()) {
        return Err(EncodeError::Shape);
    }
    let mut flags = 0;
    let kept_name = cut_str(name, NAME_MAX);
    if kept_name.len() < name.len() {
        flags |= FLAG_NAME_TRUNCATED;
    }
    let fields: [(&[u8], u8); 3] = [
        (path, FLAG_PATH_TRUNCATED),
        (args, FLAG_ARGS_TRUNCATED),
        (env, FLAG_ENV_TRUNCATED),
    ];
    let maxes = [PATH_MAX, ARGS_MAX, ENV_MAX];
    let mut kept: [&[u8]; 4] = [kept_name.as_bytes(), &[], &[], &[]];
    for ((slot, (field, flag)), max) in kept.iter_mut().skip(1).zip(fields).zip(maxes) {
        let (k, was_cut) = cut(field, max);
        if was_cut {
            flags |= flag;
        }
        *slot = k;
    }
    // Written without indexing or unchecked splits: the library that calls this in every
    // Python process is built with no panic path at all (`preload/`).
    let total = HEADER_LEN + kept.iter().map(|k| k.len()).sum::<usize>();
    let Some(out) = buf.get_mut(..total) else {
        return Err(EncodeError::Buffer);
    };
    let Some((header, mut rest)) = out.split_first_chunk_mut::<HEADER_LEN>() else {
        return Err(EncodeError::Buffer);
    };
    let mut lens = [0u8; 8];
    for (pair, k) in lens.chunks_exact_mut(2).zip(kept) {
        // Every field is at most ENV_MAX (32768) bytes, so its length fits in a u16.
        pair.copy_from_slice(&(k.len() as u16).to_le_bytes());
        let Some((dst, tail)) = rest.split_at_mut_checked(k.len()) else {
            return Err(EncodeError::Buffer);
        };
        dst.copy_from_slice(k);
        rest = tail;
    }
    let [l0, l1, l2, l3, l4, l5, l6, l7] = lens;
    *header = [
        VERSION, kind as u8, flags, 0, l0, l1, l2, l3, l4, l5, l6, l7,
    ];
    Ok(total)
}

/// Decode one received datagram. Checks every field; never panics on any input.
pub fn decode(datagram: &[u8]) -> Result<Message<'_>, DecodeError> {
    if datagram.len() > MAX_MESSAGE {
        return Err(DecodeError::Long);
    }
    let Some((header, body)) = datagram.split_first_chunk::<HEADER_LEN>() else {
        return Err(DecodeError::Short);
    };
    if header[0] != VERSION {
        return Err(DecodeError::Version(header[0]));
    }
    let kind = MessageKind::from_u8(header[1]).ok_or(DecodeError::Kind(header[1]))?;
    let flags = header[2];
    if flags & !KNOWN_FLAGS != 0 || header[3] != 0 {
        return Err(DecodeError::Flags);
    }
    let len = |i: usize| usize::from(u16::from_le_bytes([header[4 + 2 * i], header[5 + 2 * i]]));
    let lens = [len(0), len(1), len(2), len(3)];
    if lens.iter().sum::<usize>() != body.len()
        || lens[0] > NAME_MAX
        || lens[1] > PATH_MAX
        || lens[2] > ARGS_MAX
        || lens[3] > ENV_MAX
    {
        return Err(DecodeError::Length);
    }
    if kind.has_name() != (lens[0] > 0)
        || kind.has_path() != (lens[1] > 0)
        || (!kind.has_args() && lens[2] > 0)
        || (!kind.has_process() && lens[3] > 0)
        || (kind == MessageKind::Open && lens[2] != OPEN_RECORD_LEN)
        || (kind == MessageKind::Atexit && lens[2] == 0)
    {
        return Err(DecodeError::Shape);
    }
    let (name, rest) = body.split_at(lens[0]);
    let (path, rest) = rest.split_at(lens[1]);
    let (args, env) = rest.split_at(lens[2]);
    let name = core::str::from_utf8(name).map_err(|_| DecodeError::Utf8)?;
    if kind == MessageKind::Atexit {
        AtexitModules::parse(args)?;
    }
    Ok(Message {
        kind,
        name,
        path,
        args,
        env,
        flags,
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    fn roundtrip(m: Message<'_>) -> ([u8; MAX_MESSAGE], usize) {
        let mut buf = [0u8; MAX_MESSAGE];
        let n = encode(&m, &mut buf).unwrap();
        (buf, n)
    }

    fn import(name: &str) -> Message<'_> {
        Message {
            name,
            ..Message::new(MessageKind::Import)
        }
    }

    #[test]
    fn kinds_roundtrip() {
        let (b, n) = roundtrip(import("json"));
        assert_eq!(
            &b[..n],
            b"\x01\x01\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00json"
        );
        assert_eq!(decode(&b[..n]).unwrap(), import("json"));

        let so = b"/usr/lib/python3.11/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so";
        let ext = Message {
            name: "_json",
            path: so,
            ..Message::new(MessageKind::ExtensionImport)
        };
        let (b, n) = roundtrip(ext);
        assert_eq!(decode(&b[..n]).unwrap(), ext);

        // Fields a kind does not carry are dropped, not sent.
        let (b, n) = roundtrip(Message {
            name: "ignored",
            path: b"/x/json/__init__.py",
            args: b"python\0x",
            ..Message::new(MessageKind::Exec)
        });
        let m = decode(&b[..n]).unwrap();
        assert_eq!(
            (m.kind, m.name, m.path, m.args),
            (MessageKind::Exec, "", &b"/x/json/__init__.py"[..], &b""[..])
        );

        let rec = OpenRecord {
            tid: 7,
            ret: -2,
            dfd: -100,
            oflags: 0o2000000,
        };
        let bytes = rec.to_bytes();
        let open = Message {
            path: b"json/__pycache__/__init__.cpython-37.pyc",
            args: &bytes,
            ..Message::new(MessageKind::Open)
        };
        let (b, n) = roundtrip(open);
        let m = decode(&b[..n]).unwrap();
        assert_eq!(m, open);
        assert_eq!(OpenRecord::from_bytes(m.args), Some(rec));
        // An Open without its record, or with a short one, is malformed.
        let mut buf = [0u8; 64];
        let short = Message {
            args: &bytes[..15],
            ..open
        };
        assert_eq!(encode(&short, &mut buf), Err(EncodeError::Shape));

        let hello = Message {
            path: b"/usr/bin/python3",
            args: b"python3\0-c\0import json\0",
            env: b"SLURM_JOB_ID=7\0HOME=/root\0",
            ..Message::new(MessageKind::Hello)
        };
        let (b, n) = roundtrip(hello);
        assert_eq!(decode(&b[..n]).unwrap(), hello);
        // A Hello may carry an empty command line and environment (`env -i`, no /proc).
        let bare = Message {
            path: b"/p",
            ..Message::new(MessageKind::Hello)
        };
        let (b, n) = roundtrip(bare);
        assert_eq!(decode(&b[..n]).unwrap(), bare);
    }

    #[test]
    fn required_fields() {
        let mut buf = [0u8; 64];
        for m in [
            import(""),
            Message {
                name: "x",
                ..Message::new(MessageKind::Exec)
            },
            Message {
                name: "x",
                ..Message::new(MessageKind::ExtensionImport)
            },
            Message::new(MessageKind::Hello),
        ] {
            assert_eq!(encode(&m, &mut buf), Err(EncodeError::Shape), "{m:?}");
        }
        let long = Message {
            path: &[b'a'; 100],
            ..Message::new(MessageKind::Exec)
        };
        assert_eq!(encode(&long, &mut buf), Err(EncodeError::Buffer));
        let h = |k: u8, l: [u16; 4]| {
            let mut v = vec![1, k, 0, 0];
            l.iter().for_each(|x| v.extend(x.to_le_bytes()));
            v.resize(12 + l.iter().map(|&x| x as usize).sum::<usize>(), b'a');
            v
        };
        // A name for Exec, no name for Import, a command line for Import: all rejected.
        assert_eq!(decode(&h(3, [1, 1, 0, 0])), Err(DecodeError::Shape));
        assert_eq!(decode(&h(1, [0, 0, 0, 0])), Err(DecodeError::Shape));
        assert_eq!(decode(&h(1, [1, 0, 1, 0])), Err(DecodeError::Shape));
        assert_eq!(decode(&h(4, [0, 0, 1, 1])), Err(DecodeError::Shape));
        assert!(decode(&h(4, [0, 1, 1, 1])).is_ok());
        // A field over its maximum is rejected even when the lengths add up.
        assert_eq!(
            decode(&h(1, [NAME_MAX as u16 + 1, 0, 0, 0])),
            Err(DecodeError::Length)
        );
    }

    #[test]
    fn truncation_is_bounded_and_flagged() {
        let long_path = [b'p'; 10_000];
        let (b, n) = roundtrip(Message {
            path: &long_path,
            ..Message::new(MessageKind::Exec)
        });
        assert_eq!(n, HEADER_LEN + PATH_MAX);
        let m = decode(&b[..n]).unwrap();
        assert!(m.truncated(FLAG_PATH_TRUNCATED) && !m.truncated(FLAG_NAME_TRUNCATED));

        // A name of multi-byte characters is cut at a character boundary.
        let mut name_buf = [0u8; 3 * 600];
        for c in name_buf.chunks_mut(3) {
            c.copy_from_slice("€".as_bytes());
        }
        let name = core::str::from_utf8(&name_buf).unwrap();
        let (b, n) = roundtrip(Message {
            name,
            path: &long_path,
            ..Message::new(MessageKind::ExtensionImport)
        });
        assert_eq!(n, IMPORT_MAX - 1);
        let m = decode(&b[..n]).unwrap();
        assert!(m.truncated(FLAG_NAME_TRUNCATED) && m.truncated(FLAG_PATH_TRUNCATED));
        assert_eq!(m.name.len(), 1023);
        assert!(m.name.chars().all(|c| c == '€'));

        // Every field full: the largest message there is.
        let big = [b'e'; ENV_MAX + 10];
        let (b, n) = roundtrip(Message {
            path: &long_path,
            args: &long_path,
            env: &big,
            ..Message::new(MessageKind::Hello)
        });
        assert_eq!(n, MAX_MESSAGE);
        let m = decode(&b[..n]).unwrap();
        assert_eq!(
            m.flags,
            FLAG_PATH_TRUNCATED | FLAG_ARGS_TRUNCATED | FLAG_ENV_TRUNCATED
        );
        assert_eq!((m.args.len(), m.env.len()), (ARGS_MAX, ENV_MAX));
    }

    #[test]
    fn rejects_malformed_headers() {
        let (b, n) = roundtrip(import("os"));
        let good = &b[..n];
        assert_eq!(decode(&good[..HEADER_LEN - 1]), Err(DecodeError::Short));
        assert_eq!(decode(&good[..n - 1]), Err(DecodeError::Length));
        let mut bad = [0u8; HEADER_LEN + 2];
        bad.copy_from_slice(good);
        bad[0] = 2;
        assert_eq!(decode(&bad), Err(DecodeError::Version(2)));
        bad[0] = 1;
        bad[1] = 9;
        assert_eq!(decode(&bad), Err(DecodeError::Kind(9)));
        bad[1] = 1;
        bad[2] = 16;
        assert_eq!(decode(&bad), Err(DecodeError::Flags));
        bad[2] = 0;
        bad[3] = 1;
        assert_eq!(decode(&bad), Err(DecodeError::Flags));
        bad[3] = 0;
        bad[HEADER_LEN] = 0xff;
        assert_eq!(decode(&bad), Err(DecodeError::Utf8));
        assert_eq!(decode(&[0u8; MAX_MESSAGE + 1]), Err(DecodeError::Long));
    }

    /// An atexit report as the Python hook builds it: `struct.pack('<BBBBHHHH', 1, 6, 0, 0,
    /// 0, 0, len(args), 0) + args`.
    fn python_atexit(args: &[u8]) -> std::vec::Vec<u8> {
        let mut d = vec![1u8, 6, 0, 0, 0, 0, 0, 0];
        d.extend((args.len() as u16).to_le_bytes());
        d.extend([0, 0]);
        d.extend_from_slice(args);
        d
    }

    #[test]
    fn atexit_reports_roundtrip_as_python_builds_them() {
        let args: &[u8] = b"json\0/usr/lib/python3.11/json/__init__.py\0sys\0<built-in>\0\
            zipimport\0<frozen>\0google\0\0";
        let (b, n) = roundtrip(Message {
            args,
            name: "dropped",
            path: b"/dropped",
            ..Message::new(MessageKind::Atexit)
        });
        // Byte for byte what the hook sends.
        assert_eq!(&b[..n], &python_atexit(args)[..]);
        let m = decode(&b[..n]).unwrap();
        assert_eq!(
            (m.kind, m.name, m.path),
            (MessageKind::Atexit, "", &b""[..])
        );
        let pairs: std::vec::Vec<_> = AtexitModules::parse(m.args).unwrap().collect();
        assert_eq!(
            pairs,
            [
                AtexitModule {
                    package: "json",
                    file: ModuleFile::Path(b"/usr/lib/python3.11/json/__init__.py"),
                },
                AtexitModule {
                    package: "sys",
                    file: ModuleFile::BuiltIn,
                },
                AtexitModule {
                    package: "zipimport",
                    file: ModuleFile::Frozen,
                },
                AtexitModule {
                    package: "google",
                    file: ModuleFile::Unknown,
                },
            ]
        );
        // A list filling the args exactly is one message; one byte more is two messages.
        let mut full = vec![];
        while full.len() + 8 < ARGS_MAX {
            full.extend_from_slice(b"m\0/x.py\0");
        }
        full.extend(std::iter::repeat_n(b'm', ARGS_MAX - full.len() - 2));
        full.extend_from_slice(b"\0\0");
        assert_eq!(full.len(), ARGS_MAX);
        let (b, n) = roundtrip(Message {
            args: &full,
            ..Message::new(MessageKind::Atexit)
        });
        assert_eq!(
            AtexitModules::parse(decode(&b[..n]).unwrap().args)
                .unwrap()
                .count(),
            512
        );
        full.insert(0, b'm');
        let mut buf = [0u8; MAX_MESSAGE];
        let over = Message {
            args: &full,
            ..Message::new(MessageKind::Atexit)
        };
        assert_eq!(encode(&over, &mut buf), Err(EncodeError::Shape));
    }

    #[test]
    fn malformed_module_pairs_are_rejected() {
        let mut buf = [0u8; 256];
        for bad in [
            &b""[..],                   // no pair at all
            b"json",                    // no NUL
            b"json\0",                  // an odd number of items
            b"json\0/x/json.py",        // the final NUL missing
            b"json\0/x/json.py\0sys\0", // a pair cut in half
            b"\0<built-in>\0",          // an empty name
            b"json\0json.py\0",         // a relative path
            b"json\0<builtin>\0",       // neither a path nor a marker
            b"os.path\0/x/os.py\0",     // not a top-level name
            b"a/b\0\0",
            b"\xff\0\0", // not UTF-8
        ] {
            assert_eq!(
                AtexitModules::parse(bad).err(),
                Some(DecodeError::Modules),
                "{bad:?}"
            );
            let d = python_atexit(bad);
            let want = if bad.is_empty() {
                DecodeError::Shape
            } else {
                DecodeError::Modules
            };
            assert_eq!(decode(&d), Err(want), "{bad:?}");
            let m = Message {
                args: bad,
                ..Message::new(MessageKind::Atexit)
            };
            assert_eq!(encode(&m, &mut buf), Err(EncodeError::Shape), "{bad:?}");
        }
        let long_name = vec![b'n'; NAME_MAX + 1];
        let mut args = long_name.clone();
        args.extend_from_slice(b"\0\0");
        assert_eq!(decode(&python_atexit(&args)), Err(DecodeError::Modules));
        args.drain(..1);
        assert!(decode(&python_atexit(&args)).is_ok(), "NAME_MAX bytes fit");
        // A report carries nothing in name, path or env.
        let mut d = python_atexit(b"sys\0<built-in>\0");
        d[6] = 1;
        d.insert(HEADER_LEN, b'/');
        assert_eq!(decode(&d), Err(DecodeError::Shape));
    }

    /// Property: the pair parser never panics, and whatever it accepts is exactly the pairs it
    /// yields written back. Exhaustive over every list of up to 7 bytes of an alphabet that
    /// reaches each rule.
    #[test]
    fn module_pairs_total_on_arbitrary_bytes() {
        const ALPHABET: [u8; 6] = [0, b'a', b'/', b'.', b'<', 0xc3];
        let mut accepted = 0;
        for len in 0..=7u32 {
            for code in 0..ALPHABET.len().pow(len) {
                let mut c = code;
                let args: std::vec::Vec<u8> = (0..len)
                    .map(|_| {
                        let b = ALPHABET[c % ALPHABET.len()];
                        c /= ALPHABET.len();
                        b
                    })
                    .collect();
                let Ok(pairs) = AtexitModules::parse(&args) else {
                    continue;
                };
                accepted += 1;
                let mut back = vec![];
                for m in pairs {
                    back.extend_from_slice(m.package.as_bytes());
                    back.push(0);
                    back.extend_from_slice(m.file.as_bytes());
                    back.push(0);
                }
                assert_eq!(back, args);
            }
        }
        assert!(accepted > 100, "{accepted}");
    }

    /// Property: `decode` never panics, and whatever it accepts re-encodes to the same bytes.
    /// Exhaustive over every header with small lengths, then random datagrams from xorshift.
    #[test]
    fn decode_total_on_arbitrary_bytes() {
        fn check(d: &[u8]) {
            if let Ok(m) = decode(d) {
                let mut buf = [0u8; MAX_MESSAGE];
                let n = encode(&m, &mut buf).unwrap();
                // Truncation flags are the sender's claim; the bytes otherwise round-trip.
                assert_eq!(&buf[4..n], &d[4..]);
                assert_eq!(&buf[..2], &d[..2]);
            }
        }
        // Exhaustive: versions 0..=2, kinds 0..=6, flags {0, 1, 16}, reserved 0..=1, every
        // field length 0..=2, with bodies of every length 0..=6.
        let mut d = [0u8; HEADER_LEN + 6];
        for v in 0..=2u8 {
            for k in 0..=6u8 {
                for f in [0u8, 1, 16] {
                    for r in 0..=1u8 {
                        for l in 0..81u32 {
                            let ls = [l % 3, l / 3 % 3, l / 9 % 3, l / 27 % 3];
                            for body in 0..=6usize {
                                d[..4].copy_from_slice(&[v, k, f, r]);
                                for (i, x) in ls.iter().enumerate() {
                                    d[4 + 2 * i..6 + 2 * i]
                                        .copy_from_slice(&(*x as u16).to_le_bytes());
                                }
                                for (i, x) in d[HEADER_LEN..].iter_mut().enumerate() {
                                    *x = b'a' + i as u8;
                                }
                                check(&d[..HEADER_LEN + body]);
                            }
                        }
                    }
                }
            }
        }
        // Random: 200k datagrams of random length; half get a plausible header so that the
        // length and UTF-8 checks are reached, not only the version check.
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut buf = [0u8; MAX_MESSAGE + 64];
        let mut accepted = 0;
        for i in 0..200_000 {
            let len = (next() % 64) as usize + if i % 97 == 0 { MAX_MESSAGE - 40 } else { 0 };
            for x in buf[..len].iter_mut() {
                *x = next() as u8;
            }
            if i % 2 == 0 && len >= HEADER_LEN {
                let mut left = len - HEADER_LEN;
                buf[0] = VERSION;
                buf[1] = (next() % 7) as u8;
                buf[2] &= KNOWN_FLAGS;
                buf[3] = 0;
                for f in 0..4 {
                    let l = if f == 3 {
                        left
                    } else {
                        (next() as usize) % (left + 1)
                    };
                    left -= l;
                    buf[4 + 2 * f..6 + 2 * f].copy_from_slice(&(l.min(65535) as u16).to_le_bytes());
                }
            }
            if decode(&buf[..len]).is_ok() {
                accepted += 1;
            }
            check(&buf[..len]);
        }
        assert!(
            accepted > 100,
            "the generator reached the accepting paths ({accepted})"
        );
    }
}
