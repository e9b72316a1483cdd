//! How `track` decides a table's [`Identity`] and which of its columns
//! play which part ([`Layout`]): a key the app gives, an identity column
//! (`--identity`), a local number (`INTEGER PRIMARY KEY`, `--local-key`), or
//! no key at all. spec/merge.md, "Row identity", is the normative text; the
//! identities of rows themselves are [`crate::catalog::identity`]'s.

use rusqlite::Connection;

use crate::catalog::schema::{Affinity, TableShape};
use crate::error::{Error, TrackError};

/// How the rows of a tracked table are recognised on every instance
/// (spec/merge.md, "Row identity").
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    /// By the primary key's values (the key is the same everywhere).
    #[default]
    Key,
    /// By an app column that is UNIQUE NOT NULL (`track --identity uuid`);
    /// the local integer key is assigned by each instance.
    Column,
    /// By the instance that created the row and the number of the change
    /// that created it; the local integer key (or rowid) is assigned by
    /// each instance and mapped in `fieldsync_ids`.
    Origin,
    /// A table without a primary key: by the row's content when it was
    /// created (and which copy of identical rows it is), mapped to the
    /// local rowid in `fieldsync_ids`.
    Content,
}

impl Identity {
    /// The word stored in `fieldsync_tables.identity`.
    pub fn as_str(self) -> &'static str {
        match self {
            Identity::Key => "key",
            Identity::Column => "column",
            Identity::Origin => "origin",
            Identity::Content => "content",
        }
    }

    /// Parse the stored word (NULL and unknown words are `Key`).
    pub fn parse(s: Option<&str>) -> Option<Identity> {
        match s {
            None | Some("key") => Some(Identity::Key),
            Some("column") => Some(Identity::Column),
            Some("origin") => Some(Identity::Origin),
            Some("content") => Some(Identity::Content),
            Some(_) => None,
        }
    }

    /// True if rows are found through `fieldsync_ids` (their identity is
    /// not stored in the app table).
    pub fn mapped(self) -> bool {
        matches!(self, Identity::Origin | Identity::Content)
    }
}

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
    /// Replicated key columns ([`TrackedTable::key`](crate::catalog::tracked::TrackedTable::key)).
    pub key: Vec<String>,
    /// The local key column ([`TrackedTable::local`](crate::catalog::tracked::TrackedTable::local)).
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
            crate::catalog::schema::check_key_collation(conn, shape)?;
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
    crate::catalog::schema::check_key_collation(conn, shape)?;
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

/// Glob match of a table name (`*` any run, `?` one character),
/// case-insensitive as SQLite names are.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    wildmatch::WildMatch::new_case_insensitive(pattern).matches(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::schema::table_shape;
    use crate::catalog::store::memory_db as conn;

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
    fn globs_match_table_names() {
        assert!(glob_match("*_seq", "person_seq"));
        assert!(glob_match("SESSION?", "sessions"));
        assert!(glob_match("*", "x"));
        assert!(!glob_match("*_seq", "sequence"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }
}
