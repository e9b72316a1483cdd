//! The clock bound and the clocks seen from other instances
//! (spec/trust.md, "The clock bound"): how far ahead of this computer's
//! wall clock a received stamp may be and still be believed
//! (`fieldsync_meta.max_clock_ahead_ms`, 1 hour by default), and the
//! newest clock each origin has shown in a bundle imported here
//! (`fieldsync_clocks`), believed or not, so `status` and `check` can say
//! when this instance's clock is behind what its peers claim.

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::base::hlc::Hlc;
use crate::catalog::site::{meta_get, meta_set};
use crate::error::{Error, TrustError};

/// The `fieldsync_meta` key of the bound, in milliseconds.
pub const MAX_CLOCK_AHEAD_KEY: &str = "max_clock_ahead_ms";

/// The bound when none is set: one hour.
pub const DEFAULT_MAX_CLOCK_AHEAD_MS: i64 = 60 * 60 * 1000;

/// The largest bound that can be set: 30 days. Beyond it the bound no
/// longer protects anything.
pub const MAX_MAX_CLOCK_AHEAD_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// The smallest bound that can be set: one minute (laptops' clocks drift
/// by seconds; a tighter bound would hold honest changes).
pub const MIN_MAX_CLOCK_AHEAD_MS: i64 = 60 * 1000;

/// The bound in force, in milliseconds.
pub fn max_clock_ahead_ms(conn: &Connection) -> Result<i64, Error> {
    Ok(
        meta_get::<i64>(conn, MAX_CLOCK_AHEAD_KEY)?.map_or(DEFAULT_MAX_CLOCK_AHEAD_MS, |ms| {
            ms.clamp(MIN_MAX_CLOCK_AHEAD_MS, MAX_MAX_CLOCK_AHEAD_MS)
        }),
    )
}

/// Set the bound, within [`MIN_MAX_CLOCK_AHEAD_MS`] and
/// [`MAX_MAX_CLOCK_AHEAD_MS`].
pub fn set_max_clock_ahead_ms(conn: &Connection, ms: i64) -> Result<(), Error> {
    if !(MIN_MAX_CLOCK_AHEAD_MS..=MAX_MAX_CLOCK_AHEAD_MS).contains(&ms) {
        return Err(TrustError::ClockBoundOutOfRange { ms }.into());
    }
    meta_set(conn, MAX_CLOCK_AHEAD_KEY, ms)
}

/// The latest stamp believed now: `now_ms` plus the bound. A received
/// change stamped after it is held "from the future" and does not move the
/// clock.
pub fn future_limit(conn: &Connection, now_ms: i64) -> Result<Hlc, Error> {
    let ms = now_ms.saturating_add(max_clock_ahead_ms(conn)?);
    // The last stamp of that millisecond: a counter above 0 is still in it.
    Ok(Hlc(Hlc::from_unix_ms(ms.saturating_add(1))
        .0
        .saturating_sub(1)))
}

/// Record that a bundle imported at `now_ms` showed `hlc` for the origin
/// `site` (its local number): kept if newer than what was seen before.
pub fn record_seen(conn: &Connection, site: i64, hlc: Hlc, now_ms: i64) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO fieldsync_clocks(site, newest, seen_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT(site) DO UPDATE SET newest = excluded.newest, seen_at = excluded.seen_at \
         WHERE excluded.newest > fieldsync_clocks.newest",
    )?
    .execute(params![site, hlc.to_sql(), now_ms])?;
    Ok(())
}

/// The newest clock an origin showed here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeenClock {
    /// The origin's name.
    #[serde(rename = "instance")]
    pub name: String,
    /// Its newest clock, as a time (`2026-11-26T10:28:25.123Z`).
    #[serde(rename = "newest_hlc")]
    pub newest: String,
    /// The same in unix ms (in JSON, the clock is `newest_hlc`).
    #[serde(skip)]
    pub newest_ms: i64,
    /// When the bundle that showed it was imported (unix ms).
    #[serde(rename = "seen_at", serialize_with = "crate::json::time")]
    pub seen_ms: i64,
}

/// Every origin's newest clock, newest first.
pub fn seen(conn: &Connection) -> Result<Vec<SeenClock>, Error> {
    let mut stmt = conn.prepare(
        "SELECT s.name, c.newest, c.seen_at FROM fieldsync_clocks c \
         JOIN fieldsync_sites s ON s.id = c.site ORDER BY c.newest DESC, s.name",
    )?;
    let out = stmt
        .query_map([], |r| {
            let hlc = Hlc::from_sql(r.get(1)?);
            Ok(SeenClock {
                name: r.get(0)?,
                newest: hlc.to_string(),
                newest_ms: hlc.unix_ms(),
                seen_ms: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_the_last_stamp_of_its_millisecond() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE fieldsync_meta(key TEXT PRIMARY KEY, value)")
            .unwrap();
        let now = crate::base::hlc::EPOCH_UNIX_MS + 1_000_000;
        let limit = future_limit(&conn, now).unwrap();
        assert_eq!(limit.unix_ms(), now + DEFAULT_MAX_CLOCK_AHEAD_MS);
        assert!(Hlc(limit.0 + 1).unix_ms() > now + DEFAULT_MAX_CLOCK_AHEAD_MS);
        set_max_clock_ahead_ms(&conn, 2 * 3_600_000).unwrap();
        assert_eq!(
            future_limit(&conn, now).unwrap().unix_ms(),
            now + 2 * 3_600_000
        );
        assert!(set_max_clock_ahead_ms(&conn, 10).is_err());
    }
}
