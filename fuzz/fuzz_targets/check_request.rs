//! Arbitrary bytes as a request's method, path and headers through the
//! checks `fieldsync serve` makes before it reads a body: the signature
//! headers, the replay window, a transfer id and a range. A refusal or a
//! signed request, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fieldsync::fuzzing::check_request(data);
});
