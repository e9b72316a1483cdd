//! # fieldsync
//!
//! Replication for SQLite databases that cannot count on a network. Each
//! instance of an app's database (an HQ server, a field laptop) records its
//! changes with triggers, exchanges them as *bundle* files (a USB stick, an
//! e-mail attachment), and merges what it receives with column-level
//! last-writer-wins, so re-sent data never creates duplicates and two
//! officers editing different fields of one record both keep their edit.
//!
//! The data path, one module per step:
//! [`capture`] (triggers) → [`stamp`] (HLC [`hlc`], sequence numbers, into
//! the [`log`]) → [`export`] → [`bundle`] writer → file → [`bundle`] reader
//! → [`import`] using the rules in [`merge`]; [`peers`] keeps the watermarks.
//! [`identity`] says which row is which on every instance (tables keyed by
//! local numbers or by nothing), [`refs`] how references travel.
//!
//! ```
//! use fieldsync::{ExportTarget, Instance, Selection};
//!
//! let dir = tempfile::tempdir()?;
//! let schema = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, status TEXT);";
//!
//! // HQ: an existing app database, set up and tracked.
//! let (mut hq, _) = Instance::init(dir.path().join("hq.db"), "hq")?;
//! hq.connection().execute_batch(schema)?;
//! hq.connection().execute("INSERT INTO person VALUES ('p-1', 'Amal', 'missing')", [])?;
//! hq.track(&Selection::All)?;
//!
//! // Export what the field instance lacks, to any writer.
//! let mut bundle = Vec::new();
//! hq.export(&ExportTarget::Peer { to: "field-1".into(), resend: false }, &mut bundle)?;
//!
//! // The field instance imports it from any reader.
//! let (mut field, _) = Instance::init(dir.path().join("field.db"), "field-1")?;
//! field.connection().execute_batch(schema)?;
//! field.track(&Selection::All)?;
//! let report = field.import(std::io::Cursor::new(&bundle))?;
//! assert_eq!(report.applied, 1);
//!
//! // Importing the same bundle again changes nothing.
//! assert_eq!(field.import(std::io::Cursor::new(&bundle))?.applied, 0);
//! let name: String = field.connection().query_row("SELECT name FROM person", [], |r| r.get(0))?;
//! assert_eq!(name, "Amal");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod apply;
pub mod bundle;
pub mod capture;
pub mod check;
pub mod colset;
pub mod conflicts;
pub mod error;
pub mod export;
pub mod foreign;
#[doc(hidden)]
pub mod fuzzing;
pub mod hlc;
pub mod identity;
pub mod import;
mod instance;
mod keyform;
pub mod log;
pub mod merge;
pub mod peers;
pub mod quarantine;
pub mod refs;
pub mod schema;
pub mod seqset;
mod session;
pub mod setup;
pub mod site;
pub mod stamp;
pub mod status;
pub mod store;
pub mod tracked;
pub mod value;

pub use capture::{Selection, TrackReport};
pub use check::{CheckError, CheckReport};
pub use conflicts::Conflicts;
pub use error::{
    BundleError, Error, ExportError, ImportError, Result, SetupError, SiteError, TrackError,
};
pub use export::{ExportReport, ExportTarget};
pub use identity::TrackOptions;
pub use import::{ImportReport, RetryReport};
pub use instance::{CompactReport, Instance, SetupReport};
pub use site::SiteId;
pub use status::Status;
pub use tracked::Identity;
pub use value::Value;
