//! Files a transfer is kept in while it is under way, so that a cut
//! transfer resumes instead of starting again (spec/network.md, "Resuming
//! a large transfer"): beside the database, in `<db>.fieldsync-spool/`
//! (the server's uploads being received and bundles being sent) and
//! `<db>.fieldsync-transfer/` (the client's). The directories are made
//! readable by their owner only; a file older than [`KEEP`] is removed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long a partial or unclaimed transfer is kept.
pub const KEEP: Duration = Duration::from_secs(60 * 60);

/// A directory of transfer files beside a database.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// The spool `suffix` beside `db` (made if missing, owner-only).
    pub fn beside(db: &Path, suffix: &str) -> io::Result<Spool> {
        let name = db
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "fieldsync".into());
        let dir = db.with_file_name(format!("{name}.{suffix}"));
        fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(Spool { dir })
    }

    /// The file `name` in it (`name` is made by this module's callers from
    /// hex and fixed words only, never from a request's text as is).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Remove files older than [`KEEP`]; the number removed.
    pub fn sweep(&self) -> usize {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > KEEP);
            if old && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Files whose names start with `prefix`, oldest first.
    pub fn starting_with(&self, prefix: &str) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<(SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| {
                let at = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                (at, e.path())
            })
            .collect();
        found.sort();
        found.into_iter().map(|(_, p)| p).collect()
    }

    /// Remove the directory if it is empty.
    pub fn tidy(&self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// True if `text` is a transfer id: 64 lowercase hex digits (a BLAKE3
/// hash) or 32 (a random id).
pub fn is_id(text: &str) -> bool {
    matches!(text.len(), 32 | 64) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// BLAKE3 of a file, from byte `from` to its end.
pub fn hash_file(path: &Path, from: u64) -> io::Result<blake3::Hash> {
    use std::io::{Seek, SeekFrom};
    let mut f = fs::File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut h = blake3::Hasher::new();
    io::copy(&mut f, &mut h)?;
    Ok(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_of_two_lengths_only() {
        assert!(is_id(&"a".repeat(64)));
        assert!(is_id(&"0".repeat(32)));
        assert!(!is_id(&"A".repeat(64)));
        assert!(!is_id("../../etc/passwd"));
        assert!(!is_id(&"a".repeat(63)));
    }
}
