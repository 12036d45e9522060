//! `Framer::split` fed any bytes in any chunks, as reads deliver them: never a panic, the
//! bytes it calls whole and the partial frame it leaves add up to the input exactly, what
//! it calls whole ends on a frame boundary, and a partial frame never holds a whole one.
#![no_main]

use echoloop::{Framer, Framing, Rest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // Byte 0: the framing; bytes 1-2: the limit; byte 3: a seed for the chunk sizes.
    let [kind, hi, lo, seed, data @ ..] = input else { return };
    let framing = if kind % 2 == 0 { Framing::Line } else { Framing::Length };
    let framer = Framer::new(framing, usize::from(u16::from_be_bytes([*hi, *lo])).max(1));
    let mut emitted = Vec::new(); // what the server would echo
    let mut partial: Vec<u8> = Vec::new(); // what it would hold
    let mut rest = data;
    let mut step = usize::from(*seed) + 1;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(step.min(rest.len()));
        step = step * 7 % 61 + 1; // varied chunk sizes, 1..=61
        rest = tail;
        let split = framer.split(&partial, chunk);
        assert!(split.whole <= chunk.len());
        if split.whole > 0 {
            emitted.append(&mut partial);
            emitted.extend_from_slice(&chunk[..split.whole]);
        }
        partial.extend_from_slice(&chunk[split.whole..]);
        if let Rest::TooLarge(_) = split.rest {
            break; // the server closes here
        }
        // The held bytes are never a whole frame: split alone, none of it is whole.
        let again = framer.split(&[], &partial);
        assert_eq!(again.whole, 0, "a partial frame held a whole frame");
    }
    // Everything echoed plus what is held is the input's prefix, in order.
    let consumed = emitted.len() + partial.len();
    assert_eq!([&emitted[..], &partial[..]].concat(), data[..consumed]);
    // What was echoed ends on a frame boundary: re-split from scratch, all of it is whole.
    if !emitted.is_empty() {
        assert_eq!(framer.split(&[], &emitted).whole, emitted.len());
    }
});
