//! `fieldsync completions SHELL` and `fieldsync man`: what a packager or an
//! operator installs beside the binary, generated from the argument tree
//! itself (clap_complete, clap_mangen), so they never drift from it.

use anyhow::Result;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;
use crate::exit::Outcome;
use crate::ui::Ui;

/// Print a shell's completion script for fieldsync.
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    fieldsync completions bash > /etc/bash_completion.d/fieldsync\n  \
    fieldsync completions zsh > ~/.zfunc/_fieldsync\n  \
    fieldsync completions powershell >> $PROFILE")]
pub struct CompletionsArgs {
    /// The shell: bash, elvish, fish, powershell or zsh.
    #[arg(value_name = "SHELL")]
    shell: Shell,
}

/// Print fieldsync's man page (roff), to install as fieldsync.1.
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    fieldsync man > fieldsync.1\n  \
    fieldsync man | man -l -")]
pub struct ManArgs {}

pub fn cmd_completions(ui: &mut Ui, args: &CompletionsArgs) -> Result<Outcome> {
    let mut command = Cli::command();
    // Generated in memory: clap_complete panics on a write error (a closed
    // pipe, `| head`); written here, that is the one error line.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "fieldsync", &mut script);
    ui.product().write_all(&script)?;
    Ok(Outcome::Success)
}

pub fn cmd_man(ui: &mut Ui, _args: &ManArgs) -> Result<Outcome> {
    clap_mangen::Man::new(Cli::command()).render(ui.product())?;
    Ok(Outcome::Success)
}
