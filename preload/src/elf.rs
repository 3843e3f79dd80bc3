//! Whether a loaded object defines a dynamic symbol, answered without `dlsym`.
//!
//! The constructor asks this in every process, and in all but Python ones the answer is no. A
//! `dlsym` that fails formats its error message with `malloc`; in a small program that is the
//! first allocation, which sets up the heap (`getrandom`, two `brk`, page faults): about 50 µs
//! per exec of `/bin/true` on the project's machine, as much as mapping the library at all
//! (see `docs/preload-research.md`). So the miss is found here instead: `dl_iterate_phdr`
//! lists the objects the loader mapped, and the name is looked up in each one's symbol hash
//! table (`DT_GNU_HASH`, else `DT_HASH`) the way the loader itself does, reading only tables
//! the loader has already read. Nothing is allocated, no error state is touched.
//!
//! 64-bit ELF only; elsewhere the answer is "unknown" and the caller uses `dlsym`.

use core::ffi::{c_int, c_void, CStr};

/// Some loaded object defines `name`: `Some(true)`; none does: `Some(false)`; an object
/// without a hash table could not be searched: `None`.
pub fn defined(name: &CStr) -> Option<bool> {
    imp::defined(name.to_bytes())
}

#[cfg(not(target_pointer_width = "64"))]
mod imp {
    pub fn defined(_: &[u8]) -> Option<bool> {
        None
    }
}

#[cfg(target_pointer_width = "64")]
mod imp {
    use super::{c_int, c_void};
    use core::ptr::read_unaligned;

    const DT_NULL: i64 = 0;
    const DT_HASH: i64 = 4;
    const DT_STRTAB: i64 = 5;
    const DT_SYMTAB: i64 = 6;
    const DT_STRSZ: i64 = 10;
    const DT_GNU_HASH: i64 = 0x6fff_fef5;
    /// More dynamic entries than any object has; a bound on a walk of foreign memory.
    const MAX_DYN: usize = 1 << 12;
    /// A bound on hash chain walks (the loader's own tables end much sooner).
    const MAX_CHAIN: u32 = 1 << 20;

    /// `Elf64_Dyn`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Dyn {
        tag: i64,
        val: u64,
    }

    /// What the walk looks for and what it found.
    struct Search<'a> {
        name: &'a [u8],
        found: bool,
        unknown: bool,
    }

    pub fn defined(name: &[u8]) -> Option<bool> {
        let mut search = Search {
            name,
            found: false,
            unknown: false,
        };
        // SAFETY: `visit` has the callback's signature and only uses `data` as the `Search`
        // passed here, which outlives the call.
        unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut search).cast()) };
        match (search.found, search.unknown) {
            (true, _) => Some(true),
            (false, false) => Some(false),
            (false, true) => None,
        }
    }

    /// One loaded object; returns non-zero (stop) once the symbol is found.
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the `Search` of `defined`; `info` describes a mapped object and is
        // valid during the callback (glibc's contract for `dl_iterate_phdr`).
        let (search, info) = unsafe { (&mut *data.cast::<Search<'_>>(), &*info) };
        // SAFETY: as above.
        match unsafe { object_defines(info, search.name) } {
            Some(true) => {
                search.found = true;
                1
            }
            Some(false) => 0,
            None => {
                search.unknown = true;
                0
            }
        }
    }

    /// Whether the object defines `name` (`None`: it has no hash table to search).
    ///
    /// # Safety
    /// `info` describes an object mapped and relocated by the loader.
    unsafe fn object_defines(info: &libc::dl_phdr_info, name: &[u8]) -> Option<bool> {
        if info.dlpi_phdr.is_null() {
            return Some(false);
        }
        // SAFETY: the loader's program headers of the object, `dlpi_phnum` of them.
        let phdrs = unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
        let Some(dynamic) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) else {
            return Some(false); // static: nothing to look up dynamically
        };
        let base = info.dlpi_addr;
        // glibc rewrites the addresses in a writable dynamic section to absolute ones when it
        // loads the object (`elf_get_dynamic_info`); a read-only one (the vDSO's) stays
        // relative to the load address.
        let rebase = if dynamic.p_flags & libc::PF_W != 0 {
            0
        } else {
            base
        };
        let first = base.wrapping_add(dynamic.p_vaddr) as *const Dyn;
        let (mut gnu, mut sysv, mut symtab, mut strtab, mut strsz) = (0, 0, 0, 0, 0);
        for i in 0..MAX_DYN {
            // SAFETY: the object's dynamic section, which ends with DT_NULL.
            let d = unsafe { read_unaligned(first.wrapping_add(i)) };
            match d.tag {
                DT_NULL => break,
                DT_GNU_HASH => gnu = d.val,
                DT_HASH => sysv = d.val,
                DT_SYMTAB => symtab = d.val,
                DT_STRTAB => strtab = d.val,
                DT_STRSZ => strsz = d.val,
                _ => {}
            }
        }
        if symtab == 0 || strtab == 0 {
            return Some(false); // no dynamic symbols
        }
        let table = Table {
            symtab: symtab.wrapping_add(rebase) as *const libc::Elf64_Sym,
            strtab: strtab.wrapping_add(rebase) as *const u8,
            strsz,
        };
        // SAFETY: the tables the dynamic section names, in the mapped object.
        unsafe {
            if gnu != 0 {
                Some(table.gnu_lookup(gnu.wrapping_add(rebase) as *const u32, name))
            } else if sysv != 0 {
                Some(table.sysv_lookup(sysv.wrapping_add(rebase) as *const u32, name))
            } else {
                None
            }
        }
    }

    /// An object's dynamic symbol and string tables.
    struct Table {
        symtab: *const libc::Elf64_Sym,
        strtab: *const u8,
        strsz: u64,
    }

    /// `*p.wrapping_add(i)` for a table entry.
    ///
    /// # Safety
    /// The entry is in the mapped table.
    unsafe fn at<T: Copy>(p: *const T, i: u32) -> T {
        // SAFETY: by the caller's contract.
        unsafe { read_unaligned(p.wrapping_add(i as usize)) }
    }

    impl Table {
        /// Whether symbol `i` is a definition (not an undefined reference) named `name`.
        ///
        /// # Safety
        /// `i` is an index of the symbol table.
        unsafe fn is_definition_of(&self, i: u32, name: &[u8]) -> bool {
            // SAFETY: by the caller's contract.
            let sym = unsafe { at(self.symtab, i) };
            let start = u64::from(sym.st_name);
            if sym.st_shndx == 0 || start.saturating_add(name.len() as u64) >= self.strsz {
                return false; // SHN_UNDEF, or the name would run past the string table
            }
            let s = self.strtab.wrapping_add(start as usize);
            for (k, &b) in name.iter().enumerate() {
                // SAFETY: `start + k < start + name.len() < strsz`: within the string table.
                if unsafe { read_unaligned(s.wrapping_add(k)) } != b {
                    return false;
                }
            }
            // SAFETY: `start + name.len() < strsz` (checked above).
            unsafe { read_unaligned(s.wrapping_add(name.len())) == 0 }
        }

        /// Look `name` up in a `DT_GNU_HASH` table (the loader's `do_lookup_x`).
        ///
        /// # Safety
        /// `hash` is the object's GNU hash table.
        unsafe fn gnu_lookup(&self, hash: *const u32, name: &[u8]) -> bool {
            let h = name
                .iter()
                .fold(5381u32, |h, &b| h.wrapping_mul(33).wrapping_add(b.into()));
            // SAFETY: the table's header (for every read in this block), its Bloom filter of
            // `bloom_size` words, its `nbuckets` buckets and the chain array that follows.
            unsafe {
                let (nbuckets, symoffset) = (at(hash, 0), at(hash, 1));
                let (bloom_size, bloom_shift) = (at(hash, 2), at(hash, 3));
                if nbuckets == 0 || bloom_size == 0 {
                    return false;
                }
                let bloom = hash.wrapping_add(4).cast::<u64>();
                let word = at(bloom, (h / 64) & (bloom_size - 1));
                let mask = (1u64 << (h % 64)) | (1u64 << (h.wrapping_shr(bloom_shift) % 64));
                if word & mask != mask {
                    return false;
                }
                let buckets = bloom.wrapping_add(bloom_size as usize).cast::<u32>();
                let chains = buckets.wrapping_add(nbuckets as usize);
                let mut i = at(buckets, h % nbuckets);
                if i < symoffset {
                    return false; // an empty bucket
                }
                for _ in 0..MAX_CHAIN {
                    let h2 = at(chains, i.wrapping_sub(symoffset));
                    if (h | 1) == (h2 | 1) && self.is_definition_of(i, name) {
                        return true;
                    }
                    if h2 & 1 != 0 {
                        break; // end of the chain
                    }
                    i = i.wrapping_add(1);
                }
                false
            }
        }

        /// Look `name` up in a System V `DT_HASH` table.
        ///
        /// # Safety
        /// `hash` is the object's hash table.
        unsafe fn sysv_lookup(&self, hash: *const u32, name: &[u8]) -> bool {
            let h = name.iter().fold(0u32, |h, &b| {
                let h = (h << 4).wrapping_add(b.into());
                let g = h & 0xf000_0000;
                (h ^ (g >> 24)) & !g
            });
            // SAFETY: the table's header, `nbucket` buckets and `nchain` chain entries.
            unsafe {
                let (nbucket, nchain) = (at(hash, 0), at(hash, 1));
                if nbucket == 0 {
                    return false;
                }
                let buckets = hash.wrapping_add(2);
                let chains = buckets.wrapping_add(nbucket as usize);
                let mut i = at(buckets, h % nbucket);
                for _ in 0..nchain.min(MAX_CHAIN) {
                    if i == 0 || i >= nchain {
                        break;
                    }
                    if self.is_definition_of(i, name) {
                        return true;
                    }
                    i = at(chains, i);
                }
                false
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use core::ffi::CStr;

        /// The walk agrees with `dlsym` on symbols of the test binary's objects, present or not.
        #[test]
        fn agrees_with_dlsym() {
            let names: [&CStr; 8] = [
                c"malloc",
                c"dl_iterate_phdr",
                c"_dl_find_object",
                c"getauxval",
                c"PySys_AddAuditHook",
                c"Py_Initialize",
                c"malloc_but_not_really",
                c"",
            ];
            for name in names {
                // SAFETY: a NUL-terminated name in the global scope.
                let expected = !unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }.is_null();
                assert_eq!(super::defined(name.to_bytes()), Some(expected), "{name:?}");
            }
        }

        /// The vDSO's dynamic section is read-only and keeps relative addresses.
        #[test]
        fn finds_the_vdso() {
            assert_eq!(super::defined(b"__vdso_clock_gettime"), Some(true));
        }
    }
}
