//! Arbitrary bytes through the encrypted envelope's reader (outer header,
//! age header and chunks) with the harness's identity, and what decrypts
//! through `verify` and `inspect`: refused with an error or read, never a
//! panic or unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fieldsync::fuzzing::decode_envelope(data);
});
