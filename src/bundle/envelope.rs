//! The encrypted envelope around a signed bundle (spec/trust.md,
//! "Encryption to the recipient"): a short outer header anyone can read
//! (who sent it, to whom, when), then an age stream (X25519 recipients,
//! ChaCha20-Poly1305 in 64 KiB chunks; the `age` crate, nothing invented
//! here) whose plaintext is the signed version-4 bundle. Sign, then
//! encrypt.
//!
//! ```text
//! magic     8 bytes   89 46 53 45 0D 0A 1A 0A  ("\x89FSE\r\n\x1a\n")
//! version   u16 LE    1
//! olen      u32 LE    length of the outer header, at most 64 KiB
//! outer     olen bytes, MessagePack map {sender {id, name},
//!                     recipients [{id, name}], created (unix ms)}
//! age       an age v1 file (header at most 256 KiB), plaintext = the bundle
//! ```
//!
//! This module owns the format, reading it ([`read_outer`], [`open`],
//! [`Opened`], which reads the plaintext as a seekable stream so the
//! importer's two passes decrypt twice instead of writing the plaintext
//! anywhere) and writing it ([`Sealer`]). The outer header is not trusted:
//! [`check_agrees`] compares it with the signed header inside.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::bundle::format::{SiteRef, bounded};
use crate::catalog::site::check_name;
use crate::error::EnvelopeError;

/// The first eight bytes of an encrypted bundle: those of a bundle with
/// `E` (encrypted) for `B`, so the same transfer damage shows the same way.
pub const ENVELOPE_MAGIC: [u8; 8] = [0x89, b'F', b'S', b'E', b'\r', b'\n', 0x1a, b'\n'];

/// The envelope version this build writes and reads.
pub const ENVELOPE_VERSION: u16 = 1;

/// Bytes before the outer header: magic, version, outer header length.
pub const ENVELOPE_PREAMBLE_LEN: u64 = 8 + 2 + 4;

/// Largest outer header accepted: [`MAX_RECIPIENTS`] recipients with
/// names of about 40 characters.
pub const MAX_OUTER_HEADER_BYTES: u32 = 64 << 10;

/// Most recipients an envelope may name.
pub const MAX_RECIPIENTS: usize = 1000;

/// Largest age header accepted: one X25519 stanza is about 100 bytes, so
/// [`MAX_RECIPIENTS`] fit with room to spare. Checked before age parses it.
pub const MAX_AGE_HEADER_BYTES: u64 = 256 << 10;

/// Longest age recipient string accepted (an X25519 one is 62 characters).
pub const MAX_RECIPIENT_CHARS: usize = 100;

/// The visible header of an encrypted bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OuterHeader {
    /// Who says it sent the bundle (checked against the signed header
    /// inside once decrypted).
    pub sender: SiteRef,
    /// The instances it is encrypted to.
    #[serde(deserialize_with = "de_recipients")]
    pub recipients: Vec<SiteRef>,
    /// When it was written: the sender's wall clock, unix ms (informative).
    pub created: u64,
}

fn de_recipients<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SiteRef>, D::Error> {
    bounded(d, MAX_RECIPIENTS)
}

impl OuterHeader {
    /// The recipients' names, `'field-1', 'field-2'`.
    pub fn recipient_names(&self) -> String {
        self.recipients
            .iter()
            .map(|r| format!("'{}'", r.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Parse an age X25519 recipient (`age1…`) as a bundle header or a peer
/// record gives it, bounded in length first.
pub fn parse_recipient(text: &str) -> Result<age::x25519::Recipient, String> {
    if text.len() > MAX_RECIPIENT_CHARS {
        return Err(format!(
            "an age recipient of {} characters, over {MAX_RECIPIENT_CHARS}",
            text.len()
        ));
    }
    age::x25519::Recipient::from_str(text).map_err(|_| "not an age X25519 recipient".to_owned())
}

/// True if the file starts with the envelope's magic. Leaves the reader at
/// the start.
pub fn is_envelope<R: Read + Seek>(r: &mut R) -> io::Result<bool> {
    r.seek(SeekFrom::Start(0))?;
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    r.seek(SeekFrom::Start(0))?;
    Ok(got == head.len() && head == ENVELOPE_MAGIC)
}

fn malformed(detail: impl Into<String>) -> EnvelopeError {
    EnvelopeError::Malformed {
        detail: detail.into(),
    }
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), EnvelopeError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => EnvelopeError::Damaged {
            detail: "the file ends early".into(),
        },
        _ => EnvelopeError::Io(e),
    })
}

/// Read and check the outer header of an envelope (magic, version, length,
/// names, the number of recipients), leaving the reader at the start of
/// the age stream. Nothing else of the file is read.
pub fn read_outer<R: Read + Seek>(r: &mut R) -> Result<OuterHeader, EnvelopeError> {
    r.seek(SeekFrom::Start(0))?;
    let mut magic = [0u8; 8];
    read_exact(r, &mut magic)?;
    if magic != ENVELOPE_MAGIC {
        return Err(malformed(
            "it does not start with the encrypted bundle's signature",
        ));
    }
    let mut version = [0u8; 2];
    read_exact(r, &mut version)?;
    let version = u16::from_le_bytes(version);
    if version != ENVELOPE_VERSION {
        return Err(EnvelopeError::NewerVersion { found: version });
    }
    let mut olen = [0u8; 4];
    read_exact(r, &mut olen)?;
    let olen = u32::from_le_bytes(olen);
    if olen > MAX_OUTER_HEADER_BYTES {
        return Err(malformed(format!(
            "its outer header would be {olen} bytes, over the {} KiB limit",
            MAX_OUTER_HEADER_BYTES >> 10
        )));
    }
    let mut bytes = vec![0u8; olen as usize];
    read_exact(r, &mut bytes)?;
    let outer: OuterHeader = rmp_serde::from_slice(&bytes)
        .map_err(|e| malformed(format!("its outer header does not decode: {e}")))?;
    for site in std::iter::once(&outer.sender).chain(&outer.recipients) {
        check_name(&site.name).map_err(|why| {
            malformed(format!(
                "its outer header names an instance {:?}: {why}",
                site.name.chars().take(64).collect::<String>()
            ))
        })?;
    }
    if outer.recipients.is_empty() {
        return Err(malformed("its outer header names no recipient"));
    }
    Ok(outer)
}

/// A bundle file as the bundle reader sees it: the file itself, or the
/// plaintext of an envelope, decrypted as it is read (seeking decrypts the
/// chunk it lands in; nothing is written anywhere).
pub enum Opened<R: Read + Seek> {
    /// A bundle that is not encrypted.
    Plain(R),
    /// An encrypted bundle and its outer header.
    Sealed {
        /// The plaintext stream.
        stream: Box<age::stream::StreamReader<R>>,
        /// What the envelope says outside.
        outer: OuterHeader,
    },
}

impl<R: Read + Seek> Opened<R> {
    /// The outer header, for an encrypted bundle.
    pub fn outer(&self) -> Option<&OuterHeader> {
        match self {
            Opened::Plain(_) => None,
            Opened::Sealed { outer, .. } => Some(outer),
        }
    }
}

/// A read of the age stream that failed: the ciphertext does not
/// authenticate (altered, truncated) or the file could not be read.
fn damaged_stream(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(
            io::ErrorKind::InvalidData,
            EnvelopeError::Damaged {
                detail: e.to_string(),
            }
            .to_string(),
        )
    } else {
        e
    }
}

impl<R: Read + Seek> Read for Opened<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Opened::Plain(r) => r.read(buf),
            Opened::Sealed { stream, .. } => stream.read(buf).map_err(damaged_stream),
        }
    }
}

impl<R: Read + Seek> Seek for Opened<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match self {
            Opened::Plain(r) => r.seek(pos),
            Opened::Sealed { stream, .. } => stream.seek(pos).map_err(damaged_stream),
        }
    }
}

/// Open a bundle file for reading: a plain bundle as it is; an envelope
/// decrypted with `identity` once its outer header names `me` (by site id)
/// among its recipients or as its sender. Refused, before any of the age stream is
/// decrypted: an envelope not addressed to `me`, an outer or age header out
/// of bounds; then an age header `identity` cannot open.
pub fn open<R: Read + Seek>(
    mut r: R,
    me: &SiteRef,
    identity: impl FnOnce() -> Result<age::x25519::Identity, crate::error::Error>,
) -> Result<Opened<R>, crate::error::Error> {
    if !is_envelope(&mut r)? {
        return Ok(Opened::Plain(r));
    }
    let outer = read_outer(&mut r)?;
    let not_for_me = || EnvelopeError::NotForThisInstance {
        recipients: outer.recipient_names(),
        this: me.name.clone(),
    };
    // The sender's own key is among the age recipients too (it reads its
    // own bundle files back), without being named.
    if outer.sender.id != me.id && !outer.recipients.iter().any(|x| x.id == me.id) {
        return Err(not_for_me().into());
    }
    let start = r.stream_position()?;
    check_age_header(&mut r)?;
    r.seek(SeekFrom::Start(start))?;
    let identity = identity()?;
    let decryptor = age::Decryptor::new(r).map_err(decrypt_error)?;
    let stream = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => not_for_me(),
            other => decrypt_error(other),
        })?;
    Ok(Opened::Sealed {
        stream: Box::new(stream),
        outer,
    })
}

/// Refuse an age header that does not end within [`MAX_AGE_HEADER_BYTES`]
/// (its last line starts `---`), before age parses it.
fn check_age_header<R: Read>(r: &mut R) -> Result<(), EnvelopeError> {
    let mut head = Vec::new();
    r.take(MAX_AGE_HEADER_BYTES).read_to_end(&mut head)?;
    if !head.starts_with(b"age-encryption.org/v1\n") {
        return Err(EnvelopeError::Damaged {
            detail: "no age header after the outer header".into(),
        });
    }
    if !head.windows(5).any(|w| w == b"\n--- ") {
        return Err(EnvelopeError::Damaged {
            detail: format!(
                "the age header is incomplete: the file ends early, or the header is over {} KiB",
                MAX_AGE_HEADER_BYTES >> 10
            ),
        });
    }
    Ok(())
}

fn decrypt_error(e: age::DecryptError) -> EnvelopeError {
    EnvelopeError::Damaged {
        detail: format!("age: {e}"),
    }
}

/// Refuse a decrypted bundle whose signed header disagrees with the
/// envelope's outer header (sender id and name).
pub fn check_agrees(
    outer: Option<&OuterHeader>,
    inner: &crate::bundle::format::Header,
) -> Result<(), EnvelopeError> {
    let Some(outer) = outer else {
        return Ok(());
    };
    if outer.sender != inner.sender {
        return Err(EnvelopeError::OuterMismatch {
            outer: format!("'{}' (site id {})", outer.sender.name, outer.sender.id),
            inner: format!("'{}' (site id {})", inner.sender.name, inner.sender.id),
        });
    }
    Ok(())
}

/// A writer that counts what passes through it.
pub(crate) struct Counting<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What an export encrypts to: the outer header and the recipients' keys,
/// in the same order.
#[derive(Debug, Clone)]
pub(crate) struct Sealer {
    pub outer: OuterHeader,
    pub keys: Vec<age::x25519::Recipient>,
}

/// An envelope being written: the plaintext bundle goes into [`Self::stream`].
pub(crate) type SealedStream<W> = age::stream::StreamWriter<Counting<W>>;

impl Sealer {
    /// Write the preamble and outer header to `out` and start the age
    /// stream the bundle is written into.
    pub(crate) fn start<W: Write>(&self, out: W) -> Result<SealedStream<W>, EnvelopeError> {
        let bytes = rmp_serde::to_vec_named(&self.outer)
            .map_err(|e| malformed(format!("cannot encode the outer header: {e}")))?;
        if bytes.len() > MAX_OUTER_HEADER_BYTES as usize || self.keys.len() > MAX_RECIPIENTS {
            return Err(EnvelopeError::TooManyRecipients {
                count: self.keys.len(),
            });
        }
        let mut out = Counting {
            inner: out,
            written: 0,
        };
        out.write_all(&ENVELOPE_MAGIC)?;
        out.write_all(&ENVELOPE_VERSION.to_le_bytes())?;
        out.write_all(&(bytes.len() as u32).to_le_bytes())?;
        out.write_all(&bytes)?;
        let encryptor =
            age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
                .map_err(|e| malformed(format!("cannot encrypt: {e}")))?;
        Ok(encryptor.wrap_output(out)?)
    }

    /// Finish the age stream; return the writer and the bytes written.
    pub(crate) fn finish<W: Write>(stream: SealedStream<W>) -> Result<(W, u64), EnvelopeError> {
        let mut counted = stream.finish()?;
        counted.flush()?;
        Ok((counted.inner, counted.written))
    }
}
