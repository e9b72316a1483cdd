//! The local half of the data path: the app's writes become changes.
//!
//! [`capture`] installs the triggers that record each row-level write;
//! [`stamp`] gives each recorded write a sequence number and a hybrid
//! logical clock stamp and folds it into the change [`log`], the per-row
//! record of which versions win which cells. [`follow`] keeps the catalog
//! and triggers in step with the app's schema as the app upgrades it.

pub(crate) mod assign;
pub(crate) mod capture;
pub(crate) mod follow;
pub(crate) mod log;
pub(crate) mod stamp;
