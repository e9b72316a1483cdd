//! `fieldsync trust`: who this instance takes bundles from
//! (spec/trust.md). Enrol an instance by name and key (`trust NAME KEY
//! [RECIPIENT]`, or `--stdin` with `fieldsync key --json` of it), list the
//! trusted instances (`--list`), name the anchor of a database set up
//! before enrolment (`--anchor NAME`), and the migration period in which
//! unsigned bundles from an older fieldsync are still imported
//! (`--allow-unsigned-for DAYS`), and the clock bound (`--max-clock-ahead`):
//! how far ahead of this computer's clock a received change may be stamped
//! and still be applied. Revoking is `fieldsync revoke`.

use std::io::{Read as _, Write};

use anyhow::{Context, Result};
use clap::Args;
use fieldsync::{Enrolled, Role, TrustList};
use serde::Deserialize;

use super::{DbArg, shell_quote, when};
use crate::exit::Outcome;
use crate::ui::{Sorted, Ui};

/// Enrol an instance, list the instances this one takes bundles from, or
/// set how it treats unsigned bundles and clocks far ahead.
///
/// At HQ, enrol each field instance once: the officer runs `fieldsync key`
/// on the laptop and reads its public key and fingerprint to HQ (or HQ,
/// setting the laptop up itself, pipes `fieldsync key --db LAPTOP --json`
/// into `fieldsync trust --db HQ --stdin`). HQ's enrolments then travel,
/// signed, in its bundles to every laptop set up from it.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync trust --db hq.db field-1 KEY RECIPIENT\n  fieldsync key --db field-1.db --json | fieldsync trust --db hq.db --stdin\n  fieldsync trust --db hq.db --list"
)]
pub struct TrustArgs {
    #[command(flatten)]
    db: DbArg,
    /// The name of the instance to enrol, as `fieldsync key` on it shows.
    #[arg(value_name = "NAME", requires = "public_key")]
    name: Option<String>,
    /// Its public key (the 'public key' line of `fieldsync key` on it).
    #[arg(value_name = "PUBLIC_KEY")]
    public_key: Option<String>,
    /// Its recipient (the 'recipient' line), so bundles to it can be
    /// encrypted; learnt from its first bundle if not given.
    #[arg(value_name = "RECIPIENT")]
    recipient: Option<String>,
    /// Enrol the instance whose `fieldsync key --json` comes on standard
    /// input.
    #[arg(long, conflicts_with_all = ["name", "list", "anchor"])]
    stdin: bool,
    /// List the instances this one takes bundles from (and those revoked).
    #[arg(long, conflicts_with_all = ["name", "anchor"])]
    list: bool,
    /// For a database set up before enrolment: the instance whose
    /// enrolments to believe (its HQ, pinned here), or this instance's own
    /// name if it is HQ.
    #[arg(long, value_name = "NAME", conflicts_with = "name")]
    anchor: Option<String>,
    /// Import unsigned bundles for this many days from now (1 to 90; 30 is
    /// enough to upgrade a deployment's laptops).
    #[arg(long, value_name = "DAYS")]
    allow_unsigned_for: Option<u32>,
    /// Hold received changes stamped further than this ahead of this
    /// computer's clock "from the future" (default 1h; 1m to 30d, e.g. 90m,
    /// 2h, 1d): they neither move this instance's clock nor win a merge
    /// until the clock gets there or `fieldsync conflicts --apply ID`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_clock_ahead: Option<i64>,
}

/// `90s`, `30m`, `2h`, `1d` (or a bare number of seconds) in milliseconds.
fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 90m, 2h or 1d"))?;
    let unit_ms = match unit.trim() {
        "" | "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?} is not a duration such as 90m, 2h or 1d")),
    };
    n.checked_mul(unit_ms)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// `fieldsync key --json`, as `--stdin` reads it.
#[derive(Deserialize)]
struct KeyJson {
    /// `name` in what a fieldsync before the JSON vocabulary printed.
    #[serde(alias = "name")]
    instance: String,
    public_key: String,
    recipient: Option<String>,
    #[serde(alias = "site_id")]
    site: Option<String>,
}

pub fn cmd_trust(ui: &mut Ui, args: &TrustArgs) -> Result<Outcome> {
    let mut db = args.db.open()?;
    let path = args.db.path();
    if args.stdin {
        let mut text = String::new();
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        let key: KeyJson = serde_json::from_str(&text).context(
            "standard input is not the output of `fieldsync key --json` (it needs instance, public_key and recipient)",
        )?;
        let enrolled = db.enrol(
            &key.instance,
            &key.public_key,
            key.recipient.as_deref(),
            key.site.as_deref(),
        )?;
        return print_enrolled(ui, &enrolled, path);
    }
    if let (Some(name), Some(public_key)) = (&args.name, &args.public_key) {
        let enrolled = db.enrol(name, public_key, args.recipient.as_deref(), None)?;
        return print_enrolled(ui, &enrolled, path);
    }
    if let Some(anchor) = &args.anchor {
        let name = db.set_anchor(anchor)?;
        ui.note(format!(
            "the anchor of this instance is now '{name}': it takes bundles only from the instances '{name}' enrols and those enrolled here"
        ))?;
    }
    if let Some(days) = args.allow_unsigned_for {
        db.allow_unsigned_for(days)?;
    }
    if let Some(ms) = args.max_clock_ahead {
        db.set_max_clock_ahead_ms(ms)?;
    }
    let report = db.trust_settings()?;
    let until = report.unsigned_until;
    ui.report(&Sorted(&report), |out| {
        print_list(out, &report.list, path)?;
        writeln!(
            out,
            "Received changes stamped more than {} ahead of this computer's clock are held \"from the future\" (`--max-clock-ahead` sets the bound).",
            fieldsync::span(report.max_clock_ahead_ms)
        )?;
        if report.accepts_unsigned_now {
            writeln!(
                out,
                "Unsigned bundles (from a fieldsync older than format 4) are imported until {}; upgrade every instance before then.",
                when(until)
            )
        } else {
            writeln!(
                out,
                "Only signed bundles are imported. To import unsigned ones from older instances for a migration period: fieldsync trust --db {} --allow-unsigned-for 30",
                shell_quote(path)
            )
        }
    })?;
    Ok(Outcome::Success)
}

fn print_enrolled(ui: &mut Ui, e: &Enrolled, path: &std::path::Path) -> Result<Outcome> {
    ui.report(e, |out| {
        writeln!(out, "Enrolled '{}': fingerprint {}.", e.name, e.fingerprint)?;
        writeln!(
            out,
            "Read this fingerprint back to its officer: it must be what `fieldsync key` shows there{}. If it is not, run `fieldsync revoke --db {} {}` at once.",
            if e.fingerprint == e.signing_fingerprint {
                " on its 'signing key' line"
            } else {
                ""
            },
            shell_quote(path),
            e.name
        )?;
        if !e.replaced.is_empty() {
            writeln!(
                out,
                "It replaces the key known here for: {}.",
                e.replaced.join(", ")
            )?;
        }
        if e.relayed {
            writeln!(
                out,
                "The enrolment travels, signed by this instance, in its bundles to every instance set up from it."
            )?;
        }
        Ok(())
    })?;
    Ok(Outcome::Success)
}

fn print_list(
    out: &mut dyn Write,
    list: &TrustList,
    path: &std::path::Path,
) -> std::io::Result<()> {
    match list.anchor.as_deref() {
        Some("self") => writeln!(
            out,
            "This instance is its own anchor (HQ): it takes bundles from the instances it enrols."
        )?,
        Some(name) => writeln!(
            out,
            "Anchor: '{name}' (HQ): this instance takes bundles from the instances it enrols, and those enrolled here."
        )?,
        None => writeln!(
            out,
            "No anchor: this instance was set up before enrolment and pins each sender at its first bundle. Name its HQ: fieldsync trust --db {} --anchor NAME",
            shell_quote(path)
        )?,
    }
    if list.instances.is_empty() {
        return writeln!(out, "No other instance is enrolled.");
    }
    for t in &list.instances {
        let role = match (t.revoked_at, t.role) {
            (Some(at), _) => format!(
                "REVOKED {} (keeps its changes 1..{}; holds {} of them)",
                when(Some(at)),
                t.keep_through.unwrap_or(0),
                t.changes
            ),
            (None, Role::Anchor) => "anchor".to_owned(),
            (None, Role::Enrolled) if list.anchor.as_deref() == Some("self") => {
                "enrolled here (travels in this instance's bundles)".to_owned()
            }
            (None, Role::Enrolled) if t.by_anchor => "enrolled by HQ".to_owned(),
            (None, Role::Enrolled) => "enrolled here".to_owned(),
            (None, Role::FirstUse) => "pinned at its first bundle".to_owned(),
        };
        writeln!(
            out,
            "  {:<16} {}  {}  since {}",
            t.name,
            t.fingerprint.as_deref().unwrap_or(&t.signing_fingerprint),
            role,
            when(Some(t.since))
        )?;
    }
    Ok(())
}
