//! `parse_size` on any text: never a panic, and a size it accepts is at least 1 byte and
//! equals its number times its unit, worked out here another way (the longest unit the
//! lower-cased text ends with, in 128-bit arithmetic, so no overflow can hide).
#![no_main]

use echoloop::parse_size;
use libfuzzer_sys::fuzz_target;

/// Longest first, so "kib" is not read as "b".
const UNITS: [(&str, u128); 10] = [
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("kb", 1 << 10),
    ("mb", 1 << 20),
    ("gb", 1 << 30),
    ("k", 1 << 10),
    ("m", 1 << 20),
    ("g", 1 << 30),
    ("b", 1),
];

fuzz_target!(|text: &str| {
    let Ok(bytes) = parse_size(text) else { return };
    assert!(bytes >= 1, "{text:?} -> 0");
    let lower = text.trim().to_ascii_lowercase();
    let (number, unit) =
        UNITS.iter().find_map(|(name, unit)| Some((lower.strip_suffix(name)?, *unit))).unwrap_or((&lower, 1));
    assert!(!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()), "{text:?} accepted");
    let number: u128 = number.parse().unwrap_or_else(|e| panic!("{text:?} accepted with {number:?}: {e}"));
    assert_eq!(bytes as u128, number * unit, "{text:?}");
});
