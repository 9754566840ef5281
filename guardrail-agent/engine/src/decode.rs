//! Parsing ring-buffer bytes into records. Pure: no I/O, safe on any input.

use guardrail_common::{flags, EventHeader, HEADER_SIZE};

/// A record as the probes wrote it: header and its strings (their meaning
/// is documented on [`EventHeader::str_len`]).
#[derive(Clone, Debug, Default)]
pub struct RawRecord {
    pub header: EventHeader,
    /// First path (exec: the program as the kernel named it).
    pub str0: Vec<u8>,
    /// Second path, or for exec the NUL-separated argv.
    pub str1: Vec<u8>,
    /// Directory a relative first path is relative to (exec: the cwd).
    pub dir0: Vec<u8>,
    /// Directory a relative second path is relative to.
    pub dir1: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than the {HEADER_SIZE}-byte header")]
    Short(usize),
    #[error("record says {declared} data bytes but carries {actual}")]
    Length { declared: usize, actual: usize },
    #[error("string lengths {0:?} do not add up to the record's data length {1}")]
    Strings([u32; 4], u32),
}

/// Just the header of a record (None when too short).
pub fn header(bytes: &[u8]) -> Option<EventHeader> {
    if bytes.len() < HEADER_SIZE {
        return None;
    }
    // SAFETY: EventHeader is repr(C) plain data valid for every bit pattern,
    // and the slice is at least its size; read_unaligned copes with the
    // ring buffer's 8-byte alignment either way.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

pub fn decode(bytes: &[u8]) -> Result<RawRecord, DecodeError> {
    let mut rec = RawRecord::default();
    decode_into(bytes, &mut rec)?;
    Ok(rec)
}

/// [`decode`] into `rec`, reusing its strings' memory: the live pipeline
/// decodes every record into the same one, with no allocation per
/// record. On error `rec` holds nothing meaningful.
pub fn decode_into(bytes: &[u8], rec: &mut RawRecord) -> Result<(), DecodeError> {
    let Some(header) = header(bytes) else {
        return Err(DecodeError::Short(bytes.len()));
    };
    let data = &bytes[HEADER_SIZE..];
    let declared = header.data_len as usize;
    if declared > data.len() {
        return Err(DecodeError::Length {
            declared,
            actual: data.len(),
        });
    }
    let lens = header.str_len;
    if lens.iter().map(|&l| l as u64).sum::<u64>() != header.data_len as u64 {
        return Err(DecodeError::Strings(lens, header.data_len));
    }
    let mut rest = &data[..declared];
    rec.header = header;
    for (s, len) in [&mut rec.str0, &mut rec.str1, &mut rec.dir0, &mut rec.dir1]
        .into_iter()
        .zip(lens)
    {
        let (taken, r) = rest.split_at(len as usize);
        rest = r;
        s.clear();
        s.extend_from_slice(taken);
    }
    // A path the kernel could not walk to the root is only a suffix: drop
    // it so that nothing downstream mistakes it for an absolute path.
    let walked = [(0, &mut rec.str0), (2, &mut rec.dir0), (3, &mut rec.dir1)];
    for (slot, s) in walked {
        if header.flags & flags::walk_incomplete(slot) != 0 {
            s.clear();
        }
    }
    Ok(())
}

/// Encode a record as the probes do; for tests and benchmarks.
pub fn encode(rec: &RawRecord) -> Vec<u8> {
    let strings = [&rec.str0, &rec.str1, &rec.dir0, &rec.dir1];
    let mut h = rec.header;
    h.str_len = strings.map(|s| s.len() as u32);
    h.data_len = h.str_len.iter().sum();
    // SAFETY: plain data, viewed as bytes for its exact size.
    let head =
        unsafe { std::slice::from_raw_parts((&h as *const EventHeader).cast::<u8>(), HEADER_SIZE) };
    let mut out = Vec::with_capacity(HEADER_SIZE + h.data_len as usize);
    out.extend_from_slice(head);
    for s in strings {
        out.extend_from_slice(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_strings() {
        let rec = RawRecord {
            header: EventHeader {
                syscall: 82,
                pid: 7,
                ..Default::default()
            },
            str0: b"old".to_vec(),
            str1: b"/a/new".to_vec(),
            dir0: b"/home/u".to_vec(),
            dir1: vec![],
        };
        let r = decode(&encode(&rec)).unwrap();
        assert_eq!(r.header.pid, 7);
        assert_eq!(r.str0, b"old");
        assert_eq!(r.str1, b"/a/new");
        assert_eq!(r.dir0, b"/home/u");
        assert!(r.dir1.is_empty());
    }

    #[test]
    fn rejects_short_and_inconsistent_records() {
        assert!(matches!(decode(&[0; 10]), Err(DecodeError::Short(10))));
        let mut bytes = encode(&RawRecord {
            str0: b"abc".to_vec(),
            ..Default::default()
        });
        bytes.truncate(bytes.len() - 1);
        assert!(matches!(decode(&bytes), Err(DecodeError::Length { .. })));
    }

    #[test]
    fn incomplete_kernel_walks_are_dropped() {
        let mut rec = RawRecord {
            str0: b"x".to_vec(),
            dir0: b"/deep/suffix".to_vec(),
            ..Default::default()
        };
        rec.header.flags = flags::walk_incomplete(2);
        let r = decode(&encode(&rec)).unwrap();
        assert_eq!(r.str0, b"x");
        assert!(r.dir0.is_empty());
    }

    fn strings() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..64)
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        /// The pipeline decodes every record into the same one: nothing
        /// of a record (a longer string, a path of an earlier one) may
        /// remain in the next.
        #[test]
        fn a_reused_record_holds_each_record_as_if_decoded_alone(
            records in proptest::collection::vec(
                (strings(), strings(), strings(), strings(), any::<u32>(), any::<bool>()),
                1..8,
            )
        ) {
            let mut reused = RawRecord::default();
            for (str0, str1, dir0, dir1, pid, incomplete) in records {
                let mut rec = RawRecord { str0, str1, dir0, dir1, ..Default::default() };
                rec.header.pid = pid;
                if incomplete {
                    rec.header.flags = flags::walk_incomplete(0) | flags::walk_incomplete(3);
                }
                let bytes = encode(&rec);
                decode_into(&bytes, &mut reused).unwrap();
                prop_assert_eq!(encode(&reused), encode(&decode(&bytes).unwrap()));
            }
        }
    }
}
