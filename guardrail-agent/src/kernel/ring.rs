//! Reading the probes' ring buffer with the consumer position under the
//! agent's control.
//!
//! aya's reader hands the space of a record back to the kernel as soon as
//! the record has been looked at. The agent instead hands it back only once
//! the record's events are in the audit log (see [`RingReader::commit`]):
//! an agent killed in between leaves them in the (pinned) ring, and the
//! next agent reads them again instead of losing them.
//!
//! Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position
//! (read-write), page 1 the producer position, then the data pages. The
//! kernel offers the data pages twice in a row, so that a record never
//! appears to wrap; the agent maps them once, because every page mapped
//! counts in its resident memory (a 16 MiB ring would show as 32 MiB), and
//! copies the rare record that runs past the end of the data (about one
//! per lap of the ring) into a buffer of its own.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use aya::maps::MapData;

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HEADER: usize = 8;

struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: BorrowedFd, len: usize, prot: i32, offset: usize) -> Result<Self> {
        // SAFETY: a fresh shared mapping of the map's fd, checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping the ring buffer");
        }
        Ok(Self {
            ptr: NonNull::new(ptr.cast()).context("mmap returned null")?,
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

pub struct RingReader {
    map: MapData,
    consumer: Mapping,
    producer: Mapping,
    page: usize,
    /// Bytes of data less one (their number is a power of two).
    mask: usize,
    /// A record that runs past the end of the data, joined.
    wrapped: Vec<u8>,
    /// Where the next record starts (read, maybe not committed).
    read: usize,
    /// What the kernel has been told it may reuse.
    committed: usize,
}

// SAFETY: the mappings are owned and only touched through &mut self.
unsafe impl Send for RingReader {}

impl RingReader {
    /// `byte_size`: the map's size (a power of two of pages).
    pub fn new(map: MapData, byte_size: u32) -> Result<Self> {
        // SAFETY: no arguments.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let size = byte_size as usize;
        let fd = map.fd().as_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + size, libc::PROT_READ, page)?;
        let mut reader = Self {
            map,
            consumer,
            producer,
            page,
            mask: size - 1,
            wrapped: Vec::new(),
            read: 0,
            committed: 0,
        };
        reader.committed = reader.consumer_pos().load(Ordering::Acquire);
        reader.read = reader.committed;
        Ok(reader)
    }

    fn consumer_pos(&self) -> &AtomicUsize {
        // SAFETY: page 0 starts with the kernel's consumer position.
        unsafe { &*self.consumer.ptr.as_ptr().cast::<AtomicUsize>() }
    }

    fn producer_pos(&self) -> usize {
        // SAFETY: the producer page starts with the producer position.
        unsafe { &*self.producer.ptr.as_ptr().cast::<AtomicUsize>() }.load(Ordering::Acquire)
    }

    /// Bytes the kernel wrote that were not given back yet (records unread,
    /// or read and not committed): 0 once the agent has caught up.
    pub fn backlog_bytes(&self) -> u64 {
        self.producer_pos()
            .wrapping_sub(self.consumer_pos().load(Ordering::Acquire)) as u64
    }

    /// The next record and the position just past it, without giving its
    /// space back; None when nothing (complete) is waiting.
    pub fn next_record(&mut self) -> Option<(&[u8], usize)> {
        loop {
            if self.read == self.producer_pos() {
                return None;
            }
            let offset = self.page + (self.read & self.mask);
            // SAFETY: offset is within the data pages; the header is
            // 8-byte aligned, and so never runs past their end.
            let header = unsafe { &*self.producer.ptr.as_ptr().add(offset).cast::<AtomicU32>() };
            let len_flags = header.load(Ordering::Acquire);
            if len_flags & BUSY != 0 {
                return None;
            }
            let len = (len_flags & !(BUSY | DISCARD)) as usize;
            let start = (self.read + HEADER) & self.mask;
            let end = self.read + (HEADER + len).next_multiple_of(8);
            self.read = end;
            if len_flags & DISCARD != 0 {
                continue;
            }
            let data = self.page + start;
            let first = len.min(self.mask + 1 - start);
            // SAFETY: both parts lie within the data pages, which the
            // kernel wrote before it cleared BUSY (acquired above).
            let record = unsafe {
                let base = self.producer.ptr.as_ptr();
                if first == len {
                    std::slice::from_raw_parts(base.add(data), len)
                } else {
                    self.wrapped.clear();
                    self.wrapped
                        .extend_from_slice(std::slice::from_raw_parts(base.add(data), first));
                    self.wrapped.extend_from_slice(std::slice::from_raw_parts(
                        base.add(self.page),
                        len - first,
                    ));
                    &self.wrapped[..]
                }
            };
            return Some((record, end));
        }
    }

    /// Give the kernel back the space of every record before `pos` (a
    /// position [`RingReader::next_record`] returned).
    pub fn commit(&mut self, pos: usize) {
        if pos.wrapping_sub(self.committed) as isize > 0 {
            self.committed = pos;
            self.consumer_pos().store(pos, Ordering::Release);
        }
    }

    /// Everything read so far is handled.
    pub fn commit_read(&mut self) {
        let read = self.read;
        self.commit(read);
    }

    /// Skip every record up to and including the first one `is_last`
    /// recognises among those waiting (records an agent before this one
    /// handled but did not commit before it died); none when no record is
    /// recognised. How many were skipped.
    pub fn skip_through(&mut self, is_last: impl Fn(&[u8]) -> bool) -> usize {
        let start = self.read;
        let mut seen = 0;
        while let Some((data, _)) = self.next_record() {
            seen += 1;
            if is_last(data) {
                return seen;
            }
        }
        self.read = start;
        0
    }
}

impl AsRawFd for RingReader {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}
