//! The bodies of the fuzz targets (`fuzz/fuzz_targets/`), shared with the
//! replay of the seed inputs in `cargo test` (`tests/fuzz_corpus.rs`) so both run the
//! same checks. Not part of the supported API.
//!
//! Each body takes the fuzzer's bytes and returns normally whatever they
//! are; it panics only when fieldsync misbehaves:
//!
//! - [`decode_bundle`]: arbitrary bytes through [`inspect`] and the
//!   streaming reader, signed envelope first (format 4: the signature over
//!   the checksum is checked before the header is read). They must be
//!   refused with an error or read; never a panic or an allocation beyond
//!   what the bytes could decompress to.
//! - [`decode_sealed`]: the same after [`reseal`], so the checksum holds
//!   and, for format 4, is signed again by [`fuzz_key`], and the header and
//!   body decoders see the mutations; a bundle that reads must also survive
//!   being written again and re-read unchanged.
//! - [`decode_envelope`]: arbitrary bytes through the encrypted
//!   envelope's reader with the harness's identity ([`fuzz_identity`]),
//!   and what decrypts through `verify` and `inspect`: an error or the
//!   contents, never a panic or unbounded memory. The seeds are the
//!   decode seeds encrypted to it ([`seal_for_fuzz`]).
//! - [`check_request`]: arbitrary bytes as a request's method, path and
//!   headers through the server's checks of a signed request (its
//!   signature headers, the replay window, a transfer id, a range): a
//!   refusal or a signed request, never a panic.
//! - [`import_mutated`]: a mutated bundle imported into a copy of a seed
//!   database ([`ImportTarget::run`]). The fuzzer mutates the bundle
//!   [`open`]ed: header as in the file, body decompressed, no checksum nor
//!   signature, and [`close`] compresses the body, seals it again and signs
//!   it with [`fuzz_key`] (format 4), so mutations reach the header and
//!   record decoders and the merge instead of dying in zstd or at the
//!   checksum or signature. The seed database pins no signer (the first
//!   import pins the harness's key, trust on first use) and admits unsigned
//!   bundles. The import is either refused, leaving the file byte for
//!   byte as it was, or applied, after which `PRAGMA integrity_check` and
//!   [`Instance::check`] are clean and importing it a second time applies
//!   nothing (merge is idempotent).
//!
//! The tests and benches that reach below the public face (merge-level
//! regressions, the model test comparing rows by identity, the hot-path
//! benches) find what they need re-exported at the end of this module.
//!
//! [`generate`] builds, with the real engine, the seed database and the
//! bundles the committed seed inputs (`fuzz/seed/<target>/`) start from;
//! the fuzzers' own growing corpus stays out of git.

use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer as _, SigningKey};

use crate::bundle::format::{
    CHECKSUM_LEN, End, Header, PREAMBLE_LEN, RowRecord, SIGNED_VERSION, signed_message, trailer_len,
};
use crate::bundle::{BundleReader, BundleWriter, inspect, verify};
use crate::error::{BundleError, Error};
use crate::{ExportTarget, ImportReport, Instance, Selection};

/// Import a bundle in write transactions of `records` records each and
/// stop after `transactions` of them, as a crash between two would leave
/// the database (spec/merge.md, "Write transactions"). `Some` report if the
/// import ended before that.
pub fn import_interrupted(
    db: &mut Instance,
    bundle: &[u8],
    records: u64,
    transactions: usize,
) -> Result<Option<ImportReport>, Error> {
    let steps = crate::receive::import::Steps {
        records: Some(records),
        stop_after: Some(transactions),
    };
    let opts = crate::ImportOptions {
        pause: std::time::Duration::ZERO,
        ..crate::ImportOptions::default()
    };
    db.import_steps(Cursor::new(bundle), &opts, &steps)
}

/// The per-record limit the decode targets read with: far below the
/// format's own (about 1 GiB, for one huge value), so the fuzzer's memory
/// limit stays meaningful.
pub const FUZZ_RECORD_LIMIT: u64 = 4 << 20;

/// The key the fuzz harness signs with when it seals mutated bytes again
/// (a fixed seed: the fuzzers and the corpus replay must agree).
pub fn fuzz_key() -> SigningKey {
    SigningKey::from_bytes(&[0x5a; 32])
}

/// A signing key of its own for each made-up sender a test crafts a bundle
/// as (derived from the site id, so a sender signs alike every time and no
/// two senders share a key, which trust on first use would refuse).
pub fn key_for(site: &crate::SiteId) -> SigningKey {
    let seed = blake3::derive_key("fieldsync tests crafted sender key", site.as_bytes());
    SigningKey::from_bytes(&seed)
}

/// The format version the preamble states, if the bytes have one.
fn version_of(data: &[u8]) -> Option<u16> {
    let bytes: [u8; 2] = data.get(8..10)?.try_into().ok()?;
    Some(u16::from_le_bytes(bytes))
}

/// The trailer a bundle of these bytes has: the checksum, and from format
/// version 4 the signer's key and the signature.
fn trailer_of(data: &[u8]) -> usize {
    trailer_len(version_of(data).unwrap_or(0)) as usize
}

/// The trailer of a bundle whose content before the trailer is `content`:
/// its BLAKE3 checksum and, for version 4, [`fuzz_key`]'s key and
/// signature over it (spec/bundle.md, "Layout").
fn seal_trailer(content: &[u8], version: u16, key: &SigningKey) -> Vec<u8> {
    let hash = blake3::hash(content);
    let mut out = hash.as_bytes().to_vec();
    if version >= SIGNED_VERSION {
        let public = key.verifying_key().to_bytes();
        let signature = key.sign(&signed_message(hash.as_bytes(), &public));
        out.extend_from_slice(&public);
        out.extend_from_slice(&signature.to_bytes());
    }
    out
}

/// Replace the trailer with the checksum of everything before it and, for
/// format version 4, a signature by [`fuzz_key`], as a writer would
/// (spec/bundle.md, "Layout"), so the decoders see the mutations. Inputs
/// shorter than the trailer are left alone.
pub fn reseal(data: &mut [u8]) {
    reseal_with(data, &fuzz_key());
}

/// [`reseal`], signing with `key`.
pub fn reseal_with(data: &mut [u8], key: &SigningKey) {
    let n = trailer_of(data);
    if data.len() < n {
        return;
    }
    let body = data.len() - n;
    let trailer = seal_trailer(&data[..body], version_of(data).unwrap_or(0), key);
    data[body..].copy_from_slice(&trailer);
}

/// A real bundle with its header replaced by `header` (the body kept as it
/// is, still compressed) and signed again by `key`, as an enrolled instance
/// gone bad can: tests of what a signed header may claim
/// (spec/trust.md, "Claims checked against facts").
pub fn with_header(bundle: &[u8], header: &Header, key: &SigningKey) -> Result<Vec<u8>, Error> {
    let hlen = header_len(bundle).ok_or(BundleError::Truncated)?;
    let start = (PREAMBLE_LEN + hlen) as usize;
    let end = bundle
        .len()
        .checked_sub(trailer_of(bundle))
        .filter(|&end| end >= start)
        .ok_or(BundleError::Truncated)?;
    let encoded = rmp_serde::to_vec_named(header).map_err(|e| BundleError::Malformed {
        detail: format!("header: {e}"),
    })?;
    let mut out = bundle[..10].to_vec();
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&encoded);
    out.extend_from_slice(&bundle[start..end]);
    let trailer = seal_trailer(&out, version_of(&out).unwrap_or(0), key);
    out.extend_from_slice(&trailer);
    Ok(out)
}

/// A real bundle without its sender's own origin statement, signed again
/// by [`fuzz_key`]: what the import target's inputs are made from. They
/// are sealed by [`fuzz_key`], and the sender's own statement, signed by
/// its real key, would refuse every one of them as signed by a key other
/// than the bundle's; statements it relays stay.
pub fn without_sender_statement(bundle: &[u8]) -> Result<Vec<u8>, Error> {
    let mut header = BundleReader::open(Cursor::new(bundle))?.header().clone();
    let sender = header.sender.id;
    header
        .statements
        .retain(|s| s.statement.0.get(..16) != Some(sender.as_bytes().as_slice()));
    with_header(bundle, &header, &fuzz_key())
}

/// An origin statement (spec/trust.md, "Claims checked against facts")
/// that `site` called `name` made `top` changes, signed by `key`: what
/// tests forge one with.
pub fn statement(
    site: crate::SiteId,
    name: &str,
    top: u64,
    hlc: u64,
    key: &SigningKey,
) -> crate::bundle::format::SignedStatement {
    crate::bundle::statement::Statement {
        site,
        top,
        hlc,
        key: key.verifying_key(),
        name: name.to_owned(),
    }
    .sign(key)
}

/// True if the bytes are long enough to be a bundle at all: resealing
/// shorter ones would only overwrite the preamble.
pub fn long_enough(data: &[u8]) -> bool {
    data.len() as u64 >= PREAMBLE_LEN + CHECKSUM_LEN && data.len() >= trailer_of(data)
}

/// The header length a bundle's preamble states, if it has one.
fn header_len(data: &[u8]) -> Option<u64> {
    let bytes: [u8; 4] = data.get(10..PREAMBLE_LEN as usize)?.try_into().ok()?;
    Some(u64::from(u32::from_le_bytes(bytes)))
}

/// A bundle opened for mutation: preamble and header as in the file, then
/// the body decompressed, and no checksum.
pub fn open(bundle: &[u8]) -> Result<Vec<u8>, BundleError> {
    let hlen = header_len(bundle).ok_or(BundleError::Truncated)?;
    let start = (PREAMBLE_LEN + hlen) as usize;
    let end = bundle
        .len()
        .checked_sub(trailer_of(bundle))
        .filter(|&end| end >= start)
        .ok_or(BundleError::Truncated)?;
    let mut out = bundle[..start].to_vec();
    zstd::stream::copy_decode(&bundle[start..end], &mut out)?;
    Ok(out)
}

/// The bundle an [`open`]ed one stands for: the body (whatever follows the
/// header the preamble states) compressed, the checksum appended and, for
/// format version 4, signed by [`fuzz_key`].
pub fn close(open: &[u8]) -> Vec<u8> {
    let split = header_len(open)
        .map(|h| (PREAMBLE_LEN + h) as usize)
        .filter(|&s| s <= open.len())
        .unwrap_or(open.len());
    let mut out = open[..split].to_vec();
    match zstd::bulk::compress(&open[split..], 1) {
        Ok(body) => out.extend_from_slice(&body),
        Err(e) => panic!("zstd cannot compress {} bytes: {e}", open.len() - split),
    }
    let trailer = seal_trailer(&out, version_of(&out).unwrap_or(0), &fuzz_key());
    out.extend_from_slice(&trailer);
    out
}

/// Everything a bundle holds, read with the streaming reader.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    /// The header.
    pub header: Header,
    /// The row records, in order.
    pub records: Vec<RowRecord>,
    /// The end record.
    pub end: End,
}

/// Read a whole bundle: checksum, header, every record, end record.
pub fn read_all(data: &[u8], record_limit: u64) -> Result<Decoded, BundleError> {
    let mut cursor = Cursor::new(data);
    verify(&mut cursor)?;
    let mut reader = BundleReader::open(cursor)?;
    reader.set_record_limit(record_limit);
    let header = reader.header().clone();
    let mut records = Vec::new();
    while let Some(rec) = reader.next_row()? {
        records.push(rec);
    }
    let end = reader.finish()?;
    Ok(Decoded {
        header,
        records,
        end,
    })
}

/// Write decoded contents back out as a bundle, signed by [`fuzz_key`].
pub fn rewrite(d: &Decoded) -> Result<Vec<u8>, BundleError> {
    rewrite_with(d, &fuzz_key())
}

/// Write decoded contents back out as a bundle signed by `key`.
pub fn rewrite_with(d: &Decoded, key: &SigningKey) -> Result<Vec<u8>, BundleError> {
    let mut w = BundleWriter::new(Vec::new(), &d.header, key)?;
    for r in &d.records {
        w.write_row(r.table, &r.key, r.cl, &r.versions, &r.values)?;
    }
    Ok(w.finish()?.0)
}

/// Fuzz target `decode_bundle`: any bytes, as they are.
pub fn decode_bundle(data: &[u8]) {
    // `inspect` reads with the format's own record limit, as the CLI does.
    let _ = inspect(Cursor::new(data));
    let _ = read_all(data, FUZZ_RECORD_LIMIT);
}

/// Fuzz target `decode_sealed`: any bytes with the checksum made to hold.
/// A bundle that reads is written again and must read back the same.
pub fn decode_sealed(data: &[u8]) {
    if !long_enough(data) {
        return decode_bundle(data);
    }
    let mut data = data.to_vec();
    reseal(&mut data);
    let _ = inspect(Cursor::new(&data));
    let Ok(decoded) = read_all(&data, FUZZ_RECORD_LIMIT) else {
        return;
    };
    let again = match rewrite(&decoded) {
        Ok(b) => b,
        Err(e) => panic!("a bundle that reads cannot be written again: {e}"),
    };
    match read_all(&again, FUZZ_RECORD_LIMIT) {
        Ok(d) => assert_eq!(d, decoded, "a rewritten bundle reads differently"),
        Err(e) => panic!("a rewritten bundle does not read: {e}"),
    }
}

/// The harness's own age identity (a fixed key, so the committed seeds of
/// `decode_envelope` decrypt with it).
pub fn fuzz_identity() -> age::x25519::Identity {
    const KEY: &str = "AGE-SECRET-KEY-1QYPQXPQ9QCRSSZG2PVXQ6RS0ZQG3YYC5Z5TPWXQERGD3C8G7RUSQGPQYEE";
    match KEY.parse() {
        Ok(identity) => identity,
        Err(e) => panic!("the harness's age identity does not parse: {e}"),
    }
}

/// The instance the harness decrypts as: named in the seeds' outer header.
pub fn fuzz_recipient_site() -> crate::bundle::SiteRef {
    crate::bundle::SiteRef {
        id: crate::SiteId::from_bytes([0xf5; 16]),
        name: "fuzz".to_owned(),
    }
}

/// `bundle` in an encrypted envelope to the harness's identity (a seed of
/// `decode_envelope`), from `sender` as its outer header says.
pub fn seal_for_fuzz(bundle: &[u8], sender: &crate::bundle::SiteRef) -> Result<Vec<u8>, Error> {
    use std::io::Write as _;
    let sealer = crate::bundle::envelope::Sealer {
        outer: crate::bundle::envelope::OuterHeader {
            sender: sender.clone(),
            recipients: vec![fuzz_recipient_site()],
            created: 0,
        },
        keys: vec![fuzz_identity().to_public()],
    };
    let mut stream = sealer.start(Vec::new())?;
    stream.write_all(bundle)?;
    Ok(crate::bundle::envelope::Sealer::finish(stream)?.0)
}

/// Fuzz target `decode_envelope`: any bytes through the encrypted
/// envelope's reader (outer header, age header, chunks) with the harness's
/// identity, then, if they decrypt, through `verify` and `inspect` as the
/// importer and `inspect --db` read them.
pub fn decode_envelope(data: &[u8]) {
    let me = fuzz_recipient_site();
    let _ = crate::bundle::envelope::read_outer(&mut Cursor::new(data));
    let Ok(mut opened) =
        crate::bundle::envelope::open(Cursor::new(data), &me, || Ok(fuzz_identity()))
    else {
        return;
    };
    let _ = verify(&mut opened);
    let outer = opened.outer().cloned();
    if let Ok(info) = inspect(opened) {
        let _ = crate::bundle::envelope::check_agrees(outer.as_ref(), &info.header);
    }
}

/// Fuzz target `import_mutated`: `data` is an [`open`]ed bundle.
pub fn import_mutated(target: &ImportTarget, data: &[u8]) -> Outcome {
    target.run(&close(data))
}

/// The app schema of the seed database and the instances that made the
/// seed bundles: a NOT NULL, a UNIQUE and a CHECK column, a composite key
/// of a WITHOUT ROWID table, an untyped key (where 1 and 1.0 are one
/// key), a hierarchy keyed by local integers (rows identified by origin,
/// references translated), and a table without a key (rows identified by
/// content).
pub const SCHEMA: &str = "
CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT,
                    code TEXT UNIQUE, age INTEGER CHECK (age IS NULL OR age >= 0));
CREATE TABLE visit(person TEXT, day INTEGER, note, score REAL,
                   PRIMARY KEY(person, day)) WITHOUT ROWID;
CREATE TABLE tag(k PRIMARY KEY, v);
CREATE TABLE place(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT,
                   parent INTEGER REFERENCES place(id), person TEXT REFERENCES person(id));
CREATE TABLE opt(field TEXT, code TEXT, label TEXT);
";

/// Name of the seed instance the import target imports into.
pub const SEED_NAME: &str = "field-1";

/// How one fuzz input went.
#[derive(Debug)]
pub enum Outcome {
    /// Refused: the message, and the file is unchanged.
    Rejected(String),
    /// Applied, and the database passed every check.
    Applied(Box<ImportReport>),
}

/// The `import_mutated` target: a seed database built once, copied afresh
/// for every input.
pub struct ImportTarget {
    template: Vec<u8>,
    work: PathBuf,
}

impl ImportTarget {
    /// Build the seed database in `dir` from `seed_sql` (a `.dump` of an
    /// instance; see [`generate`]) and check it is consistent.
    pub fn new(dir: &Path, seed_sql: &str) -> Result<ImportTarget, Error> {
        std::fs::create_dir_all(dir)?;
        let seed = dir.join("seed.db");
        remove_db(&seed)?;
        {
            let conn = rusqlite::Connection::open(&seed)?;
            conn.execute_batch(seed_sql)?;
        }
        ImportTarget::from_database(dir, &seed)
    }

    /// Use a copy of the instance database `db` as the seed; work in `dir`.
    pub fn from_database(dir: &Path, db: &Path) -> Result<ImportTarget, Error> {
        std::fs::create_dir_all(dir)?;
        let work = dir.join("work.db");
        remove_db(&work)?;
        let report = Instance::open(db)?.check()?;
        if !report.ok {
            return Err(BundleError::Malformed {
                detail: format!("the seed database is not consistent: {:?}", report.problems),
            }
            .into());
        }
        // The mutated inputs are sealed again by the harness's own key
        // (`fuzz_key`), or are unsigned (seeds of format 3): the copy the
        // inputs go into pins no sender yet, holds no origin statement (the
        // inputs carry none of their sender's, `without_sender_statement`),
        // and admits unsigned bundles,
        // so mutations reach the decoders and the merge.
        std::fs::copy(db, &work)?;
        {
            let mut seed = Instance::open(&work)?;
            // Trust on first use (as a database set up before enrolment):
            // the harness's key is pinned at the first import, and no
            // statement bounds what the inputs claim beyond the checks.
            seed.connection().execute_batch(
                "DELETE FROM fieldsync_pins; DELETE FROM fieldsync_statements; \
                 DELETE FROM fieldsync_meta WHERE key = 'anchor';",
            )?;
            seed.allow_unsigned_for(crate::MAX_UNSIGNED_DAYS)?;
        }
        let template = std::fs::read(&work)?;
        remove_db(&work)?;
        Ok(ImportTarget { template, work })
    }

    /// Import `bundle` into a fresh copy of the seed database. Panics if
    /// fieldsync misbehaves (see the module documentation).
    pub fn run(&self, bundle: &[u8]) -> Outcome {
        if let Err(e) = self.reset() {
            panic!("cannot prepare the work database: {e}");
        }
        let mut db = match Instance::open(&self.work) {
            Ok(db) => db,
            Err(e) => panic!("cannot open the work database: {e}"),
        };
        let first = db.import(Cursor::new(bundle));
        let report = match first {
            Err(e) => {
                drop(db);
                let now = std::fs::read(&self.work).unwrap_or_default();
                assert!(
                    now == self.template,
                    "a refused import ({e}) changed the database"
                );
                return Outcome::Rejected(e.to_string());
            }
            Ok(r) => r,
        };
        assert_consistent(&mut db, "after the import", &report);
        match db.import(Cursor::new(bundle)) {
            Ok(again) => {
                assert_eq!(
                    again.applied, 0,
                    "importing the same bundle twice applied records the second time: {again:?}"
                );
                assert_consistent(&mut db, "after importing it again", &again);
            }
            Err(e) => panic!("a bundle that imported is refused the second time: {e}"),
        }
        Outcome::Applied(Box::new(report))
    }

    fn reset(&self) -> Result<(), Error> {
        remove_db(&self.work)?;
        std::fs::write(&self.work, &self.template)?;
        Ok(())
    }
}

fn remove_db(path: &Path) -> Result<(), Error> {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(PathBuf::from(p)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

fn assert_consistent(db: &mut Instance, when: &str, report: &ImportReport) {
    match db.check() {
        Ok(r) if r.ok => {}
        Ok(r) => panic!(
            "{when} the database fails the check: {:#?}\nimport report: {report:?}",
            r.problems
        ),
        Err(e) => panic!("{when} the check cannot run: {e}"),
    }
}

/// What [`generate`] made.
pub struct Generated {
    /// The seed instance's database (dump it with the `sqlite3` shell).
    pub seed_db: PathBuf,
    /// Bundles for the seed instance, by a descriptive file name.
    pub bundles: Vec<(String, Vec<u8>)>,
}

fn instance(dir: &Path, name: &str) -> Result<Instance, Error> {
    let (mut i, _) = Instance::init(dir.join(format!("{name}.db")), name)?;
    i.connection().execute_batch(SCHEMA)?;
    enrol_with_all_in(dir, &mut i)?;
    Ok(i)
}

/// Enrol `inst` at every other instance whose database (`*.db`) is in
/// `dir`, and each of them at it: a deployment whose HQ enrolled everyone.
pub fn enrol_with_all_in(dir: &Path, inst: &mut Instance) -> Result<(), Error> {
    let mut others: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "db") && !same_file(p, inst.path()))
        .collect();
    others.sort();
    for other in others {
        if let Ok(mut other) = Instance::open(&other) {
            enrol_each_other(inst, &mut other)?;
        }
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || a.canonicalize()
            .ok()
            .is_some_and(|a| b.canonicalize().ok() == Some(a))
}

/// Whoever signed the unencrypted bundle `r` reads from, as its header
/// names it: the key, the sender and its recipient. `None` for an
/// unsigned bundle or one that does not read.
pub fn bundle_signer<R: Read + Seek>(
    mut r: R,
) -> Option<(
    crate::bundle::VerifyingKey,
    crate::bundle::SiteRef,
    Option<String>,
)> {
    let key = crate::bundle::verify(&mut r).ok()?.key?;
    let reader = crate::bundle::BundleReader::open(r).ok()?;
    let header = reader.header();
    Some((key, header.sender.clone(), header.sender_recipient.clone()))
}

/// Enrol at `inst` whoever signed the unencrypted bundle `r` reads from,
/// under the name, site id and recipient its header gives (as HQ enrols a
/// laptop it knows), unless it is `inst` itself or already in its
/// keyring. Returns the key enrolled.
pub fn enrol_signer<R: Read + Seek>(inst: &mut Instance, r: R) -> Result<Option<[u8; 32]>, Error> {
    let Some((key, sender, recipient)) = bundle_signer(r) else {
        return Ok(None);
    };
    let text = crate::catalog::keys::key_text(key.as_bytes());
    let known = inst
        .trusted()?
        .instances
        .iter()
        .any(|t| t.public_key == text);
    if known || sender.id == inst.site_id()? {
        return Ok(None);
    }
    inst.enrol(
        &sender.name,
        &text,
        recipient.as_deref(),
        Some(&sender.id.to_string()),
    )?;
    Ok(Some(key.to_bytes()))
}

/// Enrol `a` at `b` and `b` at `a`, by the keys each reports: two
/// instances of a deployment whose HQ enrolled both.
pub fn enrol_each_other(a: &mut Instance, b: &mut Instance) -> Result<(), Error> {
    let (ka, kb) = (a.key()?, b.key()?);
    a.enrol(
        &kb.name,
        &kb.public_key,
        Some(&kb.recipient),
        Some(&kb.site_id),
    )?;
    b.enrol(
        &ka.name,
        &ka.public_key,
        Some(&ka.recipient),
        Some(&ka.site_id),
    )?;
    Ok(())
}

fn bundle_for(from: &mut Instance, to: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    from.export(
        &ExportTarget::Peer {
            to: to.to_owned(),
            resend: false,
        },
        &mut out,
    )?;
    Ok(out)
}

fn full(from: &mut Instance) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    from.export(&ExportTarget::Full, &mut out)?;
    Ok(out)
}

/// Build, in `dir`, three instances `hq`, [`SEED_NAME`] and `field-2` that
/// exchange edits of every kind, and return the seed instance's database as
/// it is once set up, with the bundles later written for it: a delta from
/// hq (updates, a delete, a re-insert, a UNIQUE value moved
/// between rows), a relay from field-2
/// (concurrent edits, odd values), full exports, a bundle acknowledging
/// changes the seed never made (it looks restored from a backup), and
/// an empty delta.
pub fn generate(dir: &Path) -> Result<Generated, Error> {
    let mut bundles = Vec::new();
    let mut hq = instance(dir, "hq")?;
    hq.connection().execute_batch(
        "INSERT INTO person VALUES
           ('p1', 'Amal Perera', 'missing', 'A1', 34), ('p2', 'Bilal Khan', 'missing', 'B2', NULL),
           ('p3', 'Chen Wei', 'found', NULL, 7), ('p4', 'Dara Ncube', 'missing', 'D4', 61),
           ('p5', 'Eli Sato', NULL, 'E5', 25), ('p6', 'Fatma Ali', 'found', 'F6', 40);
         INSERT INTO visit VALUES ('p1', 1, 'first contact', 2.5), ('p1', 2, 42, NULL),
           ('p3', 1, x'00ff10', -1.25), ('p5', 3, NULL, 1e300);
         INSERT INTO tag VALUES (1, 'one'), ('x', 2.0), (x'beef', NULL), (2.5, 'two and a half');
         PRAGMA foreign_keys = OFF; -- 'Nowhere' points at rows that do not exist
         INSERT INTO place(name, parent, person) VALUES ('Sri Lanka', NULL, NULL), ('Galle', 1, 'p1'),
           ('Nowhere', 99, 'p9');
         INSERT INTO opt VALUES ('status', 'mis', 'Missing'), ('status', 'fnd', 'Found'),
           ('status', 'fnd', 'Found');",
    )?;
    hq.track(&Selection::All)?;
    let base = full(&mut hq)?;

    let mut seed = instance(dir, SEED_NAME)?;
    seed.track(&Selection::All)?;
    seed.import(Cursor::new(&base))?;
    seed.connection().execute_batch(
        "UPDATE person SET status = 'found' WHERE id = 'p1';
         DELETE FROM person WHERE id = 'p2';
         INSERT INTO person VALUES ('p7', 'Gita Rao', 'missing', 'G7', 19);
         UPDATE visit SET note = 'seen at camp' WHERE person = 'p1' AND day = 1;
         INSERT INTO tag VALUES (3, 'three');
         INSERT INTO place(name, parent, person) VALUES ('Unawatuna', 2, 'p7');
         UPDATE opt SET label = 'Found alive' WHERE rowid = 2;",
    )?;
    let seed_to_hq = bundle_for(&mut seed, "hq")?;
    let seed_db = seed.path().to_owned();
    drop(seed);
    // A copy that goes on working, to look like the seed's future.
    let later_db = dir.join("field-1-later.db");
    std::fs::copy(&seed_db, &later_db)?;

    let mut f2 = instance(dir, "field-2")?;
    f2.track(&Selection::All)?;
    f2.import(Cursor::new(&base))?;

    hq.import(Cursor::new(&seed_to_hq))?;
    hq.connection().execute_batch(
        "UPDATE person SET name = 'Chen Wei Jr.' WHERE id = 'p3';
         DELETE FROM person WHERE id = 'p4';
         INSERT INTO person VALUES ('p2', 'Bilal Khan', 'back', 'B2', 30);
         UPDATE person SET code = 'F7' WHERE id = 'p6';
         UPDATE person SET code = 'F6' WHERE id = 'p5';
         UPDATE visit SET score = 9.75 WHERE person = 'p3';
         DELETE FROM tag WHERE k = 'x';
         INSERT INTO place(name, parent, person) VALUES ('Matara', 1, 'p2');
         UPDATE place SET parent = 4 WHERE name = 'Galle';
         INSERT INTO opt VALUES ('status', 'inj', 'Injured');",
    )?;
    bundles.push(("hq-delta".to_owned(), bundle_for(&mut hq, SEED_NAME)?));

    f2.connection().execute_batch(
        "UPDATE person SET status = 'transferred', age = 35 WHERE id = 'p1';
         INSERT INTO person VALUES ('q1', 'Hana Ito', NULL, NULL, NULL), ('q2', '', 'missing', 'Q2', 0);
         INSERT INTO visit VALUES ('q1', 1, CAST(x'c3a9e28099ff' AS TEXT), -0.0), ('p1', 3, x'', 0.1);
         UPDATE tag SET k = 4.0 WHERE k = 1;
         INSERT INTO tag VALUES (-9223372036854775808, 9223372036854775807);
         DELETE FROM visit WHERE person = 'p5';
         INSERT INTO place(name, parent, person) VALUES ('Hikkaduwa', 2, 'q1');
         DELETE FROM opt WHERE code = 'mis';
         INSERT INTO opt VALUES ('status', 'inj', 'Injured');",
    )?;
    bundles.push(("field-2-relay".to_owned(), bundle_for(&mut f2, SEED_NAME)?));
    bundles.push(("hq-full".to_owned(), full(&mut hq)?));

    // field-2 learns hq's news and passes it on with its own.
    let hq_to_f2 = bundle_for(&mut hq, "field-2")?;
    f2.import(Cursor::new(&hq_to_f2))?;
    f2.connection()
        .execute_batch("UPDATE person SET name = 'Amal P.' WHERE id = 'p1';")?;
    bundles.push(("field-2-second".to_owned(), bundle_for(&mut f2, SEED_NAME)?));
    bundles.push(("field-2-full".to_owned(), full(&mut f2)?));

    // The seed's future self edits on and reaches field-2, whose next
    // bundle then acknowledges seed changes the seed never made.
    let mut later = Instance::open(&later_db)?;
    later.connection().execute_batch(
        "UPDATE person SET age = 20 WHERE id = 'p7';
         INSERT INTO person VALUES ('p8', 'Ivo Petrov', NULL, 'I8', 50);",
    )?;
    let later_to_f2 = bundle_for(&mut later, "field-2")?;
    f2.import(Cursor::new(&later_to_f2))?;
    bundles.push((
        "field-2-after-restore".to_owned(),
        bundle_for(&mut f2, SEED_NAME)?,
    ));
    // Nothing new: a bundle of acknowledgements only.
    bundles.push(("field-2-empty".to_owned(), bundle_for(&mut f2, SEED_NAME)?));
    Ok(Generated { seed_db, bundles })
}

/// Every table of a database, fieldsync's included, and its schema, as one
/// line per table (row count and a hash of the rows in order), to tell
/// whether two databases hold the same state. With `ignore_times`, values
/// that record when something happened rather than what are left out: the
/// stored clock, the times of a peer's last import and export, when a
/// conflict was noticed, when a held change was tried, when a signer
/// was pinned, when a peer's clock was seen and when a bundle was refused,
/// and the sync journal (a record of operations: running one again adds a
/// row), so two runs of one operation at different times compare equal.
pub fn state_fingerprint(conn: &rusqlite::Connection, ignore_times: bool) -> Result<String, Error> {
    let mut out = String::new();
    let mut schema = blake3::Hasher::new();
    let mut tables = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT type, name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             ORDER BY type, name",
        )?;
        let mut q = stmt.query([])?;
        while let Some(r) = q.next()? {
            let (kind, name, sql): (String, String, Option<String>) =
                (r.get(0)?, r.get(1)?, r.get(2)?);
            schema.update(format!("{kind} {name} {sql:?}\n").as_bytes());
            if kind == "table" {
                tables.push(name);
            }
        }
    }
    out.push_str(&format!("schema {}\n", schema.finalize().to_hex()));
    for t in tables {
        // The sync journal records operations, not state: importing a
        // bundle again adds a row, and an import stopped and finished by a
        // second run journals what the second run did.
        if ignore_times && t == "fieldsync_journal" {
            continue;
        }
        let masked: &[&str] = match (ignore_times, t.as_str()) {
            (true, "fieldsync_peers") => &["last_import", "last_export"],
            (true, "fieldsync_conflicts") => &["noticed_at"],
            (true, "fieldsync_quarantine") => &["first_at", "last_at", "tries"],
            (true, "fieldsync_pins") => &["first_seen"],
            (true, "fieldsync_clocks") => &["seen_at"],
            (true, "fieldsync_refused") => &["at"],
            _ => &[],
        };
        let cols: Vec<String> = crate::catalog::store::column_names(conn, &t)?
            .into_iter()
            .filter(|c| !masked.contains(&c.as_str()))
            .collect();
        let list = cols
            .iter()
            .map(|c| crate::catalog::schema::quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let filter = if ignore_times && t == "fieldsync_meta" {
            " WHERE key <> 'clock'"
        } else {
            ""
        };
        let mut stmt = conn.prepare(&format!(
            "SELECT {list} FROM {}{filter} ORDER BY {list}",
            crate::catalog::schema::quote_ident(&t)
        ))?;
        let mut q = stmt.query([])?;
        let mut h = blake3::Hasher::new();
        let mut n = 0u64;
        while let Some(r) = q.next()? {
            n += 1;
            for i in 0..cols.len() {
                h.update(format!("{:?}|", crate::Value::from_ref(r.get_ref(i)?)).as_bytes());
            }
            h.update(b"\n");
        }
        out.push_str(&format!("{t}: {n} rows {}\n", h.finalize().to_hex()));
    }
    Ok(out)
}

// What the tests and benches reach into, below the public face.
pub use crate::base::hlc::now_unix_ms;
pub use crate::base::seqset::MAX_SEQ;
pub use crate::base::value::decode_key;
pub use crate::catalog::identity::content_sig;
pub use crate::catalog::refs::TAG_IDENTITY;

/// An instance's own signing key, for the tests that craft a bundle as
/// that instance would have signed it (a forgery by the instance itself,
/// which signing cannot stop). Not part of the supported API.
pub fn signing_key(db: &Instance) -> Result<SigningKey, Error> {
    crate::catalog::keys::signing_key(db.connection())
}

/// The server key the `check_request` target's requests are signed for.
const FUZZ_AUDIENCE: &str = "fuzz-server";

/// Fuzz target `check_request`: `data` read as text, its first line
/// `METHOD PATH`, the others `name: value` headers, through the checks
/// `fieldsync serve` makes before it reads a body.
pub fn check_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let (method, path) = first.split_once(' ').unwrap_or((first, "/"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let now = crate::base::hlc::now_unix_ms();
    if let Ok(signed) = crate::net::auth::check(get, FUZZ_AUDIENCE, method, path, now) {
        let nonces = crate::net::auth::Nonces::default();
        assert!(nonces.fresh(&signed, now), "a first nonce is fresh");
        assert!(!nonces.fresh(&signed, now), "a second is a replay");
    }
    let last = path.rsplit('/').next().unwrap_or("");
    if crate::net::spool::is_id(last) {
        assert!(last.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    if let Some(range) = get("range") {
        if let Some(k) = crate::net::server::range_start(range, 1 << 20) {
            assert!(k <= 1 << 20);
        }
    }
}

/// Seeds for `check_request`: requests signed now by [`fuzz_key`], as the
/// client makes them.
pub fn request_seeds() -> Vec<Vec<u8>> {
    let key = fuzz_key();
    let id = "ab".repeat(32);
    let mut out = Vec::new();
    for (method, path, body, extra) in [
        ("GET", "/v1/hello".to_owned(), &b""[..], ""),
        ("GET", format!("/v1/upload/{id}"), &b""[..], ""),
        (
            "PUT",
            format!("/v1/upload/{id}?offset=0&total=12"),
            &b"bundle bytes"[..],
            "",
        ),
        ("POST", format!("/v1/sync/{id}"), &b""[..], ""),
        (
            "GET",
            format!("/v1/bundle/{}", "cd".repeat(16)),
            &b""[..],
            "range: bytes=100-\n",
        ),
    ] {
        let mut text = format!("{method} {path}\n");
        for (k, v) in
            crate::net::auth::sign(&key, FUZZ_AUDIENCE, method, &path, &blake3::hash(body))
        {
            text.push_str(&format!("{k}: {v}\n"));
        }
        text.push_str(extra);
        out.push(text.into_bytes());
    }
    out
}
