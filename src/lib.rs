//! # weir
//!
//! Exactly-once stream processing from Kafka into SQL tables.
//!
//! weir reads Kafka in *direct mode*: for every batch it plans one [`plan::OffsetRange`] per Kafka
//! partition, writes that [`plan::BatchPlan`] to the checkpoint's plan log before anything else
//! happens, reads exactly those ranges, and writes each output partition's result to the sink in one
//! transaction keyed by `(pipeline, batch time, partition)`. A crash at any instant is followed by
//! a replay of the logged plans, and the commit table turns every replayed write into a no-op.
//!
//! The modules follow the life of a batch:
//!
//! - [`config`]: the pipeline file, validated with errors that name the key.
//! - [`source`]: the [`source::Source`] contract and its sources: direct Kafka (assignment,
//!   watermarks, planning, range fetch), a directory of text files, a TCP socket.
//! - [`rate`]: per-partition caps and PID backpressure.
//! - [`checkpoint`]: snapshots, the plan log, recovery.
//! - [`sink`]: the [`sink::Sink`] trait and the SQL sink with its commit table.
//! - [`runtime`]: the scheduler that ticks batches, and shutdown.
//! - [`stream`]: the Spark-Streaming-style API: `StreamingContext` and typed `DStream`s.
//! - [`verify`]: recomputes from Kafka what the sink must hold and compares it with the table.
//! - [`plan`] and [`error`]: the shared vocabulary.
//!
//! `ARCHITECTURE.md`, at the root of the repository, is the code map and the six invariants of
//! the exactly-once protocol, each with the function where it holds and the test that proves it.

pub mod batch;
mod blocking;
pub mod checkpoint;
pub mod config;
mod duration;
pub mod error;
mod hash;
mod ops;
pub mod plan;
pub mod rate;
pub(crate) mod redact;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod stream;
pub mod verify;

pub use error::{Error, Result};
