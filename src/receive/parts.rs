//! Parts of split bundles ([`crate::bundle::parts`]) that arrive before
//! their siblings: each is checked on its own and kept beside the database,
//! in `<db>.fieldsync-parts/<bundle's BLAKE3>/<number>.part`, until every
//! part of its bundle is there, in one import or over several. Then the
//! parts are joined into the bundle, which must have the BLAKE3 every part
//! names, and it is imported as any bundle is; its parts are removed once
//! it is applied (spec/bundle.md, "Split bundles").
//!
//! Nothing here touches the database: a refused part leaves it as it was.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::bundle::parts::{PartHeader, copy_piece, is_part, read_part};
use crate::error::{BundleError, Error};

/// A part kept until the rest of its bundle comes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptPart {
    /// The file it came in.
    pub file: PathBuf,
    /// Which bundle it is a part of (the first 12 hex digits of its BLAKE3).
    pub bundle: String,
    /// The bundle's file name when it was cut.
    pub name: String,
    /// Its number.
    pub part: u32,
    /// Parts in all.
    pub parts: u32,
    /// The numbers still missing.
    pub missing: Vec<u32>,
}

impl KeptPart {
    /// `FILE is part 2 of 3 of NAME (bundle ID)`, for messages.
    pub fn described(&self) -> String {
        format!(
            "{} is part {} of {} of {} (bundle {})",
            self.file.display(),
            self.part,
            self.parts,
            self.name,
            self.bundle
        )
    }

    /// `part 3 is` / `parts 1, 3 are`: what is missing, for messages.
    pub fn missing_words(&self) -> String {
        let numbers: Vec<String> = self.missing.iter().map(u32::to_string).collect();
        match numbers.len() {
            1 => format!("part {} is", numbers[0]),
            _ => format!("parts {} are", numbers.join(", ")),
        }
    }
}

/// A bundle whose parts are all here, joined.
#[derive(Debug)]
pub struct JoinedBundle {
    /// Which bundle (the first 12 hex digits of its BLAKE3).
    pub bundle: String,
    /// Its file name when it was cut.
    pub name: String,
    /// Parts it was joined from.
    pub parts: u32,
    /// The joined bundle, to import.
    pub path: PathBuf,
    /// The directory its kept parts are in (removed by
    /// [`ReceivedParts::applied`]), or the temporary directory of a
    /// preview, removed when this is dropped.
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// What [`receive`] made of a list of files.
#[derive(Debug, Default)]
pub struct ReceivedParts {
    /// What to import, in order: the whole bundles given, then the bundles
    /// joined from parts.
    pub files: Vec<PathBuf>,
    /// Parts kept for later.
    pub kept: Vec<KeptPart>,
    /// Bundles joined now.
    pub joined: Vec<JoinedBundle>,
}

/// A bundle joined from its parts, as a report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JoinedParts {
    /// Which bundle (the first 12 hex digits of its BLAKE3).
    pub bundle: String,
    /// Its file name when it was cut.
    pub name: String,
    /// Parts it was joined from.
    pub parts: u32,
}

impl JoinedBundle {
    /// What a report says of it.
    pub fn summary(&self) -> JoinedParts {
        JoinedParts {
            bundle: self.bundle.clone(),
            name: self.name.clone(),
            parts: self.parts,
        }
    }
}

impl ReceivedParts {
    /// Forget the parts of a joined bundle once it has been applied.
    pub fn applied(&self, path: &Path) -> Result<(), Error> {
        if let Some(j) = self.joined.iter().find(|j| j.path == path) {
            if j._temp.is_none() && j.dir.is_dir() {
                std::fs::remove_dir_all(&j.dir)?;
                // The parts directory too, once nothing waits in it.
                if let Some(root) = j.dir.parent() {
                    let _ = std::fs::remove_dir(root);
                }
            }
        }
        Ok(())
    }

    /// The joined bundle at `path`, if it is one.
    pub fn joined_at(&self, path: &Path) -> Option<&JoinedBundle> {
        self.joined.iter().find(|j| j.path == path)
    }
}

/// Where the parts of the database at `db` are kept.
pub fn parts_dir(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".fieldsync-parts");
    db.with_file_name(name)
}

/// One checked part.
struct Part {
    path: PathBuf,
    header: PartHeader,
    start: u64,
    checksum: [u8; 32],
}

fn checked(path: &Path) -> Result<Part, Error> {
    let (header, start) = read_part(path)?;
    let mut f = File::open(path)?;
    let mut checksum = [0u8; 32];
    f.seek(SeekFrom::End(-32))?;
    f.read_exact(&mut checksum)?;
    Ok(Part {
        path: path.to_owned(),
        header,
        start,
        checksum,
    })
}

/// Sort `files` into whole bundles and parts; keep the parts (unless
/// `keep` is false: a preview, which writes nothing, joins in a temporary
/// directory what the files and the parts already kept make whole); join
/// every bundle whose parts are all here.
pub fn receive(db: &Path, files: &[PathBuf], keep: bool) -> Result<ReceivedParts, Error> {
    let mut out = ReceivedParts::default();
    // Parts by bundle, in the order their bundles first appear.
    let mut order: Vec<[u8; 32]> = Vec::new();
    let mut given: BTreeMap<[u8; 32], BTreeMap<u32, Part>> = BTreeMap::new();
    for f in files {
        let part = is_part(f).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot read {}: {e}", f.display()))
        })?;
        if !part {
            out.files.push(f.clone());
            continue;
        }
        let part = checked(f)?;
        let set = part.header.set;
        let parts = given.entry(set).or_default();
        if parts.is_empty() {
            order.push(set);
        }
        if let Some(first) = parts.values().next() {
            let (a, b) = (&first.header, &part.header);
            if (a.count, a.total, &a.name) != (b.count, b.total, &b.name) {
                return Err(BundleError::DamagedPart {
                    file: f.clone(),
                    detail: format!(
                        "it says bundle {} has {} parts and {} bytes, but {} says {} parts and {} bytes",
                        b.set_short(),
                        b.count,
                        b.total,
                        first.path.display(),
                        a.count,
                        a.total
                    ),
                }
                .into());
            }
        }
        match parts.get(&part.header.index) {
            Some(same) if same.checksum == part.checksum => {}
            Some(_) => {
                return Err(BundleError::PartConflicts {
                    file: f.clone(),
                    set: part.header.set_short(),
                    index: part.header.index,
                }
                .into());
            }
            None => {
                parts.insert(part.header.index, part);
            }
        }
    }
    let root = parts_dir(db);
    for set in order {
        let Some(parts) = given.remove(&set) else {
            continue;
        };
        let Some(any) = parts.values().next() else {
            continue;
        };
        let header = any.header.clone();
        let dir = root.join(header.set_hex());
        // What is kept already, checked again (it sat on a disk).
        let mut all: BTreeMap<u32, Part> = BTreeMap::new();
        if dir.is_dir() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "part") {
                    let part = checked(&path)?;
                    if part.header.set == set {
                        all.insert(part.header.index, part);
                    }
                }
            }
        }
        let arrived: Vec<(PathBuf, u32)> = (parts.values())
            .map(|p| (p.path.clone(), p.header.index))
            .collect();
        for (index, part) in parts {
            match all.get(&index) {
                Some(kept) if kept.checksum == part.checksum => {}
                Some(kept)
                    if (kept.header.count, kept.header.total)
                        != (part.header.count, part.header.total) =>
                {
                    return Err(BundleError::DamagedPart {
                        file: part.path.clone(),
                        detail: format!(
                            "it says bundle {} has {} parts, but the parts kept of it say {}",
                            part.header.set_short(),
                            part.header.count,
                            kept.header.count
                        ),
                    }
                    .into());
                }
                Some(_) => {
                    return Err(BundleError::PartConflicts {
                        file: part.path.clone(),
                        set: part.header.set_short(),
                        index,
                    }
                    .into());
                }
                None => {
                    if keep {
                        std::fs::create_dir_all(&dir)?;
                        let target = dir.join(format!("{index}.part"));
                        let tmp = tempfile::Builder::new()
                            .prefix(".incoming-")
                            .tempfile_in(&dir)?;
                        std::io::copy(&mut File::open(&part.path)?, &mut tmp.as_file())?;
                        tmp.as_file().sync_all()?;
                        tmp.persist(&target).map_err(|e| e.error)?;
                    }
                    all.insert(index, part);
                }
            }
        }
        let missing: Vec<u32> = (1..=header.count)
            .filter(|i| !all.contains_key(i))
            .collect();
        if !missing.is_empty() {
            for (file, part) in arrived {
                out.kept.push(KeptPart {
                    file,
                    bundle: header.set_short(),
                    name: header.name.clone(),
                    part,
                    parts: header.count,
                    missing: missing.clone(),
                });
            }
            continue;
        }
        let (temp, joined_dir) = if keep {
            (None, dir.clone())
        } else {
            let t = tempfile::Builder::new()
                .prefix(".fieldsync-join-")
                .tempdir()?;
            let p = t.path().to_owned();
            (Some(t), p)
        };
        std::fs::create_dir_all(&joined_dir)?;
        let path = joined_dir.join("joined.bundle");
        if let Err(e) = join(&all, &header, &path) {
            // One of them is not what it claims (damaged before it was
            // checksummed, or forged): start this bundle over.
            if keep && matches!(e, Error::Bundle(BundleError::PartsDoNotJoin { .. })) {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(e);
        }
        out.files.push(path.clone());
        out.joined.push(JoinedBundle {
            bundle: header.set_short(),
            name: header.name.clone(),
            parts: header.count,
            path,
            dir,
            _temp: temp,
        });
    }
    Ok(out)
}

/// Write the pieces in order to `path`, checking they follow each other,
/// fill the bundle's size and hash to its BLAKE3.
fn join(all: &BTreeMap<u32, Part>, header: &PartHeader, path: &Path) -> Result<(), Error> {
    let refuse = || -> Error {
        BundleError::PartsDoNotJoin {
            set: header.set_short(),
            name: header.name.clone(),
            count: header.count,
        }
        .into()
    };
    let file = File::create(path)?;
    let mut out = HashingWriter {
        inner: BufWriter::with_capacity(1 << 16, file),
        hasher: blake3::Hasher::new(),
        written: 0,
    };
    for part in all.values() {
        if part.header.offset != out.written
            || (part.header.count, part.header.total) != (header.count, header.total)
        {
            return Err(refuse());
        }
        copy_piece(&part.path, &part.header, part.start, &mut out)?;
    }
    out.flush()?;
    if out.written != header.total || out.hasher.finalize() != blake3::Hash::from_bytes(header.set)
    {
        drop(out);
        let _ = std::fs::remove_file(path);
        return Err(refuse());
    }
    out.inner.get_ref().sync_all()?;
    Ok(())
}

/// A writer that hashes and counts what passes through.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
