//! Just enough of a BTF reader to find the byte offset of a struct member in the running
//! kernel's `/sys/kernel/btf/vmlinux`.
//!
//! Rust eBPF has no CO-RE relocations, so fields that no tracepoint carries (`task->exit_code`,
//! `mm->env_start`, …) are reached at offsets computed here at load time and passed to the
//! programs in their `CONFIG` global. `aya-obj` parses BTF too, but keeps type lookup by id
//! crate-private; this is ~150 lines of the format (kernel `Documentation/bpf/btf.rst`).
use std::{collections::HashMap, path::Path};

use thiserror::Error;

/// BTF errors, with the member path that was asked for.
#[derive(Debug, Error)]
pub enum BtfError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The data is not BTF this reader understands.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// No struct with that name.
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    /// No member with that name (looked into anonymous structs/unions too).
    #[error("kernel BTF: struct {0} has no member {1}")]
    NoMember(String, String),
}

const KIND_INT: u32 = 1;
#[cfg(test)]
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name: String,
    /// For modifiers/typedefs: the referenced type.
    ref_type: u32,
    members: Vec<Member>,
}

/// Parsed kernel BTF: types by id, and struct ids by name.
pub struct Btf {
    types: Vec<Type>,
    structs: HashMap<String, u32>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    /// Reads BTF from a file.
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses raw little-endian BTF.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_b = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of range"))?;
        let strs = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of range"))?;
        let name = |off: u32| -> String {
            let s = strs.get(off as usize..).unwrap_or(&[]);
            let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        };
        // Type id 0 is `void`.
        let mut types = vec![Type {
            kind: 0,
            name: String::new(),
            ref_type: 0,
            members: Vec::new(),
        }];
        let mut structs = HashMap::new();
        let mut off = 0;
        while off < types_b.len() {
            let name_off = u32_at(types_b, off)?;
            let info = u32_at(types_b, off + 4)?;
            let size_or_type = u32_at(types_b, off + 8)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            off += 12;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => off += 4,
                KIND_ARRAY => off += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = off + i * 12;
                        let raw = u32_at(types_b, m + 8)?;
                        members.push(Member {
                            name: name(u32_at(types_b, m)?),
                            type_id: u32_at(types_b, m + 4)?,
                            bit_offset: if kind_flag { raw & 0xff_ffff } else { raw },
                        });
                    }
                    off += vlen * 12;
                }
                KIND_ENUM | KIND_FUNC_PROTO => off += vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => off += vlen * 12,
                _ => {}
            }
            let t = Type {
                kind,
                name: name(name_off),
                ref_type: size_or_type,
                members,
            };
            if kind == KIND_STRUCT && !t.name.is_empty() {
                structs.entry(t.name.clone()).or_insert(types.len() as u32);
            }
            types.push(t);
        }
        Ok(Btf { types, structs })
    }

    /// Byte offset of `member` in `struct name`, descending into anonymous structs and unions
    /// (e.g. `mm_struct`'s fields live in an anonymous struct). `member` may be a dotted path
    /// through named struct members (`ns.inum`).
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let mut id = *self
            .structs
            .get(name)
            .ok_or_else(|| BtfError::NoStruct(name.to_owned()))?;
        let mut total_bits = 0u32;
        for part in member.split('.') {
            let (bits, member_type) = self
                .find_member(id, part)
                .ok_or_else(|| BtfError::NoMember(name.to_owned(), member.to_owned()))?;
            total_bits += bits;
            id = self.resolve(member_type);
        }
        if !total_bits.is_multiple_of(8) {
            return Err(BtfError::Malformed("member is a bitfield"));
        }
        Ok(total_bits / 8)
    }

    fn resolve(&self, mut id: u32) -> u32 {
        while let Some(t) = self.types.get(id as usize) {
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.ref_type
                }
                _ => break,
            }
        }
        id
    }

    fn find_member(&self, id: u32, name: &str) -> Option<(u32, u32)> {
        let t = self.types.get(self.resolve(id) as usize)?;
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return None;
        }
        for m in &t.members {
            if m.name == name {
                return Some((m.bit_offset, m.type_id));
            }
        }
        for m in t.members.iter().filter(|m| m.name.is_empty()) {
            if let Some((bits, ty)) = self.find_member(m.type_id, name) {
                return Some((m.bit_offset + bits, ty));
            }
        }
        None
    }

    /// Whether a type id is a pointer (used by tests to check the reader on real BTF).
    #[cfg(test)]
    fn is_ptr(&self, id: u32) -> bool {
        self.types.get(self.resolve(id) as usize).map(|t| t.kind) == Some(KIND_PTR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_task_and_mm_fields_in_running_kernel() {
        let btf = Btf::from_sys_fs().expect("this machine's kernel exposes BTF");
        let exit_code = btf.member_offset("task_struct", "exit_code").unwrap();
        let tgid = btf.member_offset("task_struct", "tgid").unwrap();
        assert!(exit_code > 0 && tgid > 0 && exit_code != tgid);
        let env_start = btf.member_offset("mm_struct", "env_start").unwrap();
        let env_end = btf.member_offset("mm_struct", "env_end").unwrap();
        assert_eq!(env_end, env_start + 8, "adjacent unsigned longs");
        btf.member_offset("mnt_namespace", "ns.inum").unwrap();
        // The CPU-time fields the exit program sums; u64 pairs side by side.
        let [utime, stime, ..] = crate::loader::cpu_offsets(&btf).unwrap();
        assert_eq!(stime, utime + 8);
        btf.member_offset("signal_struct", "thread_head").unwrap();
        btf.member_offset("task_struct", "thread_node").unwrap();
        let (_, ty) = btf.find_member(btf.structs["task_struct"], "mm").unwrap();
        assert!(btf.is_ptr(ty));
        assert!(matches!(
            btf.member_offset("task_struct", "no_such_field"),
            Err(BtfError::NoMember(..))
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            Btf::parse(b"not btf at all, no"),
            Err(BtfError::Malformed(_))
        ));
    }
}
