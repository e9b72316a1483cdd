//! `fieldsync export`: write a bundle file for a peer (`--to`) or of
//! everything (`--full`), encrypted to its recipients unless `--no-encrypt`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use fieldsync::{ExportOptions, ExportReport, ExportTarget, Overwrite};

use super::{DbArg, count};
use crate::exit::Outcome;
use crate::progress::Meter;
use crate::ui::Ui;

/// Write a bundle file: what a peer lacks (--to) or everything (--full).
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync export --db field-1.db --to hq -o field-1-week1.bundle\n  fieldsync export --db hq.db --full --no-encrypt --max-size 10MB -o hq-full.bundle\n  fieldsync export --db hq.db --to field-1 -o - | ssh field-1 fieldsync import --db app.db -"
)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to", "full"])))]
pub struct ExportArgs {
    #[command(flatten)]
    db: DbArg,
    /// The instance that will import the bundle (its name or site id).
    #[arg(long, value_name = "PEER", conflicts_with = "full")]
    to: Option<String>,
    /// Include changes already sent but not yet acknowledged, when nothing
    /// has come back from the peer (a bundle it reports missing goes again
    /// without this).
    #[arg(long, requires = "to")]
    resend: bool,
    /// Overwrite the output file even if it is a bundle holding changes its
    /// recipient has not acknowledged (a bundle of ours to the same peer is
    /// then carried again in the new one).
    #[arg(long)]
    force: bool,
    /// Export the whole current state (tables, indexes, views and rows), to
    /// set up new instances from with `fieldsync init --from FILE`.
    #[arg(long)]
    full: bool,
    /// With --full: the instances that will be set up from this file
    /// (names, comma-separated or repeated). It counts as sent to them, so
    /// the first `export --to` one of them carries only what changed after
    /// it, not every row again. A name not known yet becomes a peer. If an
    /// instance was set up from another file, its first bundle back says so
    /// (by what it has) and the next export sends what it lacks.
    #[arg(
        long = "for",
        value_name = "PEER",
        conflicts_with = "to",
        value_delimiter = ','
    )]
    for_peers: Vec<String>,
    /// Write the signed bundle unencrypted. By default a bundle is
    /// encrypted to its recipient's key (--to) or to the keys of the
    /// instances named with --for; a full export that sets up a new laptop
    /// (which has no key yet) needs this, and must then travel by hand.
    #[arg(long)]
    no_encrypt: bool,
    /// The bundle file to write; `-` writes the bundle to stdout (and the
    /// report to stderr), to pipe it into `fieldsync import -`.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// Cut a bundle larger than this into parts that each fit an e-mail
    /// attachment: FILE.part1of3.bundle, ... (`10MB` = 10,000,000 bytes,
    /// `10MiB` = 10,485,760; at least 64KiB). Import the parts in any order,
    /// together or as they come: the bundle is applied once all are there.
    /// A bundle that fits is written as one file.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_size: Option<u64>,
}

/// `10MB`, `25MiB`, `500k`, `1048576`.
fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("'{text}' is not a size; write it like 10MB, 25MiB or 500KB"))
}

pub fn cmd_export(ui: &mut Ui, args: &ExportArgs) -> Result<Outcome> {
    let mut instance = args.db.open()?;
    let target = match (&args.to, args.full) {
        (_, true) if args.for_peers.is_empty() => ExportTarget::Full,
        (_, true) => ExportTarget::FullFor {
            peers: args.for_peers.clone(),
        },
        (Some(to), false) => ExportTarget::Peer {
            to: to.clone(),
            resend: args.resend,
        },
        (None, false) => {
            bail!("say who the bundle is for with --to PEER, or use --full for everything")
        }
    };
    let to_stdout = args.output.as_os_str() == "-";
    if let Some(max) = args.max_size {
        if to_stdout {
            bail!(
                "--max-size writes parts to files named after -o FILE; it cannot split a bundle sent to stdout"
            );
        }
        if max < fieldsync::bundle::parts::MIN_PART_SIZE {
            bail!(
                "--max-size {max} is too small: each part needs at least 64KiB; e-mail limits are usually 10MB to 25MB"
            );
        }
        // Parts of an earlier bundle under the same name would be mixed up
        // with the new ones (or overwritten before they were delivered).
        if !args.force {
            if let Some(old) = fieldsync::bundle::parts::earlier_parts(&args.output)?.first() {
                bail!(
                    "{} is a part of an earlier bundle written to the same name; import or move the earlier parts first, or pass --force to replace them",
                    old.display()
                );
            }
        }
    }
    // `-o -`: the bundle is written beside the database, committed as a
    // file export is, then copied to stdout and removed (so no bundle goes
    // out whose export was rolled back); the report goes to stderr.
    let spool = if to_stdout {
        ui.report_on_stderr();
        Some(spool_dir(args.db.path())?)
    } else {
        None
    };
    let spooled = spool.as_ref().map(|dir| dir.path().join("stdout.bundle"));
    let output = spooled.as_ref().unwrap_or(&args.output);
    let bar = Meter::new(output, ui.bars(), "exporting");
    let overwrite = if args.force {
        Overwrite::Force
    } else {
        Overwrite::IfDelivered
    };
    let opts = ExportOptions {
        overwrite,
        encrypt: !args.no_encrypt,
        ..ExportOptions::default()
    };
    let report = instance
        .export_to_file_with(&target, output, &opts, &mut |done, total| {
            bar.set(done, total)
        })
        .with_context(|| format!("cannot export to {}", args.output.display()))?;
    bar.finish();
    if spool.is_some() {
        let mut file = std::fs::File::open(output)
            .with_context(|| format!("cannot read back {}", output.display()))?;
        let out = ui.product();
        std::io::copy(&mut file, out).context("cannot write the bundle to stdout")?;
        out.flush().context("cannot write the bundle to stdout")?;
    }
    if report.new_peer {
        let peer = report.peer.as_deref().unwrap_or_default();
        let known = if report.known_peers.is_empty() {
            " (no other peers are known yet).".to_owned()
        } else {
            format!(
                "; known peers are {}. If you meant one of those, check the spelling.",
                report.known_peers.join(", ")
            )
        };
        ui.note(format_args!(
            "'{peer}' is a new peer, so it gets everything{known} If it was set up from a full \
             export, name it when writing that file (`export --full --for {peer}`): the first \
             bundle to it then carries only what changed after it."
        ))?;
    }
    if !report.new_peers.is_empty() {
        let known = if report.known_peers.is_empty() {
            "no other peers are known yet".to_owned()
        } else {
            format!(
                "known peers are {}; if you meant one of those, check the spelling",
                report.known_peers.join(", ")
            )
        };
        ui.note(format_args!(
            "new {} {}: set {} up from this file with `fieldsync init --from` ({known}).",
            if report.new_peers.len() == 1 {
                "peer"
            } else {
                "peers"
            },
            report.new_peers.join(", "),
            if report.new_peers.len() == 1 {
                "it"
            } else {
                "each"
            }
        ))?;
    }
    for w in &report.warnings {
        ui.warn(w)?;
    }
    let shown = if to_stdout {
        Path::new("stdout")
    } else {
        output.as_path()
    };
    let mut report = report;
    if let Some(max) = args.max_size {
        report.parts = fieldsync::bundle::parts::split_file(output, max, args.force)
            .with_context(|| format!("cannot cut {} into parts", output.display()))?;
    }
    let parts = &report.parts;
    ui.report(&report, |out| {
        print_export(out, &report, shown)?;
        if !parts.is_empty() {
            writeln!(
                out,
                "cut into {} parts of at most {} each (send them all; import them in any order):",
                parts.len(),
                human_bytes(args.max_size.unwrap_or_default())
            )?;
            for p in parts {
                writeln!(out, "  {} ({})", p.file.display(), human_bytes(p.bytes))?;
            }
        }
        Ok(())
    })?;
    Ok(Outcome::Success)
}

/// A private directory beside the database, for a bundle on its way to
/// stdout (the same disk, so a bundle the database can hold fits), removed
/// when dropped.
fn spool_dir(db: &Path) -> Result<tempfile::TempDir> {
    let dir = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".fieldsync-stdout-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot make a temporary directory in {}", dir.display()))
}

fn print_export(out: &mut dyn Write, r: &ExportReport, output: &Path) -> std::io::Result<()> {
    let what = match &r.peer {
        Some(p) => format!("for '{p}'"),
        None if r.setup_for.is_empty() => "full export".to_owned(),
        None => format!("full export for {}", quoted(&r.setup_for)),
    };
    let what = if r.encrypted_for.is_empty() {
        format!("{what}, not encrypted")
    } else {
        format!("{what}, encrypted for {}", quoted(&r.encrypted_for))
    };
    writeln!(
        out,
        "wrote {} ({what}): {}{}, {}.",
        output.display(),
        count(r.changes, "change", "changes"),
        per_table(r),
        human_bytes(r.bytes)
    )?;
    if r.changes == 0 && r.peer.is_some() {
        writeln!(
            out,
            "nothing new to send; the bundle still carries this instance's acknowledgements."
        )?;
    }
    Ok(())
}

/// `'field-1', 'field-2'`.
fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// ` (person 3, place 1)`: the tables with changes, or nothing.
fn per_table(r: &ExportReport) -> String {
    let parts: Vec<String> = r
        .tables
        .iter()
        .filter(|t| t.changes > 0)
        .map(|t| format!("{} {}", t.table, t.changes))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
    }
}
