//! The operator graph behind the [`DStream`](super::DStream)s of one context: nodes in the order
//! they were defined (an operator can only read streams defined before it, so that order is a
//! topological one), the slots that hold each node's batch while a batch runs, and the build
//! errors kept until the context runs.
//!
//! Every node's batch is computed once per batch time. A batch read by several operators is
//! cloned for all but its last reader, which takes it: that is
//! [`DStream::persist`](super::DStream::persist) for every stream, without asking. A batch that
//! [`persist_with`](super::DStream::persist_with) spilled to disk is decoded from its file by each
//! reader instead, and the file removed after the last one ([`super::persist`]).

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::batch::PartitionBatch;
use crate::checkpoint::OperatorState;
use crate::error::{Error, Result};
use crate::plan::{BatchPlan, BatchTime, TopicPartition};

use super::persist::Spilled;
use super::reference::Refresh;
use super::sink::{PendingWrite, StreamSink};

/// The position of a node in its graph.
pub(crate) type NodeId = usize;

/// One partition of a stream's batch.
///
/// Streams read from Kafka are partitioned like the source: one partition per Kafka partition
/// (`Source`). Operators that need every value of a key in one place (`reduce_by_key`, state,
/// windows by key) repartition into the context's `N` output partitions by a stable hash of the
/// key (`Keyed(hash(key) mod N)`); whole-batch operators (`transform`, `count_by_window`) give one
/// partition, `Keyed(0)`. A sink writes each partition of each batch in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PartitionId {
    /// The partition of one Kafka partition.
    Source(TopicPartition),
    /// Output partition `p` of a keyed stream, `0 ≤ p < N`.
    Keyed(u32),
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Source(tp) => write!(f, "{tp}"),
            Self::Keyed(p) => write!(f, "key partition {p}"),
        }
    }
}

/// A stream's batch: each partition's items, in a deterministic order.
pub(crate) type Batch<T> = BTreeMap<PartitionId, Vec<T>>;

/// How a stream is partitioned, known when the program is built: it decides which transactions
/// a sink writes for each batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One partition per Kafka partition of these topics.
    Source(BTreeSet<String>),
    /// Partitions `Keyed(0..n)`.
    Keyed(u32),
    /// A union of source-partitioned and keyed streams: fine for `foreach`, not for a sink.
    Mixed,
}

impl Layout {
    /// The layout of a union.
    pub(crate) fn union(&self, other: &Layout) -> Layout {
        match (self, other) {
            (Self::Source(a), Self::Source(b)) => Self::Source(a.union(b).cloned().collect()),
            (Self::Keyed(a), Self::Keyed(b)) => Self::Keyed(*a.max(b)),
            _ => Self::Mixed,
        }
    }
}

/// What a batch gives every node: its time, its plan and the records read.
pub(crate) struct BatchInput<'a> {
    /// The batch.
    pub(crate) batch_time: BatchTime,
    /// Its plan, as logged.
    pub(crate) plan: &'a BatchPlan,
    /// The records of every planned range.
    pub(crate) records: &'a [PartitionBatch],
}

/// The identity of a stateful operator in the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OperatorInfo {
    /// The operator's kind, e.g. `update_state_by_key`.
    pub(crate) kind: &'static str,
    /// The stable id its state is stored under.
    pub(crate) id: String,
    /// The schema version of its state.
    pub(crate) schema_version: u32,
    /// Keys idle this long are dropped (`update_state_by_key` only).
    pub(crate) idle_timeout: Option<Duration>,
}

/// One operator.
pub(crate) trait Node: Send {
    /// Computes this node's batch from its inputs' ([`Step::take`]) into its own slot
    /// ([`Step::put`]); output operators act instead (and queue their sink writes in
    /// [`Step::writes`]).
    fn compute(&mut self, step: &mut Step<'_>) -> Result<()>;

    /// The checkpoint identity of a stateful operator.
    fn operator(&self) -> Option<&OperatorInfo> {
        None
    }

    /// The same, to change it while the program is built.
    fn operator_mut(&mut self) -> Option<&mut OperatorInfo> {
        None
    }

    /// The operator's state, encoded.
    fn save(&self) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }

    /// Replaces the operator's state; the error says what is wrong with `bytes`.
    fn load(&mut self, bytes: &[u8]) -> Result<(), String> {
        let _ = bytes;
        Ok(())
    }
}

/// One batch going through the graph: its input, each node's batch of it (boxed; `None` inside
/// means "no batch at this time", as for a window between two slides), and the sink writes the
/// outputs ask for.
pub(crate) struct Step<'a> {
    /// The batch's time, plan and records.
    pub(crate) input: &'a BatchInput<'a>,
    /// The sink writes asked for so far.
    pub(crate) writes: Vec<PendingWrite>,
    /// Where batches too large for memory are spilled.
    pub(crate) spill_dir: &'a Path,
    values: Vec<Option<Box<dyn Any + Send>>>,
    remaining: Vec<usize>,
    current: NodeId,
}

impl Step<'_> {
    /// Stores the batch of the node being computed.
    pub(crate) fn put<T: Send + 'static>(&mut self, batch: Option<Batch<T>>) {
        self.put_any(Box::new(batch));
    }

    /// Stores the batch of the node being computed as a spill file, which its readers decode.
    pub(crate) fn put_spilled(&mut self, spilled: Spilled) {
        self.put_any(Box::new(spilled));
    }

    fn put_any(&mut self, value: Box<dyn Any + Send>) {
        if let Some(slot) = self.values.get_mut(self.current) {
            *slot = Some(value);
        }
    }

    /// The node being computed.
    pub(crate) fn node(&self) -> NodeId {
        self.current
    }

    /// The batch of `node` for one of its readers: the last reader takes it, the others get a
    /// copy.
    pub(crate) fn take<T: Clone + Send + 'static>(
        &mut self,
        node: NodeId,
    ) -> Result<Option<Batch<T>>> {
        let missing = || Error::TaskFailed {
            what: format!("stream operator {node}"),
            message: "its input was not computed before it, or has another type".to_owned(),
        };
        let remaining = self.remaining.get_mut(node).ok_or_else(missing)?;
        *remaining = remaining.saturating_sub(1);
        let last = *remaining == 0;
        let slot = self.values.get_mut(node).ok_or_else(missing)?;
        if let Some(spilled) = slot.as_ref().and_then(|b| b.downcast_ref::<Spilled>()) {
            let batch = spilled.read()?;
            if last {
                // Dropping it removes the file.
                *slot = None;
            }
            return batch
                .downcast::<Option<Batch<T>>>()
                .map(|b| *b)
                .map_err(|_| missing());
        }
        if last {
            let boxed = slot.take().ok_or_else(missing)?;
            boxed
                .downcast::<Option<Batch<T>>>()
                .map(|b| *b)
                .map_err(|_| missing())
        } else {
            slot.as_ref()
                .and_then(|b| b.downcast_ref::<Option<Batch<T>>>())
                .cloned()
                .ok_or_else(missing)
        }
    }
}

/// Graphs created in this process, for [`Graph::spill_dir`].
static GRAPHS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A node and how it was defined.
struct Entry {
    node: Box<dyn Node>,
    layout: Layout,
    readers: usize,
}

/// Every operator of one context, in definition order, with what the run needs to know about
/// them.
pub(crate) struct Graph {
    entries: Vec<Entry>,
    /// The pipeline's name.
    pub(crate) pipeline: String,
    /// The batch interval, which windows must be multiples of.
    pub(crate) batch_interval: Duration,
    /// `N`, the number of output partitions of keyed streams.
    pub(crate) output_partitions: u32,
    /// Errors found while the program was built, reported when it runs.
    pub(crate) errors: Vec<Error>,
    /// Every Kafka topic read, in the order first asked for (a topic's index is part of its
    /// partitions' output ids).
    pub(crate) topics: Vec<String>,
    /// The SQL sinks written by the program.
    pub(crate) sinks: Vec<StreamSink>,
    /// The slide of every window, for the default checkpoint interval.
    pub(crate) slides: Vec<Duration>,
    /// Whether any operator repartitions by key.
    pub(crate) keyed: bool,
    /// The reference tables the operators read, each loaded for a batch before it runs.
    pub(crate) references: Vec<Arc<dyn Refresh>>,
    /// The checkpoint directory, which holds spill files; unset until the program runs.
    pub(crate) checkpoint_dir: Option<PathBuf>,
    /// Whether spill files a crash left behind were removed.
    spill_dir_cleared: bool,
    /// Tells this graph's spill directory from others' when it has no checkpoint (tests).
    serial: u64,
    derived_ids: BTreeMap<&'static str, usize>,
}

impl Graph {
    /// An empty graph.
    pub(crate) fn new(pipeline: String, batch_interval: Duration, output_partitions: u32) -> Self {
        Self {
            entries: Vec::new(),
            pipeline,
            batch_interval,
            output_partitions,
            errors: Vec::new(),
            topics: Vec::new(),
            sinks: Vec::new(),
            slides: Vec::new(),
            keyed: false,
            references: Vec::new(),
            checkpoint_dir: None,
            spill_dir_cleared: false,
            serial: GRAPHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            derived_ids: BTreeMap::new(),
        }
    }

    /// Adds a node reading `inputs`; returns its id.
    pub(crate) fn add(&mut self, node: Box<dyn Node>, layout: Layout, inputs: &[NodeId]) -> NodeId {
        for &input in inputs {
            if let Some(entry) = self.entries.get_mut(input) {
                entry.readers += 1;
            }
        }
        if matches!(layout, Layout::Keyed(_)) {
            self.keyed = true;
        }
        self.entries.push(Entry {
            node,
            layout,
            readers: 0,
        });
        self.entries.len() - 1
    }

    /// The layout of `node`'s stream.
    pub(crate) fn layout(&self, node: NodeId) -> Layout {
        self.entries
            .get(node)
            .map_or(Layout::Mixed, |e| e.layout.clone())
    }

    /// The node itself, to configure it while the program is built.
    pub(crate) fn node_mut(&mut self, node: NodeId) -> Option<&mut (dyn Node + 'static)> {
        self.entries.get_mut(node).map(|e| &mut *e.node)
    }

    /// The next derived id of a stateful operator of `kind`: `<kind>-<n>`, counting the
    /// operators of that kind in definition order.
    pub(crate) fn derive_id(&mut self, kind: &'static str) -> String {
        let n = self.derived_ids.entry(kind).or_insert(0);
        let id = format!("{kind}-{n}");
        *n += 1;
        id
    }

    /// Records a build error, reported when the context runs.
    pub(crate) fn error(&mut self, error: Error) {
        self.errors.push(error);
    }

    /// Adds `topics` to the topics read.
    pub(crate) fn subscribe(&mut self, topics: &[String]) {
        for topic in topics {
            if !self.topics.contains(topic) {
                self.topics.push(topic.clone());
            }
        }
    }

    /// Every stateful operator's identity, in definition order.
    pub(crate) fn operators(&self) -> Vec<OperatorInfo> {
        self.entries
            .iter()
            .filter_map(|e| e.node.operator().cloned())
            .collect()
    }

    /// `<checkpoint>/spill`, where batches too large for memory go; without a checkpoint (only
    /// in tests) a directory of this graph's own under the system's temporary directory.
    pub(crate) fn spill_dir(&self) -> PathBuf {
        match &self.checkpoint_dir {
            Some(dir) => dir.join(super::persist::SPILL_DIR),
            None => std::env::temp_dir().join(format!(
                "weir-spill-{}-{}",
                std::process::id(),
                self.serial
            )),
        }
    }

    /// Runs every node on one batch; returns the sink writes the outputs asked for.
    pub(crate) fn run(&mut self, input: &BatchInput<'_>) -> Result<Vec<PendingWrite>> {
        let spill_dir = self.spill_dir();
        if !self.spill_dir_cleared && self.checkpoint_dir.is_some() {
            super::persist::clear(&spill_dir)?;
        }
        self.spill_dir_cleared = true;
        let mut step = Step {
            input,
            writes: Vec::new(),
            spill_dir: &spill_dir,
            values: self.entries.iter().map(|_| None).collect(),
            remaining: self.entries.iter().map(|e| e.readers).collect(),
            current: 0,
        };
        for (id, entry) in self.entries.iter_mut().enumerate() {
            step.current = id;
            entry.node.compute(&mut step)?;
        }
        Ok(step.writes)
    }

    /// Whether any operator keeps state.
    pub(crate) fn has_state(&self) -> bool {
        self.entries.iter().any(|e| e.node.operator().is_some())
    }

    /// The state of every stateful operator, keyed by its id; the error names the first operator
    /// whose state cannot be encoded, and why.
    pub(crate) fn save(&self) -> Result<BTreeMap<String, OperatorState>, (String, String)> {
        let mut state = BTreeMap::new();
        for entry in &self.entries {
            let Some(info) = entry.node.operator() else {
                continue;
            };
            let bytes = entry.node.save().map_err(|e| (info.id.clone(), e))?;
            state.insert(
                info.id.clone(),
                OperatorState {
                    schema_version: info.schema_version,
                    bytes,
                },
            );
        }
        Ok(state)
    }

    /// Restores every stateful operator found in `state`; the error names the operator.
    pub(crate) fn load(
        &mut self,
        mut state: BTreeMap<String, OperatorState>,
    ) -> Result<(), (String, String)> {
        for entry in &mut self.entries {
            let Some(info) = entry.node.operator() else {
                continue;
            };
            let id = info.id.clone();
            let schema_version = info.schema_version;
            let Some(stored) = state.remove(&id) else {
                continue;
            };
            if stored.schema_version != schema_version {
                return Err((
                    id,
                    format!(
                        "the checkpoint holds state schema {} and the program declares {schema_version}",
                        stored.schema_version
                    ),
                ));
            }
            entry.node.load(&stored.bytes).map_err(|e| (id, e))?;
        }
        Ok(())
    }
}
