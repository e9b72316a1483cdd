//! The `fieldsync` command: parses arguments, calls the library, prints.
//! No engine logic lives here. [`commands`] holds the argument tree and one
//! file per subcommand; [`ui`] prints a report as text or, with the global
//! `--json`, as one JSON object from a `Serialize` type; [`exit`] turns how
//! a run ended into its exit status (0, 1 for an error printed as one line
//! on stderr, 2 for a mistyped command line, 3 for an import that held
//! changes in quarantine); [`progress`] draws the bar;
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
        Err(usage) => Ending::Usage(empty_db_variable(usage)),
        Ok(cli) => Ending::Ran(commands::run(
            &cli,
            &mut Ui::new(cli.json, cli.quiet, out, err),
        )),
    };
    exit::status(ending, err)
}

/// A `--db` error while `FIELDSYNC_DB` is set but empty (clap takes the
/// empty value as given): one hint that names the variable.
fn empty_db_variable(usage: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ErrorKind};
    let empty = std::env::var_os("FIELDSYNC_DB").is_some_and(|v| v.is_empty());
    let about_db = usage
        .get(ContextKind::InvalidArg)
        .is_some_and(|a| a.to_string().starts_with("--db"));
    if empty && about_db {
        clap::Error::raw(
            ErrorKind::InvalidValue,
            "FIELDSYNC_DB is set but empty: set it to the app's database \
             (export FIELDSYNC_DB=hq.db), unset it, or pass --db PATH\n",
        )
    } else {
        usage
    }
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
