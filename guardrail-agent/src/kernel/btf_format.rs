//! A reader of the BTF format (the kernel's `/sys/kernel/btf/vmlinux`)
//! that keeps the file's bytes as they are, with one index of where each
//! type starts and one of the names the agent asks for.
//!
//! A general BTF library turns every one of the kernel's ~100,000 types
//! into objects of its own: 33 of the agent's 41 MiB peak heap at
//! start-up, for the few dozen structures, functions and tracepoint
//! prototypes the agent ever asks about. Here a type is read from its
//! bytes when it is asked for (format: the kernel's
//! Documentation/bpf/btf.rst).

use std::hash::{BuildHasher, Hasher};

/// Kinds of type (`BTF_KIND_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Int = 1,
    Ptr = 2,
    Array = 3,
    Struct = 4,
    Union = 5,
    Enum = 6,
    Fwd = 7,
    Typedef = 8,
    Volatile = 9,
    Const = 10,
    Restrict = 11,
    Func = 12,
    FuncProto = 13,
    Var = 14,
    Datasec = 15,
    Float = 16,
    DeclTag = 17,
    TypeTag = 18,
    Enum64 = 19,
}

impl Kind {
    fn of(raw: u32) -> Option<Kind> {
        use Kind::*;
        Some(match raw {
            1 => Int,
            2 => Ptr,
            3 => Array,
            4 => Struct,
            5 => Union,
            6 => Enum,
            7 => Fwd,
            8 => Typedef,
            9 => Volatile,
            10 => Const,
            11 => Restrict,
            12 => Func,
            13 => FuncProto,
            14 => Var,
            15 => Datasec,
            16 => Float,
            17 => DeclTag,
            18 => TypeTag,
            19 => Enum64,
            _ => return None,
        })
    }

    /// Bytes that follow a type's 12-byte header, for `vlen` entries.
    fn trailer(self, vlen: usize) -> usize {
        use Kind::*;
        match self {
            Int | Var | DeclTag => 4,
            Array => 12,
            Struct | Union | Datasec | Enum64 => 12 * vlen,
            Enum | FuncProto => 8 * vlen,
            Ptr | Fwd | Typedef | Volatile | Const | Restrict | Func | Float | TypeTag => 0,
        }
    }

    /// Kinds looked up by name (the others are never asked for).
    fn indexed(self) -> bool {
        matches!(
            self,
            Kind::Struct | Kind::Union | Kind::Typedef | Kind::Func | Kind::Enum
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not BTF (bad magic {0:#06x})")]
    Magic(u16),
    #[error("truncated BTF: {0}")]
    Truncated(&'static str),
    #[error("unknown BTF kind {kind} at type {id}")]
    UnknownKind { kind: u32, id: u32 },
}

/// One type, as read from its header.
#[derive(Clone, Copy, Debug)]
pub struct Type {
    pub kind: Kind,
    name_off: u32,
    vlen: usize,
    kind_flag: bool,
    /// The referenced type (pointers, modifiers, typedefs, functions) or
    /// the size (structs, unions, ints).
    pub size_or_type: u32,
    /// Where the trailer starts, in the file.
    trailer: usize,
}

impl Type {
    /// Entries that follow: members, parameters, enumerators.
    pub fn vlen(&self) -> usize {
        self.vlen
    }
}

/// A struct's or union's member.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    pub name_off: u32,
    pub type_id: u32,
    pub bit_offset: u32,
}

/// A BTF file, read.
pub struct Btf {
    data: Vec<u8>,
    strings: std::ops::Range<usize>,
    /// Where each type's header starts in `data`, by id (id 0 is void).
    starts: Vec<u32>,
    /// (hash of kind and name, id) of the indexed kinds, sorted: names
    /// are compared on look-up, so a collision costs a comparison, not a
    /// wrong answer.
    by_name: Vec<(u64, u32)>,
    hasher: std::collections::hash_map::RandomState,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, FormatError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(FormatError::Truncated("a field runs past the end"))
}

impl Btf {
    /// Read `data` (a BTF file of this machine's byte order).
    pub fn parse(data: Vec<u8>) -> Result<Btf, FormatError> {
        let magic = data
            .get(..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(FormatError::Truncated("no header"))?;
        if magic != 0xeb9f {
            return Err(FormatError::Magic(magic));
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let type_off = u32_at(&data, 8)? as usize;
        let type_len = u32_at(&data, 12)? as usize;
        let str_off = u32_at(&data, 16)? as usize;
        let str_len = u32_at(&data, 20)? as usize;
        let types = hdr_len + type_off..hdr_len + type_off + type_len;
        let strings = hdr_len + str_off..hdr_len + str_off + str_len;
        if types.end > data.len() || strings.end > data.len() {
            return Err(FormatError::Truncated("sections run past the end"));
        }
        let mut btf = Btf {
            data,
            strings,
            starts: vec![0],
            by_name: Vec::new(),
            hasher: Default::default(),
        };
        let mut at = types.start;
        while at < types.end {
            let id = btf.starts.len() as u32;
            btf.starts.push(at as u32);
            let t = btf.header(at, id)?;
            if t.kind.indexed() && t.name_off != 0 {
                let key = btf.key(t.kind, btf.name_bytes(t.name_off));
                btf.by_name.push((key, id));
            }
            at = t.trailer + t.kind.trailer(t.vlen);
        }
        if at != types.end {
            return Err(FormatError::Truncated(
                "the last type runs past its section",
            ));
        }
        btf.by_name.sort_unstable();
        Ok(btf)
    }

    fn header(&self, at: usize, id: u32) -> Result<Type, FormatError> {
        let info = u32_at(&self.data, at + 4)?;
        let raw_kind = (info >> 24) & 0x1f;
        let kind = Kind::of(raw_kind).ok_or(FormatError::UnknownKind { kind: raw_kind, id })?;
        Ok(Type {
            kind,
            name_off: u32_at(&self.data, at)?,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 != 0,
            size_or_type: u32_at(&self.data, at + 8)?,
            trailer: at + 12,
        })
    }

    fn key(&self, kind: Kind, name: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u8(kind as u8);
        h.write(name);
        h.finish()
    }

    fn name_bytes(&self, off: u32) -> &[u8] {
        let start = self.strings.start + off as usize;
        let rest = self.data.get(start..self.strings.end).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// A name in the string section ("" for an anonymous type or member).
    pub fn name(&self, off: u32) -> &str {
        std::str::from_utf8(self.name_bytes(off)).unwrap_or("")
    }

    /// The type with this id (None for void and ids out of range).
    pub fn type_by_id(&self, id: u32) -> Option<Type> {
        let at = *self.starts.get(id as usize).filter(|_| id != 0)? as usize;
        self.header(at, id).ok()
    }

    /// The first type of `kind` named `name`.
    pub fn find(&self, kind: Kind, name: &str) -> Option<Type> {
        self.find_with_id(kind, name).map(|(_, t)| t)
    }

    /// The same with its id (what a BPF program names a kernel type or
    /// function by).
    pub fn find_with_id(&self, kind: Kind, name: &str) -> Option<(u32, Type)> {
        let key = self.key(kind, name.as_bytes());
        let first = self.by_name.partition_point(|&(k, _)| k < key);
        let same = self.by_name[first..].iter().take_while(|&&(k, _)| k == key);
        same.into_iter().find_map(|&(_, id)| {
            let t = self.type_by_id(id)?;
            (t.kind == kind && self.name_bytes(t.name_off) == name.as_bytes()).then_some((id, t))
        })
    }

    /// The type `id` refers to through typedefs and qualifiers.
    pub fn skip_modifiers(&self, mut id: u32) -> Option<Type> {
        // A chain longer than this is a loop in a corrupt file.
        for _ in 0..32 {
            let t = self.type_by_id(id)?;
            match t.kind {
                Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                    id = t.size_or_type
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// An enum's enumerators' names, in order (none for other kinds).
    pub fn enumerator_names(&self, t: &Type) -> impl Iterator<Item = &str> + '_ {
        // `struct btf_enum { name_off, val }`.
        let (start, n) = match t.kind {
            Kind::Enum => (t.trailer, t.vlen),
            _ => (t.trailer, 0),
        };
        (0..n).filter_map(move |i| Some(self.name(u32_at(&self.data, start + 8 * i).ok()?)))
    }

    /// A struct's or union's members, in order.
    pub fn members(&self, t: &Type) -> impl Iterator<Item = Member> + '_ {
        let (start, n, bitfields) = match t.kind {
            Kind::Struct | Kind::Union => (t.trailer, t.vlen, t.kind_flag),
            _ => (t.trailer, 0, false),
        };
        (0..n).filter_map(move |i| {
            let at = start + 12 * i;
            let offset = u32_at(&self.data, at + 8).ok()?;
            Some(Member {
                name_off: u32_at(&self.data, at).ok()?,
                type_id: u32_at(&self.data, at + 4).ok()?,
                // With the kind flag, the top 8 bits are a bitfield's size.
                bit_offset: if bitfields {
                    offset & 0xff_ffff
                } else {
                    offset
                },
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny file: int, struct s { int a; union { int b; }; } (the union
    /// anonymous, at byte 4), a pointer to s, typedef t = s *.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0t\0";
        let name = |s: &str| {
            let pos = strings
                .windows(s.len() + 2)
                .position(|w| w[0] == 0 && &w[1..=s.len()] == s.as_bytes() && w[s.len() + 1] == 0)
                .unwrap();
            (pos + 1) as u32
        };
        let mut types = Vec::new();
        let mut put = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
        put(&[name("int"), info(1, 0), 4, 32]); // 1: int
        put(&[name("s"), info(4, 2), 8]); // 2: struct s
        put(&[name("a"), 1, 0]);
        put(&[0, 3, 32]);
        put(&[0, info(5, 1), 4]); // 3: union
        put(&[name("b"), 1, 0]);
        put(&[0, info(2, 0), 2]); // 4: s *
        put(&[name("t"), info(8, 0), 4]); // 5: typedef t
        let mut file = Vec::new();
        file.extend_from_slice(&0xeb9fu16.to_le_bytes());
        file.extend_from_slice(&[1, 0]);
        for w in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            file.extend_from_slice(&w.to_le_bytes());
        }
        file.extend_from_slice(&types);
        file.extend_from_slice(strings);
        file
    }

    #[test]
    fn types_members_and_names_are_read_from_the_bytes() {
        let btf = Btf::parse(sample()).unwrap();
        let s = btf.find(Kind::Struct, "s").unwrap();
        assert_eq!(s.vlen(), 2);
        let members: Vec<(String, u32)> = btf
            .members(&s)
            .map(|m| (btf.name(m.name_off).to_string(), m.bit_offset))
            .collect();
        assert_eq!(members, [("a".to_string(), 0), (String::new(), 32)]);
        let t = btf.find(Kind::Typedef, "t").unwrap();
        let ptr = btf.skip_modifiers(5).unwrap();
        assert_eq!(ptr.kind, Kind::Ptr);
        assert_eq!(t.size_or_type, 4);
        assert!(btf.find(Kind::Struct, "t").is_none());
        assert!(btf.find(Kind::Struct, "nope").is_none());
    }

    #[test]
    fn damaged_files_are_refused() {
        let good = sample();
        assert!(matches!(
            Btf::parse(good[..30].to_vec()),
            Err(FormatError::Truncated(_))
        ));
        let mut bad = good.clone();
        bad[0] = 0;
        assert!(matches!(Btf::parse(bad), Err(FormatError::Magic(_))));
        let mut bad = good;
        // The first type's kind byte.
        bad[24 + 7] = 0x1f;
        assert!(matches!(
            Btf::parse(bad),
            Err(FormatError::UnknownKind { .. })
        ));
    }
}
