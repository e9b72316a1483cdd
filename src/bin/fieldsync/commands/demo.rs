//! `fieldsync demo`: play the seed scenario ([`crate::demo`]) in a
//! directory, narrating on stdout. It prints no report, so it takes no
//! `--json`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, error::ErrorKind};

use super::Cli;
use crate::exit::Outcome;
use crate::ui::Ui;

/// Play the seed scenario: an HQ and two field laptops exchange bundles.
#[derive(Args)]
#[command(after_help = "Examples:\n  fieldsync demo\n  fieldsync demo --dir /tmp/fieldsync-demo")]
pub struct DemoArgs {
    /// Where to leave the three databases and the bundles (default: a new
    /// temporary directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The global `--json`, hidden here: the demo has no report to print
    /// as JSON, and its help never listed it.
    #[arg(long, hide = true)]
    json: bool,
}

pub fn cmd_demo(ui: &mut Ui, args: &DemoArgs) -> Result<Outcome> {
    if args.json || ui.json() {
        // `--json` is global, but the demo has no report to print as JSON:
        // refused as the mistyped command line it was before it was global.
        let usage = Cli::command().error(
            ErrorKind::UnknownArgument,
            "unexpected argument '--json' found",
        );
        return Err(usage.into());
    }
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => crate::demo::new_dir()?,
    };
    crate::demo::run(&dir, ui.narration())
        .with_context(|| format!("the demo stopped (its files are in {})", dir.display()))?;
    Ok(Outcome::Success)
}
