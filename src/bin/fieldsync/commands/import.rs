//! `fieldsync import`: check bundle files, then apply them one after the
//! other in short write transactions (or, with `--atomic`, all in one).
//! Also the import warnings `init --from` prints.

use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use fieldsync::{ImportOptions, ImportReport, ImportSummary, Instance};

use super::{DbArg, count};
use crate::exit::Outcome;
use crate::progress::Meter;
use crate::ui::Ui;

/// Apply bundle files. All are checked before any is applied.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync import --db hq.db field-1-week1.bundle field-2-week1.bundle\n  fieldsync import --db hq.db --atomic week1/*.bundle\n  ssh field-1 fieldsync export --db app.db --to hq -o - | fieldsync import --db hq.db -"
)]
pub struct ImportArgs {
    #[command(flatten)]
    db: DbArg,
    /// Bundle files, applied in this order; `-` reads one from stdin (it is
    /// copied to a temporary file beside the database first).
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// Apply all the files in one write transaction: all or nothing. The
    /// app cannot write to the database until the import ends (seconds for
    /// a large bundle), so its saves wait or fail.
    #[arg(long, conflicts_with = "max_lock_ms")]
    atomic: bool,
    /// Hold SQLite's write lock at most about this long at a time, so the
    /// app's saves wait at most about as long.
    #[arg(long, value_name = "MS", default_value_t = fieldsync::DEFAULT_MAX_WRITE_MS,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    max_lock_ms: u64,
}

pub fn cmd_import(ui: &mut Ui, args: &ImportArgs) -> Result<Outcome> {
    let mut instance = args.db.open()?;
    if args.files.iter().filter(|f| f.as_os_str() == "-").count() > 1 {
        anyhow::bail!("`-` (stdin) can be given only once");
    }
    // `-`: the bundle on stdin is copied beside the database first, since
    // it is read more than once (checked, then applied); from there on it
    // is an ordinary file, removed when the import ends.
    let mut spooled = None;
    let mut files = args.files.clone();
    for f in &mut files {
        if f.as_os_str() == "-" {
            let spool = instance
                .spool(std::io::stdin().lock())
                .context("cannot read a bundle from stdin")?;
            *f = spool.path().to_owned();
            spooled = Some(spool);
        }
    }
    let files = &files;
    // Check every file (checksum, format, sender, tables) before applying
    // any, so a damaged or foreign file in the list is reported before the
    // long part starts.
    for f in files {
        let file = File::open(f).with_context(|| format!("cannot read {}", f.display()))?;
        let checked = instance.check_bundle(file);
        journal(ui, &mut instance, f, &checked)?;
        checked.with_context(|| format!("cannot import {}", f.display()))?;
    }
    let reports = if args.atomic {
        let reports = apply_all(ui, &mut instance, files)?;
        // Each file's lines, then its warnings, in the order of the files.
        for (report, f) in reports.iter().zip(files) {
            ui.text(|out| print_import(out, report, f))?;
            warn_import(ui, report)?;
        }
        reports
    } else {
        let opts = ImportOptions {
            max_write: Some(std::time::Duration::from_millis(args.max_lock_ms)),
            ..ImportOptions::default()
        };
        apply_each(ui, &mut instance, files, &opts)?
    };
    // The text was printed file by file above.
    ui.report(
        &ImportSummary::new(files, &reports, args.atomic),
        |_| Ok(()),
    )?;
    drop(spooled);
    // Exit 3: applied, but some of what came is held in quarantine.
    if reports.iter().any(|r| r.quarantined > 0) {
        Ok(Outcome::Quarantined)
    } else {
        Ok(Outcome::Success)
    }
}

/// Apply the files one after the other, each in short write transactions,
/// printing each one's lines as it is done.
fn apply_each(
    ui: &mut Ui,
    instance: &mut Instance,
    files: &[PathBuf],
    opts: &ImportOptions,
) -> Result<Vec<ImportReport>> {
    let mut reports = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let meter = Meter::new(f, ui.bars(), "checking");
        let file = File::open(f).with_context(|| format!("cannot read {}", f.display()))?;
        let result = instance.import_with(meter.reader(file, 3), opts);
        meter.finish();
        journal(ui, instance, f, &result)?;
        let report = result.with_context(|| match i {
            0 => format!("cannot import {}", f.display()),
            1 => format!(
                "cannot import {} ({} before it was imported)",
                f.display(),
                files[0].display()
            ),
            _ => format!(
                "cannot import {} (the {i} files before it were imported)",
                f.display()
            ),
        })?;
        ui.text(|out| print_import(out, &report, f))?;
        warn_import(ui, &report)?;
        reports.push(report);
    }
    Ok(reports)
}

/// Apply all files in one transaction: all or nothing, and one commit, so
/// many small bundles cost about what one large bundle does.
fn apply_all(ui: &mut Ui, instance: &mut Instance, files: &[PathBuf]) -> Result<Vec<ImportReport>> {
    let bars = ui.bars();
    let current = Cell::new(0usize);
    let mut bar: Option<Meter> = None;
    let result = instance.import_all(files.iter().enumerate().map(|(i, f)| {
        current.set(i);
        if let Some(done) = bar.take() {
            done.finish();
        }
        let meter = Meter::new(f, bars, "checking");
        let file = File::open(f)?;
        let reader = meter.reader(file, 2);
        bar = Some(meter);
        Ok(reader)
    }));
    if let Some(done) = bar.take() {
        done.finish();
    }
    if let Some(f) = files.get(current.get()) {
        journal(ui, instance, f, &result)?;
    }
    let failed = files.get(current.get()).map(|f| f.display().to_string());
    result.with_context(|| match (&failed, files.len()) {
        (Some(f), 1) => format!("cannot import {f}"),
        (Some(f), _) => format!("cannot import {f}; none of the files was applied"),
        (None, _) => "cannot import".to_owned(),
    })
}

/// Record a bundle the import refused in the journal of refused bundles
/// (spec/trust.md), after the import's transaction was rolled back. Errors
/// of this computer rather than the bundle (busy, I/O) are not recorded. If
/// the journal cannot be written, a warning says so: the refusal itself is
/// the error reported.
fn journal<T>(
    ui: &mut Ui,
    instance: &mut Instance,
    file: &Path,
    result: &Result<T, fieldsync::Error>,
) -> std::io::Result<()> {
    if let Err(e) = result {
        if let Err(j) = instance.record_refused(file, e) {
            ui.warn(format_args!(
                "the refusal of {} could not be recorded in the journal of refused bundles: {j}",
                file.display()
            ))?;
        }
    }
    Ok(())
}

fn print_import(out: &mut dyn Write, r: &ImportReport, file: &Path) -> std::io::Result<()> {
    writeln!(
        out,
        "imported {} from '{}': {} applied, {} skipped ({} already known, {} older).",
        file.display(),
        r.from,
        r.applied,
        r.skipped,
        r.known,
        r.older
    )?;
    for t in r
        .tables
        .iter()
        .filter(|t| t.applied + t.known + t.older + t.quarantined + t.waiting > 0)
    {
        let mut held = if t.quarantined > 0 {
            format!(" {:>8} quarantined", t.quarantined)
        } else {
            String::new()
        };
        if t.waiting > 0 {
            held.push_str(&format!(" {:>8} waiting", t.waiting));
        }
        writeln!(
            out,
            "  {:<24} {:>8} applied {:>8} known {:>8} older{held}",
            t.table, t.applied, t.known, t.older
        )?;
    }
    if r.released > 0 {
        writeln!(
            out,
            "  {} held in quarantine by earlier imports now {} and {} applied.",
            count(r.released, "change", "changes"),
            if r.released == 1 { "fits" } else { "fit" },
            if r.released == 1 { "was" } else { "were" }
        )?;
    }
    if r.waited > 0 {
        writeln!(
            out,
            "  {} received earlier for a column or table that is here now {} applied.",
            count(r.waited, "row", "rows"),
            if r.waited == 1 { "was" } else { "were" }
        )?;
    }
    if r.overwritten > 0 {
        writeln!(
            out,
            "  {} written concurrently elsewhere lost to later edits (see `fieldsync conflicts`).",
            count(r.overwritten, "value", "values")
        )?;
    }
    Ok(())
}

/// An import's gaps and warnings, on stderr whether or not `--json` is given.
pub(super) fn warn_import(ui: &mut Ui, r: &ImportReport) -> std::io::Result<()> {
    for (origin, seqs) in &r.gaps {
        ui.warn(format_args!(
            "changes {seqs} from '{origin}' have not arrived here (a bundle was skipped or lost, \
             or an instance on the way holds them in quarantine); import the missing bundle if you have it, \
             otherwise '{}' sends them again once it has imported a bundle from this instance",
            r.from
        ))?;
    }
    for w in &r.warnings {
        ui.warn(w)?;
    }
    Ok(())
}
