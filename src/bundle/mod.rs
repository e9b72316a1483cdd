//! Bundles: the files instances exchange. [`format`](mod@format) defines what is in one,
//! [`writer`] streams one out, [`reader`] checks and streams one in.
//! This module only re-exports them and offers [`inspect`], which needs no
//! database.

pub mod format;
pub mod reader;
pub mod writer;

use std::io::{Read, Seek};

/// The value types a bundle's records are made of.
pub use crate::base::{colset::ColSet, hlc::Hlc, seqset::SeqSet};
pub use format::{
    End, Header, LocalTable, OriginSeqs, RefDef, RowRecord, SiteRef, TableDef, VersionRecord,
    ViewDef,
};
pub use reader::{BundleReader, verify};
pub use writer::{BundleWriter, WriteSummary};

use crate::error::BundleError;

/// What `inspect` learns from a bundle file.
#[derive(Debug, Clone)]
pub struct BundleInfo {
    /// The header.
    pub header: Header,
    /// True if the checksum matches and the body decodes.
    pub intact: bool,
    /// Why it is not intact.
    pub problem: Option<String>,
    /// Counts from the body (only when intact).
    pub end: Option<End>,
}

/// Read a bundle's header, check its checksum, and count its records.
/// A bundle whose checksum fails still has its header shown, if readable.
pub fn inspect<R: Read + Seek>(mut r: R) -> Result<BundleInfo, BundleError> {
    match verify(&mut r) {
        Ok(()) => {}
        Err(e @ BundleError::ChecksumMismatch) => {
            let header = reader::read_header_only(&mut r)?;
            return Ok(BundleInfo {
                header,
                intact: false,
                problem: Some(e.to_string()),
                end: None,
            });
        }
        Err(e) => return Err(e),
    }
    let reader = BundleReader::open(r)?;
    let header = reader.header().clone();
    match reader.finish() {
        Ok(end) => Ok(BundleInfo {
            header,
            intact: true,
            problem: None,
            end: Some(end),
        }),
        Err(e) => Ok(BundleInfo {
            header,
            intact: false,
            problem: Some(e.to_string()),
            end: None,
        }),
    }
}
