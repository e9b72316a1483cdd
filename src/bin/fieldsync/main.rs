//! The `fieldsync` command: parses arguments, calls the library, prints.
//! No engine logic lives here. [`commands`] holds the argument tree and one
//! file per subcommand; [`ui`] prints a report as text or, with the global
//! `--json`, as one JSON object from a `Serialize` type; [`exit`] turns how
//! a run ended into its exit status (0, 1 for an error printed as one line
//! on stderr, 2 for a mistyped command line); [`progress`] draws the bar;
//! [`demo`] plays the seed scenario on the library's public face.

mod commands;
mod demo;
mod exit;
#[cfg(test)]
mod golden;
mod progress;
mod ui;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::commands::Cli;
use crate::exit::Ending;
use crate::ui::Ui;

fn main() -> ExitCode {
    let status = fieldsync(
        std::env::args_os(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    ExitCode::from(status)
}

/// Parse `args` (the program name first), run the command with its output
/// on `out` and `err`, and return the exit status.
fn fieldsync(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let ending = match Cli::try_parse_from(args) {
        Err(usage) => Ending::Usage(usage),
        Ok(cli) => Ending::Ran(commands::run(&cli, &mut Ui::new(cli.json, out, err))),
    };
    exit::status(ending, err)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_tree_is_well_formed() {
        Cli::command().debug_assert();
    }
}
