//! Network sync (issue 14, spec/network.md) against the file route, all
//! through the `fieldsync` command on loopback:
//!
//! 1. A delta of `rows` changes sent by `fieldsync push` (and by `sync`) to
//!    a running `fieldsync serve`, against `export --to hq` at the field +
//!    `import` at HQ of the same delta by file (encrypted both ways, as
//!    export encrypts by default); and the other way, `fieldsync pull` of
//!    HQ's delta against `export --to field-1` at HQ + `import` at the
//!    field. Fresh copies of the same databases for every run; the server
//!    is started (outside the timing) on HQ's copy before each network run,
//!    as HQ's server is always up.
//! 2. The load run: `clients` field instances, each its own database set up
//!    from HQ's full export and enrolled, each writing `per_sync` new rows
//!    and then running `fieldsync sync` against the server, `syncs` times,
//!    all at once from threads. Throughput, the latency of one sync, the
//!    server's peak RSS, failures retried; then a final round of syncs and
//!    the check that every instance holds exactly HQ's rows, none twice,
//!    none lost. Its baseline is one client alone doing the same.
//!
//! The deployment is set up as the README says: HQ `init`, `track`,
//! `export --full --for field-1,… --no-encrypt`, each field
//! `init --from … --expect-key`, HQ `trust --stdin` of each field's
//! `key --json`. Every server started here listens on 127.0.0.1 only, with
//! a `--stop-after` bound, and is killed when its guard drops.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::Value as Json;

use crate::fixture::{Figure, INSERT, Res, insert_row, median, plain};

/// The target on time: a network sync costs at most 1.3x the file route.
const TARGET: Option<f64> = Some(1.3);

/// The server's RSS bound with 50 clients (issue 14).
const RSS_TARGET: Option<f64> = Some(128.0);

/// Rows HQ holds before anything is measured (the full export every field
/// is set up from).
const INITIAL: usize = 1_000;

/// How long one fieldsync command may run before it is killed.
const DEADLINE: Duration = Duration::from_secs(600);

/// How often a failed `fieldsync sync` is run again in the load run before
/// the run is given up.
const MAX_ATTEMPTS: usize = 20;

/// The fieldsync binary and a scratch directory.
struct Cli {
    bin: PathBuf,
}

/// One finished fieldsync command.
struct Ran {
    secs: f64,
    ok: bool,
    status: String,
    out: String,
    err: String,
}

impl Ran {
    fn json(&self) -> Json {
        serde_json::from_str(self.out.trim()).unwrap_or(Json::Null)
    }

    /// The command succeeded, or an error naming it and its stderr.
    fn checked(self, what: &str) -> Res<Ran> {
        if self.ok {
            Ok(self)
        } else {
            Err(format!(
                "fieldsync {what} failed ({}): {}",
                self.status,
                self.err.trim()
            )
            .into())
        }
    }
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

impl Cli {
    /// Run fieldsync with `args` (and `input` on stdin), killed past
    /// [`DEADLINE`].
    fn run(&self, args: &[&OsStr], input: Option<&[u8]>) -> Res<Ran> {
        let start = Instant::now();
        let mut child = Command::new(&self.bin)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(bytes)?;
        }
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        let status = wait_until(&mut child, DEADLINE);
        let secs = start.elapsed().as_secs_f64();
        let (out, err) = (
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        );
        Ok(Ran {
            secs,
            ok: status.is_some_and(|s| s.success()),
            status: status.map_or_else(|| format!("killed after {DEADLINE:?}"), |s| s.to_string()),
            out,
            err,
        })
    }

    /// Run it and insist it succeeds.
    fn ok(&self, args: &[&OsStr]) -> Res<Ran> {
        let what = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        self.run(args, None)?.checked(&what)
    }
}

/// Read all of a child's pipe on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

/// Wait for `child` at most `limit`; past it, kill it and return None.
fn wait_until(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < end => thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// A running `fieldsync serve`, killed when dropped. Its log (one line a
/// request) goes to a file.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    /// Serve `db` on a free port of 127.0.0.1, stopping by itself after
    /// `stop_after` requests; `per_minute` raises the rate limit.
    fn start(cli: &Cli, db: &Path, stop_after: u64, per_minute: Option<u32>) -> Res<Server> {
        let log = db.with_extension("serve.log");
        let mut args: Vec<OsString> = vec![
            "--json".into(),
            "serve".into(),
            "--db".into(),
            db.into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--stop-after".into(),
            stop_after.to_string().into(),
        ];
        if let Some(n) = per_minute {
            args.extend(["--max-requests-per-minute".into(), n.to_string().into()]);
        }
        let mut child = Command::new(&cli.bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log)?)
            .spawn()?;
        let stdout = child.stdout.take();
        // The guard owns the child from here: any error below kills it.
        let mut server = Server {
            child,
            url: String::new(),
            log,
        };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let Some(out) = stdout else { return };
            let mut lines = BufReader::new(out).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep reading so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| {
            format!(
                "fieldsync serve said nothing in 30 s: {}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            )
        })?;
        let said: Json = serde_json::from_str(&line)?;
        let url = said
            .get("url")
            .and_then(Json::as_str)
            .ok_or_else(|| format!("fieldsync serve printed no url: {line}"))?;
        if !url.starts_with("http://127.0.0.1:") {
            return Err(format!("fieldsync serve listens at {url}, not on 127.0.0.1").into());
        }
        server.url = url.to_owned();
        Ok(server)
    }

    /// The server's peak resident set so far (VmHWM), in MiB.
    fn peak_mib(&self) -> Option<f64> {
        status_mib(self.child.id(), "VmHWM:")
    }

    /// How many requests the log shows answered with each status.
    fn statuses(&self) -> BTreeMap<u16, usize> {
        let mut counts = BTreeMap::new();
        for line in std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
        {
            // "TIME ADDR METHOD PATH STATUS N ms …"
            if let Some(code) = line.split_whitespace().nth(4).and_then(|s| s.parse().ok()) {
                *counts.entry(code).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Whether it stopped by itself (its `--stop-after` bound reached, or
    /// a crash).
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A size line (`VmRSS:`, `VmHWM:`) of process `pid`'s status, in MiB.
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU seconds (user + system) process `pid` has used so far.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis, from the 3rd (state):
    // utime is the 14th, stime the 15th, in clock ticks.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// CPU seconds (user + system) of this process's children that have ended.
fn children_cpu_secs() -> f64 {
    // SAFETY: `usage` is plain data the kernel fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as f64,
        _ => 100.0,
    }
}

/// Samples of process `pid`'s resident set (seconds from the start, MiB)
/// every 100 ms until `stop` is set.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> JoinHandle<Vec<(f64, f64)>> {
    thread::spawn(move || {
        let start = Instant::now();
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Some(mib) = status_mib(pid, "VmRSS:") {
                samples.push((start.elapsed().as_secs_f64(), mib));
            }
            thread::sleep(Duration::from_millis(100));
        }
        samples
    })
}

/// Copy a database file (made by a finished process, no WAL left) to a
/// fresh path.
fn copy_db(from: &Path, to: &Path) -> Res<()> {
    std::fs::copy(from, to)?;
    Ok(())
}

/// Insert rows `from..to` (keys from [`crate::fixture::id`]) into `db`'s
/// tracked `person` table, in one transaction, as the app would.
fn write_rows(db: &Path, from: usize, to: usize) -> Res<()> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    {
        let mut st = conn.prepare(INSERT)?;
        for i in from..to {
            insert_row(&mut st, i)?;
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

/// Set `db`'s journal mode to WAL (what `serve` sets at start).
fn wal(db: &Path) -> Res<()> {
    let conn = Connection::open(db)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("{} is in {mode} mode, not WAL", db.display()).into());
    }
    Ok(())
}

/// HQ with `initial` rows and field instances `names` set up from its full
/// export and enrolled at HQ, as the README does it. Returns HQ's path and
/// each field's.
fn deployment(
    cli: &Cli,
    dir: &Path,
    initial: usize,
    names: &[String],
) -> Res<(PathBuf, Vec<PathBuf>)> {
    std::fs::create_dir_all(dir)?;
    let hq = plain(&dir.join("hq.db"), initial)?;
    cli.ok(&[
        os("init"),
        os("--db"),
        hq.as_os_str(),
        os("--name"),
        os("hq"),
    ])?;
    cli.ok(&[os("track"), os("--db"), hq.as_os_str(), os("--all")])?;
    let full = dir.join("hq-full.bundle");
    let list = names.join(",");
    cli.ok(&[
        os("export"),
        os("--db"),
        hq.as_os_str(),
        os("--full"),
        os("--for"),
        os(&list),
        os("--no-encrypt"),
        os("-o"),
        full.as_os_str(),
    ])?;
    // HQ's signing-key fingerprint, read from `fieldsync key` as the README
    // does (its JSON leaves it out).
    let key = cli.ok(&[os("key"), os("--db"), hq.as_os_str()])?;
    let hq_key = key
        .out
        .lines()
        .find_map(|l| l.strip_prefix("signing key"))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or("`fieldsync key` shows no signing key")?
        .to_owned();
    let mut fields = Vec::new();
    for name in names {
        let db = dir.join(format!("{name}.db"));
        cli.ok(&[
            os("init"),
            os("--db"),
            db.as_os_str(),
            os("--name"),
            os(name),
            os("--from"),
            full.as_os_str(),
            os("--expect-key"),
            os(&hq_key),
        ])?;
        let keys = cli.ok(&[os("key"), os("--db"), db.as_os_str(), os("--json")])?;
        cli.run(
            &[os("trust"), os("--db"), hq.as_os_str(), os("--stdin")],
            Some(keys.out.as_bytes()),
        )?
        .checked(&format!("trust --db hq.db --stdin (of {name})"))?;
        fields.push(db);
    }
    Ok((hq, fields))
}

/// A number in a JSON report, at a path of keys; NaN if absent.
fn number(v: &Json, path: &[&str]) -> f64 {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Json::as_f64)
        .unwrap_or(f64::NAN)
}

fn figure(
    label: String,
    baseline: f64,
    measured: f64,
    unit: &'static str,
    target: Option<f64>,
) -> Figure {
    let f = Figure {
        label,
        baseline,
        measured,
        unit,
        target,
    };
    f.print();
    f
}

/// The sizes of a run of this part.
pub struct Sizes {
    /// Changes in the delta of part 1.
    pub rows: usize,
    /// Field instances syncing at once in the load run.
    pub clients: usize,
    /// Syncs each of them makes.
    pub syncs: usize,
    /// Changes each writes before each sync.
    pub per_sync: usize,
    /// `--max-requests-per-minute` for the load run's server (None: its
    /// default).
    pub per_minute: Option<u32>,
}

pub fn run(dir: &Path, sizes: &Sizes, reps: usize) -> Res<Vec<Figure>> {
    let cli = Cli {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_fieldsync")),
    };
    let mut figures = delta(&cli, &dir.join("net-delta"), sizes.rows, reps)?;
    figures.extend(load(&cli, &dir.join("net-load"), sizes)?);
    Ok(figures)
}

/// Part 1: a delta by network against the same delta by file, both ways.
fn delta(cli: &Cli, dir: &Path, rows: usize, reps: usize) -> Res<Vec<Figure>> {
    println!(
        "\nnetwork: a delta of {rows} changes over loopback (push / sync / pull against a running `fieldsync serve`) vs export + import of it by file"
    );
    let names = vec!["field-1".to_owned()];
    let (hq, fields) = deployment(cli, &dir.join("setup"), INITIAL, &names)?;
    let field = &fields[0];
    // A served database is in WAL mode (serve sets it); the file route's
    // HQ is given the same, so the two differ only by the route.
    wal(&hq)?;
    // The templates: the field with `rows` new rows for HQ; HQ with `rows`
    // new rows for the field. Keys past the initial rows, distinct.
    let field_delta = dir.join("field-delta.db");
    copy_db(field, &field_delta)?;
    write_rows(&field_delta, INITIAL, INITIAL + rows)?;
    let hq_delta = dir.join("hq-delta.db");
    {
        let conn = Connection::open(&hq)?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    }
    copy_db(&hq, &hq_delta)?;
    write_rows(&hq_delta, INITIAL + rows, INITIAL + 2 * rows)?;
    {
        let conn = Connection::open(&hq_delta)?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    }
    let n = rows as f64;
    let runs = dir.join("runs");
    let (mut file_up, mut push, mut sync) = (Vec::new(), Vec::new(), Vec::new());
    let (mut file_down, mut pull) = (Vec::new(), Vec::new());
    let mut sizes = BTreeMap::new();
    for rep in 0..reps {
        // Field -> HQ, by file: export at the field, import at HQ.
        let (h, f) = fresh(&runs, &hq, &field_delta)?;
        let bundle = runs.join("up.bundle");
        let t = Instant::now();
        cli.ok(&[
            os("--json"),
            os("export"),
            os("--db"),
            f.as_os_str(),
            os("--to"),
            os("hq"),
            os("-o"),
            bundle.as_os_str(),
        ])?;
        let i = cli.ok(&[
            os("--json"),
            os("import"),
            os("--db"),
            h.as_os_str(),
            bundle.as_os_str(),
        ])?;
        let secs = t.elapsed().as_secs_f64();
        expect("the file route up", number(&i.json(), &["applied"]), n)?;
        sizes.insert("file up", std::fs::metadata(&bundle)?.len() as f64);
        file_up.push(secs);
        // Field -> HQ by push, then by sync.
        for (verb, times) in [("push", &mut push), ("sync", &mut sync)] {
            let (h, f) = fresh(&runs, &hq, &field_delta)?;
            let server = Server::start(cli, &h, 100, None)?;
            let r = cli.ok(&[
                os("--json"),
                os(verb),
                os("--db"),
                f.as_os_str(),
                os(&server.url),
            ])?;
            let report = r.json();
            expect(verb, number(&report, &["server_import", "applied"]), n)?;
            sizes.insert(
                if verb == "push" { "push" } else { "sync" },
                number(&report, &["sent_bytes"]),
            );
            let retries = number(&report, &["retries"]);
            if retries > 0.0 {
                println!("  ({verb}, run {}: {retries} retries)", rep + 1);
            }
            times.push(r.secs);
            drop(server);
        }
        // HQ -> field, by file: export at HQ, import at the field.
        let (h, f) = fresh(&runs, &hq_delta, field)?;
        let bundle = runs.join("down.bundle");
        let t = Instant::now();
        cli.ok(&[
            os("--json"),
            os("export"),
            os("--db"),
            h.as_os_str(),
            os("--to"),
            os("field-1"),
            os("-o"),
            bundle.as_os_str(),
        ])?;
        let i = cli.ok(&[
            os("--json"),
            os("import"),
            os("--db"),
            f.as_os_str(),
            bundle.as_os_str(),
        ])?;
        let secs = t.elapsed().as_secs_f64();
        expect("the file route down", number(&i.json(), &["applied"]), n)?;
        sizes.insert("file down", std::fs::metadata(&bundle)?.len() as f64);
        file_down.push(secs);
        // HQ -> field by pull.
        let (h, f) = fresh(&runs, &hq_delta, field)?;
        let server = Server::start(cli, &h, 100, None)?;
        let r = cli.ok(&[
            os("--json"),
            os("pull"),
            os("--db"),
            f.as_os_str(),
            os(&server.url),
        ])?;
        let report = r.json();
        expect("pull", number(&report, &["import", "applied"]), n)?;
        sizes.insert("pull", number(&report, &["received_bytes"]));
        pull.push(r.secs);
        drop(server);
        println!(
            "  run {}: up: file {:.2} s, push {:.2} s, sync {:.2} s; down: file {:.2} s, pull {:.2} s",
            rep + 1,
            file_up[rep],
            push[rep],
            sync[rep],
            file_down[rep],
            pull[rep]
        );
    }
    let _ = std::fs::remove_dir_all(&runs);
    let bytes = |what: &str| sizes.get(what).copied().unwrap_or(f64::NAN);
    println!(
        "  bundle bytes: file up {:.0}, push {:.0}, sync {:.0}; file down {:.0}, pull {:.0}",
        bytes("file up"),
        bytes("push"),
        bytes("sync"),
        bytes("file down"),
        bytes("pull")
    );
    let file_up = median(file_up);
    let file_down = median(file_down);
    Ok(vec![
        figure(
            format!("net: push of {rows} changes (vs export + import)"),
            file_up,
            median(push),
            "s",
            TARGET,
        ),
        figure(
            format!("net: sync of {rows} changes (vs export + import)"),
            file_up,
            median(sync),
            "s",
            TARGET,
        ),
        figure(
            format!("net: pull of {rows} changes (vs export + import)"),
            file_down,
            median(pull),
            "s",
            TARGET,
        ),
    ])
}

/// Fresh copies of an HQ and a field template in `runs` (emptied first,
/// spool and transfer directories included).
fn fresh(runs: &Path, hq: &Path, field: &Path) -> Res<(PathBuf, PathBuf)> {
    let _ = std::fs::remove_dir_all(runs);
    std::fs::create_dir_all(runs)?;
    let (h, f) = (runs.join("hq.db"), runs.join("field-1.db"));
    copy_db(hq, &h)?;
    copy_db(field, &f)?;
    Ok((h, f))
}

fn expect(what: &str, got: f64, want: f64) -> Res<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: {got} changes applied, not {want}").into())
    }
}

/// What one load run measured.
struct Load {
    clients: usize,
    syncs: usize,
    wall: f64,
    latencies: Vec<f64>,
    /// `fieldsync sync` runs that failed and were run again, by reason.
    failed: BTreeMap<String, usize>,
    /// Retries made inside the successful runs (the client's own).
    inner_retries: f64,
    peak_mib: f64,
    statuses: BTreeMap<u16, usize>,
    /// Instances whose rows differ from HQ's after the final round.
    differing: usize,
    duplicates: i64,
    lost: i64,
    hq_rows: i64,
    /// Databases (HQ and the instances) `fieldsync check` finds fault with.
    check_failed: usize,
    /// Changes the clients applied from the server's answers (the others'
    /// rows), in the timed syncs.
    received: f64,
    /// The server's resident set during the timed syncs: (seconds, MiB).
    rss: Vec<(f64, f64)>,
    /// CPU seconds the server used during the timed syncs.
    server_cpu: f64,
    /// CPU seconds the client processes (`fieldsync sync`) used then.
    clients_cpu: f64,
}

impl Load {
    fn percentile(&self, p: usize) -> f64 {
        let mut v = self.latencies.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            len => v[(len * p).div_ceil(100).max(1) - 1],
        }
    }

    /// The server's resident set at each quarter of the timed syncs (the
    /// last sample before it), in MiB.
    fn rss_quarters(&self) -> String {
        let Some(&(end, _)) = self.rss.last() else {
            return "no samples".to_owned();
        };
        (1..=4)
            .map(|q| {
                let at = end * q as f64 / 4.0;
                let mib = (self.rss.iter())
                    .take_while(|(t, _)| *t <= at)
                    .last()
                    .map_or(f64::NAN, |(_, m)| *m);
                format!("{:.0}% {mib:.0}", q * 25)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn failures(&self) -> usize {
        self.failed.values().sum()
    }

    fn brief(&self) -> String {
        format!(
            "{} clients x {} syncs in {:.1} s: {:.2} syncs/s, p50 {:.0} ms, p99 {:.0} ms, {:.0} changes received by the clients, CPU: server {:.1} s, `fieldsync sync` processes {:.1} s (of {:.1} s on {} cores), server peak RSS {:.1} MiB (RSS at each quarter of the run, MiB: {}), {} sync runs failed and were run again {:?}, {:.0} retries inside syncs, server answers {:?}; HQ {} rows, {} instances differ, {} duplicates, {} lost, `fieldsync check` failed on {} database(s)",
            self.clients,
            self.syncs,
            self.wall,
            (self.clients * self.syncs) as f64 / self.wall,
            self.percentile(50) * 1000.0,
            self.percentile(99) * 1000.0,
            self.received,
            self.server_cpu,
            self.clients_cpu,
            self.wall * cores() as f64,
            cores(),
            self.peak_mib,
            self.rss_quarters(),
            self.failures(),
            self.failed,
            self.inner_retries,
            self.statuses,
            self.hq_rows,
            self.differing,
            self.duplicates,
            self.lost,
            self.check_failed,
        )
    }
}

fn cores() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Part 2: one client alone, then `clients` at once.
fn load(cli: &Cli, dir: &Path, sizes: &Sizes) -> Res<Vec<Figure>> {
    let (clients, syncs, per_sync) = (sizes.clients, sizes.syncs, sizes.per_sync);
    println!(
        "\nnetwork load: {clients} field instances x {syncs} syncs, each writing {per_sync} rows before each `fieldsync sync` (vs one instance alone){}",
        match sizes.per_minute {
            Some(n) => format!("; server run with --max-requests-per-minute {n}"),
            None => "; server at its default rate limit".to_owned(),
        }
    );
    let alone = load_run(
        cli,
        &dir.join("alone"),
        1,
        syncs,
        per_sync,
        sizes.per_minute,
    )?;
    println!("  alone: {}", alone.brief());
    let many = load_run(
        cli,
        &dir.join("many"),
        clients,
        syncs,
        per_sync,
        sizes.per_minute,
    )?;
    println!("  {clients} at once: {}", many.brief());
    let per = |l: &Load| (l.clients * l.syncs) as f64 / l.wall;
    let changes = |l: &Load| (l.clients * l.syncs * per_sync) as f64 / l.wall;
    let c = clients;
    Ok(vec![
        figure(
            format!("net load {c} clients: syncs/s (vs 1 client alone)"),
            per(&alone),
            per(&many),
            "/s",
            None,
        ),
        figure(
            format!("net load {c} clients: changes/s (vs 1 client alone)"),
            changes(&alone),
            changes(&many),
            "/s",
            None,
        ),
        figure(
            format!("net load {c} clients: changes pulled by clients/s (vs alone)"),
            alone.received / alone.wall,
            many.received / many.wall,
            "/s",
            None,
        ),
        figure(
            format!("net load {c} clients: p50 latency of a sync (vs alone)"),
            alone.percentile(50) * 1000.0,
            many.percentile(50) * 1000.0,
            "ms",
            None,
        ),
        figure(
            format!("net load {c} clients: p99 latency of a sync (vs alone)"),
            alone.percentile(99) * 1000.0,
            many.percentile(99) * 1000.0,
            "ms",
            None,
        ),
        figure(
            format!("net load {c} clients: server peak RSS (vs alone), MiB"),
            alone.peak_mib,
            many.peak_mib,
            "MiB",
            RSS_TARGET,
        ),
        figure(
            format!("net load {c} clients: sync runs failed, run again (vs alone)"),
            alone.failures() as f64,
            many.failures() as f64,
            "n",
            None,
        ),
        figure(
            format!("net load {c} clients: retries inside the syncs (vs alone)"),
            alone.inner_retries,
            many.inner_retries,
            "n",
            None,
        ),
        figure(
            format!("net load {c} clients: instances not identical to HQ (vs alone)"),
            alone.differing as f64,
            many.differing as f64,
            "n",
            Some(0.0),
        ),
        figure(
            format!("net load {c} clients: duplicate rows at HQ (vs alone)"),
            alone.duplicates as f64,
            many.duplicates as f64,
            "n",
            Some(0.0),
        ),
        figure(
            format!("net load {c} clients: lost rows at HQ (vs alone)"),
            alone.lost as f64,
            many.lost as f64,
            "n",
            Some(0.0),
        ),
        figure(
            format!("net load {c} clients: databases failing `fieldsync check` (vs alone)"),
            alone.check_failed as f64,
            many.check_failed as f64,
            "n",
            Some(0.0),
        ),
    ])
}

/// One client thread's outcome.
struct ClientRun {
    /// Changes applied from the server's answers.
    received: f64,
    latencies: Vec<f64>,
    failed: BTreeMap<String, usize>,
    inner_retries: f64,
}

/// `clients` instances syncing `syncs` times each with one server, then a
/// final round, then the check.
fn load_run(
    cli: &Cli,
    dir: &Path,
    clients: usize,
    syncs: usize,
    per_sync: usize,
    per_minute: Option<u32>,
) -> Res<Load> {
    let names: Vec<String> = (1..=clients).map(|k| format!("field-{k}")).collect();
    let set_up = Instant::now();
    let (hq, fields) = deployment(cli, dir, INITIAL, &names)?;
    println!(
        "  ({clients} instance(s) set up and enrolled in {:.1} s)",
        set_up.elapsed().as_secs_f64()
    );
    // A bound on requests, for safety only: each sync makes 4, retries a
    // few more.
    let bound = (clients * (syncs + 1) * 40 + 100) as u64;
    let mut server = Server::start(cli, &hq, bound, per_minute)?;
    let url = server.url.clone();
    let barrier = Arc::new(Barrier::new(clients + 1));
    let bin = cli.bin.clone();
    let mut handles = Vec::new();
    for (k, db) in fields.iter().enumerate() {
        let (db, url, barrier, bin) = (db.clone(), url.clone(), barrier.clone(), bin.clone());
        handles.push(thread::spawn(move || -> Result<ClientRun, String> {
            let cli = Cli { bin };
            barrier.wait();
            let mut run = ClientRun {
                latencies: Vec::new(),
                failed: BTreeMap::new(),
                inner_retries: 0.0,
                received: 0.0,
            };
            for s in 0..syncs {
                let from = INITIAL + 1_000_000 + (k * syncs + s) * per_sync;
                write_rows(&db, from, from + per_sync).map_err(|e| e.to_string())?;
                let done = sync_until_done(&cli, &db, &url, &mut run.failed)?;
                run.latencies.push(done.secs);
                run.inner_retries += done.retries;
                run.received += done.received;
            }
            Ok(run)
        }));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(server.child.id(), stop.clone());
    let server_cpu_before = cpu_secs(server.child.id()).unwrap_or(f64::NAN);
    let clients_cpu_before = children_cpu_secs();
    barrier.wait();
    let start = Instant::now();
    let mut runs = Vec::new();
    let mut problems = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => runs.push(r),
            Ok(Err(e)) => problems.push(e),
            Err(_) => problems.push("a client thread panicked".to_owned()),
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let server_cpu = cpu_secs(server.child.id()).unwrap_or(f64::NAN) - server_cpu_before;
    let clients_cpu = children_cpu_secs() - clients_cpu_before;
    stop.store(true, Ordering::Relaxed);
    let rss = sampler.join().unwrap_or_default();
    if let Some(e) = problems.first() {
        return Err(format!("{} client(s) gave up: {e}", problems.len()).into());
    }
    // The final round: HQ holds everything now; each instance takes what
    // it lacks (one at a time, not timed).
    let mut final_failed = BTreeMap::new();
    for db in &fields {
        sync_until_done(cli, db, &url, &mut final_failed)?;
    }
    let peak_mib = server.peak_mib().unwrap_or(f64::NAN);
    if let Some(s) = server.exited() {
        return Err(format!("the server stopped before the end ({s})").into());
    }
    let statuses = server.statuses();
    drop(server);
    let mut failed = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut inner_retries = 0.0;
    let mut received = 0.0;
    for r in runs {
        latencies.extend(r.latencies);
        inner_retries += r.inner_retries;
        received += r.received;
        for (k, v) in r.failed {
            *failed.entry(k).or_insert(0) += v;
        }
    }
    for (k, v) in final_failed {
        *failed.entry(format!("final round: {k}")).or_insert(0) += v;
    }
    // The check: HQ holds the initial rows and every one written, each
    // once; every instance holds exactly HQ's rows.
    let expected = (INITIAL + clients * syncs * per_sync) as i64;
    let (hq_rows, hq_keys, hq_digest) = contents(&hq)?;
    let duplicates = hq_rows - hq_keys;
    let lost = expected - hq_keys;
    let mut differing = 0;
    for db in &fields {
        if contents(db)? != (hq_rows, hq_keys, hq_digest) {
            differing += 1;
        }
    }
    // fieldsync's own invariants (spec/merge.md) at HQ and every instance.
    let mut check_failed = 0;
    for db in std::iter::once(&hq).chain(&fields) {
        let checked = cli.run(&[os("check"), os("--db"), db.as_os_str()], None)?;
        if !checked.ok {
            check_failed += 1;
            println!(
                "  `fieldsync check --db {}` after the load run: {} {}",
                db.display(),
                checked.out.trim(),
                checked.err.trim()
            );
        }
    }
    Ok(Load {
        clients,
        syncs,
        wall,
        latencies,
        failed,
        inner_retries,
        peak_mib,
        statuses,
        differing,
        duplicates,
        lost,
        hq_rows,
        check_failed,
        received,
        rss,
        server_cpu,
        clients_cpu,
    })
}

/// One sync done: its time from the first try, the retries its report
/// says it made inside, and the changes it applied from the answer.
struct Synced {
    secs: f64,
    retries: f64,
    received: f64,
}

/// Run `fieldsync --json sync` until it succeeds: its time from the first
/// try to the success, and the retries its report says it made inside.
/// Each failed run is counted in `failed` by its reason.
fn sync_until_done(
    cli: &Cli,
    db: &Path,
    url: &str,
    failed: &mut BTreeMap<String, usize>,
) -> Result<Synced, String> {
    let start = Instant::now();
    for attempt in 1..=MAX_ATTEMPTS {
        let r = cli
            .run(
                &[
                    os("--json"),
                    os("sync"),
                    os("--db"),
                    db.as_os_str(),
                    os(url),
                ],
                None,
            )
            .map_err(|e| e.to_string())?;
        if r.ok {
            let report = r.json();
            let count = |path: &[&str]| {
                let n = number(&report, path);
                if n.is_nan() { 0.0 } else { n }
            };
            return Ok(Synced {
                secs: start.elapsed().as_secs_f64(),
                retries: count(&["retries"]),
                received: count(&["import", "applied"]),
            });
        }
        *failed.entry(reason(&r.err)).or_insert(0) += 1;
        if attempt == MAX_ATTEMPTS {
            return Err(format!(
                "sync of {} failed {MAX_ATTEMPTS} times, last: {}",
                db.display(),
                r.err.trim()
            ));
        }
        thread::sleep(Duration::from_millis(500 * attempt.min(8) as u64));
    }
    Err("unreachable: no attempt made".to_owned())
}

/// A failure's kind, from its message: the HTTP status it names, else its
/// first words.
fn reason(err: &str) -> String {
    for code in [
        "429", "503", "500", "408", "409", "422", "401", "403", "404",
    ] {
        if err.contains(&format!("HTTP {code}")) || err.contains(&format!(" {code} ")) {
            return format!("HTTP {code}");
        }
    }
    for word in ["locked", "busy", "timed out", "reset", "refused"] {
        if err.contains(word) {
            return word.to_owned();
        }
    }
    err.trim().chars().take(60).collect()
}

/// The `person` table's row count, distinct keys, and a digest of its rows
/// in key order.
fn contents(db: &Path) -> Res<(i64, i64, [u8; 32])> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let (rows, keys): (i64, i64) =
        conn.query_row("SELECT count(*), count(DISTINCT id) FROM person", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let mut st = conn.prepare(
        "SELECT id, name, age, status, score, hex(photo), org, note FROM person ORDER BY id",
    )?;
    let mut hasher = blake3::Hasher::new();
    let mut q = st.query([])?;
    while let Some(row) = q.next()? {
        for c in 0..8 {
            let v: rusqlite::types::Value = row.get(c)?;
            hasher.update(format!("{v:?}\u{1f}").as_bytes());
        }
        hasher.update(b"\n");
    }
    Ok((rows, keys, *hasher.finalize().as_bytes()))
}
