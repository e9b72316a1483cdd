//! Instances: this one's name and settings in `fieldsync_meta`, and the
//! table of every instance this one has heard of, by site id
//! ([`crate::base::site_id`]).
//!
//! Each instance gets a random UUID at `init`; it is how changes are
//! attributed and how ties are broken, so it never changes. The name is for
//! people (`hq`, `field-1`) and is fixed at `init` too. Instances learn of
//! one another from bundles: the sender and every origin a bundle relays.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::base::site_id::SiteId;
use crate::error::{Error, SiteError};

/// Check an instance or peer name: short, printable, no surprises in a
/// shell or a file name.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 64 {
        return Err("it is longer than 64 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("use letters, digits, '-', '_' and '.' only");
    }
    Ok(())
}

/// Whether `name` can be a *new* instance's name (`init`, enrolment, a
/// first contact): [`check_name`], in ASCII only, so a look-alike (`һq`,
/// Cyrillic) can never pass for another (spec/trust.md, "Names"). Names
/// of instances that already exist are kept.
pub fn check_new_name(name: &str) -> Result<(), &'static str> {
    check_name(name)?;
    if !name.is_ascii() {
        return Err("use ASCII letters, digits, '-', '_' and '.' only");
    }
    Ok(())
}

/// Read a value from `fieldsync_meta`.
pub fn meta_get<T: rusqlite::types::FromSql>(
    conn: &Connection,
    key: &str,
) -> Result<Option<T>, Error> {
    Ok(conn
        .query_row(
            "SELECT value FROM fieldsync_meta WHERE key = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()?)
}

/// Read a value that must be present.
pub fn meta_require<T: rusqlite::types::FromSql>(conn: &Connection, key: &str) -> Result<T, Error> {
    meta_get(conn, key)?.ok_or_else(|| {
        SiteError::Damaged {
            detail: format!("fieldsync_meta has no '{key}'"),
        }
        .into()
    })
}

/// Write a value to `fieldsync_meta`.
pub fn meta_set(conn: &Connection, key: &str, value: impl rusqlite::ToSql) -> Result<(), Error> {
    conn.prepare_cached("INSERT INTO fieldsync_meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?
        .execute(params![key, value])?;
    Ok(())
}

/// Remove a value from `fieldsync_meta`.
pub fn meta_delete(conn: &Connection, key: &str) -> Result<(), Error> {
    conn.prepare_cached("DELETE FROM fieldsync_meta WHERE key = ?1")?
        .execute([key])?;
    Ok(())
}

/// An instance this one knows of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Site {
    /// Local number (`fieldsync_sites.id`).
    pub idx: i64,
    /// Its id.
    pub id: SiteId,
    /// Its name.
    pub name: String,
}

/// The `fieldsync_sites` table, cached in memory both ways.
#[derive(Debug, Default)]
pub struct Sites {
    by_idx: HashMap<i64, Site>,
    by_id: HashMap<SiteId, i64>,
}

impl Sites {
    /// Load every known site.
    pub fn load(conn: &Connection) -> Result<Sites, Error> {
        let mut sites = Sites::default();
        let mut stmt = conn.prepare("SELECT id, site_id, name FROM fieldsync_sites")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (idx, bytes, name) = row?;
            let id = SiteId::from_slice(&bytes).ok_or_else(|| SiteError::Damaged {
                detail: format!("fieldsync_sites row {idx} has a malformed site id"),
            })?;
            sites.by_id.insert(id, idx);
            sites.by_idx.insert(idx, Site { idx, id, name });
        }
        Ok(sites)
    }

    /// The local number of a site, adding it (or updating its name) if needed.
    pub fn intern(&mut self, conn: &Connection, id: SiteId, name: &str) -> Result<i64, Error> {
        if let Some(&idx) = self.by_id.get(&id) {
            if let Some(site) = self.by_idx.get_mut(&idx) {
                if site.name != name && !name.is_empty() {
                    conn.execute(
                        "UPDATE fieldsync_sites SET name = ?1 WHERE id = ?2",
                        params![name, idx],
                    )?;
                    site.name = name.to_owned();
                }
            }
            return Ok(idx);
        }
        conn.execute(
            "INSERT INTO fieldsync_sites(site_id, name) VALUES (?1, ?2)",
            params![id.as_bytes().as_slice(), name],
        )?;
        let idx = conn.last_insert_rowid();
        self.by_id.insert(id, idx);
        self.by_idx.insert(
            idx,
            Site {
                idx,
                id,
                name: name.to_owned(),
            },
        );
        Ok(idx)
    }

    /// A site's name for messages, or its id if it was never heard of.
    pub fn name_of(&self, id: &SiteId) -> String {
        self.idx_of(id)
            .and_then(|i| self.get(i))
            .map_or_else(|| id.to_string(), |s| s.name.clone())
    }

    /// The name reports list a site's sets under: its name, or its local
    /// number if it is unknown (a damaged table).
    pub fn label(&self, idx: i64) -> String {
        self.get(idx)
            .map_or_else(|| idx.to_string(), |s| s.name.clone())
    }

    /// The site with local number `idx` for messages: its quoted name, or
    /// `#idx` if the number is unknown (a damaged table).
    pub fn shown(&self, idx: i64) -> String {
        self.get(idx)
            .map_or_else(|| format!("#{idx}"), |s| format!("'{}'", s.name))
    }

    /// The local number of a known site.
    pub fn idx_of(&self, id: &SiteId) -> Option<i64> {
        self.by_id.get(id).copied()
    }

    /// The site with a local number.
    pub fn get(&self, idx: i64) -> Option<&Site> {
        self.by_idx.get(&idx)
    }

    /// The site id for a local number, or an error naming the damage.
    pub fn id_of(&self, idx: i64) -> Result<SiteId, Error> {
        self.by_idx.get(&idx).map(|s| s.id).ok_or_else(|| {
            SiteError::Damaged {
                detail: format!("origin {idx} is not in fieldsync_sites"),
            }
            .into()
        })
    }

    /// Every known site, by local number.
    pub fn all(&self) -> Vec<&Site> {
        let mut v: Vec<&Site> = self.by_idx.values().collect();
        v.sort_by_key(|s| s.idx);
        v
    }
}
