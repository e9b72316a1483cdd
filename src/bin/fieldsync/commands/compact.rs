//! `fieldsync compact`: fold recorded changes into the change log now.

use anyhow::Result;
use clap::Args;

use super::DbArg;
use crate::exit::Outcome;
use crate::ui::Ui;

/// Fold recorded changes into the change log now (export and import do it too).
#[derive(Args)]
pub struct CompactArgs {
    #[command(flatten)]
    db: DbArg,
}

pub fn cmd_compact(ui: &mut Ui, args: &CompactArgs) -> Result<Outcome> {
    let r = args.db.open()?.compact()?;
    ui.report(&r, |out| {
        writeln!(
            out,
            "folded {} recorded changes; the change log holds {} entries (was {}).",
            r.captured, r.log_entries, r.log_entries_before
        )?;
        if r.vanished > 0 {
            writeln!(
                out,
                "{} rows were deleted without a trigger (INSERT OR REPLACE); their deletion is now recorded.",
                r.vanished
            )?;
        }
        Ok(())
    })?;
    for w in &r.warnings {
        ui.warn(w)?;
    }
    Ok(Outcome::Success)
}
