//! Origin statements as they travel (spec/trust.md, "Claims checked
//! against facts"): an instance's signed word of how many changes it has
//! made. This file owns their bytes — made, signed, decoded, verified — and
//! which ones a bundle carries; [`crate::catalog::statements`] keeps the
//! newest of each origin. Whether a statement's key may speak for its site
//! is [`crate::receive::trust::statement_key`]'s decision; what a bundle
//! may claim given the statements is [`crate::receive::claims`]'s.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rusqlite::Connection;

use crate::base::site_id::SiteId;
use crate::bundle::format::{Blob, STATEMENT_CONTEXT, SignedStatement};
use crate::error::Error;

/// Bytes of a statement before its name: site id, top, HLC, key.
const FIXED: usize = 16 + 8 + 8 + 32;

/// What an origin says of itself, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    /// The origin.
    pub site: SiteId,
    /// The highest change number it had made when it signed.
    pub top: u64,
    /// Its clock then (orders two statements of one top).
    pub hlc: u64,
    /// Its Ed25519 public key, which signed the statement.
    pub key: VerifyingKey,
    /// Its name.
    pub name: String,
}

impl Statement {
    /// The statement's bytes, as signed.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED + self.name.len());
        out.extend_from_slice(self.site.as_bytes());
        out.extend_from_slice(&self.top.to_be_bytes());
        out.extend_from_slice(&self.hlc.to_be_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    /// Decode a statement's bytes; `None` if they are not one.
    fn decode(bytes: &[u8]) -> Option<Statement> {
        if bytes.len() < FIXED {
            return None;
        }
        let site = SiteId::from_slice(&bytes[..16])?;
        let top = u64::from_be_bytes(bytes[16..24].try_into().ok()?);
        let hlc = u64::from_be_bytes(bytes[24..32].try_into().ok()?);
        let key: [u8; 32] = bytes[32..FIXED].try_into().ok()?;
        let key = VerifyingKey::from_bytes(&key).ok()?;
        let name = std::str::from_utf8(&bytes[FIXED..]).ok()?.to_owned();
        Some(Statement {
            site,
            top,
            hlc,
            key,
            name,
        })
    }

    /// Sign it with `key` (which must be the statement's own key).
    pub fn sign(&self, key: &SigningKey) -> SignedStatement {
        let bytes = self.encode();
        let signature = key.sign(&signed_message(&bytes));
        SignedStatement {
            statement: Blob(bytes),
            signature: Blob(signature.to_bytes().to_vec()),
        }
    }
}

fn signed_message(statement: &[u8]) -> Vec<u8> {
    [STATEMENT_CONTEXT, statement].concat()
}

/// Decode a statement and check its signature by the key it carries.
/// Whether that key may speak for the site is decided elsewhere
/// ([`crate::receive::trust::statement_key`]). `Err` says what is wrong.
pub(crate) fn open(signed: &SignedStatement) -> Result<Statement, &'static str> {
    let st = Statement::decode(&signed.statement.0).ok_or("is not a statement")?;
    let signature: [u8; 64] = signed
        .signature
        .0
        .as_slice()
        .try_into()
        .map_err(|_| "has a malformed signature")?;
    st.key
        .verify_strict(
            &signed_message(&signed.statement.0),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| "is not signed by the key it names")?;
    Ok(st)
}

/// The statements a bundle carries: this instance's own, made now (`top`
/// its counter, `hlc` the bundle's creation clock), and the held one of
/// every other origin in `origins`.
pub(crate) fn for_bundle(
    conn: &Connection,
    own: &Statement,
    key: &SigningKey,
    origins: impl IntoIterator<Item = SiteId>,
) -> Result<Vec<SignedStatement>, Error> {
    let held = crate::catalog::statements::held(conn)?;
    let mut out = vec![own.sign(key)];
    for site in origins {
        if site == own.site {
            continue;
        }
        if let Some((_, statement, signature)) = held.get(&site) {
            let signed = SignedStatement {
                statement: Blob(statement.clone()),
                signature: Blob(signature.clone()),
            };
            if !out.contains(&signed) {
                out.push(signed);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(key: &SigningKey) -> Statement {
        Statement {
            site: SiteId::random(),
            top: 57,
            hlc: 1 << 40,
            key: key.verifying_key(),
            name: "hq".into(),
        }
    }

    #[test]
    fn a_signed_statement_opens_and_an_edited_one_does_not() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let st = statement(&key);
        let signed = st.sign(&key);
        assert_eq!(open(&signed), Ok(st.clone()));
        let mut edited = signed.clone();
        edited.statement.0[23] ^= 1;
        assert!(open(&edited).is_err());
        // Signed by another key than the one it names.
        let other = SigningKey::from_bytes(&[8; 32]);
        let forged = st.sign(&other);
        assert!(open(&forged).is_err());
        let mut short = signed;
        short.statement.0.truncate(FIXED - 1);
        assert!(open(&short).is_err());
    }
}
