//! Just enough of a BTF reader to find where kernel struct members are, so
//! that the kernel programs read `struct file`, `struct inode`... at the
//! offsets of the running kernel (not of the kernel they were built on).
//! Offsets are handed to the programs through a config map.
use std::{collections::HashMap, fs, path::Path};

/// Why BTF could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BtfError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// errno.
        #[source]
        source: std::io::Error,
    },
    /// The data is not BTF.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// A struct or member the programs need does not exist in this kernel.
    #[error("kernel BTF has no {0}")]
    Missing(String),
}

const KIND_INT: u32 = 1;
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

#[derive(Clone, Debug)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Clone, Debug)]
struct Type {
    kind: u32,
    /// size for structs/ints, referenced type for modifiers.
    size_or_type: u32,
    members: Vec<Member>,
}

/// Parsed kernel BTF (types only; enough to resolve member offsets).
#[derive(Debug)]
pub struct Btf {
    types: Vec<Type>,
    structs: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Malformed("truncated"))
}

fn cstr(strings: &[u8], off: u32) -> String {
    let start = off as usize;
    strings
        .get(start..)
        .map(|s| {
            let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        })
        .unwrap_or_default()
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(crate::paths::VMLINUX_BTF))
    }

    /// BTF from a file.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses little-endian BTF.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err(BtfError::Malformed("bad magic"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_bytes = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?;
        // Type 0 is void.
        let mut types = vec![Type {
            kind: 0,
            size_or_type: 0,
            members: Vec::new(),
        }];
        let mut structs = HashMap::new();
        let mut at = 0;
        while at < types_bytes.len() {
            let name_off = u32_at(types_bytes, at)?;
            let info = u32_at(types_bytes, at + 4)?;
            let size_or_type = u32_at(types_bytes, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let raw = u32_at(types_bytes, m + 8)?;
                        members.push(Member {
                            name: cstr(strings, u32_at(types_bytes, m)?),
                            type_id: u32_at(types_bytes, m + 4)?,
                            bit_offset: if kind_flag { raw & 0x00ff_ffff } else { raw },
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                _ => 0,
            };
            at += extra;
            let name = cstr(strings, name_off);
            if kind == KIND_STRUCT && !name.is_empty() {
                let id = u32::try_from(types.len())
                    .map_err(|_| BtfError::Malformed("too many types"))?;
                structs.entry(name).or_insert(id);
            }
            types.push(Type {
                kind,
                size_or_type,
                members,
            });
        }
        Ok(Self { types, structs })
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Finds `name` among `t`'s members, descending into anonymous structs
    /// and unions; returns its bit offset and type id.
    fn find_member(&self, t: &Type, name: &str) -> Option<(u32, u32)> {
        for m in &t.members {
            if m.name == name {
                return Some((m.bit_offset, m.type_id));
            }
            if m.name.is_empty() {
                let inner = self.resolve(m.type_id)?;
                if matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                    && let Some((off, ty)) = self.find_member(inner, name)
                {
                    return Some((m.bit_offset + off, ty));
                }
            }
        }
        None
    }

    /// The byte offset of `path` (`["f_path", "mnt"]`) inside `struct
    /// outer`, following embedded structs.
    pub fn offset_of(&self, outer: &str, path: &[&str]) -> Result<u32, BtfError> {
        let missing = || BtfError::Missing(format!("struct {outer}.{}", path.join(".")));
        let id = *self.structs.get(outer).ok_or_else(missing)?;
        let mut t = self.resolve(id).ok_or_else(missing)?;
        let mut bits = 0;
        for (i, name) in path.iter().enumerate() {
            let (off, ty) = self.find_member(t, name).ok_or_else(missing)?;
            bits += off;
            if i + 1 < path.len() {
                t = self.resolve(ty).ok_or_else(missing)?;
            }
        }
        if bits % 8 != 0 {
            return Err(missing());
        }
        Ok(bits / 8)
    }

    /// The size of `struct name`.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs
            .get(name)
            .ok_or_else(|| BtfError::Missing(format!("struct {name}")))?;
        Ok(self.types[id as usize].size_or_type)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a BTF blob: `struct path { void *mnt; void *dentry; }` and
    /// `struct file { u32 f_mode; union { u32 a; struct { u32 b; u32 c; }; };
    /// struct path f_path; }` with a typedef in between.
    pub(crate) fn sample() -> Vec<u8> {
        let mut strings = b"\0path\0mnt\0dentry\0file\0f_mode\0a\0b\0c\0f_path\0path_t\0".to_vec();
        let s = |name: &str, strings: &[u8]| -> u32 {
            let needle = format!("\0{name}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .map(|p| u32::try_from(p + 1).unwrap())
                .unwrap()
        };
        let mut types = Vec::new();
        let ty =
            |types: &mut Vec<u8>, name: u32, kind: u32, vlen: u32, size: u32, kind_flag: bool| {
                types.extend_from_slice(&name.to_le_bytes());
                types.extend_from_slice(
                    &((kind << 24) | vlen | (u32::from(kind_flag) << 31)).to_le_bytes(),
                );
                types.extend_from_slice(&size.to_le_bytes());
            };
        let member = |types: &mut Vec<u8>, name: u32, t: u32, off: u32| {
            types.extend_from_slice(&name.to_le_bytes());
            types.extend_from_slice(&t.to_le_bytes());
            types.extend_from_slice(&off.to_le_bytes());
        };
        // 1: int u32
        ty(&mut types, 0, KIND_INT, 0, 4, false);
        types.extend_from_slice(&32u32.to_le_bytes());
        // 2: ptr to void
        ty(&mut types, 0, 2, 0, 0, false);
        // 3: struct path
        ty(&mut types, s("path", &strings), KIND_STRUCT, 2, 16, false);
        member(&mut types, s("mnt", &strings), 2, 0);
        member(&mut types, s("dentry", &strings), 2, 64);
        // 4: typedef path_t -> 3
        ty(&mut types, s("path_t", &strings), KIND_TYPEDEF, 0, 3, false);
        // 5: anonymous struct { b; c }
        ty(&mut types, 0, KIND_STRUCT, 2, 8, false);
        member(&mut types, s("b", &strings), 1, 0);
        member(&mut types, s("c", &strings), 1, 32);
        // 6: anonymous union { a; struct 5 }
        ty(&mut types, 0, KIND_UNION, 2, 8, false);
        member(&mut types, s("a", &strings), 1, 0);
        member(&mut types, 0, 5, 0);
        // 7: struct file (kind_flag: bitfield-style offsets)
        ty(&mut types, s("file", &strings), KIND_STRUCT, 3, 32, true);
        member(&mut types, s("f_mode", &strings), 1, 0);
        member(&mut types, 0, 6, 64);
        member(&mut types, s("f_path", &strings), 4, 128);
        strings.push(0);
        let mut out = Vec::new();
        out.extend_from_slice(&[0x9f, 0xeb, 1, 0]);
        out.extend_from_slice(&24u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&u32::try_from(types.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&u32::try_from(types.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&u32::try_from(strings.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn resolves_nested_and_anonymous_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.offset_of("file", &["f_mode"]).unwrap(), 0);
        assert_eq!(btf.offset_of("file", &["a"]).unwrap(), 8);
        assert_eq!(btf.offset_of("file", &["c"]).unwrap(), 12);
        assert_eq!(btf.offset_of("file", &["f_path"]).unwrap(), 16);
        assert_eq!(btf.offset_of("file", &["f_path", "dentry"]).unwrap(), 24);
        assert_eq!(btf.struct_size("path").unwrap(), 16);
        assert!(matches!(
            btf.offset_of("file", &["nope"]),
            Err(BtfError::Missing(_))
        ));
        assert!(matches!(
            btf.offset_of("nope", &["a"]),
            Err(BtfError::Missing(_))
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all").is_err());
        let mut truncated = sample();
        truncated.truncate(40);
        assert!(Btf::parse(&truncated).is_err());
    }
}
