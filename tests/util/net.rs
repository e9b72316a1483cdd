//! Network sync as an operator runs it: a real `fieldsync serve` process on
//! loopback ([`Served`], killed when dropped, started with a bound on the
//! requests it answers), and a TCP proxy between client and server that
//! can cut a connection after a number of bytes or slow it down
//! ([`Proxy`]), to stand for a bad link.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::Res;

/// The most requests a test server answers before it stops by itself.
const REQUEST_BOUND: &str = "100000";

/// A `fieldsync serve` process, killed when dropped.
pub struct Served {
    /// `http://127.0.0.1:PORT` (or https).
    pub url: String,
    /// Its address.
    pub addr: SocketAddr,
    /// The line `serve --json` printed when it started.
    pub startup: serde_json::Value,
    child: Child,
    log: PathBuf,
}

impl Served {
    /// Serve `db` on a free loopback port, with `extra` arguments.
    pub fn start(db: &Path, extra: &[&str]) -> Res<Served> {
        Served::start_on(db, "127.0.0.1:0", extra)
    }

    /// Serve `db` on `listen` (to start again on the port of one killed).
    pub fn start_on(db: &Path, listen: &str, extra: &[&str]) -> Res<Served> {
        let log = db.with_extension(format!("serve-{}.log", std::process::id()));
        let log = unique(log);
        let mut child = Command::new(env!("CARGO_BIN_EXE_fieldsync"))
            .args(["serve", "--json", "--db"])
            .arg(db)
            .args(["--listen", listen, "--stop-after", REQUEST_BOUND])
            .args(extra)
            .env_remove("FIELDSYNC_DB")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if !l.trim().is_empty() => l,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "fieldsync serve did not start:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
                .into());
            }
        };
        let v: serde_json::Value = serde_json::from_str(line.trim())?;
        let url = v["url"].as_str().ok_or("no url")?.to_owned();
        let addr: SocketAddr = v["address"].as_str().ok_or("no address")?.parse()?;
        Ok(Served {
            url,
            addr,
            startup: v,
            child,
            log,
        })
    }

    /// What it logged on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (at most a minute) until its log holds `needle`.
    pub fn wait_for_log(&self, needle: &str) -> Res<String> {
        let began = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) {
                return Ok(log);
            }
            if began.elapsed() > Duration::from_secs(60) {
                return Err(format!("the server never logged {needle:?}:\n{log}").into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kill it (SIGKILL: no clean shutdown).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unique(path: PathBuf) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    path.with_extension(format!("{n}.log"))
}

/// A TCP proxy on loopback in front of a server.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    target: Mutex<Option<SocketAddr>>,
    /// Cut the next connection once this many bytes went server → client.
    cut_down: Mutex<Option<u64>>,
    /// Cut the next connection once this many bytes went client → server.
    cut_up: Mutex<Option<u64>>,
    /// Bytes a second in each direction (0: as fast as it goes).
    rate: AtomicU64,
    down: AtomicU64,
    up: AtomicU64,
    cuts: AtomicU64,
    stop: AtomicBool,
}

impl Proxy {
    /// A proxy to `target`.
    pub fn start(target: SocketAddr) -> Res<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ProxyState::default());
        *state.target.lock().map_err(|_| "poisoned")? = Some(target);
        let s = state.clone();
        thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let s = s.clone();
                        thread::spawn(move || {
                            let _ = relay(client, &s);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Proxy { addr, state })
    }

    /// `http://` and its address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cut the connection carrying the `bytes`-th byte from the server.
    pub fn cut_down_after(&self, bytes: u64) {
        if let Ok(mut c) = self.state.cut_down.lock() {
            *c = Some(bytes);
        }
    }

    /// Cut the connection carrying the `bytes`-th byte to the server.
    pub fn cut_up_after(&self, bytes: u64) {
        if let Ok(mut c) = self.state.cut_up.lock() {
            *c = Some(bytes);
        }
    }

    /// Slow each direction of each connection to `bytes_per_second` (0: no
    /// limit).
    pub fn throttle(&self, bytes_per_second: u64) {
        self.state.rate.store(bytes_per_second, Ordering::Relaxed);
    }

    /// Bytes carried from the servers so far.
    pub fn down(&self) -> u64 {
        self.state.down.load(Ordering::Relaxed)
    }

    /// Bytes carried to the servers so far.
    pub fn up(&self) -> u64 {
        self.state.up.load(Ordering::Relaxed)
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.state.cuts.load(Ordering::Relaxed)
    }

    /// Wait (at most a minute) until `what()` reaches `at_least`.
    pub fn wait_until(&self, what: impl Fn(&Proxy) -> u64, at_least: u64) -> Res {
        let began = Instant::now();
        while what(self) < at_least {
            if began.elapsed() > Duration::from_secs(60) {
                return Err(format!("the proxy never carried {at_least} bytes").into());
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
    }
}

fn relay(client: TcpStream, s: &Arc<ProxyState>) -> Res {
    let target = s
        .target
        .lock()
        .map_err(|_| "poisoned")?
        .ok_or("no target")?;
    let server = TcpStream::connect(target)?;
    let (c2, s2) = (client.try_clone()?, server.try_clone()?);
    let st = s.clone();
    let up = thread::spawn(move || pump(c2, s2, &st, true));
    pump(server, client, s, false);
    let _ = up.join();
    Ok(())
}

/// Copy `from` to `to` until either ends, honouring the cut and the rate.
fn pump(mut from: TcpStream, mut to: TcpStream, s: &ProxyState, upward: bool) {
    let mut buf = vec![0u8; 16 * 1024];
    let (count, cut) = if upward {
        (&s.up, &s.cut_up)
    } else {
        (&s.down, &s.cut_down)
    };
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut send = n;
        let mut cutting = false;
        if let Ok(mut c) = cut.lock() {
            if let Some(left) = *c {
                if (n as u64) >= left {
                    send = left as usize;
                    cutting = true;
                    *c = None;
                } else {
                    *c = Some(left - n as u64);
                }
            }
        }
        let rate = s.rate.load(Ordering::Relaxed);
        if rate > 0 {
            thread::sleep(Duration::from_secs_f64(send as f64 / rate as f64));
        }
        if to.write_all(&buf[..send]).is_err() {
            break;
        }
        count.fetch_add(send as u64, Ordering::Relaxed);
        if cutting {
            s.cuts.fetch_add(1, Ordering::Relaxed);
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// One raw HTTP/1.1 exchange on a new connection: the status and body of
/// the answer (the request says `Connection: close`, so the server ends
/// the connection after it).
pub fn raw_http(addr: SocketAddr, request: &[u8]) -> Res<(u16, String)> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(60)))?;
    c.write_all(request)?;
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
