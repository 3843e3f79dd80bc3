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
//! | 2 | 1 | `flags`: [`FLAG_NAME_TRUNCATED`], [`FLAG_PATH_TRUNCATED`]; other bits must be 0 |
//! | 3 | 1 | reserved, must be 0 |
//! | 4 | 2 | `name_len` (`u16`) |
//! | 6 | 2 | `path_len` (`u16`) |
//! | 8 | `name_len` | module name, UTF-8 (cut at a character boundary when truncated) |
//! | 8 + `name_len` | `path_len` | file path, raw bytes (a Linux path need not be UTF-8) |
//!
//! The datagram is exactly `8 + name_len + path_len` bytes and at most [`MAX_MESSAGE`].
//! Which fields a kind carries is fixed: [`MessageKind::Import`] a name and no path,
//! [`MessageKind::ExtensionImport`] both, [`MessageKind::Exec`] a path and no name.
//! A truncated path names no real file: the daemon should count it, not resolve it.
//!
//! # What the format does not carry
//!
//! No pid, uid, gid, timestamp or job id. Whatever a message claimed about its sender would be
//! written by the (untrusted) sender. The daemon takes the sender's identity from the kernel:
//! with `SO_PASSCRED` set on the listening socket each datagram arrives with
//! `SCM_CREDENTIALS`, the pid/uid/gid of the process that sent *that* message. (`SO_PEERCRED`
//! alone is not enough: it is fixed at `connect`, and a child of `fork()` keeps writing on its
//! parent's connection.) The receive time is the event time: the library never buffers.

/// Version byte of the current format. A daemon rejects other versions (and counts them).
pub const VERSION: u8 = 1;
/// Size of the fixed header before the name and path.
pub const HEADER_LEN: usize = 8;
/// Largest message, header included. The library never sends more; the daemon can receive into
/// a buffer of this size and reject anything longer (`MSG_TRUNC`).
pub const MAX_MESSAGE: usize = 4096;
/// Longest module name kept; longer names are cut (real dotted names are far shorter).
pub const NAME_MAX: usize = 1024;
/// `flags` bit: the name was cut to fit.
pub const FLAG_NAME_TRUNCATED: u8 = 1;
/// `flags` bit: the path was cut to fit.
pub const FLAG_PATH_TRUNCATED: u8 = 2;
const KNOWN_FLAGS: u8 = FLAG_NAME_TRUNCATED | FLAG_PATH_TRUNCATED;

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
}

impl MessageKind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Import),
            2 => Some(Self::ExtensionImport),
            3 => Some(Self::Exec),
            _ => None,
        }
    }

    fn has_name(self) -> bool {
        matches!(self, Self::Import | Self::ExtensionImport)
    }

    fn has_path(self) -> bool {
        matches!(self, Self::ExtensionImport | Self::Exec)
    }
}

/// A decoded message; the slices borrow from the received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// What was observed.
    pub kind: MessageKind,
    /// Module name (empty for [`MessageKind::Exec`]).
    pub name: &'a str,
    /// File path bytes (empty for [`MessageKind::Import`]).
    pub path: &'a [u8],
    /// The name was cut to [`NAME_MAX`] bytes.
    pub name_truncated: bool,
    /// The path was cut to fit [`MAX_MESSAGE`].
    pub path_truncated: bool,
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
    /// `8 + name_len + path_len` differs from the datagram's length.
    Length,
    /// A field the kind requires is empty, or one it forbids is present.
    Shape,
    /// The name is not UTF-8.
    Utf8,
}

/// Why [`encode`] wrote nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The buffer is shorter than the message (a buffer of [`MAX_MESSAGE`] bytes always fits).
    Buffer,
    /// A field the kind requires is empty.
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

/// Encode one message into `buf` and return its length. The name is cut to [`NAME_MAX`] and
/// the path to what fits in [`MAX_MESSAGE`], with the matching flag set; fields the kind does
/// not carry are ignored. Never panics and never allocates.
pub fn encode(
    kind: MessageKind,
    name: &str,
    path: &[u8],
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let name = if kind.has_name() { name } else { "" };
    let path = if kind.has_path() { path } else { &[] };
    if (kind.has_name() && name.is_empty()) || (kind.has_path() && path.is_empty()) {
        return Err(EncodeError::Shape);
    }
    let mut flags = 0;
    let kept_name = cut_str(name, NAME_MAX);
    if kept_name.len() < name.len() {
        flags |= FLAG_NAME_TRUNCATED;
    }
    let room = MAX_MESSAGE - HEADER_LEN - kept_name.len();
    let kept_path = path.get(..room).unwrap_or(path);
    if kept_path.len() < path.len() {
        flags |= FLAG_PATH_TRUNCATED;
    }
    let total = HEADER_LEN + kept_name.len() + kept_path.len();
    let Some(out) = buf.get_mut(..total) else {
        return Err(EncodeError::Buffer);
    };
    // Both lengths are at most MAX_MESSAGE (4096), so they fit in a u16.
    let name_len = kept_name.len() as u16;
    let path_len = kept_path.len() as u16;
    let (header, rest) = out.split_at_mut(HEADER_LEN);
    header[0] = VERSION;
    header[1] = kind as u8;
    header[2] = flags;
    header[3] = 0;
    header[4..6].copy_from_slice(&name_len.to_le_bytes());
    header[6..8].copy_from_slice(&path_len.to_le_bytes());
    let (name_out, path_out) = rest.split_at_mut(kept_name.len());
    name_out.copy_from_slice(kept_name.as_bytes());
    path_out.copy_from_slice(kept_path);
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
    let name_len = usize::from(u16::from_le_bytes([header[4], header[5]]));
    let path_len = usize::from(u16::from_le_bytes([header[6], header[7]]));
    if name_len + path_len != body.len() {
        return Err(DecodeError::Length);
    }
    if kind.has_name() != (name_len > 0) || kind.has_path() != (path_len > 0) {
        return Err(DecodeError::Shape);
    }
    let (name, path) = body.split_at(name_len);
    let name = core::str::from_utf8(name).map_err(|_| DecodeError::Utf8)?;
    Ok(Message {
        kind,
        name,
        path,
        name_truncated: flags & FLAG_NAME_TRUNCATED != 0,
        path_truncated: flags & FLAG_PATH_TRUNCATED != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(kind: MessageKind, name: &str, path: &[u8]) -> ([u8; MAX_MESSAGE], usize) {
        let mut buf = [0u8; MAX_MESSAGE];
        let n = encode(kind, name, path, &mut buf).unwrap();
        (buf, n)
    }

    #[test]
    fn kinds_roundtrip() {
        let (b, n) = roundtrip(MessageKind::Import, "json", b"");
        assert_eq!(&b[..n], b"\x01\x01\x00\x00\x04\x00\x00\x00json");
        let m = decode(&b[..n]).unwrap();
        assert_eq!(
            (m.kind, m.name, m.path),
            (MessageKind::Import, "json", &b""[..])
        );

        let so = b"/usr/lib/python3.11/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so";
        let (b, n) = roundtrip(MessageKind::ExtensionImport, "_json", so);
        let m = decode(&b[..n]).unwrap();
        assert_eq!(
            (m.kind, m.name, m.path),
            (MessageKind::ExtensionImport, "_json", &so[..])
        );
        assert!(!m.name_truncated && !m.path_truncated);

        // Fields a kind does not carry are dropped, not sent.
        let (b, n) = roundtrip(MessageKind::Exec, "ignored", b"/x/json/__init__.py");
        let m = decode(&b[..n]).unwrap();
        assert_eq!(
            (m.kind, m.name, m.path),
            (MessageKind::Exec, "", &b"/x/json/__init__.py"[..])
        );
    }

    #[test]
    fn required_fields() {
        let mut buf = [0u8; 64];
        assert_eq!(
            encode(MessageKind::Import, "", b"", &mut buf),
            Err(EncodeError::Shape)
        );
        assert_eq!(
            encode(MessageKind::Exec, "x", b"", &mut buf),
            Err(EncodeError::Shape)
        );
        assert_eq!(
            encode(MessageKind::ExtensionImport, "x", b"", &mut buf),
            Err(EncodeError::Shape)
        );
        assert_eq!(
            encode(MessageKind::Exec, "", &[b'a'; 100], &mut buf),
            Err(EncodeError::Buffer)
        );
        // A header with a name for Exec, or no name for Import, is rejected.
        assert_eq!(
            decode(b"\x01\x03\x00\x00\x01\x00\x01\x00xy"),
            Err(DecodeError::Shape)
        );
        assert_eq!(
            decode(b"\x01\x01\x00\x00\x00\x00\x00\x00"),
            Err(DecodeError::Shape)
        );
    }

    #[test]
    fn truncation_is_bounded_and_flagged() {
        let long_path = [b'p'; 10_000];
        let (b, n) = roundtrip(MessageKind::Exec, "", &long_path);
        assert_eq!(n, MAX_MESSAGE);
        let m = decode(&b[..n]).unwrap();
        assert!(m.path_truncated && !m.name_truncated);
        assert_eq!(m.path.len(), MAX_MESSAGE - HEADER_LEN);

        // A name of multi-byte characters is cut at a character boundary.
        let mut name_buf = [0u8; 3 * 600];
        for c in name_buf.chunks_mut(3) {
            c.copy_from_slice("€".as_bytes());
        }
        let name = core::str::from_utf8(&name_buf).unwrap();
        let (b, n) = roundtrip(MessageKind::ExtensionImport, name, &long_path);
        assert_eq!(n, MAX_MESSAGE);
        let m = decode(&b[..n]).unwrap();
        assert!(m.name_truncated && m.path_truncated);
        assert_eq!(m.name.len(), 1023);
        assert!(m.name.chars().all(|c| c == '€'));
    }

    #[test]
    fn rejects_malformed_headers() {
        let (b, n) = roundtrip(MessageKind::Import, "os", b"");
        let good = &b[..n];
        assert_eq!(decode(&good[..7]), Err(DecodeError::Short));
        assert_eq!(decode(&good[..n - 1]), Err(DecodeError::Length));
        let mut bad = [0u8; 10];
        bad.copy_from_slice(good);
        bad[0] = 2;
        assert_eq!(decode(&bad), Err(DecodeError::Version(2)));
        bad[0] = 1;
        bad[1] = 9;
        assert_eq!(decode(&bad), Err(DecodeError::Kind(9)));
        bad[1] = 1;
        bad[2] = 4;
        assert_eq!(decode(&bad), Err(DecodeError::Flags));
        bad[2] = 0;
        bad[3] = 1;
        assert_eq!(decode(&bad), Err(DecodeError::Flags));
        bad[3] = 0;
        bad[8] = 0xff;
        assert_eq!(decode(&bad), Err(DecodeError::Utf8));
        assert_eq!(decode(&[0u8; MAX_MESSAGE + 1]), Err(DecodeError::Long));
    }

    /// Property: `decode` never panics, and whatever it accepts re-encodes to the same bytes.
    /// Exhaustive over every header with small lengths, then random datagrams from xorshift.
    #[test]
    fn decode_total_on_arbitrary_bytes() {
        fn check(d: &[u8]) {
            if let Ok(m) = decode(d) {
                if m.name.len() > NAME_MAX {
                    return; // a hostile sender's name: valid, but encode would cut it
                }
                let mut buf = [0u8; MAX_MESSAGE];
                let n = encode(m.kind, m.name, m.path, &mut buf).unwrap();
                // Truncation flags are the sender's claim; the bytes otherwise round-trip.
                assert_eq!(&buf[4..n], &d[4..]);
                assert_eq!(&buf[..2], &d[..2]);
            }
        }
        // Exhaustive: all versions 0..=2, kinds 0..=4, flags 0..=4, reserved 0..=1,
        // name_len and path_len 0..=3 with bodies of every length 0..=6.
        let mut d = [0u8; HEADER_LEN + 6];
        for v in 0..=2u8 {
            for k in 0..=4u8 {
                for f in 0..=4u8 {
                    for r in 0..=1u8 {
                        for nl in 0..=3u8 {
                            for pl in 0..=3u8 {
                                for body in 0..=6usize {
                                    d[..HEADER_LEN].copy_from_slice(&[v, k, f, r, nl, 0, pl, 0]);
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
                let body = len - HEADER_LEN;
                let nl = (next() as usize) % (body + 1);
                buf[0] = VERSION;
                buf[1] = (next() % 4) as u8;
                buf[2] &= KNOWN_FLAGS;
                buf[3] = 0;
                buf[4..6].copy_from_slice(&(nl as u16).to_le_bytes());
                buf[6..8].copy_from_slice(&((body - nl) as u16).to_le_bytes());
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
