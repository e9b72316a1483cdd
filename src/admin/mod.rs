//! Read-only views for the operator: [`status`] (what an instance has and
//! owes), [`schema`] (schema versions, held schema changes, waiting values)
//! [`check`] (fieldsync's own state against its invariants), [`fingerprint`]
//! (a content hash per table, to compare two instances), and the
//! clock against the wall clock and the peers' clocks ([`clock`]), which
//! `status` and `check` both report.

pub(crate) mod check;
pub(crate) mod clock;
pub(crate) mod fingerprint;
pub(crate) mod history;
pub(crate) mod schema;
pub(crate) mod status;
pub(crate) mod trust;
