//! `fieldsync check`: verify fieldsync's own state in a database; a
//! database that fails ends as an error, after the problems are listed.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use fieldsync::CheckReport;

use super::{DbArg, count};
use crate::exit::Outcome;
use crate::ui::Ui;

/// Check fieldsync's own state in a database; exit 1 and list problems if any.
///
/// It checks one database against fieldsync's invariants; whether two
/// instances hold the same rows is `fieldsync fingerprint`'s question.
#[derive(Args)]
#[command(after_help = "Examples:\n  fieldsync check --db hq.db")]
pub struct CheckArgs {
    #[command(flatten)]
    db: DbArg,
}

pub fn cmd_check(ui: &mut Ui, args: &CheckArgs) -> Result<Outcome> {
    let report = args.db.open()?.check()?;
    ui.report(&report, |out| print_check(out, &report))?;
    for w in &report.warnings {
        ui.warn(w)?;
    }
    // The problems are printed; the error line says how many and the first.
    report.into_result(args.db.path().to_owned())?;
    Ok(Outcome::Success)
}

fn print_check(out: &mut dyn Write, r: &CheckReport) -> std::io::Result<()> {
    if r.ok {
        return writeln!(
            out,
            "ok: {}, {}, {}, {}, {} checked.",
            count(r.tables, "tracked table", "tracked tables"),
            count(r.rows, "row", "rows"),
            count(r.log_entries, "change-log entry", "change-log entries"),
            count(r.origins, "instance", "instances"),
            count(r.peers, "peer", "peers")
        );
    }
    for p in &r.problems {
        writeln!(out, "{p}")?;
    }
    if r.omitted > 0 {
        writeln!(
            out,
            "… and {} more {} like these.",
            r.omitted,
            if r.omitted == 1 {
                "problem"
            } else {
                "problems"
            }
        )?;
    }
    Ok(())
}
