//! [`DStream`]: a typed stream of batches, and its stateless operators.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::plan::BatchTime;

use super::codec;
use super::graph::{Batch, Graph, Layout, Node, NodeId, PartitionId, Step};

/// What a stream may carry: owned data that can be copied to several readers and moved between
/// threads.
pub trait Data: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> Data for T {}

/// Data that can be written into the checkpoint (window panes, state): serde types, encoded with
/// bincode.
pub trait Persist: Data + Serialize + DeserializeOwned {}
impl<T: Data + Serialize + DeserializeOwned> Persist for T {}

/// A key: ordered (outputs are sorted by key, never in hash-map order) and serde, so that its
/// stable hash places it in an output partition.
pub trait Key: Persist + Ord {}
impl<T: Persist + Ord> Key for T {}

/// The error a user function may return; it stops the pipeline with the batch named.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a partition's items are being computed: the batch time and the partition, and a seed
/// for randomness derived from both (invariant 3: a replayed batch must compute the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionContext {
    /// The batch.
    pub batch_time: BatchTime,
    /// The partition.
    pub partition: PartitionId,
}

impl PartitionContext {
    /// A seed for a random number generator, the same whenever this partition of this batch is
    /// computed.
    ///
    /// ```
    /// use weir::plan::BatchTime;
    /// use weir::stream::{PartitionContext, PartitionId};
    ///
    /// let at = |t| PartitionContext { batch_time: BatchTime::from_millis(t), partition: PartitionId::Keyed(0) };
    /// assert_eq!(at(1_000).seed(), at(1_000).seed());
    /// assert_ne!(at(1_000).seed(), at(2_000).seed());
    /// ```
    pub fn seed(&self) -> u64 {
        codec::seed(&(self.batch_time.as_millis(), &self.partition))
    }
}

/// A stream of batches of `T`, one batch per batch time, built from a
/// [`StreamingContext`](super::StreamingContext) and its operators. Operators only describe the
/// computation; it runs when the context runs. Cloning a `DStream` gives another handle on the
/// same stream.
pub struct DStream<T> {
    pub(crate) graph: Arc<Mutex<Graph>>,
    pub(crate) node: NodeId,
    pub(crate) _items: PhantomData<fn() -> T>,
}

impl<T> Clone for DStream<T> {
    fn clone(&self) -> Self {
        Self {
            graph: Arc::clone(&self.graph),
            node: self.node,
            _items: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for DStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DStream")
            .field("node", &self.node)
            .field("items", &std::any::type_name::<T>())
            .finish()
    }
}

/// Locks a graph; a poisoned lock only means a build step panicked, and the graph is whole.
pub(crate) fn lock(graph: &Mutex<Graph>) -> MutexGuard<'_, Graph> {
    graph.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: Data> DStream<T> {
    pub(crate) fn new(graph: Arc<Mutex<Graph>>, node: NodeId) -> Self {
        Self {
            graph,
            node,
            _items: PhantomData,
        }
    }

    /// Adds `node`, reading this stream (and `others`), as a new stream of `U`.
    pub(crate) fn then<U: Data>(
        &self,
        node: impl Node + 'static,
        layout: Layout,
        others: &[NodeId],
    ) -> DStream<U> {
        let mut inputs = vec![self.node];
        inputs.extend_from_slice(others);
        let id = lock(&self.graph).add(Box::new(node), layout, &inputs);
        DStream::new(Arc::clone(&self.graph), id)
    }

    pub(crate) fn layout(&self) -> Layout {
        lock(&self.graph).layout(self.node)
    }

    /// Applies `f` to each partition's items, keeping the partitioning.
    pub fn map_partitions<U: Data>(
        &self,
        f: impl Fn(&PartitionContext, Vec<T>) -> Vec<U> + Send + Sync + 'static,
    ) -> DStream<U> {
        self.try_map_partitions(move |cx, items| Ok(f(cx, items)))
    }

    /// [`map_partitions`](Self::map_partitions) with a function that may fail the batch.
    pub(crate) fn try_map_partitions<U: Data>(
        &self,
        f: impl Fn(&PartitionContext, Vec<T>) -> Result<Vec<U>> + Send + Sync + 'static,
    ) -> DStream<U> {
        self.then(
            MapPartitions::<T, U> {
                input: self.node,
                f: Box::new(f),
            },
            self.layout(),
            &[],
        )
    }

    /// Each item through `f`.
    ///
    /// ```
    /// # fn example(lines: weir::stream::DStream<String>) {
    /// let lengths = lines.map(|line| line.len());
    /// # }
    /// ```
    pub fn map<U: Data>(&self, f: impl Fn(T) -> U + Send + Sync + 'static) -> DStream<U> {
        self.map_partitions(move |_, items| items.into_iter().map(&f).collect())
    }

    /// The items for which `keep` is true.
    pub fn filter(&self, keep: impl Fn(&T) -> bool + Send + Sync + 'static) -> DStream<T> {
        self.map_partitions(move |_, items| items.into_iter().filter(|x| keep(x)).collect())
    }

    /// Each item into any number of items.
    ///
    /// ```
    /// # fn example(lines: weir::stream::DStream<String>) {
    /// let words = lines.flat_map(|line| line.split(' ').map(str::to_owned).collect::<Vec<_>>());
    /// # }
    /// ```
    pub fn flat_map<U: Data, I: IntoIterator<Item = U>>(
        &self,
        f: impl Fn(T) -> I + Send + Sync + 'static,
    ) -> DStream<U> {
        self.map_partitions(move |_, items| items.into_iter().flat_map(&f).collect())
    }

    /// Each item paired with its key, `(f(&item), item)`.
    pub fn key_by<K: Data>(&self, f: impl Fn(&T) -> K + Send + Sync + 'static) -> DStream<(K, T)> {
        self.map(move |item| (f(&item), item))
    }

    /// Each item into a `(key, value)` pair (Spark's `mapToPair`).
    pub fn map_to_pair<K: Data, V: Data>(
        &self,
        f: impl Fn(T) -> (K, V) + Send + Sync + 'static,
    ) -> DStream<(K, V)> {
        self.map(f)
    }

    /// The items of both streams: partitions with the same id are joined, this stream's items
    /// first.
    pub fn union(&self, other: &DStream<T>) -> DStream<T> {
        let layout = self.layout().union(&other.layout());
        self.then(
            Union::<T> {
                inputs: [self.node, other.node],
                _items: PhantomData,
            },
            layout,
            &[other.node],
        )
    }

    /// A whole batch at once: `f` gets every item of the batch (partition by partition, in
    /// order) and its result is one partition, `Keyed(0)`. `f` must be a pure function of the
    /// batch time, the items and static inputs (invariant 3); for a reference table that
    /// changes, loaded from a file or a database, use
    /// [`transform_with`](Self::transform_with) or
    /// [`left_outer_join_reference`](DStream::left_outer_join_reference), which version it by
    /// batch time.
    pub fn transform<U: Data>(
        &self,
        f: impl Fn(BatchTime, Vec<T>) -> Vec<U> + Send + Sync + 'static,
    ) -> DStream<U> {
        self.try_transform(move |t, items| Ok(f(t, items)))
    }

    /// [`transform`](Self::transform) with a function that may fail the batch.
    pub(crate) fn try_transform<U: Data>(
        &self,
        f: impl Fn(BatchTime, Vec<T>) -> Result<Vec<U>> + Send + Sync + 'static,
    ) -> DStream<U> {
        self.then(
            Transform::<T, U> {
                input: self.node,
                f: Box::new(f),
            },
            Layout::Keyed(1),
            &[],
        )
    }
}

type PartitionFn<T, U> =
    Box<dyn Fn(&PartitionContext, Vec<T>) -> Result<Vec<U>> + Send + Sync + 'static>;

/// `f` over each partition.
pub(crate) struct MapPartitions<T, U> {
    pub(crate) input: NodeId,
    pub(crate) f: PartitionFn<T, U>,
}

impl<T: Data, U: Data> Node for MapPartitions<T, U> {
    fn compute(&mut self, step: &mut Step<'_>) -> Result<()> {
        let out = match step.take::<T>(self.input)? {
            None => None,
            Some(batch) => {
                let mut out: Batch<U> = Batch::new();
                for (partition, items) in batch {
                    let cx = PartitionContext {
                        batch_time: step.input.batch_time,
                        partition,
                    };
                    let items = (self.f)(&cx, items)?;
                    out.insert(cx.partition, items);
                }
                Some(out)
            }
        };
        step.put(out);
        Ok(())
    }
}

struct Union<T> {
    inputs: [NodeId; 2],
    _items: PhantomData<fn() -> T>,
}

impl<T: Data> Node for Union<T> {
    fn compute(&mut self, step: &mut Step<'_>) -> Result<()> {
        let a = step.take::<T>(self.inputs[0])?;
        let b = step.take::<T>(self.inputs[1])?;
        let out = match (a, b) {
            (None, None) => None,
            (a, b) => {
                let mut out = a.unwrap_or_default();
                for (partition, items) in b.unwrap_or_default() {
                    out.entry(partition).or_default().extend(items);
                }
                Some(out)
            }
        };
        step.put(out);
        Ok(())
    }
}

type BatchFn<T, U> = Box<dyn Fn(BatchTime, Vec<T>) -> Result<Vec<U>> + Send + Sync + 'static>;

struct Transform<T, U> {
    input: NodeId,
    f: BatchFn<T, U>,
}

impl<T: Data, U: Data> Node for Transform<T, U> {
    fn compute(&mut self, step: &mut Step<'_>) -> Result<()> {
        let out = match step.take::<T>(self.input)? {
            None => None,
            Some(batch) => {
                let items: Vec<T> = batch.into_values().flatten().collect();
                let out = (self.f)(step.input.batch_time, items)?;
                Some(Batch::from([(PartitionId::Keyed(0), out)]))
            }
        };
        step.put(out);
        Ok(())
    }
}
