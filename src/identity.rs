//! Row identity for tables whose key is local to each instance: how
//! `track` decides a table's [`Identity`], and the map (`fieldsync_ids`)
//! between a row's global identity and the number this database gives it.
//!
//! Apps key tables by numbers each instance assigns on its own (`INTEGER
//! PRIMARY KEY`, AUTOINCREMENT, `MAX(id)+1`) or by nothing at all. Such a
//! number means nothing on another instance, so fieldsync never sends it:
//!
//! - with `track --identity COL`, a row is known everywhere by an app column
//!   that is UNIQUE NOT NULL (Sahana Eden's `uuid`), and the table's own
//!   SQL finds it;
//! - otherwise a row is known by the instance that created it and the
//!   number of the change that created it ([`Identity::Origin`]), or, in a
//!   table without a primary key, by its content when it was created and
//!   which copy of identical rows it is ([`Identity::Content`]). The map
//!   `fieldsync_ids(tbl, gid, local)` says which local row that is.
//!
//! The change log indexes rows by `gid`, the canonical encoding of the
//! global identity (the same bytes as `fieldsync_log.pk`). spec/merge.md,
//! "Row identity", is the normative text. Translating references to such
//! rows is [`crate::refs`]'s job.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, TrackError};
use crate::schema::{Affinity, TableShape, quote_ident};
use crate::site::SiteId;
use crate::tracked::{Identity, TrackedTable};
use crate::value::{Value, encode_key};

/// Options of `track` that choose how tables are identified.
#[derive(Debug, Clone, Default)]
pub struct TrackOptions {
    /// Tables `--all` leaves out (names or globs with `*` and `?`,
    /// case-insensitive): local by nature, such as sessions or counters.
    pub except: Vec<String>,
    /// `--identity COL`: identify rows of integer-keyed tables that have this
    /// UNIQUE NOT NULL column by its value.
    pub identity: Option<String>,
    /// `--local-key TABLE`: tables whose integer key the app assigns itself
    /// (`INT PRIMARY KEY` numbered `MAX+1`), to be treated as local numbers.
    pub local_key: Vec<String>,
}

/// Tables to track exactly as another instance does (set up from its full
/// export): table name, identity, identity column.
pub(crate) type AsSent = [(String, Identity, Option<String>)];

/// How a table is to be tracked: its identity and which columns play
/// which part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// How rows are recognised across instances.
    pub identity: Identity,
    /// Replicated key columns ([`TrackedTable::key`]).
    pub key: Vec<String>,
    /// The local key column ([`TrackedTable::local`]).
    pub local: Option<String>,
    /// Replicated non-key columns, in declaration order.
    pub cells: Vec<String>,
}

/// The name SQL uses for the rowid of a table without a primary key: the
/// first of SQLite's three spellings that no column shadows.
pub fn rowid_name(shape: &TableShape) -> Option<&'static str> {
    ["rowid", "_rowid_", "oid"]
        .into_iter()
        .find(|n| !shape.columns.iter().any(|c| c.name.eq_ignore_ascii_case(n)))
}

/// True if `column` of `table` has a single-column UNIQUE index (or
/// constraint, or is the whole primary key) on it, with BINARY collation.
fn is_unique(conn: &Connection, table: &str, column: &str) -> Result<bool, Error> {
    let mut stmt = conn.prepare(
        "SELECT l.name FROM pragma_index_list(?1) AS l WHERE l.\"unique\" = 1 AND l.partial = 0",
    )?;
    let indexes: Vec<String> = stmt
        .query_map([table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for index in indexes {
        let cols: Vec<(Option<String>, Option<String>)> = conn
            .prepare("SELECT name, coll FROM pragma_index_xinfo(?1) WHERE key = 1")?
            .query_map([&index], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if let [(Some(name), coll)] = cols.as_slice() {
            let binary = coll
                .as_deref()
                .is_none_or(|c| c.eq_ignore_ascii_case("BINARY"));
            if name.eq_ignore_ascii_case(column) && binary {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Check that `column` can identify rows: NOT NULL, with a UNIQUE index of
/// its own compared byte for byte.
pub fn check_identity_column(
    conn: &Connection,
    shape: &TableShape,
    column: &str,
) -> Result<(), Error> {
    let not_null = shape
        .columns
        .iter()
        .any(|c| c.name.eq_ignore_ascii_case(column) && c.not_null);
    if !not_null || !is_unique(conn, &shape.name, column)? {
        return Err(TrackError::IdentityNotUnique {
            table: shape.name.clone(),
            column: column.to_owned(),
        }
        .into());
    }
    Ok(())
}

/// The layout of a table tracked with `identity` (and, for
/// [`Identity::Column`], identity column `column`), read from its shape.
pub fn layout_of(
    shape: &TableShape,
    identity: Identity,
    column: Option<&str>,
) -> Result<Layout, Error> {
    let keys = shape.key_columns();
    let names = |skip: &[&str]| -> Vec<String> {
        shape
            .columns
            .iter()
            .filter(|c| !skip.iter().any(|s| s.eq_ignore_ascii_case(&c.name)))
            .map(|c| c.name.clone())
            .collect()
    };
    let incompatible = |detail: String| -> Error {
        TrackError::IncompatibleChange {
            table: shape.name.clone(),
            detail,
        }
        .into()
    };
    Ok(match identity {
        Identity::Key => Layout {
            identity,
            key: keys.iter().map(|c| c.name.clone()).collect(),
            local: None,
            cells: shape
                .cell_columns()
                .iter()
                .map(|c| c.name.clone())
                .collect(),
        },
        Identity::Column | Identity::Origin => {
            let [local] = keys.as_slice() else {
                return Err(incompatible(format!(
                    "its primary key is ({}), not one local number column",
                    keys.iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            let local = local.name.clone();
            if identity == Identity::Column {
                let column = column.unwrap_or_default();
                let Some(col) = shape
                    .columns
                    .iter()
                    .find(|c| c.name.eq_ignore_ascii_case(column))
                else {
                    return Err(incompatible(format!(
                        "its identity column '{column}' is gone"
                    )));
                };
                Layout {
                    identity,
                    key: vec![col.name.clone()],
                    cells: names(&[&local, &col.name]),
                    local: Some(local),
                }
            } else {
                Layout {
                    identity,
                    key: Vec::new(),
                    cells: names(&[&local]),
                    local: Some(local),
                }
            }
        }
        Identity::Content => {
            if !keys.is_empty() {
                return Err(incompatible("it has a primary key now".into()));
            }
            let Some(rowid) = rowid_name(shape) else {
                return Err(TrackError::RowidShadowed {
                    table: shape.name.clone(),
                }
                .into());
            };
            Layout {
                identity,
                key: Vec::new(),
                local: Some(rowid.to_owned()),
                cells: names(&[]),
            }
        }
    })
}

/// Decide how to track a table that is not tracked yet. `Err` says why it
/// cannot be tracked (with what to do); warnings are added to `warnings`.
pub(crate) fn plan(
    conn: &Connection,
    shape: &TableShape,
    opts: &TrackOptions,
    as_sent: &AsSent,
    warnings: &mut Vec<String>,
) -> Result<Layout, Error> {
    if let Some((_, identity, column)) = as_sent
        .iter()
        .find(|(t, ..)| t.eq_ignore_ascii_case(&shape.name))
    {
        let layout = layout_of(shape, *identity, column.as_deref())?;
        if *identity == Identity::Key {
            crate::schema::check_key_collation(conn, shape)?;
        }
        return Ok(layout);
    }
    let keys = shape.key_columns();
    let named_local = opts
        .local_key
        .iter()
        .any(|t| t.eq_ignore_ascii_case(&shape.name));
    if keys.is_empty() {
        if shape.without_rowid {
            // SQLite requires a key in WITHOUT ROWID tables; unreachable.
            return Err(TrackError::NoPrimaryKey {
                table: shape.name.clone(),
            }
            .into());
        }
        return layout_of(shape, Identity::Content, None);
    }
    let rowid_alias = keys.len() == 1
        && !shape.without_rowid
        && keys[0].decl_type.trim().eq_ignore_ascii_case("INTEGER");
    if named_local && !rowid_alias {
        if keys.len() != 1 {
            return Err(TrackError::CompositeLocalKey {
                table: shape.name.clone(),
                columns: keys.iter().map(|c| c.name.clone()).collect(),
            }
            .into());
        }
        if Affinity::of(&keys[0].decl_type) != Affinity::Integer {
            return Err(TrackError::LocalKeyNotInteger {
                table: shape.name.clone(),
                column: keys[0].name.clone(),
            }
            .into());
        }
    }
    if rowid_alias || named_local {
        // A local number: identified by an identity column if one is named
        // and fit, else by origin.
        if let Some(col) = &opts.identity {
            if let Some(c) = shape
                .columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(col) && c.key_pos.is_none())
            {
                check_identity_column(conn, shape, &c.name)?;
                return layout_of(shape, Identity::Column, Some(&c.name));
            }
        }
        if opts.identity.is_none() {
            for c in shape
                .columns
                .iter()
                .filter(|c| c.key_pos.is_none() && c.not_null)
            {
                if is_unique(conn, &shape.name, &c.name)? {
                    warnings.push(format!(
                        "table '{}' has a UNIQUE NOT NULL column '{}'; its rows are identified by the instance \
                         that created them. If '{}' identifies a record everywhere (a uuid), `track --identity {}` \
                         matches rows by it (on every instance alike, before the first export)",
                        shape.name, c.name, c.name, c.name
                    ));
                    break;
                }
            }
        }
        return layout_of(shape, Identity::Origin, None);
    }
    // A key the app gives: the same everywhere.
    crate::schema::check_key_collation(conn, shape)?;
    if keys
        .iter()
        .all(|c| Affinity::of(&c.decl_type) == Affinity::Integer)
    {
        let cols = keys
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        warnings.push(format!(
            "table '{}' is keyed by integer ({cols}) that is not a rowid; if the app numbers new rows itself \
             (MAX+1), two instances will give different rows the same number and they will merge into one: \
             if so, track it with `--local-key {}`",
            shape.name, shape.name
        ));
    }
    layout_of(shape, Identity::Key, None)
}

/// The identity of a row created here by change `seq` ([`Identity::Origin`]):
/// this site's id and that number, 24 bytes.
pub fn origin_gid(site: SiteId, seq: u64) -> Value {
    let mut b = Vec::with_capacity(24);
    b.extend_from_slice(site.as_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    Value::Blob(b)
}

/// Length of an [`Identity::Origin`] identity.
pub const ORIGIN_GID_LEN: usize = 24;
/// Length of an [`Identity::Content`] identity.
pub const CONTENT_GID_LEN: usize = 20;

/// The signature of a row's content: the first 16 bytes of the BLAKE3 hash
/// of its values' canonical encoding.
pub fn content_sig(values: &[Value]) -> [u8; 16] {
    let hash = blake3::hash(&encode_key(values));
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash.as_bytes()[..16]);
    out
}

/// The identity of the `copy`-th row with this content signature
/// ([`Identity::Content`]): signature and copy number, 20 bytes.
pub fn content_gid(sig: &[u8; 16], copy: u32) -> Value {
    let mut b = Vec::with_capacity(CONTENT_GID_LEN);
    b.extend_from_slice(sig);
    b.extend_from_slice(&copy.to_be_bytes());
    Value::Blob(b)
}

/// A row's key as an operator reads it: SQL literals, or for an identity
/// that is not a column, what it means ("row 12 of 'field-1'", "row with
/// content 3f2a…").
pub fn shown_key(conn: &Connection, table: &TrackedTable, key: &[Value]) -> Result<String, Error> {
    match (table.identity, key) {
        (Identity::Origin, [Value::Blob(b)]) if b.len() == ORIGIN_GID_LEN => {
            let seq = u64::from_be_bytes(b[16..].try_into().unwrap_or_default());
            let name: Option<String> = conn
                .prepare_cached("SELECT name FROM fieldsync_sites WHERE site_id = ?1")?
                .query_row([&b[..16]], |r| r.get(0))
                .optional()?;
            let site = SiteId::from_slice(&b[..16]).map(|s| s.to_string());
            Ok(format!(
                "row created by change #{seq} of '{}'",
                name.or(site).unwrap_or_default()
            ))
        }
        (Identity::Content, [Value::Blob(b)]) if b.len() == CONTENT_GID_LEN => {
            let copy = u32::from_be_bytes(b[16..].try_into().unwrap_or_default());
            let hex: String = b[..4].iter().map(|x| format!("{x:02x}")).collect();
            Ok(format!("row with content {hex}…, copy {copy}"))
        }
        _ => Ok(crate::value::key_literal(key)),
    }
}

/// True if `key` is a well-formed identity for a table of `identity`.
pub fn valid_gid(identity: Identity, key: &[Value]) -> bool {
    match (identity, key) {
        (Identity::Origin, [Value::Blob(b)]) => b.len() == ORIGIN_GID_LEN,
        (Identity::Content, [Value::Blob(b)]) => b.len() == CONTENT_GID_LEN,
        _ => false,
    }
}

/// The local number of the row whose identity encodes to `gid`, if this
/// database has it.
pub fn local_of(conn: &Connection, tbl: i64, gid: &[u8]) -> Result<Option<Value>, Error> {
    Ok(conn
        .prepare_cached("SELECT local FROM fieldsync_ids WHERE tbl = ?1 AND gid = ?2")?
        .query_row(params![tbl, gid], |r| r.get::<_, Value>(0))
        .optional()?)
}

/// The identity (encoded) of the local row numbered `local`, if it has one.
pub fn gid_of(conn: &Connection, tbl: i64, local: &Value) -> Result<Option<Vec<u8>>, Error> {
    Ok(conn
        .prepare_cached("SELECT gid FROM fieldsync_ids WHERE tbl = ?1 AND local = ?2")?
        .query_row(params![tbl, local], |r| r.get::<_, Vec<u8>>(0))
        .optional()?)
}

/// The values SQL finds a row by ([`TrackedTable::sql_key`]): its key, or
/// its local number for mapped identities (`None` if this database does not
/// have the row).
pub fn locate(
    conn: &Connection,
    table: &TrackedTable,
    pk: &[u8],
    key: &[Value],
) -> Result<Option<Vec<Value>>, Error> {
    if table.identity.mapped() {
        Ok(local_of(conn, table.id, pk)?.map(|v| vec![v]))
    } else {
        Ok(Some(key.to_vec()))
    }
}

/// Record that the local row `local` is the row `gid` (replacing whatever
/// either was mapped to before), with its content signature for tables
/// without a key.
pub fn bind(
    conn: &Connection,
    tbl: i64,
    gid: &[u8],
    local: &Value,
    sig: Option<&[u8; 16]>,
) -> Result<(), Error> {
    // REPLACE removes the rows clashing on either key, `(tbl, gid)` and the
    // UNIQUE `(tbl, local)`: no separate DELETE of `local`'s old binding.
    conn.prepare_cached(
        "INSERT OR REPLACE INTO fieldsync_ids(tbl, gid, local, sig) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![tbl, gid, local, sig.map(|s| s.as_slice())])?;
    Ok(())
}

/// Forget the local row of `gid` (it was deleted).
pub fn unbind(conn: &Connection, tbl: i64, gid: &[u8]) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM fieldsync_ids WHERE tbl = ?1 AND gid = ?2")?
        .execute(params![tbl, gid])?;
    Ok(())
}

/// Update the content signature of a mapped row.
pub fn set_sig(conn: &Connection, tbl: i64, gid: &[u8], sig: &[u8; 16]) -> Result<(), Error> {
    conn.prepare_cached("UPDATE fieldsync_ids SET sig = ?3 WHERE tbl = ?1 AND gid = ?2")?
        .execute(params![tbl, gid, sig.as_slice()])?;
    Ok(())
}

/// Every column value of a table's row, by its SQL key, in declaration
/// order (for a content signature); `None` if the row is not there.
pub fn row_values(
    conn: &Connection,
    table: &TrackedTable,
    local: &Value,
) -> Result<Option<Vec<Value>>, Error> {
    let cols = table
        .cells
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let cols = if cols.is_empty() { "1".into() } else { cols };
    let sql = format!(
        "SELECT {cols} FROM {} WHERE {}",
        quote_ident(&table.name),
        table.key_predicate()
    );
    let n = table.cells.len().max(1);
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([local], |r| {
            (0..n)
                .map(|i| r.get_ref(i).map(Value::from_ref))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .optional()?)
}

/// `SELECT 1 FROM <table> WHERE <its SQL key>`: whether a row is there
/// (parameters: [`TrackedTable::sql_key`]).
pub fn presence_sql(table: &TrackedTable) -> String {
    format!(
        "SELECT 1 FROM {} WHERE {}",
        quote_ident(&table.name),
        table.key_predicate()
    )
}

/// A new identity for the local row `local` of a mapped table, created by
/// change `seq` of this instance, bound in the map. `None` if the row is
/// no longer there (it was inserted and deleted before it was stamped; its
/// delete finds nothing either, so nothing is replicated). `refs` are the
/// table's followed references ([`crate::refs`]): a content identity is
/// computed from the row as every instance sees it, with a reference to a
/// row keyed by a local number taken as that row's identity, not the local
/// number (which means another row elsewhere).
pub(crate) fn assign(
    conn: &Connection,
    table: &TrackedTable,
    local: &Value,
    site: SiteId,
    seq: u64,
    refs: &[crate::refs::RefFk],
) -> Result<Option<Vec<u8>>, Error> {
    assign_with(conn, table, local, site, seq, refs, &presence_sql(table))
}

/// [`assign`], with the table's [`presence_sql`] built once by a caller
/// that assigns many (stamping). A row identified by origin is only looked
/// for, not read: its values matter only for a content signature.
pub(crate) fn assign_with(
    conn: &Connection,
    table: &TrackedTable,
    local: &Value,
    site: SiteId,
    seq: u64,
    refs: &[crate::refs::RefFk],
    presence: &str,
) -> Result<Option<Vec<u8>>, Error> {
    if table.identity != Identity::Content {
        if !conn.prepare_cached(presence)?.exists([local])? {
            return Ok(None);
        }
        let gid = encode_key(&[origin_gid(site, seq)]);
        bind(conn, table.id, &gid, local, None)?;
        return Ok(Some(gid));
    }
    let Some(values) = row_values(conn, table, local)? else {
        return Ok(None);
    };
    let sig = content_sig(&values);
    let mut global = values;
    for (bit, tagged) in crate::refs::encode(conn, refs, &global)? {
        if matches!(&tagged, Value::Blob(b) if b.first() == Some(&crate::refs::TAG_IDENTITY)) {
            global[bit - 1] = tagged;
        }
    }
    let birth = content_sig(&global);
    // Copy 0, or one past the highest copy mapped: an index range, not a
    // probe per copy (10,000 identical rows).
    let first = encode_key(&[content_gid(&birth, 0)]);
    let copy = if local_of(conn, table.id, &first)?.is_none() {
        0
    } else {
        let last = encode_key(&[content_gid(&birth, u32::MAX)]);
        let highest: Option<Vec<u8>> = conn
            .prepare_cached(
                "SELECT gid FROM fieldsync_ids WHERE tbl = ?1 AND gid BETWEEN ?2 AND ?3 \
                 ORDER BY gid DESC LIMIT 1",
            )?
            .query_row(params![table.id, first, last], |r| r.get(0))
            .optional()?;
        let highest = highest
            .and_then(|g| g.get(g.len().saturating_sub(4)..).map(<[u8]>::to_vec))
            .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
            .map_or(0, u32::from_be_bytes);
        highest
            .checked_add(1)
            .ok_or_else(|| TrackError::TooManyCopies {
                table: table.name.clone(),
            })?
    };
    let gid = encode_key(&[content_gid(&birth, copy)]);
    bind(conn, table.id, &gid, local, Some(&sig))?;
    Ok(Some(gid))
}

/// Refresh the content signature of a mapped row of a table without a key
/// after it changed.
pub fn refresh_sig(
    conn: &Connection,
    table: &TrackedTable,
    gid: &[u8],
    local: &Value,
) -> Result<(), Error> {
    if table.identity != Identity::Content {
        return Ok(());
    }
    if let Some(values) = row_values(conn, table, local)? {
        set_sig(conn, table.id, gid, &content_sig(&values))?;
    }
    Ok(())
}

/// True if SQLite assigns a new row's local number itself when an insert
/// leaves it out: it is the rowid (an `INTEGER PRIMARY KEY`, or the rowid
/// of a table without a key). An `INT PRIMARY KEY` the app numbers is not.
pub fn local_is_rowid(conn: &Connection, table: &TrackedTable) -> Result<bool, Error> {
    match table.identity {
        Identity::Key => Ok(false),
        Identity::Content => Ok(true),
        Identity::Origin | Identity::Column => {
            let shape = crate::schema::table_shape(conn, &table.name)?;
            let keys = shape.key_columns();
            Ok(keys.len() == 1
                && !shape.without_rowid
                && keys[0].decl_type.trim().eq_ignore_ascii_case("INTEGER"))
        }
    }
}

/// Glob match of a table name (`*` any run, `?` one character),
/// case-insensitive as SQLite names are.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::table_shape;

    fn conn(sql: &str) -> rusqlite::Result<Connection> {
        let c = Connection::open_in_memory()?;
        c.execute_batch(sql)?;
        Ok(c)
    }

    #[test]
    fn tables_get_the_identity_their_key_calls_for() -> Result<(), Error> {
        let c = conn(
            "CREATE TABLE natural(id TEXT PRIMARY KEY, v);
             CREATE TABLE alias(id INTEGER PRIMARY KEY AUTOINCREMENT, v);
             CREATE TABLE eden(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, name TEXT);
             CREATE TABLE loose(id INTEGER PRIMARY KEY, uuid TEXT UNIQUE);
             CREATE TABLE nokey(a, b);
             CREATE TABLE roles(group_id INT PRIMARY KEY, name TEXT);",
        )?;
        let opts = TrackOptions {
            identity: Some("uuid".into()),
            local_key: vec!["ROLES".into()],
            ..TrackOptions::default()
        };
        let mut w = Vec::new();
        let p = |name: &str, w: &mut Vec<String>| plan(&c, &table_shape(&c, name)?, &opts, &[], w);
        assert_eq!(p("natural", &mut w)?.identity, Identity::Key);
        let alias = p("alias", &mut w)?;
        assert_eq!(alias.identity, Identity::Origin);
        assert_eq!(alias.local.as_deref(), Some("id"));
        assert_eq!(alias.cells, ["v"]);
        let eden = p("eden", &mut w)?;
        assert_eq!(
            (eden.identity, eden.key.clone(), eden.cells.clone()),
            (Identity::Column, vec!["uuid".into()], vec!["name".into()])
        );
        assert!(matches!(
            p("loose", &mut w),
            Err(Error::Track(TrackError::IdentityNotUnique { .. }))
        ));
        let nokey = p("nokey", &mut w)?;
        assert_eq!(nokey.identity, Identity::Content);
        assert_eq!(nokey.local.as_deref(), Some("rowid"));
        assert_eq!(p("roles", &mut w)?.identity, Identity::Origin);
        assert!(w.is_empty(), "{w:?}");
        let plain = TrackOptions::default();
        plan(&c, &table_shape(&c, "roles")?, &plain, &[], &mut w)?;
        assert!(w[0].contains("--local-key roles"), "{w:?}");
        Ok(())
    }

    /// Binding replaces whatever the identity and the local number were
    /// bound to before (one statement, REPLACE on both keys).
    #[test]
    fn binding_replaces_both_old_bindings() -> Result<(), Error> {
        let c = conn(crate::store::ENGINE_DDL)?;
        let five = Value::Integer(5);
        bind(&c, 1, b"g1", &five, None)?;
        bind(&c, 2, b"g1", &five, None)?;
        // The local number 5 of table 1 becomes another row.
        bind(&c, 1, b"g2", &five, None)?;
        assert_eq!(local_of(&c, 1, b"g1")?, None);
        assert_eq!(gid_of(&c, 1, &five)?, Some(b"g2".to_vec()));
        // That row moves to local number 6.
        bind(&c, 1, b"g2", &Value::Integer(6), None)?;
        assert_eq!(gid_of(&c, 1, &five)?, None);
        assert_eq!(local_of(&c, 1, b"g2")?, Some(Value::Integer(6)));
        // Table 2 is untouched.
        assert_eq!(gid_of(&c, 2, &five)?, Some(b"g1".to_vec()));
        let n: i64 = c.query_row("SELECT count(*) FROM fieldsync_ids", [], |r| r.get(0))?;
        assert_eq!(n, 2);
        Ok(())
    }

    #[test]
    fn globs_match_table_names() {
        assert!(glob_match("*_seq", "person_seq"));
        assert!(glob_match("SESSION?", "sessions"));
        assert!(glob_match("*", "x"));
        assert!(!glob_match("*_seq", "sequence"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }
}
