//! The demo's narration and its exchanges: numbered steps and indented
//! details on the output, and every export and import of the story told in
//! one line.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use fieldsync::{ExportTarget, ImportReport, Instance};

use super::DemoError;

/// The narration (numbered steps, indented details) and the directory
/// the story's files go to.
pub(super) struct Story<'a> {
    dir: PathBuf,
    pub(super) out: &'a mut dyn Write,
    step: u32,
}

impl<'a> Story<'a> {
    /// Start the story in `dir`, which must not hold an earlier demo.
    pub(super) fn begin(dir: &Path, out: &'a mut dyn Write) -> Result<Self, DemoError> {
        std::fs::create_dir_all(dir)?;
        for name in ["hq.db", "field-1.db", "field-2.db"] {
            if dir.join(name).exists() {
                return Err(DemoError::Io(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!(
                        "{} already holds a demo ({name}); give another --dir or remove it",
                        dir.display()
                    ),
                )));
            }
        }
        let st = Story {
            dir: dir.to_owned(),
            out,
            step: 0,
        };
        writeln!(
            st.out,
            "fieldsync demo: an HQ and two field laptops, exchanging files (in {})\n",
            dir.display()
        )?;
        Ok(st)
    }

    /// The next numbered step.
    pub(super) fn say(&mut self, text: impl fmt::Display) -> Result<(), DemoError> {
        self.step += 1;
        writeln!(self.out, "{:>2}. {text}", self.step)?;
        Ok(())
    }

    /// A line under the current step.
    pub(super) fn detail(&mut self, text: impl fmt::Display) -> Result<(), DemoError> {
        writeln!(self.out, "    {text}")?;
        Ok(())
    }

    /// A file of the story.
    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Export from `from` to `to` into `name`; returns the file.
    pub(super) fn export(
        &mut self,
        from: &mut Instance,
        to: &str,
        name: &str,
    ) -> Result<PathBuf, DemoError> {
        let path = self.file(name);
        let r = from.export_to_file(
            &ExportTarget::Peer {
                to: to.into(),
                resend: false,
            },
            &path,
        )?;
        let who = from.name()?;
        self.detail(format!(
            "{who} → {name}: {} changed rows for {to} ({} bytes)",
            r.changes, r.bytes
        ))?;
        Ok(path)
    }

    /// Import `file` into `into`, saying what it did.
    pub(super) fn import(
        &mut self,
        into: &mut Instance,
        file: &Path,
    ) -> Result<ImportReport, DemoError> {
        let r = into.import_file(file)?;
        let who = into.name()?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut line = format!(
            "{who} ← {name}: {} applied, {} already known, {} older",
            r.applied, r.known, r.older
        );
        if r.quarantined > 0 {
            line.push_str(&format!(", {} quarantined", r.quarantined));
        }
        if r.released > 0 {
            line.push_str(&format!(", {} released from quarantine", r.released));
        }
        if r.overwritten > 0 {
            line.push_str(&format!(
                ", {} concurrent {} lost",
                r.overwritten,
                if r.overwritten == 1 {
                    "value"
                } else {
                    "values"
                }
            ));
        }
        if !r.gaps.is_empty() {
            let gaps: Vec<String> = r.gaps.iter().map(|(o, g)| format!("{o} #{g}")).collect();
            line.push_str(&format!(" — still missing {}", gaps.join(", ")));
        }
        self.detail(line)?;
        Ok(r)
    }
}
