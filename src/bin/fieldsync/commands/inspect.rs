//! `fieldsync inspect`: what a bundle file holds, who signed it and whether
//! it is intact; no database needed (so the signer is shown, not checked
//! against the pinned keys). An encrypted bundle shows only its outer
//! header, unless `--db` names the database of an instance it is for. A damaged or wrongly signed bundle is shown,
//! then ends with status 1.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Args;
use fieldsync::bundle::Hlc;
use fieldsync::bundle::envelope::{OuterHeader, is_envelope, read_outer};
use fieldsync::bundle::{BundleInfo, Header, OriginSeqs, TableDef, inspect};
use fieldsync::{Identity, Instance, signing_fingerprint};
use serde::Serialize;

use crate::exit::Outcome;
use crate::ui::{Sorted, Ui};

/// Show what a bundle file holds and whether it is intact (no database
/// needed; an encrypted bundle shows only its outer header without --db).
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync inspect field-1-week1.bundle\n  fieldsync inspect --db hq.db field-1-week1.bundle"
)]
pub struct InspectArgs {
    /// The database of the instance an encrypted bundle is for: decrypt it
    /// with that instance's key and show everything.
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// The bundle file.
    file: PathBuf,
}

/// The outer header of an encrypted bundle, in `--json`.
#[derive(Serialize)]
struct Outer<'a> {
    sender_instance: &'a str,
    sender_site: String,
    recipients: Vec<OuterRecipient<'a>>,
    /// The sender's wall clock when it wrote the file (RFC 3339).
    created_at: String,
}

#[derive(Serialize)]
struct OuterRecipient<'a> {
    instance: &'a str,
    site: String,
}

impl<'a> Outer<'a> {
    fn new(o: &'a OuterHeader) -> Self {
        Outer {
            sender_instance: &o.sender.name,
            sender_site: o.sender.id.to_string(),
            recipients: (o.recipients.iter())
                .map(|r| OuterRecipient {
                    instance: &r.name,
                    site: r.id.to_string(),
                })
                .collect(),
            created_at: fieldsync::json::rfc3339(i64::try_from(o.created).unwrap_or(i64::MAX)),
        }
    }
}

/// What `inspect --json` prints of an encrypted bundle without `--db`.
#[derive(Serialize)]
struct OuterOnly<'a> {
    encrypted: bool,
    outer: Outer<'a>,
    bytes: u64,
}

/// Unix ms as RFC 3339 (UTC), or the number if out of range.
fn wall_clock(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || ms.to_string(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
}

/// What `inspect` prints with `--json`: the header in the words of the
/// other commands (`columns`, `sender_instance`, origins by name), and the
/// counts.
#[derive(Serialize)]
struct Inspected<'a> {
    format_version: u16,
    sender_instance: &'a str,
    sender_site: String,
    full: bool,
    recipient_instance: &'a Option<String>,
    /// When the sender wrote it, by its clock.
    created_at: String,
    /// "valid", "FAILED" or "unsigned".
    signature: &'static str,
    /// The signer's Ed25519 public key (base64), version 4.
    signer_public_key: Option<String>,
    /// The fingerprint of that key alone (not the one of `fieldsync key`,
    /// which covers both of an instance's keys).
    signer_fingerprint: Option<String>,
    checksum_ok: bool,
    problem: &'a Option<String>,
    changes: Option<u64>,
    versions: Option<u64>,
    tables: Vec<InspectedTable<'a>>,
    covers: BTreeMap<String, String>,
    seen: BTreeMap<String, String>,
    local_tables: Vec<&'a str>,
    views: Vec<&'a str>,
    /// The sender's schema version of each table it tracks.
    schema_versions: BTreeMap<&'a str, &'a str>,
    /// True if the file is encrypted (decrypted with `--db`).
    encrypted: bool,
    /// The outer header of an encrypted bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    outer: Option<Outer<'a>>,
}

#[derive(Serialize)]
struct InspectedTable<'a> {
    table: &'a str,
    key: &'a [String],
    identity: Identity,
    columns: &'a [String],
    references: Vec<InspectedRef<'a>>,
    changes: Option<u64>,
    /// The statements it carries (a full export, or a delta bringing a
    /// schema change).
    schema: &'a [String],
}

#[derive(Serialize)]
struct InspectedRef<'a> {
    columns: &'a [String],
    table: &'a str,
}

impl<'a> Inspected<'a> {
    fn new(info: &'a BundleInfo, outer: Option<&'a OuterHeader>) -> Self {
        let h = &info.header;
        Inspected {
            format_version: info.version,
            sender_instance: &h.sender.name,
            sender_site: h.sender.id.to_string(),
            full: h.full,
            recipient_instance: &h.recipient,
            created_at: fieldsync::json::rfc3339(Hlc(h.created).unix_ms()),
            signature: signature_word(info),
            signer_public_key: info.signer.map(|k| BASE64.encode(k)),
            signer_fingerprint: info.signer.as_ref().map(signing_fingerprint),
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
            outer: outer.map(Outer::new),
        }
    }
}

impl<'a> InspectedTable<'a> {
    fn new(t: &'a TableDef, changes: Option<u64>) -> Self {
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
fn signature_word(info: &BundleInfo) -> &'static str {
    match (info.signer, info.signature_valid) {
        (None, _) => "unsigned",
        (Some(_), true) => "valid",
        (Some(_), false) => "FAILED",
    }
}

/// Row records of the bundle's table `i`, when the body was counted.
fn table_changes(info: &BundleInfo, i: usize) -> Option<u64> {
    info.end.as_ref().and_then(|e| e.per_table.get(i)).copied()
}

/// An origin of the header by name (`#3` if the header does not list it).
fn origin(h: &Header, i: u32) -> String {
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

pub fn cmd_inspect(ui: &mut Ui, args: &InspectArgs) -> Result<Outcome> {
    let file = &args.file;
    let mut f = File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let cannot = || format!("cannot inspect {}", file.display());
    let (info, outer) = match &args.db {
        Some(db) => Instance::open(db)?.inspect(f).with_context(cannot)?,
        None if is_envelope(&mut f).with_context(cannot)? => {
            let outer = read_outer(&mut f).with_context(cannot)?;
            let size = f.metadata().map(|m| m.len()).with_context(cannot)?;
            ui.report(
                &Sorted(OuterOnly {
                    encrypted: true,
                    outer: Outer::new(&outer),
                    bytes: size,
                }),
                |out| print_outer_only(out, &outer, size, file),
            )?;
            return Ok(Outcome::Success);
        }
        None => (inspect(f).with_context(cannot)?, None),
    };
    ui.report(&Sorted(Inspected::new(&info, outer.as_ref())), |out| {
        print_inspect(out, &info, outer.as_ref(), file)
    })?;
    Ok(if info.intact {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

/// An encrypted bundle inspected without the recipient's database.
fn print_outer_only(
    out: &mut dyn Write,
    o: &OuterHeader,
    size: u64,
    file: &Path,
) -> std::io::Result<()> {
    writeln!(out, "bundle     {}", file.display())?;
    writeln!(
        out,
        "encrypted  only this outer header can be read without the recipient's key (`fieldsync inspect --db DB {}` on the recipient shows everything)",
        file.display()
    )?;
    print_outer(out, o, false)?;
    writeln!(out, "size       {size} bytes")
}

/// The outer header; `decrypted`: compared with the signed header inside
/// (a mismatch is the bundle's problem, shown below it).
fn print_outer(out: &mut dyn Write, o: &OuterHeader, decrypted: bool) -> std::io::Result<()> {
    let checked = if decrypted {
        "compared with the signed bundle inside"
    } else {
        "not checked until decrypted"
    };
    writeln!(
        out,
        "sender     '{}' (site id {}; {checked})",
        o.sender.name, o.sender.id
    )?;
    for (i, r) in o.recipients.iter().enumerate() {
        let label = if i == 0 { "for" } else { "" };
        writeln!(out, "{label:<10} '{}' (site id {})", r.name, r.id)?;
    }
    writeln!(
        out,
        "written    {} (the sender's clock)",
        wall_clock(o.created)
    )
}

fn print_inspect(
    out: &mut dyn Write,
    info: &BundleInfo,
    outer: Option<&OuterHeader>,
    file: &Path,
) -> std::io::Result<()> {
    let h = &info.header;
    writeln!(out, "bundle     {}", file.display())?;
    if let Some(o) = outer {
        writeln!(
            out,
            "encrypted  decrypted with this instance's key; outer header:"
        )?;
        print_outer(out, o, true)?;
    }
    writeln!(
        out,
        "from       '{}' (site id {})",
        h.sender.name, h.sender.id
    )?;
    if h.full {
        writeln!(out, "kind       full export")?;
    } else {
        let to = h.recipient.as_deref().unwrap_or("?");
        writeln!(out, "kind       delta for '{to}'")?;
    }
    writeln!(out, "created    {}", Hlc(h.created))?;
    match &info.end {
        Some(end) => writeln!(
            out,
            "changes    {} ({})",
            end.rows,
            if end.versions == 1 {
                "1 version".to_owned()
            } else {
                format!("{} versions", end.versions)
            }
        )?,
        None => writeln!(out, "changes    unknown")?,
    }
    writeln!(out, "tables")?;
    for (i, t) in h.tables.iter().enumerate() {
        let n = table_changes(info, i).map_or_else(|| "?".to_owned(), |n| n.to_string());
        let identified = match t.identity {
            Identity::Key => format!("key ({})", t.key.join(", ")),
            Identity::Column => format!("rows by {}", t.key.join(", ")),
            Identity::Origin => "rows by origin".to_owned(),
            Identity::Content => "rows by content".to_owned(),
        };
        let version = (h.schemas.iter())
            .find(|v| v.name.eq_ignore_ascii_case(&t.name))
            .map_or_else(String::new, |v| format!("   schema {}", v.version));
        let carried = if t.schema.is_empty() || h.full {
            ""
        } else {
            "   with its schema"
        };
        writeln!(
            out,
            "  {:<24} {:>8} {:<7}   {identified} {} ({}){version}{carried}",
            t.name,
            n,
            if n == "1" { "change" } else { "changes" },
            if t.cells.len() == 1 {
                "column"
            } else {
                "columns"
            },
            t.cells.join(", ")
        )?;
    }
    if !h.local_tables.is_empty() {
        let names: Vec<&str> = h.local_tables.iter().map(|t| t.name.as_str()).collect();
        writeln!(
            out,
            "local      {} (schema only, no rows)",
            names.join(", ")
        )?;
    }
    if !h.views.is_empty() {
        let names: Vec<&str> = h.views.iter().map(|v| v.name.as_str()).collect();
        writeln!(out, "views      {}", names.join(", "))?;
    }
    writeln!(out, "covers")?;
    for c in &h.covers {
        writeln!(out, "  {:<24} {}", origin(h, c.origin), c.seqs)?;
    }
    writeln!(out, "sender has")?;
    for c in &h.seen {
        writeln!(out, "  {:<24} {}", origin(h, c.origin), c.seqs)?;
    }
    match info.signer {
        None => writeln!(
            out,
            "signature  none: format version {} is unsigned (imported only while `fieldsync trust --allow-unsigned-for` allows it)",
            info.version
        )?,
        Some(k) => {
            writeln!(
                out,
                "signer     {} (fingerprint of the signing key alone; `fieldsync key` on the sender shows it as \"signing key\")",
                signing_fingerprint(&k)
            )?;
            writeln!(out, "           public key {}", BASE64.encode(k))?;
            if info.signature_valid {
                writeln!(
                    out,
                    "signature  valid (signer not checked: import checks it against the key pinned for '{}')",
                    h.sender.name
                )?;
            } else {
                writeln!(out, "signature  FAILED")?;
            }
        }
    }
    match &info.problem {
        None => writeln!(out, "checksum   ok"),
        Some(p) => writeln!(out, "checksum   FAILED: {p}"),
    }
}
