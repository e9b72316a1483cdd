//! Arbitrary bytes through the bundle reader and `inspect` (the signed
//! envelope of format 4 first): refused with an error or read, never a
//! panic or unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fieldsync::fuzzing::decode_bundle(data);
});
