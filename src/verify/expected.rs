//! What the table must hold, built from the mapped records of every commit in commit order.
//!
//! Append: a multiset of rows. Upsert: one state per key, the last write winning. Batches run
//! one at a time, so a later batch's write always came later; within one batch, output
//! partitions commit in parallel, so when two partitions of the same batch write one key, either
//! write may be the last and both are accepted.

use std::collections::HashMap;

use crate::plan::BatchTime;

use super::cells::Row;

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
}

/// The expected content of the table.
#[derive(Debug)]
pub(crate) enum Expected {
    /// `append`: every mapped row.
    Append(HashMap<Row, Slot>),
    /// `upsert`: the final state of every key written or deleted. `key` holds the positions of
    /// the key columns in a row.
    Upsert {
        /// Key positions.
        key: Vec<usize>,
        /// State per key (the key's cells, in key order).
        keys: HashMap<Row, KeyState>,
    },
}

impl Expected {
    /// Nothing expected yet. `key` holds the positions of the key columns.
    pub(crate) fn new(upsert: bool, key: Vec<usize>) -> Self {
        if upsert {
            Self::Upsert {
                key,
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
            Self::Upsert { key, keys } => {
                let key_cells = project(&row, key);
                set(keys, key_cells, partition, batch_time, Some(row));
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

fn set(
    keys: &mut HashMap<Row, KeyState>,
    key: Row,
    partition: usize,
    batch_time: BatchTime,
    state: Option<Row>,
) {
    match keys.get_mut(&key) {
        Some(current) if current.batch_time == batch_time && current.partition != partition => {
            current.candidates.push(state);
        }
        Some(current) => {
            current.candidates = vec![state];
            current.partition = partition;
            current.batch_time = batch_time;
        }
        None => {
            keys.insert(
                key,
                KeyState {
                    candidates: vec![state],
                    partition,
                    batch_time,
                    seen: 0,
                },
            );
        }
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
        let mut expected = Expected::new(true, vec![0]);
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
    fn appends_count_every_row() {
        let mut expected = Expected::new(false, Vec::new());
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
