//! Framing: where one message ends in a byte stream. No I/O here: given bytes, say where
//! whole frames end.
//!
//! A TCP `read` returns *bytes*, not messages: one message may arrive over several reads,
//! and one read may hold many messages and the start of the next. A protocol that wants
//! messages must mark their ends itself. Two classic ways, both offered by
//! `echoloop serve --framing`:
//!
//! - `line`: a message is the bytes up to and including `\n` (SMTP, Redis' inline
//!   commands, most chat protocols).
//! - `length`: a 4-byte big-endian length, then that many bytes (many binary protocols).
//!
//! `raw` (the default) is the plain echo: every byte is its own message, so everything read
//! is whole.
//!
//! [`Framer::split`] takes the start of a frame that an earlier read left unfinished (the
//! *partial frame*, often empty) and the bytes of a new read, and answers: this many bytes of
//! the new read end whole frames; the rest is either the start of the next frame or a frame
//! over the limit. It is stateless: everything it needs is in the partial frame, which never
//! holds a `\n` (line) or a whole frame (length), so a new read is scanned once, and never
//! more than the 4-byte prefix of a partial frame is looked at again.
//!
//! A declared length is only ever *compared* with the limit, never used to allocate: a
//! client that declares 4 GiB is refused as soon as its 4-byte prefix arrives, and the
//! memory a partial frame holds grows with the bytes that really arrived.

use std::fmt;

/// The bytes of a length frame's prefix: a big-endian `u32`.
pub const PREFIX: usize = 4;

/// How the byte stream of a connection is cut into messages. (With the `cli` feature,
/// `clap::ValueEnum` gives the command line the names `raw`, `line`, `length`, and each doc
/// line as help.) More framings may come, so a `match` needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum Framing {
    /// No framing: echo bytes as they come (the plain echo).
    #[default]
    Raw,
    /// A message is the bytes up to and including `\n`.
    Line,
    /// A message is a 4-byte big-endian length, then that many bytes.
    Length,
}

impl Framing {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Framing::Raw => "raw",
            Framing::Line => "line",
            Framing::Length => "length",
        }
    }
}

/// A framing with its limit: everything needed to find where frames end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framer {
    framing: Framing,
    /// The largest frame allowed: a line with its `\n`, a length frame's payload without
    /// its prefix.
    max_frame: usize,
}

/// What [`Framer::split`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The first `whole` bytes of the new data end whole frames (together with the partial
    /// frame before them, if `whole > 0`); they can be echoed as they are.
    pub whole: usize,
    /// How many frames those bytes end (0 for `raw`, which has no frames), for the count.
    pub frames: usize,
    /// What the bytes after `whole` are.
    pub rest: Rest,
}

/// The bytes after the whole frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rest {
    /// The start of a frame not yet whole (perhaps no bytes at all): keep it for the next read.
    Partial,
    /// The next frame is over the limit: echo the whole frames before it, then close.
    TooLarge(Oversize),
}

/// A frame over the limit, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversize {
    framing: Framing,
    /// The frame's size: exact for a length frame or a line whose `\n` arrived, a lower
    /// bound for a line still without its end.
    size: u64,
    exact: bool,
    limit: usize,
}

/// What to do with a partial frame when the client's EOF arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtEof {
    /// Nothing was held.
    Nothing,
    /// A final line without its `\n`: echo it, as the end of the stream ends it.
    Echo,
    /// An incomplete length frame of this many bytes: it can never be whole; discard it.
    Discard(usize),
}

impl Framer {
    /// `framing` with frames of at most `max_frame` bytes (ignored for `raw`).
    pub const fn new(framing: Framing, max_frame: usize) -> Self {
        Framer { framing, max_frame }
    }

    /// The framing.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The most bytes one whole frame occupies in the stream (prefix included); a partial
    /// frame is always shorter. 0 for `raw`, which never holds a partial frame.
    pub fn frame_bound(&self) -> usize {
        match self.framing {
            Framing::Raw => 0,
            Framing::Line => self.max_frame,
            Framing::Length => self.max_frame.saturating_add(PREFIX),
        }
    }

    /// Where whole frames end in `partial` followed by `data`. `partial` is what an earlier
    /// call left as [`Rest::Partial`] (never a whole frame); `data` is what was read since.
    pub fn split(&self, partial: &[u8], data: &[u8]) -> Split {
        match self.framing {
            Framing::Raw => Split { whole: data.len(), frames: 0, rest: Rest::Partial },
            Framing::Line => self.split_lines(partial.len(), data),
            Framing::Length => self.split_lengths(partial, data),
        }
    }

    /// Lines: find each `\n` in `data`; `partial` holds none, so only its length matters.
    fn split_lines(&self, partial_len: usize, data: &[u8]) -> Split {
        let mut carried = partial_len; // bytes of the current line before `data[whole..]`
        let (mut whole, mut frames) = (0, 0);
        while let Some(i) = memchr::memchr(b'\n', &data[whole..]) {
            let line = carried + i + 1;
            if line > self.max_frame {
                return Split { whole, frames, rest: self.oversize(line as u64, true) };
            }
            whole += i + 1;
            frames += 1;
            carried = 0;
        }
        let held = carried + (data.len() - whole);
        if held >= self.max_frame {
            // No `\n` yet and already `max_frame` bytes: with its `\n` it cannot fit.
            return Split { whole, frames, rest: self.oversize(held as u64 + 1, false) };
        }
        Split { whole, frames, rest: Rest::Partial }
    }

    /// Length frames: read each prefix (the first may straddle `partial` and `data`), then
    /// skip the payload if it has all arrived.
    fn split_lengths(&self, partial: &[u8], data: &[u8]) -> Split {
        let total = partial.len() + data.len();
        let byte = |i: usize| if i < partial.len() { partial[i] } else { data[i - partial.len()] };
        let mut start = 0; // where the current frame starts, counted from the start of `partial`
        let mut frames = 0;
        let rest = loop {
            if total - start < PREFIX {
                break Rest::Partial;
            }
            let prefix = [byte(start), byte(start + 1), byte(start + 2), byte(start + 3)];
            let declared = u32::from_be_bytes(prefix);
            if u64::from(declared) > self.max_frame as u64 {
                break self.oversize(u64::from(declared), true); // compared, never allocated
            }
            let end = start + PREFIX + declared as usize; // declared <= max_frame: fits
            if end > total {
                break Rest::Partial;
            }
            start = end;
            frames += 1;
        };
        // A whole frame that began in `partial` ends past it, so `start > partial.len()`
        // once any frame is whole; `start == 0` means none is.
        Split { whole: start.saturating_sub(partial.len()), frames, rest }
    }

    fn oversize(&self, size: u64, exact: bool) -> Rest {
        Rest::TooLarge(Oversize { framing: self.framing, size, exact, limit: self.max_frame })
    }

    /// The client's EOF arrived while `partial` was held.
    pub fn at_eof(&self, partial: &[u8]) -> AtEof {
        match self.framing {
            _ if partial.is_empty() => AtEof::Nothing,
            Framing::Line => AtEof::Echo,
            Framing::Length | Framing::Raw => AtEof::Discard(partial.len()),
        }
    }
}

impl fmt::Display for Oversize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (size, limit) = (self.size, self.limit);
        match (self.framing, self.exact) {
            (Framing::Line, true) => write!(f, "a line of {size} bytes (with its \\n)"),
            (Framing::Line, false) => write!(f, "a line of at least {size} bytes (no \\n yet)"),
            _ => write!(f, "a frame declaring {size} bytes"),
        }?;
        write!(f, " is over the limit of {limit} bytes (--max-frame)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(max: usize) -> Framer {
        Framer::new(Framing::Line, max)
    }

    fn length(max: usize) -> Framer {
        Framer::new(Framing::Length, max)
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    fn too_large(split: &Split) -> String {
        match &split.rest {
            Rest::TooLarge(over) => over.to_string(),
            Rest::Partial => panic!("expected a frame over the limit: {split:?}"),
        }
    }

    #[test]
    fn raw_is_always_whole() {
        let raw = Framer::new(Framing::Raw, 1);
        assert_eq!(raw.split(b"", b"abc\n\0\0\0\x09"), Split { whole: 8, frames: 0, rest: Rest::Partial });
        assert_eq!(raw.frame_bound(), 0);
    }

    #[test]
    fn lines_end_after_their_newline() {
        let split = line(100).split(b"", b"one\ntwo\nthr");
        assert_eq!(split, Split { whole: 8, frames: 2, rest: Rest::Partial });
        // The partial "thr" is completed by the next read.
        assert_eq!(line(100).split(b"thr", b"ee\nfo"), Split { whole: 3, frames: 1, rest: Rest::Partial });
        assert_eq!(line(100).split(b"", b"\n\n"), Split { whole: 2, frames: 2, rest: Rest::Partial });
    }

    #[test]
    fn the_line_limit_counts_the_newline() {
        assert_eq!(line(4).split(b"", b"abc\n"), Split { whole: 4, frames: 1, rest: Rest::Partial });
        let split = line(4).split(b"", b"ok\nabcd\n");
        assert_eq!(split.whole, 3);
        assert!(too_large(&split).contains("a line of 5 bytes"), "{}", too_large(&split));
        // Across reads: "ab" held, "cd\n" arrives: 5 bytes.
        assert!(too_large(&line(4).split(b"ab", b"cd\n")).contains("5 bytes"));
    }

    #[test]
    fn a_line_without_end_is_refused_at_the_limit() {
        assert_eq!(line(4).split(b"", b"abc"), Split { whole: 0, frames: 0, rest: Rest::Partial });
        let split = line(4).split(b"abc", b"d");
        assert_eq!(split.whole, 0);
        assert!(too_large(&split).contains("at least 5 bytes"));
    }

    #[test]
    fn length_frames_echo_prefix_and_payload() {
        let mut stream = frame(b"hello");
        stream.extend(frame(b""));
        stream.extend(&frame(b"next")[..6]);
        assert_eq!(length(10).split(b"", &stream), Split { whole: 9 + 4, frames: 2, rest: Rest::Partial });
    }

    #[test]
    fn a_prefix_may_straddle_reads() {
        let bytes = frame(b"abc");
        for cut in 1..bytes.len() {
            let (partial, data) = bytes.split_at(cut);
            assert_eq!(length(3).split(b"", partial), Split { whole: 0, frames: 0, rest: Rest::Partial });
            assert_eq!(
                length(3).split(partial, data),
                Split { whole: data.len(), frames: 1, rest: Rest::Partial }
            );
        }
    }

    #[test]
    fn the_length_limit_counts_the_payload_only() {
        assert_eq!(length(3).split(b"", &frame(b"abc")).whole, 7);
        let split = length(3).split(b"", &[frame(b"ok"), frame(b"abcd")].concat());
        assert_eq!(split.whole, 6);
        assert!(too_large(&split).contains("declaring 4 bytes"));
        assert_eq!(length(3).frame_bound(), 7);
    }

    #[test]
    fn an_absurd_length_is_refused_from_its_prefix_alone() {
        let split = length(64 * 1024).split(b"", &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(split.whole, 0);
        assert_eq!(
            too_large(&split),
            "a frame declaring 4294967295 bytes is over the limit of 65536 bytes (--max-frame)"
        );
    }

    #[test]
    fn eof_echoes_a_last_line_and_discards_a_partial_length_frame() {
        assert_eq!(line(9).at_eof(b"no end"), AtEof::Echo);
        assert_eq!(length(9).at_eof(&[0, 0, 0, 5, 1]), AtEof::Discard(5));
        assert_eq!(length(9).at_eof(b""), AtEof::Nothing);
    }

    /// Feed `stream` to `framer` cut at `cuts`, as the event loop does (a partial frame
    /// carried between reads); return each echoed run of bytes, or the oversize.
    fn reassemble(framer: Framer, stream: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, Vec<u8>, usize) {
        let mut partial = Vec::new();
        let mut echoed = Vec::new();
        let mut frames = 0;
        let mut start = 0;
        for end in cuts.iter().copied().chain([stream.len()]) {
            let data = &stream[start..end.max(start)];
            start = end.max(start);
            let split = framer.split(&partial, data);
            assert_eq!(split.rest, Rest::Partial, "well-formed frames under the limit");
            frames += split.frames;
            if split.whole > 0 {
                let mut run = std::mem::take(&mut partial);
                run.extend_from_slice(&data[..split.whole]);
                echoed.push(run);
            }
            partial.extend_from_slice(&data[split.whole..]);
        }
        (echoed, partial, frames)
    }

    /// The ends of the frames of `frames` in their concatenation.
    fn boundaries(frames: &[Vec<u8>]) -> Vec<usize> {
        frames.iter().scan(0, |end, f| Some(*end + f.len()).inspect(|&e| *end = e)).collect()
    }

    fn check_reassembly(framer: Framer, frames: Vec<Vec<u8>>, mut cuts: Vec<usize>) {
        let stream = frames.concat();
        cuts.iter_mut().for_each(|c| *c %= stream.len() + 1);
        cuts.sort_unstable();
        let (echoed, partial, counted) = reassemble(framer, &stream, &cuts);
        assert!(partial.is_empty(), "a whole stream leaves nothing partial");
        assert_eq!(counted, frames.len(), "every frame counted once");
        assert_eq!(echoed.concat(), stream, "every byte echoed once, in order");
        // Each echoed run ends exactly at a frame boundary: never half a frame.
        let ends = boundaries(&frames);
        let mut at = 0;
        for run in &echoed {
            at += run.len();
            assert!(ends.contains(&at), "an echo ended at {at}, inside a frame");
        }
    }

    proptest! {
        /// Arbitrary lines, cut at arbitrary places, come back whole and in order.
        #[test]
        fn lines_reassemble_exactly(
            lines in prop::collection::vec(prop::collection::vec(0u8..=255, 0..40), 0..20),
            cuts in prop::collection::vec(0usize..1000, 0..30),
        ) {
            let frames: Vec<Vec<u8>> = lines
                .into_iter()
                .map(|mut l| { l.retain(|&b| b != b'\n'); l.push(b'\n'); l })
                .collect();
            check_reassembly(line(41), frames, cuts);
        }

        /// Arbitrary length frames (empty ones too), cut at arbitrary places, come back whole.
        #[test]
        fn length_frames_reassemble_exactly(
            payloads in prop::collection::vec(prop::collection::vec(0u8..=255, 0..300), 0..12),
            cuts in prop::collection::vec(0usize..4000, 0..30),
        ) {
            let frames: Vec<Vec<u8>> = payloads.iter().map(|p| frame(p)).collect();
            check_reassembly(length(300), frames, cuts);
        }
    }
}
