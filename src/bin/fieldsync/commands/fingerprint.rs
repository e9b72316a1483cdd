//! `fieldsync fingerprint`: a short content hash per tracked table, to
//! compare two instances over the phone (spec/merge.md, "Fingerprints").

use std::io::Write;

use anyhow::{Result, bail};
use clap::Args;
use fieldsync::Fingerprints;

use super::{DbArg, count, shell_quote};
use crate::exit::Outcome;
use crate::ui::Ui;

/// Show a short hash of each tracked table's rows: equal on two instances
/// exactly when they hold the same rows.
///
/// Local numbers (autoincrement ids, rowids) and the order of rows do not
/// count, so HQ and a laptop that hold the same data show the same
/// fingerprints. Read the first line to each other; if it differs, the
/// table lines say which tables differ.
#[derive(Args)]
#[command(after_help = "Examples:
  fieldsync fingerprint --db hq.db
  fieldsync fingerprint --db field-1.db org_organisation gis_location
  fieldsync fingerprint --db field-1.db --expect 7KQ4-M2XA-9TFE-3HWR")]
pub struct FingerprintArgs {
    #[command(flatten)]
    db: DbArg,
    /// Tables to hash (all tracked tables if none).
    #[arg(value_name = "TABLE")]
    tables: Vec<String>,
    /// The fingerprint the other side read out: exit 1 unless it is this
    /// one (case, dashes and O/0, I/L/1 do not matter).
    #[arg(long, value_name = "FINGERPRINT")]
    expect: Option<String>,
}

pub fn cmd_fingerprint(ui: &mut Ui, args: &FingerprintArgs) -> Result<Outcome> {
    let report = args.db.open()?.fingerprints(&args.tables)?;
    // A mismatch is an error line and nothing on stdout, like every failure.
    if let Some(expected) = &args.expect {
        if !report.matches(expected) {
            bail!(
                "the fingerprint here is {}, not {expected}: the databases differ; compare the tables' fingerprints (`fieldsync fingerprint --db {}`) to see which, then exchange bundles both ways",
                report.fingerprint,
                shell_quote(args.db.path())
            );
        }
    }
    ui.report(&report, |out| print_fingerprints(out, &report))?;
    let unnumbered: u64 = report.tables.iter().map(|t| t.unnumbered).sum();
    if unnumbered > 0 {
        ui.warn(format!(
            "{} recorded here since the last export or import {} no global identity yet, so {} hashed by {} local number: run `fieldsync compact --db {}` and fingerprint again to compare with another instance",
            count(unnumbered, "row", "rows"),
            if unnumbered == 1 { "has" } else { "have" },
            if unnumbered == 1 { "it is" } else { "they are" },
            if unnumbered == 1 { "its" } else { "their" },
            shell_quote(args.db.path())
        ))?;
    }
    if let Some(expected) = &args.expect {
        ui.text(|out| {
            writeln!(
                out,
                "matches {expected}: the same rows as the other instance"
            )
        })?;
    }
    Ok(Outcome::Success)
}

pub(super) fn print_fingerprints(out: &mut dyn Write, r: &Fingerprints) -> std::io::Result<()> {
    writeln!(
        out,
        "fingerprint  {}  ({}; equal on another instance means the same rows)",
        r.fingerprint,
        count(r.tables.len() as u64, "table", "tables")
    )?;
    for t in &r.tables {
        writeln!(
            out,
            "  {:<28} {:>9}  {}",
            t.table,
            count(t.rows, "row", "rows"),
            t.fingerprint
        )?;
    }
    Ok(())
}
