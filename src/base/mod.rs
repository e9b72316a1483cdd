//! The values every other part shares, with no storage of their own: a
//! cell's [`value::Value`], the hybrid logical clock ([`hlc`]), sets of cells
//! ([`colset`]) and of sequence numbers ([`seqset`]), an instance's
//! [`site_id::SiteId`], the merge rules on one row ([`merge`]), and the
//! lowercase [`hex`] that ids, hashes and nonces are written in.
//!
//! Nothing here reads or writes a database; nothing here depends on any
//! other folder.

pub mod colset;
pub mod hlc;
pub mod merge;
pub mod seqset;
pub mod site_id;
pub mod value;

/// Lowercase hex: how site ids in file names, bundle and upload ids, nonces
/// and hashes are written.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
