//! The sending half of the data path: [`export`] picks what a peer lacks
//! from the change log and writes it as a bundle ([`crate::bundle`]);
//! [`setup`] gathers the app's whole schema for a setup bundle and creates
//! it at the receiving end (`init --from`).

pub(crate) mod export;
pub(crate) mod setup;
