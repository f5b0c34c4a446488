//! The streaming API, shaped after Spark Streaming's DStreams, in Rust idiom and exactly once.
//!
//! A [`StreamingContext`] reads Kafka in direct mode; its [`DStream`]s are typed streams of
//! batches with Spark's operators (`map`, `filter`, `flat_map`, `key_by`, `reduce_by_key`,
//! `count_by_value`, `union`, `transform`, `update_state_by_key`, `window`,
//! `reduce_by_key_and_window`, `count_by_window`) and outputs (`foreach_batch`,
//! `foreach_partition`, `print`, and `sink` into a SQL table through the transactional sink).
//! A stream read by several outputs is computed once per batch ([`DStream::persist_with`]
//! spills large batches to disk), and a [`ReferenceTable`] loaded from a file or a database
//! joins every batch with reference data that is reloaded on an interval.
//!
//! What weir does that Spark does not:
//!
//! - **Deterministic batches** (invariant 3). Operators see the batch time, never the clock;
//!   keyed results come in key order (keys are `Ord`), never in hash-map order; randomness is
//!   seeded from [`PartitionContext::seed`]. A batch replayed after a crash computes exactly what
//!   it computed before.
//! - **State in the checkpoint, code never.** Stateful operators keep serde state under a stable
//!   id with a schema version; the program is rebuilt at every start and its checkpoint restored
//!   into it, so a recompiled program resumes; a state type changed without a new schema
//!   version is reported, not mis-decoded.
//! - **Reference data by batch time.** A [`ReferenceTable`] is reloaded at batch times on the
//!   grid of its refresh interval, and each version is saved in the checkpoint before a batch
//!   uses it: a replayed batch joins with the version its first run used.
//! - **Exactly-once output.** [`DStream::sink`] writes each partition of each batch in one
//!   transaction with its commit row; a replayed batch finds the row and writes nothing.
//!
//! Keyed operators repartition by a stable hash of the key into the context's `N` output
//! partitions ([`StreamConfig::output_partitions`], recorded in the checkpoint); a sink commits
//! each of them separately.

mod append_file;
mod codec;
mod context;
mod dstream;
mod graph;
mod job;
mod keyed;
mod output;
mod persist;
mod reference;
mod sink;
mod source;
mod state;
mod window;

pub use append_file::AppendFile;
pub use context::{DEFAULT_OUTPUT_PARTITIONS, StreamConfig, StreamingContext};
pub use dstream::{BoxError, DStream, Data, Key, PartitionContext, Persist};
pub use graph::PartitionId;
pub use persist::StorageLevel;
pub use reference::{ReferenceTable, SqlRow};
pub use source::{FromKafka, Json, KafkaRecord};

#[cfg(test)]
mod tests;
