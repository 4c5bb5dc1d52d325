//! The chunked decoder alone: arbitrary bytes as a chunked body (extensions,
//! trailers, sizes near `u64::MAX`), cut anywhere, checked against itself fed whole,
//! against `decode_chunked` and against a naive reference decoder. The checks live
//! in parser/tests/fuzz_checks/mod.rs.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../parser/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| fuzz_checks::check_chunked(data));
