//! The app schema every instance of the model test runs, and how the test
//! names its tables and cells: bit 0 is the row itself, bit `i + 1` the
//! table's `i`-th non-key cell; `loc` rows are identified by origin, `opt`
//! rows by content, the others by key (spec/merge.md, "Row identity").

use std::collections::BTreeSet;

/// Every instance's app schema. `b` (BLOB), `u` and `note` (no type) have no
/// type affinity and keep every value as written; the others convert.
pub(super) const SCHEMA: &str = "
CREATE TABLE item(id TEXT PRIMARY KEY, i INTEGER, t TEXT, b BLOB, r REAL, u, n NUMERIC);
CREATE TABLE link(x TEXT, y INTEGER, note, w REAL, PRIMARY KEY(x, y)) WITHOUT ROWID;
CREATE TABLE loc(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, parent INTEGER REFERENCES loc(id));
CREATE TABLE opt(field TEXT, code TEXT, label TEXT);
";

/// How a table's rows are known across instances (spec/merge.md, "Row
/// identity").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    /// By the primary key's values.
    Key,
    /// By the instance that created the row and the number of the change
    /// that created it; the local `INTEGER PRIMARY KEY` is each instance's.
    Origin,
    /// By the row's content when it was first stamped and its copy number;
    /// the local rowid is each instance's.
    Content,
}

/// The loc table (index in [`TABLES`]) and its `parent` cell (bit).
pub(super) const LOC: usize = 2;

pub(super) const LOC_PARENT: usize = 2;

/// The opt table.
pub(super) const OPT: usize = 3;

pub(super) struct TableSpec {
    pub(super) name: &'static str,
    pub(super) kind: Kind,
    /// The key columns (for tables with a local key: that key, as SQL
    /// names the row here).
    pub(super) key: &'static [&'static str],
    /// Non-key columns; `cells[i]` is bit `i + 1`.
    pub(super) cells: &'static [&'static str],
    /// Whether `cells[i]` has no type affinity.
    pub(super) untyped: &'static [bool],
}

pub(super) const TABLES: [TableSpec; 4] = [
    TableSpec {
        name: "item",
        kind: Kind::Key,
        key: &["id"],
        cells: &["i", "t", "b", "r", "u", "n"],
        untyped: &[false, false, true, false, true, false],
    },
    TableSpec {
        name: "link",
        kind: Kind::Key,
        key: &["x", "y"],
        cells: &["note", "w"],
        untyped: &[true, false],
    },
    TableSpec {
        name: "loc",
        kind: Kind::Origin,
        key: &["id"],
        cells: &["name", "parent"],
        untyped: &[false, false],
    },
    TableSpec {
        name: "opt",
        kind: Kind::Content,
        key: &["rowid"],
        cells: &["field", "code", "label"],
        untyped: &[false, false, false],
    },
];

pub(super) fn mapped(table: usize) -> bool {
    TABLES[table].kind != Kind::Key
}

/// Name of a bit of a table: 0 is the row itself.
pub(super) fn bit_name(table: usize, bit: usize) -> &'static str {
    if bit == 0 {
        "row"
    } else {
        TABLES[table].cells[bit - 1]
    }
}

pub(super) fn bits_text(table: usize, bits: &BTreeSet<usize>) -> String {
    let names: Vec<&str> = bits.iter().map(|&b| bit_name(table, b)).collect();
    format!("{{{}}}", names.join(","))
}
