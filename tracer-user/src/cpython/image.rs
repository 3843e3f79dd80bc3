//! The ELF image that holds a process's interpreter: found in `/proc/<pid>/maps`, opened as
//! the very file mapped, and read for its dynamic symbols, segments and `DT_SONAME`.
use std::{
    collections::HashMap,
    fs::File,
    io::{Read, Seek, SeekFrom},
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use object::{
    elf,
    read::elf::{Dyn as _, FileHeader, ProgramHeader, SectionHeader, Sym},
    Endianness, ReadCache, ReadRef,
};

use super::CpythonError;

/// Largest image read (as `elf.rs`: interpreters and `libpython` are tens of MiB).
pub const MAX_FILE: u64 = 256 << 20;
/// Most bytes read from one image (its headers, dynamic symbols and strings: well under 1 MiB
/// for `libpython`), whatever the file claims.
const READ_BUDGET: u64 = 32 << 20;
/// Largest dynamic symbol, string or dynamic section accepted.
const MAX_SECTION: u64 = 16 << 20;

/// The page size (x86-64).
const PAGE: u64 = 4096;

/// The dynamic symbols looked for.
pub const SYMBOLS: &[&str] = &[
    // The runtime state; CPython 3.7+.
    "_PyRuntime",
    // `PY_VERSION_HEX`; 3.11+.
    "Py_Version",
    // Types, to check the objects read.
    "PyCode_Type",
    "PyUnicode_Type",
    // Any CPython (2.x included).
    "Py_Initialize",
    // The versions without `Py_Version`, by what they added: 3.8 `PyCode_NewWithPosOnlyArgs`
    // (removed in 3.12), 3.9 `PyFrame_GetCode`, 3.10 `PyModule_AddObjectRef`.
    "PyCode_NewWithPosOnlyArgs",
    "PyFrame_GetCode",
    "PyModule_AddObjectRef",
    // Free-threaded builds (`Py_GIL_DISABLED`, 3.13+): Include/object.h declares these only
    // under `Py_GIL_DISABLED`; `Py_DECREF` calls them.
    "_Py_DecRefShared",
    "_Py_MergeZeroLocalRefcount",
    // Debug builds: `Py_REF_DEBUG` (implied by `Py_DEBUG`) exports `_Py_NegativeRefcount`
    // (3.8–3.13), `_Py_RefTotal` (up to 3.11) and `_Py_GetRefTotal`; `Py_TRACE_REFS` (which
    // adds two pointers to every object's header) exports `_Py_ForgetReference` and
    // `_Py_PrintReferences`.
    "_Py_NegativeRefcount",
    "_Py_RefTotal",
    "_Py_GetRefTotal",
    "_Py_ForgetReference",
    "_Py_PrintReferences",
];

/// One line of `/proc/<pid>/maps` that maps a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Start address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// Offset in the file of `start`.
    pub offset: u64,
    /// The file's device (`st_dev` encoding).
    pub dev: u64,
    /// The file's inode.
    pub ino: u64,
    /// Its path in the process's mount namespace, as `maps` shows it.
    pub path: PathBuf,
}

impl Mapping {
    /// A file mapping the kernel answered a query with (`None` for anonymous memory).
    pub fn of_vma(v: crate::procmaps::Vma) -> Option<Mapping> {
        Some(Mapping {
            start: v.start,
            end: v.end,
            offset: v.offset,
            dev: v.dev,
            ino: v.ino,
            path: v.file?,
        })
    }
}

/// The file-backed lines of a `maps` text.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let _perms = it.next()?;
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let (major, minor) = it.next()?.split_once(':')?;
    let ino: u64 = it.next()?.parse().ok()?;
    let path = it.next()?.trim_start();
    if ino == 0 || !path.starts_with('/') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let dev = libc::makedev(
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
    );
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset,
        dev,
        ino,
        // The kernel writes a newline in a path as `\012`.
        path: PathBuf::from(path.replace("\\012", "\n")),
    })
}

/// A `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// `p_offset`.
    pub offset: u64,
    /// `p_filesz`.
    pub filesz: u64,
}

/// What an image says of itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageFacts {
    /// `e_machine` is x86-64.
    pub x86_64: bool,
    /// The [`SYMBOLS`] it defines, by value.
    pub symbols: HashMap<&'static str, u64>,
    /// Its `PT_LOAD` segments.
    pub segments: Vec<Segment>,
    /// Its `DT_SONAME`.
    pub soname: Option<String>,
    /// The value of `Py_Version` in the file, when it defines it.
    pub py_version: Option<u32>,
}

impl ImageFacts {
    /// The segment whose memory holds `vaddr`.
    pub fn segment_of(&self, vaddr: u64) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.memsz)
    }

    /// Where `vaddr` of this image would be in a process that maps it as `m` (one of its
    /// segments' mappings), the image being loaded at one bias, as loaders load it: where to
    /// ask for the mapping that [`Self::bias`] then confirms.
    pub fn address_in(&self, vaddr: u64, m: &Mapping) -> Option<u64> {
        let seg = self
            .segments
            .iter()
            .find(|s| s.offset & !(PAGE - 1) == m.offset)?;
        let bias = m
            .start
            .wrapping_add(seg.offset - m.offset)
            .wrapping_sub(seg.vaddr);
        Some(bias.wrapping_add(vaddr))
    }

    /// The load bias at which `code` (the mapping of one of this image's segments) places it,
    /// confirmed by the mapping of the segment holding `vaddr` among `mappings` ([`Self::bias`]);
    /// `None` while that segment is not mapped at that bias.
    ///
    /// Why both: `ld.so` maps a library's segments one at a time over a first read-only
    /// mapping of the whole file, so between two of them the data segment's address is still
    /// covered by the file at another offset, and the bias [`Self::bias`] reads from that is a
    /// page or more off. A process inspected then (as soon as it opened `libpython`) was
    /// sampled with a wrong `_PyRuntime`: every walk of its threads failed. Unconfirmed, the
    /// inspection is tried again later. An image whose code mapping is no segment's start
    /// (remapped text) has only the data segment's word.
    pub fn confirmed_bias(&self, vaddr: u64, code: &Mapping, mappings: &[&Mapping]) -> Option<u64> {
        let found = self.bias(vaddr, mappings)?;
        match self.address_in(0, code) {
            Some(placed) if placed != found => None,
            _ => Some(found),
        }
    }

    /// The load bias of this image in a process, from the mapping of the segment holding
    /// `vaddr`: `start + (p_offset - offset) - p_vaddr` (0 for a non-PIE executable). `None`
    /// when no mapping covers the segment's file offset.
    ///
    /// The segment's mapping is the one that starts at its file offset rounded down to a page
    /// (the loader maps each segment from there): another segment's mapping may cover that
    /// offset too, as segments share the file page where one ends and the next begins (pyenv's
    /// `libpython3.9.so`: the read-only segment's last page is the writable one's first).
    pub fn bias(&self, vaddr: u64, mappings: &[&Mapping]) -> Option<u64> {
        let seg = self.segment_of(vaddr)?;
        let page = seg.offset & !(PAGE - 1);
        let m = mappings
            .iter()
            .filter(|m| m.offset <= seg.offset && seg.offset - m.offset < m.end - m.start)
            .max_by_key(|m| (m.offset == page, m.offset))?;
        Some(
            m.start
                .wrapping_add(seg.offset - m.offset)
                .wrapping_sub(seg.vaddr),
        )
    }
}

/// A file's identity and version, for the cache.
pub type FileKey = (u64, u64, u64, i64, i64, i64, i64);

fn key(m: &std::fs::Metadata) -> FileKey {
    (
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// Opens the file `m` maps in process `pid` as the very file mapped: through
/// `/proc/<pid>/map_files/` (needs `CAP_SYS_ADMIN`), else for the executable (`is_exe`)
/// through `/proc/<pid>/exe` (`CAP_SYS_PTRACE` is enough; still the file run when it has been
/// deleted or replaced since), else through `/proc/<pid>/root` and the path in `maps`.
/// Whichever opened it, the file must be the mapped device and inode (a path replaced since,
/// or a symbolic link planted on it, is refused), a regular file (never blocks on a special
/// file) of at most [`MAX_FILE`] bytes.
pub fn open_mapped(pid: u32, m: &Mapping, is_exe: bool) -> Result<(File, FileKey), CpythonError> {
    let file = open_regular(&by_map(pid, m))
        .or_else(|e| match is_exe {
            true => open_regular(Path::new(&format!("/proc/{pid}/exe"))),
            false => Err(e),
        })
        .or_else(|_| open_regular(&by_root(pid, m)))?;
    check_mapped(file, m)
}

/// `/proc/<pid>/map_files/<start>-<end>`: the very file `m` maps (`CAP_SYS_ADMIN` only).
fn by_map(pid: u32, m: &Mapping) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
}

/// `/proc/<pid>/root` joined with the path `m` has in `maps`.
fn by_root(pid: u32, m: &Mapping) -> PathBuf {
    let relative = m.path.as_os_str().as_bytes();
    Path::new(&format!("/proc/{pid}/root")).join(std::ffi::OsStr::from_bytes(
        relative.strip_prefix(b"/").unwrap_or(relative),
    ))
}

/// `file` if it is the regular file `m` maps (device and inode), of at most [`MAX_FILE`].
fn check_mapped(file: File, m: &Mapping) -> Result<(File, FileKey), CpythonError> {
    let meta = file.metadata().map_err(|source| CpythonError::Open {
        path: m.path.clone(),
        source,
    })?;
    let bad = |reason: String| CpythonError::BadImage {
        path: m.path.clone(),
        reason,
    };
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if (meta.dev(), meta.ino()) != (m.dev, m.ino) {
        return Err(bad(format!(
            "not the file mapped (device {:#x} inode {}, mapped {:#x} {})",
            meta.dev(),
            meta.ino(),
            m.dev,
            m.ino
        )));
    }
    if meta.len() > MAX_FILE {
        return Err(bad(format!("{} bytes, over {MAX_FILE}", meta.len())));
    }
    Ok((file, key(&meta)))
}

fn open_regular(path: &Path) -> Result<File, CpythonError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| CpythonError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// A file read through a budget: reads past it fail.
struct Budgeted {
    file: File,
    left: u64,
}

impl Read for Budgeted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("read budget spent"));
        }
        let n = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let got = self.file.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

impl Seek for Budgeted {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

/// Reads what an image says of itself (only its headers, dynamic symbols and strings, and
/// the 4 bytes of `Py_Version`: never the whole file).
pub fn read_facts(file: File, path: &Path) -> Result<ImageFacts, CpythonError> {
    let cache = ReadCache::new(Budgeted {
        file,
        left: READ_BUDGET,
    });
    let elf_err = |source: object::Error| CpythonError::Elf {
        path: path.to_path_buf(),
        source,
    };
    let data = &cache;
    let header = elf::FileHeader64::<Endianness>::parse(data).map_err(elf_err)?;
    let endian = header.endian().map_err(elf_err)?;
    let sections = header.sections(endian, data).map_err(elf_err)?;
    for s in sections.iter() {
        if matches!(s.sh_type(endian), elf::SHT_DYNSYM | elf::SHT_DYNAMIC) {
            let linked = sections
                .section(object::SectionIndex(s.sh_link(endian) as usize))
                .map(|l| l.sh_size(endian))
                .unwrap_or(0);
            if s.sh_size(endian) > MAX_SECTION || linked > MAX_SECTION {
                return Err(CpythonError::BadImage {
                    path: path.to_path_buf(),
                    reason: "dynamic section over 16 MiB".into(),
                });
            }
        }
    }
    let mut facts = ImageFacts {
        x86_64: header.e_machine(endian) == elf::EM_X86_64,
        ..ImageFacts::default()
    };
    for p in header.program_headers(endian, data).map_err(elf_err)? {
        if p.p_type(endian) == elf::PT_LOAD {
            facts.segments.push(Segment {
                vaddr: p.p_vaddr(endian),
                memsz: p.p_memsz(endian),
                offset: p.p_offset(endian),
                filesz: p.p_filesz(endian),
            });
        }
    }
    let symbols = sections
        .symbols(endian, data, elf::SHT_DYNSYM)
        .map_err(elf_err)?;
    for sym in symbols.iter() {
        if sym.is_undefined(endian) {
            continue;
        }
        let Ok(name) = sym.name(endian, symbols.strings()) else {
            continue;
        };
        if let Some(&n) = SYMBOLS.iter().find(|n| n.as_bytes() == name) {
            facts.symbols.insert(n, sym.st_value(endian));
        }
    }
    let dynamic = sections.dynamic_table(endian, data).map_err(elf_err)?;
    for d in dynamic.dynamics() {
        if d.d_tag(endian) == elf::DT_SONAME {
            let name = dynamic
                .strings()
                .get(d.d_val(endian) as u32)
                .map_err(|()| CpythonError::BadImage {
                    path: path.to_path_buf(),
                    reason: "DT_SONAME out of its string table".into(),
                })?;
            facts.soname = Some(String::from_utf8_lossy(name).into_owned());
            break;
        }
    }
    if let Some(&v) = facts.symbols.get("Py_Version") {
        let seg = facts
            .segment_of(v)
            .filter(|s| v - s.vaddr + 4 <= s.filesz)
            .copied();
        if let Some(seg) = seg {
            let b = data
                .read_bytes_at(seg.offset + (v - seg.vaddr), 4)
                .map_err(|()| CpythonError::BadImage {
                    path: path.to_path_buf(),
                    reason: "Py_Version unreadable".into(),
                })?;
            facts.py_version = Some(u32::from_le_bytes(b.try_into().expect("4 bytes")));
        }
    }
    Ok(facts)
}

/// [`ImageFacts`] by file identity (device, inode, size, times), so that the many processes
/// of one interpreter cost one read of its image.
#[derive(Default)]
pub struct FactsCache {
    facts: HashMap<FileKey, Arc<ImageFacts>>,
    /// `map_files` was refused (no `CAP_SYS_ADMIN`: the daemon once it dropped privileges),
    /// so it is not asked again.
    no_map_files: bool,
}

/// Images remembered at most (the cache starts over past it).
const MAX_CACHED: usize = 256;

impl FactsCache {
    /// The facts of the file `m` maps in `pid` (`is_exe`: its executable), read unless known.
    pub fn get(
        &mut self,
        pid: u32,
        m: &Mapping,
        is_exe: bool,
    ) -> Result<Arc<ImageFacts>, CpythonError> {
        if let Some(f) = self.known(pid, m, is_exe) {
            return Ok(f);
        }
        let (file, key) = open_mapped(pid, m, is_exe)?;
        if let Some(f) = self.facts.get(&key) {
            return Ok(f.clone());
        }
        let facts = Arc::new(read_facts(file, &m.path)?);
        if self.facts.len() >= MAX_CACHED {
            self.facts.clear();
        }
        self.facts.insert(key, facts.clone());
        Ok(facts)
    }

    /// An image already read, known by one `stat` of the very file mapped (along the paths
    /// [`open_mapped`] tries) without opening it: the open, its `fstat` and `close` were most
    /// of the sampler's cost of finding a process's interpreter. A file found this way is the
    /// mapped device and inode with the times and size it had when it was read and checked.
    fn known(&mut self, pid: u32, m: &Mapping, is_exe: bool) -> Option<Arc<ImageFacts>> {
        if self.facts.is_empty() {
            return None;
        }
        let mapped = (!self.no_map_files).then(|| std::fs::metadata(by_map(pid, m)));
        let meta = match mapped {
            Some(Ok(meta)) => meta,
            other => {
                if let Some(Err(e)) = other {
                    self.no_map_files = e.kind() == std::io::ErrorKind::PermissionDenied;
                }
                match is_exe {
                    true => std::fs::metadata(format!("/proc/{pid}/exe")),
                    false => std::fs::metadata(by_root(pid, m)),
                }
                .ok()?
            }
        };
        if !meta.is_file() || (meta.dev(), meta.ino()) != (m.dev, m.ino) {
            return None;
        }
        self.facts.get(&key(&meta)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpython_maps_lines() {
        let text = "\
00400000-00420000 r--p 00000000 fd:01 1311 /usr/bin/python3.11
7f00a000-7f00b000 rw-p 00000000 00:00 0 
7f00b000-7f00c000 r-xp 0001f000 08:12 99 /tmp/a b\\012c (deleted)
7ffd0000-7ffd1000 rw-p 00000000 00:00 0                          [stack]
";
        let m = parse_maps(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].start, 0x400000);
        assert_eq!(m[0].end, 0x420000);
        assert_eq!(m[0].dev, libc::makedev(0xfd, 1));
        assert_eq!(m[0].ino, 1311);
        assert_eq!(m[0].path, Path::new("/usr/bin/python3.11"));
        assert_eq!(m[1].offset, 0x1f000);
        assert_eq!(m[1].path, Path::new("/tmp/a b\nc (deleted)"));
    }

    #[test]
    fn cpython_load_bias() {
        let facts = ImageFacts {
            segments: vec![
                Segment {
                    vaddr: 0,
                    memsz: 0x1000,
                    offset: 0,
                    filesz: 0x1000,
                },
                Segment {
                    vaddr: 0x3000,
                    memsz: 0x5000,
                    offset: 0x2000,
                    filesz: 0x1000,
                },
            ],
            ..ImageFacts::default()
        };
        let m = |start, end, offset| Mapping {
            start,
            end,
            offset,
            dev: 1,
            ino: 2,
            path: "/x".into(),
        };
        let (a, b) = (m(0x7f0000, 0x7f1000, 0), m(0x7f3000, 0x7f4000, 0x2000));
        // A symbol in the bss part of the second segment.
        assert_eq!(facts.bias(0x6000, &[&a, &b]), Some(0x7f0000));
        assert_eq!(facts.bias(0x9000, &[&a, &b]), None, "in no segment");
        assert_eq!(facts.bias(0x6000, &[&a]), None, "segment not mapped");
        // Non-PIE: mapped where linked.
        assert_eq!(facts.bias(0x3000, &[&m(0x3000, 0x4000, 0x2000)]), Some(0));
        // Another segment's mapping also covers the offset: the segment's own is used.
        let shared = ImageFacts {
            segments: vec![
                Segment {
                    vaddr: 0x262000,
                    memsz: 0xeb564,
                    offset: 0x262000,
                    filesz: 0xeb564,
                },
                Segment {
                    vaddr: 0x34ee50,
                    memsz: 0x60f68,
                    offset: 0x34de50,
                    filesz: 0x3ebe8,
                },
            ],
            ..ImageFacts::default()
        };
        let ro = m(0x7fdca3e62000, 0x7fdca3f4e000, 0x262000);
        let relro = m(0x7fdca3f4e000, 0x7fdca3f54000, 0x34d000);
        let rw = m(0x7fdca3f54000, 0x7fdca3f8e000, 0x353000);
        for order in [[&ro, &relro, &rw], [&rw, &relro, &ro]] {
            assert_eq!(shared.bias(0x3acf60, &order), Some(0x7fdca3c00000));
        }
        // The segment's own first mapping alone is enough (asked of the kernel where the code's
        // mapping puts the segment's start).
        assert_eq!(shared.bias(0x3acf60, &[&relro]), Some(0x7fdca3c00000));
        assert_eq!(shared.address_in(0x34ee50, &ro), Some(0x7fdca3f4ee50));
        assert!((relro.start..relro.end).contains(&0x7fdca3f4ee50));
        assert!(
            shared.address_in(0x3acf60, &rw).is_none(),
            "not a segment's start"
        );
        // Confirmed by the data segment's own mapping; a mapping of the file at another
        // offset (the loader's first mapping of the whole file, before the data segment is
        // mapped over it) places the image a page off, and is not taken.
        assert_eq!(
            shared.confirmed_bias(0x3acf60, &ro, &[&relro]),
            Some(0x7fdca3c00000)
        );
        let whole = m(0x7fdca3e62000, 0x7fdca3f8e000, 0x262000);
        assert_eq!(
            shared.bias(0x3acf60, &[&whole]),
            Some(0x7fdca3c00000 - 0x1000)
        );
        assert_eq!(shared.confirmed_bias(0x3acf60, &ro, &[&whole]), None);
        // Code mapped where no segment starts (text remapped): the data segment's word.
        assert_eq!(
            shared.confirmed_bias(0x3acf60, &rw, &[&relro]),
            Some(0x7fdca3c00000)
        );
    }

    /// The first mapping of this test's own executable.
    fn own_executable() -> Mapping {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let exe = std::fs::metadata("/proc/self/exe").unwrap();
        parse_maps(&maps)
            .into_iter()
            .find(|m| (m.dev, m.ino) == (exe.dev(), exe.ino()))
            .unwrap()
    }

    /// An image read once is known again by a `stat` along the paths `open_mapped` tries,
    /// `map_files` or not; another file at the same path is not taken for it.
    #[test]
    fn cpython_facts_cache_knows_an_image_without_opening_it() {
        let m = own_executable();
        let pid = std::process::id();
        let mut c = FactsCache::default();
        assert!(c.known(pid, &m, true).is_none(), "nothing read yet");
        let read = c.get(pid, &m, true).unwrap();
        for no_map_files in [false, true] {
            c.no_map_files = no_map_files;
            for is_exe in [true, false] {
                let known = c.known(pid, &m, is_exe).expect("known by a stat");
                assert!(Arc::ptr_eq(&known, &read));
            }
        }
        let other = Mapping {
            ino: m.ino + 1,
            ..m.clone()
        };
        assert!(c.known(pid, &other, true).is_none());
    }

    #[test]
    fn cpython_open_mapped_refuses_another_file() {
        let m = own_executable();
        let pid = std::process::id();
        assert!(open_mapped(pid, &m, true).is_ok());
        // Without CAP_SYS_ADMIN (the daemon once it dropped privileges) `map_files` is
        // refused: the path through the process's root, checked, is used.
        let (_, k) = check_mapped(open_regular(&by_root(pid, &m)).unwrap(), &m).unwrap();
        assert_eq!((k.0, k.1), (m.dev, m.ino));
        // Another file at that path (by its inode): refused.
        let other = Mapping {
            ino: m.ino + 1,
            start: 1,
            end: 2,
            ..m.clone()
        };
        assert!(matches!(
            open_mapped(pid, &other, false),
            Err(CpythonError::BadImage { .. })
        ));
    }

    #[test]
    fn cpython_facts_of_debian_python() {
        let f = File::open("/usr/bin/python3.11").unwrap();
        let facts = read_facts(f, Path::new("/usr/bin/python3.11")).unwrap();
        assert!(facts.x86_64);
        assert!(facts.symbols.contains_key("_PyRuntime"));
        assert_eq!(facts.py_version.map(|v| v >> 16), Some(0x030b));
        assert_eq!(facts.soname, None);
    }
}
