//! Sliding windows: `window`, `reduce_by_key_and_window` (with an optional inverse function) and
//! `count_by_window`.
//!
//! A window of length `W` sliding by `S` is computed at every batch time `t` that is a multiple
//! of `S` (in epoch milliseconds, so the grid does not depend on when the pipeline started) and
//! covers the batches in `(t − W, t]`. Between two slides the windowed stream has no batch.
//! Each operator keeps one pane per batch (the batch's items, or its values reduced by key) in
//! its checkpointed state; after a crash the logged plans are re-executed, so panes and windows
//! come out exactly as in a run without the crash. A batch time skipped while the pipeline was
//! down has no pane, and a slide that falls in the downtime emits no window.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::{BatchTime, interval_millis};

use super::codec::{decode_state, encode_state};
use super::dstream::{DStream, Data, Key, Persist, lock};
use super::graph::{Batch, Graph, Layout, Node, NodeId, OperatorInfo, PartitionId, Step};
use super::keyed::{distribute, reduce_values};

/// A window's length and slide, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WindowSpec {
    window_ms: i64,
    slide_ms: i64,
}

impl WindowSpec {
    /// Validates `window` and `slide` against the batch interval; a bad one is recorded as a
    /// build error.
    fn new(graph: &mut Graph, what: &str, window: Duration, slide: Duration) -> Self {
        let interval = interval_millis(graph.batch_interval).max(1);
        let spec = Self {
            window_ms: interval_millis(window),
            slide_ms: interval_millis(slide).max(1),
        };
        for (name, value, ms) in [
            ("window", window, spec.window_ms),
            ("slide", slide, interval_millis(slide)),
        ] {
            if ms <= 0 || ms % interval != 0 {
                graph.error(Error::config(
                    what,
                    format!(
                        "the {name} {} is not a positive multiple of the batch interval {}",
                        humantime::format_duration(value),
                        humantime::format_duration(graph.batch_interval)
                    ),
                ));
            }
        }
        graph.slides.push(slide);
        spec
    }

    /// Whether a window ends at `t`.
    fn due(self, t: BatchTime) -> bool {
        t.as_millis().rem_euclid(self.slide_ms) == 0
    }

    /// The panes of `panes` in the window ending at `end`, in time order.
    fn in_window<P>(self, panes: &BTreeMap<i64, P>, end: i64) -> impl Iterator<Item = &P> {
        panes
            .range(end - self.window_ms + 1..=end)
            .map(|(_, pane)| pane)
    }
}

impl<T> DStream<T> {
    /// The validated window and the derived identity of a new window operator of `kind`.
    fn window_operator(
        &self,
        kind: &'static str,
        window: Duration,
        slide: Duration,
    ) -> (WindowSpec, OperatorInfo) {
        let mut graph = lock(&self.graph);
        let spec = WindowSpec::new(&mut graph, kind, window, slide);
        let info = OperatorInfo {
            kind,
            id: graph.derive_id(kind),
            schema_version: 1,
            idle_timeout: None,
        };
        (spec, info)
    }
}

impl<T: Persist> DStream<T> {
    /// Every item of the batches in the last `window`, every `slide` (both multiples of the batch
    /// interval). Partitions keep their ids; within one, items come in batch order.
    pub fn window(&self, window: Duration, slide: Duration) -> DStream<T> {
        let (spec, info) = self.window_operator("window", window, slide);
        self.then(
            Window::<T> {
                input: self.node,
                spec,
                info,
                panes: BTreeMap::new(),
            },
            self.layout(),
            &[],
        )
    }
}

impl<T: Data> DStream<T> {
    /// The number of items in the last `window`, every `slide`: one item (zero for a window
    /// without items) in partition `Keyed(0)`.
    pub fn count_by_window(&self, window: Duration, slide: Duration) -> DStream<u64> {
        let (spec, info) = self.window_operator("count_by_window", window, slide);
        self.then(
            CountByWindow::<T> {
                input: self.node,
                spec,
                info,
                panes: BTreeMap::new(),
                _items: std::marker::PhantomData,
            },
            Layout::Keyed(1),
            &[],
        )
    }
}

type ReduceFn<V> = Box<dyn Fn(V, V) -> V + Send + Sync + 'static>;

impl<K: Key, V: Persist> DStream<(K, V)> {
    /// The values of each key over the last `window`, every `slide`, combined with `reduce`:
    /// the panes of the window's batches are folded in time order. Keys without values in the
    /// window are absent. Partitioned by key.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # fn example(words: weir::stream::DStream<String>) {
    /// // Counts of the last 60 s, every 10 s.
    /// let hot = words
    ///     .map(|w| (w, 1_u64))
    ///     .reduce_by_key_and_window(|a, b| a + b, Duration::from_secs(60), Duration::from_secs(10));
    /// # }
    /// ```
    pub fn reduce_by_key_and_window(
        &self,
        reduce: impl Fn(V, V) -> V + Send + Sync + 'static,
        window: Duration,
        slide: Duration,
    ) -> Self {
        self.window_by_key(Box::new(reduce), None, window, slide)
    }

    /// The same as [`reduce_by_key_and_window`](Self::reduce_by_key_and_window), computed
    /// incrementally: the previous window's values get the panes that entered with `reduce` and
    /// lose the panes that left with `inverse` (`inverse(reduce(a, b), b) == a`), which is
    /// cheaper when the window is much longer than the slide. A key leaves when no pane of the
    /// window has it, so the result equals the non-incremental one.
    pub fn reduce_by_key_and_window_inv(
        &self,
        reduce: impl Fn(V, V) -> V + Send + Sync + 'static,
        inverse: impl Fn(V, V) -> V + Send + Sync + 'static,
        window: Duration,
        slide: Duration,
    ) -> Self {
        self.window_by_key(Box::new(reduce), Some(Box::new(inverse)), window, slide)
    }

    fn window_by_key(
        &self,
        reduce: ReduceFn<V>,
        inverse: Option<ReduceFn<V>>,
        window: Duration,
        slide: Duration,
    ) -> Self {
        let (spec, info) = self.window_operator("reduce_by_key_and_window", window, slide);
        let partitions = self.output_partitions();
        self.then(
            ReduceByKeyAndWindow::<K, V> {
                input: self.node,
                spec,
                info,
                partitions,
                reduce,
                inverse,
                state: WindowState {
                    panes: BTreeMap::new(),
                    current: BTreeMap::new(),
                    last_emit: None,
                },
            },
            Layout::Keyed(partitions),
            &[],
        )
    }
}

/// Implements the [`Node`] methods shared by every window operator: its checkpoint identity
/// and its state (the field `$state`) under the envelope of its kind.
macro_rules! window_state {
    ($state:ident) => {
        fn operator(&self) -> Option<&OperatorInfo> {
            Some(&self.info)
        }

        fn operator_mut(&mut self) -> Option<&mut OperatorInfo> {
            Some(&mut self.info)
        }

        fn save(&self) -> Result<Vec<u8>, String> {
            encode_state(self.info.kind, &self.$state)
        }

        fn load(&mut self, bytes: &[u8]) -> Result<(), String> {
            self.$state = decode_state(self.info.kind, bytes)?;
            Ok(())
        }
    };
}

struct Window<T> {
    input: NodeId,
    spec: WindowSpec,
    info: OperatorInfo,
    panes: BTreeMap<i64, Batch<T>>,
}

impl<T: Persist> Node for Window<T> {
    fn compute(&mut self, step: &mut Step<'_>) -> Result<()> {
        let t = step.input.batch_time;
        if let Some(batch) = step.take::<T>(self.input)?
            && batch.values().any(|items| !items.is_empty())
        {
            self.panes.insert(t.as_millis(), batch);
        }
        let out = self.spec.due(t).then(|| {
            let mut out: Batch<T> = Batch::new();
            for pane in self.spec.in_window(&self.panes, t.as_millis()) {
                for (partition, items) in pane {
                    out.entry(partition.clone())
                        .or_default()
                        .extend(items.iter().cloned());
                }
            }
            out
        });
        let end = t.as_millis();
        self.panes
            .retain(|&pane, _| pane > end - self.spec.window_ms);
        step.put(out);
        Ok(())
    }

    window_state!(panes);
}

struct CountByWindow<T> {
    input: NodeId,
    spec: WindowSpec,
    info: OperatorInfo,
    panes: BTreeMap<i64, u64>,
    _items: std::marker::PhantomData<fn() -> T>,
}

impl<T: Data> Node for CountByWindow<T> {
    fn compute(&mut self, step: &mut Step<'_>) -> Result<()> {
        let t = step.input.batch_time;
        if let Some(batch) = step.take::<T>(self.input)? {
            let count: usize = batch.values().map(Vec::len).sum();
            if count > 0 {
                self.panes
                    .insert(t.as_millis(), u64::try_from(count).unwrap_or(u64::MAX));
            }
        }
        let out = self.spec.due(t).then(|| {
            let count: u64 = self.spec.in_window(&self.panes, t.as_millis()).sum();
            Batch::from([(PartitionId::Keyed(0), vec![count])])
        });
        let end = t.as_millis();
        self.panes
            .retain(|&pane, _| pane > end - self.spec.window_ms);
        step.put(out);
        Ok(())
    }

    window_state!(panes);
}

/// The checkpointed state of `reduce_by_key_and_window`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WindowState<K: Ord, V> {
    /// Each batch's values reduced by key, by batch time.
    panes: BTreeMap<i64, BTreeMap<K, V>>,
    /// The incremental path only: the last window's value of each key and how many of its panes
    /// hold the key.
    current: BTreeMap<K, (V, u32)>,
    /// The end of the last window computed.
    last_emit: Option<i64>,
}

struct ReduceByKeyAndWindow<K: Ord, V> {
    input: NodeId,
    spec: WindowSpec,
    info: OperatorInfo,
    partitions: u32,
    reduce: ReduceFn<V>,
    inverse: Option<ReduceFn<V>>,
    state: WindowState<K, V>,
}

impl<K: Key, V: Persist> ReduceByKeyAndWindow<K, V> {
    /// Folds `pane` into `acc`, counting the panes that hold each key.
    fn add(&self, acc: &mut BTreeMap<K, (V, u32)>, pane: &BTreeMap<K, V>) {
        for (key, value) in pane {
            let next = match acc.remove(key) {
                Some((sum, n)) => ((self.reduce)(sum, value.clone()), n + 1),
                None => (value.clone(), 1),
            };
            acc.insert(key.clone(), next);
        }
    }

    /// The window ending at `end`, by key.
    fn window_at(&mut self, end: i64) -> BTreeMap<K, (V, u32)> {
        let Some(inverse) = &self.inverse else {
            let mut acc = BTreeMap::new();
            for pane in self.spec.in_window(&self.state.panes, end) {
                self.add(&mut acc, pane);
            }
            return acc;
        };
        let last = match self.state.last_emit {
            Some(last) if end - last < self.spec.window_ms => last,
            _ => {
                let mut acc = BTreeMap::new();
                for pane in self.spec.in_window(&self.state.panes, end) {
                    self.add(&mut acc, pane);
                }
                return acc;
            }
        };
        let mut acc = std::mem::take(&mut self.state.current);
        for (_, pane) in self.state.panes.range(last + 1..=end) {
            self.add(&mut acc, pane);
        }
        let leaving = last - self.spec.window_ms + 1..=end - self.spec.window_ms;
        for (_, pane) in self.state.panes.range(leaving) {
            for (key, value) in pane {
                if let Some((sum, n)) = acc.remove(key)
                    && n > 1
                {
                    acc.insert(key.clone(), (inverse(sum, value.clone()), n - 1));
                }
            }
        }
        acc
    }
}

impl<K: Key, V: Persist> Node for ReduceByKeyAndWindow<K, V> {
    fn compute(&mut self, step: &mut Step<'_>) -> Result<()> {
        let t = step.input.batch_time.as_millis();
        if let Some(batch) = step.take::<(K, V)>(self.input)? {
            let pane = reduce_values(batch.into_values().flatten(), &self.reduce);
            if !pane.is_empty() {
                self.state.panes.insert(t, pane);
            }
        }
        let out = if self.spec.due(step.input.batch_time) {
            let window = self.window_at(t);
            let pairs: Vec<(K, V)> = window
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect();
            if self.inverse.is_some() {
                self.state.current = window;
            }
            self.state.last_emit = Some(t);
            Some(distribute(pairs, self.partitions))
        } else {
            None
        };
        // The incremental path still needs the panes that leave at the next window.
        let keep_after = self.state.last_emit.unwrap_or(t).min(t) - self.spec.window_ms;
        self.state.panes.retain(|&pane, _| pane > keep_after);
        step.put(out);
        Ok(())
    }

    window_state!(state);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_batches_before_their_end() {
        let spec = WindowSpec {
            window_ms: 300,
            slide_ms: 200,
        };
        assert!(spec.due(BatchTime::from_millis(400)));
        assert!(!spec.due(BatchTime::from_millis(500)));
        let panes: BTreeMap<i64, i64> = (1..=6).map(|i| (i * 100, i)).collect();
        let got: Vec<i64> = spec.in_window(&panes, 400).copied().collect();
        assert_eq!(got, vec![2, 3, 4]);
    }
}
