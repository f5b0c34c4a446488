//! Keyed state: `update_state_by_key`, and how any stateful operator is given its stable id,
//! schema version and idle timeout.
//!
//! The state lives in the checkpoint under the operator's id and the schema version the program
//! declares, as bincode behind an envelope that names the operator's kind ([`super::codec`]).
//! Rust type names are never stored or compared: they change with a module move or a compiler
//! release, and a recompiled program must still resume. Recovery re-executes the plans logged
//! after the snapshot, which recomputes the state exactly (invariant 5).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::BatchTime;

use super::codec::{decode_state, encode_state};
use super::dstream::{DStream, Data, Key, Persist, lock};
use super::graph::{Layout, Node, NodeId, OperatorInfo, Step};
use super::keyed::distribute;

/// One key's state and the last batch that brought it values.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Keep<S> {
    state: S,
    last_update_ms: i64,
}

type UpdateFn<V, S> = Box<dyn Fn(&[V], Option<S>) -> Option<S> + Send + Sync + 'static>;

impl<K: Key, V: Data> DStream<(K, V)> {
    /// Keeps a state per key across batches (Spark's `updateStateByKey`). Every batch, `update`
    /// is called for every key that has new values or a state, in key order, with the batch's
    /// values of the key (in arrival order) and the previous state; `None` removes the key. The
    /// result is every key's state after the batch, partitioned by key.
    ///
    /// The state is kept in the checkpoint under a stable operator id: derived
    /// (`update_state_by_key-0`, … in definition order) unless given with
    /// [`with_state_id`](DStream::with_state_id), which is better, because the derived id moves
    /// when another stateful operator is defined before this one. Keys without values for the
    /// [`with_idle_timeout`](DStream::with_idle_timeout) are dropped without calling `update`.
    ///
    /// ```
    /// # fn example(words: weir::stream::DStream<String>) {
    /// let totals = words
    ///     .map(|w| (w, 1_u64))
    ///     .update_state_by_key(|new: &[u64], total: Option<u64>| {
    ///         Some(total.unwrap_or(0) + new.iter().sum::<u64>())
    ///     })
    ///     .with_state_id("word-totals");
    /// # }
    /// ```
    pub fn update_state_by_key<S: Persist>(
        &self,
        update: impl Fn(&[V], Option<S>) -> Option<S> + Send + Sync + 'static,
    ) -> DStream<(K, S)> {
        let (id, partitions) = {
            let mut graph = lock(&self.graph);
            (graph.derive_id(KIND), graph.output_partitions)
        };
        self.then(
            UpdateStateByKey::<K, V, S> {
                input: self.node,
                partitions,
                info: OperatorInfo {
                    kind: KIND,
                    id,
                    schema_version: 1,
                    idle_timeout: None,
                },
                update: Box::new(update),
                state: BTreeMap::new(),
            },
            Layout::Keyed(partitions),
            &[],
        )
    }
}

const KIND: &str = "update_state_by_key";

impl<T> DStream<T> {
    /// Gives the stateful operator that produced this stream its stable id in the checkpoint:
    /// 1 to 100 of `a-z A-Z 0-9 . _ -`, unique in the program.
    #[must_use]
    pub fn with_state_id(self, id: impl Into<String>) -> Self {
        let id = id.into();
        let plain = !id.is_empty()
            && id.len() <= 100
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !plain {
            lock(&self.graph).error(Error::config(
                "with_state_id",
                format!("{id:?} must be 1 to 100 of a-z A-Z 0-9 . _ -"),
            ));
            return self;
        }
        self.configure("with_state_id", |info| {
            info.id = id;
            Ok(())
        })
    }

    /// Declares the version of the state's schema (1 unless set). Together with the operator's id
    /// it identifies the state in the checkpoint: renaming the state type or moving it to
    /// another module changes neither, so the program resumes. Raise it when the state's
    /// encoding changes (a field added, removed or retyped): the checkpoint then refuses to
    /// restore the old state into the new type, and says how to start fresh state at the stored
    /// offsets. A change without a new version is caught only when the old bytes do not decode
    /// as the new type.
    ///
    /// ```
    /// # fn example(words: weir::stream::DStream<String>) {
    /// #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// struct Total {
    ///     count: u64,
    ///     // Added in version 2.
    ///     last_seen_ms: i64,
    /// }
    ///
    /// let totals = words
    ///     .map(|w| (w, 1_u64))
    ///     .update_state_by_key(|new: &[u64], total: Option<Total>| {
    ///         let count = total.map_or(0, |t| t.count) + new.iter().sum::<u64>();
    ///         Some(Total { count, last_seen_ms: 0 })
    ///     })
    ///     .with_state_id("word-totals")
    ///     .with_schema_version(2);
    /// # }
    /// ```
    #[must_use]
    pub fn with_schema_version(self, version: u32) -> Self {
        self.configure("with_schema_version", |info| {
            info.schema_version = version;
            Ok(())
        })
    }

    /// Drops the state of keys that received no value for `timeout` of batch time, so that
    /// state does not grow without bound (`update_state_by_key` only).
    #[must_use]
    pub fn with_idle_timeout(self, timeout: Duration) -> Self {
        self.configure("with_idle_timeout", |info| {
            if info.kind != KIND {
                return Err(format!(
                    "applies to update_state_by_key, not to {}",
                    info.kind
                ));
            }
            info.idle_timeout = Some(timeout);
            Ok(())
        })
    }

    fn configure(
        self,
        what: &'static str,
        change: impl FnOnce(&mut OperatorInfo) -> Result<(), String>,
    ) -> Self {
        let mut graph = lock(&self.graph);
        let result = match graph.node_mut(self.node).and_then(|n| n.operator_mut()) {
            Some(info) => change(info),
            None => Err(
                "the stream was not produced by a stateful operator; call it right after update_state_by_key or a window operator".to_owned(),
            ),
        };
        if let Err(message) = result {
            graph.error(Error::config(what, message));
        }
        drop(graph);
        self
    }
}

struct UpdateStateByKey<K, V, S> {
    input: NodeId,
    partitions: u32,
    info: OperatorInfo,
    update: UpdateFn<V, S>,
    state: BTreeMap<K, Keep<S>>,
}

impl<K: Key, V: Data, S: Persist> UpdateStateByKey<K, V, S> {
    fn timed_out(&self, keep: &Keep<S>, t: BatchTime) -> bool {
        self.info.idle_timeout.is_some_and(|timeout| {
            let idle = t.as_millis().saturating_sub(keep.last_update_ms);
            u128::try_from(idle).unwrap_or(0) >= timeout.as_millis()
        })
    }

    fn step(&mut self, t: BatchTime, pairs: impl IntoIterator<Item = (K, V)>) {
        let mut values: BTreeMap<K, Vec<V>> = BTreeMap::new();
        for (key, value) in pairs {
            values.entry(key).or_default().push(value);
        }
        let old = std::mem::take(&mut self.state);
        let mut next = BTreeMap::new();
        for (key, keep) in old {
            let new = values.remove(&key).unwrap_or_default();
            if new.is_empty() && self.timed_out(&keep, t) {
                continue;
            }
            let last_update_ms = if new.is_empty() {
                keep.last_update_ms
            } else {
                t.as_millis()
            };
            if let Some(state) = (self.update)(&new, Some(keep.state)) {
                next.insert(
                    key,
                    Keep {
                        state,
                        last_update_ms,
                    },
                );
            }
        }
        for (key, new) in values {
            if let Some(state) = (self.update)(&new, None) {
                next.insert(
                    key,
                    Keep {
                        state,
                        last_update_ms: t.as_millis(),
                    },
                );
            }
        }
        self.state = next;
    }
}

impl<K: Key, V: Data, S: Persist> Node for UpdateStateByKey<K, V, S> {
    fn compute(&mut self, step: &mut Step<'_>) -> Result<()> {
        let Some(batch) = step.take::<(K, V)>(self.input)? else {
            step.put::<(K, S)>(None);
            return Ok(());
        };
        self.step(step.input.batch_time, batch.into_values().flatten());
        let pairs = self
            .state
            .iter()
            .map(|(k, keep)| (k.clone(), keep.state.clone()));
        step.put(Some(distribute(pairs, self.partitions)));
        Ok(())
    }

    fn operator(&self) -> Option<&OperatorInfo> {
        Some(&self.info)
    }

    fn operator_mut(&mut self) -> Option<&mut OperatorInfo> {
        Some(&mut self.info)
    }

    fn save(&self) -> Result<Vec<u8>, String> {
        encode_state(self.info.kind, &self.state)
    }

    fn load(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.state = decode_state(self.info.kind, bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(timeout: Option<Duration>) -> UpdateStateByKey<String, u64, u64> {
        UpdateStateByKey {
            input: 0,
            partitions: 2,
            info: OperatorInfo {
                kind: KIND,
                id: "x".into(),
                schema_version: 1,
                idle_timeout: timeout,
            },
            update: Box::new(|new: &[u64], old: Option<u64>| {
                Some(old.unwrap_or(0) + new.iter().sum::<u64>())
            }),
            state: BTreeMap::new(),
        }
    }

    fn counts(n: &UpdateStateByKey<String, u64, u64>) -> Vec<(String, u64)> {
        n.state.iter().map(|(k, v)| (k.clone(), v.state)).collect()
    }

    #[test]
    fn idle_keys_time_out() {
        let mut n = node(Some(Duration::from_secs(2)));
        let t = BatchTime::from_millis;
        n.step(t(1_000), [("a".to_owned(), 1), ("b".to_owned(), 1)]);
        n.step(t(2_000), [("a".to_owned(), 1)]);
        assert_eq!(counts(&n), vec![("a".into(), 2), ("b".into(), 1)]);
        n.step(t(3_000), []);
        assert_eq!(counts(&n), vec![("a".into(), 2)], "b idle since 1 s");
    }

    #[test]
    fn state_round_trips_and_refuses_another_shape() {
        let mut n = node(None);
        n.step(BatchTime::from_millis(1), [("a".to_owned(), 3)]);
        let bytes = n.save().unwrap();
        let mut m = node(None);
        m.load(&bytes).unwrap();
        assert_eq!(counts(&m), vec![("a".into(), 3)]);

        let mut other: UpdateStateByKey<String, u64, String> = UpdateStateByKey {
            input: 0,
            partitions: 2,
            info: n.info.clone(),
            update: Box::new(|_, s| s),
            state: BTreeMap::new(),
        };
        let e = other.load(&bytes).unwrap_err();
        assert!(
            e.contains("cannot be decoded as") && e.contains("with_schema_version"),
            "{e}"
        );
    }
}
