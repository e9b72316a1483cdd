//! Who may send a bundle (spec/trust.md, "Trust on first use"): the signer
//! of a version-4 bundle, checked by [`crate::bundle::verify`], is compared
//! with the key pinned for the site id its header names, and pinned there
//! on first contact; unsigned bundles (versions 1 to 3) are admitted only
//! while `fieldsync_meta.accept_unsigned_until` is in the future.
//!
//! Origin statements relayed in a bundle are signed by their origin's key:
//! [`statement_key`] decides which key may speak for a site.
//!
//! [`admit`] and [`statement_key`] only read; [`pin`] records a first contact in the import's
//! own transaction, so a refused or rolled-back import pins nothing.

use ed25519_dalek::VerifyingKey;
use rusqlite::{Connection, OptionalExtension, params};

use crate::base::site_id::SiteId;
use crate::bundle::format::Header;
use crate::bundle::reader::Signer;
use crate::catalog::keys::{key_text, public_keys, signing_fingerprint};
use crate::catalog::session::Session;
use crate::catalog::site::{meta_get, meta_set};
use crate::error::{Error, TrustError};

/// The `fieldsync_meta` key holding the end (unix ms) of the period in
/// which unsigned bundles are imported.
pub const ACCEPT_UNSIGNED_KEY: &str = "accept_unsigned_until";

/// Longest migration period `--allow-unsigned-for` grants, in days.
pub const MAX_UNSIGNED_DAYS: u32 = 90;

/// A first contact to pin once the import is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewPin {
    key: VerifyingKey,
    /// The site and name to pin it for, if not the bundle's sender (an
    /// origin statement relayed by it).
    site: Option<(SiteId, String)>,
}

/// Whether the bundle's signer may send it as the sender its header
/// names: `Ok(Some(_))` on first contact (to [`pin`]), `Ok(None)` if the
/// key is the one pinned (or the bundle is unsigned and unsigned bundles
/// are allowed now). Reads only.
pub(crate) fn admit(
    conn: &Connection,
    s: &Session,
    header: &Header,
    signer: Signer,
) -> Result<Option<NewPin>, Error> {
    let Some(key) = signer.key else {
        let until: Option<i64> = meta_get(conn, ACCEPT_UNSIGNED_KEY)?;
        if until.is_some_and(|t| t > chrono::Utc::now().timestamp_millis()) {
            return Ok(None);
        }
        return Err(TrustError::Unsigned {
            sender: header.sender.name.clone(),
            version: signer.version,
            db: crate::catalog::store::db_arg(conn),
        }
        .into());
    };
    let found = key.to_bytes();
    // This instance's own site id is pinned to its own key.
    let pinned: Option<Vec<u8>> = if header.sender.id == s.local {
        Some(public_keys(conn)?.sign.to_bytes().to_vec())
    } else {
        conn.prepare_cached("SELECT public_key FROM fieldsync_pins WHERE site_id = ?1")?
            .query_row([header.sender.id.as_bytes().as_slice()], |r| r.get(0))
            .optional()?
    };
    if let Some(pinned) = pinned {
        if pinned.as_slice() == found.as_slice() {
            return Ok(None);
        }
        return Err(TrustError::KeyChanged {
            sender: header.sender.name.clone(),
            found: key_text(&found),
            found_fingerprint: signing_fingerprint(&found),
            pinned: pinned
                .as_slice()
                .try_into()
                .map_or_else(|_| "(damaged)".to_owned(), key_text),
        }
        .into());
    }
    let owner: Option<String> = if public_keys(conn)?.sign == key {
        Some(s.name.clone())
    } else {
        conn.prepare_cached("SELECT name FROM fieldsync_pins WHERE public_key = ?1")?
            .query_row([found.as_slice()], |r| r.get(0))
            .optional()?
    };
    if let Some(owner) = owner {
        return Err(TrustError::KeyOfAnotherSite {
            sender: header.sender.name.clone(),
            key: key_text(&found),
            fingerprint: signing_fingerprint(&found),
            owner,
        }
        .into());
    }
    Ok(Some(NewPin { key, site: None }))
}

/// Pin a first contact's key to the site id its header names, in the
/// caller's (the import's) transaction.
pub(crate) fn pin(conn: &Connection, header: &Header, new: &NewPin) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO fieldsync_pins(site_id, public_key, name, first_seen) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        new.site
            .as_ref()
            .map_or(&header.sender.id, |(site, _)| site)
            .as_bytes()
            .as_slice(),
        new.key.to_bytes().as_slice(),
        new.site
            .as_ref()
            .map_or(&header.sender.name, |(_, name)| name),
        chrono::Utc::now().timestamp_millis()
    ])?;
    Ok(())
}

/// Whether `key` may sign origin statements for `site`
/// (spec/trust.md, "Claims checked against facts"): this instance's own key
/// for its own site id; the key pinned for a site that has one; for the
/// bundle's sender on first contact, the key that signed the bundle
/// (`signer`, pinned by [`admit`]'s caller); for any other site with no
/// pin, trust on first use through relay — `Ok(Some(_))`, to [`pin`]
/// once the import is applied — unless the key is pinned for another site.
/// The one place that says which key is valid for a site: enrolment
/// replaces the first-use branch by "only keys HQ enrolled".
pub(crate) fn statement_key(
    conn: &Connection,
    s: &Session,
    header: &Header,
    signer: Option<VerifyingKey>,
    site: &SiteId,
    name: &str,
    key: &VerifyingKey,
) -> Result<Option<NewPin>, Error> {
    let found = key.to_bytes();
    let pinned: Option<Vec<u8>> = if *site == s.local {
        Some(public_keys(conn)?.sign.to_bytes().to_vec())
    } else if *site == header.sender.id && signer.is_some() {
        let pinned: Option<Vec<u8>> = pinned_key(conn, site)?;
        pinned.or_else(|| signer.map(|k| k.to_bytes().to_vec()))
    } else {
        pinned_key(conn, site)?
    };
    if let Some(pinned) = pinned {
        if pinned.as_slice() == found.as_slice() {
            return Ok(None);
        }
        return Err(TrustError::StatementKeyChanged {
            sender: header.sender.name.clone(),
            origin: name.to_owned(),
            found: key_text(&found),
            found_fingerprint: signing_fingerprint(&found),
        }
        .into());
    }
    let owner: Option<String> = if public_keys(conn)?.sign == *key {
        Some(s.name.clone())
    } else if signer.is_some_and(|k| k == *key) {
        Some(header.sender.name.clone())
    } else {
        conn.prepare_cached("SELECT name FROM fieldsync_pins WHERE public_key = ?1")?
            .query_row([found.as_slice()], |r| r.get(0))
            .optional()?
    };
    if let Some(owner) = owner {
        return Err(TrustError::StatementKeyOfAnotherSite {
            sender: header.sender.name.clone(),
            origin: name.to_owned(),
            fingerprint: signing_fingerprint(&found),
            owner,
        }
        .into());
    }
    Ok(Some(NewPin {
        key: *key,
        site: Some((*site, name.to_owned())),
    }))
}

fn pinned_key(conn: &Connection, site: &SiteId) -> Result<Option<Vec<u8>>, Error> {
    Ok(conn
        .prepare_cached("SELECT public_key FROM fieldsync_pins WHERE site_id = ?1")?
        .query_row([site.as_bytes().as_slice()], |r| r.get(0))
        .optional()?)
}

/// Admit unsigned bundles for `days` days from now (1 to
/// [`MAX_UNSIGNED_DAYS`]); returns the end of the period (unix ms).
pub(crate) fn allow_unsigned_for(conn: &Connection, days: u32) -> Result<i64, Error> {
    if !(1..=MAX_UNSIGNED_DAYS).contains(&days) {
        return Err(TrustError::AllowanceOutOfRange { days }.into());
    }
    let until = chrono::Utc::now().timestamp_millis() + i64::from(days) * 86_400_000;
    meta_set(conn, ACCEPT_UNSIGNED_KEY, until)?;
    Ok(until)
}
