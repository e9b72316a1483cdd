//! Writing a bundle as a stream: header first, then one row record at a
//! time through zstd, then the end record and the checksum. Nothing but the
//! current record is held in memory, whatever the bundle's size.

use std::io::{self, Write};

use crate::bundle::format::{
    CHECKSUM_LEN, End, FORMAT_VERSION, Header, MAGIC, MAX_HEADER_BYTES, RowWireRef, VersionRecord,
    VersionWireRef, ZSTD_LEVEL,
};
use crate::error::BundleError;
use crate::value::Value;

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

/// Streams one bundle into `W`.
pub struct BundleWriter<W: Write> {
    body: zstd::stream::write::Encoder<'static, HashWriter<W>>,
    prev_seq: u64,
    prev_hlc: u64,
    summary: WriteSummary,
}

impl<W: Write> BundleWriter<W> {
    /// Write the preamble and header, and start the body.
    pub fn new(out: W, header: &Header) -> Result<Self, BundleError> {
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
            prev_seq: 0,
            prev_hlc: 0,
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
        let mut wire = Vec::with_capacity(versions.len());
        for v in versions {
            wire.push(VersionWireRef {
                origin: v.origin,
                dseq: v.seq.wrapping_sub(self.prev_seq) as i64,
                dhlc: v.hlc.wrapping_sub(self.prev_hlc) as i64,
                cols: &v.cols,
            });
            self.prev_seq = v.seq;
            self.prev_hlc = v.hlc;
        }
        let row = RowWireRef {
            table,
            key,
            cl,
            versions: wire,
            values,
        };
        rmp_serde::encode::write(&mut self.body, &row).map_err(encode_error)?;
        self.summary.rows += 1;
        self.summary.versions += versions.len() as u64;
        if let Some(n) = self.summary.per_table.get_mut(table as usize) {
            *n += 1;
        }
        Ok(())
    }

    /// Write the end record and the checksum; return the inner writer.
    pub fn finish(mut self) -> Result<(W, WriteSummary), BundleError> {
        rmp::encode::write_nil(&mut self.body)?;
        let end = End {
            rows: self.summary.rows,
            versions: self.summary.versions,
            per_table: self.summary.per_table.clone(),
        };
        rmp_serde::encode::write(&mut self.body, &end).map_err(encode_error)?;
        let mut hw = self.body.finish()?;
        let hash = hw.hasher.finalize();
        hw.inner.write_all(hash.as_bytes())?;
        hw.inner.flush()?;
        let mut summary = self.summary;
        summary.bytes = hw.written + CHECKSUM_LEN;
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
