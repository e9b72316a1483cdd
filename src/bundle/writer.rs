//! Writing a bundle as a stream: header first, then blocks of rows through
//! zstd, then the end record, the checksum and the signature (format
//! version 4: the checksum, the signer's Ed25519 public key, and the
//! signature over both, spec/trust.md). Nothing but the current block
//! (at most [`MAX_BLOCK_ROWS`] rows and about [`BLOCK_VALUE_BYTES`] of
//! values, or one larger row) is held in memory, whatever the bundle's size.

use std::io::{self, Write};

use ed25519_dalek::{Signer as _, SigningKey};

use crate::base::value::Value;
use crate::bundle::format::{
    BLOCK_VALUE_BYTES, BlockWireOut, End, FORMAT_VERSION, Header, MAGIC, MAX_BLOCK_ITEMS,
    MAX_BLOCK_ROWS, MAX_HEADER_BYTES, VersionRecord, ZSTD_LEVEL, signed_message, trailer_len,
};
use crate::error::BundleError;

/// A writer that hashes and counts everything passing through it.
pub(crate) struct HashWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Row records.
    pub rows: u64,
    /// Versions in them.
    pub versions: u64,
    /// Row records per table index.
    pub per_table: Vec<u64>,
    /// Size of the bundle in bytes.
    pub bytes: u64,
}

/// Streams one bundle into `W`, signed by the key it was given.
pub struct BundleWriter<W: Write> {
    body: zstd::stream::write::Encoder<'static, HashWriter<W>>,
    signer: SigningKey,
    prev_seq: u64,
    prev_hlc: u64,
    summary: WriteSummary,
    block: Block,
}

/// Rows gathered for the next block.
#[derive(Default)]
struct Block {
    wire: BlockWireOut,
    /// Per value in row order: (bit, row in block), to lay values out bit
    /// by bit when the block is written.
    places: Vec<(usize, usize)>,
    values: Vec<Value>,
    value_bytes: usize,
}

impl<W: Write> BundleWriter<W> {
    /// Write the preamble and header, and start the body; the bundle will
    /// be signed by `signer` (an instance's own key, `src/catalog/keys.rs`).
    pub fn new(out: W, header: &Header, signer: &SigningKey) -> Result<Self, BundleError> {
        let header_bytes = rmp_serde::to_vec_named(header).map_err(|e| BundleError::Malformed {
            detail: format!("cannot encode the header: {e}"),
        })?;
        if header_bytes.len() > MAX_HEADER_BYTES as usize {
            return Err(BundleError::Io(std::io::Error::other(format!(
                "the bundle header would be {} bytes, over the {} MiB limit (too many instances or tables)",
                header_bytes.len(),
                MAX_HEADER_BYTES >> 20
            ))));
        }
        let mut hw = HashWriter {
            inner: out,
            hasher: blake3::Hasher::new(),
            written: 0,
        };
        hw.write_all(&MAGIC)?;
        hw.write_all(&FORMAT_VERSION.to_le_bytes())?;
        hw.write_all(&(header_bytes.len() as u32).to_le_bytes())?;
        hw.write_all(&header_bytes)?;
        let body = zstd::stream::write::Encoder::new(hw, ZSTD_LEVEL)?;
        Ok(BundleWriter {
            body,
            signer: signer.clone(),
            prev_seq: 0,
            prev_hlc: 0,
            block: Block::default(),
            summary: WriteSummary {
                per_table: vec![0; header.tables.len()],
                ..WriteSummary::default()
            },
        })
    }

    /// Append one row record.
    pub fn write_row(
        &mut self,
        table: u32,
        key: &[Value],
        cl: u64,
        versions: &[VersionRecord],
        values: &[Value],
    ) -> Result<(), BundleError> {
        let items = key.len().max(versions.len()).max(values.len());
        if !self.block.wire.table.is_empty()
            && (self.block.wire.table.len() >= MAX_BLOCK_ROWS
                || self.block.value_bytes >= BLOCK_VALUE_BYTES
                || self.block.wire.key.len() + items > MAX_BLOCK_ITEMS
                || self.block.wire.origin.len() + items > MAX_BLOCK_ITEMS
                || self.block.values.len() + items > MAX_BLOCK_ITEMS)
        {
            self.flush_block()?;
        }
        if key.len() > MAX_BLOCK_ITEMS
            || versions.len() > MAX_BLOCK_ITEMS
            || values.len() > MAX_BLOCK_ITEMS
        {
            return Err(BundleError::Malformed {
                detail: "a row is too large for a bundle".into(),
            });
        }
        let b = &mut self.block;
        let row = b.wire.table.len();
        b.wire.table.push(table);
        b.wire.cl.push(cl);
        b.wire.key.extend(key.iter().cloned());
        b.wire.nver.push(versions.len() as u32);
        let mut bits = crate::base::colset::ColSet::new();
        for v in versions {
            b.wire.origin.push(v.origin);
            b.wire.dseq.push(v.seq.wrapping_sub(self.prev_seq) as i64);
            b.wire.dhlc.push(v.hlc.wrapping_sub(self.prev_hlc) as i64);
            b.wire.cols.push(v.cols.clone());
            bits.union_with(&v.cols);
            self.prev_seq = v.seq;
            self.prev_hlc = v.hlc;
        }
        bits.remove(crate::base::colset::SENTINEL);
        // Values pair with the cells in ascending bit order. A caller giving
        // more values than cells (only a test crafting a bad bundle does)
        // gets them written after the rest, for the reader to refuse.
        let places = bits.iter().chain(std::iter::repeat(usize::MAX));
        for (bit, value) in places.zip(values) {
            b.value_bytes += match value {
                Value::Text(x) | Value::Blob(x) => x.len() + 9,
                _ => 9,
            };
            b.places.push((bit, row));
            b.values.push(value.clone());
        }
        self.summary.rows += 1;
        self.summary.versions += versions.len() as u64;
        if let Some(n) = self.summary.per_table.get_mut(table as usize) {
            *n += 1;
        }
        Ok(())
    }

    /// Write the gathered rows as one block, values laid out bit by bit.
    fn flush_block(&mut self) -> Result<(), BundleError> {
        let mut b = std::mem::take(&mut self.block);
        let mut order: Vec<usize> = (0..b.values.len()).collect();
        order.sort_by_key(|&i| b.places[i]);
        let mut values: Vec<Option<Value>> = b.values.into_iter().map(Some).collect();
        b.wire.values = order
            .into_iter()
            .filter_map(|i| values.get_mut(i).and_then(Option::take))
            .collect();
        rmp_serde::encode::write(&mut self.body, &b.wire).map_err(encode_error)?;
        Ok(())
    }

    /// Write the end record, the checksum and the signature; return the
    /// inner writer.
    pub fn finish(mut self) -> Result<(W, WriteSummary), BundleError> {
        if !self.block.wire.table.is_empty() {
            self.flush_block()?;
        }
        rmp::encode::write_nil(&mut self.body)?;
        let end = End {
            rows: self.summary.rows,
            versions: self.summary.versions,
            per_table: self.summary.per_table.clone(),
        };
        rmp_serde::encode::write(&mut self.body, &end).map_err(encode_error)?;
        let mut hw = self.body.finish()?;
        let hash = hw.hasher.finalize();
        let key = self.signer.verifying_key().to_bytes();
        let signature = self.signer.sign(&signed_message(hash.as_bytes(), &key));
        hw.inner.write_all(hash.as_bytes())?;
        hw.inner.write_all(&key)?;
        hw.inner.write_all(&signature.to_bytes())?;
        hw.inner.flush()?;
        let mut summary = self.summary;
        summary.bytes = hw.written + trailer_len(FORMAT_VERSION);
        Ok((hw.inner, summary))
    }
}

fn encode_error(e: rmp_serde::encode::Error) -> BundleError {
    match e {
        rmp_serde::encode::Error::InvalidValueWrite(
            rmp::encode::ValueWriteError::InvalidDataWrite(io),
        )
        | rmp_serde::encode::Error::InvalidValueWrite(
            rmp::encode::ValueWriteError::InvalidMarkerWrite(io),
        ) => BundleError::Io(io),
        other => BundleError::Malformed {
            detail: format!("cannot encode a record: {other}"),
        },
    }
}
