//! `fieldsync peer`: the servers this instance syncs with, remembered by
//! name so an officer types `fieldsync sync --db field.db`.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::DbArg;
use crate::exit::Outcome;
use crate::ui::Ui;

/// Remember, list or forget the address of a server to sync with.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync peer add --db field.db hq https://hq.example.org:8470\n  fieldsync peer list --db field.db\n  fieldsync peer remove --db field.db hq"
)]
pub struct PeerArgs {
    #[command(subcommand)]
    action: PeerAction,
}

#[derive(Subcommand)]
enum PeerAction {
    /// Remember the URL of a server (replacing one remembered before).
    Add {
        #[command(flatten)]
        db: DbArg,
        /// A name for it: the server instance's name, e.g. `hq`.
        name: String,
        /// Its address, e.g. https://hq.example.org:8470.
        url: String,
    },
    /// List the remembered servers.
    List {
        #[command(flatten)]
        db: DbArg,
    },
    /// Forget a server's address.
    Remove {
        #[command(flatten)]
        db: DbArg,
        /// Its name.
        name: String,
    },
}

pub fn cmd_peer(ui: &mut Ui, args: &PeerArgs) -> Result<Outcome> {
    match &args.action {
        PeerAction::Add { db, name, url } => {
            let instance = db.open()?;
            let remote = fieldsync::net::remember(&instance, name, url)?;
            ui.report(&remote, |out| {
                writeln!(
                    out,
                    "Remembered '{}' at {}: `fieldsync sync --db {}` syncs with it.",
                    remote.name,
                    remote.url,
                    super::shell_quote(db.path())
                )
            })?;
        }
        PeerAction::List { db } => {
            let all = fieldsync::net::remembered(&db.open()?)?;
            let all = fieldsync::net::Remotes { servers: all };
            ui.report(&all, |out| {
                let all = &all.servers;
                if all.is_empty() {
                    return writeln!(out, "No server remembered (`fieldsync peer add`).");
                }
                for r in all {
                    writeln!(out, "{}\t{}", r.name, r.url)?;
                }
                Ok(())
            })?;
        }
        PeerAction::Remove { db, name } => {
            let had = fieldsync::net::forget(&db.open()?, name)?;
            if !had {
                anyhow::bail!(
                    "no server is remembered as '{name}'; `fieldsync peer list --db {}` lists them",
                    super::shell_quote(db.path())
                );
            }
            let forgotten = fieldsync::net::Forgotten {
                server: name.clone(),
            };
            ui.report(&forgotten, |out| writeln!(out, "Forgot '{name}'."))?;
        }
    }
    Ok(Outcome::Success)
}
