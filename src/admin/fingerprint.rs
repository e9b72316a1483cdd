//! `fingerprint`: a short content hash per tracked table, for two people to
//! compare over the phone whether their databases hold the same rows
//! (spec/merge.md, "Fingerprints").
//!
//! A row is hashed as it travels, not as this file stores it: by its
//! replicated identity (the key, the identity column, or the global identity
//! mapped to a local number), then each replicated column's name and value,
//! references to rows of tracked tables as the identity of the row they
//! point at ([`crate::catalog::refs::encode`]). Local numbers (an
//! autoincrement id, a rowid) never enter the hash, and neither does the
//! order of rows or columns: the row hashes are sorted before the table's
//! hash is taken. Two instances' fingerprints of a table are therefore equal
//! exactly when they hold the same rows with the same values (up to a
//! collision of BLAKE3's first 40 bits in the short form; the full digest is
//! in the report). Reads only.

use rusqlite::Connection;
use serde::Serialize;

use crate::base::value::{Value, encode_key};
use crate::catalog::identity::gid_of;
use crate::catalog::keys::{base32, group, normal_fingerprint};
use crate::catalog::schema::quote_ident;
use crate::catalog::session::Session;
use crate::catalog::tracked::TrackedTable;
use crate::error::{Error, TrackError};

/// The BLAKE3 key-derivation context of one row's hash.
const ROW_CONTEXT: &str = "fieldsync 2026-11-30 fingerprint row v1";
/// The context of one table's hash (over its sorted row hashes).
const TABLE_CONTEXT: &str = "fieldsync 2026-11-30 fingerprint table v1";
/// The context of the hash over every table's.
const ALL_CONTEXT: &str = "fieldsync 2026-11-30 fingerprint all v1";

/// Bytes of a table's hash shown in its short form (8 characters).
const TABLE_SHORT_BYTES: usize = 5;
/// Bytes of the overall hash shown in its short form (16 characters).
const ALL_SHORT_BYTES: usize = 10;

/// One table's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableFingerprint {
    /// The table.
    pub table: String,
    /// Its rows.
    pub rows: u64,
    /// The short form to read out: 8 characters of Crockford base 32
    /// (`7KQ4-M2XA`).
    pub fingerprint: String,
    /// The whole BLAKE3 digest, in hex.
    pub digest: String,
    /// Rows of a table keyed by local numbers that fieldsync has not yet
    /// given a global identity (captured, not yet folded into the change
    /// log): they are hashed by their local number, so the fingerprint
    /// differs from any other instance's until an export, import or
    /// `compact` numbers them.
    pub unnumbered: u64,
}

/// The fingerprints of the tables asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fingerprints {
    /// One per table, in tracking order.
    pub tables: Vec<TableFingerprint>,
    /// The short form of a hash over every listed table's name and digest
    /// (16 characters): equal on two instances when every listed table is.
    pub fingerprint: String,
    /// That hash in full, in hex.
    pub digest: String,
}

impl Fingerprints {
    /// True if `typed` (as read over the phone: case, dashes and the
    /// look-alike letters O, I and L do not matter) is the overall
    /// fingerprint, or the one table's when one table was asked for.
    pub fn matches(&self, typed: &str) -> bool {
        let typed = normal_fingerprint(typed);
        if typed.is_empty() {
            return false;
        }
        normal_fingerprint(&self.fingerprint) == typed
            || (self.tables.len() == 1 && normal_fingerprint(&self.tables[0].fingerprint) == typed)
    }
}

/// The fingerprints of `tables` (every tracked table if empty).
pub(crate) fn fingerprints(
    conn: &Connection,
    s: &Session,
    tables: &[String],
) -> Result<Fingerprints, Error> {
    let all = s.catalog.tables();
    let chosen: Vec<&TrackedTable> = if tables.is_empty() {
        all.iter().collect()
    } else {
        let mut chosen = Vec::with_capacity(tables.len());
        for name in tables {
            let Some(t) = s.catalog.by_name(name) else {
                return Err(TrackError::NotTracked {
                    table: name.clone(),
                }
                .into());
            };
            if !chosen.iter().any(|c: &&TrackedTable| c.id == t.id) {
                chosen.push(t);
            }
        }
        chosen
    };
    let refs = crate::catalog::refs::load(conn, all)?;
    let mut out = Vec::with_capacity(chosen.len());
    for table in chosen {
        let i = all.iter().position(|t| t.id == table.id).unwrap_or(0);
        out.push(table_fingerprint(
            conn,
            table,
            refs.get(i).map(Vec::as_slice).unwrap_or(&[]),
        )?);
    }
    let mut hasher = blake3::Hasher::new_derive_key(ALL_CONTEXT);
    let mut sorted: Vec<&TableFingerprint> = out.iter().collect();
    sorted.sort_by_key(|t| t.table.to_ascii_lowercase());
    for t in sorted {
        field(&mut hasher, t.table.to_ascii_lowercase().as_bytes());
        field(&mut hasher, t.digest.as_bytes());
    }
    let hash = hasher.finalize();
    Ok(Fingerprints {
        tables: out,
        fingerprint: short(hash.as_bytes(), ALL_SHORT_BYTES),
        digest: hash.to_hex().to_string(),
    })
}

/// One table's fingerprint: the hash of its sorted row hashes.
fn table_fingerprint(
    conn: &Connection,
    table: &TrackedTable,
    refs: &[crate::catalog::refs::RefFk],
) -> Result<TableFingerprint, Error> {
    let sql_key = table.sql_key();
    let sql = format!(
        "SELECT {}, {} FROM {}",
        sql_key
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", "),
        table.cells_sql(),
        quote_ident(&table.name)
    );
    // Columns by name, so that two instances that declare them in another
    // order (a column added later by ALTER TABLE on one) hash alike.
    let mut order: Vec<usize> = (0..table.cells.len()).collect();
    order.sort_by_key(|&i| table.cells[i].to_ascii_lowercase());
    let n_key = sql_key.len();
    let mut digests: Vec<[u8; 32]> = Vec::new();
    let mut unnumbered = 0u64;
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let key: Vec<Value> = (0..n_key)
            .map(|i| r.get_ref(i).map(Value::from_ref))
            .collect::<rusqlite::Result<_>>()?;
        let cells: Vec<Value> = (0..table.cells.len())
            .map(|i| r.get_ref(n_key + i).map(Value::from_ref))
            .collect::<rusqlite::Result<_>>()?;
        let mut hasher = blake3::Hasher::new_derive_key(ROW_CONTEXT);
        if table.identity.mapped() {
            let local = key.first().cloned().unwrap_or(Value::Null);
            match gid_of(conn, table.id, &local)? {
                Some(gid) => {
                    hasher.update(b"g");
                    field(&mut hasher, &gid);
                }
                None => {
                    unnumbered += 1;
                    hasher.update(b"l");
                    field(&mut hasher, &encode_key(&key));
                }
            }
        } else {
            hasher.update(b"k");
            field(&mut hasher, &encode_key(&key));
        }
        let tagged = if refs.is_empty() {
            Vec::new()
        } else {
            crate::catalog::refs::encode(conn, refs, &cells)?
        };
        for &i in &order {
            let bit = i + 1;
            let value = tagged
                .iter()
                .find(|(b, _)| *b == bit)
                .map_or(&cells[i], |(_, v)| v);
            field(&mut hasher, table.cells[i].to_ascii_lowercase().as_bytes());
            field(&mut hasher, &cell_bytes(value));
        }
        digests.push(*hasher.finalize().as_bytes());
    }
    digests.sort_unstable();
    let mut hasher = blake3::Hasher::new_derive_key(TABLE_CONTEXT);
    hasher.update(&(digests.len() as u64).to_le_bytes());
    for d in &digests {
        hasher.update(d);
    }
    let hash = hasher.finalize();
    Ok(TableFingerprint {
        table: table.name.clone(),
        rows: digests.len() as u64,
        fingerprint: short(hash.as_bytes(), TABLE_SHORT_BYTES),
        digest: hash.to_hex().to_string(),
        unnumbered,
    })
}

/// A cell value's bytes, its type kept: `0` and `0.0` are different values
/// (`typeof()` tells them apart), unlike in a key ([`encode_key`]); `-0.0`
/// is `0.0`, as SQLite compares them.
fn cell_bytes(value: &Value) -> Vec<u8> {
    let zero = Value::Real(0.0);
    let value = match value {
        Value::Real(r) if *r == 0.0 => &zero,
        v => v,
    };
    // Serializing a Value into a Vec cannot fail.
    rmp_serde::to_vec(value).unwrap_or_default()
}

/// Feed `bytes` with its length first, so no two sequences of fields hash
/// the same bytes.
fn field(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// The first `n` bytes of `hash` in Crockford base 32, grouped by four.
fn short(hash: &[u8; 32], n: usize) -> String {
    group(&base32(&hash[..n]), 4)
}
