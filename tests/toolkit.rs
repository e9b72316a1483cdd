//! The operator's toolkit (issue 16) as an operator meets it through the
//! real binary: help with examples, clap's "did you mean" tips, the exit
//! statuses (3 for an import that holds changes in quarantine), `--quiet`,
//! plurals, the hints for an empty `FIELDSYNC_DB` and a `--db` that is not a
//! database; shell completions and the man page; bundles through pipes
//! (`export -o -`, `import -`).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::*;

const PERSON: &str = "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT);";

/// The subcommands an operator types (push and pull share sync's page).
const SUBCOMMANDS: &[&str] = &[
    "init",
    "track",
    "export",
    "import",
    "status",
    "inspect",
    "conflicts",
    "check",
    "fingerprint",
    "demo",
    "compact",
    "schema",
    "key",
    "trust",
    "revoke",
    "serve",
    "sync",
    "push",
    "pull",
    "peer",
    "journal",
    "completions",
    "man",
];

// ---------------------------------------------------------------------------
// Help and conventions
// ---------------------------------------------------------------------------

#[test]
fn every_subcommand_help_has_one_to_three_examples() -> Res {
    for sub in SUBCOMMANDS {
        for flag in ["--help", "-h"] {
            let out = fieldsync_ok(&[sub, &flag])?;
            let (_, examples) = out
                .stdout
                .split_once("Examples:\n")
                .ok_or_else(|| format!("`{sub} {flag}` has no examples:\n{}", out.stdout))?;
            let lines: Vec<&str> = examples
                .lines()
                .take_while(|l| l.starts_with("  "))
                .collect();
            assert!(
                (1..=3).contains(&lines.len()),
                "`{sub} {flag}`: {} examples:\n{}",
                lines.len(),
                out.stdout
            );
            for l in lines {
                assert!(l.contains("fieldsync "), "`{sub}` example {l:?}");
            }
        }
    }
    Ok(())
}

#[test]
fn the_top_level_help_shows_typical_use_and_the_exit_statuses() -> Res {
    let out = fieldsync_ok(&[&"--help"])?;
    assert!(out.stdout.contains("Typical use"), "{}", out.stdout);
    for needle in [
        "Exit status:",
        "  0  ",
        "  1  ",
        "  2  ",
        "  3  ",
        "quarantine",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} in:\n{}",
            out.stdout
        );
    }
    Ok(())
}

#[test]
fn a_mistyped_subcommand_or_option_gets_clap_s_suggestion() -> Res {
    let out = fieldsync(&[&"stauts"])?;
    assert_error(&out, 2, &["unrecognized subcommand 'stauts'", "'status'"]);
    let out = fieldsync(&[&"export", &"--db", &"x.db", &"--too", &"hq", &"-o", &"b"])?;
    assert_error(&out, 2, &["'--too'", "--to"]);
    Ok(())
}

#[test]
fn an_empty_fieldsync_db_gives_one_hint_naming_the_variable() -> Res {
    let out = Command::new(env!("CARGO_BIN_EXE_fieldsync"))
        .arg("status")
        .env("FIELDSYNC_DB", "")
        .stdin(Stdio::null())
        .output()?;
    let out = Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_error(&out, 2, &["FIELDSYNC_DB", "empty", "--db"]);
    Ok(())
}

#[test]
fn status_of_a_bundle_file_names_it_and_says_what_to_do() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing');")?;
    let bundle = w.bundle("hq-to-f1");
    hq.export_to(&f1.name, &bundle)?;
    let out = fieldsync(&[&"status", &"--db", &bundle])?;
    let shown = bundle.display().to_string();
    assert_error(
        &out,
        1,
        &[&shown, "not an SQLite database", "fieldsync inspect"],
    );
    Ok(())
}

/// A bundle that holds a change of `f1`'s in quarantine at `hq`: a row
/// whose NOT NULL column is NULL there (hq's table is stricter).
fn quarantining_bundle(w: &World) -> Res<(Site, std::path::PathBuf)> {
    let hq = w.site(
        "hq",
        "CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL);",
    )?;
    let f1 = w.site("field-1", PERSON)?;
    f1.sql("INSERT INTO person VALUES ('p1', 'Amal', NULL), ('p2', 'Bo', 'found');")?;
    let bundle = w.bundle("f1-to-hq");
    f1.export_to(&hq.name, &bundle)?;
    Ok((hq, bundle))
}

#[test]
fn an_import_that_holds_changes_in_quarantine_exits_3() -> Res {
    let w = World::new()?;
    let (hq, bundle) = quarantining_bundle(&w)?;
    let out = fieldsync(&[&"import", &"--db", &hq.db, &bundle])?;
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stdout.contains("1 quarantined"), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("1 change could not be applied yet and is kept in quarantine"),
        "{}",
        out.stderr
    );
    // Again: the change is still held, so 3 again; once it is dropped for
    // good, the same bundle imports cleanly.
    let out = fieldsync(&[&"import", &"--db", &hq.db, &bundle])?;
    assert_eq!(out.code, Some(3), "{out:?}");
    fieldsync_ok(&[
        &"conflicts",
        &"--db",
        &hq.db,
        &"--discard-from",
        &"field-1",
        &"--yes",
    ])?;
    let out = fieldsync(&[&"import", &"--db", &hq.db, &bundle])?;
    assert_eq!(out.code, Some(0), "{out:?}");
    Ok(())
}

#[test]
fn quiet_prints_no_report_but_still_the_error() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing');")?;
    let bundle = w.bundle("hq-to-f1");
    let out = fieldsync_ok(&[
        &"export",
        &"-q",
        &"--db",
        &hq.db,
        &"--to",
        &f1.name,
        &"--no-encrypt",
        &"-o",
        &bundle,
    ])?;
    assert_eq!(out.stdout, "", "{out:?}");
    let out = fieldsync_ok(&[&"--quiet", &"import", &"--db", &f1.db, &bundle])?;
    assert_eq!(out.stdout, "", "{out:?}");
    assert_eq!(f1.rows("person")?, hq.rows("person")?);
    let out = fieldsync_ok(&[&"status", &"--db", &f1.db, &"-q"])?;
    assert_eq!(out.stdout, "");
    // --json is what was asked for: printed.
    let out = fieldsync_ok(&[&"status", &"--db", &f1.db, &"-q", &"--json"])?;
    out.json()?;
    let missing = w.path("missing.db");
    let out = fieldsync(&[&"status", &"-q", &"--db", &missing])?;
    assert_error(&out, 1, &["does not exist"]);
    Ok(())
}

#[test]
fn one_change_one_row_and_one_instance_are_singular() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing');")?;
    let bundle = w.bundle("hq-to-f1");
    let out = fieldsync_ok(&[
        &"export",
        &"--db",
        &hq.db,
        &"--to",
        &f1.name,
        &"--no-encrypt",
        &"-o",
        &bundle,
    ])?;
    assert!(out.stdout.contains(": 1 change ("), "{}", out.stdout);
    fieldsync_ok(&[&"import", &"--db", &f1.db, &bundle])?;
    let status = fieldsync_ok(&[&"status", &"--db", &f1.db])?.stdout;
    assert!(status.contains("       1 row "), "{status}");
    let inspect = fieldsync_ok(&[&"inspect", &bundle])?.stdout;
    assert!(inspect.contains("       1 change "), "{inspect}");
    let journal = fieldsync_ok(&[&"journal", &"--db", &f1.db])?.stdout;
    assert!(journal.contains(": 1 change,"), "{journal}");
    let solo = w.site("solo", PERSON)?;
    solo.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing');")?;
    let check = fieldsync_ok(&[&"check", &"--db", &solo.db])?.stdout;
    assert!(
        check.contains("1 tracked table, 1 row, ") && check.contains("1 instance, 0 peers"),
        "{check}"
    );
    for out in [&status, &inspect, &journal, &check] {
        for wrong in ["1 changes", "1 rows", "1 instances", "1 tables", "(s)"] {
            assert!(!out.contains(wrong), "{wrong:?} in {out}");
        }
    }
    Ok(())
}

#[test]
fn no_color_leaves_help_without_escape_sequences() -> Res {
    let out = Command::new(env!("CARGO_BIN_EXE_fieldsync"))
        .arg("--help")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()?;
    assert!(out.status.success());
    assert!(!out.stdout.contains(&0x1b), "an escape sequence in --help");
    Ok(())
}

// ---------------------------------------------------------------------------
// Shipping
// ---------------------------------------------------------------------------

#[test]
fn completions_are_printed_for_each_shell() -> Res {
    for (shell, needle) in [
        ("bash", "_fieldsync()"),
        ("zsh", "#compdef fieldsync"),
        ("fish", "complete -c fieldsync"),
        ("elvish", "fieldsync"),
        ("powershell", "fieldsync"),
    ] {
        let out = fieldsync_ok(&[&"completions", &shell])?;
        assert!(out.stdout.contains(needle), "{shell}: {}", out.stdout);
        assert!(out.stdout.contains("import"), "{shell}: no subcommands");
    }
    let out = fieldsync(&[&"completions", &"cmd.exe"])?;
    assert_error(&out, 2, &["cmd.exe"]);
    Ok(())
}

#[test]
fn completions_into_a_closed_pipe_do_not_panic() -> Res {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldsync"))
        .args(["completions", "bash"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The reader goes away (`| head -1` done reading) before or while the
    // script is written.
    drop(child.stdout.take());
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    Ok(())
}

#[test]
fn the_man_page_is_roff_naming_the_commands_and_exit_statuses() -> Res {
    let out = fieldsync_ok(&[&"man"])?;
    assert!(
        out.stdout.starts_with(".ie") || out.stdout.contains(".TH fieldsync"),
        "{}",
        out.stdout
    );
    for needle in [
        ".TH fieldsync",
        "fieldsync\\-import",
        "Exit status",
        "quarantine",
    ] {
        assert!(out.stdout.contains(needle), "{needle:?} in the man page");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Pipes
// ---------------------------------------------------------------------------

/// `export … -o - | import … -`, through a real pipe between two processes.
fn pipe(
    export: &[&dyn AsRef<std::ffi::OsStr>],
    import: &[&dyn AsRef<std::ffi::OsStr>],
) -> Res<(Out, Out)> {
    let bin = env!("CARGO_BIN_EXE_fieldsync");
    let mut left = Command::new(bin)
        .args(export.iter().map(|a| a.as_ref()))
        .env_remove("FIELDSYNC_DB")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = left.stdout.take().ok_or("no stdout pipe")?;
    let right = Command::new(bin)
        .args(import.iter().map(|a| a.as_ref()))
        .env_remove("FIELDSYNC_DB")
        .stdin(Stdio::from(stdout))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()?;
    let left = left.wait_with_output()?;
    let out = |o: std::process::Output| Out {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    Ok((out(left), out(right)))
}

#[test]
fn export_to_stdout_piped_into_import_from_stdin_applies_the_bundle() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing'), ('p2', 'Bo', 'found');")?;
    let (exported, imported) = pipe(
        &[
            &"export",
            &"--db",
            &hq.db,
            &"--to",
            &f1.name,
            &"--no-encrypt",
            &"-o",
            &"-",
        ],
        &[&"import", &"--db", &f1.db, &"-"],
    )?;
    assert_eq!(exported.code, Some(0), "{exported:?}");
    assert!(
        exported.stderr.contains("wrote stdout"),
        "{}",
        exported.stderr
    );
    assert_eq!(imported.code, Some(0), "{imported:?}");
    assert!(imported.stdout.contains("2 applied"), "{}", imported.stdout);
    assert_eq!(f1.rows("person")?, hq.rows("person")?);
    // Nothing left beside the databases.
    for dir in [hq.db.parent(), f1.db.parent()].into_iter().flatten() {
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".fieldsync-"),
                "{name} left in {}",
                dir.display()
            );
        }
    }
    // Nothing new: the bundle still applies (0 applied), and the JSON
    // report of the export goes to stderr.
    let (exported, imported) = pipe(
        &[
            &"export",
            &"--db",
            &hq.db,
            &"--to",
            &f1.name,
            &"--no-encrypt",
            &"-o",
            &"-",
            &"--json",
        ],
        &[&"import", &"--db", &f1.db, &"-", &"--json"],
    )?;
    assert_eq!(exported.code, Some(0), "{exported:?}");
    let report: serde_json::Value = serde_json::from_str(exported.stderr.trim())?;
    assert_eq!(num(&report, "changes")?, 0, "{report}");
    assert_eq!(num(&imported.ok()?.json()?, "applied")?, 0);
    Ok(())
}

#[test]
fn export_to_stdout_writes_only_the_bundle_there() -> Res {
    let w = World::new()?;
    let (hq, f1, _) = w.three(PERSON)?;
    hq.sql("INSERT INTO person VALUES ('p1', 'Amal', 'missing');")?;
    let out = Command::new(env!("CARGO_BIN_EXE_fieldsync"))
        .args([
            "export",
            "--no-encrypt",
            "--to",
            &f1.name,
            "-o",
            "-",
            "--db",
        ])
        .arg(&hq.db)
        .stdin(Stdio::null())
        .output()?;
    assert!(out.status.success(), "{out:?}");
    let file = w.bundle("from-stdout");
    std::fs::write(&file, &out.stdout)?;
    assert!(!Path::new("-").exists(), "a file named '-' was written");
    let inspected = fieldsync_ok(&[&"inspect", &file, &"--json"])?.json()?;
    assert_eq!(inspected["checksum_ok"], true, "{inspected}");
    assert_eq!(num(&inspected, "changes")?, 1, "{inspected}");
    Ok(())
}

#[test]
fn import_from_stdin_that_is_not_a_bundle_fails_and_leaves_nothing() -> Res {
    let w = World::new()?;
    let (_, f1, _) = w.three(PERSON)?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fieldsync"));
    cmd.args(["import", "-", "--db"]).arg(&f1.db);
    let out = run_with_input(cmd, "not a bundle")?;
    assert_error(&out, 1, &["cannot import"]);
    let dir = f1.db.parent().ok_or("no parent")?;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".fieldsync-"), "{name} left behind");
    }
    let out = fieldsync(&[&"import", &"--db", &f1.db, &"-", &"-"])?;
    assert_error(&out, 1, &["only once"]);
    Ok(())
}

#[test]
fn the_library_imports_from_a_plain_reader() -> Res {
    let dir = tempfile::tempdir()?;
    let mut hq = crate::util::instances::instance(dir.path(), "hq", PERSON)?;
    let mut f1 = crate::util::instances::instance(dir.path(), "field-1", PERSON)?;
    hq.connection()
        .execute("INSERT INTO person VALUES ('p1', 'Amal', 'missing')", [])?;
    let bundle = crate::util::instances::export_to(&mut hq, "field-1")?;
    // A reader that is not Seek: bytes through a chain.
    let reader = std::io::Read::chain(&bundle[..10], &bundle[10..]);
    let report = f1.import_reader(reader)?;
    assert_eq!(report.applied, 1, "{report:?}");
    Ok(())
}
