//! The command line: the argument tree and [`run`], which hands each
//! subcommand to its own file. Every file below holds one subcommand: its
//! `XArgs` (what clap parses) and its `cmd_x` (call the library, print the
//! report through [`Ui`], say how it ended). Nothing here decides an exit
//! status ([`crate::exit`] does) or knows the engine's internals.

mod check;
mod compact;
mod conflicts;
mod demo;
mod export;
mod fingerprint;
mod import;
mod init;
mod inspect;
mod journal;
mod key;
mod peer;
mod revoke;
mod schema;
mod serve;
mod shipping;
mod status;
mod sync;
mod track;
mod trust;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use fieldsync::Instance;

use crate::exit::Outcome;
use crate::ui::Ui;

/// Replicate SQLite databases by exchanging bundle files.
///
/// Typical use: `init` each database once, `track` its tables, then
/// `export --to PEER -o FILE` on one side and `import FILE` on the other,
/// as often as you like. Re-importing never creates duplicates.
#[derive(Parser)]
#[command(name = "fieldsync", version, about, max_term_width = 100,
          after_help = crate::exit::EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print no report (errors and warnings still go to stderr; --json
    /// output is still printed).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    Init(init::InitArgs),
    Track(track::TrackArgs),
    Export(export::ExportArgs),
    Import(import::ImportArgs),
    Status(status::StatusArgs),
    Inspect(inspect::InspectArgs),
    Conflicts(conflicts::ConflictsArgs),
    Check(check::CheckArgs),
    Fingerprint(fingerprint::FingerprintArgs),
    Demo(demo::DemoArgs),
    Compact(compact::CompactArgs),
    Schema(schema::SchemaArgs),
    Key(key::KeyArgs),
    Trust(trust::TrustArgs),
    Revoke(revoke::RevokeArgs),
    Serve(serve::ServeArgs),
    Sync(sync::SyncArgs),
    /// Send what the server lacks (no changes taken back).
    Push(sync::SyncArgs),
    /// Take what this instance lacks from the server (none sent).
    Pull(sync::SyncArgs),
    Peer(peer::PeerArgs),
    Journal(journal::JournalArgs),
    Completions(shipping::CompletionsArgs),
    Man(shipping::ManArgs),
}

/// The database a command works on.
#[derive(Args)]
struct DbArg {
    /// The app's SQLite database file.
    #[arg(long, value_name = "PATH", env = "FIELDSYNC_DB")]
    db: PathBuf,
}

impl DbArg {
    fn path(&self) -> &Path {
        &self.db
    }

    /// Open the instance in this database.
    fn open(&self) -> Result<Instance> {
        Ok(Instance::open(&self.db)?)
    }
}

/// Run the parsed command line, printing through `ui`.
pub fn run(cli: &Cli, ui: &mut Ui) -> Result<Outcome> {
    match &cli.command {
        Command::Init(args) => init::cmd_init(ui, args),
        Command::Track(args) => track::cmd_track(ui, args),
        Command::Export(args) => export::cmd_export(ui, args),
        Command::Import(args) => import::cmd_import(ui, args),
        Command::Status(args) => status::cmd_status(ui, args),
        Command::Inspect(args) => inspect::cmd_inspect(ui, args),
        Command::Conflicts(args) => conflicts::cmd_conflicts(ui, args),
        Command::Check(args) => check::cmd_check(ui, args),
        Command::Fingerprint(args) => fingerprint::cmd_fingerprint(ui, args),
        Command::Demo(args) => demo::cmd_demo(ui, args),
        Command::Compact(args) => compact::cmd_compact(ui, args),
        Command::Schema(args) => schema::cmd_schema(ui, args),
        Command::Key(args) => key::cmd_key(ui, args),
        Command::Trust(args) => trust::cmd_trust(ui, args),
        Command::Revoke(args) => revoke::cmd_revoke(ui, args),
        Command::Serve(args) => serve::cmd_serve(ui, args),
        Command::Sync(args) => sync::cmd_sync(ui, args, fieldsync::net::Direction::Sync),
        Command::Push(args) => sync::cmd_sync(ui, args, fieldsync::net::Direction::Push),
        Command::Pull(args) => sync::cmd_sync(ui, args, fieldsync::net::Direction::Pull),
        Command::Peer(args) => peer::cmd_peer(ui, args),
        Command::Journal(args) => journal::cmd_journal(ui, args),
        Command::Completions(args) => shipping::cmd_completions(ui, args),
        Command::Man(args) => shipping::cmd_man(ui, args),
    }
}

/// A path as it can be pasted into a shell, for the commands the output
/// suggests.
fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars().all(|c| c.is_alphanumeric() || "-_./".contains(c)) {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A count and its noun, singular for exactly one: `1 change`,
/// `2 changes`, `0 changes`.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A time (unix ms) to the minute, or `never`.
fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "never".to_owned())
}
