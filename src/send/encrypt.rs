//! Whom an export is encrypted to (spec/trust.md, "Encryption to the
//! recipient"): the age recipient recorded with each peer's pinned key
//! (`fieldsync_pins.recipient`, learnt from the peer's own signed bundles or
//! from `init --from`). Decided before the export changes anything, so an
//! export that cannot be encrypted is refused with the database as it was.
//! Every envelope is also encrypted to its sender's own key, so the sender
//! can read its own bundle files back.

use rusqlite::{Connection, OptionalExtension};

use crate::bundle::envelope::{OuterHeader, Sealer, parse_recipient};
use crate::bundle::format::SiteRef;
use crate::catalog::peers::resolve_for_export;
use crate::catalog::session::Session;
use crate::error::{EnvelopeError, Error, SiteError};
use crate::send::export::ExportTarget;

/// The recipients of an export to `target` and the outer header naming
/// them. Resolving a peer name may record a new peer: the caller runs this
/// in a transaction it rolls back.
pub(crate) fn sealer_for(
    conn: &Connection,
    s: &Session,
    target: &ExportTarget,
) -> Result<Sealer, Error> {
    let names: Vec<&String> = match target {
        ExportTarget::Peer { to, .. } | ExportTarget::Acknowledge { to } => vec![to],
        ExportTarget::FullFor { peers } => peers.iter().collect(),
        ExportTarget::Full => return Err(EnvelopeError::FullWithoutRecipients.into()),
    };
    let mut outer = OuterHeader {
        sender: SiteRef {
            id: s.local,
            name: s.name.clone(),
        },
        recipients: Vec::new(),
        created: crate::base::hlc::now_unix_ms().max(0) as u64,
    };
    let mut keys = Vec::new();
    for name in names {
        let (peer, _) = resolve_for_export(conn, s, name)?;
        let no_key = || EnvelopeError::NoRecipient {
            peer: peer.name.clone(),
        };
        // A peer heard from is known by site id; one enrolled with its
        // site id (`trust --stdin`) but not heard from yet, by its keyring
        // entry.
        let site = match peer.site.and_then(|idx| s.sites.get(idx)) {
            Some(site) => SiteRef {
                id: site.id,
                name: site.name.clone(),
            },
            None => {
                let ring = crate::catalog::keyring::Keyring::load(conn)?;
                let pin = ring
                    .by_name(&peer.name)
                    .filter(|p| p.revoked_at.is_none())
                    .ok_or_else(no_key)?;
                SiteRef {
                    id: pin.site_id.ok_or_else(no_key)?,
                    name: pin.name.clone(),
                }
            }
        };
        if outer.recipients.iter().any(|r| r.id == site.id) {
            continue;
        }
        let text = recorded_recipient(conn, site.id.as_bytes())?.ok_or_else(no_key)?;
        let key = parse_recipient(&text).map_err(|why| SiteError::Damaged {
            detail: format!("fieldsync_pins holds for '{}' {why}", site.name),
        })?;
        outer.recipients.push(site);
        keys.push(key);
    }
    // This instance can read its own bundles (to decide whether an export
    // may overwrite one): its key is among the age recipients, not named
    // in the outer header.
    let own = crate::catalog::keys::public_keys(conn)?.recipient;
    keys.push(parse_recipient(&own).map_err(|why| SiteError::KeyDamaged {
        detail: format!("this instance's encryption key: {why}"),
    })?);
    Ok(Sealer { outer, keys })
}

/// The age recipient recorded for a site id, if any.
pub(crate) fn recorded_recipient(
    conn: &Connection,
    site_id: &[u8; 16],
) -> Result<Option<String>, Error> {
    Ok(conn
        .prepare_cached("SELECT recipient FROM fieldsync_pins WHERE site_id = ?1")?
        .query_row([site_id.as_slice()], |r| r.get::<_, Option<String>>(0))
        .optional()?
        .flatten())
}
