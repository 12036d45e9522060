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
//! ([`BufRing::filled`]), and that copy must still hold a bundle's entries when its
//! completion is read. Completions need not come in the order the kernel took buffers (a
//! multishot recv's last completion is posted after later recvs' earlier ones), so a
//! buffer given back must not simply go in at the tail: the entry there may belong to a
//! bundle whose completion we have not read yet. The rule, kept by [`BufRing::provide`]
//! alone: an entry is written again only once the buffer last put in it has been given
//! back (so its completion was read). A buffer given back while the entry at the tail is
//! still someone's waits in a queue, in order, and goes in when that entry is free; the
//! loop gives every buffer back within a turn or two, so the wait is short. (A group whose
//! completions are never bundles, the datagrams', has no such rule: `in_group_without_bundles`.)

use std::collections::VecDeque;
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
    /// Completions may be bundles (the streams' group), whose entries say which buffers they
    /// filled: an entry is written again only once its buffer is back (module docs). False
    /// for a group whose completions each name their one buffer (the datagrams'): nothing
    /// reads an entry the kernel took, and a buffer given back goes in at once, never behind
    /// one still out (a reply waiting for room in its socket would hold back all the others).
    bundles: bool,
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
    /// Per entry: true once the buffer last put in it has been given back (or before the
    /// first fill), so the entry may be written again.
    free: Box<[bool]>,
    /// Buffers given back and not yet in the ring: the entry at the tail was not free.
    waiting: VecDeque<u16>,
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
        let free = vec![true; usize::from(count)].into_boxed_slice();
        let waiting = VecDeque::with_capacity(usize::from(count));
        let mut ring = BufRing {
            bundles: true,
            entries,
            pool,
            count,
            size,
            tail: 0,
            bid_in_entry,
            entry_of_bid,
            free,
            waiting,
            group: GROUP,
        };
        for bid in 0..count {
            ring.put(bid);
        }
        ring.publish();
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

    /// The same ring, named by group `group` instead (before it is registered), for
    /// completions that each name their one buffer, never a bundle (a recvmsg's).
    pub(crate) fn in_group_without_bundles(self, group: u16) -> BufRing {
        BufRing { group, bundles: false, ..self }
    }

    /// Bytes per buffer: the most one recv can bring.
    pub(crate) fn buffer_size(&self) -> usize {
        self.size
    }

    /// Give buffer `bid`, which a completion handed to us, back to the kernel: append it at
    /// the tail and publish the tail, once the entry there is free (module docs).
    pub(crate) fn provide(&mut self, bid: u16) {
        assert!(bid < self.count, "buffer {bid} of {}", self.count);
        if !self.bundles {
            self.put(bid); // nothing reads the entry there any more: the kernel took it
            return self.publish();
        }
        let old = usize::from(self.entry_of_bid[usize::from(bid)]);
        debug_assert!(!self.free[old], "buffer {bid} given back twice");
        self.free[old] = true; // its completion was read: its entry may be written again
        self.waiting.push_back(bid);
        let before = self.tail;
        while self.free[self.tail_entry()] {
            let Some(next) = self.waiting.pop_front() else { break };
            self.put(next);
        }
        if self.tail != before {
            self.publish();
        }
    }

    /// How many buffers wait to go back into the ring (their entry at the tail not free yet).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The entry the next buffer goes into.
    fn tail_entry(&self) -> usize {
        usize::from(self.tail & (self.count - 1))
    }

    /// Write `bid` into the (free) entry at the tail; the kernel sees it once published.
    fn put(&mut self, bid: u16) {
        let slot = self.tail_entry();
        debug_assert!(self.free[slot] || !self.bundles, "entry {slot} is not free");
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
        self.free[slot] = false;
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publish the tail: the entries written before it become the kernel's.
    fn publish(&self) {
        let base = self.entries.addr().cast::<BufRingEntry>();
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
            // The first buffer's length is its entry's too: the kernel may have shortened
            // that entry (to a recv's byte cap) for an earlier recv that then brought
            // nothing, and a bundle begun there fills only that much of it. The entry is
            // as the kernel left it: it is not written again before `first` is given back.
            0 => (self.first, buffers.bundle_part(self.entry, 0).1),
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

    /// The bid and length in entry `slot`, and the published tail.
    fn entry(ring: &BufRing, slot: usize) -> (u16, u32, u16) {
        let base = ring.entries.addr().cast::<BufRingEntry>();
        // SAFETY: `slot < count`, inside the mapping; no kernel is attached.
        let (entry, tail) = unsafe { (&*base.add(slot), *BufRingEntry::tail(base)) };
        (entry.bid(), entry.len(), tail)
    }

    #[test]
    fn provided_entries_point_at_their_buffers_and_publish_the_tail() {
        let mut ring = BufRing::new(4, 100).unwrap();
        for slot in 0..4u16 {
            assert_eq!(entry(&ring, usize::from(slot)), (slot, 100, 4));
            let base = ring.entries.addr().cast::<BufRingEntry>();
            // SAFETY: as in `entry`.
            assert_eq!(unsafe { &*base.add(usize::from(slot)) }.addr(), ring.buffer_addr(slot) as u64);
        }
        // The kernel takes entries 0-3 (buffers 0-3): buffers 0, 1, 2 come back one by one.
        for bid in 0..3 {
            ring.provide(bid);
        }
        assert_eq!((entry(&ring, 0), ring.waiting()), ((0, 100, 7), 0), "entry 0 again, tail 7");
        // Then a bundle of 150 bytes from entry 3 wraps to entry 0: buffers 3, then 0.
        let mut bundle = ring.filled(3, 150);
        assert_eq!(bundle.next(&ring), Some((3, 100)));
        assert_eq!(bundle.next(&ring), Some((0, 50)), "after entry 3 comes entry 0 (wrapped): buffer 0");
        assert_eq!(bundle.next(&ring), None);
        let mut nothing = ring.filled(1, 0);
        assert_eq!((nothing.next(&ring), nothing.next(&ring)), (Some((1, 0)), None), "named, so given back");
    }

    /// Completions out of the order the kernel took their buffers: buffers taken after a
    /// bundle come back before the bundle's completion is read. They must not go into the
    /// bundle's entries, which say which buffers the bundle filled; they wait, and go in
    /// once the bundle's buffers are back.
    #[test]
    fn buffers_given_back_early_wait_until_an_unread_bundles_entries_are_free() {
        let mut ring = BufRing::new(8, 100).unwrap();
        // The kernel takes entries 0-2 as one bundle (250 bytes, buffers 0, 1, 2), then
        // entries 3-7 one by one; the five single completions are read first.
        for bid in 3..8 {
            ring.provide(bid);
        }
        assert_eq!(ring.waiting(), 5, "entry 0 (the tail's) still holds the unread bundle's first buffer");
        assert_eq!(entry(&ring, 1), (1, 100, 8), "nothing written, nothing published");
        let mut late = ring.filled(0, 250);
        let mut got = Vec::new();
        while let Some((bid, len)) = late.next(&ring) {
            got.push((bid, len));
            ring.provide(bid); // given back as it is read, as the loop does
        }
        assert_eq!(got, [(0, 100), (1, 100), (2, 50)], "the bundle's own buffers");
        assert_eq!(ring.waiting(), 0);
        let ring_now: Vec<u16> = (0..8).map(|slot| entry(&ring, slot).0).collect();
        assert_eq!(ring_now, [3, 4, 5, 6, 7, 0, 1, 2], "given back in the order they came back");
        assert_eq!(entry(&ring, 0).2, 16, "all eight published again");
    }

    /// Regression: the datagrams' group kept the streams' rule (an entry written again only
    /// once its buffer is back), which no recvmsg needs: a reply waiting for room in its
    /// socket then held back every buffer given back after it.
    #[test]
    fn without_bundles_a_buffer_given_back_goes_in_at_once() {
        let mut ring = BufRing::new(4, 100).unwrap().in_group_without_bundles(1);
        ring.provide(1); // buffer 0 (entry 0, the tail's) is still out: a slow reply
        assert_eq!((entry(&ring, 0), ring.waiting()), ((1, 100, 5), 0), "in at once");
        ring.provide(0);
        assert_eq!(entry(&ring, 1), (0, 100, 6));
    }

    /// A bundle whose first entry the kernel had shortened (an earlier recv capped at 40
    /// bytes that brought nothing): the first buffer holds 40 bytes, the next the rest.
    #[test]
    fn a_bundle_from_a_shortened_entry_takes_only_its_length_from_the_first_buffer() {
        let ring = BufRing::new(4, 100).unwrap();
        let base = ring.entries.addr().cast::<BufRingEntry>();
        // SAFETY: inside the mapping; no kernel is attached: we play its part.
        unsafe { &mut *base }.set_len(40);
        let mut bundle = ring.filled(0, 140);
        assert_eq!(bundle.next(&ring), Some((0, 40)));
        assert_eq!(bundle.next(&ring), Some((1, 100)));
        assert_eq!(bundle.next(&ring), None);
    }

    /// The first buffer of a completion is the one it names, whatever our copy says.
    #[test]
    fn a_completion_yields_the_buffer_it_names() {
        let mut ring = BufRing::new(4, 100).unwrap(); // the kernel takes all four, in order
        ring.provide(1); // the completion for buffer 1 (entry 1) came first; it waits
        let mut late = ring.filled(0, 60); // the completion for buffer 0, from entry 0
        assert_eq!(late.next(&ring), Some((0, 60)));
        assert_eq!(late.next(&ring), None);
    }
}
