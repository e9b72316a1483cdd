//! Read-only views for the operator: [`status`] (what an instance has and
//! owes) and [`check`] (fieldsync's own state against its invariants).

pub(crate) mod check;
pub(crate) mod status;
