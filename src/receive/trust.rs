//! Who may send a bundle (spec/trust.md, "Enrolment, anchor, revocation"):
//! the signer of a version-4 bundle, checked by [`crate::bundle::verify`],
//! must be in this instance's keyring (`crate::catalog::keyring`) under the
//! site id and the name the header gives, and not revoked — judged with
//! the anchor's records the bundle itself carries applied. A database set
//! up before enrolment (no anchor) pins each sender at its first bundle
//! instead. Unsigned bundles (versions 1 to 3) are admitted only while
//! `fieldsync_meta.accept_unsigned_until` is in the future.
//!
//! [`admit`] only reads; [`settle`] writes what it learnt in the import's
//! own transaction, so a refused or rolled-back import changes nothing.

use ed25519_dalek::VerifyingKey;
use rusqlite::Connection;

use crate::base::site_id::SiteId;
use crate::bundle::format::Header;
use crate::bundle::reader::Signer;
use crate::bundle::statement::Statement;
use crate::catalog::keyring::{Anchor, Keyring, MAX_RECORDS, anchor, open_record, site_named};
use crate::catalog::keys::{key_text, public_keys, signing_fingerprint};
use crate::catalog::session::Session;
use crate::catalog::site::{check_new_name, meta_get, meta_set};
use crate::catalog::store::db_arg;
use crate::error::{Error, TrustError};

/// The `fieldsync_meta` key holding the end (unix ms) of the period in
/// which unsigned bundles are imported.
pub const ACCEPT_UNSIGNED_KEY: &str = "accept_unsigned_until";

/// Longest migration period `--allow-unsigned-for` grants, in days.
pub const MAX_UNSIGNED_DAYS: u32 = 90;

/// The keyring as the bundle leaves it: its anchor's records applied and
/// its sender bound to its site id (or pinned on first use). Written by
/// [`settle`] in the import's own transaction.
#[derive(Debug)]
pub(crate) struct Admission {
    ring: Keyring,
}

/// Whether the bundle's signer may send it as the sender its header names
/// (spec/trust.md, "Enrolment, anchor, revocation"), judged on the keyring
/// with the records the bundle carries applied. Reads only.
pub(crate) fn admit(
    conn: &Connection,
    s: &Session,
    header: &Header,
    signer: Signer,
) -> Result<Admission, Error> {
    let (mut ring, anchor) = ring_for(conn, header)?;
    let Some(key) = signer.key else {
        let until: Option<i64> = meta_get(conn, ACCEPT_UNSIGNED_KEY)?;
        if until.is_some_and(|t| t > chrono::Utc::now().timestamp_millis()) {
            return Ok(Admission { ring });
        }
        return Err(TrustError::Unsigned {
            sender: header.sender.name.clone(),
            version: signer.version,
            db: db_arg(conn),
        }
        .into());
    };
    let found = key.to_bytes();
    check_sender(conn, s, &ring, &anchor, header, &found)?;
    ring.seen(
        &found,
        header.sender.id,
        &header.sender.name,
        anchor == Anchor::FirstUse,
    );
    Ok(Admission { ring })
}

/// Write what [`admit`] changed in the keyring, in the import's transaction.
pub(crate) fn settle(conn: &Connection, mut admission: Admission) -> Result<(), Error> {
    admission.ring.save(conn)
}

fn check_sender(
    conn: &Connection,
    s: &Session,
    ring: &Keyring,
    anchor: &Anchor,
    header: &Header,
    found: &[u8; 32],
) -> Result<(), Error> {
    let sender = &header.sender;
    let fingerprint = signing_fingerprint(found);
    let own = public_keys(conn)?.sign.to_bytes();
    if sender.id == s.local {
        // This instance's own site id is pinned to its own key (the bundle
        // is then refused anyway, as its own).
        if found == &own {
            return Ok(());
        }
        return Err(TrustError::KeyChanged {
            sender: sender.name.clone(),
            found: key_text(found),
            found_fingerprint: fingerprint,
            pinned: key_text(&own),
        }
        .into());
    }
    if found == &own {
        return Err(TrustError::KeyOfAnotherSite {
            sender: sender.name.clone(),
            key: key_text(found),
            fingerprint,
            owner: s.name.clone(),
        }
        .into());
    }
    if let Some(pin) = ring.by_key(found) {
        if let Some(at) = pin.revoked_at {
            let by = match (anchor, &pin.record) {
                (Anchor::Other(_), Some(_)) => " by HQ".to_owned(),
                _ => String::new(),
            };
            return Err(TrustError::Revoked {
                sender: pin.name.clone(),
                when: chrono::DateTime::from_timestamp_millis(at).map_or_else(
                    || at.to_string(),
                    |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
                ),
                by,
                db: db_arg(conn),
            }
            .into());
        }
        if let Some(site) = pin.site_id.filter(|site| *site != sender.id) {
            let owner = ring
                .by_site(&site)
                .map_or_else(|| site.to_string(), |p| p.name.clone());
            return Err(TrustError::KeyOfAnotherSite {
                sender: sender.name.clone(),
                key: key_text(found),
                fingerprint,
                owner,
            }
            .into());
        }
        if !pin.name.eq_ignore_ascii_case(&sender.name) {
            return Err(TrustError::OtherName {
                sender: sender.name.clone(),
                fingerprint,
                enrolled: pin.name.clone(),
            }
            .into());
        }
        return Ok(());
    }
    if let Some(pin) = ring.by_site(&sender.id) {
        return Err(TrustError::KeyChanged {
            sender: sender.name.clone(),
            found: key_text(found),
            found_fingerprint: fingerprint,
            pinned: key_text(&pin.public_key),
        }
        .into());
    }
    let owner = if sender.name.eq_ignore_ascii_case(&s.name) {
        Some(signing_fingerprint(&own))
    } else if let Some(pin) = ring.by_name(&sender.name) {
        Some(signing_fingerprint(&pin.public_key))
    } else if site_named(conn, &sender.name)?.is_some_and(|site| site != sender.id) {
        Some("(not pinned here)".to_owned())
    } else {
        None
    };
    if let Some(owner_fingerprint) = owner {
        return Err(TrustError::NameOfAnother {
            sender: sender.name.clone(),
            fingerprint,
            owner_fingerprint,
        }
        .into());
    }
    let db = db_arg(conn);
    let what_to_do = match anchor {
        Anchor::FirstUse => match check_new_name(&sender.name) {
            // Before enrolment: pinned at its first bundle, if its name
            // cannot pass for another's.
            Ok(()) => return Ok(()),
            Err(reason) => format!(
                "its name '{}' cannot be a new instance's name ({reason}): it may be an impostor using a look-alike name; do not import it",
                sender.name
            ),
        },
        Anchor::Own => format!(
            "if '{}' is one of your instances, check this fingerprint with its officer (`fieldsync key` there shows it as the signing key) and enrol it: `fieldsync trust --db {db} {} {}`; otherwise do not import it",
            sender.name,
            shell_word(&sender.name),
            key_text(found)
        ),
        Anchor::Other(_) => format!(
            "your HQ has not enrolled '{}', or its enrolment has not reached this instance yet: import a newer bundle from HQ first; if you have checked the fingerprint with HQ, you can enrol it here: `fieldsync trust --db {db} {} {}`",
            sender.name,
            shell_word(&sender.name),
            key_text(found)
        ),
    };
    Err(TrustError::NotEnrolled {
        sender: sender.name.clone(),
        fingerprint,
        what_to_do,
    }
    .into())
}

/// A name as a shell word (names are letters, digits, '-', '_' and '.').
fn shell_word(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        name.to_owned()
    } else {
        format!("'{}'", name.replace('\'', "'\\''"))
    }
}

/// The keyring with the anchor's records `header` carries applied (in
/// memory), and this instance's anchor: what [`admit`] judges the sender
/// by and [`statement_key`] the origins of the statements by.
pub(crate) fn ring_for(conn: &Connection, header: &Header) -> Result<(Keyring, Anchor), Error> {
    let mut ring = Keyring::load(conn)?;
    let anchor = anchor(conn)?;
    let anchor_key = match &anchor {
        Anchor::Own => Some(public_keys(conn)?.sign),
        Anchor::Other(key) => Some(*key),
        Anchor::FirstUse => None,
    };
    if let Some(anchor_key) = anchor_key {
        for signed in header.trust.iter().take(MAX_RECORDS) {
            if let Some(rec) = open_record(signed, &anchor_key)? {
                ring.apply(&rec, signed);
            }
        }
    }
    Ok((ring, anchor))
}

/// A key met through an origin statement, to record once the import is
/// applied ([`pin`]): bound to the statement's site id if it is enrolled
/// by name and key only, or pinned for it (trust on first use through a
/// relay, on a database without an anchor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewPin {
    key: VerifyingKey,
    site: SiteId,
    name: String,
}

/// Whether `key` may sign origin statements for `site`
/// (spec/trust.md, "Claims checked against facts"): this instance's own key
/// for its own site id; the key the keyring (with the bundle's records,
/// [`ring_for`]) holds for a site it knows; for the bundle's sender, the
/// key that signed the bundle (already admitted); an enrolled key not yet
/// bound to a site, for a statement under the name it was enrolled with.
/// With an anchor, any other key is refused: statements speak only for
/// enrolled instances. Without one (a database set up before enrolment), a
/// key no other site has is trusted on first use through the relay.
/// `Ok(Some(_))`: record it with [`pin`] once the import is applied.
pub(crate) fn statement_key(
    conn: &Connection,
    s: &Session,
    (ring, anchor): (&Keyring, &Anchor),
    header: &Header,
    signer: Option<VerifyingKey>,
    st: &Statement,
) -> Result<Option<NewPin>, Error> {
    let (site, name, key) = (&st.site, st.name.as_str(), &st.key);
    let found = key.to_bytes();
    let changed = || -> Error {
        TrustError::StatementKeyChanged {
            sender: header.sender.name.clone(),
            origin: name.to_owned(),
            found: key_text(&found),
            found_fingerprint: signing_fingerprint(&found),
        }
        .into()
    };
    let own = public_keys(conn)?.sign;
    if *site == s.local {
        return if own == *key {
            Ok(None)
        } else {
            Err(changed())
        };
    }
    if let Some(pin) = ring.by_site(site) {
        return if pin.public_key == found {
            Ok(None)
        } else {
            Err(changed())
        };
    }
    if *site == header.sender.id && signer.is_some() {
        return if signer == Some(*key) {
            Ok(None)
        } else {
            Err(changed())
        };
    }
    let owner = if own == *key {
        Some(s.name.clone())
    } else if signer == Some(*key) {
        Some(header.sender.name.clone())
    } else {
        ring.by_key(&found)
            .filter(|p| p.site_id.is_some() || !p.name.eq_ignore_ascii_case(name))
            .map(|p| p.name.clone())
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
    let enrolled = ring.by_key(&found).is_some();
    if !enrolled && *anchor != Anchor::FirstUse {
        return Err(TrustError::StatementKeyUnknown {
            sender: header.sender.name.clone(),
            origin: name.to_owned(),
            fingerprint: signing_fingerprint(&found),
        }
        .into());
    }
    Ok(Some(NewPin {
        key: *key,
        site: *site,
        name: name.to_owned(),
    }))
}

/// Record a key met through an origin statement ([`statement_key`]), in
/// the import's transaction.
pub(crate) fn pin(conn: &Connection, new: &NewPin) -> Result<(), Error> {
    let mut ring = Keyring::load(conn)?;
    ring.seen(&new.key.to_bytes(), new.site, &new.name, true);
    ring.save(conn)
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
