//! `fieldsync sync`, `push` and `pull`: one exchange with a server started
//! by `fieldsync serve` (spec/network.md). A cut transfer resumes, in this
//! run or the next.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use fieldsync::net::{Direction, SyncOptions, SyncReport, sync};

use super::{DbArg, count};
use crate::exit::Outcome;
use crate::progress::NetMeter;
use crate::ui::Ui;

/// Exchange with a server: send what it lacks, take what this instance lacks.
///
/// The server is a URL, or the name of a peer whose URL was remembered with
/// `fieldsync peer add`; with none, the one remembered. Run it again after a
/// cut: it resumes where it stopped, and nothing is applied twice.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync sync --db field.db https://hq.example.org:8470\n  fieldsync peer add --db field.db hq https://hq.example.org:8470\n  fieldsync sync --db field.db"
)]
pub struct SyncArgs {
    #[command(flatten)]
    db: DbArg,
    /// The server: a URL, or a peer name given to `fieldsync peer add`.
    #[arg(value_name = "SERVER")]
    server: Option<String>,
    /// PEM certificate(s) to trust for an HTTPS server with its own CA.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Give up a connection that moves nothing for this many seconds (it is
    /// then tried again).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    /// Tries of each step before giving up.
    #[arg(long, value_name = "N", default_value_t = 5)]
    tries: usize,
    /// The largest answer taken from the server, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    max_body_mib: u64,
}

pub fn cmd_sync(ui: &mut Ui, args: &SyncArgs, direction: Direction) -> Result<Outcome> {
    let mut instance = args.db.open()?;
    let mut opts = SyncOptions::new(direction);
    opts.server = args.server.clone();
    opts.ca_cert = args.ca_cert.clone();
    opts.timeout = Duration::from_secs(args.timeout.max(1));
    opts.tries = args.tries.max(1);
    opts.max_body = args.max_body_mib.saturating_mul(1 << 20);
    let meter = NetMeter::new(ui.bars());
    let result = sync(&mut instance, &opts, &mut |stage, done, total| {
        meter.set(stage, done, total)
    });
    meter.finish();
    let report = result?;
    ui.report(&report, |out| print_sync(out, &report))?;
    if let Some(import) = &report.import {
        for w in &import.warnings {
            ui.warn(w)?;
        }
    }
    Ok(match &report.import {
        Some(import) if import.quarantined > 0 => Outcome::Quarantined,
        _ => Outcome::Success,
    })
}

fn print_sync(out: &mut dyn Write, r: &SyncReport) -> std::io::Result<()> {
    if r.direction != Direction::Pull {
        let what = match r.sent_changes {
            Some(n) => count(n, "change", "changes"),
            None => "the bundle left by the cut run".to_owned(),
        };
        let resumed = if r.upload_resumed_from > 0 {
            format!(", resumed at byte {}", r.upload_resumed_from)
        } else {
            String::new()
        };
        write!(
            out,
            "Sent {what} to '{}' ({} bytes{resumed})",
            r.server, r.sent_bytes
        )?;
        match &r.server_import {
            Some(s) => writeln!(
                out,
                ": it applied {}, knew {}, had newer {}{}.",
                s.applied,
                s.known,
                s.older,
                if s.quarantined > 0 {
                    format!(", held {} in quarantine", s.quarantined)
                } else {
                    String::new()
                }
            )?,
            None => writeln!(out, ".")?,
        }
    }
    if let Some(i) = &r.import {
        if r.direction != Direction::Push || i.changes > 0 {
            let resumed = if r.download_resumed_from > 0 {
                format!(", resumed at byte {}", r.download_resumed_from)
            } else {
                String::new()
            };
            writeln!(
                out,
                "Received {} from '{}' ({} bytes{resumed}): applied {}, already had {}, older {}{}.",
                count(i.changes, "change", "changes"),
                r.server,
                r.received_bytes,
                i.applied,
                i.known,
                i.older,
                if i.quarantined > 0 {
                    format!(
                        ", {} held in quarantine (`fieldsync conflicts`)",
                        i.quarantined
                    )
                } else {
                    String::new()
                }
            )?;
        }
    }
    if r.retries > 0 {
        writeln!(
            out,
            "The link failed {} and the transfer went on.",
            count(u64::from(r.retries), "time", "times")
        )?;
    }
    Ok(())
}
