//! `fieldsync compact`: fold recorded changes into the change log now.

use anyhow::Result;
use clap::Args;

use super::{DbArg, count};
use crate::exit::Outcome;
use crate::ui::Ui;

/// Fold recorded changes into the change log now (export and import do it too).
#[derive(Args)]
#[command(after_help = "Examples:\n  fieldsync compact --db hq.db")]
pub struct CompactArgs {
    #[command(flatten)]
    db: DbArg,
}

pub fn cmd_compact(ui: &mut Ui, args: &CompactArgs) -> Result<Outcome> {
    let r = args.db.open()?.compact()?;
    ui.report(&r, |out| {
        writeln!(
            out,
            "folded {}; the change log holds {} (was {}).",
            count(r.captured, "recorded change", "recorded changes"),
            count(r.log_entries, "entry", "entries"),
            r.log_entries_before
        )?;
        if r.vanished > 0 {
            writeln!(
                out,
                "{} deleted without a trigger (INSERT OR REPLACE); {} now recorded.",
                count(r.vanished, "row was", "rows were"),
                if r.vanished == 1 {
                    "its deletion is"
                } else {
                    "their deletion is"
                }
            )?;
        }
        Ok(())
    })?;
    for w in &r.warnings {
        ui.warn(w)?;
    }
    Ok(Outcome::Success)
}
