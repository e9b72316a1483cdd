//! [`Instance`]: an app database with fieldsync set up in it, and the
//! operations on it. Each operation is one SQLite transaction; the engine
//! logic lives in the modules it calls.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;

use crate::admin::status::Status;
use crate::admin::trust::{Enrolled, Revoked, TrustList};
use crate::base::site_id::SiteId;
use crate::bundle::envelope::{Opened, OuterHeader, check_agrees};
use crate::bundle::{BundleReader, Header, SiteRef, verify};
use crate::catalog::journal::{JournalEntry, JournalKind, Via};
use crate::catalog::keys::KeyReport;
use crate::catalog::layout::TrackOptions;
use crate::catalog::session::Session;
use crate::catalog::site::{check_name, check_new_name, meta_get, meta_set};
use crate::catalog::store::{
    ENGINE_SCHEMA, create_engine_tables, data_version, is_initialised, open_existing,
    open_or_create,
};
use crate::error::{EnvelopeError, Error, ExportError, SetupError, SiteError};
use crate::local::capture::{Selection, TrackReport, pending_count, track};
use crate::receive::conflicts::Conflicts;
use crate::receive::import::{
    ImportOptions, ImportReport, RetryReport, Steps, check_records, import, import_in_steps,
};
use crate::receive::preview::{FilePreview, ImportPreview};
use crate::receive::trust::ACCEPT_UNSIGNED_KEY;
use crate::send::export::{
    ExportOptions, ExportReport, ExportTarget, Overwrite, Replaced, check_overwrite, export,
    find_vanished, prepare, record_prepared, write_prepared,
};

/// How many times an export plans again because another connection
/// committed between its plan and its read of the rows, before it runs in
/// one write transaction.
const EXPORT_TRIES: usize = 5;

/// An app database set up for fieldsync.
pub struct Instance {
    conn: Connection,
    path: PathBuf,
}

/// What `init --from` did.
#[derive(Debug, Clone, Serialize)]
pub struct SetupReport {
    /// Tables created and tracked.
    pub tables: Vec<String>,
    /// The app's untracked tables, created empty: each instance keeps its
    /// own rows of them.
    pub local_tables: Vec<String>,
    /// The app's views, created.
    pub views: Vec<String>,
    /// The instance whose full export it was, now a known peer.
    #[serde(rename = "sender_instance")]
    pub from: String,
    /// The import of the bundle's rows.
    pub import: ImportReport,
}

/// What `init` without `--from` did.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    /// The instance's name.
    pub instance: String,
    /// Its site id.
    pub site: String,
    /// False if the database already was this instance (nothing changed).
    pub created: bool,
}

/// What `compact` did.
#[derive(Debug, Clone, Serialize)]
pub struct CompactReport {
    /// Captured changes folded into the log.
    pub captured: u64,
    /// Log entries before.
    pub log_entries_before: u64,
    /// Log entries after.
    pub log_entries: u64,
    /// Rows found deleted without a trigger (`INSERT OR REPLACE`), now
    /// recorded as deletes.
    pub vanished: u64,
    /// The app's schema changes it followed (spec/schema.md), one line each.
    pub warnings: Vec<String>,
}

impl Instance {
    /// Set up fieldsync in the database at `path` (creating the file if
    /// needed) as the instance `name`. Running it again with the same name
    /// changes nothing; the flag says whether anything was created.
    pub fn init(path: impl AsRef<Path>, name: &str) -> Result<(Instance, bool), Error> {
        let path = path.as_ref();
        valid_name(name)?;
        ensure_parent_dir(path)?;
        let mut conn = open_or_create(path)?;
        if is_initialised(&conn)? {
            let instance = Instance::from_conn(conn, path)?;
            let existing: String = meta_get(&instance.conn, "name")?.unwrap_or_default();
            if existing != name {
                return Err(SiteError::NameMismatch {
                    path: path.to_owned(),
                    existing,
                    requested: name.to_owned(),
                }
                .into());
            }
            return Ok((instance, false));
        }
        valid_new_name(name)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        create_instance(&tx, name)?;
        // Made with `init`, it is its own anchor: it enrols the others.
        crate::catalog::keyring::anchor_self(&tx)?;
        tx.commit()?;
        Ok((
            Instance {
                conn,
                path: path.to_owned(),
            },
            true,
        ))
    }

    /// Set up a new instance `name` in the database at `path` from a full
    /// export: create the bundle's tables, its local tables (empty) and its
    /// views (every statement is checked first, see `src/send/setup.rs`), track
    /// the tables, load the rows, and know the sender as a peer, so the
    /// first export to it carries only what is done here. The database must
    /// not have any of the tables or views; if anything fails, nothing is
    /// changed (a file this call created is removed). The bundle must be
    /// signed (format version 4) by the instance whose fingerprint
    /// `opts.expect_key` gives, which becomes the new instance's anchor: the
    /// instance whose enrolments it believes (spec/trust.md).
    pub fn init_from<R: Read + Seek>(
        path: impl AsRef<Path>,
        name: &str,
        mut bundle: R,
        bundle_path: &Path,
        opts: &SetupOptions,
    ) -> Result<(Instance, SetupReport), Error> {
        let path = path.as_ref();
        valid_new_name(name)?;
        ensure_parent_dir(path)?;
        // The new instance has no key anyone could have encrypted to.
        if crate::bundle::envelope::is_envelope(&mut bundle)? {
            let outer = crate::bundle::envelope::read_outer(&mut bundle)?;
            return Err(EnvelopeError::EncryptedSetup {
                recipients: outer.recipient_names(),
            }
            .into());
        }
        let signer = verify(&mut bundle)?;
        if signer.key.is_none() && !opts.allow_unsigned {
            return Err(crate::error::TrustError::UnsignedSetup {
                version: signer.version,
            }
            .into());
        }
        let reader = BundleReader::open(bundle)?;
        let header = reader.header().clone();
        if !header.full {
            return Err(SetupError::NotFull {
                path: bundle_path.to_owned(),
            }
            .into());
        }
        if let Some(key) = signer.key {
            expect_key(&header, &key, opts.expect_key.as_deref())?;
        }
        let statements = crate::send::setup::check_schema(&header)?;
        let existed = path.exists();
        let result = Instance::set_up(path, name, &header, &statements, reader);
        if result.is_err() && !existed {
            for suffix in ["", "-journal", "-wal", "-shm"] {
                let mut p = path.as_os_str().to_owned();
                p.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(p));
            }
        }
        result
    }

    fn set_up<R: Read>(
        path: &Path,
        name: &str,
        header: &Header,
        statements: &[String],
        reader: BundleReader<R>,
    ) -> Result<(Instance, SetupReport), Error> {
        let conn = open_or_create(path)?;
        if is_initialised(&conn)? {
            let existing: String = meta_get(&conn, "name")?.unwrap_or_default();
            return Err(SetupError::AlreadySetUp {
                path: path.to_owned(),
                name: existing,
            }
            .into());
        }
        for def in &header.tables {
            if crate::catalog::schema::table_shape(&conn, &def.name).is_ok() {
                return Err(SetupError::TableExists {
                    path: path.to_owned(),
                    table: def.name.clone(),
                }
                .into());
            }
        }
        let others = header
            .local_tables
            .iter()
            .map(|t| &t.name)
            .chain(header.views.iter().map(|v| &v.name));
        for name in others {
            if let Some(kind) = object_named(&conn, name)? {
                return Err(SetupError::NameTaken {
                    path: path.to_owned(),
                    kind,
                    name: name.clone(),
                }
                .into());
            }
        }
        let mut instance = Instance {
            conn,
            path: path.to_owned(),
        };
        let tables: Vec<String> = header.tables.iter().map(|t| t.name.clone()).collect();
        let import = instance.with_import_settings(|this| {
            let tx = this
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            create_instance(&tx, name)?;
            // Set up from another instance's file, it takes that instance's
            // later schema changes as they come (spec/schema.md).
            crate::receive::schema_changes::set_mode(
                &tx,
                crate::receive::schema_changes::SchemaMode::Apply,
            )?;
            // One statement each (checked), run as one: a text holding more
            // would fail here rather than run unchecked.
            for sql in statements {
                tx.prepare(sql)?.execute([])?;
            }
            let mut s = Session::load(&tx)?;
            // Each table is identified as at the sender, so rows match.
            let as_sent: Vec<_> = header
                .tables
                .iter()
                .map(|d| (d.name.clone(), d.identity, d.key.first().cloned()))
                .collect();
            track(
                &tx,
                &mut s.catalog,
                &Selection::Named(tables.clone()),
                &TrackOptions::default(),
                &as_sent,
            )?;
            // The file's signer is this instance's anchor: the instance
            // whose enrolments and revocations it believes.
            if let Some(key) = reader.signer().key {
                crate::catalog::keyring::anchor_to(&tx, &key)?;
                let mut ring = crate::catalog::keyring::Keyring::load(&tx)?;
                ring.put(
                    key.to_bytes(),
                    Some(header.sender.id),
                    &header.sender.name,
                    None,
                    crate::catalog::keyring::Role::Enrolled,
                );
                ring.make_anchor(&key.to_bytes());
                ring.save(&tx)?;
            }
            // An unsigned file was allowed by the caller: for this import
            // only, the setting is gone when it commits.
            let unsigned = reader.signer().key.is_none();
            if unsigned {
                meta_set(&tx, ACCEPT_UNSIGNED_KEY, i64::MAX)?;
            }
            let began = Instant::now();
            let report = import(&tx, &mut s, reader)?;
            let entry = import_entry(&report, Via::File, None, began);
            crate::catalog::journal::record(&tx, &entry)?;
            if unsigned {
                crate::catalog::site::meta_delete(&tx, ACCEPT_UNSIGNED_KEY)?;
            }
            tx.commit()?;
            Ok(report)
        })?;
        Ok((
            instance,
            SetupReport {
                tables,
                local_tables: header.local_tables.iter().map(|t| t.name.clone()).collect(),
                views: header.views.iter().map(|v| v.name.clone()).collect(),
                from: import.from.clone(),
                import,
            },
        ))
    }

    /// Open a database that `init` has set up.
    pub fn open(path: impl AsRef<Path>) -> Result<Instance, Error> {
        let path = path.as_ref();
        open_existing(path)
            .and_then(|conn| Instance::from_conn(conn, path))
            .map_err(|e| crate::catalog::store::not_a_database(e, path))
    }

    fn from_conn(conn: Connection, path: &Path) -> Result<Instance, Error> {
        if !is_initialised(&conn)? {
            return Err(SiteError::NotInitialized {
                path: path.to_owned(),
            }
            .into());
        }
        let schema: i64 = meta_get(&conn, "schema")?.unwrap_or(0);
        if schema > ENGINE_SCHEMA {
            return Err(SiteError::NewerEngine {
                path: path.to_owned(),
                found: schema,
                supported: ENGINE_SCHEMA,
            }
            .into());
        }
        if schema < ENGINE_SCHEMA {
            // Tables added since: created in place, nothing else changes.
            let tx = conn.unchecked_transaction()?;
            create_engine_tables(&tx)?;
            // Engine schema 7: every instance has its own key pairs.
            // Engine schema 8: fieldsync_pins (created above, empty).
            // Engine schema 9: fieldsync_clocks, fieldsync_refused and
            // fieldsync_statements (created above, empty); fieldsync_pins
            // becomes the keyring (create_engine_tables).
            // Engine schema 10: fieldsync_journal (created above, empty)
            // and fieldsync_discarded.discarded_by (added, NULL).
            crate::catalog::keys::ensure_keys(&tx)?;
            meta_set(&tx, "schema", ENGINE_SCHEMA)?;
            tx.commit()?;
        }
        Ok(Instance {
            conn,
            path: path.to_owned(),
        })
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for the app's own reads and writes (they are captured
    /// like any other client's).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// This instance's site id.
    pub fn site_id(&self) -> Result<SiteId, Error> {
        Ok(Session::load(&self.conn)?.local)
    }

    /// This instance's name.
    pub fn name(&self) -> Result<String, Error> {
        Ok(Session::load(&self.conn)?.name)
    }

    /// This instance's public identity: name, site id, public keys and
    /// their fingerprint (`fieldsync key`; spec/trust.md). The private keys
    /// never leave the database.
    pub fn key(&self) -> Result<KeyReport, Error> {
        let session = Session::load(&self.conn)?;
        let keys = crate::catalog::keys::public_keys(&self.conn)?;
        Ok(KeyReport {
            name: session.name,
            site_id: session.local.to_string(),
            public_key: keys.public_key_text(),
            fingerprint: keys.fingerprint(),
            signing_fingerprint: crate::catalog::keys::signing_fingerprint(keys.sign.as_bytes()),
            recipient: keys.recipient,
        })
    }

    /// Import unsigned bundles (format versions 1 to 3, written by an older
    /// fieldsync) for the next `days` days, 1 to 90 (`fieldsync trust
    /// --allow-unsigned-for DAYS`; 30 is enough to upgrade a deployment).
    /// Returns the end of the period (unix ms).
    pub fn allow_unsigned_for(&mut self, days: u32) -> Result<i64, Error> {
        self.write(|tx, _| crate::receive::trust::allow_unsigned_for(tx, days))
    }

    /// Until when unsigned bundles are imported (unix ms), if a period was
    /// set.
    pub fn unsigned_allowed_until(&self) -> Result<Option<i64>, Error> {
        meta_get(&self.conn, ACCEPT_UNSIGNED_KEY)
    }

    /// Enrol the instance `name` by its public signing key and, if given,
    /// its age recipient and site id, as `fieldsync key` on it prints them
    /// (`fieldsync trust NAME KEY [RECIPIENT]`, or `--stdin` with its `key
    /// --json`): its bundles are imported from then on, and bundles to it
    /// can be encrypted once its recipient and site id are known. On an
    /// instance that is its own anchor (HQ), the enrolment travels, signed,
    /// to every instance set up from it.
    pub fn enrol(
        &mut self,
        name: &str,
        public_key: &str,
        recipient: Option<&str>,
        site_id: Option<&str>,
    ) -> Result<Enrolled, Error> {
        self.write(|tx, s| crate::admin::trust::enrol(tx, s, name, public_key, recipient, site_id))
    }

    /// Revoke the instance `name` (a stolen laptop): its later bundles are
    /// refused, here and wherever this instance's signed revocation reaches
    /// if it is its own anchor; what it sent before stays.
    pub fn revoke(&mut self, name: &str) -> Result<Revoked, Error> {
        self.write(|tx, s| crate::admin::trust::revoke(tx, s, name))
    }

    /// Name this instance's anchor, for a database set up before
    /// enrolment: its own name (it is HQ) or an instance pinned here.
    /// Returns the anchor's name.
    pub fn set_anchor(&mut self, name: &str) -> Result<String, Error> {
        self.write(|tx, s| crate::admin::trust::set_anchor(tx, s, name))
    }

    /// The instances this instance takes bundles from, and its anchor.
    pub fn trusted(&self) -> Result<TrustList, Error> {
        let s = Session::load(&self.conn)?;
        crate::admin::trust::list(&self.conn, &s)
    }

    /// The keyring with the migration period and the clock bound, as
    /// `fieldsync trust` shows them. Reads only.
    pub fn trust_settings(&mut self) -> Result<crate::admin::trust::TrustSettings, Error> {
        let until = self.unsigned_allowed_until()?;
        Ok(crate::admin::trust::TrustSettings {
            list: self.trusted()?,
            unsigned_until: until,
            accepts_unsigned_now: until.is_some_and(|t| t > crate::base::hlc::now_unix_ms()),
            max_clock_ahead_ms: self.max_clock_ahead_ms()?,
        })
    }

    fn write<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &mut Session) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut session = Session::load(&tx)?;
        let out = f(&tx, &mut session)?;
        tx.commit()?;
        Ok(out)
    }

    /// Start tracking tables: install capture triggers and record the rows
    /// they already hold.
    pub fn track(&mut self, selection: &Selection) -> Result<TrackReport, Error> {
        self.track_with(selection, &TrackOptions::default())
    }

    /// [`track`](Self::track) with options: tables to leave out, an
    /// identity column, tables whose integer key the app assigns itself.
    pub fn track_with(
        &mut self,
        selection: &Selection,
        opts: &TrackOptions,
    ) -> Result<TrackReport, Error> {
        self.write(|tx, s| {
            // Captured changes first, so the schema change `track` makes
            // (its triggers) is not taken for a VACUUM by the next stamp.
            crate::local::stamp::stamp_pending(tx, s)?;
            let followed = crate::local::follow::follow_schema(tx, s)?;
            let mut report = track(tx, &mut s.catalog, selection, opts, &[])?;
            report.warnings.splice(0..0, followed.notices);
            crate::local::follow::mark_followed(tx)?;
            meta_set(tx, "schema_cookie", crate::local::stamp::schema_cookie(tx)?)?;
            s.save(tx)?;
            Ok(report)
        })
    }

    /// Write a bundle for `target` to `out`.
    pub fn export<W: Write>(
        &mut self,
        target: &ExportTarget,
        out: W,
    ) -> Result<ExportReport, Error> {
        self.export_in_phases(
            target,
            |_, _| Ok(Replaced::default()),
            out,
            false,
            Via::File,
            |_| Ok(()),
            &mut |_, _| {},
        )
    }

    /// Write a bundle for `target` to `out`, encrypted to its recipients if
    /// `opts.encrypt` says so, journaled as `opts.via` says (the network
    /// code's exports say [`Via::Network`]). `opts.overwrite` is for files
    /// and plays no part here.
    pub fn export_with<W: Write>(
        &mut self,
        target: &ExportTarget,
        out: W,
        opts: &ExportOptions,
    ) -> Result<ExportReport, Error> {
        self.export_in_phases(
            target,
            |_, _| Ok(Replaced::default()),
            out,
            opts.encrypt,
            opts.via,
            |_| Ok(()),
            &mut |_, _| {},
        )
    }

    /// An export in three transactions: a short write one that stamps,
    /// plans and makes the header; a read one that writes the rows (the app
    /// keeps writing meanwhile, in WAL mode); a short write one that marks
    /// what was sent, once `seal` has put the bundle on disk. If another
    /// connection committed between the first two, the rows it wrote could
    /// be ahead of their stamps: the first is made again, and after a few
    /// such tries the whole export runs in one write transaction. The
    /// journal row (`via`) is written in the last write transaction.
    #[allow(clippy::too_many_arguments)]
    fn export_in_phases<W: Write>(
        &mut self,
        target: &ExportTarget,
        replacing: impl Fn(&Transaction<'_>, &Session) -> Result<Replaced, Error>,
        out: W,
        encrypt: bool,
        via: Via,
        seal: impl FnOnce(W) -> Result<(), Error>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ExportReport, Error> {
        let whole = Instant::now();
        // Changes held from the future whose time has come are applied
        // first, so the bundle carries them (spec/trust.md).
        self.release_due_from_the_future()?;
        // Whom it is encrypted to, decided before anything changes (a peer
        // name resolved for the first time is forgotten again).
        let sealer = if encrypt {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Deferred)?;
            let s = Session::load(&tx)?;
            let sealer = crate::send::encrypt::sealer_for(&tx, &s, target)?;
            tx.rollback()?;
            Some(sealer)
        } else {
            None
        };
        let sealer = sealer.as_ref();
        let mut longest = Duration::ZERO;
        let mut transactions = 0u64;
        for _ in 0..EXPORT_TRIES {
            // A full export's scan for rows deleted without a trigger reads
            // every row: done first, without the write lock.
            let vanished = if target.is_full() {
                let tx = self
                    .conn
                    .transaction_with_behavior(TransactionBehavior::Deferred)?;
                let s = Session::load(&tx)?;
                Some(find_vanished(&tx, &s)?)
            } else {
                None
            };
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let began = Instant::now();
            let mut s = Session::load(&tx)?;
            let replaced = replacing(&tx, &s)?;
            let prepared = prepare(&tx, &mut s, target, &replaced.again, vanished.as_deref())?;
            s.save(&tx)?;
            // Read before the commit: a writer waiting for the lock may
            // commit the moment it is released. (This connection's own
            // commits do not move it.)
            let version = data_version(&tx)?;
            tx.commit()?;
            transactions += 1;
            longest = longest.max(began.elapsed());

            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Deferred)?;
            // The first read takes the snapshot the rows are read from.
            tx.query_row("SELECT count(*) FROM fieldsync_meta", [], |r| {
                r.get::<_, i64>(0)
            })?;
            if data_version(&tx)? != version {
                continue;
            }
            let (out, summary) = write_prepared(&tx, &prepared, out, sealer, progress)?;
            drop(tx);
            seal(out)?;

            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let began = Instant::now();
            let s = Session::load(&tx)?;
            record_prepared(&tx, &s, &prepared)?;
            let mut report = prepared.report(&s.sites, summary);
            crate::catalog::journal::record(&tx, &export_entry(&report, via, whole))?;
            tx.commit()?;
            transactions += 1;
            longest = longest.max(began.elapsed());
            report.warnings.extend(replaced.warning);
            report.write_transactions = transactions;
            report.longest_write_ms = longest.as_millis() as u64;
            report.encrypted_for = encrypted_for(sealer);
            return Ok(report);
        }
        let began = Instant::now();
        let mut report = self.write(|tx, s| {
            let replaced = replacing(tx, s)?;
            let mut report = export(tx, s, target, &replaced.again, out, sealer, seal, progress)?;
            report.warnings.extend(replaced.warning);
            crate::catalog::journal::record(tx, &export_entry(&report, via, whole))?;
            Ok(report)
        })?;
        report.write_transactions = transactions + 1;
        report.longest_write_ms = longest.max(began.elapsed()).as_millis() as u64;
        report.encrypted_for = encrypted_for(sealer);
        Ok(report)
    }

    /// Write a bundle for `target` to the file `path`. The file appears only
    /// when complete (written beside it, synced, then renamed), and a peer's
    /// changes count as sent only once it has.
    pub fn export_to_file(
        &mut self,
        target: &ExportTarget,
        path: &Path,
    ) -> Result<ExportReport, Error> {
        self.export_to_file_with_progress(target, path, &mut |_, _| {})
    }

    /// [`export_to_file`](Self::export_to_file), calling `progress` now and
    /// then with the change-log entries written so far and their total.
    pub fn export_to_file_with_progress(
        &mut self,
        target: &ExportTarget,
        path: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ExportReport, Error> {
        self.export_to_file_overwriting(target, path, Overwrite::IfDelivered, progress)
    }

    /// [`export_to_file_with_progress`](Self::export_to_file_with_progress),
    /// saying what to do with a bundle file already at `path`: an export
    /// refuses to replace one holding changes its recipient has not
    /// acknowledged unless `overwrite` is [`Overwrite::Force`], which
    /// replaces it, says so in the report's warnings, and carries those
    /// changes again if the file was this instance's bundle to the same peer.
    /// The bundle is not encrypted (see [`export_to_file_with`](Self::export_to_file_with)).
    pub fn export_to_file_overwriting(
        &mut self,
        target: &ExportTarget,
        path: &Path,
        overwrite: Overwrite,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ExportReport, Error> {
        let opts = ExportOptions {
            overwrite,
            encrypt: false,
            ..ExportOptions::default()
        };
        self.export_to_file_with(target, path, &opts, progress)
    }

    /// Write a bundle for `target` to the file `path`, as `fieldsync export`
    /// does: encrypted to its recipients unless `opts.encrypt` is false
    /// (spec/trust.md, "Encryption to the recipient"; refused, before
    /// anything changes, if a recipient's key is not known here, or for a
    /// full export not named for anyone), and replacing a bundle file
    /// already there as `opts.overwrite` says.
    pub fn export_to_file_with(
        &mut self,
        target: &ExportTarget,
        path: &Path,
        opts: &ExportOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ExportReport, Error> {
        let overwrite = opts.overwrite;
        if same_file(path, &self.path) {
            return Err(ExportError::OutputIsDatabase { path: path.into() }.into());
        }
        ensure_parent_dir(path)?;
        if path.is_dir() {
            return Err(ExportError::OutputIsDirectory { path: path.into() }.into());
        }
        // The bundle is written beside the output and renamed over it once
        // committed; renamed over a device or a pipe (`-o /dev/null` as
        // root), that would replace the device with a file.
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            return Err(ExportError::OutputNotAFile { path: path.into() }.into());
        }
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
        let file = File::create(&tmp)?;
        let result = self.export_in_phases(
            target,
            |tx, s| check_overwrite(tx, s, path, target, overwrite),
            BufWriter::new(file),
            opts.encrypt,
            opts.via,
            |w| {
                let file = w.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                Ok(())
            },
            progress,
        );
        // The file takes its name only once the export (stamping included)
        // is committed, so no bundle exists whose numbers a rollback could
        // hand out again.
        match result {
            Ok(report) => match std::fs::rename(&tmp, path) {
                Ok(()) => Ok(report),
                Err(source) => Err(ExportError::NotRenamed {
                    written: tmp,
                    path: path.into(),
                    source,
                }
                .into()),
            },
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Check a bundle without applying it: checksum, format, sender, and
    /// that its tables can be matched with the tracked ones (same identity
    /// and key; columns and tables this database lacks would wait,
    /// spec/schema.md). Returns its header.
    pub fn check_bundle<R: Read + Seek>(&mut self, r: R) -> Result<Header, Error> {
        let mut r = open_bundle(&self.conn, r)?;
        verify(&mut r)?;
        let outer = r.outer().cloned();
        let reader = BundleReader::open(r)?;
        check_agrees(outer.as_ref(), reader.header())?;
        let header = reader.header().clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let s = Session::load(&tx)?;
        crate::receive::import::preflight(&tx, &s, &header, reader.signer())?;
        Ok(header)
    }

    /// What a bundle file holds ([`crate::bundle::inspect`]), decrypting an
    /// encrypted one with this instance's key (it must be addressed to this
    /// instance); its outer header with it. A decrypted bundle whose signed
    /// header disagrees with the outer one is shown as not intact.
    pub fn inspect<R: Read + Seek>(
        &self,
        r: R,
    ) -> Result<(crate::bundle::BundleInfo, Option<OuterHeader>), Error> {
        let opened = open_bundle(&self.conn, r)?;
        let outer = opened.outer().cloned();
        let mut info = crate::bundle::inspect(opened)?;
        if let Err(e) = check_agrees(outer.as_ref(), &info.header) {
            info.intact = false;
            info.problem = Some(e.to_string());
        }
        Ok((info, outer))
    }

    /// Import one bundle: verify its checksum, check every record, then
    /// apply it in write transactions of at most about 200 ms each
    /// ([`ImportOptions::default`]), so the app's writes wait at most about
    /// that long (spec/merge.md, "Write transactions").
    pub fn import<R: Read + Seek>(&mut self, r: R) -> Result<ImportReport, Error> {
        self.import_with(r, &ImportOptions::default())
    }

    /// Import a bundle from a plain reader (a pipe, a socket, stdin): it is
    /// first copied to a temporary file beside the database ([`spool`](Self::spool)),
    /// since an import reads the bundle more than once, then imported from
    /// there as [`import`](Self::import) does, and the file removed.
    pub fn import_reader(&mut self, r: impl Read) -> Result<ImportReport, Error> {
        let spooled = self.spool(r)?;
        self.import(spooled.reopen()?)
    }

    /// Copy a bundle from a plain reader to a temporary file beside the
    /// database (the same disk, so a bundle it can import fits), removed
    /// when the returned handle is dropped. For callers that read a bundle
    /// more than once (`check_bundle`, then `import_with`).
    pub fn spool(&self, mut r: impl Read) -> Result<tempfile::NamedTempFile, Error> {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut file = tempfile::Builder::new()
            .prefix(".fieldsync-spool-")
            .suffix(".bundle")
            .tempfile_in(dir)?;
        std::io::copy(&mut r, &mut file)?;
        file.as_file().sync_all()?;
        Ok(file)
    }

    /// [`import`](Self::import) with a bound on each write transaction, or
    /// (`max_write: None`) in one transaction: all or nothing, holding the
    /// write lock for the whole import.
    pub fn import_with<R: Read + Seek>(
        &mut self,
        r: R,
        opts: &ImportOptions,
    ) -> Result<ImportReport, Error> {
        match self.import_steps(r, opts, &Steps::default())? {
            Some(report) => Ok(report),
            None => unreachable!("an import without a stop runs to its end"),
        }
    }

    /// [`import_with`](Self::import_with), cut as `steps` says (tests);
    /// `None` if it stopped before the end.
    pub(crate) fn import_steps<R: Read + Seek>(
        &mut self,
        r: R,
        opts: &ImportOptions,
        steps: &Steps,
    ) -> Result<Option<ImportReport>, Error> {
        let began = Instant::now();
        let mut r = r;
        let bytes = stream_len(&mut r)?;
        // An encrypted bundle is decrypted as it is read, once per pass.
        let mut r = open_bundle(&self.conn, r)?;
        verify(&mut r)?;
        let outer = r.outer().cloned();
        if opts.max_write.is_none() {
            let reader = BundleReader::open(r)?;
            check_agrees(outer.as_ref(), reader.header())?;
            crate::receive::import::check_signer_is(opts, reader.header(), reader.signer())?;
            return self
                .as_importer(|tx, s| {
                    let report = import(tx, s, reader)?;
                    let entry = import_entry(&report, opts.via, bytes, began);
                    crate::catalog::journal::record(tx, &entry)?;
                    Ok(report)
                })
                .map(Some);
        }
        // Every record is checked before the first commit: a bundle refused
        // halfway would leave its first part applied.
        let checked = {
            let reader = BundleReader::open(&mut r)?;
            check_agrees(outer.as_ref(), reader.header())?;
            crate::receive::import::check_signer_is(opts, reader.header(), reader.signer())?;
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Deferred)?;
            let s = Session::load(&tx)?;
            drop(tx);
            check_records(&self.conn, &s, reader)?;
            s.catalog.tables().to_vec()
        };
        r.seek(std::io::SeekFrom::Start(0))?;
        let reader = BundleReader::open(r)?;
        // Journaled in the last of its write transactions.
        let journal = |tx: &Transaction<'_>, report: &ImportReport| {
            let entry = import_entry(report, opts.via, bytes, began);
            crate::catalog::journal::record(tx, &entry).map(|_| ())
        };
        self.with_import_settings(|this| {
            import_in_steps(&mut this.conn, reader, &checked, opts, steps, &journal)
        })
    }

    /// What importing `files` into the database at `db` would do, without
    /// changing it (`fieldsync import --dry-run`, spec/merge.md "Dry run"):
    /// the database is copied with SQLite's backup API into a temporary
    /// directory, the files are imported into the copy as
    /// [`import_with`](Self::import_with) (or, `opts.atomic`,
    /// [`import_all`](Self::import_all)) would, and the copy is compared
    /// with the original, then removed. The original is only read: it is not
    /// opened as an [`Instance`] (which could upgrade its engine tables),
    /// nothing is journaled in it, and no file is left beside it. A file
    /// that would be refused is reported as such and the others are
    /// imported as if it were left out.
    pub fn preview_import(
        db: impl AsRef<Path>,
        files: &[PathBuf],
        opts: &PreviewOptions,
    ) -> Result<ImportPreview, Error> {
        let db = db.as_ref();
        let mut tries = 0;
        loop {
            tries += 1;
            let had_wal = crate::catalog::store::wal_path(db).exists();
            let preview = preview_once(db, files, opts)?;
            // Without a `-wal` file the original was read as an immutable
            // file, without locks; if the app opened it meanwhile (a `-wal`
            // is there now), the copy may be torn: again, through the WAL.
            if had_wal || !crate::catalog::store::wal_path(db).exists() || tries >= 3 {
                return Ok(preview);
            }
        }
    }

    /// Record an operation in the sync journal (spec/console.md), in a
    /// transaction of its own: for the network code's `sync` rows (its
    /// imports and exports are journaled by [`import_with`](Self::import_with)
    /// and [`export_with`](Self::export_with) with `via` set). Returns its id.
    pub fn record_journal(&mut self, entry: &JournalEntry) -> Result<i64, Error> {
        self.write(|tx, _| crate::catalog::journal::record(tx, entry))
    }

    /// The sync journal, newest first, at most `limit` rows
    /// (`fieldsync journal`, the console's Activity page). Reads only.
    pub fn journal(&self, limit: u64) -> Result<Vec<JournalEntry>, Error> {
        crate::catalog::journal::list(&self.conn, limit)
    }

    /// Import several bundles in one transaction: all or nothing, and one
    /// commit for all of them, which is what keeps HQ's weekly pile of
    /// bundles nearly as cheap as one large bundle (each commit writes every
    /// page the bundle touched). Each bundle's checksum is verified before
    /// it is applied; `bundles` yields them in order, opened when their turn
    /// comes.
    pub fn import_all<R: Read + Seek>(
        &mut self,
        bundles: impl IntoIterator<Item = Result<R, Error>>,
    ) -> Result<Vec<ImportReport>, Error> {
        self.as_importer(|tx, s| {
            let began = std::time::Instant::now();
            let mut reports: Vec<ImportReport> = Vec::new();
            for r in bundles {
                let one = Instant::now();
                let mut r = r?;
                let bytes = stream_len(&mut r)?;
                let mut r = open_bundle(tx, r)?;
                verify(&mut r)?;
                let outer = r.outer().cloned();
                let reader = BundleReader::open(r)?;
                check_agrees(outer.as_ref(), reader.header())?;
                let report = import(tx, s, reader)?;
                // In the same transaction: journaled only if all commit.
                let entry = import_entry(&report, Via::File, bytes, one);
                crate::catalog::journal::record(tx, &entry)?;
                reports.push(report);
            }
            // One write transaction for all of them.
            let held = began.elapsed().as_millis() as u64;
            for r in &mut reports {
                r.longest_write_ms = held;
            }
            Ok(reports)
        })
    }

    /// Each tracked table's schema version here and at each peer, the
    /// schema changes received and not run, and the values waiting for a
    /// column or table (`fieldsync schema`).
    pub fn schema(&mut self) -> Result<crate::admin::schema::SchemaReport, Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let s = Session::load(&tx)?;
        crate::admin::schema::report(&tx, &s)
    }

    /// Run the schema changes received and held (or that failed), then
    /// apply the values that waited for them (`fieldsync schema --apply`).
    pub fn apply_schema(&mut self) -> Result<crate::admin::schema::SchemaReport, Error> {
        let applied = self.as_importer(|tx, s| {
            crate::local::follow::follow_schema(tx, s)?;
            let mut notices = crate::receive::schema_changes::apply_held(tx, s)?;
            let retried = crate::receive::import::retry_held(tx, s)?;
            if retried.released > 0 {
                notices.push(format!(
                    "{} that waited {} applied",
                    crate::error::count(retried.released, "change", "changes"),
                    if retried.released == 1 { "was" } else { "were" }
                ));
            }
            Ok(notices)
        })?;
        let mut report = self.schema()?;
        report.applied = applied;
        Ok(report)
    }

    /// What this database does with schema changes received in bundles
    /// (`fieldsync schema --auto on|off`).
    pub fn set_schema_mode(
        &mut self,
        mode: crate::receive::schema_changes::SchemaMode,
    ) -> Result<(), Error> {
        self.write(|tx, _| crate::receive::schema_changes::set_mode(tx, mode))
    }

    /// Retry every quarantined change now (an import retries those that
    /// something they wait for changed), applying those that fit.
    pub fn retry_quarantine(&mut self) -> Result<RetryReport, Error> {
        self.as_importer(crate::receive::import::retry_held)
    }

    /// Apply the held change `id` now, whatever its clock says (`fieldsync
    /// conflicts --apply ID`): an administrator's decision that a change
    /// held "from the future" is right. It is merged as any other (it wins
    /// over every change stamped before it), and this instance's clock
    /// moves past it, so edits made here afterwards win over it. An error
    /// if nothing is held under that number.
    pub fn apply_held(&mut self, id: i64) -> Result<RetryReport, Error> {
        self.as_importer(|tx, s| {
            crate::receive::import::retry(tx, s, crate::receive::import::Retrying::Accept(id))
        })
    }

    /// Apply the changes held "from the future" that the wall clock has
    /// reached (a read, and nothing more, when there are none).
    fn release_due_from_the_future(&mut self) -> Result<(), Error> {
        let limit =
            crate::catalog::clocks::future_limit(&self.conn, crate::base::hlc::now_unix_ms())?;
        if crate::receive::quarantine::due_from_the_future(&self.conn, limit)?
            .0
            .is_empty()
        {
            return Ok(());
        }
        self.as_importer(|tx, s| {
            crate::receive::import::retry(tx, s, crate::receive::import::Retrying::DueFromTheFuture)
        })?;
        Ok(())
    }

    /// The clock bound in force (spec/trust.md): received changes stamped
    /// further than this many milliseconds ahead of this computer's clock
    /// are held "from the future".
    pub fn max_clock_ahead_ms(&mut self) -> Result<i64, Error> {
        crate::catalog::clocks::max_clock_ahead_ms(&self.conn)
    }

    /// Set the clock bound, 1 minute to 30 days (`fieldsync trust
    /// --max-clock-ahead`).
    pub fn set_max_clock_ahead_ms(&mut self, ms: i64) -> Result<(), Error> {
        self.write(|tx, _| crate::catalog::clocks::set_max_clock_ahead_ms(tx, ms))
    }

    /// Discard held changes (`fieldsync conflicts --discard`): each is
    /// recorded with its values (listed by [`conflicts`](Self::conflicts)),
    /// removed from the quarantine, and its change numbers count as
    /// received, so they are not asked for again. An error if nothing held
    /// matches.
    pub fn discard_held(
        &mut self,
        which: &crate::receive::quarantine::Discard,
    ) -> Result<Vec<crate::receive::quarantine::DiscardedChange>, Error> {
        self.discard_held_by(which, None)
    }

    /// [`discard_held`](Self::discard_held), recording who discarded them
    /// (the console records `console: NAME`, spec/console.md).
    pub fn discard_held_by(
        &mut self,
        which: &crate::receive::quarantine::Discard,
        by: Option<&str>,
    ) -> Result<Vec<crate::receive::quarantine::DiscardedChange>, Error> {
        self.write(|tx, s| {
            let now = crate::base::hlc::now_unix_ms();
            let out = crate::receive::quarantine::discard(tx, s, which, now, by)?;
            if out.is_empty() {
                let what = match which {
                    crate::receive::quarantine::Discard::Entry(id) => format!("change #{id}"),
                    crate::receive::quarantine::Discard::From(sender) => {
                        format!("change from '{sender}'")
                    }
                };
                return Err(crate::error::ImportError::NotHeld {
                    what,
                    db: crate::catalog::store::db_arg(tx),
                }
                .into());
            }
            s.save(tx)?;
            Ok(out)
        })
    }

    /// The quarantine and the newest `limit` overwritten values. Reads only.
    pub fn conflicts(&mut self, limit: u64) -> Result<Conflicts, Error> {
        crate::receive::conflicts::list(&self.conn, limit)
    }

    /// Run `f` in a write transaction with the settings replicated writes
    /// need.
    fn as_importer<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &mut Session) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.with_import_settings(|this| this.write(f))
    }

    fn with_import_settings<T>(
        &mut self,
        f: impl FnOnce(&mut Instance) -> Result<T, Error>,
    ) -> Result<T, Error> {
        // Writes made while applying are not local changes, and the app's
        // own triggers and foreign-key actions do not re-run effects that
        // arrive replicated (references are checked by the import itself).
        // Both settings are this connection's only.
        let fk: bool = self
            .conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
        let triggers = self
            .conn
            .db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER)?;
        self.conn.execute_batch("PRAGMA foreign_keys = OFF")?;
        let result = match self
            .conn
            .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
        {
            Ok(_) => f(self),
            Err(e) => Err(e.into()),
        };
        let restore_triggers = self
            .conn
            .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, triggers);
        let restore_fk = self.conn.execute_batch(if fk {
            "PRAGMA foreign_keys = ON"
        } else {
            "PRAGMA foreign_keys = OFF"
        });
        let out = result?;
        restore_triggers?;
        restore_fk?;
        Ok(out)
    }

    /// Import the bundle file at `path`; a refusal is recorded in the
    /// journal of refused bundles ([`record_refused`](Self::record_refused)).
    pub fn import_file(&mut self, path: &Path) -> Result<ImportReport, Error> {
        self.import_file_with(path, &ImportOptions::default())
    }

    /// [`import_file`](Self::import_file) with options (a network sync
    /// names the instance the bundle must come from).
    pub fn import_file_with(
        &mut self,
        path: &Path,
        opts: &ImportOptions,
    ) -> Result<ImportReport, Error> {
        let result = File::open(path)
            .map_err(Error::from)
            .and_then(|f| self.import_with(f, opts));
        if let Err(e) = &result {
            // The refusal is the error to report, whatever the journal does.
            let _ = self.record_refused(path, e);
        }
        result
    }

    /// Record a bundle an import refused with `error` in the journal of
    /// refused bundles (`fieldsync_refused`, spec/trust.md), in a
    /// transaction of its own: its file name, size and BLAKE3, the
    /// fingerprint of the key in its trailer, the sender its header names
    /// (read only if its signature and checksum hold), the kind of refusal
    /// and the message. Only errors that refuse the bundle are recorded
    /// ([`Error::refusal_reason`]); returns the entry, or `None` for
    /// other errors. The import's own transaction must have ended (a
    /// refused import leaves nothing else behind). The import entry points
    /// given a file (`fieldsync import`, [`import_file`](Self::import_file))
    /// call it; those given a reader leave it to the caller.
    pub fn record_refused(
        &mut self,
        file: &Path,
        error: &Error,
    ) -> Result<Option<crate::catalog::refused::RefusedBundle>, Error> {
        let Some(reason) = error.refusal_reason() else {
            return Ok(None);
        };
        let mut entry = crate::catalog::refused::RefusedBundle {
            id: 0,
            at_ms: crate::base::hlc::now_unix_ms(),
            file: Some(file.display().to_string()),
            size: None,
            blake3: None,
            signer_fingerprint: None,
            claimed_sender: None,
            reason,
            message: error.to_string(),
        };
        if let Ok(mut f) = File::open(file) {
            // Streamed: a bundle may be large.
            let mut hasher = blake3::Hasher::new();
            if let Ok(size) = std::io::copy(&mut f, &mut hasher) {
                entry.size = Some(size.min(i64::MAX as u64) as i64);
                entry.blake3 = Some(hasher.finalize().to_hex().to_string());
            }
            if let Ok((_, Some(key))) = crate::bundle::reader::read_signer_unchecked(&mut f) {
                entry.signer_fingerprint = Some(crate::catalog::keys::signing_fingerprint(&key));
            }
            // The header is believed only as far as the import would read
            // it: once the signature and the checksum hold.
            if verify(&mut f).is_ok() {
                if let Ok(header) = crate::bundle::reader::read_header_only(&mut f) {
                    entry.claimed_sender = Some(header.sender.name);
                }
            }
        }
        let id = self.write(|tx, _| crate::catalog::refused::record(tx, &entry))?;
        entry.id = id;
        Ok(Some(entry))
    }

    /// The journal of refused bundles, newest first, at most `limit`.
    pub fn refused_bundles(
        &mut self,
        limit: u64,
    ) -> Result<Vec<crate::catalog::refused::RefusedBundle>, Error> {
        crate::catalog::refused::list(&self.conn, limit)
    }

    /// Fold captured changes into the log, so its size follows live rows and
    /// tombstones rather than the number of edits, and check every tracked
    /// row the log knows as live is still there (a delete without a trigger,
    /// such as `INSERT OR REPLACE` on an explicit rowid, is recorded then).
    pub fn compact(&mut self) -> Result<CompactReport, Error> {
        self.write(|tx, s| {
            let log_entries_before = crate::local::log::entry_count(tx)?;
            let followed = crate::local::follow::follow_schema(tx, s)?;
            let mut stamped = crate::local::stamp::stamp_pending(tx, s)?;
            stamped.absorb(followed.stamped);
            for table in s.catalog.tables().to_vec() {
                stamped.replaced += crate::local::stamp::record_vanished_rows(
                    tx,
                    s,
                    crate::local::stamp::Suspects::Table(&table),
                )?;
            }
            s.save(tx)?;
            Ok(CompactReport {
                captured: stamped.captured,
                log_entries_before,
                log_entries: crate::local::log::entry_count(tx)?,
                vanished: stamped.replaced,
                warnings: followed
                    .notices
                    .into_iter()
                    .chain(stamped.warnings())
                    .collect(),
            })
        })
    }

    /// The history of the rows of `table` whose key (or local number) is
    /// `key` as an operator types it (spec/console.md, "Data"): which change
    /// holds each cell, from which instance, when. Reads only.
    pub fn row_history(
        &mut self,
        table: &str,
        key: &str,
    ) -> Result<Vec<crate::admin::history::RowHistory>, Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let s = Session::load(&tx)?;
        crate::admin::history::row_history(&tx, &s, table, key)
    }

    /// The instance's status, with every table's fingerprint. Reads only.
    pub fn status(&mut self) -> Result<Status, Error> {
        self.status_with(true)
    }

    /// The status without the fingerprints, which read every tracked row:
    /// for the console's pages, which do not show them. Reads only.
    pub(crate) fn status_without_fingerprints(&mut self) -> Result<Status, Error> {
        self.status_with(false)
    }

    fn status_with(&mut self, fingerprints: bool) -> Result<Status, Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let s = Session::load(&tx)?;
        crate::admin::status::status(&tx, &s, fingerprints)
    }

    /// A content hash per tracked table (every one if `tables` is empty),
    /// equal on two instances exactly when their rows are
    /// (spec/merge.md, "Fingerprints"). Reads only.
    pub fn fingerprints(
        &self,
        tables: &[String],
    ) -> Result<crate::admin::fingerprint::Fingerprints, Error> {
        // One read transaction, so every table is hashed at one moment.
        let tx = self.conn.unchecked_transaction()?;
        let s = Session::load(&tx)?;
        crate::admin::fingerprint::fingerprints(&tx, &s, tables)
    }

    /// Check fieldsync's invariants in this database (see `src/admin/check.rs`).
    /// Reads only; problems found are in the report, not an error.
    pub fn check(&mut self) -> Result<crate::admin::check::CheckReport, Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        crate::admin::check::check(&tx)
    }

    /// Sort bundle files into whole bundles and parts of split bundles
    /// (spec/bundle.md, "Split bundles"): each part is checked and kept
    /// beside the database until every part of its bundle is there (over
    /// one run or several), then the parts are joined. The result lists
    /// what to import; after a joined bundle is applied, call
    /// [`ReceivedParts::applied`](crate::ReceivedParts::applied)
    /// to remove its parts. With `keep` false (a preview) nothing is
    /// written beside the database: bundles are joined in a temporary
    /// directory from the files and the parts already kept. The database
    /// itself is never touched.
    pub fn receive_parts(
        &self,
        files: &[PathBuf],
        keep: bool,
    ) -> Result<crate::receive::parts::ReceivedParts, Error> {
        crate::receive::parts::receive(&self.path, files, keep)
    }

    /// Captured changes not yet folded into the log.
    pub fn captured_unstamped(&self) -> Result<u64, Error> {
        pending_count(&self.conn)
    }
}

/// How [`Instance::preview_import`] imports into its copy, and how much it
/// lists.
#[derive(Debug, Clone)]
pub struct PreviewOptions {
    /// All the files in one transaction (`import --atomic`).
    pub atomic: bool,
    /// Each file in write transactions of about this long (`import
    /// --max-lock-ms`); it makes no difference to what is done.
    pub max_write: Option<Duration>,
    /// Rows listed per table, and conflicts and held changes listed;
    /// `None` lists all. Counts are complete either way.
    pub limit: Option<u64>,
}

impl Default for PreviewOptions {
    fn default() -> Self {
        PreviewOptions {
            atomic: false,
            max_write: ImportOptions::default().max_write,
            limit: Some(20),
        }
    }
}

/// One [`Instance::preview_import`]: the original opened read only, copied,
/// the files imported into the copy, the copy compared with the original.
fn preview_once(
    db: &Path,
    files: &[PathBuf],
    opts: &PreviewOptions,
) -> Result<ImportPreview, Error> {
    let original = crate::catalog::store::open_read_only(db)
        .map_err(|e| crate::catalog::store::not_a_database(e, db))?;
    if !is_initialised(&original)? {
        return Err(SiteError::NotInitialized {
            path: db.to_owned(),
        }
        .into());
    }
    let schema: i64 = meta_get(&original, "schema")?.unwrap_or(0);
    if schema > ENGINE_SCHEMA {
        return Err(SiteError::NewerEngine {
            path: db.to_owned(),
            found: schema,
            supported: ENGINE_SCHEMA,
        }
        .into());
    }
    // One read transaction for the copy and the comparison: both see the
    // same state of the original, whatever the app writes meanwhile.
    original.execute_batch("BEGIN DEFERRED")?;
    original.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })?;
    let dir = tempfile::Builder::new()
        .prefix("fieldsync-preview-")
        .tempdir()?;
    let copy_path = dir.path().join("preview.db");
    original.backup(
        rusqlite::MAIN_DB,
        &copy_path,
        None::<fn(rusqlite::backup::Progress)>,
    )?;
    // An engine-schema upgrade, if the original needs one, happens here,
    // in the copy.
    let mut copy = Instance::open(&copy_path)?;
    let before = crate::receive::preview::before(&copy.conn)?;
    let mut preview = ImportPreview {
        instance: copy.name()?,
        dry_run: true,
        files: files
            .iter()
            .map(|f| FilePreview {
                file: f.display().to_string(),
                refused: None,
                report: None,
            })
            .collect(),
        inserted: 0,
        updated: 0,
        deleted: 0,
        quarantined: 0,
        refused: 0,
        tables: Vec::new(),
        conflicts: Vec::new(),
        incoming_wins: 0,
        local_wins: 0,
        held: Vec::new(),
        not_listed: 0,
    };
    // Messages name the database as the user gave it, not the copy.
    let copy_arg = copy_path.display().to_string();
    let db_arg = crate::catalog::store::shell_word(&db.display().to_string());
    let refusal = |e: &Error| e.to_string().replace(&copy_arg, &db_arg);
    // Every file is checked first, as `import` does.
    let mut usable = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let checked = File::open(f)
            .map_err(Error::from)
            .and_then(|file| copy.check_bundle(file));
        match checked {
            Ok(_) => usable.push(i),
            Err(e) => preview.files[i].refused = Some(refusal(&e)),
        }
    }
    if opts.atomic {
        let current = std::cell::Cell::new(None);
        let result = copy.import_all(usable.iter().map(|&i| {
            current.set(Some(i));
            File::open(&files[i]).map_err(Error::from)
        }));
        match result {
            Ok(reports) => {
                for (&i, report) in usable.iter().zip(reports) {
                    preview.files[i].report = Some(report);
                }
            }
            Err(e) => {
                if let Some(i) = current.get() {
                    preview.files[i].refused = Some(refusal(&e));
                }
            }
        }
    } else {
        let import_opts = ImportOptions {
            max_write: opts.max_write,
            // No app waits for the copy.
            pause: Duration::ZERO,
            ..ImportOptions::default()
        };
        for &i in &usable {
            let result = File::open(&files[i])
                .map_err(Error::from)
                .and_then(|file| copy.import_with(file, &import_opts));
            match result {
                Ok(report) => preview.files[i].report = Some(report),
                Err(e) => preview.files[i].refused = Some(refusal(&e)),
            }
        }
    }
    for report in preview.files.iter_mut().filter_map(|f| f.report.as_mut()) {
        for w in &mut report.warnings {
            *w = w.replace(&copy_arg, &db_arg);
        }
    }
    preview.refused = preview.files.iter().filter(|f| f.refused.is_some()).count() as u64;
    preview.quarantined = preview
        .files
        .iter()
        .filter_map(|f| f.report.as_ref())
        .map(|r| r.quarantined)
        .sum();
    crate::receive::preview::compare(&original, &copy.conn, &before, opts.limit, &mut preview)?;
    original.execute_batch("COMMIT")?;
    drop(original);
    drop(copy);
    dir.close()?;
    Ok(preview)
}

/// The journal row of an import that ended now.
fn import_entry(r: &ImportReport, via: Via, bytes: Option<u64>, began: Instant) -> JournalEntry {
    JournalEntry {
        id: 0,
        at_ms: crate::base::hlc::now_unix_ms(),
        kind: JournalKind::Import,
        via,
        peer: Some(r.from.clone()),
        full: r.full,
        changes: r.changes,
        applied: r.applied,
        known: r.known,
        older: r.older,
        quarantined: r.quarantined,
        bytes,
        duration_ms: began.elapsed().as_millis().min(u64::MAX as u128) as u64,
    }
}

/// The journal row of an export that ends now: the peer it was made for
/// (a full export named for peers: them, comma-separated).
fn export_entry(r: &ExportReport, via: Via, began: Instant) -> JournalEntry {
    let peer = r
        .peer
        .clone()
        .or_else(|| (!r.setup_for.is_empty()).then(|| r.setup_for.join(",")));
    JournalEntry {
        id: 0,
        at_ms: crate::base::hlc::now_unix_ms(),
        kind: JournalKind::Export,
        via,
        peer,
        full: r.full,
        changes: r.changes,
        applied: 0,
        known: 0,
        older: 0,
        quarantined: 0,
        bytes: Some(r.bytes),
        duration_ms: began.elapsed().as_millis().min(u64::MAX as u128) as u64,
    }
}

/// The length of a seekable bundle from where it stands, leaving its
/// position where it was.
fn stream_len<S: Seek>(s: &mut S) -> Result<Option<u64>, Error> {
    let at = s.stream_position()?;
    let end = s.seek(std::io::SeekFrom::End(0))?;
    s.seek(std::io::SeekFrom::Start(at))?;
    Ok(Some(end.saturating_sub(at)))
}

/// The names an export is encrypted to.
fn encrypted_for(sealer: Option<&crate::bundle::envelope::Sealer>) -> Vec<String> {
    sealer.map_or_else(Vec::new, |s| {
        s.outer.recipients.iter().map(|r| r.name.clone()).collect()
    })
}

/// A bundle file as the reader sees it: an encrypted one (spec/trust.md,
/// "Encryption to the recipient") is decrypted with this instance's key as
/// it is read, once it is seen to be addressed to this instance.
fn open_bundle<R: Read + Seek>(conn: &Connection, r: R) -> Result<Opened<R>, Error> {
    let me = SiteRef {
        id: SiteId::from_slice(&crate::catalog::site::meta_require::<Vec<u8>>(
            conn, "site_id",
        )?)
        .ok_or_else(|| SiteError::Damaged {
            detail: "fieldsync_meta.site_id is not 16 bytes".into(),
        })?,
        name: crate::catalog::site::meta_require(conn, "name")?,
    };
    crate::bundle::envelope::open(r, &me, || crate::catalog::keys::encryption_identity(conn))
}

/// Create the engine tables and this instance's identity.
fn create_instance(tx: &Transaction<'_>, name: &str) -> Result<(), Error> {
    create_engine_tables(tx)?;
    let site = SiteId::random();
    meta_set(tx, "schema", ENGINE_SCHEMA)?;
    meta_set(tx, "site_id", site.as_bytes().as_slice())?;
    meta_set(tx, "name", name)?;
    meta_set(tx, "clock", 0i64)?;
    meta_set(tx, "seq", 0i64)?;
    crate::catalog::keys::ensure_keys(tx)?;
    tx.execute(
        "INSERT INTO fieldsync_sites(site_id, name) VALUES (?1, ?2)",
        rusqlite::params![site.as_bytes().as_slice(), name],
    )?;
    Ok(())
}

/// What the main schema has under `name` that a new table or view could
/// not be created beside ("a table", "a view", "an index"), if anything.
fn object_named(conn: &Connection, name: &str) -> Result<Option<String>, Error> {
    let kind: Option<String> = conn
        .query_row(
            "SELECT type FROM sqlite_schema WHERE name = ?1 COLLATE NOCASE \
             AND type IN ('table', 'view', 'index')",
            [name],
            |r| r.get(0),
        )
        .optional()?;
    Ok(kind.map(|k| match k.as_str() {
        "index" => "an index".to_owned(),
        other => format!("a {other}"),
    }))
}

/// Refuse an instance name that cannot be used (see [`check_name`]).
fn valid_name(name: &str) -> Result<(), Error> {
    named(name, check_name(name))
}

/// Refuse a name a new instance cannot have (see [`check_new_name`]).
fn valid_new_name(name: &str) -> Result<(), Error> {
    named(name, check_new_name(name))
}

/// A name check's verdict as this module's error.
fn named(name: &str, verdict: Result<(), &'static str>) -> Result<(), Error> {
    verdict.map_err(|reason| {
        SiteError::InvalidName {
            name: name.to_owned(),
            reason,
        }
        .into()
    })
}

/// How [`Instance::init_from`] checks the file it sets up from.
#[derive(Debug, Clone, Default)]
pub struct SetupOptions {
    /// The fingerprint of the instance the file must come from (`init
    /// --from --expect-key`), as `fieldsync key` there shows it: the
    /// fingerprint of both its keys or of its signing key alone, in any
    /// letter case, with or without the dashes. A signed file is refused
    /// without it (the CLI asks on a terminal instead).
    pub expect_key: Option<String>,
    /// Accept a full export that is not signed (format 1 to 3, from a
    /// fieldsync older than signed bundles; `--allow-unsigned`).
    pub allow_unsigned: bool,
}

/// The fingerprints a full export's signer goes by: of both its keys, when
/// the header names its recipient, and of its signing key alone.
pub fn signer_fingerprints(header: &Header, key: &VerifyingKey) -> (Option<String>, String) {
    // A header of an older build carries no recipient: then only the
    // signing key's fingerprint can be computed from the file.
    (
        header
            .sender_recipient
            .as_deref()
            .map(|r| crate::catalog::keys::fingerprint(key.as_bytes(), r)),
        crate::catalog::keys::signing_fingerprint(key.as_bytes()),
    )
}

/// Refuse a full export not signed by the instance `expected` names.
fn expect_key(header: &Header, key: &VerifyingKey, expected: Option<&str>) -> Result<(), Error> {
    let (both, signing) = signer_fingerprints(header, key);
    let shown = both.clone().unwrap_or_else(|| signing.clone());
    let Some(expected) = expected else {
        return Err(crate::error::TrustError::ExpectKeyNeeded {
            sender: header.sender.name.clone(),
            fingerprint: shown,
        }
        .into());
    };
    let wanted = crate::catalog::keys::normal_fingerprint(expected);
    if both
        .iter()
        .chain([&signing])
        .any(|f| crate::catalog::keys::normal_fingerprint(f) == wanted)
    {
        return Ok(());
    }
    Err(crate::error::TrustError::NotExpectedKey {
        sender: header.sender.name.clone(),
        expected: expected.to_owned(),
        found: shown,
        found_signing: signing,
    }
    .into())
}

/// Fail with a plain message if the directory a file goes into is missing.
fn ensure_parent_dir(path: &Path) -> Result<(), Error> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) if !parent.is_dir() => Err(Error::NoSuchDirectory { dir: parent.into() }),
        _ => Ok(()),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("path", &self.path)
            .finish()
    }
}
