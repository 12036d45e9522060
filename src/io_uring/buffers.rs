//! The provided-buffer ring: receive buffers the kernel picks from when data *arrives*.
//!
//! A readiness loop owns one read buffer and copies into it only when `epoll` said "ready".
//! A completion loop must hand the kernel a buffer *before* the data comes, and most
//! connections are quiet most of the time: a buffer per armed recv would cost 10,000 buffers
//! for 10,000 idle connections. A provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux
//! 5.19) inverts that: the recv names a buffer *group*, and the kernel takes the next free
//! buffer of the group at the moment bytes are there. The completion says which one
//! (`IORING_CQE_F_BUFFER`, the buffer id in the upper 16 bits of its flags).
//!
//! Ownership: a buffer belongs to the kernel from [`BufRing::provide`] until a completion
//! names it, then to us until we provide it again. The loop gives each buffer back within
//! the turn that received it, or, when it sends straight out of it, the turn after (see
//! `connection.rs`); so a ring of a few hundred buffers serves any number of connections,
//! and when all are out for a moment a recv fails with ENOBUFS and is simply armed again.
//!
//! The ring itself is an array of `{addr, len, bid}` entries in memory shared with the
//! kernel: the kernel consumes from its head, we append at the tail and publish the tail
//! with a release store, as liburing's `io_uring_buf_ring_advance` does.
//!
//! A *bundle* (`IORING_RECVSEND_BUNDLE`) is one completion for several buffers: the kernel
//! names the first, and the others are the entries after it in ring order, each filled
//! whole but the last. So we keep a copy of which buffer sits in which entry
//! ([`BufRing::filled`]). An entry is written again only after the kernel has consumed
//! it and we have given its buffer back, which we do only after reading the completion
//! that named it: the copy still holds a bundle's entries when its completion is read.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// The buffer group id the streams' recvs name (a loop with `udp:` listeners has a second
/// group, of datagram-sized buffers: `udp.rs`).
const GROUP: u16 = 0;

/// The entries shared with the kernel, and the buffers they point at.
pub(crate) struct BufRing {
    /// `count` entries of 16 bytes; entry 0's last field doubles as the tail.
    entries: Mapping,
    /// `count * size` bytes; buffer `bid` is `[bid * size, (bid + 1) * size)`.
    pool: Mapping,
    count: u16,
    size: usize,
    /// Our copy of the tail: entries published so far (wrapping).
    tail: u16,
    /// Which buffer each entry of the ring was last given (entry -> bid), and where each
    /// buffer was last put (bid -> entry): how a bundle's buffers are found.
    bid_in_entry: Box<[u16]>,
    entry_of_bid: Box<[u16]>,
    /// The group id recvs name to take from this ring.
    group: u16,
}

impl BufRing {
    /// Map the memory and fill the ring with every buffer. Pages are touched only when the
    /// kernel first writes into a buffer, so a large pool costs address space, not memory.
    pub(crate) fn new(count: u16, size: usize) -> io::Result<BufRing> {
        assert!(count.is_power_of_two() && count <= 32768, "BufRing count {count}");
        let entries = Mapping::new(usize::from(count) * size_of::<BufRingEntry>())?;
        let pool = Mapping::new(usize::from(count) * size)?;
        let mirror = || vec![0; usize::from(count)].into_boxed_slice();
        let (bid_in_entry, entry_of_bid) = (mirror(), mirror());
        let mut ring =
            BufRing { entries, pool, count, size, tail: 0, bid_in_entry, entry_of_bid, group: GROUP };
        for bid in 0..count {
            ring.provide(bid);
        }
        Ok(ring)
    }

    /// Register with `ring` as our buffer group.
    pub(crate) fn register(&mut self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: the entries stay mapped until the group is unregistered or the ring is
        // gone: `Ring`'s `Drop` unregisters first, or leaks the mapping if it cannot.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.entries.addr() as u64,
                self.count,
                self.group,
                0,
            )
        }
    }

    /// How many buffers the ring holds.
    pub(crate) fn count(&self) -> u16 {
        self.count
    }

    /// The group id recvs name.
    pub(crate) fn group(&self) -> u16 {
        self.group
    }

    /// The same ring, named by group `group` instead (before it is registered).
    pub(crate) fn in_group(self, group: u16) -> BufRing {
        BufRing { group, ..self }
    }

    /// Bytes per buffer: the most one recv can bring.
    pub(crate) fn buffer_size(&self) -> usize {
        self.size
    }

    /// Give buffer `bid` back to the kernel (append it at the tail and publish the tail).
    pub(crate) fn provide(&mut self, bid: u16) {
        debug_assert!(bid < self.count);
        let slot = usize::from(self.tail & (self.count - 1));
        let base = self.entries.addr().cast::<BufRingEntry>();
        // SAFETY: `slot < count`, so the entry lies inside the mapping. The kernel reads only
        // entries between its head and the published tail; this one is past the tail. We set
        // fields one by one: entry 0's fourth field is the tail, which must not be clobbered.
        let entry = unsafe { &mut *base.add(slot) };
        entry.set_addr(self.buffer_addr(bid) as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.bid_in_entry[slot] = bid;
        self.entry_of_bid[usize::from(bid)] = slot as u16; // slot < count <= 32768
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field is a 2-byte-aligned u16 inside the mapping that the kernel
        // only reads; the release store makes the entry visible before the new tail.
        unsafe { AtomicU16::from_ptr(BufRingEntry::tail(base).cast_mut()) }
            .store(self.tail, Ordering::Release);
    }

    /// The buffers a completion that named `first` filled with `n` bytes: one, or a bundle.
    /// Taken before any buffer is given back (giving `first` back moves it in the ring).
    pub(crate) fn filled(&self, first: u16, n: usize) -> Filled {
        Filled { first, entry: usize::from(self.entry_of_bid[usize::from(first)]), next: 0, left: n }
    }

    /// The buffer in the ring `i` entries after `entry`, and its length as the kernel left it
    /// there (the kernel may shorten an entry it takes part of; each buffer of a bundle is
    /// filled to that length, but the last).
    fn bundle_part(&self, entry: usize, i: usize) -> (u16, usize) {
        let slot = (entry + i) & usize::from(self.count - 1);
        let base = self.entries.addr().cast::<BufRingEntry>();
        // SAFETY: `slot < count`, inside the mapping. The kernel consumed this entry before
        // posting the completion we are reading, and writes it no more; we have not written
        // it since (see the module docs). Volatile: the kernel wrote it, not this program.
        let len = unsafe { std::ptr::read_volatile(base.add(slot)) }.len();
        (self.bid_in_entry[slot], (len as usize).min(self.size))
    }

    /// The first `len` bytes of buffer `bid`, which a completion just handed to us.
    pub(crate) fn data(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.count && len <= self.size, "buffer {bid} len {len}");
        // SAFETY: inside the pool; the kernel wrote these bytes before posting the
        // completion that gave `bid` to us, and writes no more until we provide it again.
        unsafe { std::slice::from_raw_parts(self.buffer_addr(bid), len) }
    }

    /// Where buffer `bid` starts, for a send straight out of it.
    pub(crate) fn buffer_addr(&self, bid: u16) -> *const u8 {
        // SAFETY: `bid < count`, so the offset stays inside the pool mapping.
        unsafe { self.pool.addr().add(usize::from(bid) * self.size) }
    }

    /// Never unmap this memory: the kernel may still hold it.
    pub(crate) fn leak(&mut self) {
        self.entries.leaked = true;
        self.pool.leaked = true;
    }
}

/// The buffers of one completion, in order: a cursor rather than an iterator, so that the
/// caller may give each buffer back (change the ring) before it asks for the next.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filled {
    /// The buffer the completion names, taken from it rather than from our copy of the
    /// ring: completions need not come in the order the kernel took buffers (a multishot
    /// recv's last completion is posted after later recvs' earlier ones), so another
    /// completion's buffer, given back first, may already have been written into its entry.
    first: u16,
    /// The ring entry of the first buffer.
    entry: usize,
    /// How many buffers were handed out so far.
    next: usize,
    /// Bytes not handed out yet.
    left: usize,
}

impl Filled {
    /// The next buffer and the bytes it holds; the first buffer is handed out even when the
    /// completion brought no bytes (it still named it, so it is ours to give back).
    pub(crate) fn next(&mut self, buffers: &BufRing) -> Option<(u16, usize)> {
        if self.next > 0 && self.left == 0 {
            return None;
        }
        let (bid, len) = match self.next {
            0 => (self.first, buffers.size), // one buffer: the completion's count says how full
            i => buffers.bundle_part(self.entry, i),
        };
        if self.next > 0 && len == 0 {
            return None; // never expected: the kernel skips empty entries
        }
        let len = len.min(self.left);
        (self.next, self.left) = (self.next + 1, self.left - len);
        Some((bid, len))
    }
}

/// Anonymous, page-aligned memory (the kernel wants the ring page-aligned), unmapped on drop
/// unless leaked.
struct Mapping {
    addr: NonNull<u8>,
    len: usize,
    leaked: bool,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let addr = NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { addr, len, leaked: false })
    }

    fn addr(&self) -> *mut u8 {
        self.addr.as_ptr()
    }
}

// SAFETY: a `Mapping` is plain memory owned by this value alone, with no tie to the thread
// that made it: moving it to another thread (a server bound on one thread, run on another)
// is like moving a `Vec`. Who may touch the bytes when is `BufRing`'s business, not a thread's.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        if !self.leaked {
            // SAFETY: exactly the mapping made in `new`, unmapped once.
            unsafe { libc::munmap(self.addr.as_ptr().cast(), self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provided_entries_point_at_their_buffers_and_publish_the_tail() {
        let mut ring = BufRing::new(4, 100).unwrap();
        assert_eq!(ring.tail, 4);
        let base = ring.entries.addr().cast::<BufRingEntry>();
        for slot in 0..4u16 {
            // SAFETY: inside the mapping; no kernel is attached.
            let entry = unsafe { &*base.add(usize::from(slot)) };
            assert_eq!((entry.bid(), entry.len()), (slot, 100));
            assert_eq!(entry.addr(), ring.buffer_addr(slot) as u64);
        }
        ring.provide(2); // wraps to slot 0, whose last field is the tail
        // SAFETY: as above.
        let (entry, tail) = unsafe { (&*base, *BufRingEntry::tail(base)) };
        assert_eq!((entry.bid(), tail), (2, 5));
        assert_eq!(ring.data(3, 100).len(), 100);
        ring.provide(0); // slot 1
        let mut bundle = ring.filled(3, 250);
        assert_eq!(bundle.next(&ring), Some((3, 100)));
        assert_eq!(bundle.next(&ring), Some((2, 100)), "after slot 3 comes slot 0 (wrapped): buffer 2");
        assert_eq!(bundle.next(&ring), Some((0, 50)), "the last one, part full");
        assert_eq!(bundle.next(&ring), None);
        let mut nothing = ring.filled(3, 0);
        assert_eq!((nothing.next(&ring), nothing.next(&ring)), (Some((3, 0)), None), "named, so given back");
    }

    /// Completions out of the order the kernel took their buffers: the one read first gives
    /// its buffer back, which is written into the entry of the other, still unread; that one
    /// still yields the buffer it names, not the one now in its old entry.
    #[test]
    fn a_completion_read_after_its_entry_was_reused_yields_its_own_buffer() {
        let mut ring = BufRing::new(4, 100).unwrap(); // the kernel takes all four, in order
        ring.provide(1); // the completion for buffer 1 (entry 1) came first: into entry 0
        let mut late = ring.filled(0, 60); // the completion for buffer 0, from entry 0
        assert_eq!(late.next(&ring), Some((0, 60)));
        assert_eq!(late.next(&ring), None);
    }
}
