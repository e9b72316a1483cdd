//! The HQ console (spec/console.md): web pages where the HQ administrator
//! sees every field instance, what each is owed, the sync journal, what
//! needs a person (the quarantine, overwritten values) and the data, and
//! retries or discards held changes. [`router`] builds the pages for
//! `fieldsync serve` (or a test) to serve; it owns the routes and the
//! state they share. Logins, sessions and CSRF are [`auth`]'s, the pages
//! [`pages`]', their HTML [`view`]'s and the activity chart [`chart`]'s.
//!
//! Every database read or write runs on a blocking thread with an
//! [`Instance`](crate::Instance) opened for that request alone; no SQL is
//! ever made from a request's text (a typed key is a bound value).

mod auth;
mod chart;
mod pages;
mod view;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::Error;
use crate::error::ConsoleError;

/// What the console needs to run.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The HQ database.
    pub db: PathBuf,
    /// The administrator password's argon2 hash (a PHC string, see
    /// [`hash_password`]); `None` turns the console off: `/` then says how
    /// to turn it on.
    pub password_hash: Option<String>,
    /// Instances not heard from in more than this many days are
    /// highlighted on the Instances page.
    pub stale_days: u32,
}

/// The default of [`ConsoleConfig::stale_days`] (`serve --stale-days`).
pub const DEFAULT_STALE_DAYS: u32 = 7;

/// Hash an administrator password for [`ConsoleConfig::password_hash`]:
/// argon2id with a random salt, as a PHC string. Only the hash is kept;
/// an empty password is refused. Surrounding white space and a final line
/// break (a password file) are the caller's to remove.
pub fn hash_password(pw: &str) -> Result<String, Error> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    if pw.is_empty() {
        return Err(ConsoleError::EmptyPassword.into());
    }
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| {
            ConsoleError::Password {
                detail: e.to_string(),
            }
            .into()
        })
}

/// The console's pages, for `fieldsync serve` to mount at `/`: `/`
/// (Instances), `/activity`, `/quarantine` (Needs a person), `/data`,
/// `/login`, `/logout` and the quarantine's actions. Without a password
/// hash every page says how to turn the console on.
pub fn router(cfg: ConsoleConfig) -> Router {
    let app = auth::App::new(cfg);
    if app.cfg.password_hash.is_none() {
        return Router::new()
            .route("/", get(pages::console_off))
            .fallback(pages::console_off_elsewhere)
            .with_state(app);
    }
    Router::new()
        .route("/", get(pages::instances))
        .route("/activity", get(pages::activity))
        .route("/quarantine", get(pages::quarantine))
        .route("/quarantine/retry", post(pages::retry))
        .route("/quarantine/discard", post(pages::discard))
        .route("/data", get(pages::data))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .fallback(pages::not_found)
        .with_state(app)
}

/// Run `f` on a blocking thread with the console's database opened for it.
async fn with_db<T, F>(app: &auth::App, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(&mut crate::Instance) -> Result<T, Error> + Send + 'static,
{
    let db = app.cfg.db.clone();
    tokio::task::spawn_blocking(move || {
        let mut instance = crate::Instance::open(&db)?;
        f(&mut instance)
    })
    .await
    .map_err(|e| {
        ConsoleError::Task {
            detail: e.to_string(),
        }
        .into()
    })
    .and_then(|r| r)
}

/// Shared by the console's parts: the configuration, once.
type Shared = Arc<ConsoleConfig>;
