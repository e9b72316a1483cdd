//! The bundle file format, version 4 (versions 1 to 3, unsigned, are still
//! read): constants and the structures that are encoded. spec/bundle.md is the
//! normative description; this file and the golden bundles under tests/data/
//! must agree with it.
//!
//! ```text
//! magic     8 bytes   89 46 53 42 0D 0A 1A 0A  ("\x89FSB\r\n\x1a\n")
//! version   u16 LE    4 (3: no signature; 2: no row identities or tagged
//!                     references in the header; 1: the body holds rows
//!                     instead of blocks)
//! hlen      u32 LE    length of the header
//! header    hlen bytes, MessagePack map (field names as keys)
//! body      one zstd frame holding MessagePack values:
//!             block*  (arrays of columns, see BlockWire; v1: rows, RowWire)
//!             nil     end marker
//!             end     (array, see End)
//! checksum  32 bytes  BLAKE3 of every byte before it (C)
//! signer    32 bytes  v4: the signer's Ed25519 public key (K)
//! signature 64 bytes  v4: Ed25519 by K over SIGNATURE_CONTEXT ‖ C ‖ K
//! ```
//!
//! The signed trailer has a fixed place at the end so the signature is
//! checked before the header is parsed (spec/trust.md, "Signed envelope").

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::base::colset::ColSet;
use crate::base::seqset::SeqSet;
use crate::base::site_id::SiteId;
use crate::base::value::Value;
use crate::catalog::keyring::SignedRecord;
use crate::catalog::layout::Identity;

/// The first eight bytes of every bundle. Like PNG's signature, the high byte
/// catches 7-bit transfers and the CR LF / LF pair catches line-ending
/// conversion by mail or FTP in text mode.
pub const MAGIC: [u8; 8] = [0x89, b'F', b'S', b'B', b'\r', b'\n', 0x1a, b'\n'];

/// The format version this build writes (it reads this one and 1 to 3).
pub const FORMAT_VERSION: u16 = 4;

/// The first format version whose bundles are signed.
pub const SIGNED_VERSION: u16 = 4;

/// The oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u16 = 1;

/// Most rows in one block (v2).
pub const MAX_BLOCK_ROWS: usize = 4096;

/// Most versions, key values or cell values in one block (v2). A writer
/// closes a block before a row could take it past this.
pub const MAX_BLOCK_ITEMS: usize = 1 << 20;

/// A writer closes a block once its values hold this many bytes.
pub const BLOCK_VALUE_BYTES: usize = 1 << 20;

/// Bytes before the header: magic, version, header length.
pub const PREAMBLE_LEN: u64 = 8 + 2 + 4;

/// Length of the checksum (the whole trailer of versions 1 to 3).
pub const CHECKSUM_LEN: u64 = 32;

/// Length of the signer's public key and of the signature after the
/// checksum (version 4).
pub const SIGNATURE_LEN: u64 = 32 + 64;

/// What a signature of version 4 signs before the checksum and the key:
/// a signature made for anything else can never be taken for one.
pub const SIGNATURE_CONTEXT: &[u8] = b"fieldsync bundle signature v4\0";

/// Bytes after the body of a bundle of format `version`: the checksum, and
/// from version 4 the signer's key and the signature.
pub fn trailer_len(version: u16) -> u64 {
    if version >= SIGNED_VERSION {
        CHECKSUM_LEN + SIGNATURE_LEN
    } else {
        CHECKSUM_LEN
    }
}

/// The message a version-4 signature signs: the context, the checksum `C`
/// and the signer's public key `K`.
pub fn signed_message(checksum: &[u8; 32], key: &[u8; 32]) -> Vec<u8> {
    [SIGNATURE_CONTEXT, checksum.as_slice(), key.as_slice()].concat()
}

/// Largest header accepted.
pub const MAX_HEADER_BYTES: u32 = 16 << 20;

/// Largest single body record accepted, decompressed. SQLite's own limit on
/// one value is 1 GB; this leaves room for a row holding one such value.
pub const MAX_RECORD_BYTES: u64 = (1 << 30) + (16 << 20);

/// Most elements a list inside a record may have (SQLite's column limit).
pub const MAX_LIST: usize = 32_768;

/// Most tables or origins a header may list.
pub const MAX_HEADER_LIST: usize = 1 << 20;

/// zstd level used for the body.
pub const ZSTD_LEVEL: i32 = 3;

/// An instance named in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRef {
    /// Its site id (16 bytes).
    pub id: SiteId,
    /// Its name.
    pub name: String,
}

/// A table carried by a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TableDef {
    /// Table name.
    pub name: String,
    /// Key columns in primary-key order.
    #[serde(deserialize_with = "de_strings")]
    pub key: Vec<String>,
    /// Non-key columns; `cells[i]` is bit `i + 1` in the records.
    #[serde(deserialize_with = "de_strings")]
    pub cells: Vec<String>,
    /// Full exports only: the table's `CREATE TABLE` statement, then its
    /// `CREATE INDEX` statements, so a new instance can be set up from the
    /// bundle alone. Absent from deltas and from bundles of older builds.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_strings"
    )]
    pub schema: Vec<String>,
    /// How rows of the table are recognised (spec/merge.md, "Row
    /// identity"). Absent means by key (and in bundles before version 3).
    #[serde(default = "key_identity", skip_serializing_if = "is_key_identity")]
    pub identity: Identity,
    /// Columns that refer to rows of other tracked tables; their values
    /// are tagged (see `src/catalog/refs.rs`). Absent before version 3.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_refs"
    )]
    pub refs: Vec<RefDef>,
}

impl TableDef {
    /// Number of values in a record's key: the key columns, or one row
    /// identity for tables identified by origin or content.
    pub fn key_len(&self) -> usize {
        if self.identity.mapped() {
            1
        } else {
            self.key.len()
        }
    }
}

/// A constraint whose columns hold tagged references (`src/catalog/refs.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefDef {
    /// The referring columns (cells of the table), in constraint order.
    #[serde(deserialize_with = "de_strings")]
    pub cells: Vec<String>,
    /// The referenced table.
    pub parent: String,
    /// How the referenced table identifies its rows at the sender.
    #[serde(default = "key_identity")]
    pub identity: Identity,
}

impl RefDef {
    /// The header entries describing a table's tagged columns.
    pub(crate) fn of(refs: &[crate::catalog::refs::RefFk]) -> Vec<RefDef> {
        refs.iter()
            .map(|r| RefDef {
                cells: r.columns.clone(),
                parent: r.parent.name.clone(),
                identity: r.parent.identity,
            })
            .collect()
    }
}

fn key_identity() -> Identity {
    Identity::Key
}

fn is_key_identity(i: &Identity) -> bool {
    *i == Identity::Key
}

fn de_refs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RefDef>, D::Error> {
    bounded(d, MAX_LIST)
}

/// Sequence numbers of one origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginSeqs {
    /// Index into [`Header::origins`].
    pub origin: u32,
    /// The numbers.
    pub seqs: SeqSet,
}

/// Everything before the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Who wrote the bundle.
    pub sender: SiteRef,
    /// The sender's HLC when it wrote the bundle.
    pub created: u64,
    /// True for a full export (the whole state), false for a delta.
    pub full: bool,
    /// The peer name it was written for (informative; any instance may import it).
    pub recipient: Option<String>,
    /// Every instance referred to by `covers`, `seen` and the records.
    #[serde(deserialize_with = "de_header_list")]
    pub origins: Vec<SiteRef>,
    /// Tables the records refer to, by index.
    #[serde(deserialize_with = "de_header_list")]
    pub tables: Vec<TableDef>,
    /// Per origin, the change numbers this bundle covers: every change in
    /// these ranges that still wins a cell at the sender is in the body.
    #[serde(deserialize_with = "de_header_list")]
    pub covers: Vec<OriginSeqs>,
    /// Per origin, every change number the sender has: an acknowledgement.
    #[serde(deserialize_with = "de_header_list")]
    pub seen: Vec<OriginSeqs>,
    /// Numbers of the sender's own changes it knows it no longer has (it
    /// was restored from a backup): whoever has them sends them back.
    #[serde(default)]
    pub lost: SeqSet,
    /// Per origin, change numbers the sender knows exist (an instance whose
    /// bundle it imported said it has them) but has not received: gaps,
    /// holes and top end alike. Whoever sent them to it sends them again.
    /// Absent from bundles of older builds (and when nothing is missing).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_header_list"
    )]
    pub lacks: Vec<OriginSeqs>,
    /// Full exports only: the app's tables that are not tracked, as schema
    /// only (no rows), so a new instance has every table the app uses.
    /// Absent from deltas and from bundles of older builds.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_header_list"
    )]
    pub local_tables: Vec<LocalTable>,
    /// Full exports only: the app's views. Absent from deltas and from
    /// bundles of older builds.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_header_list"
    )]
    pub views: Vec<ViewDef>,
    /// The schema version of each table the sender tracks (spec/schema.md):
    /// what the receiver remembers of it, to send it the schema changes it
    /// lacks. Absent from bundles of older builds.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_header_list"
    )]
    pub schemas: Vec<SchemaVersion>,
    /// Enrolments and revocations signed by the deployment's anchor (HQ)
    /// that the recipient has not acknowledged (spec/trust.md, "Records").
    /// Believed only when the anchor's signature holds. Absent from bundles
    /// of older builds and when there is nothing to send.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_header_list"
    )]
    pub trust: Vec<SignedRecord>,
    /// The highest serial of the anchor's records the sender holds: the
    /// recipient sends it only later ones. Absent when it holds none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_seen: Option<u64>,
    /// The sender's age X25519 recipient (`age1…`): the receiver records it
    /// with the sender's pinned key and encrypts its bundles back to it
    /// (spec/trust.md, "Encryption to the recipient"). Signed like the rest
    /// of the header. Absent from bundles of older builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_recipient: Option<String>,
    /// Origin statements (spec/trust.md, "Claims checked against facts"):
    /// the sender's own, made for this bundle, and the newest one it holds
    /// of every other origin its `covers`, `seen` and `lacks` name, each
    /// signed by that origin's key. Absent from bundles of older builds.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_header_list"
    )]
    pub statements: Vec<SignedStatement>,
}

/// What an origin statement signs before the statement's bytes: a
/// signature made for anything else can never be taken for one.
pub const STATEMENT_CONTEXT: &[u8] = b"fieldsync origin statement v1\0";

/// Longest statement accepted, in bytes: the fixed fields and a name of at
/// most 64 bytes.
pub const MAX_STATEMENT_BYTES: usize = 16 + 8 + 8 + 32 + 64;

/// An origin statement as it travels and is kept: its bytes exactly as the
/// origin signed them (`src/catalog/statements.rs` decodes them), and the
/// origin's Ed25519 signature over [`STATEMENT_CONTEXT`] followed by them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedStatement {
    /// The statement: site id (16 bytes), top (u64 big-endian), HLC (u64
    /// big-endian), the origin's Ed25519 public key (32 bytes), its name
    /// (UTF-8, the rest).
    pub statement: Blob,
    /// The signature (64 bytes).
    pub signature: Blob,
}

/// Bytes that travel as one MessagePack `bin`, at most
/// [`MAX_STATEMENT_BYTES`] of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BlobVisitor;
        impl<'de> Visitor<'de> for BlobVisitor {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "at most {MAX_STATEMENT_BYTES} bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                if v.len() > MAX_STATEMENT_BYTES {
                    return Err(E::invalid_length(v.len(), &self));
                }
                Ok(Blob(v.to_vec()))
            }
        }
        d.deserialize_bytes(BlobVisitor)
    }
}

/// A table's schema version at the sender.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SchemaVersion {
    /// Table name.
    pub name: String,
    /// Its version: 16 lower-case hex digits (spec/schema.md).
    pub version: String,
}

/// An app table a full export carries as schema only: it is not tracked, so
/// each instance keeps its own rows (sessions, per-instance counters), but
/// the app needs the table to exist.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LocalTable {
    /// Table name.
    pub name: String,
    /// Its `CREATE TABLE` statement, then its `CREATE INDEX` statements, as
    /// SQLite stores them (like [`TableDef::schema`]).
    #[serde(deserialize_with = "de_strings")]
    pub schema: Vec<String>,
}

/// An app view a full export carries.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ViewDef {
    /// View name.
    pub name: String,
    /// Its `CREATE VIEW` statement, as SQLite stores it.
    pub sql: String,
}

/// One version of a row in a record (absolute values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    /// Index into [`Header::origins`].
    pub origin: u32,
    /// Sequence number at the origin.
    pub seq: u64,
    /// HLC.
    pub hlc: u64,
    /// Cells it holds (bit 0: the row itself).
    pub cols: ColSet,
}

/// One row in a bundle: its key, causal length, the versions carried and the
/// values of the cells they hold.
#[derive(Debug, Clone, PartialEq)]
pub struct RowRecord {
    /// Index into [`Header::tables`].
    pub table: u32,
    /// Key values in primary-key order.
    pub key: Vec<Value>,
    /// Causal length (odd: exists, even: deleted).
    pub cl: u64,
    /// Versions, with disjoint cell sets.
    pub versions: Vec<VersionRecord>,
    /// Values of the union of the versions' cells (sentinel excluded), in
    /// ascending bit order.
    pub values: Vec<Value>,
}

/// The record after the end marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// Number of row records.
    pub rows: u64,
    /// Number of versions in them.
    pub versions: u64,
    /// Row records per table index.
    #[serde(deserialize_with = "de_header_list")]
    pub per_table: Vec<u64>,
}

/// A block of rows as written (v2): the rows' fields column by column, so
/// that like values sit together and compress well. Versions are listed row
/// after row (`nver` per row); `values` holds, for bit 1, 2, … in turn, the
/// values of the rows (in order) whose versions' cells include that bit.
#[derive(Debug, Default, Serialize)]
pub(crate) struct BlockWireOut {
    pub table: Vec<u32>,
    pub cl: Vec<u64>,
    pub key: Vec<Value>,
    pub nver: Vec<u32>,
    pub origin: Vec<u32>,
    pub dseq: Vec<i64>,
    pub dhlc: Vec<i64>,
    pub cols: Vec<ColSet>,
    pub values: Vec<Value>,
}

/// A block as read (v2).
#[derive(Debug, Deserialize)]
pub(crate) struct BlockWire {
    #[serde(deserialize_with = "de_block_rows")]
    pub table: Vec<u32>,
    #[serde(deserialize_with = "de_block_rows")]
    pub cl: Vec<u64>,
    #[serde(deserialize_with = "de_block_items")]
    pub key: Vec<Value>,
    #[serde(deserialize_with = "de_block_rows")]
    pub nver: Vec<u32>,
    #[serde(deserialize_with = "de_block_items")]
    pub origin: Vec<u32>,
    #[serde(deserialize_with = "de_block_items")]
    pub dseq: Vec<i64>,
    #[serde(deserialize_with = "de_block_items")]
    pub dhlc: Vec<i64>,
    #[serde(deserialize_with = "de_block_items")]
    pub cols: Vec<ColSet>,
    #[serde(deserialize_with = "de_block_items")]
    pub values: Vec<Value>,
}

fn de_block_rows<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    bounded(d, MAX_BLOCK_ROWS)
}

fn de_block_items<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    bounded(d, MAX_BLOCK_ITEMS)
}

/// A version of a version-1 row: its sequence number and clock are
/// differences from the previous version in the body (zero before the
/// first), as in blocks.
#[derive(Debug, Deserialize)]
pub(crate) struct VersionWire {
    pub origin: u32,
    pub dseq: i64,
    pub dhlc: i64,
    pub cols: ColSet,
}

/// A row of a version-1 body, which held rows one by one.
#[derive(Debug, Deserialize)]
pub(crate) struct RowWire {
    pub table: u32,
    #[serde(deserialize_with = "de_values")]
    pub key: Vec<Value>,
    pub cl: u64,
    #[serde(deserialize_with = "de_versions")]
    pub versions: Vec<VersionWire>,
    #[serde(deserialize_with = "de_values")]
    pub values: Vec<Value>,
}

/// Deserialize a list of at most `max` elements, so a corrupt length prefix
/// cannot make the reader allocate without bound.
struct BoundedVec<T> {
    max: usize,
    _t: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for BoundedVec<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {} elements", self.max)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(x) = seq.next_element()? {
            if out.len() == self.max {
                return Err(de::Error::invalid_length(self.max + 1, &self));
            }
            out.push(x);
        }
        Ok(out)
    }
}

pub(crate) fn bounded<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    max: usize,
) -> Result<Vec<T>, D::Error> {
    d.deserialize_seq(BoundedVec {
        max,
        _t: PhantomData,
    })
}

fn de_values<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    bounded(d, MAX_LIST)
}

fn de_versions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<VersionWire>, D::Error> {
    bounded(d, MAX_LIST)
}

fn de_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    bounded(d, MAX_LIST)
}

fn de_header_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    bounded(d, MAX_HEADER_LIST)
}
