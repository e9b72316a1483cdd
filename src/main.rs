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
use fieldsync::{ExportReport, ExportTarget, ImportReport, Instance, Selection, Status};

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
    /// Set up fieldsync in a database (creating the file if needed).
    Init {
        #[command(flatten)]
        db: DbArg,
        /// A short name for this instance, such as hq or field-1.
        #[arg(long)]
        name: String,
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
    /// Check fieldsync's own state in a database; exit 1 and list problems if any.
    Check {
        #[command(flatten)]
        db: DbArg,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
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
        Command::Init { db, name } => {
            let (instance, created) = Instance::init(&db.db, &name)
                .with_context(|| format!("cannot initialise {}", db.db.display()))?;
            let site = instance.site_id()?;
            if created {
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
            json,
        } => {
            let mut instance = open(&db.db)?;
            let selection = if all {
                Selection::All
            } else {
                Selection::Named(tables)
            };
            let report = instance.track(&selection)?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            if json {
                print_json(&report)?;
            } else {
                for t in &report.tracked {
                    println!("tracking {t}");
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
                if report.tracked.is_empty() && report.already.is_empty() {
                    println!("no table was tracked.");
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
            let report = instance
                .export_to_file(&target, &output)
                .with_context(|| format!("cannot export to {}", output.display()))?;
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
            // applying any, so a damaged or foreign file in the list leaves
            // the database exactly as it was. Each file is then applied in
            // its own transaction; if one still fails (a constraint), those
            // before it stay applied and the message says which.
            for f in &files {
                let file = File::open(f).with_context(|| format!("cannot read {}", f.display()))?;
                instance
                    .check_bundle(file)
                    .with_context(|| format!("cannot import {}", f.display()))?;
            }
            let mut reports = Vec::new();
            for f in &files {
                let report = instance.import_file(f).with_context(|| {
                    if reports.is_empty() {
                        format!("cannot import {}", f.display())
                    } else {
                        let done: Vec<&str> = reports
                            .iter()
                            .map(|(f, _): &(String, ImportReport)| f.as_str())
                            .collect();
                        format!(
                            "cannot import {} (already applied: {})",
                            f.display(),
                            done.join(", ")
                        )
                    }
                })?;
                if !json {
                    print_import(&report, f);
                }
                print_import_warnings(&report);
                reports.push((f.display().to_string(), report));
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
        .filter(|t| t.applied + t.known + t.older > 0)
    {
        println!(
            "  {:<24} {:>8} applied {:>8} known {:>8} older",
            t.table, t.applied, t.known, t.older
        );
    }
}

/// Warnings go to stderr whether or not `--json` is given.
fn print_import_warnings(r: &ImportReport) {
    for (origin, seqs) in &r.gaps {
        eprintln!(
            "warning: changes {seqs} from '{origin}' have not arrived (a bundle was skipped or lost); \
             import the missing bundle if you have it, otherwise '{}' sends them again once it has \
             imported a bundle from this instance",
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
        let gaps = if o.gaps.is_empty() {
            String::new()
        } else {
            format!("   MISSING {}", o.gaps)
        };
        println!(
            "  {:<24} {}{gaps}",
            o.name,
            if o.have.is_empty() { "-" } else { &o.have }
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
            "columns": t.cells,
            "changes": info.end.as_ref().and_then(|e| e.per_table.get(i)),
        })).collect::<Vec<_>>(),
        "covers": h.covers.iter().map(|c| (origin(c.origin), c.seqs.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
        "seen": h.seen.iter().map(|c| (origin(c.origin), c.seqs.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
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
        println!(
            "  {:<24} {:>8} changes   key ({}) columns ({})",
            t.name,
            n,
            t.key.join(", "),
            t.cells.join(", ")
        );
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
