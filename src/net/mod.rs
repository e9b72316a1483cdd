//! Network sync (spec/network.md): `fieldsync serve` ([`server`]) and
//! `fieldsync sync` / `push` / `pull` ([`client`]). The network carries the
//! bundles files carry, byte for byte, and applies them with the same
//! checks; what it adds is the signed request ([`auth`]), resuming a cut
//! transfer from the files of [`spool`], and the addresses of servers
//! remembered per peer ([`remotes`]).

pub mod auth;
pub mod client;
mod conn;
pub mod remotes;
pub mod server;
pub mod spool;

pub use client::{Direction, SyncOptions, SyncReport, sync};
pub use remotes::{Forgotten, Remote, Remotes, forget, remember, remembered};
pub use server::{Listening, ServeOptions, ServerImport, serve};
