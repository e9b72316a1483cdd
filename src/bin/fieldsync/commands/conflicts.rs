//! `fieldsync conflicts`: the changes held in quarantine and the values
//! overwritten by concurrent edits; `--retry` retries the quarantine first.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use clap::Args;
use fieldsync::{Conflicts, RetryReport};
use serde::Serialize;

use super::{DbArg, shell_quote, when};
use crate::exit::Outcome;
use crate::ui::{Sorted, Ui};

/// List changes waiting in quarantine and values overwritten by concurrent edits.
#[derive(Args)]
pub struct ConflictsArgs {
    #[command(flatten)]
    db: DbArg,
    /// Try the quarantined changes again now (every import does too).
    #[arg(long)]
    retry: bool,
    /// Show at most this many overwritten values (newest first).
    #[arg(long, default_value_t = 50, value_name = "N")]
    limit: u64,
}

/// What `conflicts` prints with `--json`: the retry (null without
/// `--retry`) beside the lists.
#[derive(Serialize)]
struct ConflictsJson<'a> {
    retry: &'a Option<RetryReport>,
    #[serde(flatten)]
    conflicts: &'a Conflicts,
}

pub fn cmd_conflicts(ui: &mut Ui, args: &ConflictsArgs) -> Result<Outcome> {
    let mut instance = args.db.open()?;
    let retry = if args.retry {
        Some(instance.retry_quarantine()?)
    } else {
        None
    };
    let conflicts = instance.conflicts(args.limit)?;
    let json = ConflictsJson {
        retry: &retry,
        conflicts: &conflicts,
    };
    ui.report(&Sorted(json), |out| {
        if let Some(r) = &retry {
            writeln!(
                out,
                "retried the quarantine: {} applied, {} still held.",
                r.released, r.held
            )?;
        }
        print_quarantine(out, &conflicts, args.db.path())?;
        print_overwritten(out, &conflicts)
    })?;
    Ok(Outcome::Success)
}

fn print_quarantine(out: &mut dyn Write, c: &Conflicts, db: &Path) -> std::io::Result<()> {
    if c.quarantined.is_empty() {
        return writeln!(out, "quarantine: empty");
    }
    writeln!(
        out,
        "quarantine: {} change(s) received but not applied (retried at every import; `fieldsync conflicts --db {} --retry` retries now)",
        c.quarantined.len(),
        shell_quote(db)
    )?;
    for q in &c.quarantined {
        writeln!(
            out,
            "  #{:<5} {} row {} from '{}': {} — {} (since {}, tried {}×)",
            q.id,
            q.table,
            q.key,
            q.sender,
            q.reason,
            q.detail,
            when(Some(q.first_ms)),
            q.tries
        )?;
    }
    Ok(())
}

fn print_overwritten(out: &mut dyn Write, c: &Conflicts) -> std::io::Result<()> {
    if c.overwritten.is_empty() {
        return writeln!(out, "overwritten values: none");
    }
    writeln!(
        out,
        "overwritten values: {} recorded{}",
        c.overwritten_total,
        if c.overwritten_total > c.overwritten.len() as u64 {
            format!(", newest {} shown", c.overwritten.len())
        } else {
            String::new()
        }
    )?;
    for o in &c.overwritten {
        let column = if o.column.is_empty() {
            "(row)"
        } else {
            o.column.as_str()
        };
        writeln!(
            out,
            "  {} row {} {}: {} by '{}' at {} lost to {} by '{}' at {} ({})",
            o.table,
            o.key,
            column,
            o.lost_value,
            o.lost_site,
            when(Some(o.lost_at_ms)),
            o.won_value,
            o.won_site,
            when(Some(o.won_at_ms)),
            o.reason
        )?;
    }
    Ok(())
}
