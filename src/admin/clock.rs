//! This instance's clock against this computer's wall clock and the clocks
//! seen from other instances (spec/trust.md, "The clock bound"), for
//! `status` and `check`: each says, one line per problem with what to do,
//! when the clock runs ahead of the wall clock by more than the bound, or
//! is behind the newest clock an origin showed by more than the bound.
//! Reads only.

use rusqlite::Connection;
use serde::Serialize;

use crate::base::hlc::{Hlc, now_unix_ms, span};
use crate::catalog::clocks::{SeenClock, max_clock_ahead_ms, seen};
use crate::catalog::site::meta_require;
use crate::error::Error;

/// The clock, as `status` and `check` report it.
#[derive(Debug, Clone, Serialize)]
pub struct ClockStatus {
    /// This instance's clock: the last stamp it issued or took in.
    #[serde(rename = "local_hlc")]
    pub local: String,
    /// The same in unix ms (in JSON, the clock is `local_hlc`).
    #[serde(skip)]
    pub local_ms: i64,
    /// This computer's wall clock when it was read (unix ms).
    #[serde(rename = "wall_at", serialize_with = "crate::json::time")]
    pub wall_ms: i64,
    /// The clock bound (`fieldsync trust --max-clock-ahead`).
    pub max_clock_ahead_ms: i64,
    /// How far this instance's clock is ahead of the wall clock (negative:
    /// behind, the usual case between two changes).
    pub ahead_of_wall_ms: i64,
    /// The newest clock each origin showed in a bundle imported here,
    /// newest first.
    pub seen: Vec<SeenClock>,
    /// Changes held in quarantine "from the future".
    pub held_from_the_future: u64,
    /// Problems, one line each, with what to do.
    pub warnings: Vec<String>,
}

/// Read the clock and say what is wrong with it. `db` is the database as
/// typed after `--db`, for the commands the lines suggest.
pub fn clock_status(conn: &Connection) -> Result<ClockStatus, Error> {
    let wall = now_unix_ms();
    let local = Hlc::from_sql(meta_require(conn, "clock")?);
    let bound = max_clock_ahead_ms(conn)?;
    let seen = seen(conn)?;
    let held: i64 = conn.query_row(
        "SELECT count(*) FROM fieldsync_quarantine WHERE reason = ?1",
        [crate::receive::quarantine::FROM_THE_FUTURE],
        |r| r.get(0),
    )?;
    // A fresh instance's clock is 0: nothing was stamped yet.
    let local_ms = if local == Hlc::default() {
        wall
    } else {
        local.unix_ms()
    };
    let mut warnings = Vec::new();
    if local_ms - wall > bound {
        warnings.push(format!(
            "this instance's clock is at {local}, {} ahead of this computer's clock (the bound is {}): a change \
             from the future was applied (`fieldsync conflicts --apply`), or this computer's date went back; \
             check this computer's date — changes made here are stamped after {local} until it catches up",
            span(local_ms - wall),
            span(bound)
        ));
    }
    if let Some(newest) = seen.first().filter(|c| c.newest_ms - local_ms > bound) {
        let who = &newest.name;
        warnings.push(format!(
            "'{who}' showed a clock of {}, {} ahead of this instance's: check the date on {who} (its changes \
             beyond the bound are held, `fieldsync conflicts` lists them), and this computer's date",
            newest.newest,
            span(newest.newest_ms - local_ms)
        ));
    }
    Ok(ClockStatus {
        local: local.to_string(),
        local_ms,
        wall_ms: wall,
        max_clock_ahead_ms: bound,
        ahead_of_wall_ms: local_ms - wall,
        seen,
        held_from_the_future: held as u64,
        warnings,
    })
}
