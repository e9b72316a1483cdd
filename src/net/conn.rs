//! The connections of `fieldsync serve`: accepting them within a bound,
//! TLS, and closing those that do not move (spec/network.md, "Concurrency
//! and bounds"). A request's head must arrive within the idle time
//! (hyper's header timeout, so a client dribbling its headers holds no slot
//! for long); after it, a connection on which no byte moves for the idle
//! time is closed, unless a request on it is being worked on.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::either::Either;
use tower::ServiceExt;

use crate::error::{Error, NetError};

/// A connection's state the handlers see: whether a request on it is
/// being worked on (then its silence is not idleness).
#[derive(Debug, Default)]
pub(super) struct Activity {
    busy: AtomicUsize,
}

/// Marks a connection busy while alive.
pub(super) struct Busy(Arc<Activity>);

impl Busy {
    pub(super) fn new(a: &Arc<Activity>) -> Busy {
        a.busy.fetch_add(1, Ordering::Relaxed);
        Busy(a.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The other end of a connection, as the handlers see it
/// (`ConnectInfo<Remote>`).
#[derive(Debug, Clone)]
pub(super) struct Remote {
    pub(super) addr: SocketAddr,
    pub(super) activity: Arc<Activity>,
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

/// The TLS acceptor for a PEM certificate chain and its PEM key.
pub(super) fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, Error> {
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

/// How connections are accepted and kept.
pub(super) struct Limits {
    /// Connections open at once; more are closed at once.
    pub(super) max_connections: usize,
    /// The idle time (and the deadline for a request's head and a TLS
    /// handshake).
    pub(super) idle: Duration,
}

/// Accept connections and serve `app` on each until `stop` completes, then
/// give the open ones up to 10 s to finish.
pub(super) async fn serve_connections(
    tcp: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let accept = async {
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
                idle: limits.idle,
                timer: Box::pin(tokio::time::sleep(limits.idle)),
                armed: false,
                _slot: slot,
            };
            let remote = Remote { addr, activity };
            tokio::spawn(one_connection(
                io,
                tls.clone(),
                app.clone(),
                remote,
                limits.idle,
            ));
        }
    };
    tokio::select! {
        () = accept => {}
        () = stop => {}
    }
    // Let the requests under way finish (their slots come back).
    let drained = slots.acquire_many(max as u32);
    let _ = tokio::time::timeout(Duration::from_secs(10), drained).await;
}

/// One connection: its TLS handshake (within `idle`), then HTTP/1.1 with
/// a deadline for each request's head.
async fn one_connection(
    io: IdleIo,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    remote: Remote,
    idle: Duration,
) {
    let addr = remote.addr;
    let io: Either<IdleIo, tokio_rustls::server::TlsStream<IdleIo>> = match tls {
        None => Either::Left(io),
        Some(acceptor) => match tokio::time::timeout(idle, acceptor.accept(io)).await {
            Ok(Ok(s)) => Either::Right(s),
            Ok(Err(e)) => {
                eprintln!("{addr} closed: TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                eprintln!("{addr} closed: TLS handshake took too long");
                return;
            }
        },
    };
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote.clone()));
        app.clone().oneshot(req.map(Body::new))
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(e) = served {
        if !e.is_incomplete_message() {
            eprintln!("{addr} closed: {e}");
        }
    }
}
