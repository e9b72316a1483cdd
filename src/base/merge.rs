//! The merge rules, as pure functions on one row's state. Storage and SQL
//! live elsewhere (`src/local/log.rs`, `src/receive/apply.rs` and `write.rs`); this is the part that
//! spec/merge.md describes and the property tests check against a model.
//!
//! A row's state is its *causal length* `cl` (0: never seen, odd: exists,
//! even: deleted) and the versions that still win at least one of its cells
//! at that causal length. Every cell (the sentinel and each non-key column)
//! is held by exactly one version, the greatest by `(hlc, site id)`.
//!
//! Merging is a join on a lattice: the higher causal length wins outright;
//! at equal causal length, each cell goes to the greater `(hlc, site)`.
//! That makes it commutative, associative and idempotent, so bundles can be
//! applied in any order, any number of times.

/// The cell sets and clock the rules are stated in.
pub use crate::base::colset::{ColSet, SENTINEL};
pub use crate::base::hlc::Hlc;
use crate::base::site_id::SiteId;

/// One change of a row by one origin, narrowed to the cells it still wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The instance that made the change.
    pub site: SiteId,
    /// Its sequence number at that instance.
    pub seq: u64,
    /// When it was made.
    pub hlc: Hlc,
    /// The cells it holds.
    pub cols: ColSet,
}

impl Version {
    /// The order in which versions win: later clock first, then larger site
    /// id, then larger sequence number. A site never issues one clock value
    /// twice, so the last key only orders changes a damaged or hostile bundle
    /// gave equal clocks, keeping the merge a join even then.
    pub fn rank(&self) -> (Hlc, SiteId, u64) {
        (self.hlc, self.site, self.seq)
    }

    /// True if both are the same change (same origin and number).
    pub fn same_change(&self, other: &Version) -> bool {
        self.site == other.site && self.seq == other.seq
    }
}

/// What one row looks like to the merge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowState {
    /// Causal length: 0 never seen, odd live, even deleted.
    pub cl: u64,
    /// Versions at `cl`, each holding a non-empty, disjoint set of cells.
    pub versions: Vec<Version>,
}

/// How an incoming record compared with what was here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It changed the row.
    Applied,
    /// Everything in it was already here.
    Known,
    /// It lost: the row here is newer.
    Older,
}

/// What the merge decided for the app's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowAction {
    /// Leave the app's row alone.
    None,
    /// Delete the row.
    Delete,
    /// Write these cells (bits ≥ 1) from the record, creating the row if it
    /// does not exist.
    Write(ColSet),
}

/// The result of merging one record into one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Applied, known or older.
    pub verdict: Verdict,
    /// What to do to the app table.
    pub action: RowAction,
}

/// A record whose change number is already here with a different clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceReused {
    /// The origin.
    pub site: SiteId,
    /// The reused number.
    pub seq: u64,
}

impl RowState {
    /// True if the row exists.
    pub fn is_live(&self) -> bool {
        self.cl % 2 == 1
    }

    /// The version holding `bit`, if any.
    pub fn holder(&self, bit: usize) -> Option<&Version> {
        self.versions.iter().find(|v| v.cols.contains(bit))
    }

    /// Give `v`'s cells to `v`, taking them from every other version and
    /// dropping versions left with nothing. This is the only way cells change
    /// hands, so the log never keeps a superseded version.
    fn take_cells(&mut self, v: Version) {
        for other in &mut self.versions {
            other.cols.subtract(&v.cols);
        }
        self.versions.retain(|o| !o.cols.is_empty());
        if let Some(existing) = self.versions.iter_mut().find(|o| o.same_change(&v)) {
            existing.cols.union_with(&v.cols);
        } else {
            self.versions.push(v);
        }
    }

    /// Start a new causal length: every old version is gone.
    fn new_era(&mut self, cl: u64) {
        self.cl = cl;
        self.versions.clear();
    }

    /// A local INSERT of a row with `cells` non-key columns. Inserting a row
    /// that exists (INSERT OR REPLACE) overwrites every cell at the same
    /// causal length; inserting over a tombstone starts the next one.
    pub fn local_insert(&mut self, site: SiteId, seq: u64, hlc: Hlc, cells: usize) {
        if !self.is_live() {
            self.new_era(self.cl + 1);
        }
        self.take_cells(Version {
            site,
            seq,
            hlc,
            cols: ColSet::full_row(cells),
        });
    }

    /// A local UPDATE of the cells in `changed` (bits ≥ 1). An update of a row
    /// the log does not know as live is recorded as an insert, since the app
    /// row exists.
    pub fn local_update(
        &mut self,
        site: SiteId,
        seq: u64,
        hlc: Hlc,
        changed: &ColSet,
        cells: usize,
    ) {
        if !self.is_live() {
            self.local_insert(site, seq, hlc, cells);
            return;
        }
        let mut cols = changed.intersection(&ColSet::all_cells(cells));
        cols.remove(SENTINEL);
        if cols.is_empty() {
            return;
        }
        self.take_cells(Version {
            site,
            seq,
            hlc,
            cols,
        });
    }

    /// A local DELETE. Deleting a row the log has never seen still records a
    /// tombstone, so an older insert arriving later cannot bring it back.
    pub fn local_delete(&mut self, site: SiteId, seq: u64, hlc: Hlc) {
        if self.cl > 0 && !self.is_live() {
            return;
        }
        let next = if self.cl == 0 { 2 } else { self.cl + 1 };
        self.new_era(next);
        self.versions.push(Version {
            site,
            seq,
            hlc,
            cols: ColSet::of(&[SENTINEL]),
        });
    }

    /// Merge a record received from another instance: causal length `cl` and
    /// versions with disjoint cell sets (checked by the bundle reader).
    pub fn merge(&mut self, cl: u64, incoming: &[Version]) -> Result<Outcome, SequenceReused> {
        for v in incoming {
            if let Some(here) = self.versions.iter().find(|h| h.same_change(v)) {
                if here.hlc != v.hlc {
                    return Err(SequenceReused {
                        site: v.site,
                        seq: v.seq,
                    });
                }
            }
        }
        if cl < self.cl || cl == 0 {
            return Ok(Outcome {
                verdict: Verdict::Older,
                action: RowAction::None,
            });
        }
        let new_era = cl > self.cl;
        if new_era {
            self.new_era(cl);
        }
        let mut won = ColSet::new();
        let mut lost = false;
        for v in incoming {
            let mut wins = ColSet::new();
            for bit in v.cols.iter() {
                match self.holder(bit) {
                    None => wins.insert(bit),
                    Some(h) if h.same_change(v) => {}
                    Some(h) if v.rank() > h.rank() => wins.insert(bit),
                    Some(_) => lost = true,
                }
            }
            if !wins.is_empty() {
                won.union_with(&wins);
                self.take_cells(Version {
                    site: v.site,
                    seq: v.seq,
                    hlc: v.hlc,
                    cols: wins,
                });
            }
        }
        let verdict = if new_era || !won.is_empty() {
            Verdict::Applied
        } else if lost {
            Verdict::Older
        } else {
            Verdict::Known
        };
        let action = if !self.is_live() {
            if new_era {
                RowAction::Delete
            } else {
                RowAction::None
            }
        } else if new_era || !won.is_empty() {
            let mut cells = won;
            cells.remove(SENTINEL);
            RowAction::Write(cells)
        } else {
            RowAction::None
        };
        Ok(Outcome { verdict, action })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(n: u8) -> SiteId {
        SiteId::from_bytes([n; 16])
    }

    fn v(s: u8, seq: u64, t: u64, bits: &[usize]) -> Version {
        Version {
            site: site(s),
            seq,
            hlc: Hlc(t),
            cols: ColSet::of(bits),
        }
    }

    #[test]
    fn later_edit_of_the_same_cell_wins_and_other_cells_survive() -> Result<(), SequenceReused> {
        let mut row = RowState::default();
        row.local_insert(site(1), 1, Hlc(10), 3);
        // Two officers edit different cells of the same record.
        let out = row.merge(1, &[v(2, 1, 20, &[1])])?;
        assert_eq!(out.action, RowAction::Write(ColSet::of(&[1])));
        row.merge(1, &[v(3, 1, 15, &[2])])?;
        assert_eq!(row.holder(1).map(|h| h.site), Some(site(2)));
        assert_eq!(row.holder(2).map(|h| h.site), Some(site(3)));
        assert_eq!(row.holder(3).map(|h| h.site), Some(site(1)));
        // An older edit of cell 1 loses.
        let out = row.merge(1, &[v(4, 1, 12, &[1])])?;
        assert_eq!(out.verdict, Verdict::Older);
        Ok(())
    }

    #[test]
    fn equal_clocks_are_broken_by_site_id() -> Result<(), SequenceReused> {
        let mut a = RowState::default();
        a.merge(1, &[v(1, 1, 10, &[0, 1])])?;
        a.merge(1, &[v(9, 1, 10, &[0, 1])])?;
        let mut b = RowState::default();
        b.merge(1, &[v(9, 1, 10, &[0, 1])])?;
        b.merge(1, &[v(1, 1, 10, &[0, 1])])?;
        assert_eq!(a, b);
        assert_eq!(a.holder(1).map(|h| h.site), Some(site(9)));
        Ok(())
    }

    #[test]
    fn delete_beats_a_concurrent_update_and_reinsert_beats_delete() -> Result<(), SequenceReused> {
        let mut row = RowState::default();
        row.merge(1, &[v(1, 1, 10, &[0, 1, 2])])?;
        // Site 2 deleted (cl 2) at t=11; site 3 updated at t=50 without seeing it.
        let del = row.merge(2, &[v(2, 1, 11, &[0])])?;
        assert_eq!(del.action, RowAction::Delete);
        let upd = row.merge(1, &[v(3, 1, 50, &[1])])?;
        assert_eq!(upd.verdict, Verdict::Older);
        // Site 2 inserts the key again (cl 3): it comes back with new values.
        let re = row.merge(3, &[v(2, 2, 60, &[0, 1, 2])])?;
        assert_eq!(re.action, RowAction::Write(ColSet::of(&[1, 2])));
        assert!(row.is_live());
        Ok(())
    }

    #[test]
    fn merging_twice_is_known() -> Result<(), SequenceReused> {
        let mut row = RowState::default();
        let rec = [v(1, 1, 10, &[0, 1]), v(2, 4, 12, &[2])];
        assert_eq!(row.merge(1, &rec)?.verdict, Verdict::Applied);
        let before = row.clone();
        assert_eq!(
            row.merge(1, &rec)?,
            Outcome {
                verdict: Verdict::Known,
                action: RowAction::None
            }
        );
        assert_eq!(row, before);
        Ok(())
    }

    #[test]
    fn a_reused_sequence_number_is_reported() {
        let mut row = RowState::default();
        row.local_insert(site(1), 1, Hlc(10), 1);
        assert_eq!(
            row.merge(1, &[v(1, 1, 11, &[1])]),
            Err(SequenceReused {
                site: site(1),
                seq: 1
            })
        );
    }

    #[test]
    fn local_updates_fold_superseded_versions() {
        let mut row = RowState::default();
        row.local_insert(site(1), 1, Hlc(1), 2);
        for i in 0..1000 {
            row.local_update(site(1), 2 + i, Hlc(2 + i), &ColSet::of(&[1]), 2);
        }
        assert_eq!(row.versions.len(), 2, "{row:?}");
    }
}
