//! What `fieldsync inspect --json` prints of a bundle: its header and
//! counts in the vocabulary of spec/json.md (`sender_instance`, origins by
//! name, times as RFC 3339), or, for an encrypted bundle read without the
//! recipient's key, its outer header. Reading the file is [`super::inspect`]
//! and [`super::envelope::read_outer`]; this only shapes what they found.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;

use super::envelope::OuterHeader;
use super::{BundleInfo, Header, Hlc, OriginSeqs, TableDef};
use crate::catalog::layout::Identity;

/// The outer header of an encrypted bundle, in `--json`.
#[derive(Debug, Serialize)]
pub struct OuterReport<'a> {
    /// The sender's name, as the outer header claims it.
    pub sender_instance: &'a str,
    /// Its site id.
    pub sender_site: String,
    /// The instances it is encrypted to.
    pub recipients: Vec<OuterRecipient<'a>>,
    /// The sender's wall clock when it wrote the file (RFC 3339).
    pub created_at: String,
}

/// One recipient of an encrypted bundle.
#[derive(Debug, Serialize)]
pub struct OuterRecipient<'a> {
    /// Its name.
    pub instance: &'a str,
    /// Its site id.
    pub site: String,
}

impl<'a> OuterReport<'a> {
    /// The outer header `o` in the vocabulary of spec/json.md.
    pub fn new(o: &'a OuterHeader) -> Self {
        OuterReport {
            sender_instance: &o.sender.name,
            sender_site: o.sender.id.to_string(),
            recipients: (o.recipients.iter())
                .map(|r| OuterRecipient {
                    instance: &r.name,
                    site: r.id.to_string(),
                })
                .collect(),
            created_at: crate::json::rfc3339(i64::try_from(o.created).unwrap_or(i64::MAX)),
        }
    }
}

/// What `inspect --json` prints of an encrypted bundle without `--db`.
#[derive(Debug, Serialize)]
pub struct OuterOnlyReport<'a> {
    /// Always true.
    pub encrypted: bool,
    /// The outer header.
    pub outer: OuterReport<'a>,
    /// The file's size.
    pub bytes: u64,
}

/// What `inspect` prints with `--json`: the header in the words of the
/// other commands (`columns`, `sender_instance`, origins by name), and the
/// counts.
#[derive(Debug, Serialize)]
pub struct InspectReport<'a> {
    /// The file's format version.
    pub format_version: u16,
    /// The sender's name.
    pub sender_instance: &'a str,
    /// Its site id.
    pub sender_site: String,
    /// True for a full export.
    pub full: bool,
    /// The instance a delta was made for.
    pub recipient_instance: &'a Option<String>,
    /// When the sender wrote it, by its clock.
    pub created_at: String,
    /// "valid", "FAILED" or "unsigned".
    pub signature: &'static str,
    /// The signer's Ed25519 public key (base64), version 4.
    pub signer_public_key: Option<String>,
    /// The fingerprint of that key alone (not the one of `fieldsync key`,
    /// which covers both of an instance's keys).
    pub signer_fingerprint: Option<String>,
    /// True if the signature and the checksum hold and the body decodes.
    pub checksum_ok: bool,
    /// Why not.
    pub problem: &'a Option<String>,
    /// Row records in the body (when it was read whole).
    pub changes: Option<u64>,
    /// Versions in them.
    pub versions: Option<u64>,
    /// Each table it carries.
    pub tables: Vec<InspectedTable<'a>>,
    /// The change numbers it covers, by origin name.
    pub covers: BTreeMap<String, String>,
    /// What its sender has, by origin name.
    pub seen: BTreeMap<String, String>,
    /// The app's untracked tables (a full export: schema only).
    pub local_tables: Vec<&'a str>,
    /// The app's views (a full export).
    pub views: Vec<&'a str>,
    /// The sender's schema version of each table it tracks.
    pub schema_versions: BTreeMap<&'a str, &'a str>,
    /// True if the file is encrypted (decrypted with `--db`).
    pub encrypted: bool,
    /// The outer header of an encrypted bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outer: Option<OuterReport<'a>>,
}

/// One table of a bundle.
#[derive(Debug, Serialize)]
pub struct InspectedTable<'a> {
    /// Its name.
    pub table: &'a str,
    /// Its key columns (none for rows identified by origin or content).
    pub key: &'a [String],
    /// How its rows are identified.
    pub identity: Identity,
    /// Its other columns.
    pub columns: &'a [String],
    /// Its references to other tables.
    pub references: Vec<InspectedRef<'a>>,
    /// Its row records in the bundle (when counted).
    pub changes: Option<u64>,
    /// The statements it carries (a full export, or a delta bringing a
    /// schema change).
    pub schema: &'a [String],
}

/// A reference from a bundle's table to another.
#[derive(Debug, Serialize)]
pub struct InspectedRef<'a> {
    /// The referring columns.
    pub columns: &'a [String],
    /// The table referred to.
    pub table: &'a str,
}

impl<'a> InspectReport<'a> {
    /// What `info` says of a bundle (and `outer`, its outer header if it
    /// was encrypted), in the vocabulary of spec/json.md.
    pub fn new(info: &'a BundleInfo, outer: Option<&'a OuterHeader>) -> Self {
        let h = &info.header;
        InspectReport {
            format_version: info.version,
            sender_instance: &h.sender.name,
            sender_site: h.sender.id.to_string(),
            full: h.full,
            recipient_instance: &h.recipient,
            created_at: crate::json::rfc3339(Hlc(h.created).unix_ms()),
            signature: signature_word(info),
            signer_public_key: info.signer.map(|k| BASE64.encode(k)),
            signer_fingerprint: info
                .signer
                .as_ref()
                .map(crate::catalog::keys::signing_fingerprint),
            checksum_ok: info.intact,
            problem: &info.problem,
            changes: info.end.as_ref().map(|e| e.rows),
            versions: info.end.as_ref().map(|e| e.versions),
            tables: (h.tables.iter().enumerate())
                .map(|(i, t)| InspectedTable::new(t, table_changes(info, i)))
                .collect(),
            covers: by_origin(h, &h.covers),
            seen: by_origin(h, &h.seen),
            local_tables: h.local_tables.iter().map(|t| t.name.as_str()).collect(),
            views: h.views.iter().map(|v| v.name.as_str()).collect(),
            schema_versions: (h.schemas.iter())
                .map(|v| (v.name.as_str(), v.version.as_str()))
                .collect(),
            encrypted: outer.is_some(),
            outer: outer.map(OuterReport::new),
        }
    }
}

impl<'a> InspectedTable<'a> {
    /// Table `t` of the header, with its row records if counted.
    pub fn new(t: &'a TableDef, changes: Option<u64>) -> Self {
        InspectedTable {
            table: &t.name,
            key: &t.key,
            identity: t.identity,
            columns: &t.cells,
            references: (t.refs.iter())
                .map(|r| InspectedRef {
                    columns: &r.cells,
                    table: &r.parent,
                })
                .collect(),
            changes,
            schema: &t.schema,
        }
    }
}

/// The state of the signature in one word.
pub fn signature_word(info: &BundleInfo) -> &'static str {
    match (info.signer, info.signature_valid) {
        (None, _) => "unsigned",
        (Some(_), true) => "valid",
        (Some(_), false) => "FAILED",
    }
}

/// Row records of the bundle's table `i`, when the body was counted.
pub fn table_changes(info: &BundleInfo, i: usize) -> Option<u64> {
    info.end.as_ref().and_then(|e| e.per_table.get(i)).copied()
}

/// An origin of the header by name (`#3` if the header does not list it).
pub fn origin(h: &Header, i: u32) -> String {
    h.origins
        .get(i as usize)
        .map(|o| o.name.clone())
        .unwrap_or_else(|| format!("#{i}"))
}

fn by_origin(h: &Header, seqs: &[OriginSeqs]) -> BTreeMap<String, String> {
    seqs.iter()
        .map(|c| (origin(h, c.origin), c.seqs.to_string()))
        .collect()
}
