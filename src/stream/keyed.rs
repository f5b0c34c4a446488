//! The keyed shuffle and the stateless keyed operators: `reduce_by_key` and `count_by_value`.
//!
//! A keyed operator gathers every value of a key (all Kafka partitions of the batch), computes
//! per key in key order, and places each key's result in output partition
//! `stable_hash(key) mod N` ([`super::codec::partition_of`]). Every one of the `N` partitions is
//! present in each batch, empty or not, so that a sink commits each of them every batch and the
//! offsets it records stay contiguous.

use std::collections::BTreeMap;

use crate::error::Result;

use super::codec::partition_of;
use super::dstream::{DStream, Data, Key};
use super::graph::{Batch, Layout, Node, NodeId, PartitionId, Step};

/// Places key-sorted `(key, value)` pairs into partitions `Keyed(0..n)`, every one present.
pub(crate) fn distribute<K: Key, V>(
    pairs: impl IntoIterator<Item = (K, V)>,
    partitions: u32,
) -> Batch<(K, V)> {
    let mut out: Batch<(K, V)> = (0..partitions.max(1))
        .map(|p| (PartitionId::Keyed(p), Vec::new()))
        .collect();
    for (key, value) in pairs {
        let p = PartitionId::Keyed(partition_of(&key, partitions));
        out.entry(p).or_default().push((key, value));
    }
    out
}

/// Folds the values of each key, in input order, with `reduce`.
pub(crate) fn reduce_values<K: Ord, V>(
    pairs: impl IntoIterator<Item = (K, V)>,
    reduce: impl Fn(V, V) -> V,
) -> BTreeMap<K, V> {
    let mut out: BTreeMap<K, V> = BTreeMap::new();
    for (key, value) in pairs {
        match out.remove(&key) {
            Some(acc) => out.insert(key, reduce(acc, value)),
            None => out.insert(key, value),
        };
    }
    out
}

impl<K: Key, V: Data> DStream<(K, V)> {
    /// The values of each key combined with `reduce` (which should be associative), one pair
    /// per key, in key order, partitioned by key into the context's output partitions.
    ///
    /// ```
    /// # fn example(words: weir::stream::DStream<String>) {
    /// let counts = words.map(|w| (w, 1_u64)).reduce_by_key(|a, b| a + b);
    /// # }
    /// ```
    pub fn reduce_by_key(&self, reduce: impl Fn(V, V) -> V + Send + Sync + 'static) -> Self {
        let partitions = self.output_partitions();
        self.then(
            ReduceByKey::<K, V> {
                input: self.node,
                partitions,
                reduce: Box::new(reduce),
                _keys: std::marker::PhantomData,
            },
            Layout::Keyed(partitions),
            &[],
        )
    }
}

impl<T> DStream<T> {
    /// The context's number of output partitions `N`.
    pub(crate) fn output_partitions(&self) -> u32 {
        super::dstream::lock(&self.graph).output_partitions
    }
}

impl<T: Key> DStream<T> {
    /// How often each distinct item occurs in the batch, as `(item, count)` in item order.
    pub fn count_by_value(&self) -> DStream<(T, u64)> {
        self.map(|item| (item, 1_u64)).reduce_by_key(|a, b| a + b)
    }
}

type ReduceFn<V> = Box<dyn Fn(V, V) -> V + Send + Sync + 'static>;

struct ReduceByKey<K, V> {
    input: NodeId,
    partitions: u32,
    reduce: ReduceFn<V>,
    _keys: std::marker::PhantomData<fn() -> K>,
}

impl<K: Key, V: Data> Node for ReduceByKey<K, V> {
    fn compute(&mut self, step: &mut Step<'_>) -> Result<()> {
        let out = step.take::<(K, V)>(self.input)?.map(|batch| {
            let reduced = reduce_values(batch.into_values().flatten(), &self.reduce);
            distribute(reduced, self.partitions)
        });
        step.put(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_is_present_and_sorted() {
        let batch = distribute(
            reduce_values(
                [("b", 1), ("a", 2), ("b", 3), ("c", 1)].map(|(k, v)| (k.to_owned(), v)),
                |a, b| a + b,
            ),
            3,
        );
        assert_eq!(batch.len(), 3);
        let mut all: Vec<(String, i32)> = batch.values().flatten().cloned().collect();
        all.sort();
        assert_eq!(all, vec![("a".into(), 2), ("b".into(), 4), ("c".into(), 1)]);
        for items in batch.values() {
            assert!(items.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }
}
