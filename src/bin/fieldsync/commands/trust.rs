//! `fieldsync trust`: who this instance takes bundles from. For now, the
//! migration period in which unsigned bundles (format 1 to 3, from a
//! fieldsync older than signed bundles) are still imported
//! (`--allow-unsigned-for DAYS`), and showing it; signers are pinned on
//! first contact by `import` (spec/trust.md). Also the clock bound
//! (`--max-clock-ahead`): how far ahead of this computer's clock a received
//! change may be stamped and still be applied.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::{DbArg, shell_quote, when};
use crate::exit::Outcome;
use crate::ui::{Sorted, Ui};

/// Show or set which bundles this instance accepts: import unsigned bundles
/// (from an older fieldsync) for a migration period; how far ahead of this
/// computer's clock received changes may be stamped.
#[derive(Args)]
pub struct TrustArgs {
    #[command(flatten)]
    db: DbArg,
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

/// What `trust` prints with `--json`.
#[derive(Serialize)]
struct TrustReport {
    /// Until when unsigned bundles are imported (unix ms), if ever.
    accept_unsigned_until: Option<i64>,
    /// Whether that is now.
    accepts_unsigned_now: bool,
    /// The clock bound in milliseconds (spec/trust.md, "The clock bound").
    max_clock_ahead_ms: i64,
}

pub fn cmd_trust(ui: &mut Ui, args: &TrustArgs) -> Result<Outcome> {
    let mut db = args.db.open()?;
    if let Some(days) = args.allow_unsigned_for {
        db.allow_unsigned_for(days)?;
    }
    if let Some(ms) = args.max_clock_ahead {
        db.set_max_clock_ahead_ms(ms)?;
    }
    let until = db.unsigned_allowed_until()?;
    let report = TrustReport {
        accept_unsigned_until: until,
        accepts_unsigned_now: until.is_some_and(|t| t > chrono::Utc::now().timestamp_millis()),
        max_clock_ahead_ms: db.max_clock_ahead_ms()?,
    };
    let path = args.db.path();
    ui.report(&Sorted(&report), |out| {
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
