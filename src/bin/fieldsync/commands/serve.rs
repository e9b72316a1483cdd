//! `fieldsync serve`: HQ's database on the network, for field instances
//! to sync with (spec/network.md). Runs until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use fieldsync::net::{ServeOptions, serve};

use super::{DbArg, shell_quote};
use crate::exit::Outcome;
use crate::ui::Ui;

/// Serve this database to field instances over HTTP(S), so they sync with
/// `fieldsync sync` when they have a link.
///
/// Only instances enrolled here (`fieldsync trust`) are answered, each
/// request signed with the instance's key; a revoked one is refused. Every
/// request is logged on stderr, one line each.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  fieldsync serve --db hq.db --listen 0.0.0.0:8470 --tls-cert hq.pem --tls-key hq.key\n  fieldsync serve --db hq.db    (127.0.0.1:8470, behind a reverse proxy)"
)]
pub struct ServeArgs {
    #[command(flatten)]
    db: DbArg,
    /// Address and port to listen on (port 0: any free one).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8470")]
    listen: String,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The largest bundle taken from a field instance, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    max_body_mib: u64,
    /// Connections open at once; more are closed at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_connections: usize,
    /// Requests one instance may make a minute.
    #[arg(long, value_name = "N", default_value_t = 240)]
    max_requests_per_minute: u32,
    /// Close a connection that moves nothing for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    idle_timeout: u64,
    /// Stop after this many requests (for tests and trials).
    #[arg(long, value_name = "N", hide = true)]
    stop_after: Option<u64>,
    /// Turn on the HQ console at / with the administrator password in
    /// this file (its first line); only its hash is kept.
    #[arg(long, value_name = "FILE")]
    admin_password_file: Option<PathBuf>,
    /// The console's password, when no file is given (only its hash is
    /// kept; the variable is read, never printed).
    #[arg(
        long = "admin-password",
        env = "FIELDSYNC_ADMIN_PASSWORD",
        hide = true,
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    admin_password: Option<String>,
    /// The console highlights instances not heard from for more than this
    /// many days.
    #[arg(long, value_name = "DAYS", default_value_t = fieldsync::console::DEFAULT_STALE_DAYS)]
    stale_days: u32,
}

/// The console's password hash from `--admin-password-file` (its first
/// line) or `FIELDSYNC_ADMIN_PASSWORD`; `None` leaves the console off.
fn console_password(args: &ServeArgs) -> Result<Option<String>> {
    let password = match (&args.admin_password_file, &args.admin_password) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file).with_context(|| {
                format!("cannot read the admin password file {}", file.display())
            })?;
            text.lines().next().unwrap_or_default().to_owned()
        }
        (None, Some(pw)) => pw.clone(),
        (None, None) => return Ok(None),
    };
    Ok(Some(fieldsync::console::hash_password(&password)?))
}

pub fn cmd_serve(ui: &mut Ui, args: &ServeArgs) -> Result<Outcome> {
    let mut opts = ServeOptions::new(args.db.path(), args.listen.clone());
    opts.tls = args.tls_cert.clone().zip(args.tls_key.clone());
    opts.max_body = args.max_body_mib.saturating_mul(1 << 20);
    opts.max_connections = args.max_connections;
    opts.requests_per_minute = args.max_requests_per_minute;
    opts.idle = Duration::from_secs(args.idle_timeout.max(1));
    opts.stop_after = args.stop_after;
    opts.console.password_hash = console_password(args)?;
    opts.console.stale_days = args.stale_days;
    let console_on = opts.console.password_hash.is_some();
    let db = shell_quote(args.db.path());
    let mut printed = Ok(());
    serve(opts, |addr, tls| {
        let url = format!("{}://{addr}", if tls { "https" } else { "http" });
        let value = fieldsync::net::Listening {
            address: addr.to_string(),
            url: url.clone(),
        };
        printed = ui
            .report(&value, |out| {
                writeln!(out, "Serving {db} at {url} (Ctrl-C stops).")?;
                writeln!(
                    out,
                    "Field instances sync with: fieldsync sync --db FIELD.db {url}"
                )?;
                if console_on {
                    writeln!(out, "The HQ console: {url}/")
                } else {
                    writeln!(
                        out,
                        "The HQ console is off (--admin-password-file FILE or FIELDSYNC_ADMIN_PASSWORD turns it on)."
                    )
                }
            })
            .and_then(|()| Ok(ui.flush()?));
    })?;
    printed?;
    Ok(Outcome::Success)
}
