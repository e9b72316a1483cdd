//! The servers an instance syncs with, remembered by peer name
//! (`fieldsync peer add`), so an officer types `fieldsync sync --db DB`.
//! Kept in `fieldsync_meta` under `server_url <name>`.

use serde::Serialize;

use crate::Instance;
use crate::catalog::site::{meta_delete, meta_set};
use crate::error::{Error, NetError};

const KEY: &str = "server_url ";

/// A remembered server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Remote {
    /// The name it is remembered by.
    #[serde(rename = "server")]
    pub name: String,
    /// Its URL.
    pub url: String,
}

/// The remembered servers, as `fieldsync peer list` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Remotes {
    /// Each, in the order of their names.
    pub servers: Vec<Remote>,
}

/// What `fieldsync peer remove` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forgotten {
    /// The name the server was remembered by.
    pub server: String,
}

/// Check that `url` is an http(s) URL with a host, and return it without
/// a trailing slash.
pub fn check_url(url: &str) -> Result<String, Error> {
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(trimmed.to_owned())
        }
        _ => Err(NetError::BadUrl { url: url.into() }.into()),
    }
}

/// Remember `url` for the peer `name` (replacing one remembered before).
pub fn remember(instance: &Instance, name: &str, url: &str) -> Result<Remote, Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(NetError::BadPeerName { name: name.into() }.into());
    }
    let url = check_url(url)?;
    meta_set(instance.connection(), &format!("{KEY}{name}"), &url)?;
    Ok(Remote {
        name: name.into(),
        url,
    })
}

/// Forget the server of `name`; false if none was remembered.
pub fn forget(instance: &Instance, name: &str) -> Result<bool, Error> {
    let had = remembered(instance)?.iter().any(|r| r.name == name);
    meta_delete(instance.connection(), &format!("{KEY}{name}"))?;
    Ok(had)
}

/// Every remembered server, by name.
pub fn remembered(instance: &Instance) -> Result<Vec<Remote>, Error> {
    let conn = instance.connection();
    let mut stmt =
        conn.prepare("SELECT key, value FROM fieldsync_meta WHERE key LIKE ?1 ORDER BY key")?;
    let rows = stmt.query_map([format!("{KEY}%")], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (key, url) = row?;
        if let Some(name) = key.strip_prefix(KEY) {
            out.push(Remote {
                name: name.to_owned(),
                url,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn urls_are_http_with_a_host() {
        assert_eq!(
            check_url("https://hq:8470/").ok().as_deref(),
            Some("https://hq:8470")
        );
        assert!(check_url("ftp://hq").is_err());
        assert!(check_url("https://").is_err());
        assert!(check_url("hq.example.org").is_err());
    }
}
