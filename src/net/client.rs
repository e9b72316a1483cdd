//! `fieldsync sync`, `push` and `pull` (spec/network.md): one exchange
//! with a server, on a blocking HTTP client. The outgoing bundle is written
//! to a file first and uploaded from it; the answer is downloaded to a file
//! and imported from it, so a transfer cut at any byte resumes from that
//! byte, in this run (bounded retries with backoff) or the next (the files
//! stay in `<db>.fieldsync-transfer/` for an hour). Every step can be
//! repeated: the server imports an upload twice without effect, and the
//! client's import of an answer is the import of a file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backon::{BlockingRetryable, ExponentialBuilder};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::SigningKey;
use serde::Serialize;
use ureq::Agent;
use ureq::http::Response;

use super::auth;
use super::remotes::{check_url, remembered};
use super::server::{H_IMPORT, Hello, PROTOCOL, ServerImport, Started, UploadState};
use super::spool::{self, KEEP, Spool};
use crate::catalog::keyring::Keyring;
use crate::error::{Error, NetError};
use crate::{
    ExportOptions, ExportTarget, ImportOptions, ImportReport, Instance, JournalEntry, JournalKind,
    Overwrite, Via,
};

/// Which way an exchange goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Send what the server lacks, then take what this instance lacks.
    Sync,
    /// Send only (the server answers with what it now holds).
    Push,
    /// Take only (this instance sends what it holds, no changes).
    Pull,
}

/// How an exchange runs.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Push, pull or both.
    pub direction: Direction,
    /// A remembered peer's name or a URL; `None`: the one remembered.
    pub server: Option<String>,
    /// PEM certificates to trust for HTTPS (a server with its own CA).
    pub ca_cert: Option<PathBuf>,
    /// A connection that moves nothing for this long is given up (and
    /// retried).
    pub timeout: Duration,
    /// Tries of each step before giving up.
    pub tries: usize,
    /// The largest answer taken, in bytes.
    pub max_body: u64,
}

impl SyncOptions {
    /// The defaults of spec/network.md.
    pub fn new(direction: Direction) -> SyncOptions {
        SyncOptions {
            direction,
            server: None,
            ca_cert: None,
            timeout: Duration::from_secs(30),
            tries: 5,
            max_body: 1 << 30,
        }
    }
}

/// What an exchange did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// The server's instance name.
    #[serde(rename = "server_instance")]
    pub server: String,
    /// Its URL.
    pub url: String,
    /// Which way it went.
    pub direction: Direction,
    /// Change records sent (of the bundle made for it; `None` if a bundle
    /// left by a cut run was sent again).
    pub sent_changes: Option<u64>,
    /// The bundle sent, in bytes.
    pub sent_bytes: u64,
    /// Bytes uploaded by this run.
    #[serde(rename = "uploaded_bytes")]
    pub uploaded: u64,
    /// The byte the upload resumed from (0: from the start).
    pub upload_resumed_from: u64,
    /// What the server's import of it did.
    pub server_import: Option<ServerImport>,
    /// The answer, in bytes.
    pub received_bytes: u64,
    /// Bytes downloaded by this run.
    #[serde(rename = "downloaded_bytes")]
    pub downloaded: u64,
    /// The byte the download resumed from (0: from the start).
    pub download_resumed_from: u64,
    /// This instance's import of the answer.
    pub import: Option<ImportReport>,
    /// Tries that failed and were made again.
    pub retries: u32,
    /// Milliseconds, in all.
    pub duration_ms: u64,
}

/// A step of an exchange, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Writing the bundle to send.
    Export,
    /// Uploading it (bytes done, total).
    Upload,
    /// The server is importing it and writing its answer.
    Server,
    /// Downloading the answer (bytes done, total).
    Download,
    /// Importing the answer.
    Import,
    /// A step failed and is tried again (try, tries).
    Retry,
}

/// Why one try of a step failed.
#[derive(Debug)]
enum Fail {
    /// Worth another try: the link, the server busy or restarting.
    Again(String),
    /// Not: a refusal, or a problem here.
    Stop(Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Stop(e)
    }
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Stop(e.into())
    }
}

/// One exchange with a server: push, pull or both, as `opts` says.
pub fn sync(
    instance: &mut Instance,
    opts: &SyncOptions,
    progress: &mut dyn FnMut(Stage, u64, u64),
) -> Result<SyncReport, Error> {
    let began = Instant::now();
    let db_arg = instance.path().display().to_string();
    let url = server_url(instance, opts.server.as_deref(), &db_arg)?;
    let mut link = Link::new(instance, &url, opts)?;
    let hello: Hello = link.retrying(progress, |l, _| l.hello())?;
    if hello.protocol != PROTOCOL {
        return Err(NetError::Protocol {
            url,
            problem: format!(
                "it speaks protocol {}, this fieldsync {PROTOCOL}; use the same version of fieldsync on both",
                hello.protocol
            ),
        }
        .into());
    }
    let server_key = trusted_server(instance, &hello, &url, &db_arg)?;
    link.audience = hello.signing_key.clone();
    let spool = Spool::beside(instance.path(), "fieldsync-transfer")?;
    // One exchange at a time per database: a second run waits its turn.
    let _lock = lock(&spool, &db_arg)?;
    spool.sweep();
    let tag = auth::hex(&server_key);
    let mut report = SyncReport {
        server: hello.name.clone(),
        url: url.clone(),
        direction: opts.direction,
        sent_changes: None,
        sent_bytes: 0,
        uploaded: 0,
        upload_resumed_from: 0,
        server_import: None,
        received_bytes: 0,
        downloaded: 0,
        download_resumed_from: 0,
        import: None,
        retries: 0,
        duration_ms: 0,
    };
    let kind = match opts.direction {
        Direction::Pull => "ack",
        Direction::Sync | Direction::Push => "changes",
    };
    let outgoing = spool.file(&format!("to-{tag}-{kind}.bundle"));
    let import_opts = ImportOptions {
        expect_signer: Some(server_key),
        via: crate::Via::Network,
        ..ImportOptions::default()
    };

    // An answer a cut run left: finish and import it first. The server
    // had imported that run's bundle when it answered, so what it was sent
    // is delivered; then the exchange asked for goes on as usual.
    if let Some(left) = left_answer(&spool, &tag) {
        let finished = match left {
            Left::Complete(path) => Some(path),
            Left::Partial { path, bid } => {
                match link.retrying(progress, |l, p| l.fetch(&bid, &path, &mut report, p)) {
                    Ok(done) => Some(done),
                    Err(e) => {
                        // Gone, or refused: what it held comes again in
                        // this exchange.
                        let _ = fs::remove_file(&path);
                        report.download_resumed_from = 0;
                        if !matches!(e, Error::Net(NetError::Refused { .. })) {
                            return Err(e);
                        }
                        None
                    }
                }
            }
        };
        if let Some(path) = finished {
            progress(Stage::Import, 0, 0);
            let imported = instance.import_file_with(&path, &import_opts);
            // A refused answer is journaled; it would be refused again.
            let _ = fs::remove_file(&path);
            imported?;
            for old in spool.starting_with(&format!("to-{tag}-")) {
                let _ = fs::remove_file(old);
            }
        }
    }

    // The bundle to send: one a cut run left (its upload resumes), or a
    // new one carrying everything the server has not acknowledged.
    let fresh = fs::metadata(&outgoing)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < KEEP);
    if !fresh {
        progress(Stage::Export, 0, 0);
        // The server by the name this instance knows it by, else its site id.
        let to = known_peer_name(instance, &hello).unwrap_or_else(|| hello.site_id.clone());
        let target = match opts.direction {
            Direction::Pull => ExportTarget::Acknowledge { to },
            Direction::Sync | Direction::Push => ExportTarget::Peer { to, resend: true },
        };
        let export = ExportOptions {
            overwrite: Overwrite::Force,
            encrypt: true,
            via: crate::Via::Network,
        };
        let sent =
            instance.export_to_file_with(&target, &outgoing, &export, &mut |done, total| {
                progress(Stage::Export, done, total)
            })?;
        report.sent_changes = Some(sent.changes);
    }
    let id = spool::hash_file(&outgoing, 0)?.to_hex().to_string();
    report.sent_bytes = fs::metadata(&outgoing)?.len();

    // Upload (resumed from what the server holds), start the exchange,
    // fetch the answer (resumed from what arrived): as one step, so an
    // upload the server lost is sent again.
    let path = link.retrying(progress, |l, p| {
        l.upload(&outgoing, &id, &mut report, p)?;
        let bid = l.start(&id, opts.direction)?;
        let part = spool.file(&format!("from-{tag}-{bid}.part"));
        l.fetch(&bid, &part, &mut report, p)
    })?;
    progress(Stage::Import, 0, 0);
    report.received_bytes = fs::metadata(&path).map_or(0, |m| m.len());
    let imported = instance.import_file_with(&path, &import_opts);
    let _ = fs::remove_file(&path);
    let _ = fs::remove_file(&outgoing);
    report.import = Some(imported?);
    spool.tidy();
    report.retries = link.retries;
    report.duration_ms = began.elapsed().as_millis() as u64;
    // One row for the whole exchange beside its export and import rows
    // (spec/console.md): what was received, the bytes both ways.
    let received = report.import.as_ref();
    instance.record_journal(&JournalEntry {
        id: 0,
        at_ms: crate::base::hlc::now_unix_ms(),
        kind: JournalKind::Sync,
        via: Via::Network,
        peer: Some(report.server.clone()),
        full: false,
        changes: received.map_or(0, |i| i.changes),
        applied: received.map_or(0, |i| i.applied),
        known: received.map_or(0, |i| i.known),
        older: received.map_or(0, |i| i.older),
        quarantined: received.map_or(0, |i| i.quarantined),
        bytes: Some(report.sent_bytes + report.received_bytes),
        duration_ms: report.duration_ms,
    })?;
    Ok(report)
}

/// Take the transfer directory's lock (released when the process ends,
/// however it ends); `Err` if another run holds it.
fn lock(spool: &Spool, db: &str) -> Result<fd_lock::RwLock<File>, Error> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(spool.file("lock"))?;
    let mut lock = fd_lock::RwLock::new(file);
    // The guard would unlock when dropped: the lock is held until the file
    // is closed instead, when the returned value goes.
    let held = match lock.try_write() {
        Ok(guard) => {
            std::mem::forget(guard);
            true
        }
        Err(_) => false,
    };
    if held {
        Ok(lock)
    } else {
        Err(NetError::Busy { db: db.into() }.into())
    }
}

/// The URL to sync with: `server` if it is one, else the one remembered
/// for the peer it names, else the only one remembered.
fn server_url(instance: &Instance, server: Option<&str>, db: &str) -> Result<String, Error> {
    if let Some(s) = server {
        if s.contains("://") {
            return check_url(s);
        }
        return remembered(instance)?
            .into_iter()
            .find(|r| r.name == s)
            .map(|r| r.url)
            .ok_or_else(|| {
                NetError::NoAddress {
                    name: s.into(),
                    db: db.into(),
                }
                .into()
            });
    }
    let all = remembered(instance)?;
    match all.as_slice() {
        [] => Err(NetError::NoServer { db: db.into() }.into()),
        [one] => Ok(one.url.clone()),
        more => Err(NetError::WhichServer {
            names: more
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            first: more[0].name.clone(),
            db: db.into(),
        }
        .into()),
    }
}

/// The server's signing key, if this instance trusts it: in its keyring,
/// not revoked. The answer's bundle is checked against it again on import.
fn trusted_server(
    instance: &Instance,
    hello: &Hello,
    url: &str,
    db: &str,
) -> Result<[u8; 32], Error> {
    let bad = |problem: &str| NetError::Protocol {
        url: url.into(),
        problem: problem.into(),
    };
    let key: [u8; 32] = BASE64
        .decode(&hello.signing_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| bad("its hello names no Ed25519 key"))?;
    let ring = Keyring::load(instance.connection())?;
    match ring.by_key(&key) {
        Some(pin) if pin.revoked_at.is_none() => Ok(key),
        _ => Err(NetError::UnknownServer {
            url: url.into(),
            name: safe_name(&hello.name),
            fingerprint: crate::catalog::keys::signing_fingerprint(&key),
            db: db.into(),
        }
        .into()),
    }
}

/// A name a server gave, as it may appear in a command this program
/// suggests: letters, digits, `-`, `_`, `.` only (else `HQ`).
fn safe_name(name: &str) -> String {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { name.to_owned() } else { "HQ".to_owned() }
}

/// A server's line as it may be printed: one line, no control characters,
/// at most 400 characters.
fn printable(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(400)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The server's name among this instance's peers, if it has one.
fn known_peer_name(instance: &Instance, hello: &Hello) -> Option<String> {
    let key: [u8; 32] = BASE64.decode(&hello.signing_key).ok()?.try_into().ok()?;
    let ring = Keyring::load(instance.connection()).ok()?;
    ring.by_key(&key).map(|p| p.name.clone())
}

/// An answer a cut run left in the transfer directory.
enum Left {
    /// Downloaded whole, not imported.
    Complete(PathBuf),
    /// Downloaded in part.
    Partial { path: PathBuf, bid: String },
}

fn left_answer(spool: &Spool, tag: &str) -> Option<Left> {
    let prefix = format!("from-{tag}-");
    let mut found = None;
    for path in spool.starting_with(&prefix) {
        let name = path.file_name()?.to_string_lossy().into_owned();
        let rest = name.strip_prefix(&prefix)?;
        if rest.ends_with(".bundle") {
            found = Some(Left::Complete(path));
        } else if let Some(bid) = rest.strip_suffix(".part") {
            if spool::is_id(bid) {
                found = Some(Left::Partial {
                    bid: bid.to_owned(),
                    path: path.clone(),
                });
            }
        }
    }
    found
}

/// The HTTP side: the agent, the server (its URL, and once known its key,
/// which every request is signed for), this instance's signing key, and
/// the retries made.
struct Link {
    agent: Agent,
    url: String,
    audience: String,
    key: SigningKey,
    tries: usize,
    retries: u32,
    max_body: u64,
}

/// How long a client waits for a server to make its answer.
const MAX_WAIT: Duration = Duration::from_secs(30 * 60);

impl Link {
    fn new(instance: &Instance, url: &str, opts: &SyncOptions) -> Result<Link, Error> {
        let mut config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_per_read(Some(opts.timeout))
            .timeout_per_write(Some(opts.timeout))
            .user_agent(format!("fieldsync/{}", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &opts.ca_cert {
            let pem = fs::read(ca).map_err(|e| NetError::Tls {
                problem: format!("cannot read {}: {e}", ca.display()),
            })?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(NetError::Tls {
                    problem: format!("{} holds no PEM certificate", ca.display()),
                }
                .into());
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                    .build(),
            );
        }
        Ok(Link {
            agent: config.build().into(),
            url: url.to_owned(),
            audience: String::new(),
            key: crate::catalog::keys::signing_key(instance.connection())?,
            tries: opts.tries.max(1),
            retries: 0,
            max_body: opts.max_body,
        })
    }

    /// Run `step` until it succeeds, fails for good, or has been tried
    /// `tries` times (waiting 0.5 s, 1 s, 2 s … up to 8 s, with jitter).
    fn retrying<T>(
        &mut self,
        progress: &mut dyn FnMut(Stage, u64, u64),
        mut step: impl FnMut(&mut Link, &mut dyn FnMut(Stage, u64, u64)) -> Result<T, Fail>,
    ) -> Result<T, Error> {
        let tries = self.tries;
        let url = self.url.clone();
        let mut last = String::new();
        let mut made = 0usize;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(8))
            .with_max_times(tries - 1)
            .with_jitter();
        let result = (|| {
            made += 1;
            if made > 1 {
                progress(Stage::Retry, made as u64, tries as u64);
            }
            step(self, &mut *progress)
        })
        .retry(backoff)
        .when(|f: &Fail| matches!(f, Fail::Again(_)))
        .notify(|f: &Fail, _| {
            if let Fail::Again(why) = f {
                last = why.clone();
            }
        })
        .call();
        self.retries += made.saturating_sub(1) as u32;
        match result {
            Ok(v) => Ok(v),
            Err(Fail::Stop(e)) => Err(e),
            Err(Fail::Again(why)) => Err(NetError::Unreachable {
                url,
                reason: if why.is_empty() { last } else { why },
            }
            .into()),
        }
    }

    /// A `GET` of `path`, signed for the server.
    fn get(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let req = self.agent.get(format!("{}{path}", self.url));
        self.sign(req, "GET", path, &blake3::hash(b""))
    }

    /// `req` with the headers that sign it for the server.
    fn sign<B>(
        &self,
        mut req: ureq::RequestBuilder<B>,
        method: &str,
        path: &str,
        body: &blake3::Hash,
    ) -> ureq::RequestBuilder<B> {
        for (k, v) in auth::sign(&self.key, &self.audience, method, path, body) {
            req = req.header(k, v);
        }
        req
    }

    fn hello(&mut self) -> Result<Hello, Fail> {
        let mut r = self
            .get("/v1/hello")
            .call()
            .map_err(|e| self.transport(e))?;
        self.check(&mut r)?;
        read_json(&mut r)
            .map_err(|e| Fail::Stop(self.protocol(&format!("its hello is not fieldsync's: {e}"))))
    }

    fn protocol(&self, problem: &str) -> Error {
        NetError::Protocol {
            url: self.url.clone(),
            problem: problem.into(),
        }
        .into()
    }

    /// A transport error (no answer, a cut, a timeout) is worth another
    /// try; a certificate this side does not trust, or a bad URL, is not.
    fn transport(&self, e: ureq::Error) -> Fail {
        let text = e.to_string();
        if text.contains("certificate") || matches!(e, ureq::Error::Tls(_)) {
            return Fail::Stop(
                NetError::Untrusted {
                    url: self.url.clone(),
                    detail: text,
                }
                .into(),
            );
        }
        match e {
            ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Protocol(_) => Fail::Again(text),
            _ => Fail::Stop(
                NetError::Unreachable {
                    url: self.url.clone(),
                    reason: text,
                }
                .into(),
            ),
        }
    }

    /// Turn an error status into a [`Fail`]: a refusal (4xx but those
    /// below) stops; a server busy, restarting, rate-limiting us or with
    /// another exchange of ours under way is tried again.
    fn check(&self, r: &mut Response<ureq::Body>) -> Result<(), Fail> {
        let status = r.status().as_u16();
        if status < 400 {
            return Ok(());
        }
        let message = r
            .body_mut()
            .with_config()
            .limit(16 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let message = printable(&message);
        let message = if message.is_empty() {
            format!("HTTP {status}")
        } else {
            message
        };
        if matches!(status, 408 | 409 | 429 | 502 | 503 | 504) {
            return Err(Fail::Again(format!("HTTP {status}: {message}")));
        }
        Err(Fail::Stop(
            NetError::Refused {
                url: self.url.clone(),
                status,
                message,
            }
            .into(),
        ))
    }

    /// Upload `file` (id `id`) from the byte the server holds.
    fn upload(
        &mut self,
        file: &Path,
        id: &str,
        report: &mut SyncReport,
        progress: &mut dyn FnMut(Stage, u64, u64),
    ) -> Result<(), Fail> {
        let total = fs::metadata(file)?.len();
        let path = format!("/v1/upload/{id}");
        let mut r = self.get(&path).call().map_err(|e| self.transport(e))?;
        self.check(&mut r)?;
        let state: UploadState = read_json(&mut r).map_err(|e| {
            Fail::Stop(self.protocol(&format!("its upload state is not fieldsync's: {e}")))
        })?;
        if state.complete {
            return Ok(());
        }
        let from = state.have.min(total);
        if from > 0 && report.upload_resumed_from == 0 {
            report.upload_resumed_from = from;
        }
        let hash = spool::hash_file(file, from)?;
        let mut reader = File::open(file)?;
        reader.seek(SeekFrom::Start(from))?;
        let mut counted = Counting {
            inner: reader,
            done: from,
            total,
            stage: Stage::Upload,
            progress,
            added: 0,
        };
        let path = format!("{path}?offset={from}&total={total}");
        let url = format!("{}{path}", self.url);
        let req = self
            .agent
            .put(url)
            .header("content-length", (total - from).to_string())
            .header("content-type", "application/vnd.fieldsync.bundle");
        let req = self.sign(req, "PUT", &path, &hash);
        let sent = req.send(ureq::SendBody::from_reader(&mut counted));
        report.uploaded += counted.added;
        let mut r = sent.map_err(|e| self.transport(e))?;
        let status = r.status().as_u16();
        if status == 422 {
            // The whole did not match its id (altered on the way): the
            // server dropped it; send it again from the start.
            return Err(Fail::Again("the upload arrived altered".into()));
        }
        self.check(&mut r)?;
        let state: UploadState = read_json(&mut r).map_err(|e| {
            Fail::Stop(self.protocol(&format!("its upload state is not fieldsync's: {e}")))
        })?;
        if state.complete {
            Ok(())
        } else {
            Err(Fail::Again(format!(
                "the upload stopped at byte {} of {total}",
                state.have
            )))
        }
    }

    /// Ask the server to import upload `id` and make its answer; the
    /// answer's id.
    fn start(&mut self, id: &str, direction: Direction) -> Result<String, Fail> {
        let verb = match direction {
            Direction::Push => "push",
            Direction::Sync | Direction::Pull => "sync",
        };
        let path = format!("/v1/{verb}/{id}");
        let req = self.agent.post(format!("{}{path}", self.url));
        let mut r = self
            .sign(req, "POST", &path, &blake3::hash(b""))
            .send_empty()
            .map_err(|e| self.transport(e))?;
        if r.status().as_u16() == 404 {
            // The upload is gone (expired, or a server restarted without
            // it): send it again.
            return Err(Fail::Again("the server no longer holds the upload".into()));
        }
        self.check(&mut r)?;
        let started: Started = read_json(&mut r).map_err(|e| {
            Fail::Stop(self.protocol(&format!(
                "its answer to the exchange is not fieldsync's: {e}"
            )))
        })?;
        if !spool::is_id(&started.bundle) {
            return Err(Fail::Stop(self.protocol("its answer's id is not one")));
        }
        Ok(started.bundle)
    }

    /// Fetch answer `bid` into `part`, from the bytes it holds, waiting
    /// while the server makes it. Returns the complete file.
    fn fetch(
        &mut self,
        bid: &str,
        part: &Path,
        report: &mut SyncReport,
        progress: &mut dyn FnMut(Stage, u64, u64),
    ) -> Result<PathBuf, Fail> {
        let path = format!("/v1/bundle/{bid}");
        let began = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let have = fs::metadata(part).map_or(0, |m| m.len());
            let mut r = self
                .get(&path)
                .header("range", format!("bytes={have}-"))
                .call()
                .map_err(|e| self.transport(e))?;
            let status = r.status().as_u16();
            if status == 202 {
                progress(Stage::Server, 0, 0);
                if began.elapsed() > MAX_WAIT {
                    return Err(Fail::Stop(self.protocol(
                        "it has been making its answer for 30 minutes; try again later",
                    )));
                }
                // The server held the request while it worked: ask again
                // at once, or soon.
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
            if status == 416 {
                // The part is longer than the answer: start it again.
                let _ = fs::remove_file(part);
                return Err(Fail::Again("the answer changed".into()));
            }
            self.check(&mut r)?;
            if let Some(i) = r
                .headers()
                .get(H_IMPORT)
                .and_then(|v| v.to_str().ok())
                .and_then(|j| serde_json::from_str(j).ok())
            {
                report.server_import = Some(i);
            }
            let rest = content_length(&r)
                .ok_or_else(|| Fail::Stop(self.protocol("its answer has no length")))?;
            let (from, total) = match (status, content_range(&r)) {
                (206, Some((start, total))) if start == have => (have, total),
                (206, _) => {
                    return Err(Fail::Stop(
                        self.protocol("its answer's range is not the one asked"),
                    ));
                }
                _ => (0, rest),
            };
            if from > 0 && report.download_resumed_from == 0 {
                report.download_resumed_from = from;
            }
            if total > self.max_body || from.checked_add(rest) != Some(total) {
                return Err(Fail::Stop(self.protocol(&format!(
                    "its answer is {total} bytes, more than the {} this side takes (sync --max-body-mib)",
                    self.max_body
                ))));
            }
            self.receive(&mut r, part, from, total, report, progress)?;
            return finish(part);
        }
    }

    /// Append the body of `r` to `part` (kept from byte `from`) until it
    /// holds `total`; a cut is worth another try, from where it stopped.
    fn receive(
        &mut self,
        r: &mut Response<ureq::Body>,
        part: &Path,
        from: u64,
        total: u64,
        report: &mut SyncReport,
        progress: &mut dyn FnMut(Stage, u64, u64),
    ) -> Result<(), Fail> {
        let mut file = OpenOptions::new().create(true).append(true).open(part)?;
        if file.metadata()?.len() != from {
            file.set_len(from)?;
        }
        let mut body = r.body_mut().with_config().limit(total - from).reader();
        let mut buf = vec![0u8; 64 * 1024];
        let mut done = from;
        progress(Stage::Download, done, total);
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    file.sync_data()?;
                    return Err(Fail::Again(format!(
                        "the answer was cut at byte {done} of {total}: {e}"
                    )));
                }
            };
            file.write_all(&buf[..n])?;
            done += n as u64;
            report.downloaded += n as u64;
            progress(Stage::Download, done, total);
        }
        file.sync_data()?;
        if done < total {
            return Err(Fail::Again(format!(
                "the answer was cut at byte {done} of {total}"
            )));
        }
        Ok(())
    }
}

/// A complete answer takes its final name.
fn finish(part: &Path) -> Result<PathBuf, Fail> {
    let done = part.with_extension("bundle");
    fs::rename(part, &done)?;
    Ok(done)
}

/// A small JSON answer, at most 64 KiB.
fn read_json<T: serde::de::DeserializeOwned>(r: &mut Response<ureq::Body>) -> Result<T, String> {
    let text = r
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

fn content_length(r: &Response<ureq::Body>) -> Option<u64> {
    r.headers()
        .get("content-length")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A `Content-Range: bytes K-L/N` (or `bytes */N`): its first byte and the
/// whole size.
fn content_range(r: &Response<ureq::Body>) -> Option<(u64, u64)> {
    let text = r.headers().get("content-range")?.to_str().ok()?;
    let (range, total) = text.strip_prefix("bytes ")?.split_once('/')?;
    let total: u64 = total.parse().ok()?;
    if range == "*" {
        return Some((total, total));
    }
    let start: u64 = range.split_once('-')?.0.parse().ok()?;
    Some((start, total))
}

/// A reader that reports what has gone through it.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    total: u64,
    stage: Stage,
    progress: &'a mut dyn FnMut(Stage, u64, u64),
    added: u64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        self.added += n as u64;
        (self.progress)(self.stage, self.done, self.total);
        Ok(n)
    }
}
