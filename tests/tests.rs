//! The integration tests, built as one test binary (as ripgrep does): one
//! link instead of one per file, the helpers in [`util`] compiled once, and
//! every test run by one harness, in parallel across modules.
//!
//! Each module owns one concern and says which in its first lines. Cargo
//! does not look for other test binaries here (`autotests = false` in
//! Cargo.toml): a new file under tests/ runs only once it is declared below.
//! Pick tests by module path, e.g. `cargo test --test tests model::` or
//! `cargo test --test tests crash:: -- --nocapture`.

mod util;

mod bounded_quarantine;
mod capture;
mod check;
mod claims;
mod cli;
mod clock;
mod console;
mod console_browser;
mod convergence;
mod corruption;
mod crash;
mod encrypt;
mod enrolment;
mod fingerprint;
mod format;
mod fuzz_corpus;
mod gaps;
mod json;
mod keys;
mod layers;
mod model;
mod network;
mod preview;
mod quarantine_regressions;
mod regressions;
mod scenario;
mod schema;
mod setup_aware;
mod split;
mod tables;
mod toolkit;
mod trigger_names;
mod trust;
mod write_locks;
