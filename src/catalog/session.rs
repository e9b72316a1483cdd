//! The state one write transaction works with: who we are, the clock, the
//! last sequence number, the known sites and the tracked tables.
//!
//! It is loaded after the write lock is taken and saved before commit, so two
//! fieldsync processes on one database never hand out the same number or
//! stamp behind each other.

use rusqlite::Connection;

use crate::base::hlc::{Clock, Hlc};
use crate::base::seqset::SeqSet;
use crate::base::site_id::SiteId;
use crate::catalog::site::{Sites, meta_get, meta_require, meta_set};
use crate::catalog::tracked::Catalog;
use crate::error::Error;

/// Engine state for the length of one transaction.
pub struct Session {
    /// This instance.
    pub local: SiteId,
    /// Its local number in `fieldsync_sites`.
    pub local_idx: i64,
    /// Its name.
    pub name: String,
    /// Known sites.
    pub sites: Sites,
    /// Tracked tables.
    pub catalog: Catalog,
    /// The clock, restored from `fieldsync_meta`.
    pub clock: Clock,
    /// The last sequence number this instance handed out.
    pub seq: u64,
    /// Numbers of this instance's own changes it knows it no longer has
    /// (it was restored from a backup and peers had newer ones).
    pub lost: SeqSet,
}

impl Session {
    /// Load from the engine tables.
    pub fn load(conn: &Connection) -> Result<Session, Error> {
        let id: Vec<u8> = meta_require(conn, "site_id")?;
        let local = SiteId::from_slice(&id).ok_or_else(|| crate::error::SiteError::Damaged {
            detail: "the stored site id is malformed".into(),
        })?;
        let name: String = meta_require(conn, "name")?;
        let clock: i64 = meta_require(conn, "clock")?;
        let seq: i64 = meta_require(conn, "seq")?;
        let sites = Sites::load(conn)?;
        let local_idx = sites
            .idx_of(&local)
            .ok_or_else(|| crate::error::SiteError::Damaged {
                detail: "this instance is missing from fieldsync_sites".into(),
            })?;
        Ok(Session {
            local,
            local_idx,
            name,
            sites,
            catalog: Catalog::load(conn)?,
            clock: Clock::restore(Hlc::from_sql(clock)),
            seq: seq as u64,
            lost: crate::catalog::store::parse_set(
                meta_get::<String>(conn, "lost")?.unwrap_or_default(),
            )?,
        })
    }

    /// The next sequence number for a local change.
    pub fn next_seq(&mut self) -> Result<u64, Error> {
        next_seq(&mut self.seq)
    }

    /// Persist the clock and the sequence counter.
    pub fn save(&self, conn: &Connection) -> Result<(), Error> {
        meta_set(conn, "clock", self.clock.last().to_sql())?;
        meta_set(conn, "seq", self.seq as i64)?;
        meta_set(conn, "lost", self.lost.to_string())?;
        Ok(())
    }
}

/// Advance a sequence counter (a function of the field alone, so a caller
/// holding other parts of the session can number a change).
pub fn next_seq(seq: &mut u64) -> Result<u64, Error> {
    if *seq >= crate::base::seqset::MAX_SEQ {
        return Err(crate::error::SiteError::Damaged {
            detail: "this instance has used up its change numbers".into(),
        }
        .into());
    }
    *seq += 1;
    Ok(*seq)
}
