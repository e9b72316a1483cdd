//! Split bundles: one bundle file cut into parts that each fit an e-mail
//! attachment (spec/bundle.md, "Split bundles").
//!
//! A part is its magic (`\x89FSP\r\n\x1a\n`), a length-prefixed MessagePack [`PartHeader`]
//! (which bundle, which piece of it), the piece's bytes, and a BLAKE3
//! checksum of everything before it. A part is checked on its own when it
//! arrives ([`read_part`]); the bundle is rebuilt only once every part is
//! there, and is then checked as any bundle is (its BLAKE3 must be the
//! `set` every part names, then its signature and everything else import
//! checks). Keeping parts until their siblings come is
//! the job of `receive::parts`.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::base::hex;
use crate::error::{BundleError, Error};

/// The first bytes of a part file: like a bundle's and an envelope's
/// (spec/bundle.md), with `P`.
pub const PART_MAGIC: &[u8; 8] = &[0x89, b'F', b'S', b'P', b'\r', b'\n', 0x1a, b'\n'];
/// The context of a part's checksum.
const CHECKSUM_CONTEXT: &str = "fieldsync 2026-11-30 bundle part v1";
/// The most a part header may take.
const MAX_HEADER: u32 = 4096;
/// The most parts a bundle may be cut into.
pub const MAX_PARTS: u32 = 10_000;
/// The smallest `--max-size`: below this, parts would be mostly overhead.
pub const MIN_PART_SIZE: u64 = 64 * 1024;
/// The most a header written here takes (its name cut to
/// [`MAX_NAME`] bytes); a part read may have up to [`MAX_HEADER`].
const MAX_WRITTEN_HEADER: u64 = 512;
/// The longest file name a header carries.
const MAX_NAME: usize = 255;
/// Room kept in each part for its magic, header and checksum.
const OVERHEAD: u64 = 8 + 4 + MAX_WRITTEN_HEADER + 32;

/// What a part says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartHeader {
    /// BLAKE3 of the whole bundle: which bundle this is a part of.
    #[serde(with = "serde_bytes_32")]
    pub set: [u8; 32],
    /// This part's number, from 1.
    pub index: u32,
    /// How many parts the bundle was cut into.
    pub count: u32,
    /// The whole bundle's size in bytes.
    pub total: u64,
    /// Where this part's piece starts in the bundle.
    pub offset: u64,
    /// The piece's length.
    pub length: u64,
    /// The bundle's file name when it was cut, for messages only.
    pub name: String,
}

impl PartHeader {
    /// The bundle this is a part of, as messages and file names show it:
    /// the first 12 hex digits of its BLAKE3.
    pub fn set_short(&self) -> String {
        hex(&self.set[..6])
    }

    /// The whole BLAKE3 in hex.
    pub fn set_hex(&self) -> String {
        hex(&self.set)
    }
}

/// What `inspect --json` shows of a part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartReport {
    /// Always true: this is a part of a split bundle, not a bundle.
    pub part_of_split_bundle: bool,
    /// Which bundle (the first 12 hex digits of its BLAKE3).
    pub bundle: String,
    /// The bundle's file name when it was cut.
    pub name: String,
    /// This part's number, from 1.
    pub part: u32,
    /// Parts in all.
    pub parts: u32,
    /// Where its piece starts in the bundle.
    pub offset: u64,
    /// The piece's length.
    pub bytes: u64,
    /// The whole bundle's size.
    pub bundle_bytes: u64,
}

impl PartHeader {
    /// What `inspect` shows (the part's checksum held to get here).
    pub fn report(&self) -> PartReport {
        PartReport {
            part_of_split_bundle: true,
            bundle: self.set_short(),
            name: self.name.clone(),
            part: self.index,
            parts: self.count,
            offset: self.offset,
            bytes: self.length,
            bundle_bytes: self.total,
        }
    }
}

/// 32 bytes as a MessagePack binary.
mod serde_bytes_32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let v: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        v.into_vec()
            .try_into()
            .map_err(|_| serde::de::Error::custom("a set id is 32 bytes"))
    }
}

/// True if the file starts like a part.
pub fn is_part(path: &Path) -> io::Result<bool> {
    let mut head = [0u8; 8];
    let mut f = File::open(path)?;
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got == head.len() && &head == PART_MAGIC)
}

/// The file names of the parts of `output`: `NAME.part1of3.bundle` for
/// `NAME.bundle` (or `NAME`).
pub fn part_paths(output: &Path, count: u32) -> Vec<PathBuf> {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".bundle").unwrap_or(&name);
    (1..=count)
        .map(|i| output.with_file_name(format!("{stem}.part{i}of{count}.bundle")))
        .collect()
}

/// How many parts a bundle of `total` bytes needs to keep each part file
/// at most `max_size` bytes.
pub fn parts_needed(total: u64, max_size: u64) -> Result<u32, Error> {
    if max_size < MIN_PART_SIZE {
        return Err(BundleError::PartTooSmall {
            max_size,
            min: MIN_PART_SIZE,
        }
        .into());
    }
    let piece = max_size - OVERHEAD;
    let count = total.div_ceil(piece).max(1);
    if count > u64::from(MAX_PARTS) {
        return Err(BundleError::TooManyParts {
            count,
            max: MAX_PARTS,
        }
        .into());
    }
    Ok(count as u32)
}

/// One part file written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartFile {
    /// Its path.
    pub file: PathBuf,
    /// Its size.
    pub bytes: u64,
}

/// Part files already beside `output` under its name
/// (`NAME.partKofN.bundle`, from an earlier export).
pub fn earlier_parts(output: &Path) -> io::Result<Vec<PathBuf>> {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".bundle").unwrap_or(&name).to_owned();
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for e in entries {
        let e = e?;
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = n
            .strip_prefix(stem.as_str())
            .and_then(|r| r.strip_prefix(".part"))
            .and_then(|r| r.strip_suffix(".bundle"))
        else {
            continue;
        };
        let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
        if rest
            .split_once("of")
            .is_some_and(|(k, n)| digits(k) && digits(n))
        {
            found.push(e.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Cut the bundle written at `output` into parts of at most `max_size`
/// bytes if it is larger, and remove it; the parts written (none if it
/// fits). With `replace`, the parts of an earlier bundle under the same
/// name are removed first.
pub fn split_file(output: &Path, max_size: u64, replace: bool) -> Result<Vec<PartFile>, Error> {
    let total = std::fs::metadata(output)?.len();
    if total <= max_size {
        return Ok(Vec::new());
    }
    let count = parts_needed(total, max_size)?;
    let paths = part_paths(output, count);
    if replace {
        for old in earlier_parts(output)? {
            std::fs::remove_file(&old)?;
        }
    }
    let sizes = split(output, max_size, &paths)?;
    std::fs::remove_file(output)?;
    Ok(paths
        .into_iter()
        .zip(sizes)
        .map(|(file, bytes)| PartFile { file, bytes })
        .collect())
}

/// Cut the bundle file `bundle` into parts of at most `max_size` bytes
/// each, written to `paths` (from [`part_paths`], as many as
/// [`parts_needed`] says). Each part is written to a temporary name and
/// renamed, so a part file that exists is whole.
pub fn split(bundle: &Path, max_size: u64, paths: &[PathBuf]) -> Result<Vec<u64>, Error> {
    let total = std::fs::metadata(bundle)?.len();
    let count = parts_needed(total, max_size)?;
    if paths.len() != count as usize {
        return Err(io::Error::other("split: the part names do not match the count").into());
    }
    let piece = max_size - OVERHEAD;
    let set = {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(BufReader::new(File::open(bundle)?))?;
        *hasher.finalize().as_bytes()
    };
    let mut name: String = bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    while name.len() > MAX_NAME {
        name.pop();
    }
    let permissions = std::fs::metadata(bundle)?.permissions();
    let mut src = BufReader::with_capacity(1 << 16, File::open(bundle)?);
    let mut sizes = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let offset = i as u64 * piece;
        let length = piece.min(total - offset);
        let header = PartHeader {
            set,
            index: i as u32 + 1,
            count,
            total,
            offset,
            length,
            name: name.clone(),
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".fieldsync-part-")
            .tempfile_in(dir)?;
        let mut out = BufWriter::with_capacity(1 << 16, tmp.as_file());
        let mut hasher = blake3::Hasher::new_derive_key(CHECKSUM_CONTEXT);
        let head = rmp_serde::to_vec_named(&header)
            .map_err(|e| io::Error::other(format!("a part header: {e}")))?;
        if head.len() as u64 > MAX_WRITTEN_HEADER {
            return Err(io::Error::other("a part header outgrew its room").into());
        }
        for bytes in [
            &PART_MAGIC[..],
            &(head.len() as u32).to_le_bytes(),
            &head[..],
        ] {
            out.write_all(bytes)?;
            hasher.update(bytes);
        }
        let mut left = length;
        let mut buf = vec![0u8; 1 << 16];
        while left > 0 {
            let n = (left.min(buf.len() as u64)) as usize;
            src.read_exact(&mut buf[..n])?;
            out.write_all(&buf[..n])?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        out.write_all(hasher.finalize().as_bytes())?;
        out.flush()?;
        drop(out);
        tmp.as_file().set_permissions(permissions.clone())?;
        tmp.as_file().sync_all()?;
        sizes.push(tmp.as_file().metadata()?.len());
        tmp.persist(path).map_err(|e| e.error)?;
    }
    Ok(sizes)
}

/// Read and check a part file: its header within bounds, its size what
/// the header says, its checksum. Returns the header and the offset in the
/// file where the piece starts.
pub fn read_part(path: &Path) -> Result<(PartHeader, u64), Error> {
    let damaged = |detail: String| -> Error {
        BundleError::DamagedPart {
            file: path.to_owned(),
            detail,
        }
        .into()
    };
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    let mut magic = [0u8; 8];
    let mut len = [0u8; 4];
    f.read_exact(&mut magic)
        .and_then(|_| f.read_exact(&mut len))
        .map_err(|_| damaged("it is shorter than a part's header".into()))?;
    if &magic != PART_MAGIC {
        return Err(damaged("it does not start as a part does".into()));
    }
    let head_len = u32::from_le_bytes(len);
    if head_len > MAX_HEADER {
        return Err(damaged(format!(
            "its header claims {head_len} bytes (at most {MAX_HEADER})"
        )));
    }
    let mut head = vec![0u8; head_len as usize];
    f.read_exact(&mut head)
        .map_err(|_| damaged("it ends inside its header".into()))?;
    let header: PartHeader =
        rmp_serde::from_slice(&head).map_err(|e| damaged(format!("its header: {e}")))?;
    let start = 8 + 4 + u64::from(head_len);
    let bad = |what: &str| damaged(format!("its header says {what}"));
    if header.count == 0 || header.count > MAX_PARTS {
        return Err(bad(&format!("{} parts (1 to {MAX_PARTS})", header.count)));
    }
    if header.index == 0 || header.index > header.count {
        return Err(bad(&format!(
            "it is part {} of {}",
            header.index, header.count
        )));
    }
    if header
        .offset
        .checked_add(header.length)
        .is_none_or(|end| end > header.total)
        || (header.length == 0 && header.total > 0)
    {
        return Err(bad(&format!(
            "bytes {}+{} of a {}-byte bundle",
            header.offset, header.length, header.total
        )));
    }
    if header.name.len() > MAX_NAME || header.name.chars().any(char::is_control) {
        return Err(bad("a file name that is too long or not printable"));
    }
    if start
        .checked_add(header.length)
        .and_then(|n| n.checked_add(32))
        != Some(size)
    {
        return Err(damaged(format!(
            "it is {size} bytes, not the {} its header says: it was cut short or added to",
            start + header.length + 32
        )));
    }
    let mut hasher = blake3::Hasher::new_derive_key(CHECKSUM_CONTEXT);
    f.seek(SeekFrom::Start(0))?;
    let mut body = BufReader::with_capacity(1 << 16, (&mut f).take(size - 32));
    hasher.update_reader(&mut body)?;
    let mut sum = [0u8; 32];
    f.seek(SeekFrom::Start(size - 32))?;
    f.read_exact(&mut sum)?;
    if hasher.finalize() != blake3::Hash::from_bytes(sum) {
        return Err(damaged(
            "its checksum does not match: it was damaged on the way; ask for this part again"
                .into(),
        ));
    }
    Ok((header, start))
}

/// Copy the piece of a checked part (`start` from [`read_part`]) to `out`.
pub fn copy_piece(
    path: &Path,
    header: &PartHeader,
    start: u64,
    out: &mut impl Write,
) -> Result<(), Error> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let copied = io::copy(&mut BufReader::new(f).take(header.length), out)?;
    if copied != header.length {
        return Err(BundleError::DamagedPart {
            file: path.to_owned(),
            detail: "it changed while it was read".into(),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_cut_into_parts_and_read_back_is_the_same_bytes() -> Result<(), Error> {
        let dir = tempfile::tempdir()?;
        let bundle = dir.path().join("b.bundle");
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&bundle, &bytes)?;
        let count = parts_needed(bytes.len() as u64, MIN_PART_SIZE)?;
        assert_eq!(count, 5);
        let paths = part_paths(&bundle, count);
        assert!(paths[0].ends_with("b.part1of5.bundle"));
        let sizes = split(&bundle, MIN_PART_SIZE, &paths)?;
        assert!(sizes.iter().all(|&s| s <= MIN_PART_SIZE));
        let mut joined = Vec::new();
        for p in paths.iter().rev().collect::<Vec<_>>().into_iter().rev() {
            assert!(is_part(p)?);
            let (h, start) = read_part(p)?;
            assert_eq!(h.count, 5);
            assert_eq!(h.offset, joined.len() as u64);
            copy_piece(p, &h, start, &mut joined)?;
        }
        assert_eq!(joined, bytes);
        // One byte changed anywhere: refused.
        let mut damaged = std::fs::read(&paths[2])?;
        let mid = damaged.len() / 2;
        damaged[mid] ^= 1;
        std::fs::write(&paths[2], &damaged)?;
        assert!(matches!(
            read_part(&paths[2]),
            Err(Error::Bundle(BundleError::DamagedPart { .. }))
        ));
        Ok(())
    }

    #[test]
    fn a_max_size_below_64_kib_is_refused() {
        assert!(matches!(
            parts_needed(1000, 1000),
            Err(Error::Bundle(BundleError::PartTooSmall { .. }))
        ));
    }
}
