//! A mutated bundle imported into a fresh copy of the seed database
//! (fuzz/seed/field-1.sql): refused with the file unchanged, or applied with
//! integrity_check and `fieldsync check` clean and a second import applying
//! nothing. Inputs are bundles opened for mutation (body decompressed, no
//! checksum nor signature); the target compresses, seals and signs them
//! again (the seed database pins no signer and admits unsigned bundles).
#![no_main]

use std::sync::OnceLock;

use fieldsync::fuzzing::ImportTarget;
use libfuzzer_sys::fuzz_target;

static TARGET: OnceLock<ImportTarget> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let target = TARGET.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fieldsync-fuzz-{}", std::process::id()));
        match ImportTarget::new(&dir, include_str!("../seed/field-1.sql")) {
            Ok(t) => t,
            Err(e) => panic!("cannot build the seed database: {e}"),
        }
    });
    let _ = fieldsync::fuzzing::import_mutated(target, data);
});
