//! The `fieldsync` command: parses arguments, calls the library, prints.
//! No engine logic lives here. Errors are printed as one line on stderr and
//! exit with status 1 (2 for a mistyped command line).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use fieldsync::bundle::{BundleInfo, inspect};
use fieldsync::hlc::Hlc;
use fieldsync::{
    ExportReport, ExportTarget, ImportReport, Instance, Selection, Status, TrackOptions,
};

/// Replicate SQLite databases by exchanging bundle files.
///
/// Typical use: `init` each database once, `track` its tables, then
/// `export --to PEER -o FILE` on one side and `import FILE` on the other,
/// as often as you like. Re-importing never creates duplicates.
#[derive(Parser)]
#[command(name = "fieldsync", version, about, long_about = None, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct DbArg {
    /// The app's SQLite database file.
    #[arg(long, value_name = "PATH", env = "FIELDSYNC_DB")]
    db: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Set up fieldsync in a database (creating the file if needed), or set up
    /// a new database from a full export with --from.
    Init {
        #[command(flatten)]
        db: DbArg,
        /// A short name for this instance, such as hq or field-1.
        #[arg(long)]
        name: String,
        /// A full export (`fieldsync export --full`) to create the tables from
        /// and load; the database must not have those tables yet.
        #[arg(long, value_name = "BUNDLE")]
        from: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Start recording changes to tables (the rows already there are included).
    Track {
        #[command(flatten)]
        db: DbArg,
        /// Tables to track.
        #[arg(
            value_name = "TABLE",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        tables: Vec<String>,
        /// Track every table that can be tracked; say which were skipped and why.
        #[arg(long)]
        all: bool,
        /// With --all: leave out these tables, which stay local to each
        /// instance (sessions, counters). Globs allowed: --except 'sess*'.
        #[arg(long, value_name = "TABLE", num_args = 1.., requires = "all")]
        except: Vec<String>,
        /// Identify rows of tables numbered by local integer ids by this
        /// column, where the table has it UNIQUE NOT NULL (Sahana Eden's uuid).
        #[arg(long, value_name = "COLUMN")]
        identity: Option<String>,
        /// Treat this table's integer key as a number each instance assigns
        /// on its own (an app that numbers rows MAX(id)+1). Repeatable.
        #[arg(long = "local-key", value_name = "TABLE")]
        local_key: Vec<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a bundle file: what a peer lacks (--to) or everything (--full).
    #[command(group(clap::ArgGroup::new("target").required(true).args(["to", "full"])))]
    Export {
        #[command(flatten)]
        db: DbArg,
        /// The instance that will import the bundle (its name or site id).
        #[arg(long, value_name = "PEER", conflicts_with = "full")]
        to: Option<String>,
        /// Include changes already sent but not yet acknowledged (a bundle was lost).
        #[arg(long, requires = "to")]
        resend: bool,
        /// Export the whole current state.
        #[arg(long)]
        full: bool,
        /// The bundle file to write.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Apply bundle files. All are checked before any is applied.
    Import {
        #[command(flatten)]
        db: DbArg,
        /// Bundle files, applied in this order.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show this instance, its tables, and what each peer has and lacks.
    Status {
        #[command(flatten)]
        db: DbArg,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show what a bundle file holds and whether it is intact (no database needed).
    Inspect {
        /// The bundle file.
        file: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List changes waiting in quarantine and values overwritten by concurrent edits.
    Conflicts {
        #[command(flatten)]
        db: DbArg,
        /// Try the quarantined changes again now (every import does too).
        #[arg(long)]
        retry: bool,
        /// Show at most this many overwritten values (newest first).
        #[arg(long, default_value_t = 50, value_name = "N")]
        limit: u64,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check fieldsync's own state in a database; exit 1 and list problems if any.
    Check {
        #[command(flatten)]
        db: DbArg,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Play the seed scenario: an HQ and two field laptops exchange bundles.
    Demo {
        /// Where to leave the three databases and the bundles (default: a new
        /// temporary directory).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Fold recorded changes into the change log now (export and import do it too).
    Compact {
        #[command(flatten)]
        db: DbArg,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fieldsync: error: {}", one_line(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

/// Print clap's error as one line (help and version print as usual).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let text = e.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    eprintln!("fieldsync: error: {message} (see `fieldsync --help`)");
    ExitCode::from(2)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Init {
            db,
            name,
            from: Some(bundle),
            json,
        } => {
            let file =
                File::open(&bundle).with_context(|| format!("cannot read {}", bundle.display()))?;
            let bar = Meter::new(&bundle, !json, "checking");
            let (_, report) = Instance::init_from(&db.db, &name, bar.reader(file), &bundle)
                .with_context(|| {
                    format!(
                        "cannot set up {} from {}",
                        db.db.display(),
                        bundle.display()
                    )
                })?;
            bar.finish();
            print_import_warnings(&report.import);
            if json {
                print_json(&report)?;
            } else {
                println!(
                    "Set up {} as instance '{name}' from the full export of '{}': {} tables, {} rows.",
                    db.db.display(),
                    report.from,
                    report.tables.len(),
                    report.import.applied
                );
                if !report.local_tables.is_empty() {
                    println!(
                        "Created empty, as they are local to each instance (not tracked at '{}'): {}.",
                        report.from,
                        report.local_tables.join(", ")
                    );
                }
                if !report.views.is_empty() {
                    println!("Created views: {}.", report.views.join(", "));
                }
                println!(
                    "'{}' is a known peer: `fieldsync export --db {} --to {} -o FILE` sends it only what is done here.",
                    report.from,
                    shell_quote(&db.db),
                    report.from
                );
            }
        }
        Command::Init {
            db,
            name,
            from: None,
            json,
        } => {
            let (instance, created) = Instance::init(&db.db, &name)
                .with_context(|| format!("cannot initialise {}", db.db.display()))?;
            let site = instance.site_id()?;
            if json {
                print_json(&serde_json::json!({
                    "name": name, "site_id": site.to_string(), "created": created,
                }))?;
            } else if created {
                println!(
                    "Initialised {} as instance '{name}' (site id {site}).",
                    db.db.display()
                );
                println!("Next: fieldsync track --db {} --all", shell_quote(&db.db));
            } else {
                println!(
                    "{} is already instance '{name}' (site id {site}); nothing changed.",
                    db.db.display()
                );
            }
        }
        Command::Track {
            db,
            tables,
            all,
            except,
            identity,
            local_key,
            json,
        } => {
            let mut instance = open(&db.db)?;
            let selection = if all {
                Selection::All
            } else {
                Selection::Named(tables)
            };
            let opts = TrackOptions {
                except,
                identity,
                local_key,
            };
            let report = instance.track_with(&selection, &opts)?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            if json {
                print_json(&report)?;
            } else {
                for t in &report.tracked {
                    match report.identities.iter().find(|i| &i.table == t) {
                        Some(i) => println!("tracking {t} (rows identified {})", i.by),
                        None => println!("tracking {t}"),
                    }
                }
                for t in &report.excepted {
                    println!("left out (--except): {t}");
                }
                for t in &report.already {
                    println!("already tracked: {t}");
                }
                for c in &report.new_columns {
                    println!("now following new column {c}");
                }
                for (t, why) in &report.skipped {
                    println!("skipped {t}: {why}");
                }
                if !report.tracked.is_empty() {
                    println!(
                        "{} existing rows recorded; they will be in the next export.",
                        report.existing_rows
                    );
                }
            }
        }
        Command::Export {
            db,
            to,
            resend,
            full,
            output,
            json,
        } => {
            let mut instance = open(&db.db)?;
            let target = match (to, full) {
                (_, true) => ExportTarget::Full,
                (Some(to), false) => ExportTarget::Peer { to, resend },
                (None, false) => {
                    bail!("say who the bundle is for with --to PEER, or use --full for everything")
                }
            };
            let bar = Meter::new(&output, !json, "exporting");
            let report = instance
                .export_to_file_with_progress(&target, &output, &mut |done, total| {
                    bar.set(done, total)
                })
                .with_context(|| format!("cannot export to {}", output.display()))?;
            bar.finish();
            if report.new_peer {
                let peer = report.peer.as_deref().unwrap_or_default();
                if report.known_peers.is_empty() {
                    eprintln!(
                        "note: '{peer}' is a new peer, so it gets everything (no other peers are known yet)."
                    );
                } else {
                    eprintln!(
                        "note: '{peer}' is a new peer, so it gets everything; known peers are {}. \
                         If you meant one of those, check the spelling.",
                        report.known_peers.join(", ")
                    );
                }
            }
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            if json {
                print_json(&report)?;
            } else {
                print_export(&report, &output);
            }
        }
        Command::Import { db, files, json } => {
            let mut instance = open(&db.db)?;
            // Check every file (checksum, format, sender, tables) before
            // applying any, so a damaged or foreign file in the list is
            // reported before the long part starts.
            for f in &files {
                let file = File::open(f).with_context(|| format!("cannot read {}", f.display()))?;
                instance
                    .check_bundle(file)
                    .with_context(|| format!("cannot import {}", f.display()))?;
            }
            // All files are applied in one transaction: all or nothing, and
            // one commit, so many small bundles cost about what one large
            // bundle does.
            let current = std::cell::Cell::new(0usize);
            let mut bar: Option<Meter> = None;
            let result = instance.import_all(files.iter().enumerate().map(|(i, f)| {
                current.set(i);
                if let Some(done) = bar.take() {
                    done.finish();
                }
                let meter = Meter::new(f, !json, "checking");
                let file = File::open(f)?;
                let reader = meter.reader(file);
                bar = Some(meter);
                Ok(reader)
            }));
            if let Some(done) = bar.take() {
                done.finish();
            }
            let failed = files.get(current.get()).map(|f| f.display().to_string());
            let reports = result.with_context(|| match (&failed, files.len()) {
                (Some(f), 1) => format!("cannot import {f}"),
                (Some(f), _) => format!("cannot import {f}; none of the files was applied"),
                (None, _) => "cannot import".to_owned(),
            })?;
            let reports: Vec<(String, ImportReport)> = files
                .iter()
                .map(|f| f.display().to_string())
                .zip(reports)
                .collect();
            for ((_, report), f) in reports.iter().zip(&files) {
                if !json {
                    print_import(report, f);
                }
                print_import_warnings(report);
            }
            if json {
                let sum = |get: fn(&ImportReport) -> u64| {
                    reports.iter().map(|(_, r)| get(r)).sum::<u64>()
                };
                print_json(&serde_json::json!({
                    "applied": sum(|r| r.applied),
                    "skipped": sum(|r| r.skipped),
                    "known": sum(|r| r.known),
                    "older": sum(|r| r.older),
                    "changes": sum(|r| r.changes),
                    "quarantined": sum(|r| r.quarantined),
                    "released": sum(|r| r.released),
                    "overwritten": sum(|r| r.overwritten),
                    "held": reports.last().map(|(_, r)| r.held).unwrap_or(0),
                    "files": reports.iter().map(|(f, r)| serde_json::json!({"file": f, "report": r})).collect::<Vec<_>>(),
                }))?;
            }
        }
        Command::Status { db, json } => {
            let mut instance = open(&db.db)?;
            let status = instance.status()?;
            if json {
                print_json(&status)?;
            } else {
                print_status(&status, &db.db);
            }
        }
        Command::Inspect { file, json } => {
            let f = File::open(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let info = inspect(f).with_context(|| format!("cannot inspect {}", file.display()))?;
            if json {
                print_json(&inspect_json(&info))?;
            } else {
                print_inspect(&info, &file);
            }
            if !info.intact {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Conflicts {
            db,
            retry,
            limit,
            json,
        } => {
            let mut instance = open(&db.db)?;
            let retried = if retry {
                Some(instance.retry_quarantine()?)
            } else {
                None
            };
            let conflicts = instance.conflicts(limit)?;
            if json {
                print_json(&serde_json::json!({
                    "retry": retried,
                    "quarantined": conflicts.quarantined,
                    "overwritten": conflicts.overwritten,
                    "overwritten_total": conflicts.overwritten_total,
                }))?;
            } else {
                if let Some(r) = &retried {
                    println!(
                        "retried the quarantine: {} applied, {} still held.",
                        r.released, r.held
                    );
                }
                print_conflicts(&conflicts, &db.db);
            }
        }
        Command::Demo { dir } => {
            let dir = match dir {
                Some(d) => d,
                None => fieldsync::demo::new_dir()?,
            };
            fieldsync::demo::run(&dir, &mut std::io::stdout()).with_context(|| {
                format!("the demo stopped (its files are in {})", dir.display())
            })?;
        }
        Command::Check { db, json } => {
            let mut instance = open(&db.db)?;
            let report = instance.check()?;
            if json {
                print_json(&report)?;
            } else {
                print_check(&report);
            }
            if let Err(e) = report.into_result(db.db.clone()) {
                eprintln!("fieldsync: error: {}", one_line(&e.to_string()));
                return Ok(ExitCode::from(1));
            }
        }
        Command::Compact { db, json } => {
            let mut instance = open(&db.db)?;
            let report = instance.compact()?;
            if json {
                print_json(&report)?;
            } else {
                println!(
                    "folded {} recorded changes; the change log holds {} entries (was {}).",
                    report.captured, report.log_entries, report.log_entries_before
                );
                if report.vanished > 0 {
                    println!(
                        "{} rows were deleted without a trigger (INSERT OR REPLACE); their deletion is now recorded.",
                        report.vanished
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on stderr for long exports and imports, shown only on a
/// terminal and never with `--json`.
struct Meter {
    bar: Option<indicatif::ProgressBar>,
}

impl Meter {
    /// Bars appear only for work that takes a while: a file this size or a
    /// log this long.
    const MIN_BYTES: u64 = 4 << 20;
    const MIN_ENTRIES: u64 = 100_000;

    fn new(file: &Path, enabled: bool, phase: &str) -> Meter {
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
    fn set(&self, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            if total >= Self::MIN_ENTRIES {
                Self::show(bar, false);
            }
            bar.set_length(total);
            bar.set_position(done);
        }
    }

    /// Import: bytes read of the file. The file is read twice: once to
    /// check it, then to apply it.
    fn reader(&self, file: File) -> Metered {
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
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A bundle file that moves a progress bar as it is read.
struct Metered {
    file: File,
    bar: Option<indicatif::ProgressBar>,
    passes: u32,
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
                if self.passes == 2 {
                    bar.set_message("applying");
                }
            }
            bar.set_position(at);
        }
        Ok(at)
    }
}

fn open(path: &Path) -> Result<Instance> {
    Ok(Instance::open(path)?)
}

fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars().all(|c| c.is_alphanumeric() || "-_./".contains(c)) {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
    }
}

fn per_table(tables: &[(String, u64)]) -> String {
    let parts: Vec<String> = tables
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn print_export(r: &ExportReport, output: &Path) {
    let what = match &r.peer {
        Some(p) => format!("for '{p}'"),
        None => "full export".to_owned(),
    };
    let tables: Vec<(String, u64)> = r
        .tables
        .iter()
        .map(|t| (t.table.clone(), t.changes))
        .collect();
    println!(
        "wrote {} ({what}): {} changes{}, {}.",
        output.display(),
        r.changes,
        per_table(&tables),
        human_bytes(r.bytes)
    );
    if r.changes == 0 && r.peer.is_some() {
        println!("nothing new to send; the bundle still carries this instance's acknowledgements.");
    }
}

fn print_check(r: &fieldsync::CheckReport) {
    if r.ok {
        println!(
            "ok: {} tracked tables, {} rows, {} change-log entries, {} instances, {} peers checked.",
            r.tables, r.rows, r.log_entries, r.origins, r.peers
        );
        return;
    }
    for p in &r.problems {
        println!("{p}");
    }
    if r.omitted > 0 {
        println!("… and {} more problems like these.", r.omitted);
    }
}

fn print_import(r: &ImportReport, file: &Path) {
    println!(
        "imported {} from '{}': {} applied, {} skipped ({} already known, {} older).",
        file.display(),
        r.from,
        r.applied,
        r.skipped,
        r.known,
        r.older
    );
    for t in r
        .tables
        .iter()
        .filter(|t| t.applied + t.known + t.older + t.quarantined > 0)
    {
        let held = if t.quarantined > 0 {
            format!(" {:>8} quarantined", t.quarantined)
        } else {
            String::new()
        };
        println!(
            "  {:<24} {:>8} applied {:>8} known {:>8} older{held}",
            t.table, t.applied, t.known, t.older
        );
    }
    if r.released > 0 {
        println!(
            "  {} change(s) held in quarantine by earlier imports now fit and were applied.",
            r.released
        );
    }
    if r.overwritten > 0 {
        println!(
            "  {} value(s) written concurrently elsewhere lost to later edits (see `fieldsync conflicts`).",
            r.overwritten
        );
    }
}

fn print_conflicts(c: &fieldsync::Conflicts, db: &Path) {
    if c.quarantined.is_empty() {
        println!("quarantine: empty");
    } else {
        println!(
            "quarantine: {} change(s) received but not applied (retried at every import; `fieldsync conflicts --db {} --retry` retries now)",
            c.quarantined.len(),
            shell_quote(db)
        );
        for q in &c.quarantined {
            println!(
                "  #{:<5} {} row {} from '{}': {} — {} (since {}, tried {}×)",
                q.id,
                q.table,
                q.key,
                q.sender,
                q.reason,
                q.detail,
                when(Some(q.first_ms)),
                q.tries
            );
        }
    }
    if c.overwritten.is_empty() {
        println!("overwritten values: none");
    } else {
        println!(
            "overwritten values: {} recorded{}",
            c.overwritten_total,
            if c.overwritten_total > c.overwritten.len() as u64 {
                format!(", newest {} shown", c.overwritten.len())
            } else {
                String::new()
            }
        );
        for o in &c.overwritten {
            let column = if o.column.is_empty() {
                "(row)".to_owned()
            } else {
                o.column.clone()
            };
            println!(
                "  {} row {} {}: {} by '{}' at {} lost to {} by '{}' at {} ({})",
                o.table,
                o.key,
                column,
                o.lost_value,
                o.lost_site,
                when(Some(o.lost_at_ms)),
                o.won_value,
                o.won_site,
                when(Some(o.won_at_ms)),
                o.reason
            );
        }
    }
}

/// Warnings go to stderr whether or not `--json` is given.
fn print_import_warnings(r: &ImportReport) {
    for (origin, seqs) in &r.gaps {
        eprintln!(
            "warning: changes {seqs} from '{origin}' have not arrived here (a bundle was skipped or lost, \
             or an instance on the way holds them in quarantine); import the missing bundle if you have it, \
             otherwise '{}' sends them again once it has imported a bundle from this instance",
            r.from
        );
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
}

fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "never".to_owned())
}

fn print_status(s: &Status, db: &Path) {
    println!("instance   {} ({})", s.name, db.display());
    println!("site id    {}", s.site_id);
    println!(
        "changes    {} made here; {} recorded and not yet in the log; log holds {} entries",
        s.local_seq, s.captured_unstamped, s.log_entries
    );
    if s.tables.is_empty() {
        println!(
            "tables     none tracked (run `fieldsync track --db {} --all`)",
            shell_quote(db)
        );
    } else {
        println!("tables");
        for t in &s.tables {
            println!(
                "  {:<24} {:>8} rows {:>8} deleted",
                t.name, t.rows, t.tombstones
            );
        }
    }
    println!("origins (change numbers held)");
    for o in &s.origins {
        let mut gaps = if o.gaps.is_empty() {
            String::new()
        } else {
            format!("   MISSING {}", o.gaps)
        };
        if !o.quarantined.is_empty() {
            gaps.push_str(&format!("   QUARANTINED {}", o.quarantined));
        }
        println!(
            "  {:<24} {}{gaps}",
            o.name,
            if o.have.is_empty() { "-" } else { &o.have }
        );
    }
    if s.quarantined + s.overwritten > 0 {
        println!(
            "conflicts  {} change(s) held in quarantine, {} value(s) overwritten by concurrent edits \
             (`fieldsync conflicts --db {}`)",
            s.quarantined,
            s.overwritten,
            shell_quote(db)
        );
    }
    if s.peers.is_empty() {
        println!("peers      none yet");
    } else {
        println!("peers");
        for p in &s.peers {
            println!(
                "  {:<24} {} waiting to be sent, {} sent but not acknowledged; last import {}, last export {}",
                p.name,
                p.pending_changes,
                p.unacknowledged,
                when(p.last_import),
                when(p.last_export)
            );
        }
    }
}

fn inspect_json(info: &BundleInfo) -> serde_json::Value {
    let h = &info.header;
    let origin = |i: u32| {
        h.origins
            .get(i as usize)
            .map(|o| o.name.clone())
            .unwrap_or_else(|| format!("#{i}"))
    };
    serde_json::json!({
        "format_version": fieldsync::bundle::format::FORMAT_VERSION,
        "site_id": h.sender.id.to_string(),
        "site_name": h.sender.name,
        "full": h.full,
        "recipient": h.recipient,
        "created": Hlc(h.created).to_string(),
        "checksum_ok": info.intact,
        "problem": info.problem,
        "changes": info.end.as_ref().map(|e| e.rows),
        "versions": info.end.as_ref().map(|e| e.versions),
        "tables": h.tables.iter().enumerate().map(|(i, t)| serde_json::json!({
            "name": t.name,
            "key": t.key,
            "identity": t.identity,
            "columns": t.cells,
            "references": t.refs.iter().map(|r| serde_json::json!({
                "columns": r.cells, "table": r.parent,
            })).collect::<Vec<_>>(),
            "changes": info.end.as_ref().and_then(|e| e.per_table.get(i)),
        })).collect::<Vec<_>>(),
        "covers": h.covers.iter().map(|c| (origin(c.origin), c.seqs.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
        "seen": h.seen.iter().map(|c| (origin(c.origin), c.seqs.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
        "local_tables": h.local_tables.iter().map(|t| &t.name).collect::<Vec<_>>(),
        "views": h.views.iter().map(|v| &v.name).collect::<Vec<_>>(),
    })
}

fn print_inspect(info: &BundleInfo, file: &Path) {
    let h = &info.header;
    let origin = |i: u32| {
        h.origins
            .get(i as usize)
            .map(|o| o.name.clone())
            .unwrap_or_else(|| format!("#{i}"))
    };
    println!("bundle     {}", file.display());
    println!("from       '{}' (site id {})", h.sender.name, h.sender.id);
    println!(
        "kind       {}",
        if h.full {
            "full export".to_owned()
        } else {
            format!("delta for '{}'", h.recipient.as_deref().unwrap_or("?"))
        }
    );
    println!("created    {}", Hlc(h.created));
    match &info.end {
        Some(end) => println!("changes    {} ({} versions)", end.rows, end.versions),
        None => println!("changes    unknown"),
    }
    println!("tables");
    for (i, t) in h.tables.iter().enumerate() {
        let n = info
            .end
            .as_ref()
            .and_then(|e| e.per_table.get(i))
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into());
        let identified = match t.identity {
            fieldsync::Identity::Key => format!("key ({})", t.key.join(", ")),
            fieldsync::Identity::Column => format!("rows by {}", t.key.join(", ")),
            fieldsync::Identity::Origin => "rows by origin".to_owned(),
            fieldsync::Identity::Content => "rows by content".to_owned(),
        };
        println!(
            "  {:<24} {:>8} changes   {identified} columns ({})",
            t.name,
            n,
            t.cells.join(", ")
        );
    }
    if !h.local_tables.is_empty() {
        let names: Vec<&str> = h.local_tables.iter().map(|t| t.name.as_str()).collect();
        println!("local      {} (schema only, no rows)", names.join(", "));
    }
    if !h.views.is_empty() {
        let names: Vec<&str> = h.views.iter().map(|v| v.name.as_str()).collect();
        println!("views      {}", names.join(", "));
    }
    println!("covers");
    for c in &h.covers {
        println!("  {:<24} {}", origin(c.origin), c.seqs);
    }
    println!("sender has");
    for c in &h.seen {
        println!("  {:<24} {}", origin(c.origin), c.seqs);
    }
    match &info.problem {
        None => println!("checksum   ok"),
        Some(p) => println!("checksum   FAILED: {p}"),
    }
}
