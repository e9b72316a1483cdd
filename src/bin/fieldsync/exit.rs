//! How a run ends: the one place that turns the outcome of a command, its
//! error, or a mistyped command line into the exit status and the one
//! `fieldsync: error: …` line on stderr.
//!
//! | status | when |
//! |---|---|
//! | 0 | the command did its work; `--help`, `--version` |
//! | 1 | an error (one line on stderr), or a command whose output already says what failed: `inspect` of a damaged bundle, `check` finding a problem, `import --dry-run` finding a file the import would refuse (nothing more is printed) |
//! | 2 | a mistyped command line (clap's message and its "did you mean" tip, on one line) |
//! | 3 | `import` or `sync` applied what it could, but some of the changes it received are held in quarantine (`fieldsync conflicts`); `import --dry-run`: some would be |
//!
//! The same table is in the top-level `--help` ([`EXIT_CODES`]) and the
//! README.

use std::io::Write;

use clap::error::ErrorKind;

/// How a command that ran to its end came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did its work.
    Success,
    /// Its output already says what is wrong (`inspect` of a damaged
    /// bundle): exit 1 and print nothing more.
    Failed,
    /// It applied what it could, but some changes it received are held in
    /// quarantine: exit 3.
    Quarantined,
}

/// The exit statuses, as `fieldsync --help` shows them.
pub const EXIT_CODES: &str = "\
Exit status:
  0  done
  1  a problem: an error (one line on stderr), `check` found a problem,
     `inspect` found a damaged bundle, `import --dry-run` found a file the
     import would refuse
  2  a mistyped command line
  3  `import` or `sync` applied what it could, but some changes it received
     are held in quarantine (see `fieldsync conflicts`); `import --dry-run`:
     some would be";

/// How a run ended, before it is turned into an exit status.
pub enum Ending {
    /// The command line could not be parsed, or asked for help or the
    /// version.
    Usage(clap::Error),
    /// The command ran: its outcome, or the error that stopped it. An error
    /// that is a [`clap::Error`] (a command refusing an argument clap
    /// accepted) ends as a usage error.
    Ran(anyhow::Result<Outcome>),
}

/// The exit status of a run, after printing its error line (if any) to
/// `err`. Help and version text go to stdout as clap prints them.
pub fn status(ending: Ending, err: &mut dyn Write) -> u8 {
    let usage = match ending {
        Ending::Usage(e) => e,
        Ending::Ran(Ok(Outcome::Success)) => return 0,
        Ending::Ran(Ok(Outcome::Failed)) => return 1,
        Ending::Ran(Ok(Outcome::Quarantined)) => return 3,
        Ending::Ran(Err(e)) => match e.downcast::<clap::Error>() {
            Ok(usage) => usage,
            Err(e) => {
                let _ = writeln!(err, "fieldsync: error: {}", one_line(&format!("{e:#}")));
                return 1;
            }
        },
    };
    if matches!(
        usage.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = usage.print();
        return 0;
    }
    let _ = writeln!(
        err,
        "fieldsync: error: {} (see `fieldsync --help`)",
        usage_message(&usage)
    );
    2
}

/// Clap's error on one line: its message and its tips ("a similar
/// subcommand exists: 'status'"), without the usage and the `error: `
/// prefix.
fn usage_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut message = Vec::new();
    let mut tips = Vec::new();
    for line in text
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        match line.strip_prefix("tip:") {
            Some(tip) => tips.push(tip.trim()),
            None => message.push(line),
        }
    }
    let message = message.join(" ");
    let mut message = match message.strip_prefix("error: ") {
        Some(rest) => rest.to_owned(),
        None => message,
    };
    for tip in tips {
        message.push_str("; ");
        message.push_str(tip);
    }
    message
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
