//! The offsets of the CPython structures the sampler reads, per version (x86-64, non-debug,
//! GIL builds), and CPython 3.13's `_Py_DebugOffsets`.
//!
//! Every value was read from the DWARF of the pyenv builds of 3.8.18, 3.9.18, 3.10.13, 3.11.7,
//! 3.12.1 and 3.13.0 (`gdb -batch -ex 'print (long)&((T *)0)->field' libpython3.X.so.1.0`),
//! agrees with the headers named beside it, and is checked by the tests against running
//! interpreters (the walk finds the right files in the right order). The headers' structures
//! are laid out by the C ABI: 8-byte pointers and `Py_ssize_t`, 4-byte `int`.
use tracer_common::sampling::{PyLayout, NONE};

/// `FRAME_OWNED_BY_CSTACK` in `enum _frameowner` (3.12, 3.13: `Include/internal/pycore_frame.h`:
/// `FRAME_OWNED_BY_THREAD` 0, `_GENERATOR` 1, `_FRAME_OBJECT` 2, `_CSTACK` 3): the entry frame
/// each `_PyEval_EvalFrameDefault` call pushes (3.12: a trampoline code object, 3.13: `None` as
/// its executable), not Python code.
pub const FRAME_OWNED_BY_CSTACK: u32 = 3;

/// The kernel walk's offsets for CPython `major.minor` (x86-64, release build with the GIL),
/// `None` for a version outside 3.8–3.13.
///
/// For 3.13 prefer the interpreter's own `_Py_DebugOffsets`
/// ([`crate::cpython::Interpreter::inspect`] does): this table is 3.13.0's.
pub fn layout(major: u8, minor: u8) -> Option<PyLayout> {
    if major != 3 {
        return None;
    }
    Some(match minor {
        // 3.8: `_PyRuntimeState` and `PyInterpreterState` in Include/internal/pycore_pystate.h,
        // `PyThreadState` in Include/cpython/pystate.h, `PyFrameObject` in
        // Include/frameobject.h. 3.9, 3.10: `_PyRuntimeState` moved to
        // Include/internal/pycore_runtime.h, `PyInterpreterState` to
        // Include/internal/pycore_interp.h, `PyFrameObject` to Include/cpython/frameobject.h;
        // the offsets used did not change.
        8..=10 => PyLayout {
            // `_PyRuntimeState`: 4 ints (preinitializing, preinitialized, core_initialized,
            // initialized) 0..16, `finalizing` (3.9+: `_finalizing`) 16, then `struct
            // pyinterpreters { mutex 24; head 32; main 40; next_id 48 }`.
            runtime_interp_head: 32,
            // `PyInterpreterState { struct _is *next 0; struct _ts *tstate_head 8; ... }`.
            interp_tstate_head: 8,
            // `PyThreadState { prev 0; next 8; interp 16; struct _frame *frame 24; ...;
            // unsigned long thread_id 176 }`.
            tstate_next: 8,
            tstate_thread_id: 176,
            tstate_frame: 24,
            cframe_current_frame: NONE,
            // `PyFrameObject { PyObject_VAR_HEAD 0..24; f_back 24; f_code 32; ... }`.
            frame_back: 24,
            frame_code: 32,
            frame_owner: NONE,
            owner_cstack: NONE,
            frames_in_data_stack: 0,
            _pad: 0,
        },
        // 3.11: Include/internal/pycore_runtime.h, Include/internal/pycore_interp.h,
        // Include/cpython/pystate.h (`PyThreadState`, `_PyCFrame`),
        // Include/internal/pycore_frame.h (`_PyInterpreterFrame`).
        11 => PyLayout {
            // `_PyRuntimeState`: `_initialized` 0, `preinitializing` 4, `preinitialized` 8,
            // `core_initialized` 12, `initialized` 16, `_finalizing` 24, then `interpreters {
            // mutex 32; head 40; main 48; next_id 56 }`.
            runtime_interp_head: 40,
            // `PyInterpreterState { next 0; struct pythreads { uint64_t next_unique_id 8;
            // PyThreadState *head 16; ... } threads; ... }`.
            interp_tstate_head: 16,
            // `PyThreadState { prev 0; next 8; interp 16; ...; _PyCFrame *cframe 56; ...;
            // unsigned long thread_id 152; unsigned long native_thread_id 160 }`.
            tstate_next: 8,
            tstate_thread_id: 152,
            tstate_frame: 56,
            // `_PyCFrame { uint8_t use_tracing 0; _PyInterpreterFrame *current_frame 8;
            // previous 16 }`.
            cframe_current_frame: 8,
            // `_PyInterpreterFrame { f_func 0; f_globals 8; f_builtins 16; f_locals 24;
            // PyCodeObject *f_code 32; frame_obj 40; previous 48; prev_instr 56; int stacktop
            // 64; bool is_entry 68; char owner 69 }`. Every frame on the chain is Python code
            // (3.11 has no shim frames): the owner is not read.
            frame_back: 48,
            frame_code: 32,
            frame_owner: NONE,
            owner_cstack: NONE,
            frames_in_data_stack: 1,
            _pad: 0,
        },
        // 3.12: same headers as 3.11.
        12 => PyLayout {
            // As 3.11: `_initialized` 0 .. `initialized` 16, `_finalizing` 24, then
            // `interpreters { mutex 32; head 40; main 48; next_id 56 }`.
            runtime_interp_head: 40,
            // `PyInterpreterState { next 0; id 8; id_refcount 16; requires_idref 24; id_mutex
            // 32; _initialized 40; finalizing 44; monitoring_version 48; last_restart_version
            // 56; struct pythreads { next_unique_id 64; head 72; ... } threads; ... }`.
            interp_tstate_head: 72,
            // `PyThreadState { prev 0; next 8; interp 16; _status 24; ...; _PyCFrame *cframe
            // 56; ...; unsigned long thread_id 136; native_thread_id 144 }`.
            tstate_next: 8,
            tstate_thread_id: 136,
            tstate_frame: 56,
            // `_PyCFrame { _PyInterpreterFrame *current_frame 0; previous 8 }`.
            cframe_current_frame: 0,
            // `_PyInterpreterFrame { PyCodeObject *f_code 0; previous 8; f_funcobj 16;
            // f_globals 24; f_builtins 32; f_locals 40; frame_obj 48; prev_instr 56; int
            // stacktop 64; uint16_t return_offset 68; char owner 70 }`.
            frame_back: 8,
            frame_code: 0,
            frame_owner: 70,
            owner_cstack: FRAME_OWNED_BY_CSTACK,
            frames_in_data_stack: 1,
            _pad: 0,
        },
        // 3.13: same headers; `_PyRuntimeState` starts with `_Py_DebugOffsets debug_offsets`
        // (584 bytes), which also gives all of these (`DebugOffsets`).
        13 => PyLayout {
            // `_PyRuntimeState { _Py_DebugOffsets debug_offsets 0..584; _initialized 584;
            // ...; _finalizing 608; _finalizing_id 616; interpreters { mutex 624; head 632;
            // main 640; next_id 648 } }`.
            runtime_interp_head: 632,
            // `PyInterpreterState { struct _ceval_state ceval 0..7264 (first since 3.13);
            // next 7264; ...; struct pythreads { next_unique_id 7336; head 7344; ... } }`.
            interp_tstate_head: 7344,
            // `PyThreadState { prev 0; next 8; interp 16; _status 24; ...; _PyInterpreterFrame
            // *current_frame 72; ...; unsigned long thread_id 152; native_thread_id 160 }`
            // (`cframe` is gone: the thread state points at the frame).
            tstate_next: 8,
            tstate_thread_id: 152,
            tstate_frame: 72,
            cframe_current_frame: NONE,
            // `_PyInterpreterFrame { PyObject *f_executable 0; previous 8; f_funcobj 16;
            // f_globals 24; f_builtins 32; f_locals 40; frame_obj 48; instr_ptr 56; int
            // stacktop 64; uint16_t return_offset 68; char owner 70 }`.
            frame_back: 8,
            frame_code: 0,
            frame_owner: 70,
            owner_cstack: FRAME_OWNED_BY_CSTACK,
            frames_in_data_stack: 1,
            _pad: 0,
        },
        _ => return None,
    })
}

/// The offsets user space needs beyond the walk: a code object's names and a `str`'s header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectLayout {
    /// `PyObject.ob_type` (`{ Py_ssize_t ob_refcnt; PyTypeObject *ob_type; }`: 8 in every
    /// build without `Py_TRACE_REFS`, Include/object.h).
    pub ob_type: u32,
    /// `PyCodeObject.co_filename`.
    pub code_filename: u32,
    /// `PyCodeObject.co_name`.
    pub code_name: u32,
    /// `PyCodeObject.co_firstlineno` (an `int`).
    pub code_firstlineno: u32,
    /// `PyASCIIObject.length` (`Py_ssize_t`, in code points).
    pub str_length: u32,
    /// `PyASCIIObject.state` (a 4-byte bit field: `interned:2, kind:3, compact:1, ascii:1`,
    /// then `ready:1` up to 3.11; GCC allocates bits from the least significant).
    pub str_state: u32,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
    pub str_ascii_size: u32,
    /// `sizeof(PyCompactUnicodeObject)`: where a compact non-ASCII string's characters
    /// start; a non-compact (legacy) string's `data.any` pointer is at this offset of its
    /// `PyUnicodeObject`.
    pub str_compact_size: u32,
}

/// [`ObjectLayout`] for CPython `major.minor` (3.8–3.13).
pub fn object_layout(major: u8, minor: u8) -> Option<ObjectLayout> {
    if major != 3 || !(8..=13).contains(&minor) {
        return None;
    }
    // Include/code.h (3.8), Include/cpython/code.h (3.9+).
    let (code_filename, code_name, code_firstlineno) = match minor {
        // 3.8–3.10: `PyObject_HEAD` 0..16; int co_argcount 16, co_posonlyargcount 20,
        // co_kwonlyargcount 24, co_nlocals 28, co_stacksize 32, co_flags 36, co_firstlineno
        // 40; PyObject *co_code 48, co_consts 56, co_names 64, co_varnames 72, co_freevars 80,
        // co_cellvars 88; Py_ssize_t *co_cell2arg 96; co_filename 104; co_name 112.
        8..=10 => (104, 112, 40),
        // 3.11: `PyObject_VAR_HEAD` 0..24; co_consts 24, co_names 32, co_exceptiontable 40;
        // int co_flags 48, co_warmup (short) 52, co_argcount 56, co_posonlyargcount 60,
        // co_kwonlyargcount 64, co_stacksize 68, co_firstlineno 72, ...; co_localsplusnames
        // 96, co_localspluskinds 104; co_filename 112; co_name 120; co_qualname 128.
        11 => (112, 120, 72),
        // 3.12, 3.13: as 3.11 without co_warmup: int co_flags 48, co_argcount 52,
        // co_posonlyargcount 56, co_kwonlyargcount 60, co_stacksize 64, co_firstlineno 68;
        // co_filename 112; co_name 120; co_qualname 128.
        _ => (112, 120, 68),
    };
    // Include/cpython/unicodeobject.h. `PyASCIIObject { PyObject_HEAD 0..16; Py_ssize_t
    // length 16; Py_hash_t hash 24; struct state 32; wchar_t *wstr 40 }` = 48 up to 3.11;
    // 3.12 removed `wstr` (PEP 623): 40. `PyCompactUnicodeObject { PyASCIIObject _base;
    // Py_ssize_t utf8_length; char *utf8; Py_ssize_t wstr_length }` = 72 up to 3.11; 3.12
    // removed `wstr_length`: 56.
    let (str_ascii_size, str_compact_size) = if minor <= 11 { (48, 72) } else { (40, 56) };
    Some(ObjectLayout {
        ob_type: 8,
        code_filename,
        code_name,
        code_firstlineno,
        str_length: 16,
        str_state: 32,
        str_ascii_size,
        str_compact_size,
    })
}

/// Size of CPython 3.13's `_Py_DebugOffsets` (the 3.13.0 layout, Include/internal/pycore_runtime.h).
pub const DEBUG_OFFSETS_SIZE: usize = 584;
/// Its cookie (`_Py_Debug_Cookie`).
pub const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";

/// Positions (bytes) of the `uint64_t` fields of 3.13's `_Py_DebugOffsets` read here: `char
/// cookie[8]` 0, `version` 8, `free_threaded` 16, then sections of offsets, each starting with
/// the structure's `size`.
mod debug {
    pub const VERSION: usize = 8;
    pub const FREE_THREADED: usize = 16;
    // struct _runtime_state { size 24; finalizing 32; interpreters_head 40 }
    pub const RUNTIME_SIZE: usize = 24;
    pub const RUNTIME_INTERPRETERS_HEAD: usize = 40;
    // struct _interpreter_state { size 48; id 56; next 64; threads_head 72; gc 80; ... }
    pub const INTERP_SIZE: usize = 48;
    pub const INTERP_THREADS_HEAD: usize = 72;
    // struct _thread_state { size 152; prev 160; next 168; interp 176; current_frame 184;
    // thread_id 192; native_thread_id 200; datastack_chunk 208; status 216 }
    pub const THREAD_SIZE: usize = 152;
    pub const THREAD_NEXT: usize = 168;
    pub const THREAD_CURRENT_FRAME: usize = 184;
    pub const THREAD_THREAD_ID: usize = 192;
    // struct _interpreter_frame { size 224; previous 232; executable 240; instr_ptr 248;
    // localsplus 256; owner 264 }
    pub const FRAME_SIZE: usize = 224;
    pub const FRAME_PREVIOUS: usize = 232;
    pub const FRAME_EXECUTABLE: usize = 240;
    pub const FRAME_OWNER: usize = 264;
    // struct _code_object { size 272; filename 280; name 288; qualname 296; linetable 304;
    // firstlineno 312; ... co_code_adaptive 344 }
    pub const CODE_SIZE: usize = 272;
    pub const CODE_FILENAME: usize = 280;
    pub const CODE_NAME: usize = 288;
    pub const CODE_FIRSTLINENO: usize = 312;
    // struct _pyobject { size 352; ob_type 360 }
    pub const OBJECT_SIZE: usize = 352;
    pub const OBJECT_OB_TYPE: usize = 360;
    // (type 368, tuple 400, list 424, dict 448, float 472, long 488, bytes 512)
    // struct _unicode_object { size 536; state 544; length 552; asciiobject_size 560 }
    pub const UNICODE_SIZE: usize = 536;
    pub const UNICODE_STATE: usize = 544;
    pub const UNICODE_LENGTH: usize = 552;
    pub const UNICODE_ASCII_SIZE: usize = 560;
    // struct _gc { size 568; collecting 576 } = 584 in all.
}

/// What 3.13's `_Py_DebugOffsets` says, once checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugOffsets {
    /// `PY_VERSION_HEX` of the build.
    pub version: u64,
    /// The walk's offsets.
    pub layout: PyLayout,
    /// The objects' offsets.
    pub objects: ObjectLayout,
}

/// Why a `_Py_DebugOffsets` was not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DebugOffsetsError {
    /// Not the cookie: not a 3.13+ `_PyRuntime`, or not `_PyRuntime`.
    #[error("no \"xdebugpy\" cookie")]
    Cookie,
    /// The version it states is not the one `Py_Version` states.
    #[error("states version {found:#x}, Py_Version is {expected:#x}")]
    Version {
        /// Its `version`.
        found: u64,
        /// `Py_Version`.
        expected: u64,
    },
    /// A free-threaded build (`Py_GIL_DISABLED`).
    #[error("a free-threaded build")]
    FreeThreaded,
    /// An offset outside its structure, or a size out of reason: not the 3.13.0 layout of
    /// `_Py_DebugOffsets`.
    #[error("implausible {0}")]
    Implausible(&'static str),
}

/// Parses and checks a 3.13 `_Py_DebugOffsets` (`bytes`, at least [`DEBUG_OFFSETS_SIZE`]),
/// expecting `PY_VERSION_HEX` `py_version` (from `Py_Version`).
///
/// Checked: the cookie; the version equal to `Py_Version`; `free_threaded` 0; each section's
/// `size` under 1 MiB; each offset used inside its structure (with room for its 8 bytes, 1
/// for the owner byte); `PyObject.ob_type` at 8 (`sizeof(PyObject)` 16); the `str` state
/// inside the ASCII header. A `_Py_DebugOffsets` whose own layout is not 3.13.0's fails one of
/// these: the sizes are then read where other offsets are.
pub fn parse_debug_offsets(
    bytes: &[u8],
    py_version: u64,
) -> Result<DebugOffsets, DebugOffsetsError> {
    use DebugOffsetsError::Implausible;
    if bytes.len() < DEBUG_OFFSETS_SIZE || &bytes[..8] != DEBUG_COOKIE {
        return Err(DebugOffsetsError::Cookie);
    }
    let at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let version = at(debug::VERSION);
    if version != py_version {
        return Err(DebugOffsetsError::Version {
            found: version,
            expected: py_version,
        });
    }
    if at(debug::FREE_THREADED) != 0 {
        return Err(DebugOffsetsError::FreeThreaded);
    }
    // The offset at `field`, inside the structure whose size is at `size` with `width` bytes.
    let field = |size: usize, field: usize, width: u64, what: &'static str| {
        let s = at(size);
        let o = at(field);
        if s == 0 || s > 1 << 20 || o.checked_add(width).is_none_or(|end| end > s) {
            Err(Implausible(what))
        } else {
            Ok(o as u32)
        }
    };
    use debug::*;
    let layout = PyLayout {
        runtime_interp_head: field(
            RUNTIME_SIZE,
            RUNTIME_INTERPRETERS_HEAD,
            8,
            "runtime_state.interpreters_head",
        )?,
        interp_tstate_head: field(
            INTERP_SIZE,
            INTERP_THREADS_HEAD,
            8,
            "interpreter_state.threads_head",
        )?,
        tstate_next: field(THREAD_SIZE, THREAD_NEXT, 8, "thread_state.next")?,
        tstate_thread_id: field(THREAD_SIZE, THREAD_THREAD_ID, 8, "thread_state.thread_id")?,
        tstate_frame: field(
            THREAD_SIZE,
            THREAD_CURRENT_FRAME,
            8,
            "thread_state.current_frame",
        )?,
        cframe_current_frame: NONE,
        frame_back: field(FRAME_SIZE, FRAME_PREVIOUS, 8, "interpreter_frame.previous")?,
        frame_code: field(
            FRAME_SIZE,
            FRAME_EXECUTABLE,
            8,
            "interpreter_frame.executable",
        )?,
        frame_owner: field(FRAME_SIZE, FRAME_OWNER, 1, "interpreter_frame.owner")?,
        owner_cstack: FRAME_OWNED_BY_CSTACK,
        frames_in_data_stack: 1,
        _pad: 0,
    };
    if at(OBJECT_SIZE) != 16 || at(OBJECT_OB_TYPE) != 8 {
        return Err(Implausible("pyobject"));
    }
    let ascii = at(UNICODE_ASCII_SIZE);
    if ascii > at(UNICODE_SIZE) || ascii > 1024 {
        return Err(Implausible("unicode_object.asciiobject_size"));
    }
    let objects = ObjectLayout {
        ob_type: 8,
        code_filename: field(CODE_SIZE, CODE_FILENAME, 8, "code_object.filename")?,
        code_name: field(CODE_SIZE, CODE_NAME, 8, "code_object.name")?,
        code_firstlineno: field(CODE_SIZE, CODE_FIRSTLINENO, 4, "code_object.firstlineno")?,
        str_length: field(
            UNICODE_ASCII_SIZE,
            UNICODE_LENGTH,
            8,
            "unicode_object.length",
        )?,
        str_state: field(UNICODE_ASCII_SIZE, UNICODE_STATE, 4, "unicode_object.state")?,
        str_ascii_size: ascii as u32,
        // Not published: `PyCompactUnicodeObject` adds `Py_ssize_t utf8_length; char *utf8`
        // to the ASCII header (3.12+).
        str_compact_size: ascii as u32 + 16,
    };
    Ok(DebugOffsets {
        version,
        layout,
        objects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::sampling::frame_fields_fit;

    #[test]
    fn cpython_layouts_cover_3_8_to_3_13_only() {
        for minor in 0..20 {
            let supported = (8..=13).contains(&minor);
            assert_eq!(layout(3, minor).is_some(), supported, "3.{minor}");
            assert_eq!(object_layout(3, minor).is_some(), supported, "3.{minor}");
        }
        assert!(layout(2, 7).is_none());
        assert!(layout(4, 0).is_none());
    }

    #[test]
    fn cpython_layouts_are_consistent() {
        for minor in 8..=13 {
            let l = layout(3, minor).unwrap();
            // 3.11–3.12 and only they go through a `_PyCFrame`; 3.12+ and only they have shim
            // frames.
            assert_eq!(l.cframe_current_frame != NONE, (11..=12).contains(&minor));
            assert_eq!(l.frame_owner != NONE, minor >= 12);
            assert_eq!(l.owner_cstack != NONE, minor >= 12);
            assert_eq!(l.frames_in_data_stack == 1, minor >= 11);
            // The kernel reads a frame's link and code object in one small read, as whole
            // aligned words: a layout (3.13's come from the process) with an odd one is refused.
            assert!(frame_fields_fit(&l), "3.{minor}");
            let odd = PyLayout {
                frame_code: l.frame_code + 4,
                ..l
            };
            assert!(!frame_fields_fit(&odd), "3.{minor}");
            for o in [
                l.runtime_interp_head,
                l.interp_tstate_head,
                l.tstate_next,
                l.tstate_thread_id,
                l.tstate_frame,
                l.frame_back,
                l.frame_code,
            ] {
                assert_eq!(o % 8, 0, "3.{minor}: pointers are aligned");
            }
        }
    }

    /// A `_Py_DebugOffsets` as 3.13.0 lays it out, with the values of the pyenv 3.13.0 build.
    pub(crate) fn debug_offsets_3_13_0() -> Vec<u8> {
        let mut b = vec![0u8; DEBUG_OFFSETS_SIZE];
        b[..8].copy_from_slice(DEBUG_COOKIE);
        let mut put = |i: usize, v: u64| b[i..i + 8].copy_from_slice(&v.to_le_bytes());
        put(8, 0x030d00f0);
        put(16, 0);
        for (i, v) in [
            (24, 283320),
            (40, 632),
            (48, 9000),
            (72, 7344),
            (152, 400),
            (168, 8),
            (184, 72),
            (192, 152),
            (224, 80),
            (232, 8),
            (240, 0),
            (264, 70),
            (272, 200),
            (280, 112),
            (288, 120),
            (312, 68),
            (352, 16),
            (360, 8),
            (536, 40),
            (544, 32),
            (552, 16),
            (560, 40),
        ] {
            put(i, v);
        }
        b
    }

    #[test]
    fn cpython_debug_offsets_of_3_13_0_give_its_table() {
        let d = parse_debug_offsets(&debug_offsets_3_13_0(), 0x030d00f0).unwrap();
        assert_eq!(d.layout, layout(3, 13).unwrap());
        assert_eq!(d.objects, object_layout(3, 13).unwrap());
    }

    #[test]
    fn cpython_debug_offsets_are_checked() {
        let good = debug_offsets_3_13_0();
        let v = 0x030d00f0;
        let mut b = good.clone();
        b[0] = b'y';
        assert_eq!(parse_debug_offsets(&b, v), Err(DebugOffsetsError::Cookie));
        assert_eq!(
            parse_debug_offsets(&good[..100], v),
            Err(DebugOffsetsError::Cookie)
        );
        assert!(matches!(
            parse_debug_offsets(&good, 0x030d01f0),
            Err(DebugOffsetsError::Version { .. })
        ));
        let mut b = good.clone();
        b[16] = 1;
        assert_eq!(
            parse_debug_offsets(&b, v),
            Err(DebugOffsetsError::FreeThreaded)
        );
        // A field past its structure's size.
        let mut b = good.clone();
        b[192..200].copy_from_slice(&400u64.to_le_bytes());
        assert!(matches!(
            parse_debug_offsets(&b, v),
            Err(DebugOffsetsError::Implausible(_))
        ));
        // The layout shifted by one field (a field inserted before the thread state).
        let mut b = good.clone();
        b.copy_within(152..DEBUG_OFFSETS_SIZE - 8, 160);
        assert!(matches!(
            parse_debug_offsets(&b, v),
            Err(DebugOffsetsError::Implausible(_))
        ));
    }
}
