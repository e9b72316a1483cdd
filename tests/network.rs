//! Network sync through the real CLI (spec/network.md): `fieldsync serve`
//! on loopback and field instances running `sync`, `push` and `pull`, as in
//! the seed's scenario when a link exists: several at once while HQ's app
//! writes, transfers cut (by a proxy, by killing the server, by killing the
//! client) and completed by running again, strangers and revoked laptops
//! refused, files and network mixed, and hostile requests answered 4xx
//! with HQ's database unchanged.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::util::net::{Proxy, Served, raw_http};
use crate::util::{RELIEF_SCHEMA, Res, Site, World, assert_error, fieldsync, fieldsync_ok, num};

/// HQ with one location, and `n` field instances set up from its full
/// export (enrolled at HQ and each other, as HQ would).
fn deployment(w: &World, n: usize) -> Res<(Site, Vec<Site>)> {
    let hq = w.site("hq", RELIEF_SCHEMA)?;
    hq.sql("INSERT INTO location VALUES('L0', NULL, 'country', 'Ruritania');")?;
    let full = w.bundle("hq-full");
    hq.export_full(&full)?;
    let fields = (1..=n)
        .map(|k| w.site_from(&format!("field-{k}"), &full))
        .collect::<Res<Vec<_>>>()?;
    Ok((hq, fields))
}

/// `n` new districts under L0, named after `prefix`, in one statement.
fn add_places(site: &Site, prefix: &str, n: usize) -> Res {
    // As an app would, it waits for the write lock an import holds.
    site.sql(&format!(
        ".timeout 20000\nWITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {n}) \
         INSERT INTO location(id, parent, level, name) \
         SELECT '{prefix}-' || i, 'L0', 'district', \
                'District {prefix} ' || i || ' ' || hex(randomblob(24)) FROM c;"
    ))?;
    Ok(())
}

/// `fieldsync VERB --db SITE SERVER --json ARGS…`, which must succeed.
fn run(verb: &str, site: &Site, server: &str, args: &[&str]) -> Res<Json> {
    let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&verb, &"--db", &site.db, &server, &"--json"];
    for a in args {
        all.push(a);
    }
    fieldsync_ok(&all)?.json()
}

fn sync(site: &Site, server: &str) -> Res<Json> {
    run("sync", site, server, &[])
}

/// Both hold the same rows in every tracked table.
fn same(a: &Site, b: &Site) -> Res {
    assert_eq!(
        a.snapshot()?,
        b.snapshot()?,
        "{} and {} differ",
        a.name,
        b.name
    );
    Ok(())
}

/// No key twice and no row lost: `expected` locations, each id once.
fn whole(site: &Site, expected: u64) -> Res {
    assert_eq!(
        site.count("SELECT count(*) FROM location")?,
        expected,
        "{}",
        site.name
    );
    assert_eq!(
        site.count("SELECT count(DISTINCT name) FROM location")?,
        expected,
        "{} holds a row twice under two keys",
        site.name
    );
    Ok(())
}

/// Wait for a child process, at most two minutes.
fn wait(mut child: Child) -> Res<(i32, String, String)> {
    let began = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            let out = child.wait_with_output()?;
            return Ok((
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        if began.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            return Err("the client never finished".into());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_sync(site: &Site, url: &str) -> Res<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_fieldsync"))
        .args(["sync", "--json", "--tries", "10", "--timeout", "5", "--db"])
        .arg(&site.db)
        .arg(url)
        .env_remove("FIELDSYNC_DB")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

#[test]
fn three_field_instances_sync_at_once_while_the_hq_app_writes() -> Res {
    let w = World::new()?;
    let (hq, fields) = deployment(&w, 3)?;
    let server = Served::start(&hq.db, &[])?;
    let hq_app = {
        let hq = hq.clone();
        thread::spawn(move || -> Result<(), String> {
            for i in 0..40 {
                hq.sql(&format!(
                    ".timeout 20000\nINSERT INTO location VALUES('hq-{i}', 'L0', 'district', 'HQ district {i}');"
                ))
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    };
    let workers: Vec<_> = fields
        .iter()
        .cloned()
        .map(|f| {
            let url = server.url.clone();
            thread::spawn(move || -> Result<(), String> {
                for round in 0..3 {
                    add_places(&f, &format!("{}-{round}", f.name), 20)
                        .map_err(|e| e.to_string())?;
                    sync(&f, &url).map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .collect();
    for t in workers {
        t.join().map_err(|_| "a field thread panicked")??;
    }
    hq_app.join().map_err(|_| "the app thread panicked")??;
    // Everyone has everything after one more round each (a field's changes
    // reach the others through HQ).
    for _ in 0..2 {
        for f in &fields {
            sync(f, &server.url)?;
        }
    }
    let expected = 1 + 40 + 3 * 3 * 20;
    whole(&hq, expected)?;
    for f in &fields {
        same(&hq, f)?;
        fieldsync_ok(&[&"check", &"--db", &f.db])?;
    }
    fieldsync_ok(&[&"check", &"--db", &hq.db])?;
    Ok(())
}

#[test]
fn a_cut_download_resumes_from_the_byte_it_reached() -> Res {
    let w = World::new()?;
    let (hq, fields) = deployment(&w, 1)?;
    add_places(&hq, "hq", 6000)?;
    let server = Served::start(&hq.db, &[])?;
    let proxy = Proxy::start(server.addr)?;
    proxy.cut_down_after(150_000);
    let report = sync(&fields[0], &proxy.url())?;
    assert_eq!(proxy.cuts(), 1, "the proxy cut the answer");
    let resumed = num(&report, "download_resumed_from")?;
    let received = num(&report, "received_bytes")?;
    assert!(resumed > 0 && resumed < received, "{report}");
    assert_eq!(
        num(&report, "downloaded_bytes")?,
        received,
        "each byte came once: {report}"
    );
    assert!(num(&report, "retries")? >= 1);
    whole(&fields[0], 6001)?;
    same(&hq, &fields[0])
}

#[test]
fn a_cut_upload_resumes_from_the_byte_the_server_holds() -> Res {
    let w = World::new()?;
    let (hq, fields) = deployment(&w, 1)?;
    add_places(&fields[0], "f1", 6000)?;
    let server = Served::start(&hq.db, &[])?;
    let proxy = Proxy::start(server.addr)?;
    proxy.cut_up_after(150_000);
    let report = run("push", &fields[0], &proxy.url(), &[])?;
    assert_eq!(proxy.cuts(), 1);
    let resumed = num(&report, "upload_resumed_from")?;
    let sent = num(&report, "sent_bytes")?;
    assert!(resumed > 0 && resumed < sent, "{report}");
    // The bytes after the cut went again, not the whole: without the
    // resume it would be twice the bundle.
    assert!(
        num(&report, "uploaded_bytes")? <= 2 * sent - resumed,
        "{report}"
    );
    assert_eq!(report["server_import"]["applied"], 6000, "{report}");
    whole(&hq, 6001)?;
    same(&hq, &fields[0])
}

#[test]
fn a_transfer_cut_by_killing_the_server_then_the_client_completes_when_run_again() -> Res {
    let w = World::new()?;
    let (hq, fields) = deployment(&w, 1)?;
    let f = &fields[0];
    add_places(f, "f-a", 8000)?;
    let mut server = Served::start(&hq.db, &[])?;
    let addr = server.addr;
    let proxy = Proxy::start(addr)?;
    proxy.throttle(100_000);

    // The server dies while the laptop's bundle comes in, and comes back on
    // the same port: the client's retries resume the upload from what the
    // server kept.
    let client = spawn_sync(f, &proxy.url())?;
    proxy.wait_until(Proxy::up, 80_000)?;
    server.kill();
    thread::sleep(Duration::from_millis(300));
    let _server = Served::start_on(&hq.db, &addr.to_string(), &[])?;
    let (code, stdout, stderr) = wait(client)?;
    assert_eq!(code, 0, "{stderr}");
    let report: Json = serde_json::from_str(stdout.trim())?;
    assert!(num(&report, "retries")? >= 1, "{report}");
    assert!(num(&report, "upload_resumed_from")? > 0, "{report}");
    whole(&hq, 1 + 8000)?;
    same(&hq, f)?;

    // The client dies while HQ's answer comes in: the next run finishes
    // that answer from the byte it reached.
    add_places(&hq, "hq-b", 8000)?;
    let base = proxy.down();
    let mut client = spawn_sync(f, &proxy.url())?;
    proxy.wait_until(Proxy::down, base + 80_000)?;
    client.kill()?;
    client.wait()?;
    proxy.throttle(0);
    let report = sync(f, &proxy.url())?;
    assert!(num(&report, "download_resumed_from")? > 0, "{report}");
    whole(f, 1 + 16000)?;
    same(&hq, f)?;
    fieldsync_ok(&[&"check", &"--db", &f.db])?;
    Ok(())
}

#[test]
fn an_unknown_instance_is_refused_and_hq_is_unchanged() -> Res {
    let w = World::new()?;
    let (hq, _) = deployment(&w, 1)?;
    let stranger = w.stranger("stranger", RELIEF_SCHEMA)?;
    fieldsync_ok(&[&"track", &"--db", &stranger.db, &"--all"])?;
    // It trusts HQ, but HQ never enrolled it.
    let key = hq.key()?;
    crate::util::enrol(&stranger, "hq", &key)?;
    stranger.sql("INSERT INTO location VALUES('S1', NULL, 'country', 'Elsewhere');")?;
    let server = Served::start(&hq.db, &[])?;
    let before = hq.fingerprint()?.without_journal();
    let out = fieldsync(&[&"sync", &"--db", &stranger.db, &server.url])?;
    assert_error(
        &out,
        1,
        &["refused", "does not know the key", "fieldsync trust"],
    );
    assert_eq!(hq.fingerprint()?.without_journal(), before);
    assert!(server.log().contains(" 401 "), "{}", server.log());
    Ok(())
}

#[test]
fn a_revoked_instance_is_refused() -> Res {
    let w = World::new()?;
    let (hq, fields) = deployment(&w, 2)?;
    fieldsync_ok(&[&"revoke", &"--db", &hq.db, &"field-2"])?;
    add_places(&fields[1], "stolen", 5)?;
    let server = Served::start(&hq.db, &[])?;
    let before = hq.fingerprint()?.without_journal();
    let out = fieldsync(&[&"sync", &"--db", &fields[1].db, &server.url])?;
    assert_error(&out, 1, &["refused", "'field-2'", "revoked"]);
    assert_eq!(hq.fingerprint()?.without_journal(), before);
    assert!(server.log().contains(" 403 "), "{}", server.log());
    // The others go on.
    add_places(&fields[0], "f1", 5)?;
    sync(&fields[0], &server.url)?;
    whole(&hq, 6)
}

#[test]
fn files_and_network_mix_without_a_duplicate_or_a_loss() -> Res {
    let w = World::new()?;
    let (hq, fields) = deployment(&w, 2)?;
    let (f1, f2) = (&fields[0], &fields[1]);
    let server = Served::start(&hq.db, &[])?;
    // A bundle goes on a stick; before HQ imports it, the laptop syncs.
    add_places(f1, "stick", 30)?;
    let stick = w.bundle("f1-to-hq");
    f1.export_to("hq", &stick)?;
    sync(f1, &server.url)?;
    let late = hq.import(&[&stick])?;
    assert_eq!(
        num(&late, "applied")?,
        0,
        "the stick's changes came by network first"
    );
    // HQ's answer goes by file to one laptop, by network to the other.
    add_places(&hq, "hq", 25)?;
    w.send(&hq, f2)?;
    sync(f2, &server.url)?;
    add_places(f2, "f2", 10)?;
    run("push", f2, &server.url, &[])?;
    let pulled = run("pull", f1, &server.url, &[])?;
    assert!(num(&pulled["import"], "applied")? > 0);
    w.send(f1, f2)?;
    for f in [f1, f2, f1] {
        sync(f, &server.url)?;
    }
    whole(&hq, 1 + 30 + 25 + 10)?;
    same(&hq, f1)?;
    same(&hq, f2)?;
    for s in [&hq, f1, f2] {
        fieldsync_ok(&[&"check", &"--db", &s.db])?;
    }
    Ok(())
}

#[test]
fn peer_add_remembers_the_server_so_an_officer_types_only_the_database() -> Res {
    let w = World::new()?;
    let (hq, fields) = deployment(&w, 1)?;
    let f = &fields[0];
    let out = fieldsync(&[&"sync", &"--db", &f.db])?;
    assert_error(&out, 1, &["no server", "fieldsync peer add"]);
    let server = Served::start(&hq.db, &[])?;
    fieldsync_ok(&[&"peer", &"add", &"--db", &f.db, &"hq", &server.url])?;
    let list = fieldsync_ok(&[&"peer", &"list", &"--db", &f.db, &"--json"])?.json()?;
    assert_eq!(list["servers"][0]["url"], server.url.as_str());
    add_places(f, "f", 3)?;
    fieldsync_ok(&[&"sync", &"--db", &f.db])?;
    fieldsync_ok(&[&"sync", &"--db", &f.db, &"hq"])?;
    whole(&hq, 4)?;
    // Each exchange is in the sync journal, beside its export and import.
    let journal = fieldsync_ok(&[&"journal", &"--db", &f.db, &"--json"])?.json()?;
    let rows = journal["entries"].as_array().ok_or("no entries")?;
    let syncs: Vec<&Json> = rows.iter().filter(|e| e["kind"] == "sync").collect();
    assert_eq!(syncs.len(), 2, "{journal}");
    assert!(
        syncs
            .iter()
            .all(|e| e["via"] == "network" && e["instance"] == "hq")
    );
    assert!(
        rows.iter()
            .any(|e| e["kind"] == "export" && e["via"] == "network" && e["changes"] == 3)
    );
    let bad = fieldsync(&[&"peer", &"add", &"--db", &f.db, &"hq", &"hq.example.org"])?;
    assert_error(&bad, 1, &["not a fieldsync server address", "https://"]);
    fieldsync_ok(&[&"peer", &"remove", &"--db", &f.db, &"hq"])?;
    let out = fieldsync(&[&"sync", &"--db", &f.db, &"hq"])?;
    assert_error(&out, 1, &["no address is remembered for 'hq'"]);
    Ok(())
}

#[test]
fn sync_over_tls_with_the_servers_own_certificate() -> Res {
    let w = World::new()?;
    let (hq, fields) = deployment(&w, 1)?;
    // A CA of HQ's own, and HQ's certificate from it.
    let (ca, ca_key) = (w.path("ca.pem"), w.path("ca.key"));
    let (csr, cert, key) = (w.path("hq.csr"), w.path("hq.pem"), w.path("hq.key"));
    let ext = w.path("hq.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )?;
    let openssl = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        Command::new("openssl")
            .args(args.iter().map(|a| a.as_ref()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let made = openssl(&[
        &"req",
        &"-x509",
        &ec[0],
        &ec[1],
        &ec[2],
        &ec[3],
        &ec[4],
        &"-days",
        &"2",
        &"-subj",
        &"/CN=HQ CA",
        &"-keyout",
        &ca_key,
        &"-out",
        &ca,
    ]) && openssl(&[
        &"req", &ec[0], &ec[1], &ec[2], &ec[3], &ec[4], &"-subj", &"/CN=hq", &"-keyout", &key,
        &"-out", &csr,
    ]) && openssl(&[
        &"x509",
        &"-req",
        &"-in",
        &csr,
        &"-CA",
        &ca,
        &"-CAkey",
        &ca_key,
        &"-CAcreateserial",
        &"-days",
        &"2",
        &"-extfile",
        &ext,
        &"-out",
        &cert,
    ]);
    if !made {
        eprintln!("skipped: no openssl to make certificates with");
        return Ok(());
    }
    let server = Served::start(
        &hq.db,
        &[
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
    )?;
    assert!(server.url.starts_with("https://"), "{}", server.url);
    add_places(&fields[0], "f", 3)?;
    // Without the certificate the field refuses the server, and says why.
    let out = fieldsync(&[
        &"sync",
        &"--db",
        &fields[0].db,
        &server.url,
        &"--tries",
        &"1",
    ])?;
    assert_error(&out, 1, &["certificate", "not trusted", "--ca-cert"]);
    run(
        "sync",
        &fields[0],
        &server.url,
        &["--ca-cert", &ca.display().to_string()],
    )?;
    whole(&hq, 4)?;
    same(&hq, &fields[0])
}

/// A request signed with `db`'s instance key for the server `to` (its
/// database: the signature names the server's key), as raw bytes.
fn signed(to: &Site, db: &Path, method: &str, path: &str, body: &[u8]) -> Res<Vec<u8>> {
    let audience = crate::util::text(&to.key()?, "public_key")?.to_owned();
    let instance = fieldsync::Instance::open(db)?;
    let key = fieldsync::fuzzing::signing_key(&instance)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in fieldsync::net::auth::sign(&key, &audience, method, path, &blake3::hash(body)) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    Ok(out)
}

/// The path of an upload of `total` bytes from `offset`.
fn put_path(id: &str, offset: u64, total: u64) -> String {
    format!("/v1/upload/{id}?offset={offset}&total={total}")
}

/// Upload `bundle` whole, signed by `db`'s key; its id, the status and
/// answer.
fn upload(hq: &Site, server: &Served, db: &Path, bundle: &[u8]) -> Res<(String, u16, String)> {
    let id = blake3::hash(bundle).to_hex().to_string();
    let req = signed(
        hq,
        db,
        "PUT",
        &put_path(&id, 0, bundle.len() as u64),
        bundle,
    )?;
    let (status, body) = raw_http(server.addr, &req)?;
    Ok((id, status, body))
}

/// Start the exchange of upload `id` and wait for its answer: the
/// answer's id and the final status and body of `GET /v1/bundle/ID`.
fn exchange(hq: &Site, server: &Served, db: &Path, id: &str) -> Res<(String, u16, String)> {
    let (s, body) = raw_http(
        server.addr,
        &signed(hq, db, "POST", &format!("/v1/sync/{id}"), b"")?,
    )?;
    assert_eq!(s, 202, "{body}");
    let started: Json = serde_json::from_str(&body)?;
    let bid = started["bundle"].as_str().ok_or("no answer id")?.to_owned();
    let began = Instant::now();
    loop {
        let (s, body) = raw_http(
            server.addr,
            &signed(hq, db, "GET", &format!("/v1/bundle/{bid}"), b"")?,
        )?;
        if s != 202 {
            return Ok((bid, s, body));
        }
        if began.elapsed() > Duration::from_secs(60) {
            return Err("the answer never came".into());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn malformed_and_hostile_requests_are_answered_4xx_and_change_nothing() -> Res {
    let w = World::new()?;
    let (hq, fields) = deployment(&w, 2)?;
    let (f1, f2) = (&fields[0], &fields[1]);
    let server = Served::start(&hq.db, &["--max-body-mib", "1"])?;
    add_places(f1, "f1", 20)?;
    add_places(f2, "f2", 20)?;
    let before = hq.fingerprint()?.without_journal();
    let a = server.addr;
    let id = "ab".repeat(32);
    let status_of = |req: &[u8]| -> Res<(u16, String)> { raw_http(a, req) };

    let (s, _) = status_of(b"GET /nowhere HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")?;
    assert_eq!(s, 404);
    let (s, body) =
        status_of(b"DELETE /v1/hello HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")?;
    assert_eq!(s, 405, "{body}");
    let plain = format!("GET /v1/upload/{id} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    let (s, body) = status_of(plain.as_bytes())?;
    assert_eq!(s, 401, "unsigned: {body}");
    assert!(body.contains("not signed"), "{body}");
    // Signed for one path, sent to another.
    let req = signed(&hq, &f1.db, "GET", &format!("/v1/upload/{id}"), b"")?;
    let text = String::from_utf8(req.clone())?.replacen(&id, &"cd".repeat(32), 1);
    let (s, _) = status_of(text.as_bytes())?;
    assert_eq!(s, 401, "a signature over another path");
    // Signed for another server (field-2's key as the audience).
    let (s, _) = status_of(&signed(
        f2,
        &f1.db,
        "GET",
        &format!("/v1/upload/{id}"),
        b"",
    )?)?;
    assert_eq!(s, 401, "a signature for another server");
    // The same request twice: the second is a replay.
    let (s, _) = status_of(&req)?;
    assert_eq!(s, 200);
    let (s, body) = status_of(&req)?;
    assert_eq!(s, 401);
    assert!(body.contains("replay"), "{body}");
    // A time at the end of the range.
    let odd = String::from_utf8(signed(
        &hq,
        &f1.db,
        "GET",
        &format!("/v1/upload/{id}"),
        b"",
    )?)?;
    let odd: String = odd
        .lines()
        .map(|l| {
            if l.starts_with("fieldsync-time:") {
                "fieldsync-time: -9223372036854775808".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n\r\n";
    let (s, _) = status_of(odd.as_bytes())?;
    assert_eq!(s, 401);
    // A key nobody enrolled.
    let stranger = w.stranger("nobody", RELIEF_SCHEMA)?;
    let (s, body) = status_of(&signed(
        &hq,
        &stranger.db,
        "GET",
        &format!("/v1/upload/{id}"),
        b"",
    )?)?;
    assert_eq!(s, 401, "{body}");
    // Bad ids, a bundle larger than the server takes, a body that is not
    // the one signed.
    let (s, _) = status_of(&signed(
        &hq,
        &f1.db,
        "GET",
        "/v1/upload/..%2F..%2Fhq.db",
        b"",
    )?)?;
    assert_eq!(s, 400);
    let (s, body) = status_of(&signed(
        &hq,
        &f1.db,
        "PUT",
        &put_path(&id, 0, 2 << 20),
        b"x",
    )?)?;
    assert_eq!(s, 413);
    assert!(body.contains("--max-body-mib"), "{body}");
    let mut req = signed(&hq, &f1.db, "PUT", &put_path(&id, 0, 5), b"hello")?;
    let n = req.len();
    req[n - 1] = b'X';
    let (s, body) = status_of(&req)?;
    assert_eq!(s, 400, "{body}");
    // A body cut short: what arrived is kept to resume from (checked
    // against the id once whole), nothing else.
    let mut c = TcpStream::connect(a)?;
    let req = signed(&hq, &f1.db, "PUT", &put_path(&id, 0, 1000), &[7u8; 1000])?;
    c.write_all(&req[..req.len() - 990])?;
    drop(c);
    thread::sleep(Duration::from_millis(200));
    let (s, body) = status_of(&signed(
        &hq,
        &f1.db,
        "GET",
        &format!("/v1/upload/{id}"),
        b"",
    )?)?;
    assert_eq!((s, body.contains("\"have\":10,")), (200, true), "{body}");
    // A garbled request line.
    let (s, _) = status_of(b"HELLO THERE\r\n\r\n").unwrap_or((400, String::new()));
    assert_eq!(s, 400);
    // Exchanges of uploads that are not there, answers that are not there.
    let (s, _) = status_of(&signed(
        &hq,
        &f1.db,
        "POST",
        &format!("/v1/sync/{}", "ef".repeat(32)),
        b"",
    )?)?;
    assert_eq!(s, 404);
    let (s, _) = status_of(&signed(
        &hq,
        &f1.db,
        "GET",
        &format!("/v1/bundle/{}", "ef".repeat(16)),
        b"",
    )?)?;
    assert_eq!(s, 404);

    // A real bundle with a byte changed fails its checksum: refused whole.
    let file = w.bundle("f1-to-hq");
    f1.export_to("hq", &file)?;
    let mut bundle = std::fs::read(&file)?;
    let mid = bundle.len() / 2;
    bundle[mid] ^= 0x40;
    let (id, s, body) = upload(&hq, &server, &f1.db, &bundle)?;
    assert_eq!(s, 200, "{body}");
    let (_, s, body) = exchange(&hq, &server, &f1.db, &id)?;
    assert_eq!(s, 422, "{body}");
    // Another instance's bundle, sent by field-1: refused, it syncs its own.
    let other = w.bundle("f2-to-hq");
    f2.export_to("hq", &other)?;
    let (id, s, _) = upload(&hq, &server, &f1.db, &std::fs::read(&other)?)?;
    assert_eq!(s, 200);
    let (_, s, body) = exchange(&hq, &server, &f1.db, &id)?;
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("not signed by the key"), "{body}");
    assert_eq!(hq.fingerprint()?.without_journal(), before, "HQ changed");

    // field-1's own bundle goes through; its answer is for field-1 only.
    let (id, s, _) = upload(&hq, &server, &f1.db, &std::fs::read(&file)?)?;
    assert_eq!(s, 200);
    let (bid, s, _) = exchange(&hq, &server, &f1.db, &id)?;
    assert_eq!(s, 200);
    let (s, _) = status_of(&signed(
        &hq,
        &f2.db,
        "GET",
        &format!("/v1/bundle/{bid}"),
        b"",
    )?)?;
    assert_eq!(s, 404, "field-2 reads field-1's answer");
    let (s, _) = status_of(&signed(
        &hq,
        &f2.db,
        "GET",
        &format!("/v1/upload/{id}"),
        b"",
    )?)
    .map(|(s, b)| (s, b.contains("\"have\":0,")))
    .map(|(s, zero)| (if zero { s } else { 0 }, String::new()))?;
    assert_eq!(s, 200, "field-2 sees field-1's upload");
    let mut range = signed(&hq, &f1.db, "GET", &format!("/v1/bundle/{bid}"), b"")?;
    range.truncate(range.len() - 2);
    range.extend_from_slice(b"range: bytes=99999999-\r\n\r\n");
    let (s, _) = status_of(&range)?;
    assert_eq!(s, 416);
    // And it keeps serving the others.
    sync(f2, &server.url)?;
    whole(&hq, 41)
}

#[test]
fn a_stalled_client_is_cut_off_and_the_others_are_served() -> Res {
    let w = World::new()?;
    let (hq, fields) = deployment(&w, 2)?;
    let server = Served::start(&hq.db, &["--idle-timeout", "2"])?;
    // An upload that stops after its first bytes.
    let id = "ef".repeat(32);
    let req = signed(
        &hq,
        &fields[0].db,
        "PUT",
        &put_path(&id, 0, 100_000),
        &[1u8; 100_000],
    )?;
    let mut slow = TcpStream::connect(server.addr)?;
    slow.write_all(&req[..req.len() - 99_000])?;
    // A connection that sends half a request head, and one that sends
    // nothing at all.
    let mut dribble = TcpStream::connect(server.addr)?;
    dribble.write_all(b"GET /v1/hello HTTP/1.1\r\nhost:")?;
    let mut idle = TcpStream::connect(server.addr)?;
    add_places(&fields[1], "f2", 10)?;
    sync(&fields[1], &server.url)?;
    server.wait_for_log("nothing moved for 2 s")?;
    let log = server.wait_for_log(&format!("PUT /v1/upload/{id}"))?;
    let stalled = log
        .lines()
        .find(|l| l.contains(&format!("PUT /v1/upload/{id}")))
        .ok_or_else(|| format!("the stalled upload was not logged:\n{log}"))?;
    assert!(
        stalled.contains(" 408 ") || stalled.contains(" 400 "),
        "{stalled}"
    );
    // The server closed the others too: reading them ends.
    for c in [&mut dribble, &mut idle] {
        c.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(c, &mut rest);
    }
    drop((slow, dribble, idle));
    whole(&hq, 11)?;
    same(&hq, &fields[1])
}

#[test]
fn a_client_that_stops_reading_an_answer_is_cut_off_and_the_others_are_served() -> Res {
    let w = World::new()?;
    let (hq, fields) = deployment(&w, 2)?;
    // An answer far larger than the socket buffers: 8 MB that does not
    // compress.
    hq.sql(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 160) \
         INSERT INTO location(id, parent, level, name) \
         SELECT 'big-' || i, 'L0', 'district', randomblob(50000) FROM c;",
    )?;
    let server = Served::start(&hq.db, &["--idle-timeout", "2"])?;
    let file = w.bundle("f1-to-hq");
    fields[0].export_to("hq", &file)?;
    let (id, s, body) = upload(&hq, &server, &fields[0].db, &std::fs::read(&file)?)?;
    assert_eq!(s, 200, "{body}");
    let (bid, s, _) = {
        // Wait until the answer is made, without reading it yet.
        let (s, body) = raw_http(
            server.addr,
            &signed(&hq, &fields[0].db, "POST", &format!("/v1/sync/{id}"), b"")?,
        )?;
        assert_eq!(s, 202, "{body}");
        let started: Json = serde_json::from_str(&body)?;
        let bid = started["bundle"].as_str().ok_or("no id")?.to_owned();
        server.wait_for_log("answered")?;
        (bid, s, body)
    };
    assert_eq!(s, 202);
    // Ask for the answer and never read it.
    let mut reader = TcpStream::connect(server.addr)?;
    reader.write_all(&signed(
        &hq,
        &fields[0].db,
        "GET",
        &format!("/v1/bundle/{bid}"),
        b"",
    )?)?;
    let log = server.wait_for_log("nothing moved for 2 s")?;
    assert!(log.contains(&format!("GET /v1/bundle/{bid} 200")), "{log}");
    // The others are served meanwhile and after.
    add_places(&fields[1], "f2", 5)?;
    sync(&fields[1], &server.url)?;
    drop(reader);
    // The stalled one syncs again, and gets everything.
    sync(&fields[0], &server.url)?;
    same(&hq, &fields[0])?;
    whole(&hq, 1 + 160 + 5)
}

#[test]
fn a_cut_push_then_a_sync_still_brings_what_the_server_has() -> Res {
    let w = World::new()?;
    let (hq, fields) = deployment(&w, 1)?;
    let f = &fields[0];
    add_places(f, "f", 50)?;
    add_places(&hq, "hq", 3000)?;
    let server = Served::start(&hq.db, &[])?;
    let proxy = Proxy::start(server.addr)?;
    proxy.throttle(20_000);
    // The push is killed while its acknowledgement comes back.
    let mut push = Command::new(env!("CARGO_BIN_EXE_fieldsync"))
        .args(["push", "--db"])
        .arg(&f.db)
        .arg(proxy.url())
        .env_remove("FIELDSYNC_DB")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    server.wait_for_log("answered")?;
    push.kill()?;
    push.wait()?;
    proxy.throttle(0);
    // The sync that follows finishes what the push left, then pulls.
    sync(f, &proxy.url())?;
    whole(f, 1 + 50 + 3000)?;
    same(&hq, f)
}
