//! `fieldsync status`: this instance, its tables, what it has from whom
//! and what each peer is owed.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use clap::Args;
use fieldsync::Status;

use super::{DbArg, count, shell_quote, when};
use crate::exit::Outcome;
use crate::ui::Ui;

/// Show this instance, its tables, and what each peer has and lacks.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync status --db hq.db\n  FIELDSYNC_DB=hq.db fieldsync status --json"
)]
pub struct StatusArgs {
    #[command(flatten)]
    db: DbArg,
}

pub fn cmd_status(ui: &mut Ui, args: &StatusArgs) -> Result<Outcome> {
    let status = args.db.open()?.status()?;
    ui.report(&status, |out| print_status(out, &status, args.db.path()))?;
    // On stderr, with or without --json: they need a person.
    for w in &status.clock.warnings {
        ui.warn(w)?;
    }
    Ok(Outcome::Success)
}

fn print_status(out: &mut dyn Write, s: &Status, db: &Path) -> std::io::Result<()> {
    writeln!(out, "instance   {} ({})", s.name, db.display())?;
    writeln!(out, "site id    {}", s.site_id)?;
    writeln!(
        out,
        "changes    {} made here; {} recorded and not yet in the log; log holds {}",
        s.local_seq,
        s.captured_unstamped,
        count(s.log_entries, "entry", "entries")
    )?;
    writeln!(
        out,
        "clock      {} (this computer: {}); changes stamped more than {} ahead of this computer's clock are held{}",
        s.clock.local,
        fieldsync::bundle::Hlc::from_unix_ms(s.clock.wall_ms),
        fieldsync::span(s.clock.max_clock_ahead_ms),
        if s.clock.held_from_the_future > 0 {
            format!(" ({} held now)", s.clock.held_from_the_future)
        } else {
            String::new()
        }
    )?;
    if let Some(i) = &s.interrupted_import {
        writeln!(
            out,
            "import     INTERRUPTED: an import from '{}' stopped after {} (what it applied is kept); import that bundle again to finish: fieldsync import --db {} FILE",
            i.from,
            count(i.applied, "change", "changes"),
            shell_quote(db)
        )?;
    }
    if s.tables.is_empty() {
        writeln!(
            out,
            "tables     none tracked (run `fieldsync track --db {} --all`)",
            shell_quote(db)
        )?;
    } else {
        writeln!(out, "tables")?;
        for t in &s.tables {
            let differ = if t.peers_differ.is_empty() {
                String::new()
            } else {
                let peers: Vec<String> = (t.peers_differ.iter())
                    .map(|(p, v)| format!("{p} {v}"))
                    .collect();
                format!("   OTHER SCHEMA at {}", peers.join(", "))
            };
            writeln!(
                out,
                "  {:<24} {:>8} {:<4} {:>8} deleted   schema {}   fingerprint {}{differ}",
                t.name,
                t.rows,
                if t.rows == 1 { "row" } else { "rows" },
                t.tombstones,
                t.version.as_deref().unwrap_or("-"),
                (s.fingerprints.iter())
                    .flat_map(|f| &f.tables)
                    .find(|f| f.table == t.name)
                    .map_or("-", |f| f.fingerprint.as_str())
            )?;
        }
    }
    for w in &s.waiting {
        let what = w.waits_for();
        writeln!(
            out,
            "waiting    {} of values for {what}, not here yet: applied once it is (`fieldsync schema --db {}`)",
            count(w.rows, "row", "rows"),
            shell_quote(db)
        )?;
    }
    if s.schema_held > 0 {
        writeln!(
            out,
            "schema     {} not run here: `fieldsync schema --db {}` lists them, \
             `--apply` runs them",
            count(
                s.schema_held,
                "received schema change",
                "received schema changes"
            ),
            shell_quote(db)
        )?;
    }
    if let Some(f) = s.fingerprints.as_ref().filter(|_| !s.tables.is_empty()) {
        writeln!(
            out,
            "fingerprint {} (per table: `fieldsync fingerprint --db {}`; equal on another instance means the same rows)",
            f.fingerprint,
            shell_quote(db)
        )?;
    }
    writeln!(out, "origins (change numbers held)")?;
    for o in &s.origins {
        let mut gaps = if o.gaps.is_empty() {
            String::new()
        } else {
            format!("   MISSING {}", o.gaps)
        };
        if !o.quarantined.is_empty() {
            gaps.push_str(&format!("   QUARANTINED {}", o.quarantined));
        }
        writeln!(
            out,
            "  {:<24} {}{gaps}",
            o.name,
            if o.have.is_empty() { "-" } else { &o.have }
        )?;
    }
    if s.quarantined + s.overwritten > 0 {
        writeln!(
            out,
            "conflicts  {} held in quarantine, {} overwritten by concurrent edits \
             (`fieldsync conflicts --db {}`)",
            count(s.quarantined, "change", "changes"),
            count(s.overwritten, "value", "values"),
            shell_quote(db)
        )?;
    }
    print_peers(out, s)
}

fn print_peers(out: &mut dyn Write, s: &Status) -> std::io::Result<()> {
    if s.peers.is_empty() {
        return writeln!(out, "peers      none yet");
    }
    writeln!(out, "peers")?;
    for p in &s.peers {
        writeln!(
            out,
            "  {:<24} {} waiting to be sent, {} sent but not acknowledged; last import {}, last export {}",
            p.name,
            p.pending_changes,
            p.unacknowledged,
            when(p.last_import),
            when(p.last_export)
        )?;
    }
    Ok(())
}
