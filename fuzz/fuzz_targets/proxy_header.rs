//! `ProxyDecoder` fed any bytes in any chunks, as reads deliver them: never a panic; the
//! verdict (need more, a header, invalid) is the one the same bytes get in a single read;
//! a header found ends inside the bytes fed, no later; and a header found is found again,
//! with the same source, when only its own bytes are fed.
#![no_main]

use echoloop::{ProxyDecoder, ProxyProgress};
use libfuzzer_sys::fuzz_target;

/// The verdict on `data` fed in chunks that follow `seed`: the header (with its end in `data`)
/// or whether it is invalid (`Err(true)`) or unfinished (`Err(false)`).
fn in_chunks(data: &[u8], seed: u8) -> Result<(echoloop::ProxyHeader, usize), bool> {
    let mut decoder = ProxyDecoder::new();
    let mut at = 0;
    let mut step = usize::from(seed) + 1;
    while at < data.len() {
        let chunk = &data[at..(at + step).min(data.len())];
        step = step * 7 % 61 + 1; // varied chunk sizes, 1..=61
        match decoder.feed(chunk) {
            ProxyProgress::NeedMore => at += chunk.len(),
            ProxyProgress::Done { header, consumed } => {
                assert!(consumed <= chunk.len(), "consumed {consumed} of a {}-byte read", chunk.len());
                return Ok((header, at + consumed));
            }
            ProxyProgress::Invalid(_) => return Err(true),
        }
    }
    Err(false)
}

fuzz_target!(|input: &[u8]| {
    // Byte 0: a seed for the chunk sizes; then what a client sent. Inputs led by 'P' or the
    // v2 signature's first byte reach the parsers; the corpus soon finds both.
    let [seed, data @ ..] = input else { return };
    let whole = match ProxyDecoder::new().feed(data) {
        ProxyProgress::NeedMore => Err(false),
        ProxyProgress::Done { header, consumed } => Ok((header, consumed)),
        ProxyProgress::Invalid(_) => Err(true),
    };
    assert_eq!(in_chunks(data, *seed), whole, "chunked and whole disagree");
    if let Ok((header, end)) = whole {
        assert_eq!(header.len, end, "the header's length is where it ended");
        let alone = ProxyDecoder::new().feed(&data[..end]);
        assert_eq!(alone, ProxyProgress::Done { header, consumed: end }, "its own bytes alone");
    }
});
