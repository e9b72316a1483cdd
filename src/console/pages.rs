//! The console's pages and actions (spec/console.md, "Pages"): Instances,
//! Activity, Needs a person (with Retry and Discard) and Data. Each
//! handler checks the session (and, for a POST, its CSRF token) before it
//! touches the database, reads what it shows through [`crate::Instance`]'s
//! public face on a blocking thread, and renders it with maud.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::auth::{App, redirect};
use super::view::{self, ago, page, page_response, short_id, when};
use super::{chart, with_db};
use crate::{Conflicts, Discard, JournalEntry, JournalKind, RowHistory, Status, TrustList, Via};

/// Journal rows the pages read at most (the journal keeps 10,000).
const JOURNAL_READ: u64 = 10_000;
/// Journal rows the Activity page lists.
const JOURNAL_SHOWN: usize = 200;
/// Overwritten values the Needs a person page reads (newest first) before
/// filtering.
const OVERWRITTEN_READ: u64 = 1_000;

type Params = HashMap<String, String>;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A page of the frame, 200.
fn ok_page(title: &str, current: &str, csrf: &str, body: Markup) -> Response {
    page_response(StatusCode::OK, page(title, current, csrf, body))
}

/// Any page when no password was given.
pub(super) async fn console_off() -> Response {
    page_response(StatusCode::OK, view::console_off_page())
}

/// Any other path when no password was given: not found (404), saying
/// how to turn the console on.
pub(super) async fn console_off_elsewhere() -> Response {
    page_response(StatusCode::NOT_FOUND, view::console_off_page())
}

/// A path the console does not have (logged in or not: no hint either way).
pub(super) async fn not_found() -> Response {
    page_response(
        StatusCode::NOT_FOUND,
        view::message_page("Not found", "The console has no such page."),
    )
}

/// `value` percent-encoded for a query string.
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The numbers in a set of change numbers as stored (`1-5,7` is 6).
fn count_numbers(ranges: &str) -> u64 {
    ranges
        .split(',')
        .filter(|r| !r.trim().is_empty())
        .map(|r| match r.trim().split_once('-') {
            Some((a, b)) => match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => u64::from(r.trim().parse::<u64>().is_ok()),
        })
        .sum()
}

/// One line of the Instances page.
struct InstanceLine {
    name: String,
    site_id: Option<String>,
    /// Last heard from: unix ms, and how.
    contact: Option<(i64, Via)>,
    owed: Option<u64>,
    unacknowledged: Option<u64>,
    gaps: u64,
    quarantined: u64,
    revoked: bool,
}

/// What the Instances page reads.
struct Overview {
    status: Status,
    trust: TrustList,
    conflicts: Conflicts,
    journal: Vec<JournalEntry>,
}

/// Last contact with `peer`: its newest import from it (the status's
/// `last_import` or the journal's), or any network exchange with it.
fn last_contact(
    peer: &str,
    last_import: Option<i64>,
    journal: &[JournalEntry],
) -> Option<(i64, Via)> {
    let from_journal = journal
        .iter()
        .filter(|e| {
            e.peer.as_deref() == Some(peer)
                && (e.kind == JournalKind::Import || e.via == Via::Network)
        })
        .map(|e| (e.at_ms, e.via))
        .max_by_key(|(at, _)| *at);
    match (from_journal, last_import) {
        (Some((at, _)), Some(li)) if li > at => Some((li, Via::File)),
        (Some(j), _) => Some(j),
        (None, li) => li.map(|li| (li, Via::File)),
    }
}

fn lines(o: &Overview) -> Vec<InstanceLine> {
    let mut held: BTreeMap<&str, u64> = BTreeMap::new();
    for h in &o.conflicts.quarantined {
        *held.entry(h.sender.as_str()).or_default() += 1;
    }
    let gaps: BTreeMap<&str, u64> = o
        .status
        .origins
        .iter()
        .map(|g| (g.name.as_str(), count_numbers(&g.gaps)))
        .collect();
    let mut names: BTreeSet<String> = o.status.peers.iter().map(|p| p.name.clone()).collect();
    for t in &o.trust.instances {
        names.insert(t.name.clone());
    }
    names.remove(&o.status.name);
    names
        .into_iter()
        .map(|name| {
            let peer = o.status.peers.iter().find(|p| p.name == name);
            let trusted = o.trust.instances.iter().find(|t| t.name == name);
            InstanceLine {
                site_id: peer
                    .and_then(|p| p.site_id.clone())
                    .or_else(|| trusted.and_then(|t| t.site_id.clone())),
                contact: last_contact(&name, peer.and_then(|p| p.last_import), &o.journal),
                owed: peer.map(|p| p.pending_changes),
                unacknowledged: peer.map(|p| p.unacknowledged),
                gaps: gaps.get(name.as_str()).copied().unwrap_or(0),
                quarantined: held.get(name.as_str()).copied().unwrap_or(0),
                revoked: trusted.is_some_and(|t| t.revoked_at.is_some()),
                name,
            }
        })
        .collect()
}

/// `GET /`: one line per known instance.
pub(super) async fn instances(State(app): State<App>, headers: HeaderMap) -> Response {
    let who = match app.require(&headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let read = with_db(&app, |i| {
        Ok(Overview {
            status: i.status_without_fingerprints()?,
            trust: i.trusted()?,
            conflicts: i.conflicts(0)?,
            journal: i.journal(JOURNAL_READ)?,
        })
    })
    .await;
    let o = match read {
        Ok(o) => o,
        Err(e) => return view::error_response(&e.to_string()),
    };
    let now = now_ms();
    let stale_ms = i64::from(app.cfg.stale_days) * 86_400_000;
    let lines = lines(&o);
    let stale = lines
        .iter()
        .filter(|l| l.contact.is_none_or(|(at, _)| now - at > stale_ms))
        .count();
    let body = html! {
        p { "This is " strong { (o.status.name) } " (site " code { (short_id(&o.status.site_id)) } "). "
            "An instance is " strong { "stale" } " when nothing was heard from it for more than "
            (app.cfg.stale_days) " days." }
        div.cards {
            div.card { b { (lines.len()) } "instances" }
            div.card { b { (stale) } "stale" }
            div.card { b id="held-total" { (o.conflicts.quarantined.len()) } a href="/quarantine" { "changes held" } }
        }
        @if lines.is_empty() {
            p.note { "No other instance is known yet: enrol one with " code { "fieldsync trust" } "." }
        } @else {
            div.scroll {
                table id="instances" {
                    caption.skip { "Known instances" }
                    thead { tr {
                        th scope="col" { "Instance" }
                        th scope="col" { "Site id" }
                        th scope="col" { "Last contact" }
                        th.n scope="col" { "Changes owed" }
                        th.n scope="col" { "Sent, not acknowledged" }
                        th.n scope="col" { "Gaps" }
                        th.n scope="col" { "Held from it" }
                    } }
                    tbody {
                        @for l in &lines {
                            @let is_stale = l.contact.is_none_or(|(at, _)| now - at > stale_ms);
                            tr.stale[is_stale] data-instance=(l.name) {
                                th scope="row" {
                                    (l.name)
                                    @if l.revoked { " " span.tag { "revoked" } }
                                }
                                td { code { (l.site_id.as_deref().map(short_id).unwrap_or("—")) } }
                                td {
                                    @match l.contact {
                                        Some((at, via)) => {
                                            time datetime=(when(Some(at))) title=(when(Some(at))) { (ago(at, now)) }
                                            " "
                                            @if via == Via::Network { span.tag.net { "network" } } @else { span.tag { "file" } }
                                        }
                                        None => { "never" }
                                    }
                                    @if is_stale { " " strong.bad { "stale" } }
                                }
                                td.n data-col="owed" { (l.owed.map_or("—".to_owned(), |n| n.to_string())) }
                                td.n data-col="unacknowledged" { (l.unacknowledged.map_or("—".to_owned(), |n| n.to_string())) }
                                td.n data-col="gaps" { (l.gaps) }
                                td.n data-col="held" {
                                    @if l.quarantined > 0 {
                                        a href=(format!("/quarantine?instance={}", query_value(&l.name))) { (l.quarantined) }
                                    } @else { "0" }
                                }
                            }
                        }
                    }
                }
            }
            p { "Changes owed: what " code { "fieldsync export --to NAME" } " would send now. "
                "Sent, not acknowledged: sent and not yet confirmed by a bundle back. "
                "Gaps: change numbers of that instance known to exist and not received (a lost bundle). "
                "Held from it: its changes in quarantine." }
        }
    };
    ok_page("Instances", "/", &who.csrf, body)
}

/// `GET /activity`: the sync journal and the chart.
pub(super) async fn activity(State(app): State<App>, headers: HeaderMap) -> Response {
    let who = match app.require(&headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let journal = match with_db(&app, |i| i.journal(JOURNAL_READ)).await {
        Ok(j) => j,
        Err(e) => return view::error_response(&e.to_string()),
    };
    let now = now_ms();
    let body = html! {
        h2 { "Changes received per day" }
        p { "New changes each instance's bundles brought (applied, older than what was here, or held), by day, UTC." }
        (chart::chart(&journal, now))
        h2 { "Journal" }
        @if journal.is_empty() {
            p.note { "Nothing imported or exported yet." }
        } @else {
            p { "The newest " (journal.len().min(JOURNAL_SHOWN)) " of " (journal.len()) " entries; "
                code { "fieldsync journal" } " shows the same." }
            div.scroll {
                table id="journal" {
                    thead { tr {
                        th scope="col" { "When" }
                        th scope="col" { "What" }
                        th scope="col" { "Peer" }
                        th scope="col" { "Via" }
                        th.n scope="col" { "Changes" }
                        th.n scope="col" { "Applied" }
                        th.n scope="col" { "Known" }
                        th.n scope="col" { "Older" }
                        th.n scope="col" { "Held" }
                        th.n scope="col" { "Bytes" }
                        th.n scope="col" { "ms" }
                    } }
                    tbody {
                        @for e in journal.iter().take(JOURNAL_SHOWN) {
                            tr {
                                td { time datetime=(when(Some(e.at_ms))) { (when(Some(e.at_ms))) } }
                                th scope="row" { (e.kind.as_str()) @if e.full { " (full)" } }
                                td { (e.peer.as_deref().unwrap_or("—")) }
                                td { (e.via.as_str()) }
                                td.n { (e.changes) }
                                @if e.kind == JournalKind::Import {
                                    td.n { (e.applied) } td.n { (e.known) } td.n { (e.older) } td.n { (e.quarantined) }
                                } @else {
                                    td.n { "—" } td.n { "—" } td.n { "—" } td.n { "—" }
                                }
                                td.n { (e.bytes.map_or("—".to_owned(), |b| b.to_string())) }
                                td.n { (e.duration_ms) }
                            }
                        }
                    }
                }
            }
        }
    };
    ok_page("Activity", "/activity", &who.csrf, body)
}

/// `GET /quarantine`: the held changes with their actions, the
/// overwritten values (filtered by `table` and `instance`), the discarded.
pub(super) async fn quarantine(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Response {
    let who = match app.require(&headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let c = match with_db(&app, |i| i.conflicts(OVERWRITTEN_READ)).await {
        Ok(c) => c,
        Err(e) => return view::error_response(&e.to_string()),
    };
    let now = now_ms();
    let table = q.get("table").map(String::as_str).unwrap_or("");
    let instance = q.get("instance").map(String::as_str).unwrap_or("");
    let held: Vec<_> = c
        .quarantined
        .iter()
        .filter(|h| instance.is_empty() || h.sender == instance)
        .filter(|h| table.is_empty() || h.table.eq_ignore_ascii_case(table))
        .collect();
    let lost: Vec<_> = c
        .overwritten
        .iter()
        .filter(|o| table.is_empty() || o.table.eq_ignore_ascii_case(table))
        .filter(|o| instance.is_empty() || o.lost_site == instance || o.won_site == instance)
        .collect();
    let tables: BTreeSet<&str> = c
        .overwritten
        .iter()
        .map(|o| o.table.as_str())
        .chain(c.quarantined.iter().map(|h| h.table.as_str()))
        .collect();
    let instances: BTreeSet<&str> = c
        .overwritten
        .iter()
        .flat_map(|o| [o.lost_site.as_str(), o.won_site.as_str()])
        .chain(c.quarantined.iter().map(|h| h.sender.as_str()))
        .collect();
    let number = |k: &str| q.get(k).and_then(|v| v.parse::<u64>().ok());
    let body = html! {
        @if let (Some(retried), Some(released)) = (number("retried"), number("released")) {
            p.note role="status" { "Retried " (retried) " held " (if retried == 1 { "change" } else { "changes" }) ": " (released) " applied." }
        }
        @if let Some(n) = number("discarded") {
            p.note role="status" { "Discarded " (n) " held " (if n == 1 { "change" } else { "changes" }) "." }
        }
        h2 { "Held changes" }
        p id="held-count" data-count=(c.quarantined.len()) {
            strong { (c.quarantined.len()) } (if c.quarantined.len() == 1 { " change" } else { " changes" }) " held in quarantine"
            @if held.len() != c.quarantined.len() { " (" (held.len()) " shown by the filter)" }
            "."
        }
        @if !c.quarantined.is_empty() {
            p { "A held change waits for something this database refused it for (a missing parent row, a UNIQUE value another row holds, …). "
                "Fix the cause, then retry; or discard a change for good." }
            form method="post" action="/quarantine/retry" {
                input type="hidden" name="csrf" value=(who.csrf);
                button type="submit" id="retry" { "Retry all held changes" }
            }
            div.scroll {
                table id="held" {
                    thead { tr {
                        th.n scope="col" { "#" }
                        th scope="col" { "Table" }
                        th scope="col" { "Row" }
                        th scope="col" { "Reason" }
                        th scope="col" { "From" }
                        th scope="col" { "Since" }
                        th.n scope="col" { "Tries" }
                        th scope="col" { "Action" }
                    } }
                    tbody {
                        @for h in &held {
                            tr data-entry=(h.id) {
                                td.n { (h.id) }
                                td { (h.table) }
                                th scope="row" { code { (h.key) } }
                                td { strong { (h.reason) } br; (h.detail) }
                                td { (h.sender) }
                                td { time datetime=(when(Some(h.first_ms))) title=(when(Some(h.first_ms))) { (ago(h.first_ms, now)) } }
                                td.n { (h.tries) }
                                td {
                                    form.inline method="post" action="/quarantine/discard" {
                                        input type="hidden" name="csrf" value=(who.csrf);
                                        input type="hidden" name="id" value=(h.id);
                                        button.danger type="submit" aria-label=(format!("Discard change {}", h.id)) { "Discard…" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Overwritten values" }
        p { "Values that lost to a concurrent edit of the same cell (the later edit won everywhere). "
            (c.overwritten_total) " recorded; the newest " (c.overwritten.len()) " are read here." }
        form.filters method="get" action="/quarantine" {
            div {
                label for="f-table" { "Table" }
                select id="f-table" name="table" {
                    option value="" { "any" }
                    @for t in &tables { option value=(t) selected[*t == table] { (t) } }
                }
            }
            div {
                label for="f-instance" { "Instance" }
                select id="f-instance" name="instance" {
                    option value="" { "any" }
                    @for i in &instances { option value=(i) selected[*i == instance] { (i) } }
                }
            }
            div { button type="submit" { "Filter" } }
        }
        @if lost.is_empty() {
            p { "None." }
        } @else {
            div.scroll {
                table id="overwritten" {
                    thead { tr {
                        th scope="col" { "Table" }
                        th scope="col" { "Row" }
                        th scope="col" { "Column" }
                        th scope="col" { "Lost value" }
                        th scope="col" { "Written by" }
                        th scope="col" { "Won by" }
                        th scope="col" { "Why" }
                        th scope="col" { "Noticed" }
                    } }
                    tbody {
                        @for o in &lost {
                            tr {
                                td { (o.table) }
                                th scope="row" { code { (o.key) } }
                                td { (if o.column.is_empty() { "(row)" } else { &o.column }) }
                                td { code { (o.lost_value.to_string()) } }
                                td { (o.lost_site) ", " (when(Some(o.lost_at_ms))) }
                                td { (o.won_site) ": " code { (o.won_value.to_string()) } }
                                td { (o.reason) }
                                td { (when(Some(o.noticed_ms))) }
                            }
                        }
                    }
                }
            }
        }
        @if !c.discarded.is_empty() {
            h2 { "Discarded" }
            div.scroll {
                table id="discarded" {
                    thead { tr {
                        th.n scope="col" { "#" }
                        th scope="col" { "Table" }
                        th scope="col" { "Row" }
                        th scope="col" { "Values" }
                        th scope="col" { "From" }
                        th scope="col" { "Discarded" }
                        th scope="col" { "By" }
                    } }
                    tbody {
                        @for d in &c.discarded {
                            tr {
                                td.n { (d.entry) }
                                td { (d.table) }
                                th scope="row" { code { (d.key) } }
                                td { code { (d.values) } }
                                td { (d.sender) }
                                td { (when(Some(d.discarded_ms))) }
                                td { (d.discarded_by.as_deref().unwrap_or("command line")) }
                            }
                        }
                    }
                }
            }
        }
    };
    ok_page("Needs a person", "/quarantine", &who.csrf, body)
}

/// `POST /quarantine/retry`: every held change tried again.
pub(super) async fn retry(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<Params>,
) -> Response {
    if let Err(r) = app.require_post(&headers, &form) {
        return r;
    }
    match with_db(&app, |i| i.retry_quarantine()).await {
        Ok(r) => redirect_to(&format!(
            "/quarantine?retried={}&released={}",
            r.retried, r.released
        )),
        Err(e) => view::error_response(&e.to_string()),
    }
}

/// A 303 redirect to a path the console made.
fn redirect_to(to: &str) -> Response {
    match axum::http::HeaderValue::from_str(to) {
        Ok(v) => (StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, v)]).into_response(),
        Err(_) => redirect("/quarantine"),
    }
}

/// `POST /quarantine/discard`: without `confirm=yes` and a name, the
/// confirmation page (nothing is discarded); with them, the change is
/// discarded and recorded as discarded by `console: NAME`.
pub(super) async fn discard(
    State(app): State<App>,
    headers: HeaderMap,
    Form(form): Form<Params>,
) -> Response {
    let who = match app.require_post(&headers, &form) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Some(id) = form.get("id").and_then(|v| v.trim().parse::<i64>().ok()) else {
        return page_response(
            StatusCode::BAD_REQUEST,
            view::message_page("Nothing to discard", "The form named no held change."),
        );
    };
    let by = form.get("by").map(|s| s.trim()).unwrap_or("");
    let confirmed = form.get("confirm").map(String::as_str) == Some("yes");
    if confirmed && !by.is_empty() {
        let by = format!("console: {}", by.chars().take(100).collect::<String>());
        return match with_db(&app, move |i| {
            i.discard_held_by(&Discard::Entry(id), Some(&by))
        })
        .await
        {
            Ok(d) => redirect_to(&format!("/quarantine?discarded={}", d.len())),
            Err(e) => page_response(
                StatusCode::CONFLICT,
                view::message_page("Not discarded", &e.to_string()),
            ),
        };
    }
    let c = match with_db(&app, |i| i.conflicts(0)).await {
        Ok(c) => c,
        Err(e) => return view::error_response(&e.to_string()),
    };
    let Some(h) = c.quarantined.iter().find(|h| h.id == id) else {
        return page_response(
            StatusCode::NOT_FOUND,
            view::message_page(
                "Nothing to discard",
                "No change is held under that number (any more).",
            ),
        );
    };
    let asked_twice = form.contains_key("by") || form.contains_key("confirm");
    let body = html! {
        @if asked_twice {
            p.warn role="alert" { "Tick the box and give your name to discard it." }
        }
        p { "You are about to discard held change " strong { "#" (h.id) } ": " }
        dl {
            dt { "Table and row" } dd { (h.table) " " code { (h.key) } }
            dt { "Held because" } dd { (h.reason) ": " (h.detail) }
            dt { "From" } dd { (h.sender) ", first held " (when(Some(h.first_ms))) ", tried " (h.tries) (if h.tries == 1 { " time" } else { " times" }) }
        }
        p { "A discarded change is never applied and is not asked for again; its values are kept in the list of discarded changes with your name." }
        form method="post" action="/quarantine/discard" {
            input type="hidden" name="csrf" value=(who.csrf);
            input type="hidden" name="id" value=(h.id);
            label.check for="confirm" {
                input type="checkbox" id="confirm" name="confirm" value="yes" required;
                span { "Yes, discard change #" (h.id) " for good." }
            }
            label for="by" { "Your name (recorded with the discard)" }
            input type="text" id="by" name="by" autocomplete="name" required maxlength="100" value=(by);
            p {
                button.danger type="submit" { "Discard" } " "
                a href="/quarantine" { "Cancel" }
            }
        }
    };
    ok_page("Discard a held change?", "/quarantine", &who.csrf, body)
}

/// `GET /data`: rows and tombstones per table, and a row's history.
pub(super) async fn data(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Response {
    let who = match app.require(&headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let table = q.get("table").cloned().unwrap_or_default();
    let key = q.get("key").cloned().unwrap_or_default();
    let (t, k) = (table.clone(), key.clone());
    let read = with_db(&app, move |i| {
        let status = i.status_without_fingerprints()?;
        let found = if t.is_empty() || k.trim().is_empty() {
            None
        } else {
            Some(i.row_history(&t, &k).map_err(|e| e.to_string()))
        };
        Ok((status, found))
    })
    .await;
    let (status, found) = match read {
        Ok(x) => x,
        Err(e) => return view::error_response(&e.to_string()),
    };
    let body = html! {
        h2 { "Tables" }
        div.scroll {
            table id="tables" {
                thead { tr {
                    th scope="col" { "Table" }
                    th.n scope="col" { "Rows" }
                    th.n scope="col" { "Tombstones" }
                } }
                tbody {
                    @for t in &status.tables {
                        tr data-table=(t.name) {
                            th scope="row" { a href=(format!("/data?table={}#history", query_value(&t.name))) { (t.name) } }
                            td.n { (t.rows) }
                            td.n { (t.tombstones) }
                        }
                    }
                }
            }
        }
        p { "Rows: rows the change log knows as existing. Tombstones: deleted rows it remembers, so a delete wins everywhere." }
        h2 id="history" { "A row's history" }
        form.filters method="get" action="/data#history" {
            div {
                label for="d-table" { "Table" }
                select id="d-table" name="table" {
                    @for t in &status.tables { option value=(t.name) selected[t.name == table] { (t.name) } }
                }
            }
            div {
                label for="d-key" { "Key (or local number)" }
                input type="search" id="d-key" name="key" value=(key) placeholder="e.g. 'p-1' or 42";
            }
            div { button type="submit" { "Show" } }
        }
        @match &found {
            None => {}
            Some(Err(e)) => { p.warn role="alert" { (e) } }
            Some(Ok(rows)) if rows.is_empty() => { p.warn role="status" { "No row of " (table) " has that key here." } }
            Some(Ok(rows)) => { @for r in rows { (history(r)) } }
        }
    };
    ok_page("Data", "/data", &who.csrf, body)
}

fn history(r: &RowHistory) -> Markup {
    html! {
        section.history {
            h3 { (r.table) " " code { (r.key) } " "
                @if r.live { span.tag.net { "live" } } @else { span.tag { "deleted" } } }
            div.scroll {
                table {
                    caption { "Each cell and the change that holds it" }
                    thead { tr {
                        th scope="col" { "Column" }
                        th scope="col" { "Value here" }
                        th scope="col" { "Change" }
                        th scope="col" { "From" }
                        th scope="col" { "When" }
                    } }
                    tbody {
                        @for c in &r.cells {
                            tr {
                                th scope="row" { (c.column) }
                                td { code { (c.value.as_ref().map_or(String::new(), |v| v.to_string())) } }
                                td { "#" (c.seq) }
                                td { (c.origin) }
                                td { (when(Some(c.at_ms))) }
                            }
                        }
                    }
                }
            }
            @if !r.lost.is_empty() {
                div.scroll {
                    table {
                        caption { "Values that lost to a concurrent edit" }
                        thead { tr {
                            th scope="col" { "Column" }
                            th scope="col" { "Lost value" }
                            th scope="col" { "Written by" }
                            th scope="col" { "When" }
                            th scope="col" { "Won by" }
                            th scope="col" { "Why" }
                        } }
                        tbody {
                            @for l in &r.lost {
                                tr {
                                    th scope="row" { (if l.column.is_empty() { "(row)" } else { &l.column }) }
                                    td { code { (l.value.to_string()) } }
                                    td { (l.site) }
                                    td { (when(Some(l.at_ms))) }
                                    td { (l.won_site) }
                                    td { (l.reason) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_numbers_are_counted_from_their_ranges() {
        assert_eq!(count_numbers(""), 0);
        assert_eq!(count_numbers("1-5,7"), 6);
        assert_eq!(count_numbers("3"), 1);
        assert_eq!(count_numbers("9-2,x"), 0);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_value("field-1"), "field-1");
        assert_eq!(query_value("a b&c#"), "a%20b%26c%23");
    }
}
