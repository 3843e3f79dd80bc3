//! One mapping of a live process, asked of the kernel by address (`PROCMAP_QUERY`, Linux
//! 6.11+), instead of reading and parsing the whole of `/proc/PID/maps`.
//!
//! The sampler needs the file behind one instruction address of a sample that landed outside
//! every mapping it knows. A Python process that imported numpy has a few hundred mappings:
//! reading all of them for one address was the largest single cost of sampling a short
//! process (the kernel formats every line, the daemon parses every line). The query returns
//! the one mapping, with its file name, in one `ioctl`. Kernels without it answer `ENOTTY`
//! (remembered, so that the fallback costs no failed call afterwards); callers then read the
//! whole table as before.
use std::{
    ffi::OsStr,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
};

use linux_raw_sys::general::{procmap_query, procmap_query_flags};

nix::ioctl_readwrite!(
    /// `PROCMAP_QUERY` (`_IOWR('f', 17, struct procmap_query)`, include/uapi/linux/fs.h).
    procmap_query_ioctl,
    b'f',
    17,
    procmap_query
);

/// Set once the kernel has said it has no `PROCMAP_QUERY`.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// A mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Offset in the file of `start`.
    pub offset: u64,
    /// The file's device (`st_dev` encoding); 0 for anonymous memory.
    pub dev: u64,
    /// The file's inode; 0 for anonymous memory.
    pub ino: u64,
    /// The file it maps (without a ` (deleted)` suffix); `None` for anonymous memory and
    /// special mappings (`[vdso]`).
    pub file: Option<PathBuf>,
}

/// What the kernel says about an address.
#[derive(Debug, PartialEq, Eq)]
pub enum Covering {
    /// The executable mapping that holds it.
    Found(Vma),
    /// No executable mapping holds it.
    Nothing,
    /// This kernel cannot be asked (before 6.11): read `/proc/PID/maps` instead.
    Unsupported,
}

/// A process's mapping table, open for queries.
pub struct Maps {
    file: std::fs::File,
    name: Box<[u8; libc::PATH_MAX as usize]>,
}

impl Maps {
    /// Opens the table of process `pid`; `None` where the kernel cannot be asked.
    pub fn open(pid: u32) -> std::io::Result<Option<Maps>> {
        if UNSUPPORTED.load(Ordering::Relaxed) {
            return Ok(None);
        }
        Ok(Some(Maps {
            file: std::fs::File::open(format!("/proc/{pid}/maps"))?,
            name: Box::new([0u8; libc::PATH_MAX as usize]),
        }))
    }

    /// The first mapping that matches `flags` (`procmap_query_flags`) at `addr`, or after it
    /// with `PROCMAP_QUERY_COVERING_OR_NEXT_VMA`; `Ok(None)` when there is none, and also
    /// (remembered for every later call) when the kernel has no `PROCMAP_QUERY`.
    fn query(&mut self, addr: u64, flags: u32) -> std::io::Result<Option<Vma>> {
        let mut q = procmap_query {
            size: std::mem::size_of::<procmap_query>() as u64,
            query_flags: u64::from(flags),
            query_addr: addr,
            vma_start: 0,
            vma_end: 0,
            vma_flags: 0,
            vma_page_size: 0,
            vma_offset: 0,
            inode: 0,
            dev_major: 0,
            dev_minor: 0,
            vma_name_size: self.name.len() as u32,
            build_id_size: 0,
            vma_name_addr: self.name.as_mut_ptr() as u64,
            build_id_addr: 0,
        };
        // SAFETY: `q` is a `procmap_query` whose `size` is its own; the only buffer the
        // kernel writes through is `self.name`, of the length `vma_name_size` states, alive
        // across the call.
        match unsafe { procmap_query_ioctl(self.file.as_raw_fd(), &mut q) } {
            Ok(_) => {}
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(nix::errno::Errno::ENOTTY) => {
                UNSUPPORTED.store(true, Ordering::Relaxed);
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        // `vma_name_size` counts the terminating NUL; zero when the mapping has no name.
        let len = (q.vma_name_size as usize)
            .min(self.name.len())
            .saturating_sub(1);
        let text = &self.name[..len];
        let file = (q.inode != 0 && text.first() == Some(&b'/')).then(|| {
            let text = text.strip_suffix(b" (deleted)").unwrap_or(text);
            PathBuf::from(OsStr::from_bytes(text))
        });
        Ok(Some(Vma {
            start: q.vma_start,
            end: q.vma_end,
            offset: q.vma_offset,
            dev: libc::makedev(q.dev_major, q.dev_minor),
            ino: q.inode,
            file,
        }))
    }

    /// Every executable mapping of a file, in address order.
    pub fn executable_files(&mut self) -> std::io::Result<Vec<Vma>> {
        use procmap_query_flags::*;
        let flags = PROCMAP_QUERY_COVERING_OR_NEXT_VMA as u32
            | PROCMAP_QUERY_VMA_EXECUTABLE as u32
            | PROCMAP_QUERY_FILE_BACKED_VMA as u32;
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(v) = self.query(at, flags)? {
            at = v.end;
            out.push(v);
        }
        Ok(out)
    }

    /// The mapping of a file that holds `addr`, if one does.
    pub fn file_at(&mut self, addr: u64) -> std::io::Result<Option<Vma>> {
        let flags = procmap_query_flags::PROCMAP_QUERY_FILE_BACKED_VMA as u32;
        self.query(addr, flags)
    }

    /// The run of mappings of file `(dev, ino)` that starts with the one at `from`: each
    /// following file mapping while it is of the same file (anonymous memory between, such as
    /// a `.bss`, skipped).
    pub fn file_run(&mut self, from: u64, dev: u64, ino: u64) -> std::io::Result<Vec<Vma>> {
        use procmap_query_flags::*;
        let flags =
            PROCMAP_QUERY_COVERING_OR_NEXT_VMA as u32 | PROCMAP_QUERY_FILE_BACKED_VMA as u32;
        let mut out = Vec::new();
        let mut at = from;
        while let Some(v) = self.query(at, flags)? {
            if (v.dev, v.ino) != (dev, ino) {
                break;
            }
            at = v.end;
            out.push(v);
        }
        Ok(out)
    }
}

/// The executable mapping of process `pid` that covers `addr`.
pub fn covering(pid: u32, addr: u64) -> std::io::Result<Covering> {
    let Some(mut maps) = Maps::open(pid)? else {
        return Ok(Covering::Unsupported);
    };
    let flags = procmap_query_flags::PROCMAP_QUERY_VMA_EXECUTABLE as u32;
    Ok(match maps.query(addr, flags)? {
        Some(v) => Covering::Found(v),
        None if UNSUPPORTED.load(Ordering::Relaxed) => Covering::Unsupported,
        None => Covering::Nothing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asked about this very function, the kernel names this test binary; asked about a
    /// data address, nothing executable holds it. (On a kernel before 6.11 the answer is
    /// `Unsupported` for both, which the test accepts: the callers fall back.)
    #[test]
    fn the_mapping_of_an_own_function_is_this_binary() {
        let f = the_mapping_of_an_own_function_is_this_binary as *const () as usize as u64;
        let me = std::env::current_exe().unwrap();
        match covering(std::process::id(), f).unwrap() {
            Covering::Found(v) => {
                assert!(v.start <= f && f < v.end, "{v:?}");
                assert_eq!(v.file.as_deref(), Some(me.as_path()));
            }
            Covering::Unsupported => {
                let release = nix::sys::utsname::uname().unwrap();
                let release = release.release().to_string_lossy().into_owned();
                let mut v = release
                    .split(['.', '-'])
                    .map(|x| x.parse::<u32>().unwrap_or(0));
                let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
                assert!(
                    (major, minor) < (6, 11),
                    "kernel {release} has PROCMAP_QUERY"
                );
                return;
            }
            Covering::Nothing => panic!("no mapping for a function"),
        }
        let data = Box::new(0u64);
        let addr = &*data as *const u64 as u64;
        assert_eq!(
            covering(std::process::id(), addr).unwrap(),
            Covering::Nothing
        );
        // The stack's neighbour, [vdso], has no file.
        // SAFETY: getauxval reads the process's auxiliary vector; it has no preconditions.
        let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
        if vdso != 0 {
            match covering(std::process::id(), vdso).unwrap() {
                Covering::Found(v) => assert_eq!(v.file, None, "{v:?}"),
                other => panic!("{other:?}"),
            }
        }
    }

    /// The executable file mappings and a file's run agree with the text of `maps`.
    #[test]
    fn executable_files_and_a_run_agree_with_the_text() {
        let Some(mut maps) = Maps::open(std::process::id()).unwrap() else {
            return;
        };
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .collect();
        let range = |l: &[&str]| {
            let (a, b) = l[0].split_once('-').unwrap();
            (
                u64::from_str_radix(a, 16).unwrap(),
                u64::from_str_radix(b, 16).unwrap(),
            )
        };
        let exec: Vec<(u64, u64)> = lines
            .iter()
            .filter(|l| l[1].as_bytes()[2] == b'x' && l.len() > 5 && l[5].starts_with('/'))
            .map(|l| range(l))
            .collect();
        let got = maps.executable_files().unwrap();
        assert_eq!(
            got.iter().map(|v| (v.start, v.end)).collect::<Vec<_>>(),
            exec
        );
        let me = std::env::current_exe().unwrap();
        let first = got
            .iter()
            .find(|v| v.file.as_deref() == Some(me.as_path()))
            .expect("this binary is mapped executable");
        let run = maps.file_run(first.start, first.dev, first.ino).unwrap();
        assert_eq!(run[0], *first);
        assert!(run.iter().all(|v| (v.dev, v.ino) == (first.dev, first.ino)));
        let text_run = lines
            .iter()
            .filter(|l| l.len() > 5 && l[5] == me.to_str().unwrap() && range(l).0 >= first.start)
            .count();
        assert_eq!(run.len(), text_run, "{run:?}");
    }
}
