//! The byte stream the load generator sends, and how an echo is checked against it.
//!
//! Every connection sends a window onto one fixed pseudo-random pattern, starting at an
//! offset of its own. Sending is a `write` straight out of the pattern; checking an echo is
//! a `memcmp` against the same place in it. So no message is ever allocated, built or
//! copied, and a byte that comes back wrong, late or out of order is caught wherever it
//! lands: a swapped pair, a chunk echoed twice or one skipped all break the match. The
//! period is a prime, so message boundaries drift across it.

/// The pattern's period: a prime, so it never lines up with a message size.
pub const PERIOD: usize = 131_071;
/// The most bytes one window (so one `write` or one comparison) takes from the pattern.
pub const CHUNK: usize = 64 * 1024;

/// The byte stream every connection sends a window of: `PERIOD` pseudo-random bytes, then
/// the first `CHUNK` of them again, so that any window of up to `CHUNK` bytes starting
/// anywhere in the period is one contiguous slice.
pub struct Pattern(Box<[u8]>);

impl Default for Pattern {
    fn default() -> Self {
        Self::new()
    }
}

impl Pattern {
    /// Build the pattern (about 200 KiB, shared by every connection and thread).
    pub fn new() -> Pattern {
        Pattern::build(None)
    }

    /// The same pattern with every `byte` replaced (by its value with the top bit
    /// flipped), for lines, which must hold no `\n` before their end.
    pub fn without(byte: u8) -> Pattern {
        Pattern::build(Some(byte))
    }

    fn build(excluded: Option<u8>) -> Pattern {
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut bytes: Vec<u8> = (0..PERIOD)
            .map(|_| {
                // xorshift64: cheap, and no byte value or short run repeats in step with
                // message sizes.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let byte = (state >> 24) as u8;
                if Some(byte) == excluded { byte ^ 0x80 } else { byte }
            })
            .collect();
        bytes.extend_from_within(..CHUNK);
        Pattern(bytes.into_boxed_slice())
    }

    /// The `len` (at most `CHUNK`) bytes of the stream at position `pos`.
    pub fn window(&self, pos: u64, len: usize) -> &[u8] {
        debug_assert!(len <= CHUNK);
        let at = (pos % PERIOD as u64) as usize;
        &self.0[at..at + len]
    }

    /// Does `data` equal the stream from position `pos` on?
    pub fn matches(&self, mut pos: u64, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let n = data.len().min(CHUNK);
            if data[..n] != *self.window(pos, n) {
                return false;
            }
            data = &data[n..];
            pos += n as u64;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_windows_wrap_around_the_period() {
        let pattern = Pattern::new();
        let end = PERIOD as u64 - 10;
        let across: Vec<u8> = (0..100).map(|i| pattern.window(end + i, 1)[0]).collect();
        assert_eq!(pattern.window(end, 100), &across[..]);
        assert_eq!(pattern.window(PERIOD as u64 + 5, 7), pattern.window(5, 7));
    }

    #[test]
    fn matches_catches_any_wrong_byte() {
        let pattern = Pattern::new();
        let mut data = Vec::new();
        let mut pos = 1000;
        while data.len() < 3 * CHUNK {
            data.extend_from_slice(pattern.window(pos, 1000));
            pos += 1000;
        }
        assert!(pattern.matches(1000, &data));
        assert!(!pattern.matches(1001, &data), "a shifted stream must not match");
        for at in [0, CHUNK - 1, CHUNK, data.len() - 1] {
            data[at] ^= 1;
            assert!(!pattern.matches(1000, &data), "flip at {at}");
            data[at] ^= 1;
        }
    }

    #[test]
    fn a_pattern_without_newlines_has_none() {
        let pattern = Pattern::without(b'\n');
        assert!(!pattern.window(0, CHUNK).contains(&b'\n'));
        assert!(!pattern.window(CHUNK as u64, PERIOD - CHUNK).contains(&b'\n'));
        assert!(Pattern::new().window(0, CHUNK).contains(&b'\n'));
    }

    #[test]
    fn pattern_bytes_are_spread() {
        let pattern = Pattern::new();
        let mut seen = [0usize; 256];
        for &b in pattern.window(0, CHUNK) {
            seen[b as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 0), "every byte value occurs");
    }
}
