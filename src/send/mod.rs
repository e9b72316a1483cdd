//! The sending half of the data path: [`export`] picks what a peer lacks
//! from the change log and writes it as a bundle ([`crate::bundle`]);
//! [`setup`] gathers the app's whole schema for a setup bundle and creates
//! it at the receiving end (`init --from`); [`encrypt`] finds whom an
//! export is encrypted to.

pub(crate) mod encrypt;
pub(crate) mod export;
pub(crate) mod setup;
