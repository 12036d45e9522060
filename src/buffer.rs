//! `PendingBuf`: the bytes a connection read but the kernel has not yet taken back.
//!
//! Most echoes never touch it: the event loop writes straight from the shared read buffer,
//! and only what a partial write leaves over lands here. It is a plain FIFO of bytes with
//! a hard cap (`--max-pending`), no I/O of its own, and it gives its memory back as soon as
//! it empties, so an idle connection costs no buffer at all.

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

    /// At the cap: the owner must stop reading until some bytes are consumed.
    pub fn is_full(&self) -> bool {
        self.room() == 0
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
        self.bytes.extend_from_slice(data);
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(buf.is_full());
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

    #[test]
    #[should_panic(expected = "over its cap")]
    fn pushing_past_the_cap_is_a_bug() {
        let mut buf = PendingBuf::new(2);
        buf.push(b"abc");
    }
}
