//! `fieldsync journal`: the sync journal (spec/console.md, "The journal"),
//! newest first: every import, export and network sync with its counts,
//! size, duration and peer.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use fieldsync::{JournalEntry, JournalKind};
use serde::Serialize;

use super::{DbArg, count, when};
use crate::exit::Outcome;
use crate::ui::Ui;

/// Show the sync journal: every import, export and network sync, newest
/// first.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync journal --db hq.db\n  fieldsync journal --db hq.db --limit 20 --json"
)]
pub struct JournalArgs {
    #[command(flatten)]
    db: DbArg,
    /// Show at most this many entries.
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: u64,
}

/// What `journal --json` prints.
#[derive(Serialize)]
struct Journal<'a> {
    entries: &'a [JournalEntry],
}

pub fn cmd_journal(ui: &mut Ui, args: &JournalArgs) -> Result<Outcome> {
    let entries = args.db.open()?.journal(args.limit)?;
    ui.report(&Journal { entries: &entries }, |out| {
        print_journal(out, &entries)
    })?;
    Ok(Outcome::Success)
}

fn print_journal(out: &mut dyn Write, entries: &[JournalEntry]) -> std::io::Result<()> {
    if entries.is_empty() {
        return writeln!(
            out,
            "the journal is empty: nothing imported or exported yet"
        );
    }
    for e in entries {
        let peer = e.peer.as_deref().unwrap_or("(nobody)");
        let full = if e.full { " full" } else { "" };
        let bytes = e
            .bytes
            .map_or_else(|| "? bytes".to_owned(), |b| count(b, "byte", "bytes"));
        let what = match e.kind {
            JournalKind::Import => format!(
                "import{full} from '{peer}': {}, {} applied, {} known, {} older, {} quarantined",
                count(e.changes, "change", "changes"),
                e.applied,
                e.known,
                e.older,
                e.quarantined
            ),
            JournalKind::Export => format!(
                "export{full} to '{peer}': {}",
                count(e.changes, "change", "changes")
            ),
            JournalKind::Sync => format!(
                "sync with '{peer}': {}",
                count(e.changes, "change", "changes")
            ),
        };
        writeln!(
            out,
            "#{:<5} {}  {:<7}  {what}; {bytes}, {} ms",
            e.id,
            when(Some(e.at_ms)),
            e.via.as_str(),
            e.duration_ms
        )?;
    }
    Ok(())
}
