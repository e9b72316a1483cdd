//! `fieldsync conflicts`: the changes held in quarantine, those discarded,
//! and the values overwritten by concurrent edits; `--retry` retries the
//! quarantine first, `--discard ID` / `--discard-from SENDER` drop held
//! changes (after asking on a terminal; `--yes` for scripts), `--apply ID`
//! applies one held "from the future" now; the journal of refused bundles
//! is listed last.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::Result;
use clap::Args;
use fieldsync::{Conflicts, Discard, DiscardedChange, HeldChange, RetryReport};
use serde::Serialize;

use super::{DbArg, count, shell_quote, when};
use crate::exit::Outcome;
use crate::ui::{Sorted, Ui};

/// List changes waiting in quarantine and values overwritten by concurrent edits.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync conflicts --db hq.db\n  fieldsync conflicts --db hq.db --retry\n  fieldsync conflicts --db hq.db --discard-from field-3"
)]
pub struct ConflictsArgs {
    #[command(flatten)]
    db: DbArg,
    /// Try every quarantined change again now (an import retries those
    /// something they wait for changed).
    #[arg(long)]
    retry: bool,
    /// Discard the held change with this number (as listed): it is never
    /// applied, its values are kept in the list of discarded changes.
    #[arg(long, value_name = "ID", conflicts_with_all = ["discard_from", "retry"])]
    discard: Option<i64>,
    /// Discard every change held from this sender.
    #[arg(long, value_name = "SENDER", conflicts_with = "retry")]
    discard_from: Option<String>,
    /// Apply the held change with this number now, whatever its clock
    /// says: for a change held "from the future" that an administrator
    /// knows is right. This instance's clock moves past it.
    #[arg(long, value_name = "ID", conflicts_with_all = ["discard", "discard_from", "retry"])]
    apply: Option<i64>,
    /// Discard without asking (needed when not run on a terminal).
    #[arg(long)]
    yes: bool,
    /// Show at most this many overwritten values (newest first).
    #[arg(long, default_value_t = 50, value_name = "N")]
    limit: u64,
}

/// What `conflicts` prints with `--json`: the retry (null without
/// `--retry`) beside the lists.
#[derive(Serialize)]
struct ConflictsJson<'a> {
    retry: &'a Option<RetryReport>,
    /// What `--apply ID` did (null without it).
    applied_now: &'a Option<RetryReport>,
    /// The changes discarded by this run (null without `--discard`).
    discarded_now: &'a Option<Vec<DiscardedChange>>,
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
    let applied_now = match args.apply {
        Some(id) => Some(instance.apply_held(id)?),
        None => None,
    };
    let which = match (&args.discard, &args.discard_from) {
        (Some(id), _) => Some(Discard::Entry(*id)),
        (None, Some(sender)) => Some(Discard::From(sender.clone())),
        (None, None) => None,
    };
    let discarded_now = match which {
        Some(which) => match confirmed(&instance.conflicts(0)?, &which, args.yes)? {
            true => Some(instance.discard_held(&which)?),
            false => {
                ui.note("nothing discarded")?;
                return Ok(Outcome::Success);
            }
        },
        None => None,
    };
    let conflicts = instance.conflicts(args.limit)?;
    let json = ConflictsJson {
        retry: &retry,
        applied_now: &applied_now,
        discarded_now: &discarded_now,
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
        if let (Some(r), Some(id)) = (&applied_now, args.apply) {
            if r.released > 0 {
                writeln!(out, "applied held change #{id}.")?;
            } else {
                writeln!(
                    out,
                    "held change #{id} was tried and is still held (see its reason below)."
                )?;
            }
        }
        if let Some(d) = &discarded_now {
            writeln!(
                out,
                "discarded {}: they count as received and will not be applied.",
                count(d.len() as u64, "held change", "held changes")
            )?;
        }
        print_quarantine(out, &conflicts, args.db.path())?;
        print_discarded(out, &conflicts)?;
        print_overwritten(out, &conflicts)?;
        print_refused(out, &conflicts)
    })?;
    Ok(Outcome::Success)
}

/// True if the held changes `which` names may be discarded: `--yes`, or
/// the operator said so on the terminal. Without a terminal and without
/// `--yes`, an error. With nothing held that matches, true: the library
/// then says so.
fn confirmed(c: &Conflicts, which: &Discard, yes: bool) -> Result<bool> {
    let matches = |q: &&HeldChange| match which {
        Discard::Entry(id) => q.id == *id,
        Discard::From(sender) => &q.sender == sender,
    };
    let targets: Vec<&HeldChange> = c.quarantined.iter().filter(matches).collect();
    if yes || targets.is_empty() {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "not discarding {} without confirmation: add --yes to discard them from a script",
            count(targets.len() as u64, "held change", "held changes")
        );
    }
    let mut err = std::io::stderr();
    for q in &targets {
        writeln!(
            err,
            "  #{:<5} {} row {} from '{}': {} — {}",
            q.id, q.table, q.key, q.sender, q.reason, q.detail
        )?;
    }
    write!(
        err,
        "Discard {}? They will never be applied here. [y/N] ",
        if targets.len() == 1 {
            "this held change".to_owned()
        } else {
            format!("these {} held changes", targets.len())
        }
    )?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// The journal of refused bundles.
fn print_refused(out: &mut dyn Write, c: &Conflicts) -> std::io::Result<()> {
    if c.refused.is_empty() {
        return writeln!(out, "refused bundles: none");
    }
    writeln!(
        out,
        "refused bundles: {} recorded{}",
        c.refused_total,
        if c.refused_total > c.refused.len() as u64 {
            format!(", newest {} shown", c.refused.len())
        } else {
            String::new()
        }
    )?;
    for r in &c.refused {
        let unknown = || "?".to_owned();
        writeln!(
            out,
            "  #{:<5} {} {} ({} bytes, blake3 {}), signer {}, says it is from {}: {} — {}",
            r.id,
            when(Some(r.at_ms)),
            r.file.clone().unwrap_or_else(unknown),
            r.size.map_or_else(unknown, |n| n.to_string()),
            r.blake3
                .as_deref()
                .map_or_else(unknown, |h| h.chars().take(16).collect()),
            r.signer_fingerprint.clone().unwrap_or_else(unknown),
            r.claimed_sender
                .as_deref()
                .map_or_else(|| "? (not read)".to_owned(), |s| format!("'{s}'")),
            r.reason,
            r.message
        )?;
    }
    Ok(())
}

fn print_discarded(out: &mut dyn Write, c: &Conflicts) -> std::io::Result<()> {
    if c.discarded.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "discarded: {} dropped by the operator",
        count(c.discarded.len() as u64, "held change", "held changes")
    )?;
    for d in &c.discarded {
        writeln!(
            out,
            "  #{:<5} {} row {} from '{}' ({}), discarded {}: {} [{}]",
            d.entry,
            d.table,
            d.key,
            d.sender,
            d.reason,
            when(Some(d.discarded_ms)),
            d.values,
            d.changes
        )?;
    }
    Ok(())
}

fn print_quarantine(out: &mut dyn Write, c: &Conflicts, db: &Path) -> std::io::Result<()> {
    print_schema(out, c, db)?;
    if c.quarantined.is_empty() {
        return writeln!(out, "quarantine: empty");
    }
    writeln!(
        out,
        "quarantine: {} received but not applied (retried when something they wait for changes; `fieldsync conflicts --db {} --retry` retries now)",
        count(c.quarantined.len() as u64, "change", "changes"),
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

/// Schema changes held or failed, and the values waiting for them.
fn print_schema(out: &mut dyn Write, c: &Conflicts, db: &Path) -> std::io::Result<()> {
    if c.schema.is_empty() && c.waiting.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "schema changes received and not run here ({} held or failed; `fieldsync schema --db {}` shows them, `--apply` runs them)",
        c.schema.len(),
        shell_quote(db)
    )?;
    for h in &c.schema {
        writeln!(
            out,
            "  #{:<5} {} from '{}': {} — {}",
            h.id, h.table, h.sender, h.status, h.why
        )?;
    }
    for w in &c.waiting {
        let what = w.waits_for();
        writeln!(
            out,
            "  {} of values {} for {what}",
            count(w.rows, "row", "rows"),
            if w.rows == 1 { "waits" } else { "wait" }
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
