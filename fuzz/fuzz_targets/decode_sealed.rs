//! Like decode_bundle, but the checksum is recomputed (and, for format 4,
//! signed again by the harness's key) after mutation so the header and body
//! decoders see the damage; a bundle that reads must read
//! the same after being written again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fieldsync::fuzzing::decode_sealed(data);
});
