//! The HQ console (spec/console.md) and the sync journal it shows: the
//! handlers driven in-process with `tower::ServiceExt::oneshot` (logging
//! in, refusals, CSRF, Retry and Discard, the Instances page's numbers
//! against `status --json`), the journal through `fieldsync journal`, and
//! a real browser (tests/console_browser.rs).

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fieldsync::console::{ConsoleConfig, hash_password, router};
use serde_json::Value as Json;
use tower::ServiceExt;

use crate::util::*;

/// The app's schema in these tests: a UNIQUE code two instances can both
/// take, so a change is held ('unique') until someone renames one.
pub const SCHEMA: &str = "CREATE TABLE site(id TEXT PRIMARY KEY, code TEXT UNIQUE, name TEXT);";

/// The administrator password of the test consoles.
pub const PASSWORD: &str = "correct horse battery staple";

/// HQ with two field instances: field-1's two rows are held at HQ (their
/// codes 'A' and 'C' are HQ's too), field-2's row was applied, and HQ
/// exported to field-2 a bundle it has not imported.
pub struct Demo {
    pub w: World,
    pub hq: Site,
    pub f1: Site,
    pub f2: Site,
}

pub fn demo() -> Res<Demo> {
    let w = World::new()?;
    let (hq, f1, f2) = w.three(SCHEMA)?;
    f1.sql("INSERT INTO site VALUES ('f1', 'A', 'Field school'), ('f1b', 'C', 'Field clinic');")?;
    hq.sql("INSERT INTO site VALUES ('h1', 'A', 'HQ school'), ('h3', 'C', 'HQ clinic');")?;
    f2.sql("INSERT INTO site VALUES ('f2', 'B', 'Village hall');")?;
    w.send(&f1, &hq)?;
    w.send(&f2, &hq)?;
    let unread = w.bundle("hq-to-field-2-unread");
    hq.export_to("field-2", &unread)?;
    assert_eq!(held(&hq)?.len(), 2, "the demo holds field-1's two rows");
    Ok(Demo { w, hq, f1, f2 })
}

fn runtime() -> Res<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A browser's view of an in-process console: its cookies.
pub struct Client {
    app: Router,
    cookies: HashMap<String, String>,
}

/// A response: status, `Location`, body.
pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
}

/// `application/x-www-form-urlencoded` of `fields`.
pub fn form(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of the first `name="csrf"` field of a page.
pub fn csrf_of(html: &str) -> Res<String> {
    let at = html
        .find(r#"name="csrf" value=""#)
        .ok_or("the page has no csrf field")?;
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    Ok(rest[..rest.find('"').ok_or("unterminated")?].to_owned())
}

impl Client {
    pub fn new(cfg: ConsoleConfig) -> Client {
        Client {
            app: router(cfg),
            cookies: HashMap::new(),
        }
    }

    async fn send(&mut self, req: Request<Body>) -> Res<Page> {
        let resp = self.app.clone().oneshot(req).await?;
        for v in resp.headers().get_all(header::SET_COOKIE) {
            let v = v.to_str()?;
            let pair = v.split(';').next().unwrap_or_default();
            if let Some((k, val)) = pair.split_once('=') {
                if val.is_empty() || v.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), val.to_owned());
                }
            }
        }
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(resp.into_body(), 4 << 20).await?;
        Ok(Page {
            status,
            location,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn get(&mut self, path: &str) -> Res<Page> {
        let req = Request::get(path)
            .header(header::COOKIE, self.cookie_header())
            .body(Body::empty())?;
        self.send(req).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Res<Page> {
        let req = Request::post(path)
            .header(header::COOKIE, self.cookie_header())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form(fields)))?;
        self.send(req).await
    }

    /// Log in with `password`; the login's answer.
    pub async fn login(&mut self, password: &str) -> Res<Page> {
        let page = self.get("/login").await?;
        assert_eq!(page.status, StatusCode::OK);
        let token = csrf_of(&page.body)?;
        self.post("/login", &[("csrf", &token), ("password", password)])
            .await
    }

    /// The CSRF token the session's pages carry.
    pub async fn csrf(&mut self) -> Res<String> {
        csrf_of(&self.get("/quarantine").await?.body)
    }
}

fn config(site: &Site) -> Res<ConsoleConfig> {
    Ok(ConsoleConfig {
        db: site.db.clone(),
        password_hash: Some(hash_password(PASSWORD)?),
        stale_days: 7,
    })
}

/// A client logged in to the console of `site`.
async fn logged_in(site: &Site) -> Res<Client> {
    let mut c = Client::new(config(site)?);
    let page = c.login(PASSWORD).await?;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some("/"));
    Ok(c)
}

#[test]
fn every_page_redirects_to_the_login_page_when_not_logged_in() -> Res {
    let d = demo()?;
    runtime()?.block_on(async {
        let mut c = Client::new(config(&d.hq)?);
        for path in [
            "/",
            "/activity",
            "/quarantine",
            "/data",
            "/data?table=site&key=f1",
        ] {
            let page = c.get(path).await?;
            assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
            assert_eq!(page.location.as_deref(), Some("/login"), "{path}");
        }
        // Actions too, and nothing is done.
        let page = c.post("/quarantine/retry", &[("csrf", "x")]).await?;
        assert_eq!(page.location.as_deref(), Some("/login"));
        let page = c.get("/login").await?;
        assert!(page.body.contains(r#"name="password""#), "{}", page.body);
        assert!(page.body.contains(r#"<html lang="en">"#));
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    assert_eq!(held(&d.hq)?.len(), 2);
    Ok(())
}

#[test]
fn a_wrong_password_is_answered_with_the_form_and_a_message() -> Res {
    let d = demo()?;
    runtime()?.block_on(async {
        let mut c = Client::new(config(&d.hq)?);
        let page = c.login("not it").await?;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert!(page.body.contains("Wrong password"), "{}", page.body);
        assert!(page.body.contains(r#"name="password""#));
        assert!(!c.cookies.contains_key("fieldsync_console"));
        assert_eq!(c.get("/").await?.location.as_deref(), Some("/login"));
        // The right one then works.
        let page = c.login(PASSWORD).await?;
        assert_eq!(page.location.as_deref(), Some("/"));
        assert_eq!(c.get("/").await?.status, StatusCode::OK);
        Ok(())
    })
}

#[test]
fn a_login_without_its_form_token_is_refused() -> Res {
    let d = demo()?;
    runtime()?.block_on(async {
        let mut c = Client::new(config(&d.hq)?);
        let page = c.post("/login", &[("password", PASSWORD)]).await?;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert!(!c.cookies.contains_key("fieldsync_console"));
        Ok(())
    })
}

#[test]
fn the_session_cookie_is_http_only_and_same_site_strict() -> Res {
    let d = demo()?;
    runtime()?.block_on(async {
        let app = router(config(&d.hq)?);
        let resp = app
            .clone()
            .oneshot(Request::get("/login").body(Body::empty())?)
            .await?;
        let login_cookie = resp
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let csp = resp
            .headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await?;
        let token = csrf_of(&String::from_utf8_lossy(&body))?;
        let pair = login_cookie
            .split(';')
            .next()
            .unwrap_or_default()
            .to_owned();
        let resp = app
            .oneshot(
                Request::post("/login")
                    .header(header::COOKIE, pair)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(form(&[
                        ("csrf", &token),
                        ("password", PASSWORD),
                    ])))?,
            )
            .await?;
        let session = resp
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("fieldsync_console="))
            .ok_or("no session cookie")?
            .to_owned();
        for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(session.contains(part), "{session}");
        }
        // 256 bits in hex.
        let id = session["fieldsync_console=".len()..]
            .split(';')
            .next()
            .unwrap_or_default();
        assert_eq!(id.len(), 64);
        Ok(())
    })
}

#[test]
fn without_a_password_the_console_is_off_and_says_how_to_turn_it_on() -> Res {
    let d = demo()?;
    runtime()?.block_on(async {
        let mut c = Client::new(ConsoleConfig {
            db: d.hq.db.clone(),
            password_hash: None,
            stale_days: 7,
        });
        for path in ["/", "/quarantine", "/login"] {
            let page = c.get(path).await?;
            // Only / is a page; elsewhere (the API's unknown paths too) 404.
            let expected = if path == "/" {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            assert_eq!(page.status, expected, "{path}");
            assert!(page.body.contains("--admin-password-file"), "{}", page.body);
            assert!(page.body.contains("FIELDSYNC_ADMIN_PASSWORD"));
        }
        let page = c.post("/quarantine/retry", &[]).await?;
        assert!(page.body.contains("console is off"), "{}", page.body);
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    assert_eq!(held(&d.hq)?.len(), 2);
    Ok(())
}

#[test]
fn a_post_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing() -> Res {
    let d = demo()?;
    // A retry would now release field-1's row 'f1'.
    d.hq.sql("UPDATE site SET code = 'A-hq' WHERE id = 'h1';")?;
    runtime()?.block_on(async {
        let mut c = logged_in(&d.hq).await?;
        let wrong = "0".repeat(64);
        for fields in [vec![], vec![("csrf", wrong.as_str())]] {
            let page = c.post("/quarantine/retry", &fields).await?;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
            let mut discard = fields.clone();
            discard.extend([("id", "1"), ("confirm", "yes"), ("by", "Mallory")]);
            let page = c.post("/quarantine/discard", &discard).await?;
            assert_eq!(page.status, StatusCode::FORBIDDEN);
            let page = c.post("/logout", &fields).await?;
            assert_eq!(page.status, StatusCode::FORBIDDEN);
        }
        // Still logged in.
        assert_eq!(c.get("/").await?.status, StatusCode::OK);
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    assert_eq!(
        held(&d.hq)?.len(),
        2,
        "a refused POST changed the quarantine"
    );
    let discarded = fieldsync_ok(&[&"conflicts", &"--db", &d.hq.db, &"--json"])?.json()?;
    assert_eq!(discarded["discarded"].as_array().map(Vec::len), Some(0));
    Ok(())
}

#[test]
fn discard_without_confirmation_discards_nothing() -> Res {
    let d = demo()?;
    let first = held(&d.hq)?[0]["id"].as_i64().ok_or("no id")?.to_string();
    runtime()?.block_on(async {
        let mut c = logged_in(&d.hq).await?;
        let csrf = c.csrf().await?;
        // The Discard button: a confirmation page.
        let page = c
            .post("/quarantine/discard", &[("csrf", &csrf), ("id", &first)])
            .await?;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains(r#"name="confirm""#), "{}", page.body);
        assert!(page.body.contains(r#"name="by""#));
        assert_eq!(held(&d.hq)?.len(), 2);
        // Confirmed without a name, or named without the box: nothing.
        let page = c
            .post(
                "/quarantine/discard",
                &[("csrf", &csrf), ("id", &first), ("confirm", "yes")],
            )
            .await?;
        assert!(page.body.contains("Tick the box"), "{}", page.body);
        let page = c
            .post(
                "/quarantine/discard",
                &[("csrf", &csrf), ("id", &first), ("by", "Ann")],
            )
            .await?;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(held(&d.hq)?.len(), 2);
        // Both: discarded, and who did it is recorded.
        let page = c
            .post(
                "/quarantine/discard",
                &[
                    ("csrf", &csrf),
                    ("id", &first),
                    ("confirm", "yes"),
                    ("by", "Ann"),
                ],
            )
            .await?;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        assert_eq!(page.location.as_deref(), Some("/quarantine?discarded=1"));
        let page = c.get("/quarantine?discarded=1").await?;
        assert!(page.body.contains("Discarded 1 held change"));
        assert!(page.body.contains("console: Ann"));
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    assert_eq!(held(&d.hq)?.len(), 1);
    let out = fieldsync_ok(&[&"conflicts", &"--db", &d.hq.db, &"--json"])?.json()?;
    assert_eq!(out["discarded"][0]["discarded_by"], "console: Ann");
    assert_eq!(out["discarded"][0]["entry"].to_string(), first);
    Ok(())
}

#[test]
fn retry_applies_what_now_fits_and_the_count_falls() -> Res {
    let d = demo()?;
    runtime()?.block_on(async {
        let mut c = logged_in(&d.hq).await?;
        let page = c.get("/quarantine").await?;
        assert!(page.body.contains(r#"data-count="2""#), "{}", page.body);
        // Nothing fits yet: the count stays.
        let csrf = c.csrf().await?;
        let page = c.post("/quarantine/retry", &[("csrf", &csrf)]).await?;
        assert_eq!(
            page.location.as_deref(),
            Some("/quarantine?retried=2&released=0")
        );
        // HQ renames its own 'A': field-1's 'f1' fits.
        d.hq.sql("UPDATE site SET code = 'A-hq' WHERE id = 'h1';")?;
        let page = c.post("/quarantine/retry", &[("csrf", &csrf)]).await?;
        assert_eq!(
            page.location.as_deref(),
            Some("/quarantine?retried=2&released=1")
        );
        let page = c.get("/quarantine?retried=2&released=1").await?;
        assert!(page.body.contains(r#"data-count="1""#), "{}", page.body);
        assert!(page.body.contains("1 applied"));
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    assert_eq!(held(&d.hq)?.len(), 1);
    assert_eq!(d.hq.count("SELECT count(*) FROM site WHERE id = 'f1'")?, 1);
    Ok(())
}

/// The numbers of the Instances page's line of `instance`, by column.
pub fn instance_numbers(html: &str, instance: &str) -> Res<HashMap<String, String>> {
    let at = html
        .find(&format!(r#"data-instance="{instance}""#))
        .ok_or_else(|| format!("no line for {instance}"))?;
    let line = &html[at..html[at..].find("</tr>").map_or(html.len(), |e| at + e)];
    let mut out = HashMap::new();
    for part in line.split(r#"data-col=""#).skip(1) {
        let (name, rest) = part.split_once('"').ok_or("data-col")?;
        let cell = &rest[rest.find('>').ok_or("td")? + 1..rest.find("</td>").ok_or("/td")?];
        // The held count may be a link.
        let text: String = if let Some(a) = cell.find('>') {
            if cell.starts_with("<a") {
                cell[a + 1..cell.find("</a>").unwrap_or(cell.len())].to_owned()
            } else {
                cell.to_owned()
            }
        } else {
            cell.to_owned()
        };
        out.insert(name.to_owned(), text.trim().to_owned());
    }
    Ok(out)
}

#[test]
fn the_instances_page_shows_what_status_says() -> Res {
    let d = demo()?;
    let status = d.hq.status()?;
    let held = held(&d.hq)?;
    let html = runtime()?.block_on(async {
        let mut c = logged_in(&d.hq).await?;
        let page = c.get("/").await?;
        assert_eq!(page.status, StatusCode::OK);
        Ok::<_, Box<dyn std::error::Error>>(page.body)
    })?;
    for peer in status["peers"].as_array().ok_or("peers")? {
        let name = text(peer, "instance")?;
        let shown = instance_numbers(&html, name)?;
        assert_eq!(
            shown["owed"],
            num(peer, "pending_changes")?.to_string(),
            "{name}"
        );
        assert_eq!(
            shown["unacknowledged"],
            num(peer, "unacknowledged")?.to_string(),
            "{name}"
        );
        let from_it = held.iter().filter(|h| h["sender_instance"] == name).count();
        assert_eq!(shown["held"], from_it.to_string(), "{name}");
        let gaps = status["origins"]
            .as_array()
            .and_then(|o| o.iter().find(|o| o["instance"] == name))
            .map_or("", |o| o["gaps"].as_str().unwrap_or_default());
        let count: u64 = gaps
            .split(',')
            .filter(|r| !r.is_empty())
            .map(|r| match r.split_once('-') {
                Some((a, b)) => b.parse::<u64>().unwrap_or(0) - a.parse::<u64>().unwrap_or(0) + 1,
                None => 1,
            })
            .sum();
        assert_eq!(shown["gaps"], count.to_string(), "{name}");
    }
    let f1 = instance_numbers(&html, "field-1")?;
    assert_eq!(f1["held"], "2");
    let f2 = instance_numbers(&html, "field-2")?;
    assert_ne!(f2["unacknowledged"], "0", "HQ's unread bundle to field-2");
    // The site ids, short; no key of anyone.
    let f1_id = d.f1.site_id()?;
    assert!(html.contains(&f1_id[..8]));
    let key = d.f1.key()?;
    for k in ["public_key", "recipient", "fingerprint"] {
        if let Some(v) = key[k].as_str() {
            assert!(!html.contains(v), "{k} of field-1 is on the page");
        }
    }
    assert!(d.f2.db.exists() && d.w.path("hq.db").exists());
    Ok(())
}

#[test]
fn every_page_renders_when_logged_in_and_logging_out_ends_the_session() -> Res {
    let d = demo()?;
    runtime()?.block_on(async {
        let mut c = logged_in(&d.hq).await?;
        let page = c.get("/activity").await?;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("<svg"), "{}", page.body);
        assert!(page.body.contains(r#"id="journal""#));
        assert!(page.body.contains("field-2"));
        let page = c.get("/data").await?;
        assert!(page.body.contains(r#"data-table="site""#), "{}", page.body);
        // A row's history: which change holds each cell, from whom.
        let page = c.get("/data?table=site&key=f2").await?;
        assert!(
            page.body.contains("Each cell and the change"),
            "{}",
            page.body
        );
        assert!(page.body.contains("field-2"));
        assert!(page.body.contains("'Village hall'"));
        let page = c.get("/data?table=site&key=nothing-like-it").await?;
        assert!(page.body.contains("No row of site"), "{}", page.body);
        let page = c.get("/data?table=nosuch&key=1").await?;
        assert!(page.body.contains("not tracked"), "{}", page.body);
        // A key that looks like SQL is a value.
        let page = c.get("/data?table=site&key=%27%20OR%201%3D1%20--").await?;
        assert!(page.body.contains("No row of site"), "{}", page.body);
        let page = c.get("/quarantine?table=site&instance=field-1").await?;
        assert!(
            page.body.contains("(2 shown by the filter)")
                || page.body.contains(r#"data-count="2""#)
        );
        let page = c.get("/nowhere").await?;
        assert_eq!(page.status, StatusCode::NOT_FOUND);
        let csrf = c.csrf().await?;
        let page = c.post("/logout", &[("csrf", &csrf)]).await?;
        assert_eq!(page.location.as_deref(), Some("/login"));
        assert_eq!(c.get("/").await?.location.as_deref(), Some("/login"));
        Ok(())
    })
}

#[test]
fn an_empty_password_is_refused() {
    assert!(hash_password("").is_err());
}

// ---------------------------------------------------------------------------
// The sync journal
// ---------------------------------------------------------------------------

fn journal(site: &Site) -> Res<Vec<Json>> {
    let out = fieldsync_ok(&[&"journal", &"--db", &site.db, &"--json"])?.json()?;
    Ok(out["entries"].as_array().cloned().ok_or("entries")?)
}

#[test]
fn imports_and_exports_are_journaled_with_their_counts() -> Res {
    let d = demo()?;
    let j = journal(&d.hq)?;
    // Newest first: HQ's export to field-2, the imports from field-2 and field-1.
    assert_eq!(j[0]["kind"], "export");
    assert_eq!(j[0]["instance"], "field-2");
    assert_eq!(j[0]["via"], "file");
    assert!(num(&j[0], "bytes")? > 0);
    assert_eq!(j[1]["kind"], "import");
    assert_eq!(j[1]["instance"], "field-2");
    assert_eq!(num(&j[1], "applied")?, 1);
    assert_eq!(j[2]["instance"], "field-1");
    assert_eq!(num(&j[2], "quarantined")?, 2);
    assert_eq!(num(&j[2], "changes")?, 2);
    // The same file again: journaled, every change known.
    let at_f1 = journal(&d.f1)?;
    assert_eq!(at_f1[0]["kind"], "export");
    let text = fieldsync_ok(&[&"journal", &"--db", &d.hq.db, &"--limit", &"1"])?;
    assert!(
        text.stdout.contains("export to 'field-2'"),
        "{}",
        text.stdout
    );
    assert_eq!(text.stdout.lines().count(), 1);
    Ok(())
}

#[test]
fn a_refused_import_is_not_journaled() -> Res {
    let w = World::new()?;
    let hq = w.site("hq", SCHEMA)?;
    let stranger = w.stranger("intruder", SCHEMA)?;
    fieldsync_ok(&[&"track", &"--db", &stranger.db, &"--all"])?;
    stranger.sql("INSERT INTO site VALUES ('x', 'X', 'x');")?;
    let file = w.bundle("intruder");
    stranger.export_plain_to("hq", &file)?;
    hq.import_refused(&[&file], &["intruder"])?;
    assert!(journal(&hq)?.is_empty());
    Ok(())
}

#[test]
fn a_schema_9_database_gains_the_journal_when_opened() -> Res {
    let d = demo()?;
    // Back to engine schema 9: no journal, fieldsync_discarded without
    // discarded_by (empty here).
    d.hq.sql(
        "DROP TABLE fieldsync_journal;
         DROP TABLE fieldsync_discarded;
         CREATE TABLE fieldsync_discarded(id INTEGER PRIMARY KEY, entry INTEGER NOT NULL,
           discarded_at INTEGER NOT NULL, tbl TEXT NOT NULL, key TEXT NOT NULL,
           reason TEXT NOT NULL, detail TEXT NOT NULL, sender TEXT NOT NULL,
           first_at INTEGER NOT NULL, changes TEXT NOT NULL, vals TEXT NOT NULL);
         UPDATE fieldsync_meta SET value = 9 WHERE key = 'schema';",
    )?;
    assert!(journal(&d.hq)?.is_empty());
    assert_eq!(
        d.hq.count("SELECT value FROM fieldsync_meta WHERE key = 'schema'")?,
        10
    );
    let first = held(&d.hq)?[0]["id"].as_i64().ok_or("id")?.to_string();
    fieldsync_ok(&[
        &"conflicts",
        &"--db",
        &d.hq.db,
        &"--discard",
        &first,
        &"--yes",
    ])?;
    let out = fieldsync_ok(&[&"conflicts", &"--db", &d.hq.db, &"--json"])?.json()?;
    assert_eq!(out["discarded"][0]["discarded_by"], Json::Null);
    d.w.send(&d.f2, &d.hq)?;
    assert_eq!(journal(&d.hq)?.len(), 1);
    Ok(())
}
