//! Sets of cells of one row, as bit sets.
//!
//! Bit 0 is the row's *sentinel*: the cell that stands for "this row exists
//! (odd causal length) or was deleted (even)". Bit `i ≥ 1` is the `i`-th
//! non-key column of the tracked table, numbered when the table was tracked
//! and never renumbered. A version of a row holds the cells it still wins;
//! the change log stores the set as a little-endian byte string with trailing
//! zero bytes trimmed, and the capture triggers write it as 64-bit words.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

/// Largest bit a set read from a file may hold (SQLite allows at most 32767
/// columns in a table).
pub const MAX_BIT: usize = 32_767;

/// The sentinel bit: the row's existence.
pub const SENTINEL: usize = 0;

/// A set of cell bits.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ColSet {
    words: SmallVec<[u64; 1]>,
}

impl ColSet {
    /// The empty set.
    pub fn new() -> Self {
        ColSet::default()
    }

    /// `{bits}`.
    pub fn of(bits: &[usize]) -> Self {
        let mut s = ColSet::new();
        for &b in bits {
            s.insert(b);
        }
        s
    }

    /// The sentinel plus cells `1..=cells`: what an insert writes.
    pub fn full_row(cells: usize) -> Self {
        let mut s = ColSet::new();
        for b in 0..=cells {
            s.insert(b);
        }
        s
    }

    /// Cells `1..=cells`, without the sentinel.
    pub fn all_cells(cells: usize) -> Self {
        let mut s = ColSet::full_row(cells);
        s.remove(SENTINEL);
        s
    }

    /// From the 64-bit words a capture trigger wrote (word `i` holds bits
    /// `64i..64i+63`).
    pub fn from_words(words: &[i64]) -> Self {
        let mut s = ColSet {
            words: words.iter().map(|&w| w as u64).collect(),
        };
        s.trim();
        s
    }

    fn trim(&mut self) {
        while self.words.last() == Some(&0) {
            self.words.pop();
        }
    }

    /// Add a bit.
    pub fn insert(&mut self, bit: usize) {
        let (w, b) = (bit / 64, bit % 64);
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << b;
    }

    /// Remove a bit.
    pub fn remove(&mut self, bit: usize) {
        let (w, b) = (bit / 64, bit % 64);
        if let Some(word) = self.words.get_mut(w) {
            *word &= !(1 << b);
            self.trim();
        }
    }

    /// True if the bit is set.
    pub fn contains(&self, bit: usize) -> bool {
        let (w, b) = (bit / 64, bit % 64);
        self.words.get(w).is_some_and(|word| word & (1 << b) != 0)
    }

    /// True if no bit is set.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Number of bits set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The highest bit set, if any.
    pub fn max_bit(&self) -> Option<usize> {
        let last = *self.words.last()?;
        Some((self.words.len() - 1) * 64 + 63 - last.leading_zeros() as usize)
    }

    /// Bits set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut word = w;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let b = word.trailing_zeros() as usize;
                word &= word - 1;
                Some(i * 64 + b)
            })
        })
    }

    /// `self ∪ other`.
    pub fn union(&self, other: &ColSet) -> ColSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    /// `self ← self ∪ other`.
    pub fn union_with(&mut self, other: &ColSet) {
        if self.words.len() < other.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (a, b) in self.words.iter_mut().zip(other.words.iter()) {
            *a |= b;
        }
    }

    /// `self ← self ∖ other`.
    pub fn subtract(&mut self, other: &ColSet) {
        for (a, b) in self.words.iter_mut().zip(other.words.iter()) {
            *a &= !b;
        }
        self.trim();
    }

    /// `self ∩ other`.
    pub fn intersection(&self, other: &ColSet) -> ColSet {
        let mut out = ColSet {
            words: self
                .words
                .iter()
                .zip(other.words.iter())
                .map(|(a, b)| a & b)
                .collect(),
        };
        out.trim();
        out
    }

    /// True if the sets share a bit.
    pub fn intersects(&self, other: &ColSet) -> bool {
        self.words
            .iter()
            .zip(other.words.iter())
            .any(|(a, b)| a & b != 0)
    }

    /// Little-endian bytes, trailing zero bytes trimmed (the stored form).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        while out.last() == Some(&0) {
            out.pop();
        }
        out
    }

    /// From the stored form. Fails if a bit beyond `MAX_BIT` is set.
    pub fn from_bytes(bytes: &[u8]) -> Result<ColSet, String> {
        if bytes.len() > MAX_BIT / 8 + 1 {
            return Err(format!("column set of {} bytes is too large", bytes.len()));
        }
        let mut words = SmallVec::new();
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            words.push(u64::from_le_bytes(word));
        }
        let mut s = ColSet { words };
        s.trim();
        Ok(s)
    }
}

impl fmt::Debug for ColSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for ColSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for ColSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ColSetVisitor;
        impl<'de> Visitor<'de> for ColSetVisitor {
            type Value = ColSet;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a column set as bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ColSet, E> {
                ColSet::from_bytes(v).map_err(E::custom)
            }
        }
        d.deserialize_bytes(ColSetVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let mut a = ColSet::of(&[0, 3, 70]);
        assert_eq!(a.iter().collect::<Vec<_>>(), [0, 3, 70]);
        assert_eq!(a.max_bit(), Some(70));
        assert!(a.contains(70) && !a.contains(71));
        a.subtract(&ColSet::of(&[70]));
        assert_eq!(a.to_bytes(), vec![0b1001]);
        assert_eq!(ColSet::full_row(3), ColSet::of(&[0, 1, 2, 3]));
        assert_eq!(ColSet::all_cells(2), ColSet::of(&[1, 2]));
        assert!(a.intersects(&ColSet::of(&[3])));
        assert_eq!(a.intersection(&ColSet::of(&[3, 4])), ColSet::of(&[3]));
    }

    #[test]
    fn stored_form_round_trips() -> Result<(), String> {
        for s in [
            ColSet::new(),
            ColSet::of(&[0]),
            ColSet::of(&[1, 63, 64, 200]),
        ] {
            assert_eq!(ColSet::from_bytes(&s.to_bytes())?, s);
        }
        assert_eq!(ColSet::from_words(&[-1i64, 0]).len(), 64);
        Ok(())
    }
}
