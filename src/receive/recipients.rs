//! The age recipients of the instances this one imports from
//! (spec/trust.md, "Encryption to the recipient"): each signed bundle's
//! header carries its sender's recipient; it is recorded with the sender's
//! pin (`fieldsync_pins.recipient`) so bundles back to it can be encrypted,
//! and a recipient differing from the one recorded is refused like a key
//! that differs from the pinned one.
//!
//! [`check`] only reads; [`record`] writes in the import's own transaction,
//! after the signer was pinned, so a refused import records nothing.

use rusqlite::Connection;

use crate::bundle::envelope::parse_recipient;
use crate::bundle::format::Header;
use crate::bundle::reader::Signer;
use crate::catalog::session::Session;
use crate::error::{BundleError, EnvelopeError, Error};
use crate::send::encrypt::recorded_recipient;

/// The recipient a bundle gives for its sender, if it is one to record:
/// signed, not this instance's own, well formed, and not recorded yet.
/// A recipient differing from the one recorded is refused. Reads only.
pub(crate) fn check(
    conn: &Connection,
    s: &Session,
    header: &Header,
    signer: Signer,
) -> Result<Option<String>, Error> {
    let Some(found) = &header.sender_recipient else {
        return Ok(None);
    };
    // Unsigned bundles pin nothing; this instance's own are refused later.
    if signer.key.is_none() || header.sender.id == s.local {
        return Ok(None);
    }
    parse_recipient(found).map_err(|why| BundleError::Malformed {
        detail: format!("the sender's encryption key: {why}"),
    })?;
    match recorded_recipient(conn, header.sender.id.as_bytes())? {
        Some(recorded) if &recorded == found => Ok(None),
        Some(recorded) => Err(EnvelopeError::RecipientChanged {
            sender: header.sender.name.clone(),
            found: found.clone(),
            recorded,
        }
        .into()),
        None => Ok(Some(found.clone())),
    }
}

/// Record `recipient` for the bundle's sender, whose key is pinned by now.
pub(crate) fn record(conn: &Connection, header: &Header, recipient: &str) -> Result<(), Error> {
    conn.prepare_cached(
        "UPDATE fieldsync_pins SET recipient = ?2 WHERE site_id = ?1 AND recipient IS NULL",
    )?
    .execute(rusqlite::params![
        header.sender.id.as_bytes().as_slice(),
        recipient
    ])?;
    Ok(())
}
