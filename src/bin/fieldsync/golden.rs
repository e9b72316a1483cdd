//! The output of every command, held to what the binary printed before it
//! was split into a file per command (issue 10): a fixed story of three
//! instances is played twice, once in text and once with `--json` after
//! every command, and each command's exit status, stdout and stderr are
//! compared with `golden.txt`, byte for byte once the values that change
//! from run to run (site ids, clock readings, times, sizes, the temporary
//! directory, the demo's uuids) are replaced by placeholders.
//!
//! `golden.txt` was written by the binary of main before the split:
//! `FIELDSYNC_GOLDEN_BIN=/path/to/that/fieldsync FIELDSYNC_GOLDEN_WRITE=1
//! cargo test --bin fieldsync golden` runs the story through that binary
//! instead of in-process and writes what it printed. Output changed on
//! purpose since is written in-process (`FIELDSYNC_GOLDEN_WRITE=1` without
//! `FIELDSYNC_GOLDEN_BIN`), and the diff is read before it is committed:
//! the capture triggers' names (issue 11) and `track`'s `renamed` list,
//! and `export --full --for` with the note an export to a new peer adds
//! (issue 11, item 2); the clock line of `status`, the `clock` of its
//! JSON, `check`'s `warnings`, the journal of refused bundles in
//! `conflicts` and `from_the_future` in import reports (issue 13, item 6);
//! and encryption to the recipient (issue 13: exports
//! say whether they are encrypted; `--no-encrypt` where the peer's key is
//! not known yet; the encrypted steps at the end).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One step of the story.
enum Step {
    /// Run SQL on a database of the story, as the app would:
    /// `hq.db: UPDATE …`.
    Sql(&'static str),
    /// Run `fieldsync` with these arguments, split at spaces (and `--json`
    /// in the JSON pass). `@name` is the file `name` in the story's
    /// directory.
    Run(&'static str),
    /// Wait, so the next edit is later by the clock than the last.
    Pause,
    /// Copy a bundle with one byte of its body flipped.
    Damage(&'static str, &'static str),
}

use Step::{Damage, Pause, Run, Sql};

const SCHEMA: &str = "hq.db:
    CREATE TABLE person(id TEXT PRIMARY KEY, name TEXT, status TEXT);
    CREATE TABLE place(id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT UNIQUE NOT NULL, name TEXT);
    CREATE TABLE visit(id TEXT PRIMARY KEY, person_id TEXT REFERENCES person(id),
                       place_id INTEGER REFERENCES place(id), note TEXT);
    CREATE TABLE shelter(id TEXT PRIMARY KEY, code TEXT UNIQUE, name TEXT);
    CREATE TABLE option(label TEXT, value TEXT);
    CREATE TABLE sessions(token TEXT PRIMARY KEY, user TEXT);
    CREATE TABLE stay(place_id INTEGER REFERENCES place(id), person_id TEXT,
                      PRIMARY KEY(place_id, person_id));
    CREATE TABLE counter(n INT PRIMARY KEY, v TEXT);
    CREATE TABLE odd(rowid TEXT, _rowid_ TEXT, oid TEXT, v TEXT);
    CREATE VIEW people AS SELECT name FROM person;
    INSERT INTO person VALUES ('p1', 'Amal', 'missing'), ('p2', 'Nimali', NULL);
    INSERT INTO place(uuid, name) VALUES ('u-1', 'Galle'), ('u-2', 'Ampara');
    INSERT INTO visit VALUES ('v1', 'p1', 1, 'first'), ('v2', 'p2', 2, NULL);
    INSERT INTO shelter VALUES ('s0', 'S-1', 'School');
    INSERT INTO option VALUES ('status', 'missing'), ('status', 'found');
    INSERT INTO sessions VALUES ('t1', 'admin');
";

const STORY: &[Step] = &[
    Run("init --db @hq.db --name hq"),
    Run("init --db @hq.db --name hq"),
    Run("init --db @hq.db --name other"),
    Sql(SCHEMA),
    Run("track --db @hq.db --all --except sess* --identity uuid"),
    Run("status --db @hq.db"),
    Run("export --db @hq.db --full -o @full.bundle"),
    Run("export --db @hq.db --full --no-encrypt -o @full.bundle"),
    Run("inspect @full.bundle"),
    Run("init --db @f1.db --name field-1 --from @full.bundle"),
    Run("init --db @f1.db --name field-1 --from @full.bundle --expect-key @signer:full.bundle"),
    Run("init --db @f2.db --name field-2 --from @full.bundle --expect-key @signer:full.bundle"),
    Run("trust --db @hq.db field-1 @key:f1.db @recipient:f1.db"),
    Run("trust --db @hq.db field-2 @key:f2.db @recipient:f2.db"),
    Run("trust --db @hq.db --list"),
    Sql("hq.db: INSERT INTO person VALUES ('p3', 'Kasun', 'missing');"),
    Run("export --db @hq.db --to field-1 -o @hq-f1.bundle"),
    Run("export --db @hq.db --to field-1 --no-encrypt -o @hq-f1.bundle"),
    Run("export --db @hq.db --to feild-2 --no-encrypt -o @hq-f2.bundle"),
    Run("import --db @f1.db @hq-f1.bundle"),
    Run("import --db @f1.db @hq-f1.bundle"),
    Run("inspect @hq-f1.bundle"),
    // Concurrent edits of one value (field-2's is later and wins), and two
    // shelters given the same code.
    Sql("f1.db: UPDATE person SET status = 'found' WHERE id = 'p1';"),
    Sql("f1.db: INSERT INTO shelter VALUES ('s1', 'S-9', 'Temple');"),
    Pause,
    Sql("f2.db: UPDATE person SET status = 'safe' WHERE id = 'p1';"),
    Sql("f2.db: INSERT INTO shelter VALUES ('s2', 'S-9', 'Mosque');"),
    Run("export --db @f1.db --to hq -o @f1-w1.bundle"),
    Sql("f1.db: INSERT INTO visit VALUES ('v3', 'p3', 2, 'second');"),
    Run("export --db @f1.db --to hq -o @f1-w2.bundle"),
    Run("export --db @f2.db --to hq -o @f2-w1.bundle"),
    // The second bundle first: a gap.
    Run("import --db @hq.db @f1-w2.bundle"),
    Run("status --db @hq.db"),
    Run("import --db @hq.db @f1-w1.bundle @f2-w1.bundle"),
    Run("conflicts --db @hq.db"),
    Run("status --db @hq.db"),
    Sql("hq.db: UPDATE shelter SET code = 'S-8' WHERE id = 's1';"),
    Run("conflicts --db @hq.db --retry --limit 1"),
    Run("check --db @hq.db"),
    Sql("hq.db: ALTER TABLE person ADD COLUMN age INTEGER; UPDATE person SET age = 30;"),
    Run("track --db @hq.db person visit"),
    Run("compact --db @hq.db"),
    Run("export --db @hq.db --to field-1 --no-encrypt -o @hq-f1-2.bundle"),
    Run("export --db @hq.db --to field-1 --resend --no-encrypt -o @hq-f1-3.bundle"),
    Damage("hq-f1-2.bundle", "damaged.bundle"),
    Run("inspect @damaged.bundle"),
    Run("import --db @f1.db @damaged.bundle @hq-f1-2.bundle"),
    Sql("f1.db: ALTER TABLE person ADD COLUMN age INTEGER;"),
    Run("track --db @f1.db person"),
    Run("import --db @f1.db @hq-f1-2.bundle @hq-f1-3.bundle"),
    Sql("f2.db: DROP TRIGGER fieldsync_insert_1;"),
    Run("check --db @f2.db"),
    // Mistakes.
    Run("export --db @hq.db -o @x.bundle"),
    Run("export --db @hq.db --to hq -o @x.bundle"),
    Run("import --db @hq.db @missing.bundle"),
    Run("status --db @missing.db"),
    Run("track --db @hq.db nosuch"),
    Run("frobnicate"),
    // A full export named for the laptops to be set up from it.
    Run("export --db @hq.db --full --for field-3,field-4 -o @full-for.bundle"),
    Run("export --db @hq.db --full --for field-3,field-4 --no-encrypt -o @full-for.bundle"),
    Run("export --db @hq.db --to field-2 --for field-3 -o @x.bundle"),
    // Encrypted to the recipient (spec/trust.md): HQ knows field-1's key
    // from its bundles; field-2 cannot read what is for field-1, nor can
    // a new laptop be set up from an encrypted file.
    Run("export --db @hq.db --to field-1 -o @enc.bundle"),
    Run("inspect @enc.bundle"),
    Run("inspect --db @f1.db @enc.bundle"),
    Run("import --db @f2.db @enc.bundle"),
    Run("import --db @f1.db @enc.bundle"),
    Run("export --db @hq.db --full --for field-1 -o @enc-full.bundle"),
    Run("init --db @f5.db --name field-5 --from @enc-full.bundle"),
    Run("demo --dir @demo"),
];

/// What one run printed and how it ended.
struct Printed {
    status: u8,
    stdout: String,
    stderr: String,
}

fn run_in_process(args: &[OsString]) -> Printed {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let argv = std::iter::once(OsString::from("fieldsync")).chain(args.iter().cloned());
    let status = super::fieldsync(argv, &mut out, &mut err);
    Printed {
        status,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

fn run_binary(bin: &Path, args: &[OsString]) -> Printed {
    let out = std::process::Command::new(bin)
        .args(args)
        .env_remove("FIELDSYNC_DB")
        .output()
        .expect("the golden binary runs");
    Printed {
        status: out
            .status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(255),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Play the story in `dir`, returning the transcript.
fn play(dir: &Path, json: bool, bin: Option<&Path>) -> String {
    std::fs::create_dir_all(dir).expect("story directory");
    let mut transcript = String::new();
    for step in STORY {
        match step {
            Sql(step) => {
                let (db, sql) = step.split_once(':').expect("`db: SQL`");
                rusqlite::Connection::open(dir.join(db))
                    .and_then(|c| c.execute_batch(sql))
                    .expect("story SQL");
            }
            Pause => std::thread::sleep(std::time::Duration::from_millis(20)),
            Damage(from, to) => {
                let mut bytes = std::fs::read(dir.join(from)).expect("bundle to damage");
                // In the body, before the signed trailer (checksum, key,
                // signature: 128 bytes).
                let at = bytes.len() - 40 - 96;
                bytes[at] ^= 0x55;
                std::fs::write(dir.join(to), bytes).expect("damaged bundle");
            }
            Run(args) => {
                let mut argv: Vec<OsString> = args
                    .split_whitespace()
                    .map(|a| match a.strip_prefix('@') {
                        Some(token) => expand(dir, token),
                        None => OsString::from(a),
                    })
                    .collect();
                if json {
                    argv.push("--json".into());
                }
                let printed = match bin {
                    Some(bin) => run_binary(bin, &argv),
                    None => run_in_process(&argv),
                };
                let shown: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into()).collect();
                let _ = write!(
                    transcript,
                    "$ fieldsync {}\nstatus {}\n--- stdout\n{}--- stderr\n{}\n",
                    shown.join(" "),
                    printed.status,
                    printed.stdout,
                    printed.stderr
                );
            }
        }
    }
    transcript
}

/// `@name`: the file `name` of the story; `@key:DB` and `@recipient:DB`:
/// the public key and recipient of that instance, as its officer would read
/// them out; `@signer:FILE`: the fingerprint of the bundle's signer.
fn expand(dir: &Path, token: &str) -> OsString {
    let key = |db: &str| {
        fieldsync::Instance::open(dir.join(db))
            .and_then(|i| i.key())
            .expect("the story's instance has keys")
    };
    match token.split_once(':') {
        Some(("key", db)) => key(db).public_key.into(),
        Some(("recipient", db)) => key(db).recipient.into(),
        Some(("signer", file)) => {
            let mut f = std::fs::File::open(dir.join(file)).expect("the story's bundle");
            let signer = fieldsync::bundle::verify(&mut f).expect("a signed bundle");
            let key = signer.key.expect("a signed bundle");
            fieldsync::signing_fingerprint(key.as_bytes()).into()
        }
        _ => dir.join(token).into_os_string(),
    }
}

/// The site ids of the story's instances, with their names.
fn sites(dir: &Path) -> Vec<(String, String)> {
    let mut dbs: Vec<PathBuf> = ["hq.db", "f1.db", "f2.db"]
        .iter()
        .map(|d| dir.join(d))
        .collect();
    dbs.extend(["hq.db", "field-1.db", "field-2.db"].map(|d| dir.join("demo").join(d)));
    dbs.iter()
        .filter(|db| db.exists())
        .filter_map(|db| {
            let instance = fieldsync::Instance::open(db).ok()?;
            let name = instance.name().ok()?;
            let id = instance.site_id().ok()?.to_string();
            let key = instance.key().ok()?;
            Some([
                (id, format!("<site {name}>")),
                (key.public_key, format!("<key {name}>")),
                (key.signing_fingerprint, format!("<fingerprint {name}>")),
                (key.fingerprint, format!("<instance fingerprint {name}>")),
                (key.recipient, format!("<recipient {name}>")),
            ])
        })
        .flatten()
        .collect()
}

/// Replace what changes from run to run with placeholders.
fn normalise(text: &str, dir: &Path, sites: &[(String, String)]) -> String {
    let mut s = text.replace(&dir.display().to_string(), "<dir>");
    // Site ids, signing keys and their fingerprints.
    for (value, placeholder) in sites {
        s = s.replace(value, placeholder);
    }
    let patterns = [
        ("####-##-##T##:##:##.###Z+*", "<hlc>"),
        ("####-##-##T##:##:##.###Z", "<hlc>"),
        ("####-##-## ##:## UTC", "<time>"),
        ("####-##-##T##:##:##Z", "<time>"),
        ("size       * bytes", "size       <n> bytes"),
        ("\"bytes\":*", "\"bytes\":<n>"),
        ("\"longest_write_ms\":*", "\"longest_write_ms\":<ms>"),
        ("\"ahead_of_wall_ms\":-*", "\"ahead_of_wall_ms\":<ms>"),
        ("\"ahead_of_wall_ms\":*", "\"ahead_of_wall_ms\":<ms>"),
        (" *.# KiB", " <size>"),
        (" *.# MiB", " <size>"),
        (" * B.", " <size>."),
        ("(* bytes", "(<n> bytes"),
        (", * bytes", ", <n> bytes"),
        ("urn:uuid:%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%", "<uuid>"),
        ("%%%%%%%%…", "<uuid>…"),
    ];
    for (pattern, with) in patterns {
        s = mask(&s, pattern, with);
    }
    s
}

/// Replace every match of `pattern` in `s`: `#` is a digit, `%` a hex
/// digit, `*` one or more digits, anything else itself.
fn mask(s: &str, pattern: &str, with: &str) -> String {
    let (s, p) = (s.as_bytes(), pattern.as_bytes());
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match match_at(&s[i..], p) {
            Some(n) => {
                out.extend_from_slice(with.as_bytes());
                i += n;
            }
            None => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Length of the match of `p` at the start of `s`.
fn match_at(s: &[u8], p: &[u8]) -> Option<usize> {
    let mut i = 0;
    for &c in p {
        match c {
            b'#' if s.get(i)?.is_ascii_digit() => i += 1,
            b'%' if s.get(i)?.is_ascii_hexdigit() => i += 1,
            b'*' => {
                let digits = s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                if digits == 0 {
                    return None;
                }
                i += digits;
            }
            b'#' | b'%' => return None,
            c if s.get(i) == Some(&c) => i += 1,
            _ => return None,
        }
    }
    Some(i)
}

#[test]
fn every_command_prints_what_it_printed_before_the_split() {
    let bin = std::env::var_os("FIELDSYNC_GOLDEN_BIN").map(PathBuf::from);
    let tmp = tempfile::tempdir().expect("temporary directory");
    // The two passes are independent: played side by side.
    let passes = std::thread::scope(|scope| {
        [("text", false), ("json", true)]
            .map(|(pass, json)| {
                let (dir, bin) = (tmp.path().join(pass), bin.as_deref());
                scope.spawn(move || {
                    let played = play(&dir, json, bin);
                    format!("##### {pass}\n{}", normalise(&played, &dir, &sites(&dir)))
                })
            })
            .map(|pass| pass.join().expect("a pass of the story"))
    });
    let transcript = passes.concat();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/fieldsync/golden.txt");
    if std::env::var_os("FIELDSYNC_GOLDEN_WRITE").is_some() {
        std::fs::write(&golden, &transcript).expect("write golden.txt");
        return;
    }
    let expected = std::fs::read_to_string(&golden).expect("golden.txt");
    if transcript != expected {
        let mine = std::env::temp_dir().join("fieldsync-golden.new.txt");
        let _ = std::fs::write(&mine, &transcript);
        panic!(
            "the output differs from golden.txt; see `diff {} {}`",
            golden.display(),
            mine.display()
        );
    }
}
