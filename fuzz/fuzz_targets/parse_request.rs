//! Arbitrary bytes (byte 0 selects the limits) framed as a pipeline: no panic,
//! `consumed` within the input, every complete request re-parses identically from
//! exactly its own bytes. The checks live in parser/tests/fuzz_checks/mod.rs.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../parser/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| fuzz_checks::check_parse_request(data));
