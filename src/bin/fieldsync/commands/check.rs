//! `fieldsync check`: verify fieldsync's own state in a database; a
//! database that fails ends as an error, after the problems are listed.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use fieldsync::CheckReport;

use super::DbArg;
use crate::exit::Outcome;
use crate::ui::Ui;

/// Check fieldsync's own state in a database; exit 1 and list problems if any.
#[derive(Args)]
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
            "ok: {} tracked tables, {} rows, {} change-log entries, {} instances, {} peers checked.",
            r.tables, r.rows, r.log_entries, r.origins, r.peers
        );
    }
    for p in &r.problems {
        writeln!(out, "{p}")?;
    }
    if r.omitted > 0 {
        writeln!(out, "… and {} more problems like these.", r.omitted)?;
    }
    Ok(())
}
