//! This instance's own key pairs, kept in `fieldsync_keys`, and the
//! fingerprint people read over the phone to check them (spec/trust.md).
//!
//! Two pairs, made together at `init` (or when a database of an older
//! engine schema is first opened) and never changed: an Ed25519 pair
//! (`sign`) that signs the bundles this instance writes ([`signing_key`]
//! hands it to the bundle writer, inside the library only), and an age
//! X25519 identity (`encrypt`) that bundles sent to this instance are
//! encrypted to ([`encryption_identity`] hands it to the envelope reader,
//! inside the library only). The private halves stay in the database beside the
//! personal data they protect; nothing in this module hands them out of the
//! library (the test-only `fuzzing::signing_key` aside, behind the
//! `fuzzing` feature), and [`KeyReport`], the only thing that leaves it,
//! holds public halves only.
//!
//! Randomness comes from the operating system (`getrandom` for the Ed25519
//! seed; age's own generator, the same OS source, for the X25519 identity).

use std::str::FromStr;

use age::secrecy::ExposeSecret as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use zeroize::{Zeroize as _, Zeroizing};

use crate::error::{Error, SiteError};

/// `fieldsync_keys.purpose` of the Ed25519 signing pair.
const SIGN: &str = "sign";
/// `fieldsync_keys.purpose` of the age X25519 encryption identity.
const ENCRYPT: &str = "encrypt";

/// BLAKE3 key-derivation context of the fingerprint: a hash made for
/// anything else can never be taken for one.
const FINGERPRINT_CONTEXT: &str = "fieldsync 2026-11 instance key fingerprint v1";

/// BLAKE3 key-derivation context of the fingerprint of a signing key alone
/// (what `inspect` and refusals show of a bundle's signer, which carries
/// only its Ed25519 key).
const SIGNING_FINGERPRINT_CONTEXT: &str = "fieldsync 2026-11 signing key fingerprint v1";

/// Bytes of the BLAKE3 hash a fingerprint shows (80 bits; spec/trust.md
/// says why that is enough).
pub const FINGERPRINT_BYTES: usize = 10;

/// Crockford's base-32 alphabet (what [`base32`] writes): digits and
/// capitals without I, L, O and U, so nothing read aloud or copied by hand
/// is mistaken for something else.
#[cfg(test)]
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// An instance's public identity, as `fieldsync key` shows it. It never
/// holds a private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyReport {
    /// The instance's name.
    #[serde(rename = "instance")]
    pub name: String,
    /// Its site id.
    #[serde(rename = "site")]
    pub site_id: String,
    /// Its Ed25519 public key (bundles it signs), base64 of 32 bytes.
    pub public_key: String,
    /// Its age X25519 recipient (bundles sent to it are encrypted to this),
    /// `age1…`.
    pub recipient: String,
    /// BLAKE3 of both public keys, 16 characters of Crockford base 32 in
    /// four groups (`7KQ4-M2XA-9TFE-3HWR`), to read over the phone.
    pub fingerprint: String,
    /// The fingerprint of the Ed25519 public key alone, as `inspect` and
    /// refused imports show a bundle's signer (text output only).
    #[serde(skip)]
    pub signing_fingerprint: String,
}

/// The public halves of this instance's keys, checked against their
/// private halves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeys {
    /// Ed25519 public key.
    pub sign: VerifyingKey,
    /// age recipient string (`age1…`).
    pub recipient: String,
}

impl PublicKeys {
    /// The public signing key as text (base64).
    pub fn public_key_text(&self) -> String {
        BASE64.encode(self.sign.as_bytes())
    }

    /// The fingerprint of both public keys.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.sign.as_bytes(), &self.recipient)
    }
}

/// The fingerprint of an Ed25519 public key and an age recipient: the first
/// [`FINGERPRINT_BYTES`] of a domain-separated BLAKE3 hash of both, in
/// Crockford base 32, grouped by four.
pub fn fingerprint(sign: &[u8; 32], recipient: &str) -> String {
    let mut hasher = blake3::Hasher::new_derive_key(FINGERPRINT_CONTEXT);
    hasher.update(sign);
    // The recipient has a variable length: its length first, so no two
    // pairs of inputs hash the same bytes.
    hasher.update(&(recipient.len() as u64).to_le_bytes());
    hasher.update(recipient.as_bytes());
    let hash = hasher.finalize();
    let mut bytes = [0u8; FINGERPRINT_BYTES];
    bytes.copy_from_slice(&hash.as_bytes()[..FINGERPRINT_BYTES]);
    group(&base32(&bytes), 4)
}

/// The fingerprint of an Ed25519 public key alone, in the same form as
/// [`fingerprint`] but under its own context: what a bundle's signer is
/// shown as (a bundle carries the signing key only).
pub fn signing_fingerprint(sign: &[u8; 32]) -> String {
    let mut hasher = blake3::Hasher::new_derive_key(SIGNING_FINGERPRINT_CONTEXT);
    hasher.update(sign);
    let hash = hasher.finalize();
    group(&base32(&hash.as_bytes()[..FINGERPRINT_BYTES]), 4)
}

/// This instance's signing key, which signs every bundle it writes. It is
/// handed to the bundle writer only and never leaves the library.
pub(crate) fn signing_key(conn: &Connection) -> Result<SigningKey, Error> {
    let (public, secret) = key_row(conn, SIGN)?;
    let mut seed: [u8; 32] = BASE64
        .decode(secret.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| damaged("the signing key's private half is malformed"))?;
    let key = SigningKey::from_bytes(&seed);
    seed.zeroize();
    if BASE64.encode(key.verifying_key().as_bytes()) != public {
        return Err(damaged(
            "the signing key's public half does not match its private half",
        ));
    }
    Ok(key)
}

/// This instance's age identity, which decrypts the bundles sent to it. It
/// is handed to the envelope reader only and never leaves the library.
pub(crate) fn encryption_identity(conn: &Connection) -> Result<age::x25519::Identity, Error> {
    let (recipient, secret) = key_row(conn, ENCRYPT)?;
    let identity = age::x25519::Identity::from_str(&secret)
        .map_err(|_| damaged("the encryption key's private half is malformed"))?;
    if identity.to_public().to_string() != recipient {
        return Err(damaged(
            "the encryption key's public half does not match its private half",
        ));
    }
    Ok(identity)
}

/// A public key as text (base64), as `fieldsync key` shows it.
pub fn key_text(key: &[u8; 32]) -> String {
    BASE64.encode(key)
}

/// Crockford base 32 of `bytes` (digits and capitals without I, L, O and
/// U), most significant bit first, without padding.
pub fn base32(bytes: &[u8]) -> String {
    base32::encode(base32::Alphabet::Crockford, bytes)
}

/// A fingerprint as typed, compared the way Crockford's base 32 is read:
/// case, dashes and spaces do not matter, O is 0, I and L are 1.
pub(crate) fn normal_fingerprint(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect()
}

/// `text` cut into groups of `size` characters joined by `-`.
pub(crate) fn group(text: &str, size: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// Make this instance's key pairs if it has none (at `init`, or opening a
/// database of an older engine schema). True if they were made.
pub fn ensure_keys(conn: &Connection) -> Result<bool, Error> {
    let have: i64 = conn.query_row("SELECT count(*) FROM fieldsync_keys", [], |r| r.get(0))?;
    if have > 0 {
        return Ok(false);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| SiteError::NoRandomness {
        detail: e.to_string(),
    })?;
    let signing = SigningKey::from_bytes(&seed);
    let secret = Zeroizing::new(BASE64.encode(seed));
    seed.zeroize();
    conn.execute(
        "INSERT INTO fieldsync_keys(purpose, public, secret, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            SIGN,
            BASE64.encode(signing.verifying_key().as_bytes()),
            secret.as_str(),
            now
        ],
    )?;
    // The OS generator just answered above, so age's (the same source)
    // will too.
    let identity = age::x25519::Identity::generate();
    conn.execute(
        "INSERT INTO fieldsync_keys(purpose, public, secret, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            ENCRYPT,
            identity.to_public().to_string(),
            identity.to_string().expose_secret(),
            now
        ],
    )?;
    Ok(true)
}

/// This instance's public keys, each checked against its private half: a
/// row missing, malformed or not matching is a damaged table.
pub fn public_keys(conn: &Connection) -> Result<PublicKeys, Error> {
    let (public, secret) = key_row(conn, SIGN)?;
    let mut seed: [u8; 32] = BASE64
        .decode(secret.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| damaged("the signing key's private half is malformed"))?;
    let sign = SigningKey::from_bytes(&seed).verifying_key();
    seed.zeroize();
    if BASE64.encode(sign.as_bytes()) != public {
        return Err(damaged(
            "the signing key's public half does not match its private half",
        ));
    }
    let (recipient, secret) = key_row(conn, ENCRYPT)?;
    let identity = age::x25519::Identity::from_str(&secret)
        .map_err(|_| damaged("the encryption key's private half is malformed"))?;
    if identity.to_public().to_string() != recipient {
        return Err(damaged(
            "the encryption key's public half does not match its private half",
        ));
    }
    Ok(PublicKeys { sign, recipient })
}

fn key_row(conn: &Connection, purpose: &str) -> Result<(String, String), Error> {
    conn.query_row(
        "SELECT public, secret FROM fieldsync_keys WHERE purpose = ?1",
        [purpose],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?
    .ok_or_else(|| damaged(&format!("fieldsync_keys has no '{purpose}' key")))
}

fn damaged(detail: &str) -> Error {
    SiteError::KeyDamaged {
        detail: detail.to_owned(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::store::memory_db;

    #[test]
    fn base32_follows_crockford_most_significant_bit_first() {
        assert_eq!(base32(&[]), "");
        assert_eq!(base32(&[0]), "00");
        assert_eq!(base32(&[0xff]), "ZW");
        // 0x00 0x44 0x32 0x14 0xC7 = 00000 00001 00010 00011 00100 00101 00110 00111
        assert_eq!(base32(&[0x00, 0x44, 0x32, 0x14, 0xC7]), "01234567");
        assert_eq!(base32(&[0xff; 5]), "ZZZZZZZZ");
        // Ten bytes are sixteen characters, none of them ambiguous.
        let text = base32(&[0xa5; FINGERPRINT_BYTES]);
        assert_eq!(text.len(), 16);
        assert!(!text.contains(['I', 'L', 'O', 'U']));
    }

    #[test]
    fn a_fingerprint_is_four_groups_of_four_unambiguous_characters() {
        let f = fingerprint(&[7; 32], "age1example");
        let groups: Vec<&str> = f.split('-').collect();
        assert_eq!(groups.len(), 4, "{f}");
        for g in groups {
            assert_eq!(g.len(), 4, "{f}");
            assert!(g.bytes().all(|b| ALPHABET.contains(&b)), "{f}");
        }
        // Stable, and it covers both keys.
        assert_eq!(f, fingerprint(&[7; 32], "age1example"));
        assert_ne!(f, fingerprint(&[8; 32], "age1example"));
        assert_ne!(f, fingerprint(&[7; 32], "age1exampla"));
    }

    #[test]
    fn the_fingerprint_is_the_hash_with_its_own_context() {
        let mut h = blake3::Hasher::new_derive_key(FINGERPRINT_CONTEXT);
        h.update(&[1; 32]);
        h.update(&3u64.to_le_bytes());
        h.update(b"abc");
        let want = group(&base32(&h.finalize().as_bytes()[..10]), 4);
        assert_eq!(fingerprint(&[1; 32], "abc"), want);
        // Not a plain hash of the same bytes.
        let plain = blake3::hash(&[[1u8; 32].as_slice(), b"abc"].concat());
        assert_ne!(want, group(&base32(&plain.as_bytes()[..10]), 4));
    }

    #[test]
    fn keys_are_made_once_and_check_against_their_private_halves() -> Result<(), Error> {
        let conn = memory_db("")?;
        crate::catalog::store::create_engine_tables(&conn)?;
        assert!(ensure_keys(&conn)?);
        let first = public_keys(&conn)?;
        assert!(!ensure_keys(&conn)?);
        assert_eq!(public_keys(&conn)?, first);
        assert!(first.recipient.starts_with("age1"));
        assert_eq!(first.public_key_text().len(), 44);
        // Another database, other keys.
        let other = memory_db("")?;
        crate::catalog::store::create_engine_tables(&other)?;
        ensure_keys(&other)?;
        assert_ne!(public_keys(&other)?.fingerprint(), first.fingerprint());
        // A public half that does not match is damage, reported.
        conn.execute(
            "UPDATE fieldsync_keys SET public = ?1 WHERE purpose = 'sign'",
            [public_keys(&other)?.public_key_text()],
        )?;
        let err = public_keys(&conn).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("does not match")));
        Ok(())
    }
}
