//! The table's rows, one at a time, against the expected content: what is missing, duplicated,
//! differing or unexpected, counted per partition.

use std::collections::HashMap;

use crate::sink::SqlSinkConfig;

use super::cells::Row;
use super::expected::{Expected, project};

/// How many differences are described row by row in a report.
const MAX_EXAMPLES: usize = 10;

/// The columns that say which record a row of an `append` table stems from, so that a row with
/// the same identity but other values counts as *differing* rather than as one missing row plus
/// one unexpected row. Upserts use their key.
#[derive(Debug, Clone)]
pub(crate) struct Identity(Vec<usize>);

impl Identity {
    /// The configured key columns if any; else the Kafka coordinate columns (topic, partition,
    /// offset) that are configured; else the first column.
    pub(crate) fn for_config(sink: &SqlSinkConfig, names: &[String], key: &[usize]) -> Self {
        if !key.is_empty() {
            return Self(key.to_vec());
        }
        let m = &sink.metadata;
        let coordinates: Vec<usize> = [&m.topic, &m.partition, &m.offset]
            .into_iter()
            .flatten()
            .filter_map(|name| names.iter().position(|n| n == name))
            .collect();
        if m.offset.is_some() && !coordinates.is_empty() {
            return Self(coordinates);
        }
        Self(vec![0])
    }
}

/// Differences found, per partition (by index) and in all.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Per partition: rows missing from the table.
    pub(crate) missing: Vec<u64>,
    /// Per partition: rows the table holds more often than the records say.
    pub(crate) duplicated: Vec<u64>,
    /// Per partition: rows whose identity (or key) is right but whose values are not.
    pub(crate) differing: Vec<u64>,
    /// Per partition: rows of keys the partition deleted last.
    pub(crate) unexpected: Vec<u64>,
    /// Rows no committed record explains at all.
    pub(crate) unattributed: u64,
    /// A few differences, described for a person.
    pub(crate) examples: Vec<String>,
}

/// A comparison under way.
#[derive(Debug)]
pub(crate) struct Comparison {
    expected: Expected,
    identity: Identity,
    names: Vec<String>,
    /// Append only: rows matching no expected row, paired with missing ones at the end.
    extras: Vec<Row>,
    outcome: Outcome,
}

impl Comparison {
    /// Compares with `expected`; `names` are the table's column names, for examples.
    pub(crate) fn new(
        expected: Expected,
        identity: Identity,
        partitions: usize,
        names: Vec<String>,
    ) -> Self {
        let zeros = vec![0; partitions];
        Self {
            expected,
            identity,
            names,
            extras: Vec::new(),
            outcome: Outcome {
                missing: zeros.clone(),
                duplicated: zeros.clone(),
                differing: zeros.clone(),
                unexpected: zeros,
                ..Outcome::default()
            },
        }
    }

    /// One row of the table.
    pub(crate) fn observe(&mut self, row: Row) {
        match &mut self.expected {
            Expected::Append(rows) => match rows.get_mut(&row) {
                Some(slot) if slot.seen < slot.count => slot.seen += 1,
                Some(slot) => {
                    let partition = slot.partition;
                    self.outcome.duplicated[partition] += 1;
                    let text = format!("duplicated: {}", self.describe(&row));
                    self.example(text);
                }
                None => self.extras.push(row),
            },
            Expected::Upsert { key, added, keys } => {
                let Some(state) = keys.get_mut(&project(&row, key)) else {
                    self.outcome.unattributed += 1;
                    let text = format!("unexpected: {}", self.describe(&row));
                    self.example(text);
                    return;
                };
                state.seen += 1;
                let partition = state.partition;
                let candidates = state.candidates.clone();
                let (counter, what) = if state.seen > 1 {
                    (&mut self.outcome.duplicated, "duplicated key")
                } else if candidates.contains(&Some(row.clone())) {
                    return;
                } else if candidates.iter().all(Option::is_none) {
                    (&mut self.outcome.unexpected, "deleted key still present")
                } else {
                    let what = if added.is_empty() {
                        "differs from the last write"
                    } else {
                        "differs from the totals and the last write"
                    };
                    (&mut self.outcome.differing, what)
                };
                counter[partition] += 1;
                let mut text = format!("{what}: {}", self.describe(&row));
                if let Some(Some(wanted)) = candidates.first()
                    && what.starts_with("differs")
                {
                    text.push_str(&format!(", expected {}", self.describe(wanted)));
                }
                self.example(text);
            }
        }
    }

    /// The differences, once every row was observed.
    pub(crate) fn finish(mut self) -> Outcome {
        match std::mem::replace(&mut self.expected, Expected::Append(HashMap::new())) {
            Expected::Append(rows) => {
                let mut missing: HashMap<Row, Vec<(usize, Row)>> = HashMap::new();
                for (row, slot) in rows {
                    for _ in slot.seen..slot.count {
                        missing
                            .entry(project(&row, &self.identity.0))
                            .or_default()
                            .push((slot.partition, row.clone()));
                    }
                }
                for extra in std::mem::take(&mut self.extras) {
                    let paired = missing
                        .get_mut(&project(&extra, &self.identity.0))
                        .and_then(Vec::pop);
                    let text = match paired {
                        Some((partition, wanted)) => {
                            self.outcome.differing[partition] += 1;
                            format!(
                                "differs: {}, expected {}",
                                self.describe(&extra),
                                self.describe(&wanted)
                            )
                        }
                        None => {
                            self.outcome.unattributed += 1;
                            format!("unexpected: {}", self.describe(&extra))
                        }
                    };
                    self.example(text);
                }
                for (partition, row) in missing.into_values().flatten() {
                    self.outcome.missing[partition] += 1;
                    let text = format!("missing: {}", self.describe(&row));
                    self.example(text);
                }
            }
            Expected::Upsert { keys, .. } => {
                for state in keys.values() {
                    let absent_allowed = state.candidates.contains(&None);
                    if state.seen == 0 && !absent_allowed {
                        self.outcome.missing[state.partition] += 1;
                        if let Some(Some(row)) = state.candidates.first() {
                            let text = format!("missing: {}", self.describe(row));
                            self.example(text);
                        }
                    }
                }
            }
        }
        self.outcome
    }

    fn example(&mut self, text: String) {
        if self.outcome.examples.len() < MAX_EXAMPLES {
            self.outcome.examples.push(text);
        }
    }

    fn describe(&self, row: &Row) -> String {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                let name = self.names.get(i).map_or("?", String::as_str);
                match cell {
                    Some(text) if text.chars().count() > 60 => {
                        format!("{name}={}…", text.chars().take(60).collect::<String>())
                    }
                    Some(text) => format!("{name}={text}"),
                    None => format!("{name}=NULL"),
                }
            })
            .collect();
        format!("({})", cells.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::BatchTime;

    fn row(cells: &[&str]) -> Row {
        cells.iter().map(|c| Some((*c).to_owned())).collect()
    }

    fn names() -> Vec<String> {
        vec!["id".into(), "v".into()]
    }

    #[test]
    fn append_counts_each_kind_of_difference() {
        let mut expected = Expected::new(false, Vec::new(), Vec::new());
        let t = BatchTime::from_millis(1);
        for id in 0..5 {
            expected.write(usize::from(id >= 3), t, row(&[&id.to_string(), "x"]));
        }
        let mut comparison = Comparison::new(expected, Identity(vec![0]), 2, names());
        comparison.observe(row(&["0", "x"]));
        comparison.observe(row(&["0", "x"])); // duplicated
        comparison.observe(row(&["1", "y"])); // differs
        // 2 missing
        comparison.observe(row(&["3", "x"]));
        comparison.observe(row(&["4", "x"]));
        comparison.observe(row(&["9", "z"])); // unexpected
        let outcome = comparison.finish();
        assert_eq!(outcome.duplicated, [1, 0]);
        assert_eq!(outcome.differing, [1, 0]);
        assert_eq!(outcome.missing, [1, 0]);
        assert_eq!(outcome.unattributed, 1);
        assert!(
            outcome
                .examples
                .iter()
                .any(|e| e == "differs: (id=1, v=y), expected (id=1, v=x)"),
            "{:?}",
            outcome.examples
        );
    }

    #[test]
    fn upsert_compares_by_key() {
        let mut expected = Expected::new(true, vec![0], Vec::new());
        let t = BatchTime::from_millis(1);
        expected.write(0, t, row(&["1", "a"]));
        expected.write(0, t, row(&["2", "b"]));
        expected.write(1, t, row(&["3", "c"]));
        expected.delete(1, t, row(&["4"]));
        expected.write(1, t, row(&["5", "e"]));
        let mut comparison = Comparison::new(expected, Identity(vec![0]), 2, names());
        comparison.observe(row(&["1", "a"]));
        comparison.observe(row(&["2", "B"])); // differs
        comparison.observe(row(&["3", "c"]));
        comparison.observe(row(&["3", "c"])); // duplicated key (no primary key)
        comparison.observe(row(&["4", "d"])); // should be deleted
        comparison.observe(row(&["6", "f"])); // nobody wrote key 6
        // key 5 missing
        let outcome = comparison.finish();
        assert_eq!(outcome.differing, [1, 0]);
        assert_eq!(outcome.duplicated, [0, 1]);
        assert_eq!(outcome.unexpected, [0, 1]);
        assert_eq!(outcome.missing, [0, 1]);
        assert_eq!(outcome.unattributed, 1);
    }
}
