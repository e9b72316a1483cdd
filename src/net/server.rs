//! `fieldsync serve` (spec/network.md): an HTTP server over one database
//! that takes field instances' bundles and answers with what each lacks.
//!
//! It owns the routes, the check of every request's signature against the
//! keyring before its body is read, per-instance rate limits, the spool
//! where uploads are received and answers written, the exchanges under
//! way (each an import then an export, run in the background and fetched
//! by its id), and the log line of each request. Connections are
//! [`super::conn`]'s. The database is touched only by the engine's own
//! import and export, in blocking tasks bounded by [`ServeOptions::jobs`],
//! each on a connection of its own: the server never runs SQL from a
//! request, and a slow client never holds the write lock (its bytes are
//! spooled first, and its answer is read from the spool).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path as UrlPath, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};

use super::auth::{self, Nonces, Signed};
use super::conn::{Busy, Limits, Remote, serve_connections, tls_acceptor};
use super::spool::{self, Spool};
use crate::catalog::keyring::Keyring;
use crate::error::{Error, NetError};
use crate::{ExportOptions, ExportTarget, ImportOptions, ImportReport, Instance, Overwrite};

/// How `fieldsync serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The database served.
    pub db: PathBuf,
    /// `host:port` to listen on (port 0: any free port).
    pub listen: String,
    /// A PEM certificate chain and its private key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The largest bundle taken, in bytes.
    pub max_body: u64,
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Requests one instance may make a minute (a burst of a quarter of
    /// them at once), at most 400.
    pub requests_per_minute: u32,
    /// A connection that moves no byte for this long is closed (not while
    /// its request is being worked on); a request's head must come within
    /// it.
    pub idle: Duration,
    /// Exchanges (an import, then an export) run at once: each holds a
    /// database connection and its buffers, so this bounds the memory.
    pub jobs: usize,
    /// Stop after this many requests (tests: a bounded request loop).
    pub stop_after: Option<u64>,
    /// The HQ console served beside the API (spec/console.md): off
    /// without a password hash.
    pub console: crate::console::ConsoleConfig,
}

impl ServeOptions {
    /// The defaults of spec/network.md for `db` on `listen`.
    pub fn new(db: impl Into<PathBuf>, listen: impl Into<String>) -> ServeOptions {
        let db = db.into();
        ServeOptions {
            console: crate::console::ConsoleConfig {
                db: db.clone(),
                password_hash: None,
                stale_days: crate::console::DEFAULT_STALE_DAYS,
            },
            db,
            listen: listen.into(),
            tls: None,
            max_body: 1 << 30,
            max_connections: 64,
            requests_per_minute: 240,
            idle: Duration::from_secs(30),
            jobs: 2,
            stop_after: None,
        }
    }
}

/// Where `fieldsync serve` listens, as it prints when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listening {
    /// The socket address bound (`127.0.0.1:8470`).
    pub address: String,
    /// The URL field instances sync with (`https://127.0.0.1:8470`).
    pub url: String,
}

/// What `GET /v1/hello` says of the server: public facts only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version.
    pub protocol: u32,
    /// The served instance's name.
    pub name: String,
    /// Its site id.
    pub site_id: String,
    /// Its Ed25519 signing key, base64: what requests to it are signed for.
    pub signing_key: String,
    /// Its fingerprint, to read over the phone.
    pub fingerprint: String,
}

/// The protocol this server speaks.
pub const PROTOCOL: u32 = 2;

/// What the server's import of a client's bundle did, in the answer's
/// `fieldsync-import` header.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerImport {
    /// Row records in the bundle.
    pub changes: u64,
    /// Of them, applied.
    pub applied: u64,
    /// Already known there.
    pub known: u64,
    /// Older than what it has.
    pub older: u64,
    /// Held in its quarantine.
    pub quarantined: u64,
}

impl From<&ImportReport> for ServerImport {
    fn from(r: &ImportReport) -> Self {
        ServerImport {
            changes: r.changes,
            applied: r.applied,
            known: r.known,
            older: r.older,
            quarantined: r.quarantined,
        }
    }
}

/// The header with the server's [`ServerImport`] (JSON).
pub const H_IMPORT: &str = "fieldsync-import";

/// An upload's place, in `PUT /v1/upload/ID?offset=K&total=N` (in the
/// query, so the signature covers it).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct UploadAt {
    /// Its first byte.
    pub offset: u64,
    /// The whole bundle's size.
    pub total: u64,
}

/// An upload's state, as `GET` and `PUT /v1/upload/ID` answer it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadState {
    /// Bytes the server holds.
    pub have: u64,
    /// True once every byte arrived and the whole matches its id.
    pub complete: bool,
}

/// What `POST /v1/sync/ID` answers at once: the answer to fetch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    /// `GET /v1/bundle/ID` fetches it (202 while it is being made).
    pub bundle: String,
}

/// An exchange the server runs for a client.
#[derive(Debug, Clone)]
enum Job {
    /// Importing the upload, then writing the answer.
    Running,
    /// The answer is in the spool.
    Done(ServerImport),
    /// Refused or failed: the status and line to answer with.
    Failed(StatusCode, String),
}

/// An exchange, by answer id.
#[derive(Debug, Clone)]
struct Exchange {
    key: [u8; 32],
    upload: String,
    answer: Answer,
    state: Job,
    at: Instant,
}

/// The keyring as the server last read it: who may make requests.
struct Keys {
    loaded: Option<Instant>,
    by_key: HashMap<[u8; 32], (String, bool)>,
}

/// How long the server believes its copy of the keyring (an enrolment or
/// revocation made meanwhile takes effect within it).
const KEYS_FRESH: Duration = Duration::from_secs(2);

/// Everything the handlers share.
struct Shared {
    db: PathBuf,
    spool: Spool,
    hello: Hello,
    nonces: Nonces,
    keys: Mutex<Keys>,
    limiter: DefaultKeyedRateLimiter<[u8; 32]>,
    per_minute: u32,
    jobs: Arc<Semaphore>,
    exchanges: Mutex<HashMap<String, Exchange>>,
    job_done: Notify,
    uploading: Mutex<HashSet<String>>,
    max_body: u64,
    idle: Duration,
    served: AtomicU64,
    stop_after: Option<u64>,
    stop: Notify,
}

/// Serve `opts.db` until Ctrl-C, SIGTERM or `opts.stop_after` requests;
/// `ready` is called with the address once it listens, and whether it is
/// HTTPS.
pub fn serve(opts: ServeOptions, ready: impl FnOnce(SocketAddr, bool)) -> Result<(), Error> {
    let hello = prepare_database(&opts.db)?;
    let tls = match &opts.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let spool = Spool::beside(&opts.db, "fieldsync-spool")?;
    spool.sweep();
    let listen_err = |reason: String| NetError::Listen {
        listen: opts.listen.clone(),
        reason,
    };
    let std_listener =
        std::net::TcpListener::bind(&opts.listen).map_err(|e| listen_err(e.to_string()))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| listen_err(e.to_string()))?;
    let addr = std_listener
        .local_addr()
        .map_err(|e| listen_err(e.to_string()))?;
    let rate = opts.requests_per_minute.clamp(1, 400);
    let per_minute = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new((rate / 4).max(1)).unwrap_or(NonZeroU32::MIN);
    let shared = Arc::new(Shared {
        db: opts.db.clone(),
        spool,
        hello,
        nonces: Nonces::default(),
        keys: Mutex::new(Keys {
            loaded: None,
            by_key: HashMap::new(),
        }),
        limiter: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
        per_minute: rate,
        jobs: Arc::new(Semaphore::new(opts.jobs.max(1))),
        exchanges: Mutex::new(HashMap::new()),
        job_done: Notify::new(),
        uploading: Mutex::new(HashSet::new()),
        max_body: opts.max_body,
        idle: opts.idle,
        served: AtomicU64::new(0),
        stop_after: opts.stop_after,
        stop: Notify::new(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Few threads that allocate: each keeps its own malloc arena.
        .max_blocking_threads(opts.jobs.max(1) + 2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let tcp = tokio::net::TcpListener::from_std(std_listener)?;
        ready(addr, tls.is_some());
        let limits = Limits {
            max_connections: opts.max_connections,
            idle: opts.idle,
        };
        let stopping = shared.clone();
        serve_connections(
            tcp,
            tls,
            router(shared, opts.console.clone()),
            limits,
            async move { stop_signal(&stopping).await },
        )
        .await;
        Ok::<(), Error>(())
    })?;
    // Exchanges cut by the shutdown leave their files for the next start.
    runtime.shutdown_timeout(Duration::from_secs(10));
    Ok(())
}

/// Open the database once at start: it must be a fieldsync instance, and
/// is put in WAL mode so exports read while imports and the app write.
fn prepare_database(db: &Path) -> Result<Hello, Error> {
    let instance = Instance::open(db)?;
    let mode: String = instance
        .connection()
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(NetError::Listen {
            listen: db.display().to_string(),
            reason: format!(
                "the database cannot be put in WAL mode (it is in {mode} mode), which serving needs"
            ),
        }
        .into());
    }
    let key = instance.key()?;
    Ok(Hello {
        protocol: PROTOCOL,
        name: key.name.clone(),
        site_id: key.site_id.clone(),
        signing_key: key.public_key.clone(),
        fingerprint: key.fingerprint.clone(),
    })
}

async fn stop_signal(shared: &Shared) {
    let term = async {
        #[cfg(unix)]
        {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => eprintln!("stopping (Ctrl-C)"),
        _ = term => eprintln!("stopping (SIGTERM)"),
        _ = shared.stop.notified() => eprintln!(
            "stopping after {} requests (--stop-after)",
            shared.served.load(Ordering::Relaxed)
        ),
    }
}

// ---- routes -----------------------------------------------------------

/// The API under `/v1/`; every other path is the HQ console's
/// (spec/console.md), which answers its own "not found".
fn router(shared: Arc<Shared>, console: crate::console::ConsoleConfig) -> Router {
    Router::new()
        .route("/v1/health", get(|| async { "ok\n" }))
        .route("/v1/hello", get(hello))
        .route("/v1/upload/{id}", get(upload_status).put(upload))
        .route("/v1/push/{id}", post(push))
        .route("/v1/sync/{id}", post(sync))
        .route("/v1/bundle/{id}", get(download))
        .fallback_service(crate::console::router(console))
        .method_not_allowed_fallback(|| async {
            reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "not with this method; use `fieldsync sync`",
            )
        })
        // Bodies are bounded by the handlers (an upload's declared size).
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            log_request,
        ))
        .with_state(shared)
}

/// The one line the log keeps of a request, after it is answered; and the
/// count that stops a server started with a bound.
async fn log_request(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let began = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let addr = req
        .extensions()
        .get::<ConnectInfo<Remote>>()
        .map(|c| c.0.addr.to_string())
        .unwrap_or_default();
    let response = next.run(req).await;
    let note = response
        .extensions()
        .get::<Note>()
        .map(|n| n.0.as_str())
        .unwrap_or("");
    eprintln!(
        "{} {addr} {method} {path} {} {} ms{}{note}",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        response.status().as_u16(),
        began.elapsed().as_millis(),
        if note.is_empty() { "" } else { " " },
    );
    let served = shared.served.fetch_add(1, Ordering::Relaxed) + 1;
    if shared.stop_after.is_some_and(|n| served >= n) {
        shared.stop.notify_one();
    }
    response
}

/// What the log line adds to a request: who, and what was done or refused.
#[derive(Clone)]
struct Note(String);

/// A one-line answer (text), noted in the log.
fn reply(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    let mut r = (status, format!("{message}\n")).into_response();
    r.extensions_mut().insert(Note(message));
    r
}

fn with_note(mut r: Response, note: String) -> Response {
    r.extensions_mut().insert(Note(note));
    r
}

/// Public facts of this server; a signed hello is also checked like any
/// request, so an instance this server does not know, or has revoked,
/// learns it before it writes a bundle.
async fn hello(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if headers.contains_key(auth::H_SIGNATURE) {
        match authorize(&shared, "", &method, &signed_path(&uri), &headers).await {
            Ok((client, _)) => {
                return with_note(
                    axum::Json(shared.hello.clone()).into_response(),
                    client.name,
                );
            }
            Err(r) => return r,
        }
    }
    axum::Json(shared.hello.clone()).into_response()
}

/// The path (and query) a request's signature covers: as sent, before
/// any decoding.
fn signed_path(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned())
}

/// A request's sender, known and not revoked.
#[derive(Debug, Clone)]
struct Client {
    key: [u8; 32],
    name: String,
}

impl Client {
    /// The prefix of its spool files: its key, in hex.
    fn tag(&self) -> String {
        auth::hex(&self.key)
    }
}

/// The name and revocation of `key` in the keyring, read again if the
/// copy is older than [`KEYS_FRESH`].
async fn lookup(shared: &Arc<Shared>, key: &[u8; 32]) -> Result<Option<(String, bool)>, Response> {
    let stale = shared
        .keys
        .lock()
        .map(|k| k.loaded.is_none_or(|t| t.elapsed() > KEYS_FRESH))
        .unwrap_or(true);
    if stale {
        let db = shared.db.clone();
        let read = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let conn = crate::catalog::store::open_existing(&db)?;
            let ring = Keyring::load(&conn)?;
            Ok(ring
                .pins
                .into_iter()
                .map(|p| (p.public_key, (p.name, p.revoked_at.is_some())))
                .collect::<HashMap<_, _>>())
        })
        .await;
        match read {
            Ok(Ok(by_key)) => {
                if let Ok(mut k) = shared.keys.lock() {
                    k.by_key = by_key;
                    k.loaded = Some(Instant::now());
                }
            }
            Ok(Err(e)) => {
                return Err(reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the server cannot read its keyring: {e}"),
                ));
            }
            Err(_) => {
                return Err(reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the keyring check failed",
                ));
            }
        }
    }
    Ok(shared
        .keys
        .lock()
        .ok()
        .and_then(|k| k.by_key.get(key).cloned()))
}

/// Check a request's signature and sender before anything else is read:
/// the signature over the audience (this server's key, or nothing for a
/// hello), its method, path and body hash; the time; the key in this
/// server's keyring, not revoked; the nonce; its rate.
async fn authorize(
    shared: &Arc<Shared>,
    audience: &str,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(Client, Signed), Response> {
    let now = crate::base::hlc::now_unix_ms();
    let signed = auth::check(
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        audience,
        method.as_str(),
        path,
        now,
    )
    .map_err(|d| {
        reply(
            StatusCode::from_u16(d.status).unwrap_or(StatusCode::UNAUTHORIZED),
            d.message,
        )
    })?;
    let key = signed.key;
    let fingerprint = crate::catalog::keys::signing_fingerprint(&key);
    let Some((name, revoked)) = lookup(shared, &key).await? else {
        return Err(reply(
            StatusCode::UNAUTHORIZED,
            format!(
                "this server does not know the key {fingerprint}: HQ enrols the instance with `fieldsync trust` (its `fieldsync key --json`), then it can sync"
            ),
        ));
    };
    if revoked {
        return Err(reply(
            StatusCode::FORBIDDEN,
            format!("'{name}' (key {fingerprint}) is revoked here; it cannot sync"),
        ));
    }
    // Known keys only: what the nonce list and the limiter hold is bounded
    // by the keyring.
    if !shared.nonces.fresh(&signed, now) {
        return Err(reply(
            StatusCode::UNAUTHORIZED,
            format!("{name}: the request was seen before (a replay); send a new one"),
        ));
    }
    if shared.limiter.check_key(&key).is_err() {
        return Err(reply(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many requests from '{name}': at most {} a minute; try again in a minute",
                shared.per_minute
            ),
        ));
    }
    Ok((Client { key, name }, signed))
}

/// A request whose signature and sender [`authorize`] checked: what every
/// signed route but hello takes, before anything else of the request is
/// read.
struct Authorized {
    client: Client,
    signed: Signed,
}

impl FromRequestParts<Arc<Shared>> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let path = signed_path(&parts.uri);
        let audience = shared.hello.signing_key.clone();
        let (client, signed) =
            authorize(shared, &audience, &parts.method, &path, &parts.headers).await?;
        Ok(Authorized { client, signed })
    }
}

impl Authorized {
    /// Refuse a transfer id that is not one, or a body where none belongs.
    fn bodiless(&self, id: &str) -> Result<(), Refusal> {
        check_id(id)?;
        if self.signed.body == *blake3::hash(b"").as_bytes() {
            Ok(())
        } else {
            Err(Refusal(
                StatusCode::BAD_REQUEST,
                "this request takes no body",
            ))
        }
    }
}

/// A request refused before its work: the status and the one line.
struct Refusal(StatusCode, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        reply(self.0, self.1)
    }
}

fn check_id(id: &str) -> Result<(), Refusal> {
    if spool::is_id(id) {
        Ok(())
    } else {
        Err(Refusal(
            StatusCode::BAD_REQUEST,
            "a transfer id is 32 or 64 lowercase hex digits",
        ))
    }
}

fn upload_paths(shared: &Shared, client: &Client, id: &str) -> (PathBuf, PathBuf) {
    let base = format!("up-{}-{id}", client.tag());
    (
        shared.spool.file(&format!("{base}.part")),
        shared.spool.file(&format!("{base}.bundle")),
    )
}

async fn upload_status(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    auth: Authorized,
) -> Response {
    if let Err(r) = auth.bodiless(&id) {
        return r.into_response();
    }
    let (part, done) = upload_paths(&shared, &auth.client, &id);
    let state = if let Ok(m) = tokio::fs::metadata(&done).await {
        UploadState {
            have: m.len(),
            complete: true,
        }
    } else {
        UploadState {
            have: tokio::fs::metadata(&part).await.map_or(0, |m| m.len()),
            complete: false,
        }
    };
    with_note(axum::Json(state).into_response(), auth.client.name)
}

/// Uploads one instance may hold at once (partial or complete, not yet
/// imported); a new one drops the oldest.
const MAX_UPLOADS_PER_CLIENT: usize = 2;

/// Marks an upload as being received while alive: a second request for
/// the same one waits its turn (409).
struct Receiving<'a> {
    shared: &'a Shared,
    name: String,
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        if let Ok(mut u) = self.shared.uploading.lock() {
            u.remove(&self.name);
        }
    }
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    UrlPath(id): UrlPath<String>,
    auth: Authorized,
    at: Result<Query<UploadAt>, QueryRejection>,
    body: Body,
) -> Response {
    let Authorized { client, signed } = auth;
    if let Err(r) = check_id(&id) {
        return r.into_response();
    }
    if id.len() != 64 {
        return reply(
            StatusCode::BAD_REQUEST,
            "an upload's id is the BLAKE3 of the bundle",
        );
    }
    let Ok(Query(UploadAt { offset, total })) = at else {
        return reply(
            StatusCode::BAD_REQUEST,
            "an upload says its offset and total size (?offset=K&total=N)",
        );
    };
    if total > shared.max_body {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{}: the bundle is {total} bytes and this server takes at most {}; HQ can raise it (fieldsync serve --max-body-mib)",
                client.name, shared.max_body
            ),
        );
    }
    let (part, done) = upload_paths(&shared, &client, &id);
    let name = format!("{}-{id}", client.tag());
    let fresh = shared
        .uploading
        .lock()
        .map(|mut u| u.insert(name.clone()))
        .unwrap_or(false);
    if !fresh {
        return reply(
            StatusCode::CONFLICT,
            format!("{}: this bundle is being received already", client.name),
        );
    }
    let _receiving = Receiving {
        shared: &shared,
        name,
    };
    if tokio::fs::metadata(&done).await.is_ok() {
        return with_note(
            axum::Json(UploadState {
                have: total,
                complete: true,
            })
            .into_response(),
            format!("{}: already complete", client.name),
        );
    }
    let have = tokio::fs::metadata(&part).await.map_or(0, |m| m.len());
    if offset != have {
        let mut r = (
            StatusCode::CONFLICT,
            axum::Json(UploadState {
                have,
                complete: false,
            }),
        )
            .into_response();
        r.extensions_mut().insert(Note(format!(
            "{}: offset {offset}, have {have}",
            client.name
        )));
        return r;
    }
    if offset == 0 {
        // A new upload: drop this instance's oldest ones beyond the bound.
        let mine = shared.spool.starting_with(&format!("up-{}-", client.tag()));
        let over = (mine.len() + 1).saturating_sub(MAX_UPLOADS_PER_CLIENT);
        for old in mine.iter().take(over) {
            let _ = tokio::fs::remove_file(old).await;
        }
    }
    let mut file = match tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&part)
        .await
    {
        Ok(f) => f,
        Err(e) => {
            return reply(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("cannot spool: {e}"),
            );
        }
    };
    let mut hasher = blake3::Hasher::new();
    let mut written = 0u64;
    let mut body = body;
    let failed = loop {
        match tokio::time::timeout(shared.idle, body.frame()).await {
            Err(_) => {
                break Some((
                    StatusCode::REQUEST_TIMEOUT,
                    "no data came for too long".to_owned(),
                    true,
                ));
            }
            Ok(None) => break None,
            Ok(Some(Err(e))) => {
                break Some((
                    StatusCode::BAD_REQUEST,
                    format!("the upload was cut: {e}"),
                    true,
                ));
            }
            Ok(Some(Ok(frame))) => {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                written += data.len() as u64;
                if offset.saturating_add(written) > total {
                    break Some((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the upload is longer than its declared size".to_owned(),
                        false,
                    ));
                }
                hasher.update(data);
                if let Err(e) = file.write_all(data).await {
                    break Some((
                        StatusCode::INSUFFICIENT_STORAGE,
                        format!("cannot spool: {e}"),
                        false,
                    ));
                }
            }
        }
    };
    let failed = failed.or_else(|| {
        (*hasher.finalize().as_bytes() != signed.body).then(|| {
            (
                StatusCode::BAD_REQUEST,
                "the upload does not match the hash its signature covers".to_owned(),
                false,
            )
        })
    });
    if let Some((status, message, keep)) = failed {
        // A cut upload keeps what arrived, to resume from (the whole is
        // checked against its id at the end); a body that is not the one
        // signed, or longer than declared, is dropped.
        let _ = file.sync_data().await;
        if !keep {
            let _ = file.set_len(offset).await;
        }
        return reply(status, format!("{}: {message}", client.name));
    }
    if let Err(e) = file.sync_data().await {
        return reply(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("cannot spool: {e}"),
        );
    }
    drop(file);
    let have = offset + written;
    let mut complete = false;
    if have == total {
        // Hashing a large upload moves no byte: not idleness.
        let _busy = Busy::new(&remote.activity);
        let whole = {
            let part = part.clone();
            tokio::task::spawn_blocking(move || spool::hash_file(&part, 0)).await
        };
        match whole {
            Ok(Ok(h)) if h.to_hex().as_str() == id => {
                if let Err(e) = tokio::fs::rename(&part, &done).await {
                    return reply(
                        StatusCode::INSUFFICIENT_STORAGE,
                        format!("cannot spool: {e}"),
                    );
                }
                complete = true;
            }
            _ => {
                let _ = tokio::fs::remove_file(&part).await;
                return reply(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "{}: the uploaded bundle does not match its id; send it again",
                        client.name
                    ),
                );
            }
        }
    }
    with_note(
        axum::Json(UploadState { have, complete }).into_response(),
        format!("{}: {written} bytes", client.name),
    )
}

/// What a client's bundle is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A bundle with no changes: what the server now holds.
    Acknowledge,
    /// Every change the client lacks.
    Changes,
}

async fn push(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    auth: Authorized,
) -> Response {
    start_exchange(shared, id, auth, Answer::Acknowledge).await
}

async fn sync(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    auth: Authorized,
) -> Response {
    start_exchange(shared, id, auth, Answer::Changes).await
}

/// How long `GET /v1/bundle/ID` waits for an answer being made before it
/// says 202 (well within a client's read timeout).
const LONG_POLL: Duration = Duration::from_secs(10);

/// How long a finished exchange is remembered (its answer is kept as long,
/// on disk).
const EXCHANGE_KEPT: Duration = spool::KEEP;

/// Start importing a complete upload and writing the answer, in the
/// background; answer at once with the answer's id (202). The same upload
/// asked for again (a retry) gets the same answer; one exchange per
/// instance runs at a time.
async fn start_exchange(
    shared: Arc<Shared>,
    id: String,
    auth: Authorized,
    answer: Answer,
) -> Response {
    if let Err(r) = auth.bodiless(&id) {
        return r.into_response();
    }
    let client = auth.client;
    let started = |bid: &str, note: String| {
        let mut r = (
            StatusCode::ACCEPTED,
            axum::Json(Started {
                bundle: bid.to_owned(),
            }),
        )
            .into_response();
        r.extensions_mut().insert(Note(note));
        r
    };
    let (_, done) = upload_paths(&shared, &client, &id);
    let bid = {
        let Ok(mut ex) = shared.exchanges.lock() else {
            return reply(StatusCode::INTERNAL_SERVER_ERROR, "the server is stopping");
        };
        ex.retain(|_, e| e.at.elapsed() < EXCHANGE_KEPT);
        if let Some((bid, _)) = ex
            .iter()
            .find(|(_, e)| e.key == client.key && e.upload == id && e.answer == answer)
        {
            return started(bid, format!("{}: answer {bid} again", client.name));
        }
        if ex
            .values()
            .any(|e| e.key == client.key && matches!(e.state, Job::Running))
        {
            return reply(
                StatusCode::CONFLICT,
                format!(
                    "{}: an exchange of this instance is under way; try again when it ends",
                    client.name
                ),
            );
        }
        if !done.exists() {
            return reply(
                StatusCode::NOT_FOUND,
                format!("{}: no complete upload {id}; upload it first", client.name),
            );
        }
        let mut bid = [0u8; 16];
        let _ = getrandom::fill(&mut bid);
        let bid = auth::hex(&bid);
        ex.insert(
            bid.clone(),
            Exchange {
                key: client.key,
                upload: id.clone(),
                answer,
                state: Job::Running,
                at: Instant::now(),
            },
        );
        bid
    };
    // This instance's earlier answers are superseded: it moved on.
    for old in shared
        .spool
        .starting_with(&format!("out-{}-", client.tag()))
    {
        let _ = tokio::fs::remove_file(old).await;
    }
    let out = shared
        .spool
        .file(&format!("out-{}-{bid}.bundle", client.tag()));
    let job = shared.clone();
    let (job_bid, name) = (bid.clone(), client.name.clone());
    tokio::spawn(async move {
        let Ok(permit) = job.jobs.clone().acquire_owned().await else {
            return;
        };
        let db = job.db.clone();
        let (upload, out2) = (done.clone(), out.clone());
        let key = client.key;
        // The permit goes with the work: it is released when the work
        // ends, whatever happens to the request that started it.
        let ran = tokio::task::spawn_blocking(move || {
            let result = run_exchange(&db, &upload, key, answer, &out2);
            drop(permit);
            result
        })
        .await;
        let state = match ran {
            Ok(Ok((imported, (changes, bytes)))) => {
                eprintln!(
                    "{name}: applied {} of {}, answered {changes} changes, {bytes} bytes",
                    imported.applied, imported.changes
                );
                let _ = tokio::fs::remove_file(&done).await;
                Job::Done(imported)
            }
            Ok(Err(e)) => {
                let _ = tokio::fs::remove_file(&out).await;
                let status = if e.refusal_reason().is_some() {
                    // The bundle is at fault: it will not import later.
                    let _ = tokio::fs::remove_file(&done).await;
                    StatusCode::UNPROCESSABLE_ENTITY
                } else if matches!(e, Error::Busy { .. }) {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                eprintln!("{name}: {e}");
                Job::Failed(status, format!("{name}: {e}"))
            }
            Err(_) => Job::Failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{name}: the exchange stopped"),
            ),
        };
        if let Ok(mut ex) = job.exchanges.lock() {
            if let Some(e) = ex.get_mut(&job_bid) {
                e.state = state;
                e.at = Instant::now();
            }
        }
        job.job_done.notify_waiters();
    });
    started(&bid, format!("{}: answer {bid} started", client.name))
}

/// The page cache of a server's exchange connection, KiB.
const SERVER_CACHE_KIB: u32 = 8 * 1024;

/// The blocking part of an exchange, on a connection of its own: import the
/// upload (which must be signed by the requester's key), then write the
/// answer to `out`. Returns what the import did and the answer's change
/// count and size.
fn run_exchange(
    db: &Path,
    upload: &Path,
    key: [u8; 32],
    answer: Answer,
    out: &Path,
) -> Result<(ServerImport, (u64, u64)), Error> {
    let mut instance = Instance::open(db)?;
    // Several exchanges and the app share the machine: a smaller page cache
    // than a lone import's keeps the server's memory bounded.
    instance
        .connection()
        .execute_batch(&format!("PRAGMA cache_size = -{SERVER_CACHE_KIB}"))?;
    let opts = ImportOptions {
        expect_signer: Some(key),
        via: crate::Via::Network,
        ..ImportOptions::default()
    };
    let report = instance.import_file_with(upload, &opts)?;
    let to = report.from_site_id.clone();
    let target = match answer {
        Answer::Acknowledge => ExportTarget::Acknowledge { to },
        Answer::Changes => ExportTarget::Peer { to, resend: true },
    };
    let export = ExportOptions {
        overwrite: Overwrite::Force,
        encrypt: true,
        via: crate::Via::Network,
    };
    let sent = instance.export_to_file_with(&target, out, &export, &mut |_, _| {})?;
    Ok((ServerImport::from(&report), (sent.changes, sent.bytes)))
}

async fn stream_file(path: &Path, from: u64) -> io::Result<(Body, u64, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    file.seek(io::SeekFrom::Start(from)).await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
    Ok((Body::from_stream(stream), len.saturating_sub(from), len))
}

/// `GET /v1/bundle/BID`: 202 while the answer is being made, its refusal
/// if it failed, else the answer (from the byte a `Range: bytes=K-` asks).
async fn download(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    UrlPath(id): UrlPath<String>,
    auth: Authorized,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = auth.bodiless(&id) {
        return r.into_response();
    }
    let client = auth.client;
    // A long poll: while the answer is being made, wait for it here (the
    // connection counts as busy) up to LONG_POLL, then say 202.
    let job = {
        let _busy = Busy::new(&remote.activity);
        let deadline = tokio::time::Instant::now() + LONG_POLL;
        loop {
            let done = shared.job_done.notified();
            let job = shared
                .exchanges
                .lock()
                .ok()
                .and_then(|ex| ex.get(&id).filter(|e| e.key == client.key).cloned());
            if !matches!(job.as_ref().map(|e| &e.state), Some(Job::Running)) {
                break job;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                break job;
            }
        }
    };
    let imported = match job.map(|e| e.state) {
        Some(Job::Running) => {
            return with_note(
                (
                    StatusCode::ACCEPTED,
                    axum::Json(Started { bundle: id.clone() }),
                )
                    .into_response(),
                format!("{}: answer {id} not ready", client.name),
            );
        }
        Some(Job::Failed(status, message)) => return reply(status, message),
        Some(Job::Done(imported)) => Some(imported),
        // Made before a restart: served from the spool if still there.
        None => None,
    };
    let file = shared
        .spool
        .file(&format!("out-{}-{id}.bundle", client.tag()));
    let Ok(meta) = tokio::fs::metadata(&file).await else {
        return reply(
            StatusCode::NOT_FOUND,
            format!(
                "{}: the answer {id} is no longer here; sync again",
                client.name
            ),
        );
    };
    let len = meta.len();
    let from = match headers.get(header::RANGE).map(|v| v.to_str().ok()) {
        None => 0,
        Some(text) => match text.and_then(|t| range_start(t, len)) {
            Some(k) => k,
            None => {
                return reply(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!(
                        "{}: the range is not bytes=K- within {len} bytes",
                        client.name
                    ),
                );
            }
        },
    };
    match stream_file(&file, from).await {
        Ok((body, rest, len)) => {
            let mut r = Response::new(body);
            let ranged = headers.contains_key(header::RANGE);
            *r.status_mut() = if ranged {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            };
            let h = r.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(rest));
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.fieldsync.bundle"),
            );
            if ranged {
                let range = if rest > 0 {
                    format!("bytes {from}-{}/{len}", len - 1)
                } else {
                    format!("bytes */{len}")
                };
                if let Ok(v) = HeaderValue::from_str(&range) {
                    h.insert(header::CONTENT_RANGE, v);
                }
            }
            if let Some(v) = imported
                .and_then(|i| serde_json::to_string(&i).ok())
                .and_then(|j| HeaderValue::from_str(&j).ok())
            {
                h.insert(H_IMPORT, v);
            }
            with_note(r, format!("{}: from byte {from} of {len}", client.name))
        }
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the answer: {e}"),
        ),
    }
}

/// The first byte a `Range: bytes=K-` header asks for, if it is that form
/// and K is within a file of `len` bytes (K = `len`: nothing is left).
pub fn range_start(text: &str, len: u64) -> Option<u64> {
    let k: u64 = text
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()?;
    (k <= len).then_some(k)
}

/// The base64 of a key, as `GET /v1/hello` gives it.
pub fn key_base64(key: &[u8; 32]) -> String {
    BASE64.encode(key)
}
