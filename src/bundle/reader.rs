//! Reading a bundle: checking it whole before anything is applied, then
//! streaming its records one at a time.
//!
//! [`verify`] checks, in this order, the magic, the format version, the
//! signature over the checksum (format version 4: the last 96 bytes hold
//! the signer's key and the signature, spec/trust.md), and then reads the
//! file once and compares the checksum, so a forged, damaged or incomplete
//! file is refused before its header is parsed or the database touched. [`BundleReader`]
//! then decodes records one by one, hashing again as it goes, and
//! [`BundleReader::finish`] checks the end record and the checksum once more,
//! so a file that changed between the two passes is caught before commit.
//! Every length read from the file is bounded before memory is allocated.

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Take};

use std::collections::VecDeque;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::base::colset::{ColSet, SENTINEL};
use crate::bundle::format::{
    BlockWire, CHECKSUM_LEN, End, FORMAT_VERSION, Header, MAGIC, MAX_HEADER_BYTES,
    MAX_RECORD_BYTES, OLDEST_READABLE_VERSION, PREAMBLE_LEN, RowRecord, RowWire, SIGNATURE_LEN,
    SIGNED_VERSION, VersionRecord, signed_message, trailer_len,
};
use crate::catalog::site::check_name;
use crate::error::BundleError;

/// A reader that hashes everything read through it.
struct HashReader<R: Read> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Read the preamble: check magic and version, return the format version
/// and the header length.
fn read_preamble<R: Read>(r: &mut R, file_len: u64) -> Result<(u16, u32), BundleError> {
    let version = read_version(r)?;
    let mut hlen = [0u8; 4];
    read_exact_or_truncated(r, &mut hlen)?;
    let hlen = u32::from_le_bytes(hlen);
    if hlen > MAX_HEADER_BYTES {
        return Err(BundleError::Malformed {
            detail: format!("header length {hlen} is over the limit"),
        });
    }
    if PREAMBLE_LEN + u64::from(hlen) + trailer_len(version) > file_len {
        return Err(BundleError::Truncated);
    }
    Ok((version, hlen))
}

/// Read the magic and the format version, and check both.
fn read_version<R: Read>(r: &mut R) -> Result<u16, BundleError> {
    let mut magic = [0u8; 8];
    read_exact_or_truncated(r, &mut magic)?;
    if magic != MAGIC {
        if &magic == crate::bundle::parts::PART_MAGIC {
            return Err(BundleError::IsPart);
        }
        if magic[..4] == MAGIC[..4] {
            return Err(BundleError::LineEndingsMangled);
        }
        return Err(BundleError::NotABundle);
    }
    let mut version = [0u8; 2];
    read_exact_or_truncated(r, &mut version)?;
    let version = u16::from_le_bytes(version);
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        if version > FORMAT_VERSION {
            return Err(BundleError::NewerFormat {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        return Err(BundleError::Malformed {
            detail: format!("unknown format version {version}"),
        });
    }
    Ok(version)
}

/// Who signed a bundle: its signer's Ed25519 public key, checked against the
/// signature over the checksum, or nothing for the unsigned versions 1 to 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signer {
    /// The bundle's format version.
    pub version: u16,
    /// The key whose signature over the checksum holds (version 4).
    pub key: Option<VerifyingKey>,
}

/// Read a version-4 trailer (the last 128 bytes: checksum, key, signature)
/// and check the signature over the checksum. Returns the key and the
/// checksum it signed. Leaves the reader anywhere.
fn check_signature<R: Read + Seek>(
    r: &mut R,
    len: u64,
) -> Result<(VerifyingKey, [u8; 32]), BundleError> {
    let trailer = CHECKSUM_LEN + SIGNATURE_LEN;
    if len < PREAMBLE_LEN + trailer {
        return Err(BundleError::Truncated);
    }
    r.seek(SeekFrom::Start(len - trailer))?;
    let mut checksum = [0u8; 32];
    let mut key = [0u8; 32];
    let mut signature = [0u8; 64];
    read_exact_or_truncated(r, &mut checksum)?;
    read_exact_or_truncated(r, &mut key)?;
    read_exact_or_truncated(r, &mut signature)?;
    let public = VerifyingKey::from_bytes(&key).map_err(|_| BundleError::SignatureInvalid)?;
    public
        .verify_strict(
            &signed_message(&checksum, &key),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| BundleError::SignatureInvalid)?;
    Ok((public, checksum))
}

fn read_exact_or_truncated<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), BundleError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => BundleError::Truncated,
        _ => BundleError::Io(e),
    })
}

fn file_len<R: Seek>(r: &mut R) -> Result<u64, BundleError> {
    let len = r.seek(SeekFrom::End(0))?;
    r.seek(SeekFrom::Start(0))?;
    Ok(len)
}

/// Check a bundle's magic, version, signature (version 4) and checksum, in
/// that order, before anything of its header is parsed; return who signed
/// it. Whether that signer may send it is the importer's decision
/// (`src/receive/trust.rs`). Leaves the reader at the start.
pub fn verify<R: Read + Seek>(r: &mut R) -> Result<Signer, BundleError> {
    let len = file_len(r)?;
    if len < PREAMBLE_LEN + CHECKSUM_LEN {
        // Say "not a bundle" rather than "truncated" for a short unrelated file.
        let mut head = vec![0u8; len.min(8) as usize];
        r.read_exact(&mut head)?;
        r.seek(SeekFrom::Start(0))?;
        if head.len() < 4 || head[..4] != MAGIC[..4] {
            return Err(BundleError::NotABundle);
        }
        return Err(BundleError::Truncated);
    }
    let version = read_version(r)?;
    let (key, signed) = if version >= SIGNED_VERSION {
        let (key, checksum) = check_signature(r, len)?;
        (Some(key), Some(checksum))
    } else {
        (None, None)
    };
    r.seek(SeekFrom::Start(0))?;
    let trailer = trailer_len(version);
    let mut hr = HashReader {
        inner: r.by_ref().take(len - trailer),
        hasher: blake3::Hasher::new(),
    };
    read_preamble(&mut hr, len)?;
    io::copy(&mut hr, &mut io::sink())?;
    let computed = hr.hasher.finalize();
    let mut stored = [0u8; 32];
    read_exact_or_truncated(r, &mut stored)?;
    r.seek(SeekFrom::Start(0))?;
    if signed.is_some_and(|c| c != stored) {
        // The file changed while it was read.
        return Err(BundleError::ChecksumMismatch);
    }
    if computed.as_bytes() != &stored {
        return Err(BundleError::ChecksumMismatch);
    }
    Ok(Signer { version, key })
}

/// The format version and, for version 4, the public key in the trailer,
/// without checking the signature: for `inspect` of a file whose signature
/// or checksum fails. Leaves the reader at the start.
pub fn read_signer_unchecked<R: Read + Seek>(
    r: &mut R,
) -> Result<(u16, Option<[u8; 32]>), BundleError> {
    let len = file_len(r)?;
    let version = read_version(r)?;
    let mut key = None;
    if version >= SIGNED_VERSION && len >= PREAMBLE_LEN + CHECKSUM_LEN + SIGNATURE_LEN {
        r.seek(SeekFrom::Start(len - SIGNATURE_LEN))?;
        let mut k = [0u8; 32];
        read_exact_or_truncated(r, &mut k)?;
        key = Some(k);
    }
    r.seek(SeekFrom::Start(0))?;
    Ok((version, key))
}

/// Read only the header (no checksum check): for `inspect` of a damaged file.
pub fn read_header_only<R: Read + Seek>(r: &mut R) -> Result<Header, BundleError> {
    let len = file_len(r)?;
    let (_, hlen) = read_preamble(r, len)?;
    let header = decode_header(r, hlen);
    r.seek(SeekFrom::Start(0))?;
    header
}

/// Read and check the header only (no checksum over the body): what an
/// existing bundle file holds, for `export` deciding whether it may
/// overwrite it. The header is as hostile as any: it is checked like one
/// being imported.
pub fn read_header_checked<R: Read + Seek>(r: &mut R) -> Result<Header, BundleError> {
    let header = read_header_only(r)?;
    check_header(&header)?;
    Ok(header)
}

fn decode_header<R: Read>(r: &mut R, hlen: u32) -> Result<Header, BundleError> {
    let mut bytes = Vec::new();
    r.take(u64::from(hlen)).read_to_end(&mut bytes)?;
    if bytes.len() != hlen as usize {
        return Err(BundleError::Truncated);
    }
    rmp_serde::from_slice(&bytes).map_err(|e| BundleError::Malformed {
        detail: format!("header: {e}"),
    })
}

/// Most schema versions a header may list: far more tables than any app
/// has, and few enough that remembering them costs nothing.
const MAX_SCHEMA_VERSIONS: usize = 10_000;

/// Check what the header says about itself: names usable, every index in
/// range, each origin listed once (in `origins`, `covers`, `seen` and
/// `lacks`), nothing covered that the sender does not say it has, and
/// nothing both had and lacked.
fn check_header(h: &Header) -> Result<(), BundleError> {
    let bad = |detail: String| BundleError::Malformed { detail };
    for site in std::iter::once(&h.sender).chain(h.origins.iter()) {
        check_name(&site.name)
            .map_err(|why| bad(format!("instance name {:?}: {why}", site.name)))?;
    }
    let mut ids = std::collections::HashSet::new();
    if !h.origins.iter().all(|o| ids.insert(o.id)) {
        return Err(bad("an instance is listed twice among the origins".into()));
    }
    for (what, list) in [
        ("covers", &h.covers),
        ("seen", &h.seen),
        ("lacks", &h.lacks),
    ] {
        let mut seen_origin = std::collections::HashSet::new();
        for entry in list {
            if entry.origin as usize >= h.origins.len() {
                return Err(bad(format!(
                    "{what} refers to origin #{}, which is not listed",
                    entry.origin
                )));
            }
            if !seen_origin.insert(entry.origin) {
                return Err(bad(format!("{what} lists origin #{} twice", entry.origin)));
            }
        }
    }
    for c in &h.covers {
        let has = h
            .seen
            .iter()
            .find(|x| x.origin == c.origin)
            .map(|x| &x.seqs);
        if !c
            .seqs
            .minus(has.unwrap_or(&crate::base::seqset::SeqSet::new()))
            .is_empty()
        {
            return Err(bad(
                "the bundle covers changes its sender does not have".into()
            ));
        }
    }
    if h.schemas.len() > MAX_SCHEMA_VERSIONS {
        return Err(bad(format!(
            "the header lists {} schema versions, more than {MAX_SCHEMA_VERSIONS}",
            h.schemas.len()
        )));
    }
    let mut versioned = std::collections::HashSet::new();
    for v in &h.schemas {
        if v.name.is_empty() || v.name.len() > 1024 {
            return Err(bad(
                "a schema version names a table of no usable name".into()
            ));
        }
        if v.version.len() != 16 || !v.version.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "the schema version of table {:?} is not 16 hex digits",
                v.name.chars().take(64).collect::<String>()
            )));
        }
        if !versioned.insert(v.name.to_ascii_lowercase()) {
            return Err(bad("a table's schema version is listed twice".into()));
        }
    }
    if let Some(r) = &h.sender_recipient {
        crate::bundle::envelope::parse_recipient(r)
            .map_err(|why| bad(format!("the sender's encryption key: {why}")))?;
    }
    for l in &h.lacks {
        let has = h.seen.iter().find(|x| x.origin == l.origin);
        if has.is_some_and(|x| !x.seqs.intersect(&l.seqs).is_empty()) {
            return Err(bad(
                "the bundle says its sender both has and lacks some changes".into(),
            ));
        }
    }
    Ok(())
}

type Body<R> = BufReader<zstd::stream::read::Decoder<'static, BufReader<Take<HashReader<R>>>>>;

/// A reader that fails once a record has used up its byte budget.
struct Budget<'a, R: Read> {
    inner: &'a mut R,
    left: u64,
}

impl<R: Read> Read for Budget<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("a record is larger than the limit"));
        }
        let cap = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..cap])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Streams the records of one bundle.
pub struct BundleReader<R: Read> {
    header: Header,
    body: Option<Body<R>>,
    end: Option<End>,
    /// The file's format version (1 to 4).
    version: u16,
    /// Who signed it, and the checksum the signature covers (version 4).
    signer: Signer,
    signed: Option<[u8; 32]>,
    /// Rows of the current block not handed out yet.
    queue: VecDeque<RowRecord>,
    prev_seq: u64,
    prev_hlc: u64,
    rows: u64,
    versions: u64,
    per_table: Vec<u64>,
    record_limit: u64,
}

impl<R: Read + Seek> BundleReader<R> {
    /// Open a bundle positioned at its start: check the signature (version
    /// 4) and read preamble and header. Call [`verify`] first; this does not
    /// check the checksum until [`finish`](Self::finish), which compares it
    /// with the one the signature covers.
    pub fn open(mut r: R) -> Result<Self, BundleError> {
        let len = file_len(&mut r)?;
        let version = read_version(&mut r)?;
        let (key, signed) = if version >= SIGNED_VERSION {
            let (key, checksum) = check_signature(&mut r, len)?;
            (Some(key), Some(checksum))
        } else {
            (None, None)
        };
        r.seek(SeekFrom::Start(0))?;
        let mut hr = HashReader {
            inner: r,
            hasher: blake3::Hasher::new(),
        };
        let (version, hlen) = read_preamble(&mut hr, len)?;
        let header = decode_header(&mut hr, hlen)?;
        check_header(&header)?;
        let body_len = len - PREAMBLE_LEN - u64::from(hlen) - trailer_len(version);
        let decoder = zstd::stream::read::Decoder::with_buffer(BufReader::new(hr.take(body_len)))?
            .single_frame();
        let per_table = vec![0; header.tables.len()];
        Ok(BundleReader {
            header,
            body: Some(BufReader::new(decoder)),
            end: None,
            version,
            signer: Signer { version, key },
            signed,
            queue: VecDeque::new(),
            prev_seq: 0,
            prev_hlc: 0,
            rows: 0,
            versions: 0,
            per_table,
            record_limit: MAX_RECORD_BYTES,
        })
    }
}

impl<R: Read> BundleReader<R> {
    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Who signed the bundle (checked when it was opened).
    pub fn signer(&self) -> Signer {
        self.signer
    }

    /// Lower the per-record size limit (the fuzzers use this).
    pub fn set_record_limit(&mut self, bytes: u64) {
        self.record_limit = bytes;
    }

    /// The next row record, or `None` after the last one.
    pub fn next_row(&mut self) -> Result<Option<RowRecord>, BundleError> {
        if let Some(row) = self.queue.pop_front() {
            return Ok(Some(row));
        }
        if self.end.is_some() {
            return Ok(None);
        }
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        let first = match body.fill_buf() {
            Ok([]) => {
                return Err(BundleError::Malformed {
                    detail: "the body ends without an end record".into(),
                });
            }
            Ok(buf) => buf[0],
            Err(e) => return Err(body_error(e)),
        };
        let limit = self.record_limit;
        if first == 0xc0 {
            body.consume(1);
            let end: End = rmp_serde::decode::from_read(Budget {
                inner: body,
                left: limit,
            })
            .map_err(decode_error)?;
            self.end = Some(end);
            return Ok(None);
        }
        if self.version == 1 {
            let wire: RowWire = rmp_serde::decode::from_read(Budget {
                inner: body,
                left: limit,
            })
            .map_err(decode_error)?;
            let mut versions = Vec::with_capacity(wire.versions.len());
            let mut cells = ColSet::new();
            for v in wire.versions {
                cells.union_with(&v.cols);
                versions.push(self.version_record(v.origin, v.dseq, v.dhlc, v.cols));
            }
            // One value per cell, as blocks require, so a row reads alike
            // in either version.
            cells.remove(SENTINEL);
            if cells.len() != wire.values.len() {
                return Err(BundleError::Malformed {
                    detail: format!(
                        "a record has {} values for {} cells",
                        wire.values.len(),
                        cells.len()
                    ),
                });
            }
            let row = RowRecord {
                table: wire.table,
                key: wire.key,
                cl: wire.cl,
                versions,
                values: wire.values,
            };
            self.count(&row)?;
            return Ok(Some(row));
        }
        let block: BlockWire = rmp_serde::decode::from_read(Budget {
            inner: body,
            left: limit,
        })
        .map_err(decode_error)?;
        self.unblock(block)?;
        Ok(self.queue.pop_front())
    }

    /// Undo a version's delta coding.
    fn version_record(&mut self, origin: u32, dseq: i64, dhlc: i64, cols: ColSet) -> VersionRecord {
        let seq = self.prev_seq.wrapping_add(dseq as u64);
        let hlc = self.prev_hlc.wrapping_add(dhlc as u64);
        self.prev_seq = seq;
        self.prev_hlc = hlc;
        VersionRecord {
            origin,
            seq,
            hlc,
            cols,
        }
    }

    fn count(&mut self, row: &RowRecord) -> Result<(), BundleError> {
        self.rows += 1;
        self.versions += row.versions.len() as u64;
        match self.per_table.get_mut(row.table as usize) {
            Some(n) => {
                *n += 1;
                Ok(())
            }
            None => Err(BundleError::Malformed {
                detail: format!(
                    "a record refers to table #{} but the header lists {}",
                    row.table,
                    self.per_table.len()
                ),
            }),
        }
    }

    /// Turn a block's columns back into rows, checking that the columns
    /// agree with each other before anything is allocated per row.
    fn unblock(&mut self, b: BlockWire) -> Result<(), BundleError> {
        let bad = |detail: &str| BundleError::Malformed {
            detail: format!("block: {detail}"),
        };
        let n = b.table.len();
        if n == 0 {
            return Err(bad("no rows"));
        }
        if b.cl.len() != n || b.nver.len() != n {
            return Err(bad("columns of different lengths"));
        }
        let nv = b.origin.len();
        if b.dseq.len() != nv || b.dhlc.len() != nv || b.cols.len() != nv {
            return Err(bad("version columns of different lengths"));
        }
        if b.nver.iter().map(|&k| k as u64).sum::<u64>() != nv as u64 {
            return Err(bad("version counts do not add up"));
        }
        // Cells per row, bounded by the values the block actually holds.
        let mut cells: Vec<ColSet> = Vec::with_capacity(n);
        let mut total = 0usize;
        let mut at = 0usize;
        for &k in &b.nver {
            let mut union = ColSet::new();
            for c in &b.cols[at..at + k as usize] {
                union.union_with(c);
            }
            at += k as usize;
            union.remove(SENTINEL);
            total += union.len();
            if total > b.values.len() {
                return Err(bad("fewer values than cells"));
            }
            cells.push(union);
        }
        if total != b.values.len() {
            return Err(bad("more values than cells"));
        }
        let mut keys = b.key.into_iter();
        let mut origin = b.origin.into_iter();
        let mut dseq = b.dseq.into_iter();
        let mut dhlc = b.dhlc.into_iter();
        let mut cols = b.cols.into_iter();
        let mut rows: Vec<RowRecord> = Vec::with_capacity(n);
        for (i, (&table, &cl)) in b.table.iter().zip(&b.cl).enumerate() {
            let key_len = self
                .header
                .tables
                .get(table as usize)
                .map(|t| t.key_len())
                .ok_or_else(|| BundleError::Malformed {
                    detail: format!(
                        "a record refers to table #{table} but the header lists {}",
                        self.header.tables.len()
                    ),
                })?;
            let key: Vec<crate::base::value::Value> = keys.by_ref().take(key_len).collect();
            if key.len() != key_len {
                return Err(bad("fewer key values than rows need"));
            }
            let mut versions = Vec::with_capacity(b.nver[i] as usize);
            for _ in 0..b.nver[i] {
                match (origin.next(), dseq.next(), dhlc.next(), cols.next()) {
                    (Some(o), Some(s), Some(h), Some(c)) => {
                        versions.push(self.version_record(o, s, h, c))
                    }
                    _ => return Err(bad("version counts do not add up")),
                }
            }
            rows.push(RowRecord {
                table,
                key,
                cl,
                versions,
                values: Vec::with_capacity(cells[i].len()),
            });
        }
        if keys.next().is_some() {
            return Err(bad("more key values than rows need"));
        }
        // Values are laid out bit by bit; hand each to its row.
        let mut places: Vec<(usize, usize)> = cells
            .iter()
            .enumerate()
            .flat_map(|(row, set)| set.iter().map(move |bit| (bit, row)))
            .collect();
        places.sort_unstable();
        for ((_, row), value) in places.into_iter().zip(b.values) {
            rows[row].values.push(value);
        }
        for row in &rows {
            self.count(row)?;
        }
        self.queue.extend(rows);
        Ok(())
    }

    /// After the last record: check the end record, that nothing follows it,
    /// and the checksum. Returns the per-table counts.
    pub fn finish(mut self) -> Result<End, BundleError> {
        while self.next_row()?.is_some() {}
        let end = self.end.take().ok_or_else(|| BundleError::Malformed {
            detail: "no end record".into(),
        })?;
        if end.rows != self.rows || end.versions != self.versions || end.per_table != self.per_table
        {
            return Err(BundleError::Malformed {
                detail: "the end record does not match the records".into(),
            });
        }
        let Some(mut body) = self.body.take() else {
            return Err(BundleError::Malformed {
                detail: "no body".into(),
            });
        };
        let mut rest = [0u8; 1];
        if body.read(&mut rest).map_err(body_error)? != 0 {
            return Err(BundleError::Malformed {
                detail: "data after the end record".into(),
            });
        }
        let mut compressed = body.into_inner().finish();
        let mut tail = Vec::new();
        compressed.read_to_end(&mut tail)?;
        if !tail.is_empty() {
            return Err(BundleError::Malformed {
                detail: "data after the compressed body".into(),
            });
        }
        let mut hr = compressed.into_inner().into_inner();
        let computed = hr.hasher.finalize();
        let mut stored = [0u8; 32];
        read_exact_or_truncated(&mut hr.inner, &mut stored)?;
        if computed.as_bytes() != &stored || self.signed.is_some_and(|c| c != stored) {
            return Err(BundleError::ChecksumMismatch);
        }
        Ok(end)
    }
}

fn body_error(e: io::Error) -> BundleError {
    BundleError::Malformed {
        detail: format!("compressed body: {e}"),
    }
}

fn decode_error(e: rmp_serde::decode::Error) -> BundleError {
    BundleError::Malformed {
        detail: format!("record: {e}"),
    }
}
