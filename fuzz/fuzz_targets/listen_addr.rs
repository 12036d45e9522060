//! `ListenAddr::from_str` on any text: never a panic, and an address that parses prints
//! back (`Display`) as text that parses to the same address.
#![no_main]

use echoloop::ListenAddr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(addr) = text.parse::<ListenAddr>() else { return };
    let printed = addr.to_string();
    let again: ListenAddr = printed.parse().unwrap_or_else(|e| panic!("{text:?} -> {printed:?}: {e}"));
    assert_eq!(again, addr, "{text:?} printed as {printed:?}");
});
