//! The values every other part shares, with no storage of their own: a
//! cell's [`value::Value`], the hybrid logical clock ([`hlc`]), sets of cells
//! ([`colset`]) and of sequence numbers ([`seqset`]), an instance's
//! [`site_id::SiteId`], and the merge rules on one row ([`merge`]).
//!
//! Nothing here reads or writes a database; nothing here depends on any
//! other folder.

pub mod colset;
pub mod hlc;
pub mod merge;
pub mod seqset;
pub mod site_id;
pub mod value;
