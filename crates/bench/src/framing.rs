//! What a message looks like on the wire, and how big it is.
//!
//! A TCP `read` returns bytes, not messages, so a server that frames its input (`serve
//! --framing line|length`) must be sent well-formed frames, and its echo is checked frame by
//! frame. A message's bytes are never stored: they are a function of where the message sits
//! in the connection's stream (its start and its length) and of the [`Pattern`], so any
//! stretch of any message in flight can be rebuilt for sending and for checking.
//!
//! - `raw`: the message is a window of the pattern.
//! - `line`: a window of a pattern with no `\n` in it, then `\n`. `--size` counts the `\n`
//!   (as the server's `--max-frame` does).
//! - `length`: a 4-byte big-endian payload length, then the payload. `--size` counts the
//!   payload only (as `--max-frame` does), so 0 is a legal size.

use clap::ValueEnum;
use serde::Serialize;

use crate::pattern::Pattern;

/// The bytes of the 4-byte length prefix.
const PREFIX: usize = 4;

/// How messages are cut into frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    /// A byte stream: message boundaries mean nothing to the server.
    #[default]
    Raw,
    /// Each message is a line ending in `\n`.
    Line,
    /// Each message is a 4-byte big-endian length and that many bytes.
    Length,
}

impl Framing {
    /// The pattern messages are cut from: lines must not hold a `\n` before their end.
    pub fn pattern(self) -> Pattern {
        match self {
            Framing::Line => Pattern::without(b'\n'),
            Framing::Raw | Framing::Length => Pattern::new(),
        }
    }

    /// The 1-byte ping every new connection must get back before the load starts
    /// ([`crate::stream`]), framed so that a framing server echoes it.
    pub fn ping(self) -> &'static [u8] {
        match self {
            Framing::Raw => b"!",
            Framing::Line => b"!\n",
            Framing::Length => b"\0\0\0\x01!",
        }
    }

    /// The bytes a message of `size` takes on the wire.
    pub fn wire_len(self, size: usize) -> u64 {
        match self {
            Framing::Raw | Framing::Line => size as u64,
            Framing::Length => (PREFIX + size) as u64,
        }
    }

    /// The smallest `--size` that makes a frame: a line needs its `\n`.
    pub fn min_size(self) -> usize {
        match self {
            Framing::Raw | Framing::Line => 1,
            Framing::Length => 0,
        }
    }

    /// Fill `out` with the message's bytes from stream position `from` on. The message
    /// spans `[start, end)` of a stream that sits at `origin` in the pattern; `out` lies
    /// inside it and is at most [`crate::pattern::CHUNK`] long.
    pub fn fill(self, pattern: &Pattern, origin: u64, (start, end): (u64, u64), from: u64, out: &mut [u8]) {
        out.copy_from_slice(pattern.window(origin + from, out.len()));
        let to = from + out.len() as u64;
        match self {
            Framing::Raw => {}
            Framing::Line => {
                if to == end {
                    out[out.len() - 1] = b'\n';
                }
            }
            Framing::Length => {
                let payload = u32::try_from(end - start - PREFIX as u64).unwrap_or(u32::MAX);
                for (i, byte) in payload.to_be_bytes().into_iter().enumerate() {
                    let at = start + i as u64;
                    if (from..to).contains(&at) {
                        out[(at - from) as usize] = byte;
                    }
                }
            }
        }
    }
}

/// `--size`: one size, or sizes drawn evenly from `MIN-MAX` (both included), message by
/// message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sizes {
    /// The smallest message.
    pub min: usize,
    /// The largest message.
    pub max: usize,
}

impl Sizes {
    /// Every message `size` bytes.
    pub fn fixed(size: usize) -> Sizes {
        Sizes { min: size, max: size }
    }

    /// The next size, from a connection's own random state (xorshift64, never 0).
    pub fn pick(&self, state: &mut u64) -> usize {
        if self.min == self.max {
            return self.min;
        }
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let span = (self.max - self.min) as u64 + 1;
        self.min + (*state % span) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole message, built in one piece.
    fn whole(framing: Framing, pattern: &Pattern, start: u64, size: usize) -> Vec<u8> {
        let end = start + framing.wire_len(size);
        let mut out = vec![0; (end - start) as usize];
        framing.fill(pattern, 7, (start, end), start, &mut out);
        out
    }

    #[test]
    fn lines_end_in_their_only_newline() {
        let pattern = Framing::Line.pattern();
        for size in [1, 2, 100, 5000] {
            let line = whole(Framing::Line, &pattern, 1234, size);
            assert_eq!(line.len(), size);
            assert_eq!(line.iter().position(|&b| b == b'\n'), Some(size - 1), "size {size}");
        }
    }

    #[test]
    fn length_frames_start_with_their_payload_length() {
        let pattern = Framing::Length.pattern();
        let frame = whole(Framing::Length, &pattern, 99, 300);
        assert_eq!(frame.len(), 304);
        assert_eq!(frame[..4], 300u32.to_be_bytes());
        assert_eq!(frame[4..], *pattern.window(7 + 99 + 4, 300));
        assert_eq!(whole(Framing::Length, &pattern, 0, 0), [0, 0, 0, 0]);
    }

    #[test]
    fn a_message_rebuilt_piece_by_piece_is_the_same() {
        for framing in [Framing::Raw, Framing::Line, Framing::Length] {
            let pattern = framing.pattern();
            let (start, size) = (500, 40);
            let want = whole(framing, &pattern, start, size);
            let end = start + framing.wire_len(size);
            let mut got = Vec::new();
            for from in start..end {
                let mut byte = [0u8];
                framing.fill(&pattern, 7, (start, end), from, &mut byte);
                got.push(byte[0]);
            }
            assert_eq!(got, want, "{framing:?}");
        }
    }

    #[test]
    fn sizes_stay_in_range_and_cover_it() {
        let sizes = Sizes { min: 3, max: 6 };
        let mut state = 42;
        let picked: Vec<usize> = (0..200).map(|_| sizes.pick(&mut state)).collect();
        assert!(picked.iter().all(|s| (3..=6).contains(s)));
        for s in 3..=6 {
            assert!(picked.contains(&s), "{s} never picked");
        }
        assert_eq!(Sizes::fixed(9).pick(&mut state), 9);
    }
}
