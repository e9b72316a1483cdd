//! `fieldsync init`: set up fieldsync in a database, or set up a new
//! database from a full export (`--from`).

use std::fs::File;
use std::io::{BufRead as _, IsTerminal as _, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use fieldsync::{InitReport, Instance, SetupOptions, SetupReport, signer_fingerprints};

use super::{DbArg, count, import::warn_import, shell_quote};
use crate::exit::Outcome;
use crate::progress::Meter;
use crate::ui::Ui;

/// Set up fieldsync in a database (creating the file if needed), or set up
/// a new database from a full export with --from.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync init --db hq.db --name hq\n  fieldsync init --db field-1.db --name field-1 --from hq-full.bundle --expect-key KEY"
)]
pub struct InitArgs {
    #[command(flatten)]
    db: DbArg,
    /// A short name for this instance, such as hq or field-1.
    #[arg(long)]
    name: String,
    /// A full export (`fieldsync export --full`) to create the tables from
    /// and load; the database must not have those tables yet. A full export
    /// cut into parts (`export --max-size`): give every part, in any order.
    #[arg(long, value_name = "BUNDLE", num_args = 1..)]
    from: Vec<PathBuf>,
    /// With --from: accept a full export that is not signed (written by a
    /// fieldsync older than bundle format 4). Only for a file you know
    /// comes from your HQ.
    #[arg(long, requires = "from")]
    allow_unsigned: bool,
    /// With --from: the fingerprint of your HQ, as `fieldsync key` there
    /// shows it (read over the phone): the file must be signed by HQ. On a
    /// terminal, without it, the file's fingerprint is shown and you are
    /// asked.
    #[arg(long, requires = "from", value_name = "FINGERPRINT")]
    expect_key: Option<String>,
}

pub fn cmd_init(ui: &mut Ui, args: &InitArgs) -> Result<Outcome> {
    if args.from.is_empty() {
        init(ui, args)?;
        return Ok(Outcome::Success);
    }
    // A full export in parts: joined in a temporary directory (there is no
    // database yet to keep parts beside), so every part must be given.
    let received = fieldsync::receive_parts(args.db.path(), &args.from, false)?;
    if let Some(k) = received.kept.first() {
        bail!(
            "{}, and {} missing: give every part to --from",
            k.described(),
            k.missing_words()
        );
    }
    let [bundle] = received.files.as_slice() else {
        bail!(
            "--from takes one full export (or all the parts of one), not {} bundles",
            received.files.len()
        );
    };
    let shown = match received.joined_at(bundle) {
        Some(j) => PathBuf::from(format!("{} (joined from {} parts)", j.name, j.parts)),
        None => bundle.clone(),
    };
    init_from(ui, args, bundle, &shown)?;
    Ok(Outcome::Success)
}

fn init(ui: &mut Ui, args: &InitArgs) -> Result<()> {
    let (db, name) = (args.db.path(), args.name.as_str());
    let (instance, created) =
        Instance::init(db, name).with_context(|| format!("cannot initialise {}", db.display()))?;
    let site = instance.site_id()?;
    let report = InitReport {
        instance: name.to_owned(),
        site: site.to_string(),
        created,
    };
    ui.report(&report, |out| {
        if created {
            writeln!(
                out,
                "Initialised {} as instance '{name}' (site id {site}).",
                db.display()
            )?;
            writeln!(out, "Next: fieldsync track --db {} --all", shell_quote(db))
        } else {
            writeln!(
                out,
                "{} is already instance '{name}' (site id {site}); nothing changed.",
                db.display()
            )
        }
    })
}

fn init_from(ui: &mut Ui, args: &InitArgs, bundle: &Path, shown: &Path) -> Result<()> {
    let db = args.db.path();
    let expect_key = match &args.expect_key {
        Some(key) => Some(key.clone()),
        None => confirm_signer(bundle)?,
    };
    let file = File::open(bundle).with_context(|| format!("cannot read {}", bundle.display()))?;
    let bar = Meter::new(shown, ui.bars(), "checking");
    let opts = SetupOptions {
        expect_key,
        allow_unsigned: args.allow_unsigned,
    };
    let (_, report) = Instance::init_from(db, &args.name, bar.reader(file, 2), bundle, &opts)
        .with_context(|| format!("cannot set up {} from {}", db.display(), shown.display()))?;
    bar.finish();
    warn_import(ui, &report.import)?;
    ui.report(&report, |out| print_setup(out, &report, db, &args.name))
}

/// Without --expect-key, on a terminal: show who signed the file and its
/// fingerprint, and ask. The fingerprint confirmed, or `None` (the library
/// then refuses a signed file, saying how to give it).
fn confirm_signer(bundle: &Path) -> Result<Option<String>> {
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Ok(None);
    }
    let mut file =
        File::open(bundle).with_context(|| format!("cannot read {}", bundle.display()))?;
    let signer = fieldsync::bundle::verify(&mut file)
        .with_context(|| format!("cannot set up from {}", bundle.display()))?;
    let Some(key) = signer.key else {
        return Ok(None);
    };
    let reader = fieldsync::bundle::BundleReader::open(file)
        .with_context(|| format!("cannot set up from {}", bundle.display()))?;
    let header = reader.header();
    let (both, signing) = signer_fingerprints(header, &key);
    let shown = both.unwrap_or(signing);
    let mut err = std::io::stderr();
    writeln!(
        err,
        "This file says it is a full export of '{}', signed with fingerprint\n\n    {shown}\n\nAsk HQ to read you the fingerprint `fieldsync key` shows there. Only if it is the same, this laptop will trust '{}' as its HQ.",
        header.sender.name, header.sender.name
    )?;
    write!(err, "Is it the same? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(Some(shown))
    } else {
        Err(fieldsync::Error::from(fieldsync::TrustError::NotConfirmed).into())
    }
}

fn print_setup(out: &mut dyn Write, r: &SetupReport, db: &Path, name: &str) -> std::io::Result<()> {
    writeln!(
        out,
        "Set up {} as instance '{name}' from the full export of '{}': {}, {}.",
        db.display(),
        r.from,
        count(r.tables.len() as u64, "table", "tables"),
        count(r.import.applied, "row", "rows")
    )?;
    if !r.local_tables.is_empty() {
        writeln!(
            out,
            "Created empty, as they are local to each instance (not tracked at '{}'): {}.",
            r.from,
            r.local_tables.join(", ")
        )?;
    }
    if !r.views.is_empty() {
        writeln!(out, "Created views: {}.", r.views.join(", "))?;
    }
    writeln!(
        out,
        "'{}' is a known peer: `fieldsync export --db {} --to {} -o FILE` sends it only what is done here.",
        r.from,
        shell_quote(db),
        r.from
    )
}
