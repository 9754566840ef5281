//! Parsing ring-buffer bytes into records. Pure: no I/O, safe on any input.

use guardrail_common::{EventHeader, ABI_VERSION, HEADER_SIZE};

/// A record as the probes wrote it: header and its two strings.
#[derive(Clone, Debug)]
pub struct RawRecord {
    pub header: EventHeader,
    /// First path (exec: the executable as passed).
    pub str0: Vec<u8>,
    /// Second path, or for exec the NUL-separated argv.
    pub str1: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than the {HEADER_SIZE}-byte header")]
    Short(usize),
    #[error("record says {declared} data bytes but carries {actual}")]
    Length { declared: usize, actual: usize },
    #[error("string lengths {0} + {1} do not add up to the record's data length {2}")]
    Strings(u32, u32, u32),
}

/// The probes' record layout version this agent reads.
pub const fn abi_version() -> u32 {
    ABI_VERSION
}

pub fn decode(bytes: &[u8]) -> Result<RawRecord, DecodeError> {
    if bytes.len() < HEADER_SIZE {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: EventHeader is repr(C) plain data valid for every bit pattern,
    // and the slice is at least its size; read_unaligned copes with the
    // ring buffer's 8-byte alignment either way.
    let header: EventHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let data = &bytes[HEADER_SIZE..];
    let declared = header.data_len as usize;
    if declared > data.len() {
        return Err(DecodeError::Length {
            declared,
            actual: data.len(),
        });
    }
    let [l0, l1] = header.str_len;
    if (l0 as u64 + l1 as u64) != header.data_len as u64 {
        return Err(DecodeError::Strings(l0, l1, header.data_len));
    }
    let (s0, rest) = data[..declared].split_at(l0 as usize);
    Ok(RawRecord {
        header,
        str0: s0.to_vec(),
        str1: rest.to_vec(),
    })
}

/// Encode a header and strings as the probes do; for tests and benchmarks.
pub fn encode(header: &EventHeader, str0: &[u8], str1: &[u8]) -> Vec<u8> {
    let mut h = *header;
    h.str_len = [str0.len() as u32, str1.len() as u32];
    h.data_len = (str0.len() + str1.len()) as u32;
    // SAFETY: plain data, viewed as bytes for its exact size.
    let head =
        unsafe { std::slice::from_raw_parts((&h as *const EventHeader).cast::<u8>(), HEADER_SIZE) };
    let mut out = Vec::with_capacity(HEADER_SIZE + h.data_len as usize);
    out.extend_from_slice(head);
    out.extend_from_slice(str0);
    out.extend_from_slice(str1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_strings() {
        let h = EventHeader {
            syscall: 82,
            pid: 7,
            ..Default::default()
        };
        let bytes = encode(&h, b"/a/old", b"/a/new");
        let r = decode(&bytes).unwrap();
        assert_eq!(r.header.pid, 7);
        assert_eq!(r.str0, b"/a/old");
        assert_eq!(r.str1, b"/a/new");
    }

    #[test]
    fn rejects_short_and_inconsistent_records() {
        assert!(matches!(decode(&[0; 10]), Err(DecodeError::Short(10))));
        let mut bytes = encode(&EventHeader::default(), b"abc", b"");
        bytes.truncate(bytes.len() - 1);
        assert!(matches!(decode(&bytes), Err(DecodeError::Length { .. })));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }
    }
}
