//! Instances set up and driven through the CLI: a [`World`] is a temporary
//! directory holding [`Site`]s (database files with fieldsync set up) and the
//! bundle files they exchange; plus the relief app's schema and what
//! `conflicts` reports, shared by the scenario and regression tests.

use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::Res;
use super::cli::{Out, assert_error, fieldsync, fieldsync_ok, num, text};
use super::shell::{Fingerprint, count, db_fingerprint, rows, snapshot, sqlite3};

/// One instance: a database file with fieldsync set up in it.
#[derive(Debug, Clone)]
pub struct Site {
    /// Its instance name.
    pub name: String,
    /// Its database file.
    pub db: PathBuf,
}

impl Site {
    /// Run SQL on it through the `sqlite3` shell.
    pub fn sql(&self, sql: &str) -> Res<String> {
        sqlite3(&self.db, sql)
    }

    /// Rows of a table as `quote()` strings, ordered by key.
    pub fn rows(&self, table: &str) -> Res<Vec<Vec<String>>> {
        rows(&self.db, table)
    }

    /// [`snapshot`] of its database.
    pub fn snapshot(&self) -> Res<String> {
        snapshot(&self.db)
    }

    /// [`db_fingerprint`] of its database.
    pub fn fingerprint(&self) -> Res<Fingerprint> {
        db_fingerprint(&self.db)
    }

    /// A count from a query on its database.
    pub fn count(&self, sql: &str) -> Res<u64> {
        count(&self.db, sql)
    }

    /// `export --to PEER -o FILE --json`, which must succeed: encrypted
    /// to PEER (the default) once its key is known here, so every exchange
    /// after the first contact goes encrypted; until then, as an operator
    /// would, with `--no-encrypt` (tests/encrypt.rs covers the refusal).
    pub fn export_to(&self, peer: &str, file: &Path) -> Res<Json> {
        let out = fieldsync(&[
            &"export", &"--db", &self.db, &"--to", &peer, &"-o", &file, &"--json",
        ])?;
        if !out.success() && out.stderr.contains("its key is not known here yet") {
            return self.export_plain_to(peer, file);
        }
        out.ok()?.json()
    }

    /// `export --to PEER --no-encrypt -o FILE --json`, which must succeed.
    pub fn export_plain_to(&self, peer: &str, file: &Path) -> Res<Json> {
        fieldsync_ok(&[
            &"export",
            &"--db",
            &self.db,
            &"--to",
            &peer,
            &"--no-encrypt",
            &"-o",
            &file,
            &"--json",
        ])?
        .json()
    }

    /// `import FILE... --json`, which must succeed: exit 0, or exit 3
    /// when (and only when) it held changes in quarantine.
    pub fn import(&self, files: &[&Path]) -> Res<Json> {
        let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"import", &"--db", &self.db, &"--json"];
        for f in files {
            args.push(f);
        }
        imported(fieldsync(&args)?)
    }

    /// `export --full --no-encrypt -o FILE` (the file new instances are
    /// set up from, which they cannot decrypt), which must succeed.
    pub fn export_full(&self, file: &Path) -> Res<Out> {
        fieldsync_ok(&[
            &"export",
            &"--db",
            &self.db,
            &"--full",
            &"--no-encrypt",
            &"-o",
            &file,
        ])
    }

    /// `import FILE...`, which must be refused: exit 1 with one error line
    /// mentioning every needle ([`assert_error`]), and the database exactly
    /// as before.
    #[track_caller]
    pub fn import_refused(&self, files: &[&Path], needles: &[&str]) -> Res {
        let before = self.fingerprint()?;
        let journaled = self.count("SELECT count(*) FROM fieldsync_refused")?;
        let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"import", &"--db", &self.db];
        for f in files {
            args.push(f);
        }
        let out = fieldsync(&args)?;
        assert_error(&out, 1, needles);
        // Nothing but the journal of refused bundles changed, and it
        // gained the refusal, with the error line.
        assert_eq!(
            self.fingerprint()?.without_journal(),
            before.without_journal(),
            "refusing {files:?} changed {}",
            self.name
        );
        // A file that is not there is no refused bundle.
        if files.iter().any(|f| !f.exists()) {
            assert_eq!(
                self.count("SELECT count(*) FROM fieldsync_refused")?,
                journaled
            );
            return Ok(());
        }
        assert_eq!(
            self.count("SELECT count(*) FROM fieldsync_refused")?,
            journaled + 1,
            "refusing {files:?} was not journaled"
        );
        let message = self.sql("SELECT message FROM fieldsync_refused ORDER BY id DESC LIMIT 1")?;
        assert!(
            out.stderr.contains(message.trim()),
            "the journal says {message:?}, the error {:?}",
            out.stderr
        );
        Ok(())
    }

    /// `status --json`, which must succeed.
    pub fn status(&self) -> Res<Json> {
        fieldsync_ok(&[&"status", &"--db", &self.db, &"--json"])?.json()
    }

    /// `key --json`, which must succeed.
    pub fn key(&self) -> Res<Json> {
        fieldsync_ok(&[&"key", &"--db", &self.db, &"--json"])?.json()
    }

    /// Its site id, from `status --json`.
    pub fn site_id(&self) -> Res<String> {
        Ok(text(&self.status()?, "site")?.to_owned())
    }

    /// The `origins` entry of `status --json` with this name, if any.
    pub fn origin(&self, name: &str) -> Res<Option<Json>> {
        let status = self.status()?;
        let origins = status
            .get("origins")
            .and_then(Json::as_array)
            .ok_or("status has no origins array")?;
        Ok(origins
            .iter()
            .find(|o| o.get("instance").and_then(Json::as_str) == Some(name))
            .cloned())
    }
}

/// The fingerprint of the key that signed a bundle, from `inspect --json`.
pub fn signer_fingerprint(bundle: &Path) -> Res<String> {
    let inspected = fieldsync_ok(&[&"inspect", &bundle, &"--json"])?.json()?;
    Ok(text(&inspected, "signer_fingerprint")?.to_owned())
}

/// `fieldsync trust --db AT NAME KEY RECIPIENT` with `key` the JSON of
/// `fieldsync key --json` of the instance.
pub fn enrol(at: &Site, name: &str, key: &Json) -> Res {
    fieldsync_ok(&[
        &"trust",
        &"--db",
        &at.db,
        &name,
        &text(key, "public_key")?,
        &text(key, "recipient")?,
    ])?;
    Ok(())
}

/// Enrol the instances of two database files at each other, by their
/// names and keys (`key --json`, then `trust` on the other side).
pub fn enrol_dbs(a: &Path, b: &Path) -> Res {
    let ka = fieldsync_ok(&[&"key", &"--db", &a, &"--json"])?.json()?;
    let kb = fieldsync_ok(&[&"key", &"--db", &b, &"--json"])?.json()?;
    for (at, key) in [(a, &kb), (b, &ka)] {
        fieldsync_ok(&[
            &"trust",
            &"--db",
            &at,
            &text(key, "instance")?,
            &text(key, "public_key")?,
            &text(key, "recipient")?,
        ])?;
    }
    Ok(())
}

/// A temporary directory holding instances and bundle files.
pub struct World {
    dir: tempfile::TempDir,
    bundles: Cell<u32>,
    /// Every site made so far: each new one is enrolled at all of them and
    /// enrols them (a deployment whose HQ enrolled everyone).
    sites: RefCell<Vec<Site>>,
}

impl World {
    /// A new empty directory.
    pub fn new() -> Res<World> {
        Ok(World {
            dir: tempfile::tempdir()?,
            bundles: Cell::new(0),
            sites: RefCell::new(Vec::new()),
        })
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A fresh bundle file name, labelled for readable failures.
    pub fn bundle(&self, label: &str) -> PathBuf {
        let n = self.bundles.get() + 1;
        self.bundles.set(n);
        self.path(&format!("{n:03}-{label}.fsb"))
    }

    /// Create `NAME.db` with the app schema, `init` it and `track --all`.
    pub fn site(&self, name: &str, schema: &str) -> Res<Site> {
        let site = self.bare_site(name, schema)?;
        fieldsync_ok(&[&"track", &"--db", &site.db, &"--all"])?;
        Ok(site)
    }

    /// Create `NAME.db` with the app schema and `init` it, tracking nothing.
    /// It is enrolled at every site made before, and enrols them.
    pub fn bare_site(&self, name: &str, schema: &str) -> Res<Site> {
        let site = self.stranger(name, schema)?;
        self.enrol_everywhere(&site)?;
        Ok(site)
    }

    /// [`World::bare_site`], enrolled nowhere and enrolling nobody.
    pub fn stranger(&self, name: &str, schema: &str) -> Res<Site> {
        let db = self.path(&format!("{name}.db"));
        sqlite3(&db, schema)?;
        fieldsync_ok(&[&"init", &"--db", &db, &"--name", &name])?;
        Ok(Site {
            name: name.to_owned(),
            db,
        })
    }

    /// Set up `NAME.db` from a full export with `init --from`, expecting
    /// the key that signed it (as an officer who checked it with HQ), and
    /// enrol it everywhere.
    pub fn site_from(&self, name: &str, full: &Path) -> Res<Site> {
        let db = self.path(&format!("{name}.db"));
        let signer = signer_fingerprint(full)?;
        fieldsync_ok(&[
            &"init",
            &"--db",
            &db,
            &"--name",
            &name,
            &"--from",
            &full,
            &"--expect-key",
            &signer,
        ])?;
        let site = Site {
            name: name.to_owned(),
            db,
        };
        self.enrol_everywhere(&site)?;
        Ok(site)
    }

    /// Enrol `site` at every site made before and each of them at it.
    pub fn enrol_everywhere(&self, site: &Site) -> Res {
        let key = site.key()?;
        // A site made again under a name used before replaces it.
        self.sites.borrow_mut().retain(|s| s.name != site.name);
        for other in self.sites.borrow().iter() {
            let theirs = other.key()?;
            enrol(other, &site.name, &key)?;
            enrol(site, &other.name, &theirs)?;
        }
        self.sites.borrow_mut().push(site.clone());
        Ok(())
    }

    /// The usual three instances with the same schema, every table tracked.
    pub fn three(&self, schema: &str) -> Res<(Site, Site, Site)> {
        Ok((
            self.site("hq", schema)?,
            self.site("field-1", schema)?,
            self.site("field-2", schema)?,
        ))
    }

    /// Export from `from` to `to` and import the bundle at `to`. Returns the
    /// export's and the import's JSON.
    pub fn send(&self, from: &Site, to: &Site) -> Res<(Json, Json)> {
        let file = self.bundle(&format!("{}-to-{}", from.name, to.name));
        let exported = from.export_to(&to.name, &file)?;
        let imported = to.import(&[&file])?;
        Ok((exported, imported))
    }

    /// Both ways, `a` first: afterwards each has the other's changes and
    /// acknowledgements.
    pub fn exchange(&self, a: &Site, b: &Site) -> Res {
        self.send(a, b)?;
        self.send(b, a)?;
        Ok(())
    }

    /// `a` and `b` both export to each other before either imports: the
    /// changes each made since they last met cross in transit.
    pub fn cross(&self, a: &Site, b: &Site) -> Res {
        let to_b = self.bundle(&format!("{}-to-{}", a.name, b.name));
        let to_a = self.bundle(&format!("{}-to-{}", b.name, a.name));
        a.export_to(&b.name, &to_b)?;
        b.export_to(&a.name, &to_a)?;
        a.import(&[&to_a])?;
        b.import(&[&to_b])?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Foreign keys, quarantine and the conflict log (scenario and regression tests)
// ---------------------------------------------------------------------------

/// A location hierarchy and the rows that point into it, as a relief app
/// keeps them; the app runs with foreign keys on.
pub const RELIEF_SCHEMA: &str = "
PRAGMA foreign_keys = ON;
CREATE TABLE location(
  id TEXT PRIMARY KEY,
  parent TEXT REFERENCES location(id),
  level TEXT NOT NULL,
  name TEXT NOT NULL
);
CREATE INDEX location_parent ON location(parent);
CREATE TABLE shelter(
  id TEXT PRIMARY KEY,
  code TEXT NOT NULL UNIQUE,
  location TEXT NOT NULL REFERENCES location(id),
  population INTEGER NOT NULL DEFAULT 0 CHECK (population >= 0)
);";

/// `PRAGMA foreign_key_check` output (empty when every reference holds).
pub fn dangling(site: &Site) -> Res<String> {
    site.sql("PRAGMA foreign_key_check;")
}

/// One list of `conflicts --json`.
fn conflicts(site: &Site, list: &str) -> Res<Vec<Json>> {
    let out = fieldsync_ok(&[&"conflicts", &"--db", &site.db, &"--json"])?.json()?;
    Ok(out
        .get(list)
        .and_then(Json::as_array)
        .cloned()
        .ok_or_else(|| format!("conflicts --json has no {list} list"))?)
}

/// The entries held in quarantine.
pub fn held(site: &Site) -> Res<Vec<Json>> {
    conflicts(site, "quarantined")
}

/// The conflict log: values that lost to a concurrent change.
pub fn overwritten(site: &Site) -> Res<Vec<Json>> {
    conflicts(site, "overwritten")
}

/// An import's JSON, if it succeeded: exit 0 with nothing quarantined, or
/// exit 3 ("applied, but some changes are held in quarantine") with
/// something quarantined.
pub fn imported(out: Out) -> Res<Json> {
    if out.code == Some(3) {
        let json = out.json()?;
        if num(&json, "quarantined")? == 0 {
            return Err(format!("exit 3 but nothing quarantined: {json}").into());
        }
        return Ok(json);
    }
    let json = out.ok()?.json()?;
    if num(&json, "quarantined")? > 0 {
        return Err(format!("exit 0 but changes quarantined: {json}").into());
    }
    Ok(json)
}
