//! Identities for rows created here: when a change that created a row of a
//! table keyed by local numbers or by nothing is stamped, the row gets its
//! identity on every instance and is bound in the map (spec/merge.md, "Row
//! identity"). A row identified by origin is known by this site and the
//! change's number; a row identified by content by its values as every
//! instance sees them (references to rows keyed by local numbers taken as
//! those rows' identities, [`crate::catalog::refs`]) and its copy number.

use rusqlite::{Connection, OptionalExtension, params};

use crate::base::site_id::SiteId;
use crate::base::value::{Value, encode_key};
use crate::catalog::identity::{bind, content_gid, content_sig, local_of, origin_gid, row_values};
use crate::catalog::layout::Identity;
use crate::catalog::refs::{RefFk, TAG_IDENTITY, encode};
use crate::catalog::tracked::TrackedTable;
use crate::error::{Error, TrackError};

/// A new identity for the local row `local` of a mapped table, created by
/// change `seq` of this instance, bound in the map. `None` if the row is
/// no longer there (it was inserted and deleted before it was stamped; its
/// delete finds nothing either, so nothing is replicated). `refs` are the
/// table's followed references ([`crate::catalog::refs`]): a content identity is
/// computed from the row as every instance sees it, with a reference to a
/// row keyed by a local number taken as that row's identity, not the local
/// number (which means another row elsewhere). `presence` is the table's
/// [`presence_sql`](crate::catalog::identity::presence_sql), built once by
/// a caller that assigns many. A row identified by origin is only looked
/// for, not read: its values matter only for a content signature.
pub(crate) fn assign(
    conn: &Connection,
    table: &TrackedTable,
    local: &Value,
    site: SiteId,
    seq: u64,
    refs: &[RefFk],
    presence: &str,
) -> Result<Option<Vec<u8>>, Error> {
    if table.identity != Identity::Content {
        if !conn.prepare_cached(presence)?.exists([local])? {
            return Ok(None);
        }
        let gid = encode_key(&[origin_gid(site, seq)]);
        bind(conn, table.id, &gid, local, None)?;
        return Ok(Some(gid));
    }
    let Some(values) = row_values(conn, table, local)? else {
        return Ok(None);
    };
    let sig = content_sig(&values);
    let mut global = values;
    for (bit, tagged) in encode(conn, refs, &global)? {
        if matches!(&tagged, Value::Blob(b) if b.first() == Some(&TAG_IDENTITY)) {
            global[bit - 1] = tagged;
        }
    }
    let birth = content_sig(&global);
    // Copy 0, or one past the highest copy mapped: an index range, not a
    // probe per copy (10,000 identical rows).
    let first = encode_key(&[content_gid(&birth, 0)]);
    let copy = if local_of(conn, table.id, &first)?.is_none() {
        0
    } else {
        let last = encode_key(&[content_gid(&birth, u32::MAX)]);
        let highest: Option<Vec<u8>> = conn
            .prepare_cached(
                "SELECT gid FROM fieldsync_ids WHERE tbl = ?1 AND gid BETWEEN ?2 AND ?3 \
                 ORDER BY gid DESC LIMIT 1",
            )?
            .query_row(params![table.id, first, last], |r| r.get(0))
            .optional()?;
        let highest = highest
            .and_then(|g| g.get(g.len().saturating_sub(4)..).map(<[u8]>::to_vec))
            .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
            .map_or(0, u32::from_be_bytes);
        highest
            .checked_add(1)
            .ok_or_else(|| TrackError::TooManyCopies {
                table: table.name.clone(),
            })?
    };
    let gid = encode_key(&[content_gid(&birth, copy)]);
    bind(conn, table.id, &gid, local, Some(&sig))?;
    Ok(Some(gid))
}
