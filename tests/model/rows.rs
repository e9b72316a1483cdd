//! Rows across instances: a [`RowId`] names a row by its key, or in a table
//! with a local key by its identity (creating instance and change number;
//! content signature and copy), never by the local number. Also the
//! identities' encoding as the engine stores and sends them, and cells with
//! references shown by identity, as the model compares them.

use std::collections::BTreeMap;
use std::fmt;

use fieldsync::Value;

use crate::model::reference::Tables;
use crate::model::schema::{Kind, LOC, LOC_PARENT, TABLES, mapped};
use crate::util::Res;

/// One primary-key value (the schema's keys are text and integers), or a
/// row's global identity in a table with a local key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum KeyPart {
    Int(i64),
    Text(Vec<u8>),
    /// Created by instance `.0` with its change `.1`.
    Origin(usize, u64),
    /// Content signature when first stamped, copy number.
    Content([u8; 16], u32),
}

/// A row of a table, across instances.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct RowId {
    pub(super) table: usize,
    pub(super) key: Vec<KeyPart>,
}

impl RowId {
    pub(super) fn item(id: &[u8]) -> RowId {
        RowId {
            table: 0,
            key: vec![KeyPart::Text(id.to_vec())],
        }
    }

    pub(super) fn link(x: &str, y: i64) -> RowId {
        RowId {
            table: 1,
            key: vec![KeyPart::Text(x.as_bytes().to_vec()), KeyPart::Int(y)],
        }
    }

    /// A row of a table with a local key, as this instance numbers it.
    pub(super) fn local(table: usize, local: i64) -> RowId {
        RowId {
            table,
            key: vec![KeyPart::Int(local)],
        }
    }

    /// The local number of a row named by it (tables with a local key).
    pub(super) fn local_number(&self) -> Option<i64> {
        match self.key.as_slice() {
            [KeyPart::Int(i)] if mapped(self.table) => Some(*i),
            _ => None,
        }
    }

    /// True if this names a row by its global identity.
    pub(super) fn is_identity(&self) -> bool {
        matches!(
            self.key.as_slice(),
            [KeyPart::Origin(..)] | [KeyPart::Content(..)]
        )
    }

    pub(super) fn values(&self) -> Vec<Value> {
        self.key
            .iter()
            .map(|k| match k {
                KeyPart::Int(i) => Value::Integer(*i),
                KeyPart::Text(t) => Value::Text(t.clone()),
                KeyPart::Origin(o, s) => Value::text(format!("i{o}#{s}")),
                KeyPart::Content(sig, c) => {
                    let hex: String = sig[..3].iter().map(|b| format!("{b:02x}")).collect();
                    Value::text(format!("{hex}…#{c}"))
                }
            })
            .collect()
    }

    pub(super) fn from_values(table: usize, values: &[Value]) -> Res<RowId> {
        let key = values
            .iter()
            .map(|v| match v {
                Value::Integer(i) => Ok(KeyPart::Int(*i)),
                Value::Text(t) => Ok(KeyPart::Text(t.clone())),
                other => Err(format!(
                    "unexpected key value {other} in {}",
                    TABLES[table].name
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RowId { table, key })
    }

    pub(super) fn cells(&self) -> usize {
        TABLES[self.table].cells.len()
    }
}

impl fmt::Debug for RowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.values().iter().map(show).collect();
        write!(f, "{}[{}]", TABLES[self.table].name, parts.join(", "))
    }
}

/// A value as SQL would write it; text that is not UTF-8 as a cast blob.
pub(super) fn show(v: &Value) -> String {
    match v {
        Value::Text(t) if std::str::from_utf8(t).is_err() => {
            let hex: String = t.iter().map(|b| format!("{b:02X}")).collect();
            format!("CAST(X'{hex}' AS TEXT)")
        }
        Value::Real(r) => format!("{r:?}"),
        other => other.to_string(),
    }
}

pub(super) fn show_row(table: usize, row: &[Value]) -> String {
    let cells: Vec<String> = TABLES[table]
        .cells
        .iter()
        .zip(row)
        .map(|(c, v)| format!("{c}={}", show(v)))
        .collect();
    format!("({})", cells.join(", "))
}

/// Per instance, the local number of each row of a table with a local key
/// and the row's identity (`fieldsync_ids`): (table, local) → identity.
pub(super) type Ids = BTreeMap<(usize, i64), RowId>;

/// The identity a (decoded) key of `table` names: the row's key, or for a
/// table with a local key, the identity its blob encodes.
pub(super) fn row_from(sites: &[[u8; 16]], table: usize, values: &[Value]) -> Res<RowId> {
    if !mapped(table) {
        return RowId::from_values(table, values);
    }
    match values {
        [Value::Blob(gid)] => identity_of(sites, table, gid),
        other => Err(format!(
            "{} is keyed by an identity, not {other:?}",
            TABLES[table].name
        )
        .into()),
    }
}

/// The identity encoded in `gid` (spec/merge.md, "Row identity"): site id
/// and change number (24 bytes), or content signature and copy (20 bytes).
pub(super) fn identity_of(sites: &[[u8; 16]], table: usize, gid: &[u8]) -> Res<RowId> {
    let part = match (TABLES[table].kind, gid.len()) {
        (Kind::Origin, 24) => {
            let origin = sites
                .iter()
                .position(|s| s[..] == gid[..16])
                .ok_or_else(|| format!("an identity names unknown site {:02x?}", &gid[..16]))?;
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&gid[16..]);
            KeyPart::Origin(origin, u64::from_be_bytes(seq))
        }
        (Kind::Content, 20) => {
            let mut sig = [0u8; 16];
            sig.copy_from_slice(&gid[..16]);
            let mut copy = [0u8; 4];
            copy.copy_from_slice(&gid[16..]);
            KeyPart::Content(sig, u32::from_be_bytes(copy))
        }
        (kind, n) => {
            return Err(format!(
                "a {n}-byte identity for {} (identified by {kind:?})",
                TABLES[table].name
            )
            .into());
        }
    };
    Ok(RowId {
        table,
        key: vec![part],
    })
}

/// The bytes of an identity, as a tagged reference carries them.
fn gid_bytes(sites: &[[u8; 16]], row: &RowId) -> Vec<u8> {
    match row.key.as_slice() {
        [KeyPart::Origin(o, seq)] => {
            let mut b = sites[*o].to_vec();
            b.extend_from_slice(&seq.to_be_bytes());
            b
        }
        [KeyPart::Content(sig, copy)] => {
            let mut b = sig.to_vec();
            b.extend_from_slice(&copy.to_be_bytes());
            b
        }
        _ => Vec::new(),
    }
}

/// A row's cells as the model compares them: a reference to a `loc` row
/// by that row's identity (a blob of its bytes) instead of its local
/// number here.
pub(super) fn cells_by_identity(
    sites: &[[u8; 16]],
    ids: &Ids,
    table: usize,
    cells: &[Value],
) -> Vec<Value> {
    let mut out = cells.to_vec();
    if table == LOC {
        if let Value::Integer(l) = &out[LOC_PARENT - 1] {
            out[LOC_PARENT - 1] = match ids.get(&(LOC, *l)) {
                Some(p) => Value::Blob(gid_bytes(sites, p)),
                None => Value::text(format!("<loc {l} without identity>")),
            };
        }
    }
    out
}

/// The app tables as the model compares them: rows of tables with a local
/// key named by their identity (by their local number while they have
/// none: captured, not stamped yet), references by identity.
pub(super) fn app_by_identity(sites: &[[u8; 16]], app: &Tables, ids: &Ids) -> Tables {
    app.iter()
        .map(|(row, cells)| match row.local_number() {
            Some(l) => (
                ids.get(&(row.table, l))
                    .cloned()
                    .unwrap_or_else(|| row.clone()),
                cells_by_identity(sites, ids, row.table, cells),
            ),
            None => (row.clone(), cells.clone()),
        })
        .collect()
}
