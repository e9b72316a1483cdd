//! `fieldsync schema`: schema versions here and at each peer, the schema
//! changes received in bundles and not run, the values waiting for them;
//! `--apply` runs the held ones, `--auto` sets whether they run as they come.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use clap::{Args, ValueEnum};
use fieldsync::{SchemaMode, SchemaReport};

use super::{DbArg, count, shell_quote, when};
use crate::exit::Outcome;
use crate::ui::Ui;

/// Show schema versions and the schema changes received from other
/// instances; run the held ones.
///
/// When the app is upgraded at one instance (a new table, column or index),
/// its bundles carry the change. An instance set up with `init --from` runs
/// it as it arrives; any other holds it until `--apply`.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync schema --db field-1.db\n  fieldsync schema --db field-1.db --apply\n  fieldsync schema --db hq.db --auto on"
)]
pub struct SchemaArgs {
    #[command(flatten)]
    db: DbArg,
    /// Run the schema changes received and held (or that failed), then
    /// apply the values that waited for them.
    #[arg(long)]
    apply: bool,
    /// Run schema changes as bundles bring them (`on`) or hold them for
    /// `--apply` (`off`).
    #[arg(long, value_name = "on|off")]
    auto: Option<Switch>,
}

/// On or off.
#[derive(Clone, Copy, ValueEnum)]
enum Switch {
    On,
    Off,
}

pub fn cmd_schema(ui: &mut Ui, args: &SchemaArgs) -> Result<Outcome> {
    let mut instance = args.db.open()?;
    if let Some(auto) = args.auto {
        instance.set_schema_mode(match auto {
            Switch::On => SchemaMode::Apply,
            Switch::Off => SchemaMode::Hold,
        })?;
    }
    let report = if args.apply {
        instance.apply_schema()?
    } else {
        instance.schema()?
    };
    ui.report(&report, |out| print_schema(out, &report, args.db.path()))?;
    Ok(Outcome::Success)
}

fn print_schema(out: &mut dyn Write, r: &SchemaReport, db: &Path) -> std::io::Result<()> {
    for line in &r.applied {
        writeln!(out, "{line}")?;
    }
    writeln!(
        out,
        "schema changes from other instances: {}",
        match r.mode {
            SchemaMode::Apply => "run as they arrive (`--auto off` holds them)",
            SchemaMode::Hold => "held until `--apply` (`--auto on` runs them as they arrive)",
        }
    )?;
    writeln!(
        out,
        "tables (schema version here; at each peer where it differs)"
    )?;
    for t in &r.tables {
        let here = t.version.as_deref().unwrap_or("-");
        let differ: Vec<String> = (t.peers.iter())
            .filter(|p| Some(&p.version) != t.version.as_ref())
            .map(|p| {
                let how = if p.reported {
                    ""
                } else {
                    " (sent, not confirmed)"
                };
                format!("{} {}{how}", p.peer, p.version)
            })
            .collect();
        if differ.is_empty() {
            writeln!(out, "  {:<24} {here}", t.table)?;
        } else {
            writeln!(out, "  {:<24} {here}   {}", t.table, differ.join(", "))?;
        }
    }
    if r.held.is_empty() {
        writeln!(out, "nothing received is waiting to run.")?;
    } else {
        writeln!(out, "received, not run")?;
        for h in &r.held {
            writeln!(
                out,
                "  #{} {:<20} {} from '{}' ({}): {}",
                h.id,
                h.table,
                h.status.to_uppercase(),
                h.sender,
                when(Some(h.at)),
                h.why
            )?;
            for sql in &h.statements {
                writeln!(out, "      {sql}")?;
            }
        }
        if r.held
            .iter()
            .any(|h| h.status == "held" || h.status == "failed")
        {
            writeln!(
                out,
                "run them with `fieldsync schema --db {} --apply`",
                shell_quote(db)
            )?;
        }
    }
    for w in &r.waiting {
        let what = w.waits_for();
        writeln!(
            out,
            "waiting: {} of values for {what}, not here yet",
            count(w.rows, "row", "rows")
        )?;
    }
    Ok(())
}
