//! The instances this instance takes bundles from, by signing key
//! (`fieldsync_pins`), and the trust records that carry enrolments and
//! revocations from the deployment's anchor (spec/trust.md, "Enrolment,
//! anchor, revocation").
//!
//! The keyring is small (one row per instance of a deployment), so it is
//! read whole into a [`Keyring`], changed in memory by `fieldsync trust`,
//! `fieldsync revoke` or the records a bundle brings, judged there (an
//! import checks its sender against the keyring *with* the bundle's records
//! applied, without writing), and written back only inside the import's or
//! the command's own transaction.
//!
//! A record is MessagePack of [`Record`], signed by the anchor under
//! [`RECORD_CONTEXT`]. Only records whose signature holds under this
//! instance's anchor key are believed; others are ignored (a record is a
//! claim by someone else's anchor, which this instance has no reason to
//! take or to refuse a bundle for).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, VerifyingKey};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::base::site_id::SiteId;
use crate::catalog::keys::signing_key;
use crate::catalog::site::{check_name, meta_get, meta_set};
use crate::error::{Error, TrustError};

/// A trust record as it travels: its MessagePack encoding and the anchor's
/// Ed25519 signature over [`RECORD_CONTEXT`] ‖ `record`
/// ([`open_record`] decodes and checks it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecord {
    /// MessagePack of the record.
    #[serde(with = "serde_bytes")]
    pub record: Vec<u8>,
    /// 64 bytes.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// What a trust record's signature signs before the record: a signature
/// made for anything else (a bundle) can never be taken for one.
pub const RECORD_CONTEXT: &[u8] = b"fieldsync trust record v1\0";

/// `fieldsync_meta` key naming this instance's anchor: `self`, or the
/// base64 public key of the instance whose records it believes. Absent on a
/// database set up before enrolment (it then pins on first use).
pub const ANCHOR_KEY: &str = "anchor";

/// Most bytes of one encoded record: a name of 64 bytes, a key, a site id
/// and a recipient fit in a quarter of it.
pub const MAX_RECORD_BYTES: usize = 1024;

/// Most records in the keyring (and in one bundle's header): more instances
/// than any deployment has.
pub const MAX_RECORDS: usize = 100_000;

/// How this instance decides who may send it bundles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anchor {
    /// It is its own anchor (made with `init`, as HQ is): it takes bundles
    /// from the instances it enrolled, and its enrolments and revocations
    /// travel, signed by it, to the instances set up from it.
    Own,
    /// It believes the records signed by this key (its HQ, pinned at
    /// `init --from`), and takes bundles from the instances they enrol and
    /// from those enrolled here.
    Other(VerifyingKey),
    /// Set up before enrolment: it pins each sender at its first bundle
    /// (trust on first use) until an anchor is named
    /// (`fieldsync trust --anchor`).
    FirstUse,
}

/// How an instance came into the keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// This instance's anchor (HQ).
    Anchor,
    /// Enrolled here or by the anchor's record.
    Enrolled,
    /// Pinned at its first bundle, on a database set up before enrolment.
    FirstUse,
}

impl Role {
    fn as_sql(self) -> &'static str {
        match self {
            Role::Anchor => "anchor",
            Role::Enrolled => "enrolled",
            Role::FirstUse => "first use",
        }
    }

    fn from_sql(text: &str) -> Role {
        match text {
            "anchor" => Role::Anchor,
            "enrolled" => Role::Enrolled,
            _ => Role::FirstUse,
        }
    }
}

/// One instance of the keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Its Ed25519 public key.
    pub public_key: [u8; 32],
    /// Its site id, once a bundle from it was imported (or its record said).
    pub site_id: Option<SiteId>,
    /// Its name.
    pub name: String,
    /// Its age recipient, once known.
    pub recipient: Option<String>,
    /// How it came in.
    pub role: Role,
    /// Unix ms it came in.
    pub first_seen: i64,
    /// Unix ms of its revocation.
    pub revoked_at: Option<i64>,
    /// Revoked: its changes numbered above this are refused.
    pub keep_through: Option<u64>,
    /// The anchor's record of it, relayed to others.
    pub record: Option<(u64, SignedRecord)>,
    dirty: bool,
}

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// The instance belongs to the deployment.
    Enrol,
    /// It no longer does: its later bundles are refused.
    Revoke,
}

/// An enrolment or revocation, as the anchor signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Enrol or revoke.
    pub kind: RecordKind,
    /// The anchor's serial number of the record (1, 2, …): later ones win.
    pub serial: u64,
    /// The instance's Ed25519 public key.
    #[serde(with = "serde_bytes")]
    pub public_key: Vec<u8>,
    /// Its site id, if the anchor knew it.
    pub site_id: Option<SiteId>,
    /// Its name.
    pub name: String,
    /// Its age recipient, if known.
    pub recipient: Option<String>,
    /// Unix ms the anchor made the record.
    pub at: i64,
    /// Revocations: the highest change number of the instance the anchor
    /// held; later ones are refused.
    pub keep_through: Option<u64>,
}

/// The whole keyring, read into memory.
#[derive(Debug, Clone)]
pub struct Keyring {
    /// Every instance in it.
    pub pins: Vec<Pin>,
    /// Keys removed (a record of the anchor replaced them).
    removed: Vec<[u8; 32]>,
}

impl Keyring {
    /// Read `fieldsync_pins`.
    pub fn load(conn: &Connection) -> Result<Keyring, Error> {
        let mut stmt = conn.prepare_cached(
            "SELECT public_key, site_id, name, recipient, role, first_seen, revoked_at, \
             keep_through, serial, record, signature FROM fieldsync_pins ORDER BY first_seen, rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Option<Vec<u8>>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, Option<i64>>(7)?,
                r.get::<_, Option<i64>>(8)?,
                r.get::<_, Option<Vec<u8>>>(9)?,
                r.get::<_, Option<Vec<u8>>>(10)?,
            ))
        })?;
        let mut pins = Vec::new();
        for row in rows {
            let (key, site, name, recipient, role, first_seen, revoked_at, keep, serial, rec, sig) =
                row?;
            let public_key: [u8; 32] = key.as_slice().try_into().map_err(|_| damaged_pin(&name))?;
            let record = match (serial, rec, sig) {
                (Some(serial), Some(record), Some(signature)) => Some((
                    u64::try_from(serial).map_err(|_| damaged_pin(&name))?,
                    SignedRecord { record, signature },
                )),
                _ => None,
            };
            pins.push(Pin {
                public_key,
                site_id: site.as_deref().and_then(SiteId::from_slice),
                name,
                recipient,
                role: Role::from_sql(&role),
                first_seen,
                revoked_at,
                keep_through: keep.and_then(|k| u64::try_from(k).ok()),
                record,
                dirty: false,
            });
        }
        Ok(Keyring {
            pins,
            removed: Vec::new(),
        })
    }

    /// Write what changed since [`load`](Self::load), in the caller's
    /// transaction.
    pub fn save(&mut self, conn: &Connection) -> Result<(), Error> {
        for key in self.removed.drain(..) {
            conn.prepare_cached("DELETE FROM fieldsync_pins WHERE public_key = ?1")?
                .execute([key.as_slice()])?;
        }
        // Site ids are unique: clear those moving to another key first.
        for pin in self.pins.iter().filter(|p| p.dirty) {
            conn.prepare_cached("UPDATE fieldsync_pins SET site_id = NULL WHERE public_key = ?1")?
                .execute([pin.public_key.as_slice()])?;
        }
        for pin in self.pins.iter_mut().filter(|p| p.dirty) {
            let (serial, record, signature) = match &pin.record {
                Some((serial, r)) => (
                    Some(i64::try_from(*serial).unwrap_or(i64::MAX)),
                    Some(r.record.as_slice()),
                    Some(r.signature.as_slice()),
                ),
                None => (None, None, None),
            };
            conn.prepare_cached(
                "INSERT INTO fieldsync_pins(public_key, site_id, name, recipient, role, first_seen, \
                 revoked_at, keep_through, serial, record, signature) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT(public_key) DO UPDATE SET site_id = ?2, name = ?3, recipient = ?4, \
                 role = ?5, revoked_at = ?7, keep_through = ?8, serial = ?9, record = ?10, \
                 signature = ?11",
            )?
            .execute(params![
                pin.public_key.as_slice(),
                pin.site_id.as_ref().map(|s| s.as_bytes().to_vec()),
                pin.name,
                pin.recipient,
                pin.role.as_sql(),
                pin.first_seen,
                pin.revoked_at,
                pin.keep_through
                    .map(|k| i64::try_from(k).unwrap_or(i64::MAX)),
                serial,
                record,
                signature
            ])?;
            pin.dirty = false;
        }
        Ok(())
    }

    /// The instance with this signing key.
    pub fn by_key(&self, key: &[u8; 32]) -> Option<&Pin> {
        self.pins.iter().find(|p| &p.public_key == key)
    }

    /// The instance with this site id.
    pub fn by_site(&self, site: &SiteId) -> Option<&Pin> {
        self.pins.iter().find(|p| p.site_id.as_ref() == Some(site))
    }

    /// The instance with this name, compared without regard to case.
    pub fn by_name(&self, name: &str) -> Option<&Pin> {
        self.pins
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name) || p.name == name)
    }

    /// The highest serial of the anchor's records held.
    pub fn highest_serial(&self) -> Option<u64> {
        self.pins
            .iter()
            .filter_map(|p| p.record.as_ref().map(|(s, _)| *s))
            .max()
    }

    /// The anchor's records with a serial above `after`, oldest first: what
    /// a bundle to a peer that acknowledged `after` carries.
    pub fn records_after(&self, after: Option<u64>) -> Vec<SignedRecord> {
        let mut out: Vec<(u64, SignedRecord)> = self
            .pins
            .iter()
            .filter_map(|p| p.record.clone())
            .filter(|(s, _)| after.is_none_or(|a| *s > a))
            .collect();
        out.sort_by_key(|(s, _)| *s);
        out.into_iter().map(|(_, r)| r).collect()
    }

    /// Record that a bundle from `site`, named `name`, was signed by `key`:
    /// binds the site id of an instance enrolled by name and key, and pins
    /// a first contact when `first_use`.
    pub fn seen(&mut self, key: &[u8; 32], site: SiteId, name: &str, first_use: bool) {
        if let Some(pin) = self.pins.iter_mut().find(|p| &p.public_key == key) {
            if pin.site_id.is_none() {
                pin.site_id = Some(site);
                pin.dirty = true;
            }
            return;
        }
        if first_use {
            self.pins.push(Pin {
                public_key: *key,
                site_id: Some(site),
                name: name.to_owned(),
                recipient: None,
                role: Role::FirstUse,
                first_seen: now_ms(),
                revoked_at: None,
                keep_through: None,
                record: None,
                dirty: true,
            });
        }
    }

    /// Enrol (or, with `role`, make the anchor) an instance by name and
    /// key. Another instance of the same name or site id is replaced.
    pub fn put(
        &mut self,
        key: [u8; 32],
        site: Option<SiteId>,
        name: &str,
        recipient: Option<String>,
        role: Role,
    ) -> &mut Pin {
        self.drop_others(&key, site, name);
        let at = now_ms();
        let idx = match self.pins.iter().position(|p| p.public_key == key) {
            Some(i) => i,
            None => {
                self.pins.push(Pin {
                    public_key: key,
                    site_id: None,
                    name: name.to_owned(),
                    recipient: None,
                    role,
                    first_seen: at,
                    revoked_at: None,
                    keep_through: None,
                    record: None,
                    dirty: true,
                });
                self.pins.len() - 1
            }
        };
        let pin = &mut self.pins[idx];
        if site.is_some() {
            pin.site_id = site;
        }
        name.clone_into(&mut pin.name);
        if recipient.is_some() {
            pin.recipient = recipient;
        }
        if pin.role != Role::Anchor {
            pin.role = role;
        }
        pin.dirty = true;
        pin
    }

    /// Make the instance with `key` the anchor (and no other).
    pub fn make_anchor(&mut self, key: &[u8; 32]) {
        for pin in &mut self.pins {
            let role = if &pin.public_key == key {
                Role::Anchor
            } else if pin.role == Role::Anchor {
                Role::Enrolled
            } else {
                continue;
            };
            pin.role = role;
            pin.dirty = true;
        }
    }

    /// Forget other instances holding this name or site id: the anchor's
    /// record, or the administrator's enrolment, says who they are now.
    fn drop_others(&mut self, key: &[u8; 32], site: Option<SiteId>, name: &str) {
        let mut removed = Vec::new();
        self.pins.retain(|p| {
            let other = &p.public_key != key
                && p.revoked_at.is_none()
                && p.role != Role::Anchor
                && (p.name.eq_ignore_ascii_case(name) || (site.is_some() && p.site_id == site));
            if other {
                removed.push(p.public_key);
            }
            !other
        });
        self.removed.extend(removed);
    }

    /// Apply a record of the anchor (checked by [`open_record`]): an
    /// enrolment or a revocation, unless a record of a later serial for the
    /// same key is already held.
    pub fn apply(&mut self, rec: &Record, signed: &SignedRecord) {
        let Ok(key) = <[u8; 32]>::try_from(rec.public_key.as_slice()) else {
            return;
        };
        if let Some(p) = self.by_key(&key) {
            if p.record.as_ref().is_some_and(|(s, _)| *s >= rec.serial) || p.role == Role::Anchor {
                return;
            }
        }
        let revoked_here = self.by_key(&key).and_then(|p| p.revoked_at);
        let pin = match rec.kind {
            RecordKind::Enrol => self.put(
                key,
                rec.site_id,
                &rec.name,
                rec.recipient.clone(),
                Role::Enrolled,
            ),
            RecordKind::Revoke => {
                let pin = self.put(
                    key,
                    rec.site_id,
                    &rec.name,
                    rec.recipient.clone(),
                    Role::Enrolled,
                );
                pin.revoked_at = Some(revoked_here.unwrap_or(rec.at));
                pin.keep_through = rec.keep_through;
                pin
            }
        };
        pin.record = Some((rec.serial, signed.clone()));
        pin.dirty = true;
    }
}

/// This instance's anchor.
pub fn anchor(conn: &Connection) -> Result<Anchor, Error> {
    let text: Option<String> = meta_get(conn, ANCHOR_KEY)?;
    match text.as_deref() {
        None => Ok(Anchor::FirstUse),
        Some("self") => Ok(Anchor::Own),
        Some(b64) => {
            let key = parse_public_key(b64).map_err(|_| damaged_pin("the anchor"))?;
            Ok(Anchor::Other(key))
        }
    }
}

/// Make this instance its own anchor (`init`).
pub fn anchor_self(conn: &Connection) -> Result<(), Error> {
    meta_set(conn, ANCHOR_KEY, "self")
}

/// Make the instance with `key` this instance's anchor.
pub fn anchor_to(conn: &Connection, key: &VerifyingKey) -> Result<(), Error> {
    meta_set(conn, ANCHOR_KEY, BASE64.encode(key.as_bytes()))
}

/// Sign a record with this instance's key (it is its own anchor).
pub fn sign_record(conn: &Connection, rec: &Record) -> Result<SignedRecord, Error> {
    let record = rmp_serde::to_vec_named(rec).map_err(|e| TrustError::DamagedKeyring {
        detail: format!("a trust record cannot be encoded: {e}"),
    })?;
    let key = signing_key(conn)?;
    let signature = key.sign(&signed_message(&record)).to_bytes().to_vec();
    Ok(SignedRecord { record, signature })
}

fn signed_message(record: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(RECORD_CONTEXT.len() + record.len());
    msg.extend_from_slice(RECORD_CONTEXT);
    msg.extend_from_slice(record);
    msg
}

/// Check a record that came in a bundle: its size, its signature under the
/// anchor's key, and what it holds. `None` if it is not the anchor's (it
/// is then ignored); an error if it is the anchor's but says something no
/// anchor writes.
pub fn open_record(signed: &SignedRecord, anchor: &VerifyingKey) -> Result<Option<Record>, Error> {
    if signed.record.len() > MAX_RECORD_BYTES {
        return Ok(None);
    }
    let Ok(sig) = <[u8; 64]>::try_from(signed.signature.as_slice()) else {
        return Ok(None);
    };
    if anchor
        .verify_strict(
            &signed_message(&signed.record),
            &Signature::from_bytes(&sig),
        )
        .is_err()
    {
        return Ok(None);
    }
    let bad = |detail: String| TrustError::BadRecord { detail };
    let rec: Record = rmp_serde::from_slice(&signed.record)
        .map_err(|e| bad(format!("it cannot be decoded ({e})")))?;
    if rec.public_key.len() != 32 || VerifyingKey::try_from(rec.public_key.as_slice()).is_err() {
        return Err(bad("its key is not an Ed25519 public key".into()).into());
    }
    check_name(&rec.name).map_err(|r| bad(format!("its name is unusable: {r}")))?;
    if let Some(recipient) = &rec.recipient {
        parse_recipient(recipient).map_err(|e| bad(format!("its recipient is unusable: {e}")))?;
    }
    if rec.serial == 0 || rec.serial > (1 << 53) {
        return Err(bad(format!("its serial {} is out of range", rec.serial)).into());
    }
    if rec.kind == RecordKind::Revoke && rec.keep_through.is_none_or(|k| k > 1 << 53) {
        return Err(bad("a revocation without a valid keep_through".into()).into());
    }
    Ok(Some(rec))
}

/// A public key as `fieldsync key` prints it (base64 of 32 bytes).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|_| "it is not base64 (copy it from `fieldsync key`)".to_owned())?;
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("it holds {} bytes, not 32", bytes.len()))?;
    VerifyingKey::from_bytes(&arr).map_err(|_| "it is not an Ed25519 public key".to_owned())
}

/// An age recipient as `fieldsync key` prints it (`age1…`).
pub fn parse_recipient(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.len() > 100 {
        return Err("it is longer than an age recipient".into());
    }
    text.parse::<age::x25519::Recipient>()
        .map(|r| r.to_string())
        .map_err(|_| "it is not an age recipient ('age1…', from `fieldsync key`)".to_owned())
}

/// The next serial for a record this instance signs.
pub fn next_serial(ring: &Keyring) -> u64 {
    ring.highest_serial().unwrap_or(0) + 1
}

/// The site id of the instance named `name` in `fieldsync_sites`, if any.
pub fn site_named(conn: &Connection, name: &str) -> Result<Option<SiteId>, Error> {
    let blob: Option<Vec<u8>> = conn
        .prepare_cached("SELECT site_id FROM fieldsync_sites WHERE name = ?1 COLLATE NOCASE")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    Ok(blob.as_deref().and_then(SiteId::from_slice))
}

/// Remember the highest serial of the anchor's records a peer holds (its
/// bundle's `trust_seen`): later bundles to it carry only later records.
pub fn save_trust_seen(conn: &Connection, peer: i64, seen: Option<u64>) -> Result<(), Error> {
    if let Some(seen) = seen {
        let seen = i64::try_from(seen.min(1 << 53)).unwrap_or(0);
        meta_set(conn, &format!("trust_seen {peer}"), seen)?;
    }
    Ok(())
}

/// What [`save_trust_seen`] remembered of a peer.
pub fn trust_seen(conn: &Connection, peer: i64) -> Result<Option<u64>, Error> {
    let seen: Option<i64> = meta_get(conn, &format!("trust_seen {peer}"))?;
    Ok(seen.and_then(|s| u64::try_from(s).ok()))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn damaged_pin(name: &str) -> Error {
    TrustError::DamagedKeyring {
        detail: format!("the key of '{name}' is not 32 bytes"),
    }
    .into()
}
