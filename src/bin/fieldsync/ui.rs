//! Where a command's output goes, and the one way a report is printed: on
//! stdout, as text, or with the global `--json` as one JSON object
//! serialised from a `Serialize` type (the library's report, or a small
//! wrapper of the command's). Notes and warnings go to stderr in both modes.
//! With the global `-q/--quiet` no text report, narration or note is
//! printed (warnings and errors still are, and `--json` output).
//! Exit statuses and error lines are not printed here ([`crate::exit`]).

use std::fmt::Display;
use std::io::{self, Write};

use anyhow::Result;
use serde::{Serialize, Serializer};

/// The two output streams of a run, and whether `--json` or `--quiet` was
/// given.
pub struct Ui<'a> {
    json: bool,
    quiet: bool,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    sink: io::Sink,
    /// The report goes to stderr: stdout carries a bundle (`export -o -`).
    report_on_err: bool,
}

impl<'a> Ui<'a> {
    /// Output to `out` (the report) and `err` (notes, warnings).
    pub fn new(json: bool, quiet: bool, out: &'a mut dyn Write, err: &'a mut dyn Write) -> Self {
        Ui {
            json,
            quiet,
            out,
            err,
            sink: io::sink(),
            report_on_err: false,
        }
    }

    /// From now on the report (text or JSON) goes to stderr, because
    /// stdout carries what the command produces (`export -o -`).
    pub fn report_on_stderr(&mut self) {
        self.report_on_err = true;
    }

    /// Where the report goes.
    fn report_stream(&mut self) -> &mut dyn Write {
        if self.report_on_err {
            &mut *self.err
        } else {
            &mut *self.out
        }
    }

    /// True if the report is to be printed as JSON.
    pub fn json(&self) -> bool {
        self.json
    }

    /// True if a progress bar may be drawn (on a terminal): not with
    /// `--json` or `--quiet`.
    pub fn bars(&self) -> bool {
        !self.json && !self.quiet
    }

    /// Print a command's report: with `--json`, `value` as one JSON object
    /// on one line, in the envelope that puts `"version"` first
    /// ([`fieldsync::json::Versioned`], spec/json.md); otherwise what `text`
    /// writes.
    pub fn report(
        &mut self,
        value: &impl Serialize,
        text: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<()> {
        if self.json {
            let stream = self.report_stream();
            serde_json::to_writer(&mut *stream, &fieldsync::json::Versioned::new(value))?;
            writeln!(stream)?;
        }
        Ok(self.text(text)?)
    }

    /// Text output only, nothing with `--json`: for a command whose text
    /// comes in parts, between warnings (its JSON still goes through
    /// [`Ui::report`]).
    pub fn text(&mut self, text: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
        if self.json || self.quiet {
            Ok(())
        } else {
            text(self.report_stream())
        }
    }

    /// Stdout, for a command that narrates as it goes instead of printing a
    /// report (`demo`, which takes no `--json`); nowhere with `--quiet`.
    pub fn narration(&mut self) -> &mut dyn Write {
        if self.quiet {
            &mut self.sink
        } else {
            &mut *self.out
        }
    }

    /// Stdout for what a command produces rather than reports (a shell's
    /// completions, the man page): printed whatever `--quiet` says.
    pub fn product(&mut self) -> &mut dyn Write {
        &mut *self.out
    }

    /// Flush stdout (a server prints its address before it runs).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// A warning on stderr, with or without `--json`.
    pub fn warn(&mut self, what: impl Display) -> io::Result<()> {
        writeln!(self.err, "warning: {what}")
    }

    /// A note on stderr, with or without `--json`; none with `--quiet`.
    pub fn note(&mut self, what: impl Display) -> io::Result<()> {
        if self.quiet {
            return Ok(());
        }
        writeln!(self.err, "note: {what}")
    }
}

/// A value serialised with the keys of every object in alphabetical order
/// (after the envelope's `version`): the commands whose report the CLI
/// assembles from several library values (inspect, conflicts, trust) print
/// their keys in that stable order, the library's reports inside included.
pub struct Sorted<T>(pub T);

impl<T: Serialize> Serialize for Sorted<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_json::to_value(&self.0).map_err(serde::ser::Error::custom)?;
        value.sort_all_objects();
        value.serialize(s)
    }
}
