//! Where a connection's bytes wait between reads, with no I/O of their own:
//!
//! - [`PendingBuf`]: bytes read and due back, but the kernel has not taken them yet.
//! - [`PartialFrame`]: with `--framing line|length`, the start of a frame whose end has not
//!   arrived; echoed only once the frame is whole.
//!
//! Most echoes touch neither: the event loop writes straight from the shared read buffer,
//! and only what a partial write leaves over, or a frame cut by a read, lands here. Both give
//! their memory back as soon as they empty, so an idle connection costs no buffer at all.

/// A bounded FIFO of bytes not yet echoed.
#[derive(Debug)]
pub struct PendingBuf {
    /// `bytes[start..]` are pending; `bytes[..start]` were already written.
    bytes: Vec<u8>,
    start: usize,
    cap: usize,
}

impl PendingBuf {
    /// An empty buffer that will never hold more than `cap` bytes. Allocates nothing.
    pub fn new(cap: usize) -> Self {
        PendingBuf { bytes: Vec::new(), start: 0, cap }
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many more bytes may be pushed before the cap.
    pub fn room(&self) -> usize {
        self.cap - self.len()
    }

    /// Heap bytes held right now (0 when empty: the memory is given back).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Append `data` behind what is pending. The caller keeps `data.len() <= self.room()`
    /// (it reads at most `room()` bytes); anything beyond the cap is a bug, so it panics.
    pub fn push(&mut self, data: &[u8]) {
        assert!(data.len() <= self.room(), "PendingBuf over its cap");
        if self.start > 0 && self.bytes.capacity() - self.bytes.len() < data.len() {
            // Slide the unwritten bytes to the front instead of growing.
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.reserve_within_cap(data.len());
        self.bytes.extend_from_slice(data);
    }

    /// Make room for `additional` more bytes without the allocation passing the cap. A
    /// plain `extend` doubles the capacity, so a 64 KiB cap could hold a 128 KiB block.
    /// Growth only happens with `start == 0` (a push slides first), so `len + additional`
    /// is at most the cap here; doubling is kept below it, so pushes stay amortised O(1).
    fn reserve_within_cap(&mut self, additional: usize) {
        let needed = self.bytes.len() + additional;
        if needed <= self.bytes.capacity() {
            return;
        }
        let target = needed.max((self.bytes.capacity() * 2).min(self.cap));
        self.bytes.reserve_exact(target - self.bytes.len());
    }

    /// The oldest pending bytes, to hand to `write`.
    pub fn front(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// Forget the first `n` bytes of `front()`, which the kernel took.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.bytes.len());
        if self.start == self.bytes.len() {
            // Empty again: free the memory, so idle connections hold no buffer.
            self.bytes = Vec::new();
            self.start = 0;
        }
    }
}

/// The start of a frame not yet whole: kept between reads, handed over in one piece once the
/// frame's end arrives. It grows with the bytes that really arrived (doubling, so a frame
/// that arrives a byte at a time is not copied over and over), never past its `bound`; a
/// length a client *declared* never sizes it.
#[derive(Debug, Default)]
pub struct PartialFrame {
    bytes: Vec<u8>,
}

impl PartialFrame {
    /// The bytes held.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Heap bytes held right now.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Append `data`, keeping the allocation within `bound` bytes. The caller knows the
    /// frame is shorter than `bound` (the framer refuses longer ones); more is a bug.
    pub fn extend(&mut self, data: &[u8], bound: usize) {
        let needed = self.bytes.len() + data.len();
        assert!(needed <= bound, "PartialFrame over its bound");
        if needed > self.bytes.capacity() {
            let target = needed.max(self.bytes.capacity() * 2).min(bound);
            self.bytes.reserve_exact(target - self.bytes.len());
        }
        self.bytes.extend_from_slice(data);
    }

    /// Hand the frame's start over and hold nothing (no memory) from now on.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_frame_grows_by_doubling_within_its_bound_and_frees_on_take() {
        let mut frame = PartialFrame::default();
        assert_eq!(frame.capacity(), 0);
        for _ in 0..100 {
            frame.extend(b"x", 100);
        }
        assert_eq!(frame.len(), 100);
        assert_eq!(frame.capacity(), 100, "never past the bound");
        assert_eq!(frame.take(), vec![b'x'; 100]);
        assert_eq!(frame.len(), 0);
        assert_eq!(frame.capacity(), 0);
        frame.extend(&[1; 60], 100);
        frame.extend(&[2; 30], 100);
        assert!(frame.capacity() <= 100, "{}", frame.capacity());
    }

    #[test]
    #[should_panic(expected = "over its bound")]
    fn a_partial_frame_past_its_bound_is_a_bug() {
        PartialFrame::default().extend(b"abc", 2);
    }

    #[test]
    fn fifo_order_across_partial_consumes() {
        let mut buf = PendingBuf::new(10);
        buf.push(b"hello");
        buf.consume(2);
        buf.push(b" world");
        assert_eq!(buf.front(), b"llo world");
        assert_eq!(buf.len(), 9);
        buf.consume(4);
        assert_eq!(buf.front(), b"world");
    }

    #[test]
    fn cap_and_room() {
        let mut buf = PendingBuf::new(4);
        assert_eq!(buf.room(), 4);
        buf.push(b"abcd");
        assert_eq!(buf.room(), 0);
        buf.consume(1);
        assert_eq!(buf.room(), 1);
        buf.push(b"e");
        assert_eq!(buf.front(), b"bcde");
    }

    #[test]
    fn memory_is_released_when_empty() {
        let mut buf = PendingBuf::new(1 << 16);
        assert_eq!(buf.capacity(), 0);
        buf.push(&[7; 1000]);
        assert!(buf.capacity() >= 1000);
        buf.consume(1000);
        assert!(buf.is_empty());
        assert_eq!(buf.capacity(), 0);
    }

    /// Regression (found by the property test below): growing by doubling let a buffer
    /// capped at 65536 bytes hold an 80000-byte allocation.
    #[test]
    fn the_allocation_stays_within_the_cap() {
        let mut buf = PendingBuf::new(65536);
        buf.push(&[1; 40000]);
        buf.push(&[2; 25536]);
        assert_eq!(buf.room(), 0);
        assert!(buf.capacity() <= 65536, "capacity {}", buf.capacity());
    }

    #[test]
    #[should_panic(expected = "over its cap")]
    fn pushing_past_the_cap_is_a_bug() {
        let mut buf = PendingBuf::new(2);
        buf.push(b"abc");
    }
}

/// Property tests: whatever the sizes of the reads that fill it and of the partial writes
/// that empty it, the bytes come out exactly as they went in, the buffer never holds (nor
/// allocates) more than its cap, and it holds no memory once empty.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// One step of a connection's life: a read of up to `n` bytes lands in the buffer
    /// (`true`), or the kernel takes up to `n` bytes of a write (`false`). `n` is cut to
    /// what is possible at that moment (the room, the rest of the input, what is pending).
    type Step = (bool, usize);

    /// Feed `input` through a `PendingBuf` of `cap` bytes following `steps`, then drain it
    /// with partial writes of the sizes in `drain`; return what was written.
    fn run(cap: usize, input: &[u8], steps: &[Step], drain: &[usize]) -> Result<Vec<u8>, TestCaseError> {
        let mut buf = PendingBuf::new(cap);
        let mut rest = input;
        let mut output = Vec::with_capacity(input.len());
        let check = |buf: &PendingBuf| -> Result<(), TestCaseError> {
            prop_assert!(buf.len() <= cap, "holds {} > cap {cap}", buf.len());
            prop_assert!(buf.capacity() <= cap, "allocates {} > cap {cap}", buf.capacity());
            prop_assert_eq!(buf.front().len(), buf.len());
            prop_assert_eq!(buf.room(), cap - buf.len());
            if buf.is_empty() {
                prop_assert_eq!(buf.capacity(), 0, "an empty buffer holds memory");
            }
            Ok(())
        };
        for &(read, n) in steps {
            if read {
                let n = n % (buf.room().min(rest.len()) + 1);
                buf.push(&rest[..n]);
                rest = &rest[n..];
            } else {
                let n = n % (buf.len() + 1);
                output.extend_from_slice(&buf.front()[..n]);
                buf.consume(n);
            }
            check(&buf)?;
        }
        // The rest of the input, as the room allows, each write taking a `drain` size.
        let mut sizes = drain.iter().cycle();
        while !rest.is_empty() || !buf.is_empty() {
            let n = rest.len().min(buf.room());
            buf.push(&rest[..n]);
            rest = &rest[n..];
            let n = (sizes.next().copied().unwrap_or(usize::MAX) % buf.len()) + 1; // >= 1: progress
            output.extend_from_slice(&buf.front()[..n]);
            buf.consume(n);
            check(&buf)?;
        }
        Ok(output)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn bytes_come_out_as_they_went_in(
            cap in 1usize..4096,
            input in proptest::collection::vec(any::<u8>(), 0..16_384),
            steps in proptest::collection::vec((any::<bool>(), any::<usize>()), 0..300),
            drain in proptest::collection::vec(any::<usize>(), 1..8),
        ) {
            let output = run(cap, &input, &steps, &drain)?;
            prop_assert_eq!(output, input);
        }

        #[test]
        fn a_full_buffer_takes_nothing_more(cap in 1usize..4096, consumed in any::<usize>()) {
            let mut buf = PendingBuf::new(cap);
            buf.push(&vec![9; cap]);
            prop_assert_eq!(buf.room(), 0);
            prop_assert!(buf.capacity() <= cap);
            let n = consumed % (cap + 1);
            buf.consume(n);
            prop_assert_eq!(buf.room(), n);
        }
    }
}
