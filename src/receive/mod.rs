//! The receiving half of the data path: [`import`] reads a bundle, checks
//! everything it claims, and hands each row's versions to [`apply`], which
//! merges them by the rules of [`crate::merge`] and has [`write`](mod@write)
//! write the app's rows; [`settle`] retries the changes the database
//! refused, and those that cannot be written yet wait in [`quarantine`].
//! Before anything of a bundle is looked at, [`trust`] decides whether its
//! signer may send it, [`recipients`] records the key to encrypt back
//! to it, and [`claims`] whether its header claims no more change numbers
//! than the origins signed they made. Values overwritten by concurrent edits are logged in [`conflicts`]. A
//! change's writes that must vanish together sit in a savepoint
//! ([`crate::catalog::savepoint`]); what
//! the changes of one import share while applied is an [`applier`]. A
//! bundle's schema for a table that differs from the one here is planned
//! into additive, checked statements by [`upgrade`]. Parts of split
//! bundles are kept until their siblings come, then joined, by [`parts`].
//! What an import would do, found on a copy of the database, is reported
//! by [`preview`].

pub(crate) mod applier;
pub(crate) mod apply;
pub(crate) mod claims;
pub(crate) mod conflicts;
pub(crate) mod import;
pub mod parts;
pub(crate) mod preview;
pub(crate) mod quarantine;
pub(crate) mod recipients;
pub(crate) mod schema_changes;
pub(crate) mod settle;
pub(crate) mod trust;
pub(crate) mod upgrade;
pub(crate) mod waiting;
pub(crate) mod write;
