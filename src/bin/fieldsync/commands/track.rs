//! `fieldsync track`: start recording changes to tables, named or all.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use fieldsync::{Selection, TrackOptions, TrackReport};

use super::{DbArg, count};
use crate::exit::Outcome;
use crate::ui::Ui;

/// Start recording changes to tables (the rows already there are included).
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync track --db hq.db --all\n  fieldsync track --db hq.db --all --identity uuid --except 'session*'\n  fieldsync track --db hq.db person shelter"
)]
pub struct TrackArgs {
    #[command(flatten)]
    db: DbArg,
    /// Tables to track.
    #[arg(
        value_name = "TABLE",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    tables: Vec<String>,
    /// Track every table that can be tracked; say which were skipped and why.
    #[arg(long)]
    all: bool,
    /// With --all: leave out these tables, which stay local to each
    /// instance (sessions, counters). Globs allowed: --except 'sess*'.
    #[arg(long, value_name = "TABLE", num_args = 1.., requires = "all")]
    except: Vec<String>,
    /// Identify rows of tables numbered by local integer ids by this
    /// column, where the table has it UNIQUE NOT NULL (Sahana Eden's uuid).
    #[arg(long, value_name = "COLUMN")]
    identity: Option<String>,
    /// Treat this table's integer key as a number each instance assigns
    /// on its own (an app that numbers rows MAX(id)+1). Repeatable.
    #[arg(long = "local-key", value_name = "TABLE")]
    local_key: Vec<String>,
}

pub fn cmd_track(ui: &mut Ui, args: &TrackArgs) -> Result<Outcome> {
    let mut instance = args.db.open()?;
    let selection = if args.all {
        Selection::All
    } else {
        Selection::Named(args.tables.clone())
    };
    let opts = TrackOptions {
        except: args.except.clone(),
        identity: args.identity.clone(),
        local_key: args.local_key.clone(),
    };
    let report = instance.track_with(&selection, &opts)?;
    for w in &report.warnings {
        ui.warn(w)?;
    }
    ui.report(&report, |out| print_track(out, &report))?;
    Ok(Outcome::Success)
}

fn print_track(out: &mut dyn Write, r: &TrackReport) -> std::io::Result<()> {
    for t in &r.tracked {
        match r.identities.iter().find(|i| &i.table == t) {
            Some(i) => writeln!(out, "tracking {t} (rows identified {})", i.by)?,
            None => writeln!(out, "tracking {t}")?,
        }
    }
    for t in &r.excepted {
        writeln!(out, "left out (--except): {t}")?;
    }
    for t in &r.already {
        writeln!(out, "already tracked: {t}")?;
    }
    for c in &r.new_columns {
        writeln!(out, "now following new column {c}")?;
    }
    for t in &r.renamed {
        writeln!(
            out,
            "renamed the capture triggers of {t} (an older fieldsync named them after the table and its columns)"
        )?;
    }
    for (t, why) in &r.skipped {
        writeln!(out, "skipped {t}: {why}")?;
    }
    if !r.tracked.is_empty() {
        writeln!(
            out,
            "{} recorded; {} will be in the next export.",
            count(r.existing_rows, "existing row", "existing rows"),
            if r.existing_rows == 1 { "it" } else { "they" }
        )?;
    }
    Ok(())
}
