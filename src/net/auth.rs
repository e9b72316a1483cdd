//! Signed requests (spec/network.md, "Authentication"): what a client adds
//! to each request, signed with its instance's Ed25519 key, and what the
//! server checks before it reads a body: the key is one it knows and has
//! not revoked, the time is near its own, the nonce is new, the signature
//! holds. The body is bound by its BLAKE3, which the server compares once
//! the body is read.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// The request's signing key (base64).
pub const H_KEY: &str = "fieldsync-key";
/// Unix milliseconds when the request was signed.
pub const H_TIME: &str = "fieldsync-time";
/// 16 random bytes, hex.
pub const H_NONCE: &str = "fieldsync-nonce";
/// BLAKE3 of the body, hex.
pub const H_BODY: &str = "fieldsync-body";
/// Ed25519 over [`message`], base64.
pub const H_SIGNATURE: &str = "fieldsync-signature";

/// How far a request's time may be from the server's clock.
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

/// The domain the signature is made in, so it can never be taken for a
/// bundle's or a trust record's.
const CONTEXT: &[u8] = b"fieldsync request v1\0";

/// What a request's signature covers: the server it is for (`audience`,
/// the base64 of the server's key; empty for a hello, sent before the
/// client knows it), so a request cannot be replayed to another server.
fn message(
    audience: &str,
    method: &str,
    path: &str,
    key: &[u8; 32],
    time: i64,
    nonce: &str,
    body: &str,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + path.len() + 200);
    m.extend_from_slice(CONTEXT);
    for part in [
        audience.as_bytes(),
        method.as_bytes(),
        path.as_bytes(),
        BASE64.encode(key).as_bytes(),
        time.to_string().as_bytes(),
        nonce.as_bytes(),
    ] {
        m.extend_from_slice(part);
        m.push(0);
    }
    m.extend_from_slice(body.as_bytes());
    m
}

/// The headers that sign a request for the server whose key is `audience`
/// (base64; empty for a hello): `method` and `path` (with its query) as
/// sent, `body` the BLAKE3 of its body.
pub fn sign(
    key: &SigningKey,
    audience: &str,
    method: &str,
    path: &str,
    body: &blake3::Hash,
) -> Vec<(&'static str, String)> {
    let public = key.verifying_key().to_bytes();
    let time = crate::base::hlc::now_unix_ms();
    let mut nonce = [0u8; 16];
    // No randomness: the request is still signed, and a replay is still
    // bounded by the time window.
    let _ = getrandom::fill(&mut nonce);
    let nonce = hex(&nonce);
    let body = body.to_hex().to_string();
    let sig = key.sign(&message(
        audience, method, path, &public, time, &nonce, &body,
    ));
    vec![
        (H_KEY, BASE64.encode(public)),
        (H_TIME, time.to_string()),
        (H_NONCE, nonce),
        (H_BODY, body),
        (H_SIGNATURE, BASE64.encode(sig.to_bytes())),
    ]
}

pub use crate::base::hex;

/// A request's claims, parsed and its signature checked.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The key that signed it.
    pub key: [u8; 32],
    /// The BLAKE3 of the body it claims.
    pub body: [u8; 32],
    time: i64,
    nonce: [u8; 16],
}

/// Why a request is not believed: the status to answer and the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// 400, 401 or 403.
    pub status: u16,
    /// The one line the client prints.
    pub message: String,
}

fn denied(status: u16, message: impl Into<String>) -> Denied {
    Denied {
        status,
        message: message.into(),
    }
}

/// Parse and check a request's signature headers (`get` reads a header):
/// each present and well formed, the time within [`MAX_SKEW_MS`] of `now`,
/// the signature over `audience` (this server's key, base64; empty for a
/// hello), `method`, `path` and the claimed body hash valid. Whether the
/// key is known, and whether the nonce is new, the caller checks next.
pub fn check<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
    audience: &str,
    method: &str,
    path: &str,
    now: i64,
) -> Result<Signed, Denied> {
    let header = |name: &str| {
        get(name).ok_or_else(|| {
            denied(
                401,
                format!("the request is not signed (no {name} header): use `fieldsync sync`"),
            )
        })
    };
    let key_text = header(H_KEY)?;
    let time_text = header(H_TIME)?;
    let nonce_text = header(H_NONCE)?;
    let body_text = header(H_BODY)?;
    let sig_text = header(H_SIGNATURE)?;
    let key: [u8; 32] = BASE64
        .decode(key_text)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| denied(400, "the request's key is not an Ed25519 key"))?;
    let time: i64 = time_text
        .parse()
        .map_err(|_| denied(400, "the request's time is not a number"))?;
    let nonce: [u8; 16] = unhex(nonce_text)
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| denied(400, "the request's nonce is not 16 bytes of hex"))?;
    let body: [u8; 32] = unhex(body_text)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| denied(400, "the request's body hash is not a BLAKE3 hash"))?;
    let sig: [u8; 64] = BASE64
        .decode(sig_text)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| denied(400, "the request's signature is not an Ed25519 signature"))?;
    if time.abs_diff(now) > MAX_SKEW_MS.unsigned_abs() {
        return Err(denied(
            401,
            format!(
                "the request's time is {} minutes {} the server's clock; set this computer's clock and try again",
                time.abs_diff(now) / 60_000,
                if time > now { "ahead of" } else { "behind" }
            ),
        ));
    }
    let verifying = VerifyingKey::from_bytes(&key)
        .map_err(|_| denied(400, "the request's key is not an Ed25519 key"))?;
    let msg = message(audience, method, path, &key, time, nonce_text, body_text);
    verifying
        .verify_strict(&msg, &Signature::from_bytes(&sig))
        .map_err(|_| denied(401, "the request's signature does not hold"))?;
    Ok(Signed {
        key,
        body,
        time,
        nonce,
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Nonces seen in the last two skew windows, per key: a request seen
/// before is a replay. Only keys the server knows are recorded (the caller
/// checks the keyring first), and each key's list is bounded: with the
/// per-key rate limit a key cannot sign more requests than it holds in the
/// window.
#[derive(Default)]
pub struct Nonces {
    seen: Mutex<HashMap<[u8; 32], Recent>>,
}

/// One key's recent requests: (time, nonce), oldest first.
type Recent = VecDeque<(i64, [u8; 16])>;

/// Most nonces remembered per key: more than the rate limit lets a key
/// sign in the window (`serve --max-requests-per-minute` up to 400); past
/// it the oldest is forgotten.
const MAX_NONCES_PER_KEY: usize = 4096;

impl Nonces {
    /// Record `signed`'s nonce; false if it was seen already.
    pub fn fresh(&self, signed: &Signed, now: i64) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        let list = seen.entry(signed.key).or_default();
        while list
            .front()
            .is_some_and(|(t, _)| *t < now - 2 * MAX_SKEW_MS || list.len() > MAX_NONCES_PER_KEY)
        {
            list.pop_front();
        }
        if list.iter().any(|(_, n)| *n == signed.nonce) {
            return false;
        }
        list.push_back((signed.time.max(now), signed.nonce));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn headers<'a>(h: &'a [(&'static str, String)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |name| h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_signed_request_checks_and_a_changed_one_does_not() {
        let body = blake3::hash(b"bundle");
        let h = sign(&key(), "HQ", "PUT", "/v1/upload/ab", &body);
        let now = crate::base::hlc::now_unix_ms();
        let ok = check(headers(&h), "HQ", "PUT", "/v1/upload/ab", now).expect("signed");
        assert_eq!(ok.body, *body.as_bytes());
        assert_eq!(ok.key, key().verifying_key().to_bytes());
        let other_path = check(headers(&h), "HQ", "PUT", "/v1/upload/ac", now).unwrap_err();
        assert_eq!(other_path.status, 401);
        let other_method = check(headers(&h), "HQ", "POST", "/v1/upload/ab", now).unwrap_err();
        assert_eq!(other_method.status, 401);
        let other_server = check(headers(&h), "HQ2", "PUT", "/v1/upload/ab", now).unwrap_err();
        assert_eq!(other_server.status, 401);
        let late = check(
            headers(&h),
            "HQ",
            "PUT",
            "/v1/upload/ab",
            now + MAX_SKEW_MS + 60_000,
        )
        .unwrap_err();
        assert!(late.message.contains("behind"), "{}", late.message);
    }

    #[test]
    fn a_time_at_the_ends_of_the_range_is_refused_without_overflow() {
        for time in [i64::MIN, i64::MAX] {
            let mut h = sign(&key(), "", "GET", "/", &blake3::hash(b""));
            h[1].1 = time.to_string();
            let e = check(headers(&h), "", "GET", "/", crate::base::hlc::now_unix_ms());
            assert_eq!(e.unwrap_err().status, 401);
        }
    }

    #[test]
    fn a_nonce_is_taken_once() {
        let h = sign(&key(), "", "GET", "/v1/hello", &blake3::hash(b""));
        let now = crate::base::hlc::now_unix_ms();
        let signed = check(headers(&h), "", "GET", "/v1/hello", now).expect("signed");
        let nonces = Nonces::default();
        assert!(nonces.fresh(&signed, now));
        assert!(!nonces.fresh(&signed, now));
    }

    #[test]
    fn missing_and_malformed_headers_are_refused_with_their_name() {
        let mut h = sign(&key(), "", "GET", "/", &blake3::hash(b""));
        h.retain(|(n, _)| *n != H_NONCE);
        let e = check(headers(&h), "", "GET", "/", 0).unwrap_err();
        assert!(e.message.contains(H_NONCE));
        let mut h = sign(&key(), "", "GET", "/", &blake3::hash(b""));
        h[0].1 = "not base64!".into();
        assert_eq!(
            check(headers(&h), "", "GET", "/", 0).unwrap_err().status,
            400
        );
    }
}
