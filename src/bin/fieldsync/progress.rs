//! The progress bar on stderr for long exports and imports: shown only when
//! stderr is a terminal, never with `--json` or `--quiet`, only for work
//! that takes a while, and with a time left only once it means something
//! ([`meaningful_eta`]). It draws no colour (so `NO_COLOR` has nothing to
//! turn off here; clap's help honours it).
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
                "{prefix} {msg:>9} [{bar:30}] {bytes}/{total_bytes}{honest_eta}"
            } else {
                "{prefix} {msg:>9} [{bar:30}] {pos}/{len} changes{honest_eta}"
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(
                    style
                        .with_key("honest_eta", honest_eta)
                        .progress_chars("=> "),
                );
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

/// The time left, once it means something: nothing for the first
/// [`ETA_AFTER`] or [`ETA_FROM`] of the work (a first estimate from a few
/// hundred milliseconds of a start that opens files and reads headers said
/// 40-50 s for a 2-4 s job), then ` (ETA 12s)`.
fn honest_eta(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    if let Some(eta) = meaningful_eta(state.elapsed(), state.fraction(), state.eta()) {
        let _ = write!(w, " (ETA {})", indicatif::HumanDuration(eta));
    }
}

/// No time left is shown before this much time has passed...
const ETA_AFTER: std::time::Duration = std::time::Duration::from_secs(2);
/// ...and before this fraction of the work is done.
const ETA_FROM: f32 = 0.05;

/// The estimate to show, if it is meaningful yet.
fn meaningful_eta(
    elapsed: std::time::Duration,
    fraction: f32,
    eta: std::time::Duration,
) -> Option<std::time::Duration> {
    (elapsed >= ETA_AFTER && (ETA_FROM..1.0).contains(&fraction)).then_some(eta)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::meaningful_eta;

    #[test]
    fn no_eta_is_shown_before_two_seconds_or_five_percent() {
        let eta = Duration::from_secs(45);
        assert_eq!(meaningful_eta(Duration::from_millis(300), 0.5, eta), None);
        assert_eq!(meaningful_eta(Duration::from_secs(10), 0.01, eta), None);
        assert_eq!(meaningful_eta(Duration::from_secs(3), 1.0, eta), None);
        assert_eq!(meaningful_eta(Duration::from_secs(3), 0.2, eta), Some(eta));
    }
}
