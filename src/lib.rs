//! # fieldsync
//!
//! Replication for SQLite databases that cannot count on a network. Each
//! instance of an app's database (an HQ server, a field laptop) records its
//! changes with triggers, exchanges them as *bundle* files (a USB stick, an
//! e-mail attachment), and merges what it receives with column-level
//! last-writer-wins, so re-sent data never creates duplicates and two
//! officers editing different fields of one record both keep their edit.
//!
//! The public face is this page: [`Instance`] (one app database under
//! fieldsync), the reports its operations return, one error type per
//! operation ([`Error`] and its families), [`Value`], [`SiteId`], the
//! [`bundle`] reader for `inspect`, and the [`merge`] rules. Everything else
//! is private machinery, in folders that follow the data path:
//!
//! - `base`: the shared values (cell values, clock, cell and sequence sets,
//!   site ids) and the merge rules;
//! - `catalog`: fieldsync's own tables, the app's schema, tracked tables,
//!   row identities and references, peers' watermarks;
//! - `local`: capture (triggers) → stamp (clock and sequence numbers) → the
//!   change log;
//! - `send`: export of what a peer lacks, and the schema of a setup bundle;
//! - [`bundle`]: the file format, written and read;
//! - `receive`: import → apply (merge and write) → quarantine and conflicts;
//! - `admin`: status and check;
//! - [`console`]: the HQ console's web pages, on [`Instance`]'s public face.
//!
//! A folder uses the ones above it in this list, never one below.
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
//! // The field instance takes bundles from HQ once it has enrolled HQ's
//! // key (read over the phone: `fieldsync key` at HQ shows it).
//! let (mut field, _) = Instance::init(dir.path().join("field.db"), "field-1")?;
//! field.connection().execute_batch(schema)?;
//! field.track(&Selection::All)?;
//! let hq_key = hq.key()?;
//! field.enrol("hq", &hq_key.public_key, Some(&hq_key.recipient), Some(&hq_key.site_id))?;
//!
//! // It imports the bundle from any reader.
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
// Every type the public face hands out can be named by its users.
#![warn(unnameable_types)]

mod admin;
mod base;
pub mod bundle;
mod catalog;
pub mod console;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod instance;
pub mod json;
mod local;
pub mod net;
mod receive;
mod send;

pub use admin::check::{CheckReport, Invariant, Problem};
pub use admin::clock::ClockStatus;
pub use admin::fingerprint::{Fingerprints, TableFingerprint};
pub use admin::history::{CellHistory, LostValue, RowHistory, RowVersion};
pub use admin::schema::{PeerSchema, SchemaReport, TableSchema};
pub use admin::status::{InterruptedImport, OriginStatus, PeerStatus, Status, TableStatus};
pub use admin::trust::{Enrolled, Revoked, TrustList, TrustSettings, Trusted};
pub use base::hlc::span;
pub use base::merge;
pub use base::site_id::SiteId;
pub use base::value::Value;
pub use catalog::clocks::{DEFAULT_MAX_CLOCK_AHEAD_MS, MAX_CLOCK_AHEAD_KEY, SeenClock};
pub use catalog::journal::{JournalEntry, JournalKind, Via};
pub use catalog::keyring::Role;
pub use catalog::keys::{KeyReport, signing_fingerprint};
pub use catalog::layout::{Identity, TrackOptions};
pub use catalog::refused::RefusedBundle;
pub use error::{
    BundleError, CheckError, ClockError, ConsoleError, EnvelopeError, Error, ExportError,
    ImportError, NetError, Result, SetupError, SiteError, TrackError, TrustError,
};
pub use instance::{
    CompactReport, InitReport, Instance, PreviewOptions, SetupOptions, SetupReport,
    signer_fingerprints,
};
pub use local::capture::{Selection, TableIdentity, TrackReport};
pub use receive::applier::TableImport;
pub use receive::conflicts::{Conflicts, HeldChange, Overwritten};
pub use receive::import::{
    DEFAULT_MAX_WRITE_MS, FileImport, ImportOptions, ImportReport, ImportSummary, RetryReport,
};
pub use receive::parts::{
    JoinedBundle, JoinedParts, KeptPart, ReceivedParts, receive as receive_parts,
};
pub use receive::preview::{
    ColumnChange, ColumnCount, ConflictPreview, FilePreview, HeldPreview, ImportPreview, RowAction,
    RowChange, RowKey, TablePreview,
};
pub use receive::quarantine::{DEFAULT_MAX_HELD, Discard, DiscardedChange, MAX_HELD_KEY};
pub use receive::schema_changes::{HeldSchema, SchemaMode};
pub use receive::trust::{ACCEPT_UNSIGNED_KEY, MAX_UNSIGNED_DAYS};
pub use receive::waiting::WaitingSummary;
pub use send::export::{ExportOptions, ExportReport, ExportTarget, Overwrite, TableCount};
