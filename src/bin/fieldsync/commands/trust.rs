//! `fieldsync trust`: who this instance takes bundles from. For now, the
//! migration period in which unsigned bundles (format 1 to 3, from a
//! fieldsync older than signed bundles) are still imported
//! (`--allow-unsigned-for DAYS`), and showing it; signers are pinned on
//! first contact by `import` (spec/trust.md).

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::{DbArg, shell_quote, when};
use crate::exit::Outcome;
use crate::ui::{Sorted, Ui};

/// Show or set which bundles this instance accepts: import unsigned bundles
/// (from an older fieldsync) for a migration period.
#[derive(Args)]
pub struct TrustArgs {
    #[command(flatten)]
    db: DbArg,
    /// Import unsigned bundles for this many days from now (1 to 90; 30 is
    /// enough to upgrade a deployment's laptops).
    #[arg(long, value_name = "DAYS")]
    allow_unsigned_for: Option<u32>,
}

/// What `trust` prints with `--json`.
#[derive(Serialize)]
struct TrustReport {
    /// Until when unsigned bundles are imported (unix ms), if ever.
    accept_unsigned_until: Option<i64>,
    /// Whether that is now.
    accepts_unsigned_now: bool,
}

pub fn cmd_trust(ui: &mut Ui, args: &TrustArgs) -> Result<Outcome> {
    let mut db = args.db.open()?;
    if let Some(days) = args.allow_unsigned_for {
        db.allow_unsigned_for(days)?;
    }
    let until = db.unsigned_allowed_until()?;
    let report = TrustReport {
        accept_unsigned_until: until,
        accepts_unsigned_now: until.is_some_and(|t| t > chrono::Utc::now().timestamp_millis()),
    };
    let path = args.db.path();
    ui.report(&Sorted(&report), |out| {
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
