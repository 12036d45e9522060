//! `parse_size` on any text: never a panic, and a size it accepts is at least 1 byte and
//! equals its digits times its suffix, computed here without overflow in 128 bits.
#![no_main]

use echoloop::parse_size;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(bytes) = parse_size(text) else { return };
    assert!(bytes >= 1, "{text:?} -> 0");
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let multiplier: u128 = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => panic!("{text:?} accepted with suffix {other:?}"),
    };
    let n: u128 = digits.parse().unwrap_or_else(|e| panic!("{text:?} accepted with digits {digits:?}: {e}"));
    assert_eq!(bytes as u128, n * multiplier, "{text:?}");
});
