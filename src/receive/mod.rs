//! The receiving half of the data path: [`import`] reads a bundle, checks
//! everything it claims, and hands each row's versions to [`apply`], which
//! merges them by the rules of [`crate::merge`] and writes the app's rows;
//! changes that cannot be written yet wait in [`quarantine`], and values
//! overwritten by concurrent edits are logged in [`conflicts`].

pub(crate) mod apply;
pub(crate) mod conflicts;
pub(crate) mod import;
pub(crate) mod quarantine;
