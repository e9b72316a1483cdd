//! The console's HTML (spec/console.md, "Pages"): the page frame (inline
//! style sheet, navigation, `lang`, a skip link), the login, "console off"
//! and message pages, the headers every page is sent with (no caching, no
//! framing, a content security policy allowing nothing but the page's own
//! inline style), and the small formatters the pages share. Maud escapes
//! every value written into the HTML.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// The style sheet, inline: no external asset, works with no network.
/// Colours keep a contrast ratio of at least 4.5:1 on their background;
/// focus is shown by a thick outline.
const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;background:#fff}
a{color:#0b4f9c}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,summary:focus-visible{outline:3px solid #b35c00;outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:8px;top:8px;background:#fff;padding:4px 8px;z-index:2}
header{background:#123e6b;color:#fff;padding:.5rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:center}
header .brand{font-weight:700;margin-right:auto}
header nav ul{list-style:none;display:flex;flex-wrap:wrap;gap:.25rem 1rem;margin:0;padding:0}
header a{color:#fff}
header a[aria-current=page]{font-weight:700;text-decoration-thickness:3px}
header form{margin:0}
main{padding:1rem;max-width:80rem}
h1{font-size:1.5rem;margin:.25rem 0 1rem}
h2{font-size:1.2rem;margin:1.5rem 0 .5rem}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;min-width:100%;font-variant-numeric:tabular-nums}
th,td{padding:.35rem .6rem;border-bottom:1px solid #c8c8c8;text-align:left;vertical-align:top}
th{background:#eef2f6}
tbody th{background:transparent}
td.n,th.n{text-align:right}
tr.stale td{background:#fff1c2}
.tag{display:inline-block;padding:0 .4rem;border-radius:.3rem;font-size:.85em;border:1px solid #6b5500;color:#4d3d00;background:#fff1c2}
.tag.net{border-color:#0b4f9c;color:#0b4f9c;background:#e8f0fb}
.ok{color:#1e6b2b}.bad{color:#a11d1d}
.note{background:#e8f0fb;border-left:4px solid #0b4f9c;padding:.5rem .75rem;margin:.5rem 0}
.warn{background:#fff1c2;border-left:4px solid #6b5500;padding:.5rem .75rem;margin:.5rem 0}
button,.button{font:inherit;padding:.35rem .8rem;border:1px solid #0b4f9c;background:#0b4f9c;color:#fff;border-radius:.3rem;cursor:pointer}
button.secondary{background:#fff;color:#0b4f9c}
button.danger{background:#a11d1d;border-color:#a11d1d}
form.inline{display:inline}
label{display:block;font-weight:600;margin:.5rem 0 .2rem}
label.check{font-weight:400;display:flex;gap:.5rem;align-items:flex-start}
input[type=text],input[type=password],input[type=search],select{font:inherit;padding:.35rem .5rem;border:1px solid #595959;border-radius:.3rem;max-width:100%}
.filters{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:flex-end}
.filters label{margin:0}
.cards{display:flex;flex-wrap:wrap;gap:.75rem;margin:.5rem 0 1rem}
.card{border:1px solid #c8c8c8;border-radius:.4rem;padding:.5rem .9rem;min-width:9rem}
.card b{display:block;font-size:1.4rem}
svg text{font:12px system-ui,sans-serif;fill:#1b1b1b}
.legend{display:flex;flex-wrap:wrap;gap:.25rem 1rem;list-style:none;padding:0}
.swatch{display:inline-block;width:.9rem;height:.9rem;margin-right:.3rem;vertical-align:-.1rem;border:1px solid #1b1b1b}
code{background:#f3f3f3;padding:0 .2rem}
@media (max-width:40rem){main{padding:.6rem}th,td{padding:.3rem .35rem}header{padding:.5rem}}
"#;

/// The navigation entries: path, label.
const NAV: &[(&str, &str)] = &[
    ("/", "Instances"),
    ("/activity", "Activity"),
    ("/quarantine", "Needs a person"),
    ("/data", "Data"),
];

/// A page with the frame: title, navigation (the current entry marked),
/// the logout button (which carries the session's CSRF token).
pub(super) fn page(title: &str, current: &str, csrf: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · fieldsync console" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                a.skip href="#main" { "Skip to the content" }
                header {
                    span.brand { "fieldsync console" }
                    nav aria-label="Console pages" {
                        ul {
                            @for (href, label) in NAV {
                                li {
                                    @if *href == current {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(csrf);
                        button.secondary type="submit" { "Log out" }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page without navigation (login, console off, messages).
fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · fieldsync console" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header { span.brand { "fieldsync console" } }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The login form; `token` is the form's CSRF token (also in its cookie).
pub(super) fn login_page(token: &str, problem: Option<&str>) -> Markup {
    bare(
        "Log in",
        html! {
            @if let Some(p) = problem {
                p.warn role="alert" { (p) }
            }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(token);
                label for="password" { "Administrator password" }
                input type="password" id="password" name="password" autocomplete="current-password" required autofocus;
                p { button type="submit" { "Log in" } }
            }
        },
    )
}

/// What `/` says when no administrator password was given.
pub(super) fn console_off_page() -> Markup {
    bare(
        "The console is off",
        html! {
            p { "The HQ console needs an administrator password, and none was given." }
            p { "Start the server with one of:" }
            ul {
                li { code { "fieldsync serve --db hq.db --admin-password-file FILE" } " (the first line of FILE is the password)" }
                li { "the environment variable " code { "FIELDSYNC_ADMIN_PASSWORD" } }
            }
            p { "Only a hash of the password is kept. Put the server behind TLS (a reverse proxy, or "
                code { "--tls-cert" } " / " code { "--tls-key" } ") before using it over a network." }
        },
    )
}

/// A page saying one thing.
pub(super) fn message_page(title: &str, text: &str) -> Markup {
    bare(
        title,
        html! {
            p { (text) }
            p { a href="/" { "Back to the console" } }
        },
    )
}

/// `markup` as an HTML response with the console's headers.
pub(super) fn page_response(status: StatusCode, markup: Markup) -> Response {
    let mut resp = (status, Html(markup.into_string())).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// A 500 page saying what failed.
pub(super) fn error_response(what: &str) -> Response {
    page_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        message_page("Something went wrong", what),
    )
}

/// A time (unix ms) to the minute, UTC, or `never`.
pub(super) fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "never".to_owned())
}

/// How long ago `ms` was, from `now_ms`, in words: `just now`, `5 minutes
/// ago`, `3 hours ago`, `9 days ago`.
pub(super) fn ago(ms: i64, now_ms: i64) -> String {
    let secs = (now_ms - ms).max(0) / 1000;
    let (n, unit) = match secs {
        0..60 => return "just now".to_owned(),
        60..3600 => (secs / 60, "minute"),
        3600..86_400 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// The first 8 characters of a site id.
pub(super) fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_said_in_the_largest_whole_unit() {
        let day = 86_400_000;
        assert_eq!(ago(0, 30_000), "just now");
        assert_eq!(ago(0, 61_000), "1 minute ago");
        assert_eq!(ago(0, 9 * day + 5), "9 days ago");
        assert_eq!(ago(10, 0), "just now");
    }
}
