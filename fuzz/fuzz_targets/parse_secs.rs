//! `parse_secs` on any text: never a panic, and a duration it accepts can be added to
//! `Instant::now()` without overflow (the server computes deadlines that way).
#![no_main]

use std::time::Instant;

use echoloop::parse_secs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(duration) = parse_secs(text) else { return };
    assert!(duration.as_secs_f64() <= 1e9, "{text:?} -> {duration:?}");
    assert!(Instant::now().checked_add(duration).is_some(), "{text:?} -> {duration:?} overflows an Instant");
});
