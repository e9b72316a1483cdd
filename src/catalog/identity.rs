//! Row identity for tables whose key is local to each instance: the
//! map (`fieldsync_ids`)
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
//! rows is [`crate::catalog::refs`]'s job.

use rusqlite::{Connection, OptionalExtension, params};

use crate::base::site_id::SiteId;
use crate::base::value::{Value, encode_key};
use crate::catalog::layout::Identity;
use crate::catalog::schema::quote_ident;
use crate::catalog::tracked::TrackedTable;
use crate::error::Error;

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
        _ => Ok(crate::base::value::key_literal(key)),
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
    let sql = format!(
        "SELECT {} FROM {} WHERE {}",
        table.cells_sql(),
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
            let shape = crate::catalog::schema::table_shape(conn, &table.name)?;
            let keys = shape.key_columns();
            Ok(keys.len() == 1
                && !shape.without_rowid
                && keys[0].decl_type.trim().eq_ignore_ascii_case("INTEGER"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::store::memory_db as conn;

    #[test]
    fn binding_replaces_both_old_bindings() -> Result<(), Error> {
        let c = conn(crate::catalog::store::ENGINE_DDL)?;
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
}
