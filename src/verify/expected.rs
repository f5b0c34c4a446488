//! What the table must hold, built from the mapped records of every commit in commit order.
//!
//! Append: a multiset of rows. Upsert: one state per key, the last write winning. Increment: as
//! upsert, with the increment columns holding the sum over every write of the key. Batches run
//! one at a time, so a later batch's write always came later; within one batch, output
//! partitions commit in parallel, so when two partitions of the same batch write one key, either
//! write may be the last and both are accepted (their increments add up either way).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::str::FromStr;

use rust_decimal::Decimal;

use crate::plan::BatchTime;

use super::cells::{self, Row};

/// The expected rows of an `append` table: how many times each row must appear.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Times the row must appear.
    pub(crate) count: u32,
    /// Times it was found in the table.
    pub(crate) seen: u32,
    /// The partition (index) of its record, for the report.
    pub(crate) partition: usize,
}

/// The expected state of one key of an `upsert` table.
#[derive(Debug)]
pub(crate) struct KeyState {
    /// Acceptable final states: a row, or `None` for deleted. More than one only when partitions
    /// of the same batch wrote the key.
    pub(crate) candidates: Vec<Option<Row>>,
    /// The partition (index) of the last write.
    pub(crate) partition: usize,
    /// The batch of the last write.
    batch_time: BatchTime,
    /// Rows with this key found in the table.
    pub(crate) seen: u32,
    /// Increment mode: the sum of each increment column over every write of the key so far;
    /// `None` once a cell was no number or the sum overflowed.
    totals: Vec<Option<Decimal>>,
}

impl KeyState {
    /// Adds `cells`, the increment columns of a write, to the totals, and sets every candidate's
    /// increment columns (at `positions`) to the new totals.
    fn add(&mut self, positions: &[usize], cells: &[Option<String>]) {
        if positions.is_empty() {
            return;
        }
        self.totals.resize(positions.len(), Some(Decimal::ZERO));
        for (total, cell) in self.totals.iter_mut().zip(cells) {
            let value = cell.as_deref().and_then(|c| Decimal::from_str(c).ok());
            *total = total.zip(value).and_then(|(t, v)| t.checked_add(v));
        }
        for row in self.candidates.iter_mut().flatten() {
            for (&at, total) in positions.iter().zip(&self.totals) {
                if let Some(cell) = row.get_mut(at) {
                    // Text no database renders a number as: an unknown total matches nothing.
                    *cell = Some(total.map_or_else(
                        || "(no exact total)".to_owned(),
                        |t| cells::decimal(&t.to_string()),
                    ));
                }
            }
        }
    }
}

/// The expected content of the table.
#[derive(Debug)]
pub(crate) enum Expected {
    /// `append`: every mapped row.
    Append(HashMap<Row, Slot>),
    /// `upsert` and `increment`: the final state of every key written or deleted. `key` holds
    /// the positions of the key columns in a row.
    Upsert {
        /// Key positions.
        key: Vec<usize>,
        /// Positions of the increment columns (empty for upserts).
        added: Vec<usize>,
        /// State per key (the key's cells, in key order).
        keys: HashMap<Row, KeyState>,
    },
}

impl Expected {
    /// Nothing expected yet. `keyed` for upserts and increments; `key` holds the positions of
    /// the key columns, `added` those of the increment columns.
    pub(crate) fn new(keyed: bool, key: Vec<usize>, added: Vec<usize>) -> Self {
        if keyed {
            Self::Upsert {
                key,
                added,
                keys: HashMap::new(),
            }
        } else {
            Self::Append(HashMap::new())
        }
    }

    /// A row written by a record of partition `partition` in batch `batch_time`.
    pub(crate) fn write(&mut self, partition: usize, batch_time: BatchTime, row: Row) {
        match self {
            Self::Append(rows) => {
                let slot = rows.entry(row).or_insert_with(|| Slot {
                    partition,
                    ..Slot::default()
                });
                slot.count += 1;
            }
            Self::Upsert { key, added, keys } => {
                let key_cells = project(&row, key);
                let increments = project(&row, added);
                set(keys, key_cells, partition, batch_time, Some(row)).add(added, &increments);
            }
        }
    }

    /// A tombstone of the key `key_cells` (in key order); appends ignore tombstones.
    pub(crate) fn delete(&mut self, partition: usize, batch_time: BatchTime, key_cells: Row) {
        if let Self::Upsert { keys, .. } = self {
            set(keys, key_cells, partition, batch_time, None);
        }
    }
}

/// The cells of `row` at `positions`.
pub(crate) fn project(row: &Row, positions: &[usize]) -> Row {
    positions
        .iter()
        .map(|&i| row.get(i).cloned().flatten())
        .collect()
}

/// Records the write (or, `None`, the delete) of `key`; returns the key's state.
fn set(
    keys: &mut HashMap<Row, KeyState>,
    key: Row,
    partition: usize,
    batch_time: BatchTime,
    state: Option<Row>,
) -> &mut KeyState {
    match keys.entry(key) {
        Entry::Occupied(entry) => {
            let current = entry.into_mut();
            if current.batch_time == batch_time && current.partition != partition {
                current.candidates.push(state);
            } else {
                current.candidates = vec![state];
                current.partition = partition;
                current.batch_time = batch_time;
            }
            current
        }
        Entry::Vacant(entry) => entry.insert(KeyState {
            candidates: vec![state],
            partition,
            batch_time,
            seen: 0,
            totals: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Row {
        cells.iter().map(|c| Some((*c).to_owned())).collect()
    }

    #[test]
    fn upserts_keep_the_last_write_and_tombstones_delete() {
        let mut expected = Expected::new(true, vec![0], Vec::new());
        let t = BatchTime::from_millis;
        expected.write(0, t(1), row(&["1", "a"]));
        expected.write(0, t(2), row(&["1", "b"]));
        expected.write(1, t(2), row(&["2", "x"]));
        expected.delete(1, t(3), row(&["2"]));
        // Two partitions of one batch: either may have committed last.
        expected.write(0, t(4), row(&["3", "p"]));
        expected.write(1, t(4), row(&["3", "q"]));
        let Expected::Upsert { keys, .. } = expected else {
            panic!("upsert expected");
        };
        assert_eq!(keys[&row(&["1"])].candidates, [Some(row(&["1", "b"]))]);
        assert_eq!(keys[&row(&["2"])].candidates, [None]);
        assert_eq!(
            keys[&row(&["3"])].candidates,
            [Some(row(&["3", "p"])), Some(row(&["3", "q"]))]
        );
    }

    #[test]
    fn increments_sum_their_columns_and_keep_the_last_of_the_others() {
        // (id, word, count, amount): adds to count and amount.
        let mut expected = Expected::new(true, vec![0], vec![2, 3]);
        let t = BatchTime::from_millis;
        expected.write(0, t(1), row(&["1", "a", "2", "0.25"]));
        expected.write(0, t(1), row(&["1", "b", "3", "1.5"]));
        expected.write(0, t(2), row(&["1", "c", "-1", "0.25"]));
        expected.write(0, t(2), row(&["2", "x", "7", "1"]));
        // Two partitions of one batch: either word may be last, the counts add up anyway.
        expected.write(0, t(3), row(&["3", "p", "1", "0"]));
        expected.write(1, t(3), row(&["3", "q", "2", "0"]));
        expected.write(0, t(3), row(&["4", "z", "9223372036854775807", "0"]));
        expected.write(0, t(4), row(&["4", "z", "9223372036854775807", "0"]));
        let Expected::Upsert { keys, .. } = expected else {
            panic!("upsert expected");
        };
        assert_eq!(
            keys[&row(&["1"])].candidates,
            [Some(row(&["1", "c", "4", "2"]))]
        );
        assert_eq!(
            keys[&row(&["2"])].candidates,
            [Some(row(&["2", "x", "7", "1"]))]
        );
        assert_eq!(
            keys[&row(&["3"])].candidates,
            [
                Some(row(&["3", "p", "3", "0"])),
                Some(row(&["3", "q", "3", "0"]))
            ]
        );
        // Totals beyond a bigint are still exact here; the database refuses them.
        assert_eq!(
            keys[&row(&["4"])].candidates,
            [Some(row(&["4", "z", "18446744073709551614", "0"]))]
        );
    }

    #[test]
    fn appends_count_every_row() {
        let mut expected = Expected::new(false, Vec::new(), Vec::new());
        let t = BatchTime::from_millis(1);
        expected.write(0, t, row(&["1"]));
        expected.write(0, t, row(&["1"]));
        expected.delete(0, t, row(&["1"]));
        let Expected::Append(rows) = expected else {
            panic!("append expected");
        };
        assert_eq!(rows[&row(&["1"])].count, 2);
    }
}
