//! The kernel functions (kfuncs) the probes call, bound before load: the
//! probe object's placeholder calls rewritten for the running kernel (see
//! `guardrail_common::kfunc`).

use guardrail_common::kfunc::RDONLY_CAST_PLACEHOLDER;

use super::btf::member_offset;
use super::btf_format::{Btf, Kind};

/// How the probes type an fd's file (`FILE_CAST_BTF_ID`,
/// `FILE_CAST_OFFSET`): the slot cast as `struct kiocb`, whose `ki_filp`
/// is a `struct file *`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileCast {
    /// `bpf_rdonly_cast`'s own BTF id: what the call names.
    pub kfunc: u32,
    /// `struct kiocb`'s BTF id and the offset of its `ki_filp`.
    pub holder: u32,
    pub offset: u32,
}

/// The cast, where this kernel has `bpf_rdonly_cast` (6.2+) and may call
/// it: the kernel refuses every kfunc call, dead code's too, from a
/// program it does not compile to machine code (`bpf_jit_enable` 0).
pub fn file_cast(btf: &Btf) -> Option<FileCast> {
    if !jit_enabled() {
        return None;
    }
    let (kfunc, _) = btf.find_with_id(Kind::Func, &rdonly_cast_function())?;
    let (holder, _) = btf.find_with_id(Kind::Struct, "kiocb")?;
    let offset = member_offset(btf, "kiocb", "ki_filp").ok()?;
    Some(FileCast {
        kfunc,
        holder,
        offset,
    })
}

/// The kernel function the probes' casts call: `bpf_rdonly_cast`. A debug
/// build takes another from `GUARDRAIL_TEST_RDONLY_CAST`, for the test
/// that a kernel refusing the call still gets the read watch (a function
/// that is not a kfunc is refused by every verifier).
fn rdonly_cast_function() -> String {
    let test = cfg!(debug_assertions)
        .then(|| std::env::var("GUARDRAIL_TEST_RDONLY_CAST").ok())
        .flatten();
    test.unwrap_or_else(|| "bpf_rdonly_cast".to_string())
}

/// Whether BPF programs are compiled to machine code (on with
/// `CONFIG_BPF_JIT_ALWAYS_ON`, and by default on the kernels guardrail
/// supports; the file is absent without a JIT).
fn jit_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable").is_ok_and(|v| v.trim() != "0")
}

/// What a placeholder call becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// A call of the kfunc with this BTF id in the kernel's own BTF.
    Kfunc(u32),
    /// `r0 = r1`: the kernel lacks it, and the calls are dead code.
    Absent,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("the probe object is not a 64-bit little-endian ELF file")]
    NotElf,
    #[error("the probe object's section headers run past its end")]
    Truncated,
}

const BPF_CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
const BPF_MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
const SHF_EXECINSTR: u64 = 0x4;

/// A copy of an object, aligned as the ELF reader needs it.
pub struct Object(Vec<u64>, usize);

impl Object {
    fn copy(bytes: &[u8]) -> Self {
        let mut object = Object(vec![0u64; bytes.len().div_ceil(8)], bytes.len());
        object.bytes_mut().copy_from_slice(bytes);
        object
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the words' memory, as bytes, no further than the copy.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.1) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.1) }
    }
}

/// `object` with every `bpf_rdonly_cast` placeholder call in its code
/// sections bound to `binding`; how many calls were rewritten.
pub fn bind_rdonly_cast(object: &[u8], binding: Binding) -> Result<(Object, usize), PatchError> {
    let mut out = Object::copy(object);
    let mut bound = 0;
    for code in code_sections(object)? {
        for insn in out.bytes_mut()[code].chunks_exact_mut(8) {
            let imm = u32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
            // A helper call (src_reg 0) of the placeholder's id.
            if insn[0] != BPF_CALL || insn[1] != 0 || imm != RDONLY_CAST_PLACEHOLDER {
                continue;
            }
            let replacement: [u8; 8] = match binding {
                Binding::Kfunc(id) => {
                    let id = id.to_le_bytes();
                    [
                        BPF_CALL,
                        BPF_PSEUDO_KFUNC_CALL << 4,
                        0,
                        0,
                        id[0],
                        id[1],
                        id[2],
                        id[3],
                    ]
                }
                // dst r0, src r1.
                Binding::Absent => [BPF_MOV64_X, 1 << 4, 0, 0, 0, 0, 0, 0],
            };
            insn.copy_from_slice(&replacement);
            bound += 1;
        }
    }
    Ok((out, bound))
}

/// The byte ranges of an ELF64 (little-endian) file's executable sections.
fn code_sections(elf: &[u8]) -> Result<Vec<std::ops::Range<usize>>, PatchError> {
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Err(PatchError::NotElf);
    }
    let shoff = u64_at(0x28).ok_or(PatchError::Truncated)? as usize;
    let entsize = u16_at(0x3a).ok_or(PatchError::Truncated)? as usize;
    let count = u16_at(0x3c).ok_or(PatchError::Truncated)? as usize;
    let mut code = Vec::new();
    for i in 0..count {
        let header = shoff + i * entsize;
        let flags = u64_at(header + 8).ok_or(PatchError::Truncated)?;
        if flags & SHF_EXECINSTR == 0 {
            continue;
        }
        let offset = u64_at(header + 24).ok_or(PatchError::Truncated)? as usize;
        let size = u64_at(header + 32).ok_or(PatchError::Truncated)? as usize;
        let end = offset.checked_add(size).ok_or(PatchError::Truncated)?;
        if end > elf.len() {
            return Err(PatchError::Truncated);
        }
        code.push(offset..end);
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe object has the placeholder calls, and each binding
    /// rewrites them all: none is left for the kernel to refuse.
    #[test]
    fn binds_every_placeholder_call_of_the_probe_object() {
        let object = super::super::probes::OBJECT;
        if object.is_empty() {
            return; // a stub build without probes
        }
        for binding in [Binding::Kfunc(12345), Binding::Absent] {
            let (bound, count) = bind_rdonly_cast(object, binding).unwrap();
            assert!(count > 0, "no placeholder call in the probe object");
            assert_eq!(bind_rdonly_cast(bound.bytes(), binding).unwrap().1, 0);
            assert_eq!(bound.bytes().len(), object.len());
        }
    }

    #[test]
    fn rewrites_only_code_sections() {
        let placeholder = {
            let mut insn = [BPF_CALL, 0, 0, 0, 0, 0, 0, 0];
            insn[4..].copy_from_slice(&RDONLY_CAST_PLACEHOLDER.to_le_bytes());
            insn
        };
        // An ELF header, a code section and a data section holding the
        // same instruction, then the two section headers.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf.extend_from_slice(&placeholder); // 64..72: code
        elf.extend_from_slice(&placeholder); // 72..80: data
        let shoff = elf.len();
        for (flags, offset) in [(SHF_EXECINSTR | 0x2, 64u64), (0x3, 72)] {
            let mut header = [0u8; 64];
            header[8..16].copy_from_slice(&flags.to_le_bytes());
            header[24..32].copy_from_slice(&offset.to_le_bytes());
            header[32..40].copy_from_slice(&8u64.to_le_bytes());
            elf.extend_from_slice(&header);
        }
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&2u16.to_le_bytes());

        let (out, count) = bind_rdonly_cast(&elf, Binding::Kfunc(0x0102_0304)).unwrap();
        assert_eq!(count, 1);
        assert_eq!(&out.bytes()[64..72], &[BPF_CALL, 0x20, 0, 0, 4, 3, 2, 1]);
        assert_eq!(&out.bytes()[72..80], &placeholder, "data is not code");
        let (out, _) = bind_rdonly_cast(&elf, Binding::Absent).unwrap();
        assert_eq!(&out.bytes()[64..72], &[BPF_MOV64_X, 0x10, 0, 0, 0, 0, 0, 0]);

        let error = |bytes: &[u8]| bind_rdonly_cast(bytes, Binding::Absent).err();
        assert_eq!(error(b"not an elf"), Some(PatchError::NotElf));
        assert_eq!(error(&elf[..shoff + 10]), Some(PatchError::Truncated));
    }

    /// On the running kernel: the cast is found exactly where the kernel
    /// has the kfunc.
    #[test]
    fn finds_the_cast_where_the_kernel_has_it() {
        let Some(btf) = super::super::btf::running_kernel() else {
            return;
        };
        let has = btf.find(Kind::Func, "bpf_rdonly_cast").is_some();
        let cast = file_cast(&btf);
        assert_eq!(cast.is_some(), has && jit_enabled());
        if let Some(cast) = cast {
            assert_eq!(btf.type_by_id(cast.holder).unwrap().kind, Kind::Struct);
            assert_eq!(btf.type_by_id(cast.kfunc).unwrap().kind, Kind::Func);
        }
    }
}
