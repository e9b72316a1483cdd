//! The progress bar on stderr for long exports and imports: shown only on
//! a terminal, never with `--json`, and only for work that takes a while.
//! It knows nothing of bundles beyond their size and log entries counted.

use std::fs::File;
use std::path::Path;

/// A progress bar on stderr for long exports and imports, shown only on a
/// terminal and never with `--json`.
pub struct Meter {
    bar: Option<indicatif::ProgressBar>,
}

impl Meter {
    /// Bars appear only for work that takes a while: a file this size or a
    /// log this long.
    const MIN_BYTES: u64 = 4 << 20;
    const MIN_ENTRIES: u64 = 100_000;

    pub fn new(file: &Path, enabled: bool, phase: &str) -> Meter {
        use std::io::IsTerminal;
        if !enabled || !std::io::stderr().is_terminal() {
            return Meter { bar: None };
        }
        let bar = indicatif::ProgressBar::hidden();
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        bar.set_prefix(name);
        bar.set_message(phase.to_owned());
        Meter { bar: Some(bar) }
    }

    fn show(bar: &indicatif::ProgressBar, bytes: bool) {
        if bar.is_hidden() {
            let template = if bytes {
                "{prefix} {msg:>9} [{bar:30}] {bytes}/{total_bytes} ({eta})"
            } else {
                "{prefix} {msg:>9} [{bar:30}] {pos}/{len} changes ({eta})"
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
    }

    /// Export: log entries written of the total.
    pub fn set(&self, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            if total >= Self::MIN_ENTRIES {
                Self::show(bar, false);
            }
            bar.set_length(total);
            bar.set_position(done);
        }
    }

    /// Import: bytes read of the file. The file is read `passes` times
    /// (its checksum, its records when the import takes several write
    /// transactions, then to apply it); the last pass is "applying".
    pub fn reader(&self, file: File, passes: u32) -> Metered {
        let total = file.metadata().map(|m| m.len()).unwrap_or(0);
        if let Some(bar) = &self.bar {
            if total >= Self::MIN_BYTES {
                Self::show(bar, true);
            }
            bar.set_length(total);
        }
        Metered {
            file,
            bar: self.bar.clone(),
            passes: 0,
            applying_at: passes,
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A bundle file that moves a progress bar as it is read.
pub struct Metered {
    file: File,
    bar: Option<indicatif::ProgressBar>,
    passes: u32,
    /// The pass that applies.
    applying_at: u32,
}

impl std::io::Read for Metered {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
        }
        Ok(n)
    }
}

impl std::io::Seek for Metered {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let at = self.file.seek(pos)?;
        if let Some(bar) = &self.bar {
            if at == 0 {
                self.passes += 1;
                // verify() rewinds before and after its pass.
                if self.passes == self.applying_at {
                    bar.set_message("applying");
                }
            }
            bar.set_position(at);
        }
        Ok(at)
    }
}

/// The progress of a network exchange on stderr (a terminal only, never
/// with `--json`): a line naming the step, with a bar for the transfers.
pub struct NetMeter {
    bar: Option<indicatif::ProgressBar>,
}

impl NetMeter {
    pub fn new(enabled: bool) -> NetMeter {
        use std::io::IsTerminal;
        if !enabled || !std::io::stderr().is_terminal() {
            return NetMeter { bar: None };
        }
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{msg:>24} [{bar:30}] {bytes}/{total_bytes}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        NetMeter { bar: Some(bar) }
    }

    pub fn set(&self, stage: fieldsync::net::client::Stage, done: u64, total: u64) {
        use fieldsync::net::client::Stage;
        let Some(bar) = &self.bar else { return };
        let msg = match stage {
            Stage::Export => "writing the bundle".to_owned(),
            Stage::Upload => "sending".to_owned(),
            Stage::Server => "the server is importing".to_owned(),
            Stage::Download => "receiving".to_owned(),
            Stage::Import => "importing".to_owned(),
            Stage::Retry => format!("retrying ({done} of {total})"),
        };
        bar.set_message(msg);
        if matches!(stage, Stage::Upload | Stage::Download) {
            bar.set_length(total);
            bar.set_position(done);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
