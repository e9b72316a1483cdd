//! Bundles: the files instances exchange. [`format`](mod@format) defines what is in one,
//! [`writer`] streams one out, [`reader`] checks and streams one in,
//! [`statement`] makes and checks the origin statements a header carries,
//! [`parts`] cuts a bundle into e-mail-sized parts and checks one.
//! This module only re-exports them (with the Ed25519 key types bundles are
//! signed with) and offers [`inspect`], which needs no database.

pub mod envelope;
pub mod format;
pub mod parts;
pub mod reader;
pub mod report;
pub(crate) mod statement;
pub mod writer;

use std::io::{Read, Seek};

/// The value types a bundle's records are made of.
pub use crate::base::{colset::ColSet, hlc::Hlc, seqset::SeqSet};
pub use crate::catalog::keyring::SignedRecord;
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use format::{
    End, Header, LocalTable, OriginSeqs, RefDef, RowRecord, SiteRef, TableDef, VersionRecord,
    ViewDef,
};
pub use reader::{BundleReader, Signer, verify};
pub use writer::{BundleWriter, WriteSummary};

use crate::error::BundleError;

/// What `inspect` learns from a bundle file.
#[derive(Debug, Clone)]
pub struct BundleInfo {
    /// The header.
    pub header: Header,
    /// The file's format version.
    pub version: u16,
    /// Version 4: the public key in the trailer, whether or not the
    /// signature holds. `None` for the unsigned versions 1 to 3.
    pub signer: Option<[u8; 32]>,
    /// Version 4: whether the signature over the checksum holds.
    pub signature_valid: bool,
    /// True if the signature (version 4) and the checksum hold and the
    /// body decodes.
    pub intact: bool,
    /// Why it is not intact.
    pub problem: Option<String>,
    /// Counts from the body (only when intact).
    pub end: Option<End>,
}

/// Read a bundle's header, check its signature (version 4) and checksum,
/// and count its records. A bundle whose signature or checksum fails still
/// has its header shown, if readable. Who the signer is, is not checked:
/// that needs a database (`import`).
pub fn inspect<R: Read + Seek>(mut r: R) -> Result<BundleInfo, BundleError> {
    match verify(&mut r) {
        Ok(_) => {}
        Err(e @ (BundleError::ChecksumMismatch | BundleError::SignatureInvalid)) => {
            let (version, signer) = reader::read_signer_unchecked(&mut r)?;
            let header = reader::read_header_only(&mut r)?;
            return Ok(BundleInfo {
                header,
                version,
                signer,
                signature_valid: !matches!(e, BundleError::SignatureInvalid),
                intact: false,
                problem: Some(e.to_string()),
                end: None,
            });
        }
        Err(e) => return Err(e),
    }
    let reader = BundleReader::open(r)?;
    let header = reader.header().clone();
    let signer = reader.signer();
    let base = BundleInfo {
        header,
        version: signer.version,
        signer: signer.key.map(|k| k.to_bytes()),
        signature_valid: signer.key.is_some(),
        intact: false,
        problem: None,
        end: None,
    };
    match reader.finish() {
        Ok(end) => Ok(BundleInfo {
            intact: true,
            end: Some(end),
            ..base
        }),
        Err(e) => Ok(BundleInfo {
            problem: Some(e.to_string()),
            ..base
        }),
    }
}
