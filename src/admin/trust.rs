//! The administrator's side of trust (spec/trust.md, "Enrolment, anchor,
//! revocation"): enrolling an instance by name and key (`fieldsync trust
//! NAME KEY`), revoking one (`fieldsync revoke`), naming the anchor of a
//! database set up before enrolment (`fieldsync trust --anchor`), and the
//! list of trusted instances (`fieldsync trust --list`). What an import
//! does with the keyring is in `crate::receive::trust`.
//!
//! On an instance that is its own anchor (HQ), each enrolment and
//! revocation is also a record signed by its key, which its bundles carry
//! to every instance set up from it; elsewhere they stay local.

use rusqlite::Connection;
use serde::Serialize;

use crate::base::site_id::SiteId;
use crate::catalog::keyring::{
    Anchor, Keyring, Record, RecordKind, Role, anchor, anchor_self, anchor_to, next_serial,
    parse_public_key, parse_recipient, sign_record,
};
use crate::catalog::keys::{fingerprint, public_keys, signing_fingerprint};
use crate::catalog::peers::have_all;
use crate::catalog::session::Session;
use crate::catalog::site::check_new_name;
use crate::catalog::store::db_arg;
use crate::error::{Error, TrustError};

/// What `fieldsync trust NAME KEY` did.
#[derive(Debug, Clone, Serialize)]
pub struct Enrolled {
    /// The instance's name.
    #[serde(rename = "instance")]
    pub name: String,
    /// The fingerprint to read back to its officer: of both keys when the
    /// recipient was given, else of the signing key alone.
    pub fingerprint: String,
    /// The fingerprint of its signing key alone.
    pub signing_fingerprint: String,
    /// True if this instance is its own anchor: the enrolment travels,
    /// signed, to the instances set up from it.
    pub relayed: bool,
    /// Instances it replaced (the same name or site id under another key).
    pub replaced: Vec<String>,
}

/// What `fieldsync revoke NAME` did.
#[derive(Debug, Clone, Serialize)]
pub struct Revoked {
    /// The instance's name.
    #[serde(rename = "instance")]
    pub name: String,
    /// Its changes numbered up to this stay; later ones are refused.
    pub keep_through: u64,
    /// True if the revocation travels, signed, to the instances set up
    /// from this one.
    pub relayed: bool,
    /// False if it was already revoked (nothing changed).
    pub changed: bool,
}

/// One instance of `fieldsync trust --list`.
#[derive(Debug, Clone, Serialize)]
pub struct Trusted {
    /// Its name.
    #[serde(rename = "instance")]
    pub name: String,
    /// Its site id, once a bundle from it was imported.
    #[serde(rename = "site")]
    pub site_id: Option<String>,
    /// `anchor`, `enrolled` or `first_use`.
    pub role: Role,
    /// Fingerprint of both its keys, if its recipient is known.
    pub fingerprint: Option<String>,
    /// Fingerprint of its signing key.
    pub signing_fingerprint: String,
    /// Its public key (base64).
    pub public_key: String,
    /// Unix ms it was enrolled or pinned here.
    #[serde(rename = "since_at", serialize_with = "crate::json::time")]
    pub since: i64,
    /// Unix ms it was revoked, if it was.
    #[serde(serialize_with = "crate::json::opt_time")]
    pub revoked_at: Option<i64>,
    /// Revoked: its changes numbered up to this stay.
    pub keep_through: Option<u64>,
    /// How many of its changes this instance holds (what it sent before a
    /// revocation stays, and is listed here).
    pub changes: u64,
    /// True if the anchor's signed record says so (rather than only this
    /// instance).
    pub by_anchor: bool,
}

/// The whole keyring, as `fieldsync trust --list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TrustList {
    /// This instance's anchor: `self`, a name, or none (trust on first use).
    pub anchor: Option<String>,
    /// Every instance in the keyring, oldest first.
    pub instances: Vec<Trusted>,
}

/// What `fieldsync trust` shows after its settings (`--list`, `--anchor`,
/// `--allow-unsigned-for`, `--max-clock-ahead`): the keyring, the
/// migration period for unsigned bundles and the clock bound.
#[derive(Debug, Clone, Serialize)]
pub struct TrustSettings {
    /// The keyring.
    #[serde(flatten)]
    pub list: TrustList,
    /// Unix ms until which unsigned bundles are imported, if a migration
    /// period was set.
    #[serde(
        rename = "unsigned_accepted_until_at",
        serialize_with = "crate::json::opt_time"
    )]
    pub unsigned_until: Option<i64>,
    /// True if that period has not ended.
    pub accepts_unsigned_now: bool,
    /// The clock bound (`--max-clock-ahead`).
    pub max_clock_ahead_ms: i64,
}

/// Enrol `name` with its signing key and, if given, its age recipient.
pub fn enrol(
    conn: &Connection,
    s: &Session,
    name: &str,
    public_key: &str,
    recipient: Option<&str>,
    site_id: Option<&str>,
) -> Result<Enrolled, Error> {
    check_new_name(name).map_err(|reason| TrustError::BadEnrolment {
        what: format!("cannot enrol '{name}'"),
        detail: format!("{reason} (the name it was set up with: `fieldsync key` on it shows it)"),
    })?;
    let bad_key = |detail: String| TrustError::BadEnrolment {
        what: format!("cannot enrol '{name}': the public key is unusable"),
        detail: format!("{detail}; copy the 'public key' line of `fieldsync key` on it"),
    };
    let key = parse_public_key(public_key).map_err(bad_key)?;
    let recipient = recipient
        .map(|r| {
            parse_recipient(r).map_err(|detail| TrustError::BadEnrolment {
                what: format!("cannot enrol '{name}': the recipient is unusable"),
                detail: format!("{detail}; copy the 'recipient' line of `fieldsync key` on it"),
            })
        })
        .transpose()?;
    let given_site = site_id
        .map(|text| {
            text.parse::<uuid::Uuid>()
                .map(SiteId)
                .map_err(|_| TrustError::BadEnrolment {
                    what: format!("cannot enrol '{name}': the site id is unusable"),
                    detail: "copy it from `fieldsync key` on it".into(),
                })
        })
        .transpose()?;
    let own = public_keys(conn)?;
    if key == own.sign || name.eq_ignore_ascii_case(&s.name) {
        return Err(TrustError::BadEnrolment {
            what: format!("cannot enrol '{name}'"),
            detail: "that is this instance itself".into(),
        }
        .into());
    }
    let bytes = key.to_bytes();
    let mut ring = Keyring::load(conn)?;
    if let Some(anchor) = ring.by_key(&bytes).filter(|p| p.role == Role::Anchor) {
        if anchor.name.eq_ignore_ascii_case(name) {
            // Already trusted, as its anchor: nothing to do.
            return Ok(Enrolled {
                name: anchor.name.clone(),
                fingerprint: shown_fingerprint(&bytes, anchor.recipient.as_deref()),
                signing_fingerprint: signing_fingerprint(&bytes),
                relayed: false,
                replaced: Vec::new(),
            });
        }
        return Err(TrustError::BadEnrolment {
            what: format!("cannot enrol '{name}'"),
            detail: "that key is this instance's anchor (its HQ)".into(),
        }
        .into());
    }
    let before: Vec<String> = ring.pins.iter().map(|p| p.name.clone()).collect();
    let site = ring.by_key(&bytes).and_then(|p| p.site_id).or(given_site);
    if site.is_some_and(|site| site == s.local) {
        return Err(TrustError::BadEnrolment {
            what: format!("cannot enrol '{name}'"),
            detail: "its site id is this instance's own".into(),
        }
        .into());
    }
    let relayed = anchor(conn)? == Anchor::Own;
    let serial = next_serial(&ring);
    let pin = ring.put(bytes, site, name, recipient.clone(), Role::Enrolled);
    pin.revoked_at = None;
    pin.keep_through = None;
    let recipient = pin.recipient.clone();
    if relayed {
        let rec = Record {
            kind: RecordKind::Enrol,
            serial,
            public_key: bytes.to_vec(),
            site_id: site,
            name: name.to_owned(),
            recipient: recipient.clone(),
            at: chrono::Utc::now().timestamp_millis(),
            keep_through: None,
        };
        pin.record = Some((serial, sign_record(conn, &rec)?));
    } else {
        pin.record = None;
    }
    let replaced = before
        .into_iter()
        .filter(|n| !ring.pins.iter().any(|p| &p.name == n))
        .collect();
    ring.save(conn)?;
    Ok(Enrolled {
        name: name.to_owned(),
        fingerprint: shown_fingerprint(&bytes, recipient.as_deref()),
        signing_fingerprint: signing_fingerprint(&bytes),
        relayed,
        replaced,
    })
}

/// The fingerprint to read back: of both keys when the recipient is
/// known, else of the signing key alone.
fn shown_fingerprint(key: &[u8; 32], recipient: Option<&str>) -> String {
    match recipient {
        Some(r) => fingerprint(key, r),
        None => signing_fingerprint(key),
    }
}

/// Revoke `name`: its later bundles are refused, here and, if this
/// instance is its own anchor, wherever the signed revocation reaches.
pub fn revoke(conn: &Connection, s: &Session, name: &str) -> Result<Revoked, Error> {
    let mut ring = Keyring::load(conn)?;
    let Some(pin) = ring.by_name(name).cloned() else {
        return Err(TrustError::NoSuchInstance {
            name: name.to_owned(),
            db: db_arg(conn),
        }
        .into());
    };
    if pin.role == Role::Anchor {
        return Err(TrustError::BadEnrolment {
            what: format!("cannot revoke '{}'", pin.name),
            detail: "it is this instance's anchor (its HQ); set up this instance anew from another HQ instead".into(),
        }
        .into());
    }
    let keep_through = changes_of(conn, s, pin.site_id)?;
    if let Some(keep) = pin.keep_through.filter(|_| pin.revoked_at.is_some()) {
        return Ok(Revoked {
            name: pin.name,
            keep_through: keep,
            relayed: pin.record.is_some(),
            changed: false,
        });
    }
    let relayed = anchor(conn)? == Anchor::Own;
    let serial = next_serial(&ring);
    let at = chrono::Utc::now().timestamp_millis();
    let entry = ring.put(
        pin.public_key,
        pin.site_id,
        &pin.name,
        pin.recipient.clone(),
        Role::Enrolled,
    );
    entry.revoked_at = Some(at);
    entry.keep_through = Some(keep_through);
    if relayed {
        let rec = Record {
            kind: RecordKind::Revoke,
            serial,
            public_key: pin.public_key.to_vec(),
            site_id: pin.site_id,
            name: pin.name.clone(),
            recipient: pin.recipient.clone(),
            at,
            keep_through: Some(keep_through),
        };
        entry.record = Some((serial, sign_record(conn, &rec)?));
    }
    ring.save(conn)?;
    Ok(Revoked {
        name: pin.name,
        keep_through,
        relayed,
        changed: true,
    })
}

/// The highest change number of the instance `site` this instance holds.
fn changes_of(conn: &Connection, s: &Session, site: Option<SiteId>) -> Result<u64, Error> {
    let Some(idx) = site.and_then(|site| s.sites.idx_of(&site)) else {
        return Ok(0);
    };
    Ok(have_all(conn, s)?.get(&idx).map_or(0, |set| set.max()))
}

/// Name the anchor of a database set up before enrolment: `name` is this
/// instance's own name (it is HQ) or an instance pinned here.
pub fn set_anchor(conn: &Connection, s: &Session, name: &str) -> Result<String, Error> {
    if name.eq_ignore_ascii_case(&s.name) {
        anchor_self(conn)?;
        return Ok(s.name.clone());
    }
    let mut ring = Keyring::load(conn)?;
    let Some(pin) = ring
        .by_name(name)
        .filter(|p| p.revoked_at.is_none())
        .cloned()
    else {
        return Err(TrustError::NoSuchInstance {
            name: name.to_owned(),
            db: db_arg(conn),
        }
        .into());
    };
    let key =
        parse_public_key(&crate::catalog::keys::key_text(&pin.public_key)).map_err(|detail| {
            TrustError::DamagedKeyring {
                detail: format!("the key of '{}': {detail}", pin.name),
            }
        })?;
    ring.make_anchor(&pin.public_key);
    ring.save(conn)?;
    anchor_to(conn, &key)?;
    Ok(pin.name)
}

/// The keyring as `fieldsync trust --list` shows it.
pub fn list(conn: &Connection, s: &Session) -> Result<TrustList, Error> {
    let ring = Keyring::load(conn)?;
    let have = have_all(conn, s)?;
    let anchor = match anchor(conn)? {
        Anchor::Own => Some("self".to_owned()),
        Anchor::Other(key) => Some(
            ring.by_key(&key.to_bytes())
                .map_or_else(|| signing_fingerprint(&key.to_bytes()), |p| p.name.clone()),
        ),
        Anchor::FirstUse => None,
    };
    let instances = ring
        .pins
        .iter()
        .map(|p| Trusted {
            name: p.name.clone(),
            site_id: p.site_id.map(|s| s.to_string()),
            role: p.role,
            fingerprint: p
                .recipient
                .as_deref()
                .map(|r| fingerprint(&p.public_key, r)),
            signing_fingerprint: signing_fingerprint(&p.public_key),
            public_key: crate::catalog::keys::key_text(&p.public_key),
            since: p.first_seen,
            revoked_at: p.revoked_at,
            keep_through: p.keep_through,
            changes: p
                .site_id
                .and_then(|site| s.sites.idx_of(&site))
                .and_then(|idx| have.get(&idx))
                .map_or(0, |set| set.len()),
            by_anchor: p.record.is_some(),
        })
        .collect();
    Ok(TrustList { anchor, instances })
}
