//! The runtime: the scheduler that ticks batches (Spark's JobGenerator), the jobs it runs, and
//! shutdown on signals.
//!
//! This is the only module that reads the wall clock: batch times come from here and are handed
//! to everything else (invariant 3).
#![allow(clippy::disallowed_methods)]

mod job;
#[cfg(test)]
mod memory;
mod pipeline;
mod scheduler;
pub mod shutdown;
mod status;

pub use job::{BatchJob, BatchOutcome, TableJob};
pub(crate) use pipeline::refuse_when_sink_ahead;
pub use pipeline::{pipeline_identity, run_pipeline};
pub use scheduler::RunSummary;
/// The engine's own parts: public only for weir's integration tests and benchmarks
/// (the `internals` feature, which they enable), not an API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub use scheduler::{Schedule, Scheduler};
#[cfg(not(feature = "internals"))]
#[allow(unused_imports)]
pub(crate) use scheduler::{Schedule, Scheduler};

pub use status::{PartitionStatus, StatusReport, pipeline_status};
