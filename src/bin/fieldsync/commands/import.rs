//! `fieldsync import`: check bundle files, then apply them one after the
//! other in short write transactions (or, with `--atomic`, all in one).
//! Also the import warnings `init --from` prints, and `--dry-run`: what
//! the import would do, found on a copy (the library's
//! [`fieldsync::Instance::preview_import`]), printed.

use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use fieldsync::{
    ImportOptions, ImportPreview, ImportReport, ImportSummary, Instance, PreviewOptions, RowAction,
};

use super::{DbArg, count};
use crate::exit::Outcome;
use crate::progress::Meter;
use crate::ui::Ui;

/// Apply bundle files. All are checked before any is applied.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync import --db hq.db field-1-week1.bundle field-2-week1.bundle\n  fieldsync import --db hq.db --atomic week1/*.bundle\n  ssh field-1 fieldsync export --db app.db --to hq -o - | fieldsync import --db hq.db -\n\nBefore importing a stranger's file, see what it would do (nothing is changed):\n  fieldsync import --db hq.db --dry-run stranger.bundle\n  fieldsync import --db hq.db --dry-run --json --limit 0 stranger.bundle > preview.json"
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
    /// Show what the import would do, per table (rows inserted, updated,
    /// deleted), the values that would win or lose against edits made here,
    /// what would be held in quarantine and which files would be refused,
    /// without changing the database: the files are imported into a
    /// temporary copy. Exit 3 if some changes would be held, 1 if a file
    /// would be refused.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: rows listed per table, and conflicts and held
    /// changes listed (default 20, with --json 1000; 0: all). The counts
    /// are always complete.
    #[arg(long, value_name = "N", requires = "dry_run")]
    limit: Option<u64>,
}

pub fn cmd_import(ui: &mut Ui, args: &ImportArgs) -> Result<Outcome> {
    if args.dry_run {
        return cmd_dry_run(ui, args);
    }
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
    // Parts of split bundles: each is checked and kept beside the database
    // until its siblings come; a bundle whose parts are all here is joined
    // and imported as any bundle.
    let received = instance.receive_parts(&files, true)?;
    for k in &received.kept {
        ui.text(|out| {
            writeln!(
                out,
                "kept: {}; waiting: {} not here yet",
                k.described(),
                k.missing_words()
            )
        })?;
    }
    for j in &received.joined {
        ui.text(|out| {
            writeln!(
                out,
                "joined the {} parts of {} (bundle {})",
                j.parts, j.name, j.bundle
            )
        })?;
    }
    let files = &received.files;
    // A joined bundle is shown by the name it was cut from.
    let shown: Vec<PathBuf> = (files.iter())
        .map(|f| match received.joined_at(f) {
            Some(j) => PathBuf::from(format!("{} (joined from {} parts)", j.name, j.parts)),
            None => f.clone(),
        })
        .collect();
    let shown = &shown;
    // Check every file (checksum, format, sender, tables) before applying
    // any, so a damaged or foreign file in the list is reported before the
    // long part starts.
    for (f, name) in files.iter().zip(shown) {
        let file = File::open(f).with_context(|| format!("cannot read {}", name.display()))?;
        let checked = instance.check_bundle(file);
        journal(ui, &mut instance, f, &checked)?;
        checked.with_context(|| format!("cannot import {}", name.display()))?;
    }
    let reports = if args.atomic {
        let reports = apply_all(ui, &mut instance, files, shown)?;
        // Each file's lines, then its warnings, in the order of the files.
        for (report, f) in reports.iter().zip(shown) {
            ui.text(|out| print_import(out, report, f))?;
            warn_import(ui, report)?;
        }
        reports
    } else {
        let opts = ImportOptions {
            max_write: Some(std::time::Duration::from_millis(args.max_lock_ms)),
            ..ImportOptions::default()
        };
        apply_each(ui, &mut instance, files, shown, &opts)?
    };
    for f in files {
        received.applied(f)?;
    }
    // The text was printed file by file above.
    let mut summary = ImportSummary::new(shown, &reports, args.atomic);
    summary.kept_parts = received.kept.clone();
    summary.joined = received.joined.iter().map(|j| j.summary()).collect();
    ui.report(&summary, |_| Ok(()))?;
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
    shown: &[PathBuf],
    opts: &ImportOptions,
) -> Result<Vec<ImportReport>> {
    let mut reports = Vec::with_capacity(files.len());
    for (i, (path, f)) in files.iter().zip(shown).enumerate() {
        let meter = Meter::new(f, ui.bars(), "checking");
        let file = File::open(path).with_context(|| format!("cannot read {}", f.display()))?;
        let result = instance.import_with(meter.reader(file, 3), opts);
        meter.finish();
        journal(ui, instance, path, &result)?;
        let report = result.with_context(|| match i {
            0 => format!("cannot import {}", f.display()),
            1 => format!(
                "cannot import {} ({} before it was imported)",
                f.display(),
                shown[0].display()
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
fn apply_all(
    ui: &mut Ui,
    instance: &mut Instance,
    files: &[PathBuf],
    shown: &[PathBuf],
) -> Result<Vec<ImportReport>> {
    let bars = ui.bars();
    let current = Cell::new(0usize);
    let mut bar: Option<Meter> = None;
    let result = instance.import_all(files.iter().enumerate().map(|(i, f)| {
        current.set(i);
        if let Some(done) = bar.take() {
            done.finish();
        }
        let meter = Meter::new(&shown[i], bars, "checking");
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
    let failed = shown.get(current.get()).map(|f| f.display().to_string());
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

/// `import --dry-run`: the import into a copy, and what it would do. The
/// database is only read (`-` is spooled in the system's temporary
/// directory, not beside it).
fn cmd_dry_run(ui: &mut Ui, args: &ImportArgs) -> Result<Outcome> {
    if args.files.iter().filter(|f| f.as_os_str() == "-").count() > 1 {
        anyhow::bail!("`-` (stdin) can be given only once");
    }
    let mut spooled = None;
    let mut files = args.files.clone();
    for f in &mut files {
        if f.as_os_str() == "-" {
            let mut spool = tempfile::Builder::new()
                .prefix("fieldsync-spool-")
                .suffix(".bundle")
                .tempfile()
                .context("cannot make a temporary file for the bundle on stdin")?;
            std::io::copy(&mut std::io::stdin().lock(), &mut spool)
                .context("cannot read a bundle from stdin")?;
            *f = spool.path().to_owned();
            spooled = Some(spool);
        }
    }
    // Parts of split bundles: joined in a temporary directory from the
    // files and the parts already kept; nothing is kept by a preview.
    let received = fieldsync::receive_parts(args.db.path(), &files, false)?;
    for k in &received.kept {
        ui.warn(format_args!(
            "{}; {} not here, so that bundle is not in the preview",
            k.described(),
            k.missing_words()
        ))?;
    }
    let shown: Vec<String> = (received.files.iter())
        .map(|f| match received.joined_at(f) {
            Some(j) => format!("{} (joined from {} parts)", j.name, j.parts),
            None if spooled.as_ref().is_some_and(|s| s.path() == f) => "-".to_owned(),
            None => f.display().to_string(),
        })
        .collect();
    let files = received.files.clone();
    let opts = PreviewOptions {
        atomic: args.atomic,
        max_write: if args.atomic {
            None
        } else {
            Some(std::time::Duration::from_millis(args.max_lock_ms))
        },
        limit: match args.limit {
            Some(0) => None,
            Some(n) => Some(n),
            // A full export's preview lists a bounded number of rows, so
            // its report fits in memory; the counts are always complete.
            None if ui.json() => Some(1000),
            None => Some(20),
        },
    };
    let mut preview =
        Instance::preview_import(args.db.path(), &files, &opts).with_context(|| {
            format!(
                "cannot preview the import into {}",
                args.db.path().display()
            )
        })?;
    drop(spooled);
    for (file, given) in preview.files.iter_mut().zip(&shown) {
        file.file = given.clone();
    }
    for f in &preview.files {
        if let Some(report) = &f.report {
            warn_import(ui, report)?;
        }
    }
    ui.report(&preview, |out| print_preview(out, &preview))?;
    if preview.refused > 0 {
        Ok(Outcome::Failed)
    } else if preview.quarantined > 0 {
        Ok(Outcome::Quarantined)
    } else {
        Ok(Outcome::Success)
    }
}

fn print_preview(out: &mut dyn Write, p: &ImportPreview) -> std::io::Result<()> {
    writeln!(
        out,
        "dry run: what importing into '{}' would do; nothing was changed.",
        p.instance
    )?;
    for f in &p.files {
        match (&f.refused, &f.report) {
            (Some(why), _) => writeln!(out, "{}: would be refused: {why}", f.file)?,
            (None, Some(r)) => {
                let mut line = format!(
                    "{} from '{}': {} would apply, {} skipped ({} already known, {} older)",
                    f.file, r.from, r.applied, r.skipped, r.known, r.older
                );
                if r.quarantined > 0 {
                    line.push_str(&format!(", {} would be held in quarantine", r.quarantined));
                }
                if r.released > 0 {
                    line.push_str(&format!(
                        ", {} held earlier would fit and apply",
                        count(r.released, "change", "changes")
                    ));
                }
                writeln!(out, "{line}.")?;
            }
            (None, None) => writeln!(
                out,
                "{}: not applied (another file of the --atomic import would be refused).",
                f.file
            )?,
        }
    }
    if p.tables.is_empty() {
        writeln!(out, "No row would change.")?;
    } else {
        writeln!(
            out,
            "Rows: {} inserted, {} updated, {} deleted.",
            p.inserted, p.updated, p.deleted
        )?;
    }
    for t in &p.tables {
        writeln!(
            out,
            "  {:<24} {:>8} inserted {:>8} updated {:>8} deleted",
            t.table, t.inserted, t.updated, t.deleted
        )?;
        if !t.columns.is_empty() {
            let cols: Vec<String> = t
                .columns
                .iter()
                .map(|c| format!("{} {}", c.column, c.updated))
                .collect();
            writeln!(out, "    updated columns: {}", cols.join(", "))?;
        }
        for r in &t.rows {
            match r.change {
                RowAction::Insert => writeln!(out, "    + {}", r.key)?,
                RowAction::Delete => writeln!(out, "    - {}", r.key)?,
                RowAction::Update => {
                    let cols: Vec<String> = r
                        .columns
                        .iter()
                        .map(|c| {
                            format!(
                                "{}: {} -> {}",
                                c.column,
                                c.old.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                                c.new.as_ref().map(|v| v.to_string()).unwrap_or_default()
                            )
                        })
                        .collect();
                    writeln!(out, "    ~ {}: {}", r.key, cols.join(", "))?;
                }
            }
        }
        if t.not_listed > 0 {
            writeln!(
                out,
                "    … and {} more (--limit N; 0 lists all)",
                count(t.not_listed, "row", "rows")
            )?;
        }
    }
    if !p.conflicts.is_empty() {
        writeln!(
            out,
            "Concurrent edits: {} of yours would be replaced, {} incoming ignored.",
            count(p.incoming_wins, "value", "values"),
            p.local_wins
        )?;
    }
    for c in &p.conflicts {
        let column = if c.column.is_empty() {
            "the row".to_owned()
        } else {
            format!("column {}", c.column)
        };
        if c.incoming_wins {
            writeln!(
                out,
                "  {}: your value {} in {column} of row {} would be replaced by {} (newer, from {}).",
                c.table, c.lost_value, c.key, c.won_value, c.won_site
            )?;
        } else {
            writeln!(
                out,
                "  {}: their value {} in {column} of row {} (from {}) would be ignored: your edit ({}) is newer.",
                c.table, c.lost_value, c.key, c.lost_site, c.won_value
            )?;
        }
    }
    if p.quarantined > 0 {
        writeln!(
            out,
            "{} would be held in quarantine:",
            count(p.quarantined, "change", "changes")
        )?;
    }
    for h in &p.held {
        writeln!(
            out,
            "  {} {} ({}): {}: {}",
            h.table, h.key, h.sender, h.reason, h.detail
        )?;
    }
    if p.not_listed > 0 {
        writeln!(
            out,
            "  … and {} more conflicts or held changes (--limit N; 0 lists all).",
            p.not_listed
        )?;
    }
    Ok(())
}
