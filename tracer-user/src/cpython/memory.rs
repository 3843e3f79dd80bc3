//! Reading another process's memory (`process_vm_readv`), and CPython `str` objects in it.
use std::io::IoSliceMut;

use nix::{
    sys::uio::{process_vm_readv, RemoteIoVec},
    unistd::Pid,
};

use super::{offsets::ObjectLayout, CpythonError};

/// Longest `str` read, in code points (a path longer than `PATH_MAX` is no file's name).
pub const STR_MAX: usize = 4096;

/// Bytes read past a `str`'s header in its first read, so that most file names cost one read.
const STR_FIRST_READ: usize = 512;

/// A process's memory, read with `process_vm_readv` (needs the rights of `ptrace` attach:
/// the same user and no `dumpable` restriction, or `CAP_SYS_PTRACE`).
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    pid: u32,
}

impl Memory {
    /// The memory of process `pid`.
    pub fn new(pid: u32) -> Memory {
        Memory { pid }
    }

    /// The process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn error(&self, addr: u64, len: usize, source: nix::errno::Errno) -> CpythonError {
        CpythonError::Read {
            pid: self.pid,
            addr,
            len,
            source: source.into(),
        }
    }

    /// Reads up to `buf.len()` bytes at `addr`; fewer when the range runs into an unmapped
    /// page (the count read), an error when its first byte cannot be read.
    pub fn read_some(&self, addr: u64, buf: &mut [u8]) -> Result<usize, CpythonError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = buf.len();
        if addr == 0 || addr.checked_add(len as u64).is_none() {
            return Err(self.error(addr, len, nix::errno::Errno::EFAULT));
        }
        let remote = [RemoteIoVec {
            base: addr as usize,
            len,
        }];
        match process_vm_readv(
            Pid::from_raw(self.pid as i32),
            &mut [IoSliceMut::new(buf)],
            &remote,
        ) {
            Ok(0) => Err(self.error(addr, len, nix::errno::Errno::EFAULT)),
            Ok(n) => Ok(n),
            Err(e) => Err(self.error(addr, len, e)),
        }
    }

    /// Reads exactly `buf.len()` bytes at `addr`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), CpythonError> {
        let n = self.read_some(addr, buf)?;
        if n < buf.len() {
            return Err(self.error(addr + n as u64, buf.len() - n, nix::errno::Errno::EFAULT));
        }
        Ok(())
    }

    /// The 8-byte words at `addrs`, in as few `process_vm_readv` calls as the readable ones
    /// allow (one for all when every one is readable): `None` for a word that cannot be read.
    /// The kernel copies whole ranges in order and stops at the first it cannot read, so a
    /// short count names that range; the rest are read again after it.
    pub fn words(&self, addrs: &[u64]) -> Vec<Option<u64>> {
        /// Ranges per call (the kernel's `IOV_MAX` is 1024).
        const PER_CALL: usize = 512;
        let mut out = vec![None; addrs.len()];
        let mut buf = vec![0u8; addrs.len().min(PER_CALL) * 8];
        let mut at = 0;
        while at < addrs.len() {
            let batch = &addrs[at..(at + PER_CALL).min(addrs.len())];
            let remote: Vec<RemoteIoVec> = batch
                .iter()
                .map(|&a| RemoteIoVec {
                    // An address whose word would wrap is sent as 0: unreadable as well.
                    base: if a.checked_add(8).is_some() {
                        a as usize
                    } else {
                        0
                    },
                    len: 8,
                })
                .collect();
            let local = &mut buf[..batch.len() * 8];
            let got = process_vm_readv(
                Pid::from_raw(self.pid as i32),
                &mut [IoSliceMut::new(local)],
                &remote,
            );
            let n = match got {
                Ok(n) => n / 8,
                // The process is gone: nothing more can be read.
                Err(nix::errno::Errno::ESRCH) => return out,
                Err(_) => 0,
            };
            for (i, w) in buf[..n * 8].chunks_exact(8).enumerate() {
                out[at + i] = Some(u64::from_le_bytes(w.try_into().expect("8 bytes")));
            }
            // The range at `n`, if any, was the unreadable one.
            at += if n < batch.len() { n + 1 } else { n };
        }
        out
    }

    /// The 8-byte word at `addr`.
    pub fn u64(&self, addr: u64) -> Result<u64, CpythonError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The `str` object at `addr` as the file system would name it (`os.fsencode`: UTF-8,
    /// with the lone surrogates U+DC80–U+DCFF that `surrogateescape` decoded from undecodable
    /// bytes turned back into those bytes). `str_type` is `PyUnicode_Type`'s address (0: not
    /// checked). One read for a string of up to 512 bytes of characters, two otherwise.
    pub fn str_bytes(
        &self,
        addr: u64,
        objects: &ObjectLayout,
        str_type: u64,
    ) -> Result<Vec<u8>, CpythonError> {
        let header = objects.str_compact_size as usize + 8;
        let mut buf = vec![0u8; header + STR_FIRST_READ];
        let got = self.read_some(addr, &mut buf)?;
        let invalid = |what: String| CpythonError::Invalid {
            pid: self.pid,
            addr,
            what,
        };
        if got < objects.str_ascii_size as usize {
            return Err(self.error(
                addr,
                objects.str_ascii_size as usize,
                nix::errno::Errno::EFAULT,
            ));
        }
        let word =
            |at: u32| u64::from_le_bytes(buf[at as usize..at as usize + 8].try_into().unwrap());
        let ob_type = word(objects.ob_type);
        if str_type != 0 && ob_type != str_type {
            return Err(invalid(format!("not a str (type {ob_type:#x})")));
        }
        let length = word(objects.str_length) as i64;
        if !(0..=STR_MAX as i64).contains(&length) {
            return Err(invalid(format!("str length {length} out of 0..={STR_MAX}")));
        }
        let state = u32::from_le_bytes(
            buf[objects.str_state as usize..objects.str_state as usize + 4]
                .try_into()
                .unwrap(),
        );
        let shape = StrShape::of(state).map_err(|e| invalid(e.to_owned()))?;
        let size = length as usize * shape.kind as usize;
        let data = match (shape.compact, shape.ascii) {
            (true, true) => addr + objects.str_ascii_size as u64,
            (true, false) => addr + objects.str_compact_size as u64,
            // A legacy string (a `str` subclass's instance): `PyUnicodeObject.data.any`.
            (false, _) => {
                if got < header {
                    return Err(self.error(addr, header, nix::errno::Errno::EFAULT));
                }
                word(objects.str_compact_size)
            }
        };
        let start = data.wrapping_sub(addr) as usize;
        let chars: Vec<u8> = if data > addr && start + size <= got {
            buf[start..start + size].to_vec()
        } else {
            let mut chars = vec![0u8; size];
            self.read(data, &mut chars)?;
            chars
        };
        decode(&chars, shape).map_err(|e| invalid(e.to_owned()))
    }
}

/// What a `str`'s state bits say (Include/cpython/unicodeobject.h, 3.8–3.13: `interned:2`
/// bits 0–1, `kind:3` bits 2–4, `compact:1` bit 5, `ascii:1` bit 6; up to 3.11 `ready:1` bit
/// 7, which a compact string always has set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StrShape {
    /// Bytes per code point: 1 (Latin-1), 2 (UCS-2), 4 (UCS-4).
    kind: u8,
    compact: bool,
    ascii: bool,
}

impl StrShape {
    fn of(state: u32) -> Result<StrShape, &'static str> {
        let kind = ((state >> 2) & 7) as u8;
        let compact = state & (1 << 5) != 0;
        let ascii = state & (1 << 6) != 0;
        match kind {
            // `PyUnicode_WCHAR_KIND` (up to 3.11): a legacy string not made ready.
            0 => Err("str not ready (no canonical form)"),
            1 | 2 | 4 if !ascii || kind == 1 => Ok(StrShape {
                kind,
                compact,
                ascii,
            }),
            _ => Err("str kind out of 1, 2, 4"),
        }
    }
}

/// The characters in `os.fsencode` form (see [`Memory::str_bytes`]).
fn decode(chars: &[u8], shape: StrShape) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(chars.len());
    let mut push = |c: u32| -> Result<(), &'static str> {
        match char::from_u32(c) {
            Some(c) => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
            // `surrogateescape`: an undecodable byte.
            None if (0xDC80..=0xDCFF).contains(&c) => out.push((c - 0xDC00) as u8),
            // Any other lone surrogate: U+FFFD, as Rust strings cannot hold it.
            None if (0xD800..=0xDFFF).contains(&c) => out.extend_from_slice("\u{FFFD}".as_bytes()),
            None => return Err("str code point out of Unicode"),
        }
        Ok(())
    };
    match shape.kind {
        1 if shape.ascii => {
            if !chars.is_ascii() {
                return Err("ASCII str with a non-ASCII byte");
            }
            return Ok(chars.to_vec());
        }
        1 => chars.iter().try_for_each(|&c| push(c as u32))?,
        2 => chars
            .chunks_exact(2)
            .try_for_each(|c| push(u16::from_le_bytes([c[0], c[1]]) as u32))?,
        _ => chars
            .chunks_exact(4)
            .try_for_each(|c| push(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_read_in_batches_past_unreadable_ones() {
        // This process's own memory: 1,300 words (three calls' worth), some unreadable.
        let values: Vec<u64> = (0..1300u64).map(|i| i * 0x1_0001 + 7).collect();
        let mut addrs: Vec<u64> = values.iter().map(|v| v as *const u64 as u64).collect();
        let mut want: Vec<Option<u64>> = values.iter().map(|&v| Some(v)).collect();
        // Whole batches read (1..513, 601..1113) and batches cut short.
        for i in [0, 600, 1200, 1299] {
            addrs[i] = if i % 600 == 0 { 8 } else { u64::MAX - 3 };
            want[i] = None;
        }
        let mem = Memory::new(std::process::id());
        assert_eq!(mem.words(&addrs), want);
        // A process that is gone: nothing, without an error.
        assert_eq!(Memory::new(u32::MAX >> 1).words(&addrs[..4]), vec![None; 4]);
        assert!(mem.words(&[]).is_empty());
    }

    #[test]
    fn cpython_str_state_bits() {
        // interned 1, kind 1, compact, ascii, ready: a typical interned ASCII file name.
        let s = 1 | (1 << 2) | (1 << 5) | (1 << 6) | (1 << 7);
        assert_eq!(
            StrShape::of(s),
            Ok(StrShape {
                kind: 1,
                compact: true,
                ascii: true
            })
        );
        assert_eq!(
            StrShape::of((2 << 2) | (1 << 5)),
            Ok(StrShape {
                kind: 2,
                compact: true,
                ascii: false
            })
        );
        assert!(StrShape::of(1 << 5).is_err(), "wchar kind");
        assert!(StrShape::of((3 << 2) | (1 << 5)).is_err(), "kind 3");
        assert!(
            StrShape::of((2 << 2) | (1 << 6)).is_err(),
            "ASCII of kind 2"
        );
    }

    #[test]
    fn cpython_str_decoding_is_fsencode() {
        let latin1 = StrShape {
            kind: 1,
            compact: true,
            ascii: false,
        };
        assert_eq!(
            decode(b"/a/b\xe9.py", latin1).unwrap(),
            "/a/bé.py".as_bytes()
        );
        let ucs2 = StrShape { kind: 2, ..latin1 };
        let units: Vec<u8> = "/ж"
            .encode_utf16()
            .chain([0xDCFF, 0xD800])
            .flat_map(|u| u.to_le_bytes())
            .collect();
        assert_eq!(decode(&units, ucs2).unwrap(), b"/\xd0\xb6\xff\xef\xbf\xbd");
        let ucs4 = StrShape { kind: 4, ..latin1 };
        let points: Vec<u8> = "a😀"
            .chars()
            .flat_map(|c| (c as u32).to_le_bytes())
            .collect();
        assert_eq!(decode(&points, ucs4).unwrap(), "a😀".as_bytes());
        assert!(decode(&0x110000u32.to_le_bytes(), ucs4).is_err());
        let ascii = StrShape {
            ascii: true,
            ..latin1
        };
        assert!(decode(b"\xe9", ascii).is_err());
    }

    #[test]
    fn cpython_memory_reads_itself() {
        let value: u64 = 0x1122_3344_5566_7788;
        let m = Memory::new(std::process::id());
        assert_eq!(m.u64(&value as *const u64 as u64).unwrap(), value);
        assert!(matches!(m.u64(0), Err(CpythonError::Read { .. })));
        assert!(matches!(m.u64(8), Err(CpythonError::Read { .. })));
    }
}
