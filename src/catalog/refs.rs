//! References between tracked tables as they travel in bundles.
//!
//! A column that refers to a row of another tracked table holds, in the
//! app table, whatever identifies that row *here*: for a parent keyed by a
//! local number (spec/merge.md, "Row identity") that number means nothing
//! on another instance. So in a bundle every value of such a column is
//! *tagged* (a blob: one tag byte, then a canonical key encoding):
//!
//! | tag | payload | the receiver writes |
//! |---|---|---|
//! | [`TAG_VALUE`] | the value | the value; the parent row exists at the sender |
//! | [`TAG_IDENTITY`] | the parent row's identity | that row's local number here (it waits in quarantine until the row is here) |
//! | [`TAG_DANGLING`] | the value | the value, unchecked: the parent row did not exist at the sender either |
//! | [`TAG_DANGLING_LOCAL`] | nothing | NULL: a local number naming no row at the sender means nothing here |
//!
//! NULL stays NULL. Which columns are tagged is listed in the bundle header
//! (`TableDef::refs`), one entry per constraint. Only constraints between
//! tracked tables whose referenced columns exist are followed
//! ([`crate::catalog::foreign::followable`]); any other reference is a plain value.

use rusqlite::{Connection, OptionalExtension, params_from_iter};

use crate::base::value::{Value, decode_key, encode_key};
use crate::catalog::foreign::ForeignKeys;
use crate::catalog::identity::valid_gid;
use crate::catalog::layout::Identity;
use crate::catalog::schema::quote_ident;
use crate::catalog::tracked::TrackedTable;
use crate::error::Error;

/// The value as the sender holds it; no row of the parent matches it there.
pub const TAG_DANGLING: u8 = 0;
/// The value as the sender holds it; a parent row matches it there.
pub const TAG_VALUE: u8 = 1;
/// The identity (replicated key) of the parent row it points at.
pub const TAG_IDENTITY: u8 = 2;
/// A local number of the sender's that names no row there: it means
/// nothing elsewhere (and could name another row), so it is not sent.
pub const TAG_DANGLING_LOCAL: u8 = 3;

/// One followed constraint of a tracked table, ready to encode its values.
#[derive(Debug, Clone)]
pub(crate) struct RefFk {
    /// The child's cells, in constraint order.
    pub bits: Vec<usize>,
    /// Their names.
    pub columns: Vec<String>,
    /// The parent table.
    pub parent: TrackedTable,
    /// Per cell: it refers to the parent's local number (so it travels as
    /// the parent row's identity).
    pub translate: Vec<bool>,
    /// `SELECT <identity or 1> FROM parent WHERE to = ?…`.
    lookup: String,
}

/// The followed constraints of every tracked table (by catalog index).
pub(crate) fn load(conn: &Connection, tables: &[TrackedTable]) -> Result<Vec<Vec<RefFk>>, Error> {
    let fks = ForeignKeys::load(conn, tables)?;
    let mut out = Vec::with_capacity(tables.len());
    for child in tables {
        let mut refs = Vec::new();
        for fk in fks.outgoing(&child.name) {
            let Some(parent) = tables
                .iter()
                .find(|t| t.name.eq_ignore_ascii_case(&fk.parent))
            else {
                continue;
            };
            // A reference made by key columns travels with the key itself.
            let Some(bits) = fk
                .from
                .iter()
                .map(|c| {
                    child
                        .cells
                        .iter()
                        .position(|x| x.eq_ignore_ascii_case(c))
                        .map(|i| i + 1)
                })
                .collect::<Option<Vec<usize>>>()
            else {
                continue;
            };
            let translate: Vec<bool> = fk
                .to
                .iter()
                .map(|t| {
                    parent.identity != Identity::Key
                        && parent
                            .local
                            .as_ref()
                            .is_some_and(|l| l.eq_ignore_ascii_case(t))
                })
                .collect();
            let identity = if !translate.contains(&true) {
                "1".to_owned()
            } else if parent.identity.mapped() {
                // `+` strips the parent column's INTEGER affinity: compared
                // with it, `local` (a column without affinity) would get
                // numeric affinity, which its index cannot serve, and SQLite
                // would scan the parent table's whole map for every
                // reference. The values are the same either way (`local`
                // holds what the parent column holds).
                format!(
                    "(SELECT gid FROM fieldsync_ids WHERE tbl = {} AND local = +p.{})",
                    parent.id,
                    quote_ident(parent.local.as_deref().unwrap_or("rowid"))
                )
            } else {
                format!("p.{}", quote_ident(&parent.key[0]))
            };
            let matches = fk
                .to
                .iter()
                .enumerate()
                .map(|(i, t)| format!("p.{} = ?{}", quote_ident(t), i + 1))
                .collect::<Vec<_>>()
                .join(" AND ");
            refs.push(RefFk {
                bits,
                columns: fk.from.clone(),
                parent: parent.clone(),
                translate,
                lookup: format!(
                    "SELECT {identity} FROM {} AS p WHERE {matches} LIMIT 1",
                    quote_ident(&parent.name)
                ),
            });
        }
        out.push(refs);
    }
    Ok(out)
}

fn tagged(tag: u8, payload: &[Value]) -> Value {
    let mut b = vec![tag];
    crate::base::value::write_key(&mut b, payload);
    Value::Blob(b)
}

/// Encode the reference columns of one row for a bundle. `row[bit - 1]` is
/// the value of cell `bit` in the app table; returns `(bit, tagged value)`
/// for every reference cell.
pub(crate) fn encode(
    conn: &Connection,
    refs: &[RefFk],
    row: &[Value],
) -> Result<Vec<(usize, Value)>, Error> {
    let mut out = Vec::new();
    for fk in refs {
        let values: Vec<&Value> = fk
            .bits
            .iter()
            .map(|&b| row.get(b - 1).unwrap_or(&Value::Null))
            .collect();
        // A reference with a NULL column points at nothing and holds.
        let any_null = values.iter().any(|v| matches!(v, Value::Null));
        let found: Option<Value> = if any_null {
            None
        } else {
            conn.prepare_cached(&fk.lookup)?
                .query_row(params_from_iter(values.iter()), |r| r.get::<_, Value>(0))
                .optional()?
        };
        for (i, (&bit, &v)) in fk.bits.iter().zip(&values).enumerate() {
            let encoded = if matches!(v, Value::Null) {
                Value::Null
            } else if any_null {
                if fk.translate[i] {
                    identity_of(conn, fk, v)?
                } else {
                    tagged(TAG_VALUE, std::slice::from_ref(v))
                }
            } else if found.is_none() && fk.translate[i] {
                tagged(TAG_DANGLING_LOCAL, &[])
            } else {
                match &found {
                    None => tagged(TAG_DANGLING, std::slice::from_ref(v)),
                    Some(_) if !fk.translate[i] => tagged(TAG_VALUE, std::slice::from_ref(v)),
                    Some(Value::Blob(gid)) if fk.parent.identity.mapped() => {
                        let mut b = Vec::with_capacity(gid.len() + 1);
                        b.push(TAG_IDENTITY);
                        b.extend_from_slice(gid);
                        Value::Blob(b)
                    }
                    Some(identity)
                        if !fk.parent.identity.mapped() && !matches!(identity, Value::Null) =>
                    {
                        tagged(TAG_IDENTITY, std::slice::from_ref(identity))
                    }
                    // The parent row has no identity yet: it cannot be
                    // found elsewhere.
                    Some(_) => tagged(TAG_DANGLING_LOCAL, &[]),
                }
            };
            out.push((bit, encoded));
        }
    }
    Ok(out)
}

/// The tagged identity of the parent row whose local number is `v` (a
/// column of a partly NULL composite reference).
fn identity_of(conn: &Connection, fk: &RefFk, v: &Value) -> Result<Value, Error> {
    let parent = &fk.parent;
    let local = quote_ident(parent.local.as_deref().unwrap_or("rowid"));
    let found: Option<Value> = if parent.identity.mapped() {
        conn.prepare_cached("SELECT gid FROM fieldsync_ids WHERE tbl = ?1 AND local = ?2")?
            .query_row(rusqlite::params![parent.id, v], |r| r.get(0))
            .optional()?
    } else {
        conn.prepare_cached(&format!(
            "SELECT {} FROM {} WHERE {local} = ?1",
            quote_ident(&parent.key[0]),
            quote_ident(&parent.name)
        ))?
        .query_row([v], |r| r.get(0))
        .optional()?
    };
    Ok(match found {
        Some(Value::Blob(gid)) if parent.identity.mapped() => {
            let mut b = vec![TAG_IDENTITY];
            b.extend_from_slice(&gid);
            Value::Blob(b)
        }
        Some(identity) if !parent.identity.mapped() && identity != Value::Null => {
            tagged(TAG_IDENTITY, &[identity])
        }
        _ => tagged(TAG_DANGLING_LOCAL, &[]),
    })
}

/// A tagged value, decoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tagged {
    /// NULL.
    Null,
    /// A value the sender's parent row matched.
    Value(Value),
    /// A value no parent row matched at the sender.
    Dangling(Value),
    /// A local number no parent row had at the sender.
    DanglingLocal,
    /// The parent row's identity, encoded as the change log encodes keys.
    Identity(Vec<u8>),
}

/// Decode a tagged value of a reference to a table identified as
/// `identity` (`key_len` values in its key). `Err` says what is wrong with
/// it (the bundle is malformed).
pub(crate) fn decode(v: &Value, identity: Identity, key_len: usize) -> Result<Tagged, String> {
    let b = match v {
        Value::Null => return Ok(Tagged::Null),
        Value::Blob(b) if !b.is_empty() => b,
        other => {
            return Err(format!(
                "a reference holds a {} instead of a tagged value",
                other.type_name()
            ));
        }
    };
    let payload = decode_key(&b[1..]).map_err(|e| format!("a reference is unreadable: {e}"))?;
    match (b[0], payload.as_slice()) {
        (TAG_VALUE, [v]) => Ok(Tagged::Value(v.clone())),
        (TAG_DANGLING, [v]) => Ok(Tagged::Dangling(v.clone())),
        (TAG_DANGLING_LOCAL, []) => Ok(Tagged::DanglingLocal),
        (TAG_IDENTITY, key) if identity != Identity::Key && key.len() == key_len => {
            let well_formed = if identity.mapped() {
                valid_gid(identity, key)
            } else {
                !key.iter().any(|v| matches!(v, Value::Null))
            };
            if !well_formed {
                return Err("a reference holds a malformed row identity".into());
            }
            Ok(Tagged::Identity(encode_key(key)))
        }
        (tag, _) => Err(format!(
            "a reference has tag {tag} with a payload that does not fit it"
        )),
    }
}

/// The value to write for a decoded reference to `parent`, and whether
/// its constraint is to be checked: `None` if it names a parent row that is
/// not here (yet).
pub(crate) fn resolve(
    conn: &Connection,
    parent: &TrackedTable,
    t: &Tagged,
) -> Result<Option<(Value, bool)>, Error> {
    Ok(match t {
        Tagged::Null => Some((Value::Null, true)),
        Tagged::Value(v) => Some((v.clone(), true)),
        Tagged::Dangling(v) => Some((v.clone(), false)),
        Tagged::DanglingLocal => Some((Value::Null, false)),
        Tagged::Identity(gid) if parent.identity.mapped() => {
            crate::catalog::identity::local_of(conn, parent.id, gid)?.map(|v| (v, true))
        }
        Tagged::Identity(gid) => {
            let key = decode_key(gid).unwrap_or_default();
            let (Some(local), Some(ident)) = (&parent.local, parent.key.first()) else {
                return Ok(None);
            };
            conn.prepare_cached(&format!(
                "SELECT {} FROM {} WHERE {} = ?1",
                quote_ident(local),
                quote_ident(&parent.name),
                quote_ident(ident)
            ))?
            .query_row(params_from_iter(key.iter()), |r| r.get::<_, Value>(0))
            .optional()?
            .map(|v| (v, true))
        }
    })
}

/// The payload of a tagged value, for messages and the conflict log; a
/// value that is not tagged is returned as it is.
pub fn shown(v: &Value) -> Value {
    let Value::Blob(b) = v else {
        return v.clone();
    };
    match b.split_first() {
        Some((&tag, rest)) if tag <= TAG_DANGLING_LOCAL => match decode_key(rest) {
            Ok(mut key) if key.len() == 1 => key.remove(0),
            Ok(key) if key.is_empty() => Value::Null,
            _ => v.clone(),
        },
        _ => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(id: i64, name: &str, identity: Identity, cells: &[&str]) -> TrackedTable {
        TrackedTable {
            id,
            name: name.into(),
            key: if identity == Identity::Key {
                vec!["id".into()]
            } else {
                Vec::new()
            },
            cells: cells.iter().map(|c| (*c).to_owned()).collect(),
            identity,
            local: (identity != Identity::Key).then(|| "id".to_owned()),
        }
    }

    /// Encoding a reference to an integer-keyed parent looked its identity
    /// up by `tbl` alone (the parent column's INTEGER affinity kept the
    /// `(tbl, local)` index from serving `local = p.id`), scanning the
    /// parent's whole map per reference: a full export of 200,000 rows
    /// referring to 20,000 parents took 26 times as long as with text keys.
    #[test]
    fn translating_a_reference_is_an_index_lookup() -> Result<(), Error> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(crate::catalog::store::ENGINE_DDL)?;
        conn.execute_batch(
            "CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT);
             CREATE TABLE child(id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent(id), name TEXT);",
        )?;
        let tables = [
            table(1, "parent", Identity::Origin, &["name"]),
            table(2, "child", Identity::Origin, &["parent", "name"]),
        ];
        let refs = load(&conn, &tables)?;
        let [fk] = refs[1].as_slice() else {
            panic!("child has one followed reference: {:?}", refs[1]);
        };
        assert_eq!(fk.translate, [true]);
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", fk.lookup))?;
        let plan: Vec<String> = stmt
            .query_map([1], |r| r.get::<_, String>(3))?
            .collect::<rusqlite::Result<_>>()?;
        assert!(
            plan.iter()
                .any(|step| step.contains("fieldsync_ids") && step.contains("local=?")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN")),
            "{plan:?}"
        );
        Ok(())
    }
}
