//! Sets of sequence numbers, kept as sorted, disjoint, inclusive ranges.
//!
//! Every origin numbers its changes 1, 2, 3, … . What an instance has from an
//! origin, what a peer has acknowledged and what was already sent to it are
//! all sets of those numbers; almost always a single range `1-n`, with a hole
//! where a bundle went missing. This module only does set arithmetic; what the
//! sets mean lives in [`crate::catalog::peers`].

use std::fmt;
use std::str::FromStr;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest sequence number: numbers are stored as SQLite integers.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// Largest number of ranges a set read from a file may hold. A real set has a
/// handful; the bound keeps a hostile bundle from asking for unbounded memory.
pub const MAX_RANGES: usize = 1 << 16;

/// A set of sequence numbers (each ≥ 1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    /// Sorted, disjoint, non-adjacent, inclusive `(first, last)` ranges.
    ranges: Vec<(u64, u64)>,
}

impl SeqSet {
    /// The empty set.
    pub fn new() -> Self {
        SeqSet::default()
    }

    /// The set `first..=last` (empty if `first > last` or `last == 0`).
    pub fn range(first: u64, last: u64) -> Self {
        let mut s = SeqSet::new();
        s.insert_range(first, last);
        s
    }

    /// The set of the given numbers, in any order (numbers outside
    /// `1..=MAX_SEQ` are dropped).
    pub fn from_numbers(mut numbers: Vec<u64>) -> Self {
        numbers.sort_unstable();
        SeqSet::from_sorted(numbers.into_iter().map(|n| (n, n)))
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// True if the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The largest member, or 0 for the empty set.
    pub fn max(&self) -> u64 {
        self.ranges.last().map_or(0, |r| r.1)
    }

    /// How many numbers the set holds.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| b - a + 1).sum()
    }

    /// True if `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        match self.ranges.binary_search_by(|&(a, _)| a.cmp(&seq)) {
            Ok(_) => true,
            Err(0) => false,
            Err(i) => self.ranges[i - 1].1 >= seq,
        }
    }

    /// Add `first..=last` (clamped to `1..=MAX_SEQ`).
    pub fn insert_range(&mut self, first: u64, last: u64) {
        self.union_with(&SeqSet::from_sorted(std::iter::once((first, last))));
    }

    /// Build from ranges sorted by their first number, merging overlapping
    /// and adjacent ones and clamping to `1..=MAX_SEQ`. Linear.
    fn from_sorted(ranges: impl Iterator<Item = (u64, u64)>) -> SeqSet {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (a, b) in ranges {
            let (a, b) = (a.max(1), b.min(MAX_SEQ));
            if a > b {
                continue;
            }
            match out.last_mut() {
                // `b + 1` cannot overflow: every number is at most MAX_SEQ.
                Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        SeqSet { ranges: out }
    }

    /// Add every member of `other`. Linear in the two sizes.
    pub fn union_with(&mut self, other: &SeqSet) {
        if other.ranges.is_empty() {
            return;
        }
        let (mut i, mut j) = (0, 0);
        let (x, y) = (&self.ranges, &other.ranges);
        let merged = std::iter::from_fn(|| {
            let next = match (x.get(i), y.get(j)) {
                (Some(a), Some(b)) if a.0 <= b.0 => {
                    i += 1;
                    *a
                }
                (_, Some(b)) => {
                    j += 1;
                    *b
                }
                (Some(a), None) => {
                    i += 1;
                    *a
                }
                (None, None) => return None,
            };
            Some(next)
        });
        *self = SeqSet::from_sorted(merged);
    }

    /// The members of `self` that are not in `other`. Linear.
    pub fn minus(&self, other: &SeqSet) -> SeqSet {
        let mut out = Vec::new();
        let mut j = 0;
        for &(a, b) in &self.ranges {
            let mut start = a;
            while j < other.ranges.len() && other.ranges[j].1 < start {
                j += 1;
            }
            let mut k = j;
            while start <= b && k < other.ranges.len() && other.ranges[k].0 <= b {
                let (x, y) = other.ranges[k];
                if x > start {
                    out.push((start, x - 1));
                }
                start = start.max(y + 1);
                k += 1;
            }
            if start <= b {
                out.push((start, b));
            }
        }
        SeqSet { ranges: out }
    }

    /// The members of both sets. Linear.
    pub fn intersect(&self, other: &SeqSet) -> SeqSet {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a, b) = self.ranges[i];
            let (x, y) = other.ranges[j];
            let (lo, hi) = (a.max(x), b.min(y));
            if lo <= hi {
                out.push((lo, hi));
            }
            if b < y {
                i += 1;
            } else {
                j += 1;
            }
        }
        SeqSet { ranges: out }
    }

    /// The numbers below [`max`](Self::max) that are missing: the gaps.
    pub fn gaps(&self) -> SeqSet {
        SeqSet::range(1, self.max()).minus(self)
    }

    /// Build from ranges read from a file, rejecting anything that is not
    /// sorted, disjoint and ≥ 1 so later arithmetic can trust the invariant.
    pub fn from_ranges(ranges: Vec<(u64, u64)>) -> Result<Self, String> {
        let mut prev_last: Option<u64> = None;
        for &(a, b) in &ranges {
            if a == 0 || a > b || b > MAX_SEQ {
                return Err(format!("invalid sequence range {a}-{b}"));
            }
            if let Some(p) = prev_last {
                if a <= p.saturating_add(1) {
                    return Err(format!("sequence ranges out of order at {a}-{b}"));
                }
            }
            prev_last = Some(b);
        }
        Ok(SeqSet { ranges })
    }
}

impl fmt::Display for SeqSet {
    /// `1-50,60,62-70`; the empty set is the empty string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(a, b)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for SeqSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a, b),
                None => (part, part),
            };
            let a: u64 = a
                .trim()
                .parse()
                .map_err(|_| format!("bad range {part:?}"))?;
            let b: u64 = b
                .trim()
                .parse()
                .map_err(|_| format!("bad range {part:?}"))?;
            ranges.push((a, b));
        }
        SeqSet::from_ranges(ranges)
    }
}

impl Serialize for SeqSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.ranges.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SeqSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RangesVisitor;
        impl<'de> Visitor<'de> for RangesVisitor {
            type Value = Vec<(u64, u64)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "at most {MAX_RANGES} sequence ranges")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(r) = seq.next_element::<(u64, u64)>()? {
                    if out.len() == MAX_RANGES {
                        return Err(de::Error::invalid_length(out.len() + 1, &self));
                    }
                    out.push(r);
                }
                Ok(out)
            }
        }
        let ranges = d.deserialize_seq(RangesVisitor)?;
        SeqSet::from_ranges(ranges).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn insert_merges_adjacent_and_overlapping() {
        let mut s = SeqSet::new();
        s.insert_range(1, 3);
        s.insert_range(7, 9);
        s.insert_range(4, 4);
        assert_eq!(s.to_string(), "1-4,7-9");
        s.insert_range(5, 6);
        assert_eq!(s.to_string(), "1-9");
        s.insert_range(0, 0);
        assert_eq!(s.to_string(), "1-9");
    }

    #[test]
    fn gaps_and_minus() {
        let s: SeqSet = "1-4,8,10-12".parse().expect("parse");
        assert_eq!(s.gaps().to_string(), "5-7,9");
        let t: SeqSet = "2-3,11".parse().expect("parse");
        assert_eq!(s.minus(&t).to_string(), "1,4,8,10,12");
        assert_eq!(s.intersect(&t).to_string(), "2-3,11");
        assert!(s.contains(8) && !s.contains(9) && s.contains(12) && !s.contains(13));
    }

    #[test]
    fn rejects_unsorted_ranges_from_files() {
        assert!(SeqSet::from_ranges(vec![(5, 6), (1, 2)]).is_err());
        assert!(SeqSet::from_ranges(vec![(0, 2)]).is_err());
        assert!(
            SeqSet::from_ranges(vec![(1, 2), (3, 4)]).is_err(),
            "adjacent must be merged"
        );
    }

    /// A hostile bundle covering `1..=u64::MAX` made `minus` overflow (a
    /// panic in debug builds, a wrapped gap and sequence number in release).
    #[test]
    fn ranges_beyond_the_largest_sequence_number_are_refused() {
        assert!(SeqSet::from_ranges(vec![(1, u64::MAX)]).is_err());
        assert!(SeqSet::from_ranges(vec![(1, MAX_SEQ)]).is_ok());
        let mut s = SeqSet::range(1, u64::MAX);
        assert_eq!(s.max(), MAX_SEQ, "clamped");
        s = s.minus(&SeqSet::range(5, MAX_SEQ));
        assert_eq!(s.to_string(), "1-4");
        assert_eq!(
            SeqSet::range(MAX_SEQ - 1, MAX_SEQ).gaps().max(),
            MAX_SEQ - 2
        );
    }

    fn naive(ranges: &[(u64, u64)]) -> std::collections::BTreeSet<u64> {
        ranges.iter().flat_map(|&(a, b)| a.max(1)..=b).collect()
    }

    proptest! {
        #[test]
        fn set_algebra_matches_a_plain_set(
            a in prop::collection::vec((0u64..60, 0u64..8), 0..8),
            b in prop::collection::vec((0u64..60, 0u64..8), 0..8),
        ) {
            let ra: Vec<_> = a.iter().map(|&(x, l)| (x, x + l)).collect();
            let rb: Vec<_> = b.iter().map(|&(x, l)| (x, x + l)).collect();
            let mut sa = SeqSet::new();
            for &(x, y) in &ra { sa.insert_range(x, y); }
            let mut sb = SeqSet::new();
            for &(x, y) in &rb { sb.insert_range(x, y); }
            let na = naive(&ra);
            let nb = naive(&rb);
            prop_assert_eq!(naive(sa.ranges()), na.clone());
            prop_assert_eq!(naive(sa.minus(&sb).ranges()), na.difference(&nb).copied().collect());
            prop_assert_eq!(naive(sa.intersect(&sb).ranges()), na.intersection(&nb).copied().collect());
            let mut u = sa.clone();
            u.union_with(&sb);
            prop_assert_eq!(naive(u.ranges()), na.union(&nb).copied().collect());
            prop_assert!(SeqSet::from_ranges(u.ranges().to_vec()).is_ok());
            let back: SeqSet = u.to_string().parse().map_err(TestCaseError::fail)?;
            prop_assert_eq!(back, u);
        }
    }
}
