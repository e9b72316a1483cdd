//! `fieldsync inspect`: what a bundle file holds, who signed it and whether
//! it is intact; no database needed (so the signer is shown, not checked
//! against the pinned keys). An encrypted bundle shows only its outer
//! header, unless `--db` names the database of an instance it is for. A damaged or wrongly signed bundle is shown,
//! then ends with status 1.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Args;
use fieldsync::bundle::Hlc;
use fieldsync::bundle::envelope::{OuterHeader, is_envelope, read_outer};
use fieldsync::bundle::report::{
    InspectReport, OuterOnlyReport, OuterReport, origin, table_changes,
};
use fieldsync::bundle::{BundleInfo, inspect};
use fieldsync::{Identity, Instance, signing_fingerprint};

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

pub fn cmd_inspect(ui: &mut Ui, args: &InspectArgs) -> Result<Outcome> {
    let file = &args.file;
    let mut f = File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let cannot = || format!("cannot inspect {}", file.display());
    // A part of a split bundle: what it says of itself, checked.
    if fieldsync::bundle::parts::is_part(file).with_context(cannot)? {
        let (part, _) = fieldsync::bundle::parts::read_part(file).with_context(cannot)?;
        ui.report(
            &part.report(),
            |out| {
                writeln!(out, "part       {}", file.display())?;
                writeln!(
                    out,
                    "of         {} (bundle {}): part {} of {}, bytes {}..{} of {}",
                    part.name,
                    part.set_short(),
                    part.index,
                    part.count,
                    part.offset,
                    part.offset + part.length,
                    part.total
                )?;
                writeln!(out, "checksum   ok")?;
                writeln!(
                    out,
                    "Import every part (`fieldsync import --db DB {}.part*.bundle`, in any order, together or as they come): the bundle is checked and applied once all are there.",
                    part.name.strip_suffix(".bundle").unwrap_or(&part.name)
                )
            },
        )?;
        return Ok(Outcome::Success);
    }
    let (info, outer) = match &args.db {
        Some(db) => Instance::open(db)?.inspect(f).with_context(cannot)?,
        None if is_envelope(&mut f).with_context(cannot)? => {
            let outer = read_outer(&mut f).with_context(cannot)?;
            let size = f.metadata().map(|m| m.len()).with_context(cannot)?;
            ui.report(
                &Sorted(OuterOnlyReport {
                    encrypted: true,
                    outer: OuterReport::new(&outer),
                    bytes: size,
                }),
                |out| print_outer_only(out, &outer, size, file),
            )?;
            return Ok(Outcome::Success);
        }
        None => (inspect(f).with_context(cannot)?, None),
    };
    ui.report(&Sorted(InspectReport::new(&info, outer.as_ref())), |out| {
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
