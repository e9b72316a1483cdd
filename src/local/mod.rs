//! The local half of the data path: the app's writes become changes.
//!
//! [`capture`] installs the triggers that record each row-level write;
//! [`stamp`] gives each recorded write a sequence number and a hybrid
//! logical clock stamp and folds it into the change [`log`], the per-row
//! record of which versions win which cells.

pub(crate) mod assign;
pub(crate) mod capture;
pub(crate) mod log;
pub(crate) mod stamp;
