//! What a checkpoint must not silently be restored into: the pipeline's identity and its
//! fingerprint.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// The parts of a pipeline that a checkpoint depends on. A checkpoint restored into a pipeline
/// with a different identity is refused with what changed ([`PipelineIdentity::diff`]), because
/// its offsets or state would mean something else.
///
/// The batch interval is deliberately not part of the identity: it may change between runs. The
/// logged plans are replayed at their own batch times, and new batch times continue on the new
/// interval's grid after the last one (the runtime does that).
///
/// ```
/// use weir::checkpoint::PipelineIdentity;
///
/// let before = PipelineIdentity::new("orders", ["a"], "postgres://db:5432/shop table=orders")
///     .with_operator("counts", 1);
/// let after = PipelineIdentity::new("orders", ["b", "a"], "postgres://db:5432/shop table=orders")
///     .with_operator("counts", 2);
/// assert_eq!(
///     before.diff(&after),
///     vec!["topics: [a] -> [a, b]", "operator \"counts\" state schema 1 -> 2"],
/// );
/// assert_ne!(before.fingerprint(), after.fingerprint());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineIdentity {
    /// The pipeline's name, part of every commit key.
    pub pipeline: String,
    /// The subscribed topics, sorted and without duplicates.
    pub topics: Vec<String>,
    /// Every stateful operator's stable id and the schema version of its state.
    pub operators: BTreeMap<String, u32>,
    /// The number of output partitions of a pipeline that shuffles by key; `None` when output
    /// partitions are the Kafka partitions.
    pub output_partitions: Option<u32>,
    /// Where the output goes, without secrets, e.g. `postgres://db:5432/shop table=orders`.
    pub sink: String,
}

impl PipelineIdentity {
    /// The identity of a source-aligned pipeline without state; add stateful operators and a
    /// shuffle with [`with_operator`](Self::with_operator) and
    /// [`with_output_partitions`](Self::with_output_partitions). Topics are sorted.
    pub fn new(
        pipeline: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
        sink: impl Into<String>,
    ) -> Self {
        let topics: BTreeSet<String> = topics.into_iter().map(Into::into).collect();
        Self {
            pipeline: pipeline.into(),
            topics: topics.into_iter().collect(),
            operators: BTreeMap::new(),
            output_partitions: None,
            sink: sink.into(),
        }
    }

    /// Adds a stateful operator with its stable id and state schema version.
    #[must_use]
    pub fn with_operator(mut self, id: impl Into<String>, schema_version: u32) -> Self {
        self.operators.insert(id.into(), schema_version);
        self
    }

    /// Sets the number of output partitions of a keyed pipeline.
    #[must_use]
    pub fn with_output_partitions(mut self, partitions: u32) -> Self {
        self.output_partitions = Some(partitions);
        self
    }

    /// A stable 64-bit hash of the identity: FNV-1a over a canonical encoding that does not depend
    /// on the Rust version, the platform or the order topics were given in. It is stored in every
    /// snapshot header.
    pub fn fingerprint(&self) -> u64 {
        let mut hash = Fnv1a::new();
        hash.bytes(b"weir pipeline identity v1");
        hash.str(&self.pipeline);
        let topics = self.sorted_topics();
        hash.len(topics.len());
        for topic in topics {
            hash.str(topic);
        }
        hash.len(self.operators.len());
        for (id, schema_version) in &self.operators {
            hash.str(id);
            hash.bytes(&schema_version.to_le_bytes());
        }
        match self.output_partitions {
            None => hash.bytes(&[0]),
            Some(n) => {
                hash.bytes(&[1]);
                hash.bytes(&n.to_le_bytes());
            }
        }
        hash.str(&self.sink);
        hash.finish()
    }

    /// What changed from `self` (the checkpoint's identity) to `other` (the program's), one
    /// entry per change; empty when they are the same.
    pub fn diff(&self, other: &PipelineIdentity) -> Vec<String> {
        let mut changes = Vec::new();
        if self.pipeline != other.pipeline {
            changes.push(format!(
                "pipeline name {:?} -> {:?}",
                self.pipeline, other.pipeline
            ));
        }
        let (before, after) = (self.sorted_topics(), other.sorted_topics());
        if before != after {
            changes.push(format!("topics: [{}] -> [{}]", join(&before), join(&after)));
        }
        for (id, old) in &self.operators {
            match other.operators.get(id) {
                None => changes.push(format!(
                    "operator {id:?} removed (the checkpoint holds its state)"
                )),
                Some(new) if new != old => {
                    changes.push(format!("operator {id:?} state schema {old} -> {new}"))
                }
                Some(_) => {}
            }
        }
        for id in other.operators.keys() {
            if !self.operators.contains_key(id) {
                changes.push(format!(
                    "operator {id:?} added (the checkpoint has no state for it)"
                ));
            }
        }
        if self.output_partitions != other.output_partitions {
            changes.push(format!(
                "output partitions {} -> {}",
                partitions(self.output_partitions),
                partitions(other.output_partitions)
            ));
        }
        if self.sink != other.sink {
            changes.push(format!("sink {:?} -> {:?}", self.sink, other.sink));
        }
        changes
    }

    fn sorted_topics(&self) -> BTreeSet<&str> {
        self.topics.iter().map(String::as_str).collect()
    }
}

impl fmt::Display for PipelineIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pipeline {:?}, topics [{}], output partitions {}, sink {:?}",
            self.pipeline,
            join(&self.sorted_topics()),
            partitions(self.output_partitions),
            self.sink
        )?;
        if !self.operators.is_empty() {
            let operators: Vec<String> = self
                .operators
                .iter()
                .map(|(id, schema)| format!("{id} (schema {schema})"))
                .collect();
            write!(f, ", stateful operators {}", operators.join(", "))?;
        }
        Ok(())
    }
}

fn join(topics: &BTreeSet<&str>) -> String {
    topics.iter().copied().collect::<Vec<_>>().join(", ")
}

fn partitions(n: Option<u32>) -> String {
    n.map_or_else(|| "the Kafka partitions".to_owned(), |n| n.to_string())
}

/// The crate's FNV-1a, with every variable-length field prefixed by its length so that field
/// boundaries cannot shift.
struct Fnv1a(crate::hash::Fnv1a);

impl Fnv1a {
    fn new() -> Self {
        Self(crate::hash::Fnv1a::new())
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.0.bytes(bytes);
    }

    fn len(&mut self, len: usize) {
        self.bytes(&u64::try_from(len).unwrap_or(u64::MAX).to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.bytes(s.as_bytes());
    }

    fn finish(self) -> u64 {
        self.0.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> PipelineIdentity {
        PipelineIdentity::new("orders", ["a"], "postgres://db:5432/shop table=orders")
            .with_operator("counts", 1)
            .with_output_partitions(8)
    }

    #[test]
    fn fingerprint_is_stable_across_releases() {
        // Pinned: a change here makes every existing checkpoint look like a different pipeline.
        assert_eq!(identity().fingerprint(), 0xe2aa_ff03_d97a_0206);
    }

    #[test]
    fn fingerprint_ignores_topic_order() {
        let mut shuffled = identity();
        shuffled.topics = vec!["b".into(), "a".into()];
        let sorted =
            PipelineIdentity::new("orders", ["a", "b"], "postgres://db:5432/shop table=orders")
                .with_operator("counts", 1)
                .with_output_partitions(8);
        assert_eq!(shuffled.fingerprint(), sorted.fingerprint());
        assert!(shuffled.diff(&sorted).is_empty());
    }

    #[test]
    fn diff_names_every_change() {
        let after = PipelineIdentity::new("orders2", ["a", "b"], "sqlite://x.db table=orders")
            .with_operator("sums", 1)
            .with_output_partitions(16);
        assert_eq!(
            identity().diff(&after),
            vec![
                "pipeline name \"orders\" -> \"orders2\"",
                "topics: [a] -> [a, b]",
                "operator \"counts\" removed (the checkpoint holds its state)",
                "operator \"sums\" added (the checkpoint has no state for it)",
                "output partitions 8 -> 16",
                "sink \"postgres://db:5432/shop table=orders\" -> \"sqlite://x.db table=orders\"",
            ]
        );
        assert!(identity().diff(&identity()).is_empty());
    }

    #[test]
    fn field_boundaries_matter() {
        let a = PipelineIdentity::new("ab", ["c"], "s");
        let b = PipelineIdentity::new("a", ["bc"], "s");
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
