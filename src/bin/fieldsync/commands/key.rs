//! `fieldsync key`: this instance's public keys and the fingerprint a
//! person reads over the phone to check them (spec/trust.md). The private
//! keys are never printed.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use fieldsync::KeyReport;

use super::DbArg;
use crate::exit::Outcome;
use crate::ui::Ui;

/// Show this instance's public keys and their fingerprint, to read to HQ.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync key --db field-1.db\n  fieldsync key --db field-1.db --json | fieldsync trust --db hq.db --stdin"
)]
pub struct KeyArgs {
    #[command(flatten)]
    db: DbArg,
}

pub fn cmd_key(ui: &mut Ui, args: &KeyArgs) -> Result<Outcome> {
    let report = args.db.open()?.key()?;
    ui.report(&report, |out| print_key(out, &report))?;
    Ok(Outcome::Success)
}

fn print_key(out: &mut dyn Write, k: &KeyReport) -> std::io::Result<()> {
    writeln!(out, "instance     {}", k.name)?;
    writeln!(out, "site id      {}", k.site_id)?;
    writeln!(out, "public key   {}", k.public_key)?;
    writeln!(out, "recipient    {}", k.recipient)?;
    writeln!(out, "fingerprint  {}", k.fingerprint)?;
    writeln!(
        out,
        "signing key  {} (fingerprint of the public key alone, as `inspect` shows a bundle's signer)",
        k.signing_fingerprint
    )?;
    writeln!(
        out,
        "Read the fingerprint to whoever enrols this instance; it must match what they see."
    )
}
