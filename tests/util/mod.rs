//! Helpers shared by the test modules, each written once. Most drive the
//! real `fieldsync` binary and the system `sqlite3` shell as separate
//! processes, the way an operator or an app would, on instances living in
//! one temporary directory; `instances` drives the library instead, and
//! `histories` runs the property tests over random histories.
//!
//! Every helper returns a `Result` so a test can use `?`; commands that are
//! expected to succeed return an error carrying their stderr when they do not.

pub mod cli;
pub mod histories;
pub mod instances;
pub mod net;
pub mod shell;
pub mod world;

pub use cli::*;
pub use shell::*;
pub use world::*;

/// Result type of the tests and helpers.
pub type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;
