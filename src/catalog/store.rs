//! fieldsync's own tables in the app's database, and how a connection to
//! that database is opened.
//!
//! Every object is named `fieldsync_*`. The DDL uses only features an SQLite
//! as old as 3.31 understands (no STRICT tables, no generated columns), so the
//! app, linked against whatever SQLite it ships, can still open its database.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::base::seqset::SeqSet;
use crate::error::{BUSY_TIMEOUT_SECS, Error, SiteError};

/// Version of the engine tables written by this build.
pub const ENGINE_SCHEMA: i64 = 10;

/// DDL of the engine tables. Comments here are kept in the database schema,
/// so an administrator reading `.schema` in the sqlite3 shell sees them.
pub const ENGINE_DDL: &str = "
CREATE TABLE IF NOT EXISTS fieldsync_meta(
  key TEXT PRIMARY KEY,  -- schema, site_id, name, clock, seq, lost
  value
);
CREATE TABLE IF NOT EXISTS fieldsync_sites(
  id INTEGER PRIMARY KEY,           -- local number, used in fieldsync_log.origin
  site_id BLOB NOT NULL UNIQUE,     -- 16-byte uuid of the instance
  name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fieldsync_tables(
  id INTEGER PRIMARY KEY,           -- used in fieldsync_log.tbl and fieldsync_pending.t
  name TEXT NOT NULL UNIQUE,
  identity TEXT                     -- how rows are recognised: key, column, origin, content
);
CREATE TABLE IF NOT EXISTS fieldsync_columns(
  tbl INTEGER NOT NULL,
  role TEXT NOT NULL,               -- 'key', 'cell' or 'local' (the app's local number, not replicated)
  pos INTEGER NOT NULL,             -- key: position in the replicated key; cell: bit (1, 2, ...)
  name TEXT NOT NULL,
  PRIMARY KEY(tbl, role, pos)
) WITHOUT ROWID;
-- Written by the capture triggers: one row per row change, folded into
-- fieldsync_log (and deleted) by the next export, import or compact.
-- Columns k1.., m1.. are added when a tracked table needs them.
CREATE TABLE IF NOT EXISTS fieldsync_pending(
  id INTEGER PRIMARY KEY,
  t INTEGER NOT NULL,               -- fieldsync_tables.id
  op INTEGER NOT NULL,              -- 1 insert, 2 update, 3 delete
  at REAL NOT NULL,                 -- julianday('now') of the write
  m0 INTEGER,                       -- update: bits of the cells that changed
  k0                                -- first primary key column
);
-- The change log: for each row, the versions that still win a cell.
CREATE TABLE IF NOT EXISTS fieldsync_log(
  tbl INTEGER NOT NULL,
  pk BLOB NOT NULL,                 -- canonical encoding of the primary key
  origin INTEGER NOT NULL,          -- fieldsync_sites.id of the instance that made the change
  seq INTEGER NOT NULL,             -- its number at that instance
  cl INTEGER NOT NULL,              -- causal length: odd live, even deleted
  hlc INTEGER NOT NULL,             -- hybrid logical clock
  cols BLOB NOT NULL,               -- cells it still wins (bit 0: the row itself)
  PRIMARY KEY(tbl, pk, origin, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS fieldsync_log_by_origin ON fieldsync_log(origin, seq);
-- Rows of tables keyed by local numbers (or by nothing): which local row
-- (its INTEGER PRIMARY KEY or rowid here) each replicated row is.
CREATE TABLE IF NOT EXISTS fieldsync_ids(
  tbl INTEGER NOT NULL,
  gid BLOB NOT NULL,                -- the row's identity, encoded as fieldsync_log.pk
  local NOT NULL,                   -- its number in this database
  sig BLOB,                         -- tables without a key: hash of the row's content
  PRIMARY KEY(tbl, gid)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS fieldsync_ids_local ON fieldsync_ids(tbl, local);
-- Which change numbers this instance has from each other origin.
CREATE TABLE IF NOT EXISTS fieldsync_have(
  origin INTEGER PRIMARY KEY,
  seqs TEXT NOT NULL                -- ranges, e.g. '1-500,520-610'
);
CREATE TABLE IF NOT EXISTS fieldsync_peers(
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  site INTEGER UNIQUE,              -- fieldsync_sites.id, once a bundle from it was imported
  last_import INTEGER,              -- unix ms
  last_export INTEGER,              -- unix ms
  acked_at INTEGER,                 -- HLC of the bundle its acknowledgements come from
  lost TEXT NOT NULL DEFAULT ''     -- its own change numbers it said it lost
);
CREATE TABLE IF NOT EXISTS fieldsync_peer_seqs(
  peer INTEGER NOT NULL,
  origin INTEGER NOT NULL,
  acked TEXT NOT NULL DEFAULT '',   -- what the peer said it has (its seen vector)
  sent TEXT NOT NULL DEFAULT '',    -- what was exported to it
  lacks TEXT NOT NULL DEFAULT '',   -- of what was sent, what it reported missing, not yet sent again
  PRIMARY KEY(peer, origin)
) WITHOUT ROWID;
-- What a full export named for a peer (`export --full --for PEER`) counts
-- as sent to it before the peer has said what it has: the peer's next
-- bundle settles it (what its seen-vector leaves out stops counting as
-- sent), and the rows of that peer are deleted.
CREATE TABLE IF NOT EXISTS fieldsync_assumed(
  peer INTEGER NOT NULL,            -- fieldsync_peers.id
  origin INTEGER NOT NULL,          -- fieldsync_sites.id
  seqs TEXT NOT NULL,               -- ranges, e.g. '1-500'
  PRIMARY KEY(peer, origin)
) WITHOUT ROWID;
-- Change numbers known to exist (a peer said it has them) but not received
-- here, holes and top end alike, as of the last import: what this
-- instance's bundles report it lacks.
CREATE TABLE IF NOT EXISTS fieldsync_lacks(
  origin INTEGER PRIMARY KEY,
  seqs TEXT NOT NULL
);
-- Received changes the database refused (a parent row not here, a UNIQUE
-- value another row holds, NOT NULL or CHECK): kept here, retried when what
-- they wait for changes, applied and removed once they fit. `fieldsync
-- conflicts` lists them.
CREATE TABLE IF NOT EXISTS fieldsync_quarantine(
  id INTEGER PRIMARY KEY,
  tbl TEXT NOT NULL,                -- the app table
  key TEXT NOT NULL,                -- the row's key as SQL literals
  pk BLOB NOT NULL,                 -- canonical encoding of the key
  reason TEXT NOT NULL,             -- missing parent, still referenced, unique, not null, check
  detail TEXT NOT NULL,             -- what exactly, in words
  sender TEXT NOT NULL,             -- the instance whose bundle brought it
  first_at INTEGER NOT NULL,        -- unix ms
  last_at INTEGER NOT NULL,         -- unix ms of the last retry
  tries INTEGER NOT NULL DEFAULT 1,
  record BLOB NOT NULL,             -- the change as received (MessagePack)
  seqs BLOB                         -- its change numbers: 16-byte site id + 8-byte number, each
);
CREATE INDEX IF NOT EXISTS fieldsync_quarantine_row ON fieldsync_quarantine(tbl, pk);
-- What each held change waits for: an import retries only the entries
-- waiting on a row (or table) it changed. Every schema change retries all.
CREATE TABLE IF NOT EXISTS fieldsync_quarantine_waits(
  tbl TEXT NOT NULL,                -- the app table, lower case; '*' for any change
  pk BLOB NOT NULL,                 -- the row's canonical key; X'' for any row of tbl
  entry INTEGER NOT NULL,           -- fieldsync_quarantine.id
  PRIMARY KEY(tbl, pk, entry)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS fieldsync_quarantine_waits_entry ON fieldsync_quarantine_waits(entry);
-- Held changes the operator discarded (`fieldsync conflicts --discard`):
-- counted as received and dropped; what they held is kept here.
CREATE TABLE IF NOT EXISTS fieldsync_discarded(
  id INTEGER PRIMARY KEY,
  entry INTEGER NOT NULL,           -- its number in the quarantine (fieldsync_quarantine.id)
  discarded_at INTEGER NOT NULL,    -- unix ms
  tbl TEXT NOT NULL,
  key TEXT NOT NULL,                -- SQL literals
  reason TEXT NOT NULL,             -- why it was held
  detail TEXT NOT NULL,
  sender TEXT NOT NULL,             -- the instance whose bundle brought it
  first_at INTEGER NOT NULL,        -- unix ms it was first held
  changes TEXT NOT NULL,            -- its change numbers, e.g. 'field-1#3, field-1#7'
  vals TEXT NOT NULL,               -- the values it carried, e.g. 'name = NULL, note = ''x'''
  discarded_by TEXT                 -- who: 'console: NAME'; NULL from the command line (engine schema 10)
);
-- Received values waiting for a column or a table this database does not
-- have yet (the sender runs a newer version of the app): applied with their
-- own clocks once it exists and is tracked. Their change numbers are not
-- counted as received until then.
CREATE TABLE IF NOT EXISTS fieldsync_waiting(
  id INTEGER PRIMARY KEY,
  tbl TEXT NOT NULL COLLATE NOCASE, -- the app table, as the bundle names it
  pk BLOB NOT NULL,                 -- canonical encoding of the row's key
  key TEXT NOT NULL,                -- the key as SQL literals
  identity TEXT NOT NULL,           -- how the sender identifies the table's rows
  waits TEXT NOT NULL,              -- the columns waited for, comma-separated; '' for the table
  sender TEXT NOT NULL,             -- the instance whose bundle brought it
  first_at INTEGER NOT NULL,        -- unix ms
  record BLOB NOT NULL,             -- the values with their changes, by column name (MessagePack)
  seqs BLOB NOT NULL,               -- its change numbers: 16-byte site id + 8-byte number, each
  UNIQUE(tbl, pk)
);
-- Each peer's schema version of each tracked table (spec/schema.md): as it
-- reported it in its last bundle, or as assumed from the schema changes
-- sent to it since. A delta export carries the schema of every table whose
-- version here differs.
CREATE TABLE IF NOT EXISTS fieldsync_peer_schema(
  peer INTEGER NOT NULL,            -- fieldsync_peers.id
  tbl TEXT NOT NULL COLLATE NOCASE, -- the app table
  version TEXT NOT NULL,            -- 16 hex digits
  reported INTEGER NOT NULL,        -- 1: the peer said so; 0: assumed from what was sent
  PRIMARY KEY(peer, tbl)
) WITHOUT ROWID;
-- Schema changes received in bundles and not run here: held for an
-- administrator (`fieldsync schema`), failed when run, or not additive.
CREATE TABLE IF NOT EXISTS fieldsync_schema_held(
  id INTEGER PRIMARY KEY,
  tbl TEXT NOT NULL COLLATE NOCASE, -- the app table
  stmts TEXT NOT NULL,              -- the statements it would run (JSON array)
  status TEXT NOT NULL,             -- held, failed, refused, not applied
  why TEXT NOT NULL,                -- in words
  sender TEXT NOT NULL,             -- the instance whose bundle brought it
  at INTEGER NOT NULL,              -- unix ms it arrived
  def BLOB NOT NULL                 -- the table as the bundle described it (MessagePack)
);
-- This instance's own key pairs (spec/trust.md), made at init or when a
-- database of engine schema 6 or older is opened, never changed. The
-- private halves live here, beside the data they protect; fieldsync never
-- prints them. Keys of other instances will live elsewhere.
CREATE TABLE IF NOT EXISTS fieldsync_keys(
  purpose TEXT PRIMARY KEY,         -- 'sign' (Ed25519) or 'encrypt' (age X25519)
  public TEXT NOT NULL,             -- base64 of the 32-byte key (sign), or the age recipient 'age1...'
  secret TEXT NOT NULL,             -- base64 of the 32-byte seed (sign), or 'AGE-SECRET-KEY-1...'
  created_at INTEGER NOT NULL       -- unix ms
);
-- The instances this instance takes bundles from, by signing key
-- (spec/trust.md, Enrolment): its anchor (HQ, whose signed records it
-- believes), those enrolled (by `fieldsync trust` here or by the anchor's
-- records), those revoked, and, on a database set up before enrolment,
-- those pinned at their first bundle. Engine schema 9 (8: keyed by site id,
-- first use only).
CREATE TABLE IF NOT EXISTS fieldsync_pins(
  public_key BLOB PRIMARY KEY,      -- its 32-byte Ed25519 public key
  site_id BLOB UNIQUE,              -- its 16-byte site id; NULL until its first bundle (enrolled by name and key)
  name TEXT NOT NULL,               -- its name (compared without regard to case)
  recipient TEXT,                   -- its age recipient 'age1...', once known
  role TEXT NOT NULL,               -- 'anchor', 'enrolled' or 'first use'
  first_seen INTEGER NOT NULL,      -- unix ms it was enrolled or pinned here
  revoked_at INTEGER,               -- unix ms of its revocation, if revoked
  keep_through INTEGER,             -- revoked: its changes numbered above this are refused
  serial INTEGER,                   -- the anchor's record of it: serial, ...
  record BLOB,                      -- ... MessagePack ...
  signature BLOB                    -- ... and the anchor's signature, relayed to others
);
-- The newest origin statement of each other instance (spec/trust.md,
-- Claims checked against facts): the highest change number it signed it
-- had made. A bundle may claim no number of that origin above it; the
-- statement is relayed as it arrived in every bundle naming the origin.
-- Engine schema 9.
CREATE TABLE IF NOT EXISTS fieldsync_statements(
  site_id BLOB PRIMARY KEY,         -- 16-byte site id of the origin
  top INTEGER NOT NULL,             -- the highest change number it stated
  hlc INTEGER NOT NULL,             -- its clock when it signed
  statement BLOB NOT NULL,          -- the statement's bytes, as signed
  signature BLOB NOT NULL           -- its Ed25519 signature by the origin's key
);
-- Values that lost a last-writer-wins merge to a concurrent change.
CREATE TABLE IF NOT EXISTS fieldsync_conflicts(
  id INTEGER PRIMARY KEY,
  noticed_at INTEGER NOT NULL,      -- unix ms of the import
  tbl TEXT NOT NULL,
  key TEXT NOT NULL,                -- SQL literals
  col TEXT NOT NULL,                -- column, or '' for the row itself
  lost_value,                       -- the value that was overwritten
  lost_site TEXT NOT NULL,          -- instance that wrote it
  lost_at INTEGER NOT NULL,         -- when (unix ms, from its clock)
  won_value,
  won_site TEXT NOT NULL,
  won_at INTEGER NOT NULL,
  reason TEXT NOT NULL              -- later edit, row deleted, row re-created
);
-- The newest clock each origin showed in a bundle imported here, believed
-- or not (a change stamped beyond fieldsync_meta.max_clock_ahead_ms is held
-- 'from the future' and does not move this instance's clock): `status` and
-- `check` warn when this instance's clock is far behind it (spec/trust.md,
-- 'The clock bound'). Engine schema 9.
CREATE TABLE IF NOT EXISTS fieldsync_clocks(
  site INTEGER PRIMARY KEY,         -- fieldsync_sites.id of the origin
  newest INTEGER NOT NULL,          -- the newest HLC it showed (a change's, or a bundle's `created`)
  seen_at INTEGER NOT NULL          -- unix ms of the import that showed it
);
-- The journal of refused bundles (spec/trust.md): one row per bundle an
-- import refused, written after the import was rolled back; the newest
-- 1,000 are kept. `fieldsync conflicts` lists them. Engine schema 9.
CREATE TABLE IF NOT EXISTS fieldsync_refused(
  id INTEGER PRIMARY KEY,
  at INTEGER NOT NULL,              -- unix ms of the refusal
  file TEXT,                        -- the file as given to import
  size INTEGER,                     -- bytes
  blake3 TEXT,                      -- BLAKE3 of the whole file, hex
  signer_fingerprint TEXT,          -- of the key in its trailer, checked or not
  claimed_sender TEXT,              -- the sender its header names, if its signature held
  reason TEXT NOT NULL,             -- the kind of refusal, e.g. 'bundle: signature invalid'
  message TEXT NOT NULL             -- the error line
);
-- The sync journal (spec/console.md): one row per import, export and
-- network sync, the newest 10,000 kept. `fieldsync journal` and the
-- console's Activity page show it. Engine schema 10.
CREATE TABLE IF NOT EXISTS fieldsync_journal(
  id INTEGER PRIMARY KEY,
  at INTEGER NOT NULL,              -- unix ms the operation ended
  kind TEXT NOT NULL,               -- 'import', 'export' or 'sync'
  via TEXT NOT NULL,                -- 'file' or 'network'
  peer TEXT,                        -- sender (import) or recipient (export); NULL: a full export for nobody
  full INTEGER NOT NULL DEFAULT 0,  -- 1: a full export, or its import
  changes INTEGER NOT NULL DEFAULT 0,     -- row records in the bundle
  applied INTEGER NOT NULL DEFAULT 0,     -- import: records that changed a row
  known INTEGER NOT NULL DEFAULT 0,       -- import: already known
  older INTEGER NOT NULL DEFAULT 0,       -- import: older than what is here
  quarantined INTEGER NOT NULL DEFAULT 0, -- import: held in quarantine
  bytes INTEGER,                    -- the bundle's size, when known
  duration_ms INTEGER NOT NULL DEFAULT 0
);
";

/// True if `name` is one of the engine tables [`ENGINE_DDL`] creates (in
/// any letter case, as SQLite compares names).
pub fn is_engine_table(name: &str) -> bool {
    ENGINE_DDL
        .split("CREATE TABLE IF NOT EXISTS ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .any(|table| table.trim().eq_ignore_ascii_case(name))
}

/// Page cache of fieldsync's connections, KiB.
pub const PAGE_CACHE_KIB: u32 = 32 * 1024;

/// Open an existing database file (never creating it), with the settings
/// every fieldsync connection uses.
pub fn open_existing(path: &Path) -> Result<Connection, Error> {
    if !path.exists() {
        return Err(SiteError::DatabaseMissing {
            path: path.to_owned(),
        }
        .into());
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    configure(&conn, path)?;
    Ok(conn)
}

/// Open a database for reading only, writing nothing beside it: through
/// its WAL if it has one (`-wal` beside it), otherwise as an immutable file,
/// since a read-only connection to a WAL-mode database without a `-wal`
/// file would create `-wal` and `-shm` files and leave them there
/// (`import --dry-run`, spec/merge.md "Dry run").
pub fn open_read_only(path: &Path) -> Result<Connection, Error> {
    if !path.exists() {
        return Err(SiteError::DatabaseMissing {
            path: path.to_owned(),
        }
        .into());
    }
    let absolute = std::path::absolute(path)?;
    let mut uri = String::from("file:");
    for c in absolute.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?mode=ro");
    if !wal_path(path).exists() {
        uri.push_str("&immutable=1");
    }
    let conn = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    configure(&conn, path)?;
    Ok(conn)
}

/// The `-wal` file beside a database.
pub fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    std::path::PathBuf::from(p)
}

/// Open a database file, creating it if it does not exist.
pub fn open_or_create(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(path)?;
    configure(&conn, path)?;
    Ok(conn)
}

fn configure(conn: &Connection, path: &Path) -> Result<(), Error> {
    conn.busy_timeout(Duration::from_secs(BUSY_TIMEOUT_SECS))?;
    conn.set_prepared_statement_cache_capacity(256);
    // Import and export touch the app table, the change log and its index
    // together; SQLite's default 2 MiB page cache makes them re-read pages
    // from the OS and spill dirty pages mid-transaction. 32 MiB keeps a
    // million-row import within its memory budget (BENCHMARKS.md).
    conn.execute_batch(&format!("PRAGMA cache_size = -{}", PAGE_CACHE_KIB))?;
    // Reading the schema is the first thing that touches the file, so a file
    // that is not a database is reported here, by name.
    if let Err(e) = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    }) {
        if let rusqlite::Error::SqliteFailure(f, _) = &e {
            if f.code == rusqlite::ErrorCode::NotADatabase {
                return Err(SiteError::NotADatabase {
                    path: path.to_owned(),
                }
                .into());
            }
        }
        return Err(e.into());
    }
    Ok(())
}

/// SQLite's "file is not a database", met after the file was opened (by
/// the first statement that reads it), as the error that names the file
/// and says what to do; any other error as it is.
pub(crate) fn not_a_database(e: Error, path: &Path) -> Error {
    match &e {
        Error::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::NotADatabase =>
        {
            SiteError::NotADatabase {
                path: path.to_owned(),
            }
            .into()
        }
        _ => e,
    }
}

/// True if the engine tables exist.
pub fn is_initialised(conn: &Connection) -> Result<bool, Error> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'fieldsync_meta'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Create the engine tables (idempotent), and bring those of an older
/// engine schema up to date (columns added since).
pub fn create_engine_tables(conn: &Connection) -> Result<(), Error> {
    if is_initialised(conn)?
        && !column_names(conn, "fieldsync_tables")?
            .iter()
            .any(|c| c == "identity")
    {
        conn.execute_batch("ALTER TABLE fieldsync_tables ADD COLUMN identity TEXT")?;
    }
    if is_initialised(conn)?
        && !column_names(conn, "fieldsync_peer_seqs")?
            .iter()
            .any(|c| c == "lacks")
    {
        conn.execute_batch(
            "ALTER TABLE fieldsync_peer_seqs ADD COLUMN lacks TEXT NOT NULL DEFAULT ''",
        )?;
    }
    if is_initialised(conn)?
        && !column_names(conn, "fieldsync_quarantine")?.is_empty()
        && !column_names(conn, "fieldsync_quarantine")?
            .iter()
            .any(|c| c == "seqs")
    {
        conn.execute_batch("ALTER TABLE fieldsync_quarantine ADD COLUMN seqs BLOB")?;
    }
    // Engine schema 10: who discarded a held change.
    if is_initialised(conn)?
        && !column_names(conn, "fieldsync_discarded")?.is_empty()
        && !column_names(conn, "fieldsync_discarded")?
            .iter()
            .any(|c| c == "discarded_by")
    {
        conn.execute_batch("ALTER TABLE fieldsync_discarded ADD COLUMN discarded_by TEXT")?;
    }
    // Engine schema 8 kept pins by site id, first use only: the same rows,
    // by key, as pinned at first use.
    if column_names(conn, "fieldsync_pins")?
        .iter()
        .any(|c| c == "site_id")
        && !column_names(conn, "fieldsync_pins")?
            .iter()
            .any(|c| c == "role")
    {
        conn.execute_batch("ALTER TABLE fieldsync_pins RENAME TO fieldsync_pins_8;")?;
        conn.execute_batch(ENGINE_DDL)?;
        conn.execute_batch(
            "INSERT INTO fieldsync_pins(public_key, site_id, name, role, first_seen) \
             SELECT public_key, site_id, name, 'first use', first_seen FROM fieldsync_pins_8; \
             DROP TABLE fieldsync_pins_8;",
        )?;
    }
    conn.execute_batch(ENGINE_DDL)?;
    Ok(())
}

/// The database path as a user would type it after `--db` in a shell, for
/// messages that say what command to run next.
pub fn db_arg(conn: &Connection) -> String {
    match conn.path().filter(|p| !p.is_empty()) {
        Some(p) => shell_word(p),
        None => "DB".to_owned(),
    }
}

/// A path as a user would type it in a shell: as it is, or quoted.
pub fn shell_word(p: &str) -> String {
    if p.chars().all(|c| c.is_alphanumeric() || "-_./".contains(c)) {
        p.to_owned()
    } else {
        format!("'{}'", p.replace('\'', "'\\''"))
    }
}

/// Names of the columns of a table, in order.
pub fn column_names(conn: &Connection, table: &str) -> Result<Vec<String>, Error> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    let names = stmt
        .query_map([table], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(names)
}

/// A set of sequence numbers as stored in fieldsync's tables (`1-5,7`);
/// anything else means the table was damaged.
pub(crate) fn parse_set(text: String) -> Result<SeqSet, Error> {
    text.parse()
        .map_err(|detail| SiteError::Damaged { detail }.into())
}

/// An in-memory database with `sql` run in it, for unit tests.
#[cfg(test)]
pub(crate) fn memory_db(sql: &str) -> rusqlite::Result<Connection> {
    let c = Connection::open_in_memory()?;
    c.execute_batch(sql)?;
    Ok(c)
}

/// SQLite's count of commits by other connections (`PRAGMA data_version`):
/// it moves when another connection commits, never for this one's own.
pub fn data_version(conn: &Connection) -> Result<i64, Error> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}
