//! `fieldsync revoke`: an instance no longer belongs (a stolen laptop).
//! Its later bundles are refused here and, when this instance is HQ (its
//! own anchor), wherever its signed revocation reaches; what it sent
//! before stays, listed by `fieldsync trust --list` (spec/trust.md).

use anyhow::Result;
use clap::Args;

use super::{DbArg, shell_quote};
use crate::exit::Outcome;
use crate::ui::Ui;

/// Revoke an instance (a stolen or lost laptop): its later bundles are
/// refused.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync revoke --db hq.db field-3       (HQ's next bundles carry it)"
)]
pub struct RevokeArgs {
    #[command(flatten)]
    db: DbArg,
    /// The instance's name, as `fieldsync trust --list` shows it.
    name: String,
}

pub fn cmd_revoke(ui: &mut Ui, args: &RevokeArgs) -> Result<Outcome> {
    let revoked = args.db.open()?.revoke(&args.name)?;
    let path = args.db.path();
    ui.report(&revoked, |out| {
        if !revoked.changed {
            return writeln!(
                out,
                "'{}' was already revoked; nothing changed.",
                revoked.name
            );
        }
        writeln!(
            out,
            "Revoked '{}': its bundles are refused from now on. Its changes 1..{} received before stay (`fieldsync trust --db {} --list`); any later one is refused.",
            revoked.name,
            revoked.keep_through,
            shell_quote(path)
        )?;
        if revoked.relayed {
            writeln!(
                out,
                "The revocation travels, signed by this instance, in its next bundles to every other instance: export to them soon."
            )?;
        }
        Ok(())
    })?;
    Ok(Outcome::Success)
}
