//! What an instance knows about itself and the app's database, kept in
//! fieldsync's own tables ([`store`]): its site and the instances it heard of
//! ([`site`]), the app's schema as SQLite describes it ([`schema`]), which
//! tables are tracked and how ([`tracked`], [`keyform`]), how rows and
//! references are recognised on every instance ([`identity`], [`refs`]),
//! which references the engine follows ([`foreign`]), what each peer has
//! ([`peers`]), this instance's own key pairs ([`keys`]), the keyring of
//! trusted instances ([`keyring`]), the clock bound and the clocks seen
//! ([`clocks`]), the journal of refused bundles ([`refused`]), the newest
//! statement of each origin ([`statements`]), and the per-connection state loaded from all of it
//! ([`session`]). [`savepoint`] is the guard every part that writes in
//! steps uses.
//!
//! The catalog depends only on [`crate::base`] and [`crate::error`]; the
//! data path (`local`, `send`, `receive`) reads and updates it.

pub(crate) mod clocks;
pub(crate) mod foreign;
pub(crate) mod identity;
pub(crate) mod journal;
pub(crate) mod keyform;
pub(crate) mod keyring;
pub(crate) mod keys;
pub(crate) mod layout;
pub(crate) mod peers;
pub(crate) mod refs;
pub(crate) mod refused;
pub(crate) mod savepoint;
pub(crate) mod schema;
pub(crate) mod session;
pub(crate) mod site;
pub(crate) mod statements;
pub(crate) mod store;
pub(crate) mod tracked;
