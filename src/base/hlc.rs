//! The hybrid logical clock: what time a change is stamped with.
//!
//! Timestamps use hlc-gen's 64-bit layout: the upper 42 bits are milliseconds
//! since 2024-01-01 UTC, the lower 22 bits a counter. Comparing two [`Hlc`]s
//! as integers therefore compares them as times first. The clock never goes
//! backwards: a stamp is always above the last one issued and above every
//! timestamp received from another instance, so an edit made after seeing a
//! remote change always wins over it even when the two machines' clocks
//! disagree.
//!
//! The capture triggers do not run this clock (they cannot call our code);
//! they record the wall time of the write, and [`Clock::stamp`] turns it into
//! an HLC when the change is folded into the log. The clock's state is
//! persisted in the `fieldsync_meta` table by [`crate::catalog::site`].

use std::fmt;

use hlc_gen::source::ManualClock;
use hlc_gen::{HlcGenerator, HlcTimestamp};

/// Milliseconds since the Unix epoch at which the HLC epoch starts
/// (2024-01-01T00:00:00Z, hlc-gen's epoch).
pub const EPOCH_UNIX_MS: i64 = 1_704_067_200_000;

const COUNTER_BITS: u32 = 22;
const COUNTER_MAX: u64 = (1 << COUNTER_BITS) - 1;
const MILLIS_MAX: u64 = (1 << 42) - 1;

/// A hybrid logical clock timestamp in hlc-gen's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc(pub u64);

impl Hlc {
    /// The timestamp for `unix_ms` milliseconds since the Unix epoch with
    /// counter 0, clamped into the representable range.
    pub fn from_unix_ms(unix_ms: i64) -> Hlc {
        let ms = (unix_ms.saturating_sub(EPOCH_UNIX_MS)).clamp(0, MILLIS_MAX as i64) as u64;
        Hlc(ms << COUNTER_BITS)
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(self) -> i64 {
        (self.0 >> COUNTER_BITS) as i64 + EPOCH_UNIX_MS
    }

    /// The logical counter.
    pub fn counter(self) -> u64 {
        self.0 & COUNTER_MAX
    }

    /// The value as SQLite stores it (the same 64 bits, reinterpreted).
    pub fn to_sql(self) -> i64 {
        self.0 as i64
    }

    /// The value back from SQLite.
    pub fn from_sql(v: i64) -> Hlc {
        Hlc(v as u64)
    }
}

impl fmt::Display for Hlc {
    /// `2026-11-26T10:28:25.123Z` followed by `+counter` when it is not 0.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = chrono::DateTime::from_timestamp_millis(self.unix_ms())
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_else(|| format!("{}ms", self.unix_ms()));
        if self.counter() == 0 {
            write!(f, "{time}")
        } else {
            write!(f, "{time}+{}", self.counter())
        }
    }
}

/// Why the clock could not move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    /// The counter would overflow: a timestamp far ahead was seen and the
    /// physical clock never caught up.
    #[error("the clock cannot advance past {0} (its counter is exhausted)")]
    Exhausted(Hlc),
}

/// The instance's clock, restored from its persisted last value.
pub struct Clock {
    generator: HlcGenerator<ManualClock>,
}

impl Clock {
    /// A clock whose next stamp is above `last`.
    pub fn restore(last: Hlc) -> Clock {
        let clock = Clock {
            generator: HlcGenerator::manual(0),
        };
        if last > Hlc::default() {
            // hlc-gen cannot be given a state directly. Starting one
            // millisecond after `last` is always above it, whatever its
            // counter, and costs nothing (the clock may run ahead of the wall).
            clock.jump_past(last);
        }
        clock
    }

    /// Move to `(t.millis + 1, 0)`, which is above `t`.
    fn jump_past(&self, t: Hlc) {
        self.generator.set_current_timestamp(
            t.unix_ms()
                .saturating_add(1)
                .min(EPOCH_UNIX_MS + MILLIS_MAX as i64),
        );
        let _ = self.generator.next_timestamp();
    }

    /// The last timestamp the clock issued or saw.
    pub fn last(&self) -> Hlc {
        Hlc(self.generator.timestamp().as_u64())
    }

    /// Stamp a local change written at wall time `wall_unix_ms`: the result is
    /// that time, unless the clock is already there or beyond, in which case
    /// it is one tick after the last timestamp.
    pub fn stamp(&self, wall_unix_ms: i64) -> Result<Hlc, ClockError> {
        self.generator.set_current_timestamp(
            wall_unix_ms.clamp(EPOCH_UNIX_MS, EPOCH_UNIX_MS + MILLIS_MAX as i64),
        );
        if let Some(ts) = self.generator.next_timestamp() {
            return Ok(Hlc(ts.as_u64()));
        }
        // The counter is at its limit (the clock ran ahead of the wall):
        // take the next millisecond with counter 0.
        let before = self.last();
        self.jump_past(before);
        if self.last() <= before {
            return Err(ClockError::Exhausted(before));
        }
        Ok(self.last())
    }

    /// Move the clock past a timestamp received from another instance.
    pub fn observe(&self, remote: Hlc, now_unix_ms: i64) -> Result<Hlc, ClockError> {
        if remote <= self.last() {
            return Ok(self.last());
        }
        self.generator.set_current_timestamp(
            now_unix_ms.clamp(EPOCH_UNIX_MS, EPOCH_UNIX_MS + MILLIS_MAX as i64),
        );
        let updated = HlcTimestamp::try_from(remote.0)
            .ok()
            .and_then(|incoming| self.generator.update(&incoming).ok());
        if updated.is_none() {
            // The remote counter is at its limit: move to the next
            // millisecond instead, which is still above it.
            self.jump_past(remote);
        }
        if self.last() <= remote {
            return Err(ClockError::Exhausted(remote));
        }
        Ok(self.last())
    }
}

/// The wall clock now, in milliseconds since the Unix epoch.
pub fn now_unix_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A span of milliseconds as people say it: "3650 days", "5 hours",
/// "12 minutes", "40 seconds".
pub fn span(ms: i64) -> String {
    let ms = ms.max(0);
    let (n, unit) = if ms >= 2 * 86_400_000 {
        (ms / 86_400_000, "days")
    } else if ms >= 2 * 3_600_000 {
        (ms / 3_600_000, "hours")
    } else if ms >= 2 * 60_000 {
        (ms / 60_000, "minutes")
    } else {
        (ms / 1000, "seconds")
    };
    format!("{n} {unit}")
}

/// Convert a Julian day number, as SQLite's `julianday('now')` returns it in
/// the capture triggers, to milliseconds since the Unix epoch.
pub fn julian_day_to_unix_ms(jd: f64) -> i64 {
    ((jd - 2_440_587.5) * 86_400_000.0).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_follow_wall_time_and_never_go_back() -> Result<(), ClockError> {
        let clock = Clock::restore(Hlc::default());
        let t0 = EPOCH_UNIX_MS + 1_000_000;
        let a = clock.stamp(t0)?;
        assert_eq!(a, Hlc::from_unix_ms(t0));
        let b = clock.stamp(t0)?;
        assert!(b > a && b.unix_ms() == t0 && b.counter() == 1);
        let c = clock.stamp(t0 - 500)?; // wall clock stepped back
        assert!(c > b);
        let d = clock.stamp(t0 + 10)?;
        assert_eq!(d, Hlc::from_unix_ms(t0 + 10));
        Ok(())
    }

    #[test]
    fn observing_a_future_timestamp_moves_the_clock_past_it() -> Result<(), ClockError> {
        let clock = Clock::restore(Hlc::default());
        let now = EPOCH_UNIX_MS + 5_000;
        let remote = Hlc::from_unix_ms(now + 60_000);
        clock.observe(remote, now)?;
        assert!(clock.last() > remote);
        assert!(clock.stamp(now)? > remote);
        Ok(())
    }

    #[test]
    fn restore_continues_after_the_persisted_value() -> Result<(), ClockError> {
        let last = Hlc::from_unix_ms(EPOCH_UNIX_MS + 99_999);
        let clock = Clock::restore(last);
        assert!(clock.stamp(EPOCH_UNIX_MS + 1)? > last);
        Ok(())
    }

    /// Restoring a clock whose counter was at its limit used to fail
    /// silently and start again from the epoch, so the next local change was
    /// stamped below clocks already seen.
    #[test]
    fn a_clock_with_an_exhausted_counter_restores_above_itself() -> Result<(), ClockError> {
        let last = Hlc((1_000 << COUNTER_BITS) | COUNTER_MAX);
        let clock = Clock::restore(last);
        assert!(clock.last() > last);
        assert!(clock.stamp(EPOCH_UNIX_MS)? > last);
        let seen = Hlc((5_000 << COUNTER_BITS) | (COUNTER_MAX - 1));
        clock.observe(seen, EPOCH_UNIX_MS)?;
        assert!(clock.stamp(EPOCH_UNIX_MS)? > seen);
        Ok(())
    }

    #[test]
    fn wall_times_before_the_epoch_are_clamped() -> Result<(), ClockError> {
        let clock = Clock::restore(Hlc::default());
        let a = clock.stamp(0)?; // a laptop whose clock says 1970
        assert_eq!(a.unix_ms(), EPOCH_UNIX_MS);
        Ok(())
    }

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(span(3650 * 86_400_000 + 5), "3650 days");
        assert_eq!(span(5 * 3_600_000), "5 hours");
        assert_eq!(span(90 * 60_000), "90 minutes");
        assert_eq!(span(40_000), "40 seconds");
        assert_eq!(span(-5), "0 seconds");
    }

    #[test]
    fn julian_day_conversion() {
        assert_eq!(julian_day_to_unix_ms(2_440_587.5), 0);
        // 2024-01-01T00:00:00Z is Julian day 2460310.5.
        assert_eq!(julian_day_to_unix_ms(2_460_310.5), EPOCH_UNIX_MS);
    }
}
