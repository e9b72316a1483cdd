//! Who may see the console (spec/console.md, "Logging in"): the login
//! form and its check against the argon2 hash, sessions (a random 256-bit
//! id in an HttpOnly, SameSite=Strict cookie, kept in memory with an
//! expiry), the CSRF token every POST carries (one per session, compared
//! in constant time; the login form's own token is a cookie of its own
//! that the form must repeat), and logging out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{ConsoleConfig, Shared, view};

/// The session cookie's name.
pub(super) const SESSION_COOKIE: &str = "fieldsync_console";
/// The login form's token cookie.
pub(super) const LOGIN_COOKIE: &str = "fieldsync_login";
/// How long a session lasts after logging in.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most (the oldest goes first).
const MAX_SESSIONS: usize = 64;
/// How long a wrong password is answered after; logins are checked one at
/// a time, so guessing goes at most one password per this.
const WRONG_PASSWORD_DELAY: Duration = Duration::from_secs(1);

/// One logged-in browser.
struct Session {
    csrf: String,
    expires: Instant,
}

/// The state every handler shares.
#[derive(Clone)]
pub(super) struct App {
    pub(super) cfg: Shared,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    logins: Arc<tokio::sync::Mutex<()>>,
}

/// A request from a logged-in browser: its session's CSRF token, for the
/// forms the page shows.
pub(super) struct LoggedIn {
    pub(super) csrf: String,
}

impl App {
    pub(super) fn new(cfg: ConsoleConfig) -> App {
        App {
            cfg: Arc::new(cfg),
            sessions: Arc::new(Mutex::new(HashMap::new())),
            logins: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves the map as it was: usable.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The session of this request, if it has a live one.
    fn session(&self, headers: &HeaderMap) -> Option<LoggedIn> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let mut sessions = self.sessions();
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.get(&id).map(|s| LoggedIn {
            csrf: s.csrf.clone(),
        })
    }

    /// The logged-in session, or the redirect to the login page.
    #[allow(clippy::result_large_err)]
    pub(super) fn require(&self, headers: &HeaderMap) -> Result<LoggedIn, Response> {
        self.session(headers).ok_or_else(to_login)
    }

    /// For a POST: the logged-in session whose CSRF token the form
    /// carries; otherwise the redirect to the login page, or 403 (nothing
    /// is done either way).
    #[allow(clippy::result_large_err)]
    pub(super) fn require_post(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<LoggedIn, Response> {
        let who = self.require(headers)?;
        if !same_token(&who.csrf, form.get("csrf").map(String::as_str)) {
            return Err(csrf_refused());
        }
        Ok(who)
    }

    fn open_session(&self) -> Result<String, getrandom::Error> {
        let id = random_token()?;
        let csrf = random_token()?;
        let mut sessions = self.sessions();
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        while sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => sessions.remove(&k),
                None => break,
            };
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf,
                expires: now + SESSION_TTL,
            },
        );
        Ok(id)
    }
}

/// 32 random bytes from the operating system, in hex.
pub(super) fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// True if `given` is `expected`, compared in constant time.
fn same_token(expected: &str, given: Option<&str>) -> bool {
    given.is_some_and(|g| {
        !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(g.as_bytes()))
    })
}

/// The value of the cookie `name` this request carries.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The redirect to the login page (303: the browser follows with a GET).
pub(super) fn to_login() -> Response {
    redirect("/login")
}

/// A 303 redirect to `to`.
pub(super) fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

/// The answer to a POST whose CSRF token is missing or wrong.
fn csrf_refused() -> Response {
    view::page_response(
        StatusCode::FORBIDDEN,
        view::message_page(
            "Refused",
            "This form's security token is missing or out of date, so nothing was done. \
             Open the page again and repeat the action.",
        ),
    )
}

/// The login form, with a fresh form token in its cookie and field.
fn form_response(status: StatusCode, problem: Option<&str>) -> Response {
    let token = match random_token() {
        Ok(t) => t,
        Err(e) => return view::error_response(&format!("no random numbers: {e}")),
    };
    let mut resp = view::page_response(status, view::login_page(&token, problem));
    let cookie = format!("{LOGIN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/login");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /login`.
pub(super) async fn login_form(State(app): State<App>, headers: HeaderMap) -> Response {
    if app.session(&headers).is_some() {
        return redirect("/");
    }
    form_response(StatusCode::OK, None)
}

/// `POST /login`: the password against the hash; a session on success,
/// the form again with a message (after a delay) otherwise.
pub(super) async fn login(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !same_token(&expected, form.get("csrf").map(String::as_str)) {
        return form_response(
            StatusCode::FORBIDDEN,
            Some("The form was out of date (or cookies are off). Please try again."),
        );
    }
    let Some(hash) = app.cfg.password_hash.clone() else {
        return redirect("/");
    };
    let password = form.get("password").cloned().unwrap_or_default();
    // One check at a time: a wrong guess holds the next one back.
    let _turn = app.logins.lock().await;
    let verified = tokio::task::spawn_blocking(move || verify(&hash, &password)).await;
    match verified {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            tokio::time::sleep(WRONG_PASSWORD_DELAY).await;
            return form_response(StatusCode::UNAUTHORIZED, Some("Wrong password."));
        }
        Ok(Err(e)) => return view::error_response(&e),
        Err(e) => return view::error_response(&e.to_string()),
    }
    let id = match app.open_session() {
        Ok(id) => id,
        Err(e) => return view::error_response(&format!("no random numbers: {e}")),
    };
    let mut resp = redirect("/");
    let cookie = format!("{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    let spent = format!("{LOGIN_COOKIE}=; HttpOnly; SameSite=Strict; Path=/login; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&spent) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// True if `password` matches the PHC string `hash`.
fn verify(hash: &str, password: &str) -> Result<bool, String> {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let parsed = PasswordHash::new(hash).map_err(|e| format!("the stored hash: {e}"))?;
    Ok(argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

/// `POST /logout`: the session ends.
pub(super) async fn logout(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = app.require_post(&headers, &form) {
        return r;
    }
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        app.sessions().remove(&id);
    }
    let mut resp = to_login();
    let gone = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&gone) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_compared_whole() {
        assert!(same_token("abc", Some("abc")));
        assert!(!same_token("abc", Some("ab")));
        assert!(!same_token("abc", None));
        assert!(!same_token("", Some("")));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x_fieldsync_console=1; fieldsync_console=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("2"));
    }
}
