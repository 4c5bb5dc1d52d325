//! Arbitrary bytes plus arbitrary cut points (see `split_input`): the stream fed
//! in pieces frames the same requests (method, target, version, headers, decoded
//! body) and the same error as fed whole. Pipelining over TCP depends on this.
//! The checks live in parser/tests/fuzz_checks/mod.rs.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../parser/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| fuzz_checks::check_split_invariance(data));
