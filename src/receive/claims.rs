//! Claims checked against facts (spec/trust.md, "Claims checked against
//! facts"): a header's `covers`, `seen`, `lacks` and `lost` are claims about
//! change numbers, accepted only as far as the bundle is entitled to them.
//! This file owns the rules; [`check`] reads only and returns the facts to
//! [`record`] in the import's own transaction, so a refused bundle records
//! nothing it claimed (no statement kept, no key pinned).
//!
//! Facts are origin statements ([`crate::catalog::statements`]): what each
//! origin signed it had made. Per origin O of a claim:
//! - O is this instance: nothing beyond its own counter, or beyond the top
//!   of its own statement carried back (a restore from a backup).
//! - a signed bundle, and a statement of O verified (carried or held):
//!   nothing beyond the highest top.
//! - otherwise (unsigned bundles, origins no statement is known of yet):
//!   nothing beyond what this instance already knows of O, the statement it
//!   holds, or the changes of O the body carries (checked once the body is
//!   read: `body` is `None` before); the sender of a signed bundle is
//!   exempt (it could sign a statement of anything of itself).
//!
//! Everywhere: no number above 2^53 (a statement's top included, so the
//! first two rules imply it).

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::Connection;

use crate::base::seqset::SeqSet;
use crate::base::site_id::SiteId;
use crate::bundle::format::{Header, OriginSeqs, SignedStatement};
use crate::bundle::reader::Signer;
use crate::bundle::statement::{self as statements, Statement};
use crate::catalog::peers::{have_all, known_all};
use crate::catalog::session::Session;
use crate::error::{Error, TrustError};
use crate::receive::trust::{NewPin, statement_key};

/// No change number above this is believed: far beyond what any instance
/// numbers, and far below what the merge and the watermarks can hold, so
/// no claim can make a later honest exchange look like a rollback.
pub const MAX_CLAIM: u64 = 1 << 53;

/// What a bundle's statements established, to [`record`] once it is
/// applied.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    /// Verified statements of other origins, to keep.
    keep: Vec<(Statement, SignedStatement)>,
    /// Keys of origins pinned through a relayed statement (first use).
    pins: Vec<NewPin>,
}

/// The highest change number of each origin a body carries.
pub(crate) type BodyTops = HashMap<SiteId, u64>;

/// Check the claims of `header` against the facts (module doc). `body`:
/// `None` before the body is read (every rule but the one that needs the
/// body), then the highest number per origin the body carries (that rule).
pub(crate) fn check(
    conn: &Connection,
    s: &Session,
    header: &Header,
    signer: Signer,
    body: Option<&BodyTops>,
) -> Result<Facts, Error> {
    if header.sender.id == s.local {
        // This instance's own bundle, refused as such by the import.
        return Ok(Facts::default());
    }
    let sender = &header.sender.name;
    let name_of = |site: &SiteId| -> String {
        header
            .origins
            .iter()
            .find(|o| o.id == *site)
            .map(|o| o.name.clone())
            .unwrap_or_else(|| s.sites.name_of(site))
    };
    if header.lost.max() > MAX_CLAIM {
        return Err(TrustError::ClaimTooLarge {
            sender: sender.clone(),
            origin: sender.clone(),
            field: "lost",
            claimed: header.lost.max(),
        }
        .into());
    }
    let mut facts = Facts::default();
    // Verified tops: carried (signed bundles only) and held.
    let mut tops: HashMap<SiteId, u64> = HashMap::new();
    let mut own_top = s.seq;
    if signer.key.is_some() {
        let (ring, anchor) = crate::receive::trust::ring_for(conn, header)?;
        let mut sites = HashSet::new();
        let mut new_keys = HashSet::new();
        for signed in &header.statements {
            let st = statements::open(signed).map_err(|why| TrustError::BadStatement {
                sender: sender.clone(),
                why: why.to_owned(),
            })?;
            if !sites.insert(st.site) {
                return Err(TrustError::BadStatement {
                    sender: sender.clone(),
                    why: format!("names '{}' a second time", st.name),
                }
                .into());
            }
            if st.top > MAX_CLAIM {
                return Err(TrustError::ClaimTooLarge {
                    sender: sender.clone(),
                    origin: st.name.clone(),
                    field: "statements",
                    claimed: st.top,
                }
                .into());
            }
            if let Some(pin) = statement_key(conn, s, (&ring, &anchor), header, signer.key, &st)? {
                if !new_keys.insert(st.key.to_bytes()) {
                    return Err(TrustError::BadStatement {
                        sender: sender.clone(),
                        why: "gives two instances one key".into(),
                    }
                    .into());
                }
                facts.pins.push(pin);
            }
            if st.site == s.local {
                own_top = own_top.max(st.top);
                continue;
            }
            let top = tops.entry(st.site).or_default();
            *top = (*top).max(st.top);
            facts.keep.push((st, signed.clone()));
        }
    }
    let held: HashMap<SiteId, u64> = crate::catalog::statements::held(conn)?
        .into_iter()
        .map(|(site, (top, ..))| (site, top))
        .collect();
    for (site, top) in &held {
        let t = tops.entry(*site).or_default();
        *t = (*t).max(*top);
    }
    // What this instance already believes of each origin, for origins no
    // statement is known of (read only when needed).
    let mut known: Option<BTreeMap<i64, SeqSet>> = None;
    for (field, list) in [
        ("covers", &header.covers),
        ("seen", &header.seen),
        ("lacks", &header.lacks),
    ] {
        for OriginSeqs { origin, seqs } in list {
            if seqs.is_empty() {
                continue;
            }
            let Some(site) = header.origins.get(*origin as usize).map(|o| o.id) else {
                continue;
            };
            let claimed = seqs.max();
            if site == s.local {
                if body.is_some() {
                    // Checked before the body (and the import may have
                    // received some of its own lost numbers since).
                    continue;
                }
                if claimed > own_top {
                    return Err(TrustError::ClaimBeyondOwn {
                        sender: sender.clone(),
                        name: s.name.clone(),
                        field,
                        claimed,
                        seq: own_top,
                    }
                    .into());
                }
                continue;
            }
            if let (Some(_), Some(&top)) = (signer.key, tops.get(&site)) {
                if claimed > top && body.is_none() {
                    return Err(TrustError::ClaimBeyondStatement {
                        sender: sender.clone(),
                        origin: name_of(&site),
                        field,
                        claimed,
                        top,
                    }
                    .into());
                }
                continue;
            }
            if claimed > MAX_CLAIM {
                return Err(TrustError::ClaimTooLarge {
                    sender: sender.clone(),
                    origin: name_of(&site),
                    field,
                    claimed,
                }
                .into());
            }
            let Some(body) = body else {
                continue;
            };
            if signer.key.is_some() && site == header.sender.id {
                // A signed sender may claim what it likes of itself (it
                // could sign a statement saying so); only a statement
                // held bounds it (above).
                continue;
            }
            let known = match &mut known {
                Some(k) => k,
                None => known.insert(believed(conn, s)?),
            };
            let here = s
                .sites
                .idx_of(&site)
                .and_then(|idx| known.get(&idx))
                .map_or(0, SeqSet::max);
            let bound = here
                .max(held.get(&site).copied().unwrap_or(0))
                .max(body.get(&site).copied().unwrap_or(0));
            if claimed > bound {
                return Err(TrustError::ClaimUnfounded {
                    sender: sender.clone(),
                    origin: name_of(&site),
                    field,
                    claimed,
                    bound,
                }
                .into());
            }
        }
    }
    Ok(facts)
}

/// What this instance has and knows to exist of each origin.
fn believed(conn: &Connection, s: &Session) -> Result<BTreeMap<i64, SeqSet>, Error> {
    let mut out = have_all(conn, s)?;
    for (origin, set) in known_all(conn)? {
        out.entry(origin).or_default().union_with(&set);
    }
    Ok(out)
}

/// Keep the verified statements and pin the keys first met through them,
/// in the import's transaction.
pub(crate) fn record(conn: &Connection, facts: &Facts) -> Result<(), Error> {
    for pin in &facts.pins {
        crate::receive::trust::pin(conn, pin)?;
    }
    for (st, signed) in &facts.keep {
        crate::catalog::statements::keep(
            conn,
            &st.site,
            st.top,
            st.hlc,
            &signed.statement.0,
            &signed.signature.0,
        )?;
    }
    Ok(())
}
