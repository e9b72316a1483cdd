//! Read-only views for the operator: [`status`] (what an instance has and
//! owes), [`schema`] (schema versions, held schema changes, waiting values)
//! and [`check`] (fieldsync's own state against its invariants).

pub(crate) mod check;
pub(crate) mod schema;
pub(crate) mod status;
pub(crate) mod trust;
