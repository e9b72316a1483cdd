//! The HQ console in a real browser: `fieldsync serve` on 127.0.0.1 (a
//! port of the OS's choosing) with `--admin-password-file`, over the
//! console tests' demo database (field instances, two changes held),
//! Debian's headless Chromium driven through chromedriver with fantoccini:
//! log in, read the instances table (names and numbers as `status --json`
//! says), open the quarantine, press Retry, see the count fall, and save a
//! screenshot as the test's artifact (`target/console-screenshot.png`).
//!
//! Skipped with a message when /usr/bin/chromedriver is missing, unless
//! `FIELDSYNC_REQUIRE_BROWSER=1` (CI sets it), when that fails the test.

use std::io::{BufRead, BufReader};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

use crate::console::{PASSWORD, demo};
use crate::util::*;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A child process (chromedriver, the server), killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port the OS has free now on 127.0.0.1.
fn free_port() -> Res<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Wait until something accepts connections on `port` (at most ~20 s).
async fn until_listening(port: u16) -> Res {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("nothing listens on port {port}").into())
}

/// The URL `fieldsync serve` says it serves at (its first lines; it
/// listens before it prints them). An error if it ends first.
fn served_at(server: &mut Child) -> Res<String> {
    let out = server.stdout.take().ok_or("no stdout")?;
    let mut said = String::new();
    let mut lines = BufReader::new(out).lines();
    for _ in 0..10 {
        let Some(line) = lines.next() else { break };
        let line = line?;
        if let Some(at) = line.find("http://") {
            let url = &line[at..];
            let end = url.find(' ').unwrap_or(url.len());
            // What it prints later is read and dropped, so it never
            // writes into a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(url[..end].trim_end_matches('.').to_owned());
        }
        said.push_str(&line);
        said.push('\n');
    }
    Err(format!("fieldsync serve did not say where it listens:\n{said}").into())
}

/// Where the test's artifacts go: the target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

#[test]
fn the_console_in_a_real_browser_logs_in_shows_the_instances_and_retries() -> Res {
    if !Path::new(CHROMEDRIVER).exists() {
        if std::env::var("FIELDSYNC_REQUIRE_BROWSER").as_deref() == Ok("1") {
            return Err(format!(
                "{CHROMEDRIVER} is missing and FIELDSYNC_REQUIRE_BROWSER=1: \
                 apt-get install chromium chromium-driver"
            )
            .into());
        }
        eprintln!("skipped: {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)");
        return Ok(());
    }
    let d = demo()?;
    // HQ renames its own 'A': a retry applies field-1's row 'f1'.
    d.hq.sql("UPDATE site SET code = 'A-hq' WHERE id = 'h1';")?;
    let status = d.hq.status()?;
    let profile = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The real server, its console on: the password from a file.
    let password_file = d.w.path("admin-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n"))?;
    let mut server = Driver(
        Command::new(env!("CARGO_BIN_EXE_fieldsync"))
            .args(["serve", "--listen", "127.0.0.1:0", "--stale-days", "7"])
            .arg("--db")
            .arg(&d.hq.db)
            .arg("--admin-password-file")
            .arg(&password_file)
            .env_remove("FIELDSYNC_DB")
            .env_remove("FIELDSYNC_ADMIN_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let base = served_at(&mut server.0)?;
    rt.block_on(async {
        let port = free_port()?;
        let _driver = Driver(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        until_listening(port).await?;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.path().display()),
                    "--window-size=1280,900",
                ]
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await?;
        let outcome = drive(&client, &base, &status).await;
        let _ = client.close().await;
        outcome
    })?;
    drop(server);
    assert_eq!(held(&d.hq)?.len(), 1);
    Ok(())
}

// fantoccini's `rustls-tls` feature brought aws-lc-rs into the test build
// beside the server's ring, and rustls then panicked building any TLS
// configuration ("Could not automatically determine the process-level
// CryptoProvider"): the browser test, and serve's TLS in every test.
#[test]
fn a_tls_configuration_can_be_built_in_the_test_binary() {
    let _ = tokio_rustls::rustls::ServerConfig::builder();
    let _ = tokio_rustls::rustls::ClientConfig::builder();
}

/// What the administrator does, in the browser.
async fn drive(c: &fantoccini::Client, base: &str, status: &serde_json::Value) -> Res {
    c.goto(&format!("{base}/")).await?;
    // Not logged in: the login page.
    assert!(c.current_url().await?.as_str().ends_with("/login"));
    c.find(Locator::Css("input[name=password]"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    c.find(Locator::Css("form[action='/login'] button[type=submit]"))
        .await?
        .click()
        .await?;
    let table = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("table#instances"))
        .await?;
    let mut names = Vec::new();
    for row in table.find_all(Locator::Css("tbody tr")).await? {
        let name = row.attr("data-instance").await?.unwrap_or_default();
        names.push(name.clone());
        let peer = status["peers"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["instance"] == name.as_str()))
            .ok_or_else(|| format!("{name} is not a peer in status --json"))?;
        let owed = row
            .find(Locator::Css("td[data-col=owed]"))
            .await?
            .text()
            .await?;
        assert_eq!(owed, num(peer, "pending_changes")?.to_string(), "{name}");
        let unacked = row
            .find(Locator::Css("td[data-col=unacknowledged]"))
            .await?
            .text()
            .await?;
        assert_eq!(unacked, num(peer, "unacknowledged")?.to_string(), "{name}");
    }
    assert_eq!(names, ["field-1", "field-2"]);
    let held = c
        .find(Locator::Css("tr[data-instance=field-1] td[data-col=held]"))
        .await?;
    assert_eq!(held.text().await?, "2");
    std::fs::create_dir_all(target_dir())?;
    std::fs::write(
        target_dir().join("console-instances.png"),
        c.screenshot().await?,
    )?;

    // The quarantine, by the navigation.
    c.find(Locator::LinkText("Needs a person"))
        .await?
        .click()
        .await?;
    let count = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#held-count"))
        .await?;
    assert_eq!(count.attr("data-count").await?.as_deref(), Some("2"));
    c.find(Locator::Css("button#retry")).await?.click().await?;
    let count = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#held-count[data-count='1']"))
        .await?;
    assert!(count.text().await?.starts_with('1'));
    assert!(c.source().await?.contains("1 applied"));
    let png = c.screenshot().await?;
    assert!(png.starts_with(b"\x89PNG"));
    std::fs::write(target_dir().join("console-screenshot.png"), png)?;
    Ok(())
}
