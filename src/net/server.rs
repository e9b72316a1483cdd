//! `fieldsync serve` (spec/network.md): an HTTP server over one database
//! that takes field instances' bundles and answers with what each lacks.
//!
//! It owns the listener (plain or TLS, a bounded number of connections,
//! each closed after [`ServeOptions::idle`] without progress), the routes,
//! the check of every request's signature against the keyring before its
//! body is read, per-instance rate limits, the spool where uploads are
//! received and answers are written, and the log line of each request.
//! The database is touched only by the engine's own import and export, in
//! blocking tasks bounded by [`ServeOptions::jobs`], each on a connection of
//! its own: the server never runs SQL from a request, and a slow client
//! never holds the write lock (its bytes are spooled first).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path as UrlPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::{IncomingStream, Listener};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body_util::BodyExt;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Sleep;
use tokio_util::either::Either;

use super::auth::{self, Nonces, Signed};
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
    /// them at once).
    pub requests_per_minute: u32,
    /// A connection that moves no byte for this long is closed (not while
    /// its request is being worked on).
    pub idle: Duration,
    /// Imports and exports run at once (each holds a database connection
    /// and its buffers: this bounds the memory).
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

/// What `GET /v1/hello` says of the server: public facts only.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Hello {
    /// The protocol version (1).
    pub protocol: u32,
    /// The served instance's name.
    pub name: String,
    /// Its site id.
    pub site_id: String,
    /// Its Ed25519 signing key, base64.
    pub signing_key: String,
    /// That key's fingerprint, to read over the phone.
    pub fingerprint: String,
}

/// The protocol this server speaks.
pub const PROTOCOL: u32 = 1;

/// What the server's import of a pushed bundle did, in the answer's
/// `Fieldsync-Import` header.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
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

/// The header naming the bundle an answer carries (to resume it).
pub const H_BUNDLE: &str = "fieldsync-bundle";
/// The header with the server's [`ServerImport`] (JSON).
pub const H_IMPORT: &str = "fieldsync-import";
/// An upload's first byte.
pub const H_OFFSET: &str = "fieldsync-offset";
/// An upload's whole size.
pub const H_TOTAL: &str = "fieldsync-total";

/// Everything the handlers share.
struct Shared {
    db: PathBuf,
    spool: Spool,
    hello: Hello,
    nonces: Nonces,
    limiter: DefaultKeyedRateLimiter<[u8; 32]>,
    per_minute: u32,
    jobs: Semaphore,
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
    let per_minute = NonZeroU32::new(opts.requests_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new((opts.requests_per_minute / 4).max(1)).unwrap_or(NonZeroU32::MIN);
    let shared = Arc::new(Shared {
        db: opts.db.clone(),
        spool,
        hello,
        nonces: Nonces::default(),
        limiter: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
        per_minute: opts.requests_per_minute,
        jobs: Semaphore::new(opts.jobs.max(1)),
        max_body: opts.max_body,
        idle: opts.idle,
        served: AtomicU64::new(0),
        stop_after: opts.stop_after,
        stop: Notify::new(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(opts.jobs.max(1) + 8)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let tcp = tokio::net::TcpListener::from_std(std_listener)?;
        let (tx, rx) = mpsc::channel(16);
        let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
        tokio::spawn(accept_loop(tcp, tls.clone(), slots, opts.idle, tx));
        ready(addr, tls.is_some());
        let listener = FsListener { rx, addr };
        let app = router(shared.clone(), opts.console.clone());
        let stopping = shared.clone();
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<Remote>(),
        )
        .with_graceful_shutdown(async move { stop_signal(&stopping).await })
        .await?;
        Ok::<(), Error>(())
    })?;
    // Requests cut by the shutdown leave their files for the next start.
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

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = |problem: String| NetError::Tls { problem };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err(format!("cannot read {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            tls_err(format!(
                "{} is not a PEM certificate chain: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(tls_err(format!("{} holds no certificate", cert.display())).into());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_err(format!("{} is not a PEM private key: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
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
        _ = shared.stop.notified() => eprintln!("stopping after {} requests (--stop-after)", shared.served.load(Ordering::Relaxed)),
    }
}

// ---- connections ------------------------------------------------------

/// A connection's state the handlers see: whether a request on it is
/// being worked on (then its silence is not idleness).
#[derive(Debug, Default)]
struct Activity {
    busy: AtomicUsize,
}

/// Marks a connection busy while alive.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: &Arc<Activity>) -> Busy {
        a.busy.fetch_add(1, Ordering::Relaxed);
        Busy(a.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The other end of a connection, as the handlers see it.
#[derive(Debug, Clone)]
struct Remote {
    addr: SocketAddr,
    activity: Arc<Activity>,
}

impl Connected<IncomingStream<'_, FsListener>> for Remote {
    fn connect_info(stream: IncomingStream<'_, FsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP stream that fails once it has made no progress for `idle`: a
/// write the client does not read, or (while no request on it is being
/// worked on) a read that brings nothing. Holds its connection slot.
struct IdleIo {
    inner: tokio::net::TcpStream,
    activity: Arc<Activity>,
    addr: SocketAddr,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    armed: bool,
    _slot: OwnedSemaphorePermit,
}

impl IdleIo {
    /// After an operation returned `Pending`: true if the connection has
    /// been stalled for `idle` (the timer wakes the task to say so).
    fn stalled(&mut self, cx: &mut Context<'_>, reading: bool) -> bool {
        if reading && self.activity.busy.load(Ordering::Relaxed) > 0 {
            self.armed = false;
            return false;
        }
        if !self.armed {
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::now() + self.idle);
            self.armed = true;
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            eprintln!(
                "{} closed: nothing moved for {} s",
                self.addr,
                self.idle.as_secs()
            );
            return true;
        }
        false
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no progress")
}

impl AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending if self.stalled(cx, true) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending if self.stalled(cx, false) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
            ready => {
                self.armed = false;
                ready
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

type Conn = Either<IdleIo, tokio_rustls::server::TlsStream<IdleIo>>;

/// The listener axum serves: connections accepted (and their TLS
/// handshakes done) by [`accept_loop`].
struct FsListener {
    rx: mpsc::Receiver<(Conn, Remote)>,
    addr: SocketAddr,
}

impl Listener for FsListener {
    type Io = Conn;
    type Addr = Remote;

    async fn accept(&mut self) -> (Conn, Remote) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Remote> {
        Ok(Remote {
            addr: self.addr,
            activity: Arc::default(),
        })
    }
}

/// Accept connections while there are slots (a connection beyond them is
/// closed at once), each handshake in a task of its own with a deadline.
async fn accept_loop(
    tcp: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    slots: Arc<Semaphore>,
    idle: Duration,
    tx: mpsc::Sender<(Conn, Remote)>,
) {
    loop {
        let (stream, addr) = match tcp.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            eprintln!("{addr} closed: too many connections (--max-connections)");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let io = IdleIo {
            inner: stream,
            activity: activity.clone(),
            addr,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            armed: false,
            _slot: slot,
        };
        let remote = Remote { addr, activity };
        match &tls {
            None => {
                if tx.send((Either::Left(io), remote)).await.is_err() {
                    return;
                }
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(idle, acceptor.accept(io)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((Either::Right(s), remote)).await;
                        }
                        Ok(Err(e)) => eprintln!("{addr} closed: TLS handshake failed: {e}"),
                        Err(_) => eprintln!("{addr} closed: TLS handshake took too long"),
                    }
                });
            }
        }
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
        match authorize(&shared, &method, &signed_path(&uri), &headers).await {
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
    /// A prefix for its spool files: 16 hex digits of its key.
    fn tag(&self) -> String {
        auth::hex(&self.key[..8])
    }
}

/// Check a request's signature and sender before anything else is read:
/// the signature over its method, path and body hash; the time; the nonce;
/// the key in this server's keyring, not revoked; its rate.
async fn authorize(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(Client, Signed), Response> {
    let now = crate::base::hlc::now_unix_ms();
    let signed = auth::check(
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
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
    if !shared.nonces.fresh(&signed, now) {
        return Err(reply(
            StatusCode::UNAUTHORIZED,
            "the request was seen before (a replay); send a new one",
        ));
    }
    let db = shared.db.clone();
    let key = signed.key;
    let pin = tokio::task::spawn_blocking(move || -> Result<_, Error> {
        let conn = crate::catalog::store::open_existing(&db)?;
        let ring = Keyring::load(&conn)?;
        Ok(ring.by_key(&key).cloned())
    })
    .await;
    let fingerprint = crate::catalog::keys::signing_fingerprint(&key);
    let pin = match pin {
        Ok(Ok(pin)) => pin,
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
    };
    let Some(pin) = pin else {
        return Err(reply(
            StatusCode::UNAUTHORIZED,
            format!(
                "this server does not know the key {fingerprint}: HQ enrols the instance with `fieldsync trust` (its `fieldsync key --json`), then it can sync"
            ),
        ));
    };
    if pin.revoked_at.is_some() {
        return Err(reply(
            StatusCode::FORBIDDEN,
            format!(
                "'{}' (key {fingerprint}) is revoked here; it cannot sync",
                pin.name
            ),
        ));
    }
    if shared.limiter.check_key(&key).is_err() {
        return Err(reply(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many requests from '{}': at most {} a minute; try again in a minute",
                pin.name, shared.per_minute
            ),
        ));
    }
    Ok((
        Client {
            key,
            name: pin.name,
        },
        signed,
    ))
}

/// A request whose signature and sender [`authorize`] checked: what every
/// signed route takes, before anything else of the request is read.
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
        let (client, signed) = authorize(shared, &parts.method, &path, &parts.headers).await?;
        Ok(Authorized { client, signed })
    }
}

/// An upload's state, as `GET` and `PUT /v1/upload/ID` answer it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct UploadState {
    /// Bytes the server holds.
    pub have: u64,
    /// True once every byte arrived and the whole matches its id.
    pub complete: bool,
}

fn upload_paths(shared: &Shared, client: &Client, id: &str) -> (PathBuf, PathBuf) {
    let base = format!("up-{}-{id}", client.tag());
    (
        shared.spool.file(&format!("{base}.part")),
        shared.spool.file(&format!("{base}.bundle")),
    )
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

fn empty_body(signed: &Signed) -> Result<(), Refusal> {
    if signed.body == *blake3::hash(b"").as_bytes() {
        Ok(())
    } else {
        Err(Refusal(
            StatusCode::BAD_REQUEST,
            "this request takes no body",
        ))
    }
}

async fn upload_status(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    Authorized { client, signed }: Authorized,
) -> Response {
    if let Err(r) = check_id(&id).and_then(|()| empty_body(&signed)) {
        return r.into_response();
    }
    let (part, done) = upload_paths(&shared, &client, &id);
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
    with_note(axum::Json(state).into_response(), client.name)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

/// Partial uploads one instance may have at once; older ones are dropped.
const MAX_PARTS_PER_CLIENT: usize = 2;

async fn upload(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    Authorized { client, signed }: Authorized,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = check_id(&id) {
        return r.into_response();
    }
    if id.len() != 64 {
        return reply(
            StatusCode::BAD_REQUEST,
            "an upload's id is the BLAKE3 of the bundle",
        );
    }
    let (Some(offset), Some(total)) = (
        header_u64(&headers, H_OFFSET),
        header_u64(&headers, H_TOTAL),
    ) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "an upload says its offset and total size (fieldsync-offset, fieldsync-total)",
        );
    };
    if total > shared.max_body {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the bundle is {total} bytes; this server takes at most {} (serve --max-body)",
                shared.max_body
            ),
        );
    }
    let (part, done) = upload_paths(&shared, &client, &id);
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
        // A new upload: drop this instance's older partial ones.
        let parts = shared.spool.starting_with(&format!("up-{}-", client.tag()));
        let parts: Vec<_> = parts
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "part"))
            .collect();
        for old in parts
            .iter()
            .take(parts.len().saturating_sub(MAX_PARTS_PER_CLIENT - 1))
        {
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
                if offset + written > total {
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

/// What a pushed bundle is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A bundle with no changes: what the server now holds.
    Acknowledge,
    /// Every change the client lacks.
    Changes,
}

async fn push(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    UrlPath(id): UrlPath<String>,
    auth: Authorized,
) -> Response {
    exchange(shared, remote, id, auth, Answer::Acknowledge).await
}

async fn sync(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    UrlPath(id): UrlPath<String>,
    auth: Authorized,
) -> Response {
    exchange(shared, remote, id, auth, Answer::Changes).await
}

/// Import a complete upload, export the answer to the spool, and stream it.
async fn exchange(
    shared: Arc<Shared>,
    remote: Remote,
    id: String,
    Authorized { client, signed }: Authorized,
    answer: Answer,
) -> Response {
    if let Err(r) = check_id(&id).and_then(|()| empty_body(&signed)) {
        return r.into_response();
    }
    let (_, done) = upload_paths(&shared, &client, &id);
    if tokio::fs::metadata(&done).await.is_err() {
        return reply(
            StatusCode::NOT_FOUND,
            format!("{}: no complete upload {id}; upload it first", client.name),
        );
    }
    let _busy = Busy::new(&remote.activity);
    let Ok(_job) = shared.jobs.acquire().await else {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
    };
    shared.spool.sweep();
    let mut bid = [0u8; 16];
    let _ = getrandom::fill(&mut bid);
    let bid = auth::hex(&bid);
    let out = shared
        .spool
        .file(&format!("out-{}-{bid}.bundle", client.tag()));
    let db = shared.db.clone();
    let key = client.key;
    let job_out = out.clone();
    let ran =
        tokio::task::spawn_blocking(move || run_exchange(&db, &done, key, answer, &job_out)).await;
    let (imported, exported) = match ran {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let _ = tokio::fs::remove_file(&out).await;
            let status = if e.refusal_reason().is_some() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else if matches!(e, Error::Busy { .. }) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            return reply(status, format!("{}: {e}", client.name));
        }
        Err(_) => return reply(StatusCode::INTERNAL_SERVER_ERROR, "the import stopped"),
    };
    let note = format!(
        "{}: applied {} of {}, answered {} changes, {} bytes",
        client.name, imported.applied, imported.changes, exported.0, exported.1
    );
    match stream_file(&out, 0).await {
        Ok((body, len)) => {
            let mut r = Response::new(body);
            let h = r.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.fieldsync.bundle"),
            );
            if let Ok(v) = HeaderValue::from_str(&bid) {
                h.insert(H_BUNDLE, v);
            }
            if let Ok(v) = serde_json::to_string(&imported)
                .map_err(|_| ())
                .and_then(|j| HeaderValue::from_str(&j).map_err(|_| ()))
            {
                h.insert(H_IMPORT, v);
            }
            with_note(r, note)
        }
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the answer: {e}"),
        ),
    }
}

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

async fn stream_file(path: &Path, from: u64) -> io::Result<(Body, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    file.seek(io::SeekFrom::Start(from)).await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
    Ok((Body::from_stream(stream), len.saturating_sub(from)))
}

async fn download(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    Authorized { client, signed }: Authorized,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_id(&id).and_then(|()| empty_body(&signed)) {
        return r.into_response();
    }
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
        Ok((body, rest)) => {
            let mut r = Response::new(body);
            *r.status_mut() = if from > 0 {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            };
            let h = r.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(rest));
            if from > 0 {
                if let Ok(v) =
                    HeaderValue::from_str(&format!("bytes {from}-{}/{len}", len.saturating_sub(1)))
                {
                    h.insert(header::CONTENT_RANGE, v);
                }
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
/// and K is within a file of `len` bytes (the only ranges a client asks).
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
