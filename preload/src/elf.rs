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
//! The same walk finds the libc functions the `open` wrappers forward to ([`next_functions`]):
//! what `dlsym(RTLD_NEXT, …)` answers, without its cost in every process (its first call,
//! cold, took 3–6 µs of a `/bin/true` exec here, six of them 6–9 µs; see
//! `docs/preload-research.md`).
//!
//! 64-bit ELF only; elsewhere the answer is "unknown" and the caller uses `dlsym`.

use core::ffi::{c_int, c_void, CStr};

/// Some loaded object defines `name`: `Some(true)`; none does: `Some(false)`; an object
/// without a hash table could not be searched: `None`.
#[cfg(test)]
pub fn defined(name: &CStr) -> Option<bool> {
    let [d] = defined_each([name]);
    d
}

/// [`defined`] for several names in one walk (each object's dynamic section is read once).
pub fn defined_each<const N: usize>(names: [&CStr; N]) -> [Option<bool>; N] {
    imp::defined_each(names)
}

/// For each name, the address of the function `dlsym(RTLD_NEXT, name)` would return when called
/// from the object that contains the address `ours`: the first definition in the objects
/// loaded after it (in the loader's order, which for the objects loaded at start is the search
/// order: the program, the preloaded objects, their dependencies), of the default version
/// (not a hidden one), not local. 0 where the walk cannot answer for sure, and the caller asks
/// `dlsym`: `ours` not found, an object without a hash table on the way, or a first
/// definition that is not a plain function (an `IFUNC` would need its resolver called).
pub fn next_functions<const N: usize>(names: [&CStr; N], ours: usize) -> [usize; N] {
    imp::next_functions(names, ours)
}

#[cfg(not(target_pointer_width = "64"))]
mod imp {
    use core::ffi::CStr;

    pub fn defined_each<const N: usize>(_: [&CStr; N]) -> [Option<bool>; N] {
        [None; N]
    }

    pub fn next_functions<const N: usize>(_: [&CStr; N], _: usize) -> [usize; N] {
        [0; N]
    }
}

#[cfg(target_pointer_width = "64")]
mod imp {
    use super::{c_int, c_void};
    use core::ffi::CStr;
    use core::ptr::read_unaligned;

    const DT_NULL: i64 = 0;
    const DT_HASH: i64 = 4;
    const DT_STRTAB: i64 = 5;
    const DT_SYMTAB: i64 = 6;
    const DT_STRSZ: i64 = 10;
    const DT_GNU_HASH: i64 = 0x6fff_fef5;
    const DT_VERSYM: i64 = 0x6fff_fff0;
    /// `versym` bit of a hidden (non-default) version, which `dlsym` does not return.
    const VERSYM_HIDDEN: u16 = 0x8000;
    const STB_LOCAL: u8 = 0;
    const STT_FUNC: u8 = 2;
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

    /// What [`defined_each`] looks for and what it found.
    struct Search<'a, const N: usize> {
        names: [&'a CStr; N],
        found: [bool; N],
        /// An object without a hash table was passed: a name not found may be there.
        unknown: bool,
    }

    pub fn defined_each<const N: usize>(names: [&CStr; N]) -> [Option<bool>; N] {
        let mut search = Search {
            names,
            found: [false; N],
            unknown: false,
        };
        // SAFETY: `visit::<N>` has the callback's signature and only uses `data` as the
        // `Search<N>` passed here, which outlives the call.
        unsafe { libc::dl_iterate_phdr(Some(visit::<N>), (&raw mut search).cast()) };
        search
            .found
            .map(|found| (found || !search.unknown).then_some(found))
    }

    /// One loaded object; returns non-zero (stop) once every name is found.
    unsafe extern "C" fn visit<const N: usize>(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the `Search<N>` of `defined_each`; `info` describes a mapped object
        // and is valid during the callback (glibc's contract for `dl_iterate_phdr`).
        let (search, info) = unsafe { (&mut *data.cast::<Search<'_, N>>(), &*info) };
        // SAFETY: as above.
        let object = match unsafe { Object::parse(info) } {
            Parsed::Nothing => return 0,
            Parsed::Unsearchable => {
                search.unknown = true;
                return 0;
            }
            Parsed::Object(o) => o,
        };
        for (found, name) in search.found.iter_mut().zip(search.names) {
            // SAFETY: the object's own tables.
            *found = *found || unsafe { object.find(name.to_bytes(), false) }.is_some();
        }
        c_int::from(search.found.iter().all(|&f| f))
    }

    /// What [`next_functions`] looks for and what it found.
    struct NextSearch<'a, const N: usize> {
        names: [&'a CStr; N],
        ours: usize,
        /// The object containing `ours` was passed: definitions from here on count.
        past_ours: bool,
        /// The address found for each name (0: ask `dlsym`).
        found: [usize; N],
        /// Whether each name's answer is final (found, or `dlsym` must decide).
        settled: [bool; N],
    }

    pub fn next_functions<const N: usize>(names: [&CStr; N], ours: usize) -> [usize; N] {
        let mut search = NextSearch {
            names,
            ours,
            past_ours: false,
            found: [0; N],
            settled: [false; N],
        };
        // SAFETY: `visit_next::<N>` has the callback's signature and only uses `data` as the
        // `NextSearch<N>` passed here, which outlives the call.
        unsafe { libc::dl_iterate_phdr(Some(visit_next::<N>), (&raw mut search).cast()) };
        search.found
    }

    /// One loaded object of [`next_functions`]; returns non-zero (stop) once every name is
    /// settled.
    unsafe extern "C" fn visit_next<const N: usize>(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the `NextSearch<N>` of `next_functions`; `info` describes a mapped
        // object and is valid during the callback.
        let (search, info) = unsafe { (&mut *data.cast::<NextSearch<'_, N>>(), &*info) };
        if !search.past_ours {
            // SAFETY: as above.
            search.past_ours = unsafe { contains(info, search.ours) };
            return 0;
        }
        // SAFETY: as above.
        let object = match unsafe { Object::parse(info) } {
            Parsed::Nothing => return 0,
            Parsed::Unsearchable => return 1, // it may define any of them: `dlsym` decides
            Parsed::Object(o) => o,
        };
        let pending = search.settled.iter_mut().zip(search.found.iter_mut());
        for ((settled, found), name) in pending.zip(search.names) {
            if *settled {
                continue;
            }
            // SAFETY: the object's own tables.
            let Some(sym) = (unsafe { object.find(name.to_bytes(), true) }) else {
                continue;
            };
            *settled = true;
            if sym.st_info & 0xf == STT_FUNC && sym.st_value != 0 {
                *found = info.dlpi_addr.wrapping_add(sym.st_value) as usize;
            }
        }
        c_int::from(search.settled.iter().all(|&s| s))
    }

    /// Whether `addr` lies in one of the object's loaded segments.
    ///
    /// # Safety
    /// `info` describes an object mapped by the loader.
    unsafe fn contains(info: &libc::dl_phdr_info, addr: usize) -> bool {
        if info.dlpi_phdr.is_null() {
            return false;
        }
        // SAFETY: the loader's program headers of the object, `dlpi_phnum` of them.
        let phdrs = unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
        let addr = addr as u64;
        phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD).any(|p| {
            let start = info.dlpi_addr.wrapping_add(p.p_vaddr);
            addr >= start && addr - start < p.p_memsz
        })
    }

    /// A loaded object's dynamic symbol tables, or why there are none to search.
    enum Parsed {
        /// No dynamic section or no dynamic symbols: it defines nothing.
        Nothing,
        /// Symbols but no hash table: cannot be searched here.
        Unsearchable,
        Object(Object),
    }

    struct Object {
        table: Table,
        /// `DT_GNU_HASH`, else null.
        gnu: *const u32,
        /// `DT_HASH`, else null.
        sysv: *const u32,
    }

    impl Object {
        /// Read the object's dynamic section.
        ///
        /// # Safety
        /// `info` describes an object mapped and relocated by the loader.
        unsafe fn parse(info: &libc::dl_phdr_info) -> Parsed {
            if info.dlpi_phdr.is_null() {
                return Parsed::Nothing;
            }
            // SAFETY: the loader's program headers of the object, `dlpi_phnum` of them.
            let phdrs =
                unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
            let Some(dynamic) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) else {
                return Parsed::Nothing; // static: nothing to look up dynamically
            };
            let base = info.dlpi_addr;
            // glibc rewrites the addresses in a writable dynamic section to absolute ones when
            // it loads the object (`elf_get_dynamic_info`); a read-only one (the vDSO's) stays
            // relative to the load address.
            let rebase = if dynamic.p_flags & libc::PF_W != 0 {
                0
            } else {
                base
            };
            let first = base.wrapping_add(dynamic.p_vaddr) as *const Dyn;
            let (mut gnu, mut sysv, mut symtab, mut strtab, mut strsz, mut versym) =
                (0, 0, 0, 0, 0, 0);
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
                    DT_VERSYM => versym = d.val,
                    _ => {}
                }
            }
            if symtab == 0 || strtab == 0 {
                return Parsed::Nothing; // no dynamic symbols
            }
            if gnu == 0 && sysv == 0 {
                return Parsed::Unsearchable;
            }
            let at = |v: u64| if v == 0 { 0 } else { v.wrapping_add(rebase) };
            Parsed::Object(Object {
                table: Table {
                    symtab: at(symtab) as *const libc::Elf64_Sym,
                    strtab: at(strtab) as *const u8,
                    strsz,
                    versym: at(versym) as *const u16,
                },
                gnu: at(gnu) as *const u32,
                sysv: at(sysv) as *const u32,
            })
        }

        /// The first definition of `name` in the object's hash chain; with `visible`, only one
        /// that `dlsym` would return (not local, not a hidden version).
        ///
        /// # Safety
        /// The object was parsed from a mapped, relocated object.
        unsafe fn find(&self, name: &[u8], visible: bool) -> Option<libc::Elf64_Sym> {
            let t = &self.table;
            // SAFETY: indices come from the object's own hash table.
            let accept =
                |i: u32| unsafe { t.is_definition_of(i, name) && (!visible || t.is_visible(i)) };
            // SAFETY: the tables the dynamic section names, in the mapped object.
            let i = unsafe {
                if !self.gnu.is_null() {
                    t.gnu_lookup(self.gnu, name, accept)
                } else {
                    t.sysv_lookup(self.sysv, name, accept)
                }
            }?;
            // SAFETY: an index of the symbol table (the lookup's).
            Some(unsafe { at(t.symtab, i) })
        }
    }

    /// An object's dynamic symbol and string tables.
    struct Table {
        symtab: *const libc::Elf64_Sym,
        strtab: *const u8,
        strsz: u64,
        /// `DT_VERSYM`, one `u16` per symbol, or null when the object has no versions.
        versym: *const u16,
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

        /// Whether symbol `i` is one `dlsym` returns when it matches (the loader's
        /// `do_lookup_x` and `check_match` for an unversioned lookup): not `STB_LOCAL`, and not
        /// a hidden version (the non-default `name@VERSION` of a versioned name).
        ///
        /// # Safety
        /// `i` is an index of the symbol table (and so of `versym`).
        unsafe fn is_visible(&self, i: u32) -> bool {
            // SAFETY: by the caller's contract.
            let sym = unsafe { at(self.symtab, i) };
            if sym.st_info >> 4 == STB_LOCAL {
                return false;
            }
            // SAFETY: `versym` has one entry per symbol.
            self.versym.is_null() || unsafe { at(self.versym, i) } & VERSYM_HIDDEN == 0
        }

        /// Look `name` up in a `DT_GNU_HASH` table (the loader's `do_lookup_x`): the first
        /// symbol of its chain that `accept` takes.
        ///
        /// # Safety
        /// `hash` is the object's GNU hash table.
        unsafe fn gnu_lookup(
            &self,
            hash: *const u32,
            name: &[u8],
            accept: impl Fn(u32) -> bool,
        ) -> Option<u32> {
            let h = name
                .iter()
                .fold(5381u32, |h, &b| h.wrapping_mul(33).wrapping_add(b.into()));
            // SAFETY: the table's header (for every read in this block), its Bloom filter of
            // `bloom_size` words, its `nbuckets` buckets and the chain array that follows.
            unsafe {
                let (nbuckets, symoffset) = (at(hash, 0), at(hash, 1));
                let (bloom_size, bloom_shift) = (at(hash, 2), at(hash, 3));
                if nbuckets == 0 || bloom_size == 0 {
                    return None;
                }
                let bloom = hash.wrapping_add(4).cast::<u64>();
                let word = at(bloom, (h / 64) & (bloom_size - 1));
                let mask = (1u64 << (h % 64)) | (1u64 << (h.wrapping_shr(bloom_shift) % 64));
                if word & mask != mask {
                    return None;
                }
                let buckets = bloom.wrapping_add(bloom_size as usize).cast::<u32>();
                let chains = buckets.wrapping_add(nbuckets as usize);
                let mut i = at(buckets, h % nbuckets);
                if i < symoffset {
                    return None; // an empty bucket
                }
                for _ in 0..MAX_CHAIN {
                    let h2 = at(chains, i.wrapping_sub(symoffset));
                    if (h | 1) == (h2 | 1) && accept(i) {
                        return Some(i);
                    }
                    if h2 & 1 != 0 {
                        break; // end of the chain
                    }
                    i = i.wrapping_add(1);
                }
                None
            }
        }

        /// Look `name` up in a System V `DT_HASH` table: the first symbol of its chain that
        /// `accept` takes.
        ///
        /// # Safety
        /// `hash` is the object's hash table.
        unsafe fn sysv_lookup(
            &self,
            hash: *const u32,
            name: &[u8],
            accept: impl Fn(u32) -> bool,
        ) -> Option<u32> {
            let h = name.iter().fold(0u32, |h, &b| {
                let h = (h << 4).wrapping_add(b.into());
                let g = h & 0xf000_0000;
                (h ^ (g >> 24)) & !g
            });
            // SAFETY: the table's header, `nbucket` buckets and `nchain` chain entries.
            unsafe {
                let (nbucket, nchain) = (at(hash, 0), at(hash, 1));
                if nbucket == 0 {
                    return None;
                }
                let buckets = hash.wrapping_add(2);
                let chains = buckets.wrapping_add(nbucket as usize);
                let mut i = at(buckets, h % nbucket);
                for _ in 0..nchain.min(MAX_CHAIN) {
                    if i == 0 || i >= nchain {
                        break;
                    }
                    if accept(i) {
                        return Some(i);
                    }
                    i = at(chains, i);
                }
                None
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
                assert_eq!(crate::elf::defined(name), Some(expected), "{name:?}");
            }
        }

        /// The walk finds what `dlsym(RTLD_NEXT, …)` finds from the test binary (the program,
        /// first in the search order, as the preloaded library is first after it): the open
        /// family, names with an older hidden version besides the default one (`realpath`
        /// 2.2.5 and 2.3, …), and 0 where `dlsym` must decide: an `IFUNC` (`memcpy`, whose
        /// hidden old version is a plain function that must not be taken) or a missing name.
        #[test]
        fn next_functions_agree_with_dlsym_rtld_next() {
            static HERE: u8 = 0;
            let names: [&CStr; 14] = [
                c"open",
                c"open64",
                c"openat",
                c"openat64",
                c"fopen",
                c"fopen64",
                c"malloc",
                c"realpath",
                c"pthread_cond_wait",
                c"fmemopen",
                c"regexec",
                c"sched_getaffinity",
                c"memcpy",
                c"no_such_function_anywhere",
            ];
            let found = super::next_functions(names, (&raw const HERE) as usize);
            for (name, addr) in names.iter().zip(found) {
                // SAFETY: a NUL-terminated name; RTLD_NEXT from the test binary's code.
                let next = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
                match name.to_bytes() {
                    b"memcpy" => assert!(addr == 0 && next != 0, "IFUNC left to dlsym"),
                    b"no_such_function_anywhere" => assert_eq!((addr, next), (0, 0)),
                    _ => assert_eq!(addr, next, "{name:?}"),
                }
            }
            // An address in no object: nothing is after it, `dlsym` decides everything.
            assert_eq!(super::next_functions([c"open"], 1), [0]);
        }

        /// The vDSO's dynamic section is read-only and keeps relative addresses.
        #[test]
        fn finds_the_vdso() {
            assert_eq!(crate::elf::defined(c"__vdso_clock_gettime"), Some(true));
            // Several names in one walk, each answered as alone.
            let names = [
                c"malloc",
                c"PySys_AddAuditHook",
                c"__vdso_clock_gettime",
                c"x_y_z",
            ];
            let each = crate::elf::defined_each(names);
            assert_eq!(each, names.map(crate::elf::defined));
            assert_eq!(each, [Some(true), Some(false), Some(true), Some(false)]);
        }
    }
}
