//! Sources: where batches come from. The direct Kafka source (assignment, watermarks, planning,
//! range fetch) is the main one; a directory of text files and a TCP socket serve the programs
//! Spark users bring along.
//!
//! Every source speaks the same contract, [`Source`]: it numbers its data by partition and
//! offset, reports watermarks, and reads the offset ranges of a plan. The scheduler plans,
//! logs and replays batches the same way whatever the source; what a source can promise on a
//! replay is its [`Guarantee`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

mod record;

// A batch's records live beside the plan vocabulary, so that sinks need not import sources;
// re-exported here, where users of a source look for them.
pub use crate::batch::{
    PartitionBatch, RangeReader, RangeSender, Record, Sent, TakenCount, range_channels,
};

mod budget;
mod config;
mod file;
mod kafka;
mod planner;
mod set;
mod socket;

pub use budget::{ByteSize, MemoryBudget};
pub use config::{IsolationLevel, KafkaSourceConfig, OnDataLoss, PidConfig, StartingOffsets};
/// The engine's own parts: public only for weir's integration tests and benchmarks
/// (the `internals` feature, which they enable), not an API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub use file::FileSource;
#[cfg(not(feature = "internals"))]
#[allow(unused_imports)]
pub(crate) use file::FileSource;
/// The engine's own parts: public only for weir's integration tests and benchmarks
/// (the `internals` feature, which they enable), not an API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub use kafka::KafkaSource;
#[cfg(not(feature = "internals"))]
#[allow(unused_imports)]
pub(crate) use kafka::KafkaSource;
/// The engine's own parts: public only for weir's integration tests and benchmarks
/// (the `internals` feature, which they enable), not an API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub use planner::Planner;
#[cfg(not(feature = "internals"))]
#[allow(unused_imports)]
pub(crate) use planner::Planner;
pub use planner::{Watermarks, lags};
/// The engine's own parts: public only for weir's integration tests and benchmarks
/// (the `internals` feature, which they enable), not an API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub use set::{SourceKind, SourceSet};
#[cfg(not(feature = "internals"))]
#[allow(unused_imports)]
pub(crate) use set::{SourceKind, SourceSet};
/// The engine's own parts: public only for weir's integration tests and benchmarks
/// (the `internals` feature, which they enable), not an API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub use socket::SocketSource;
#[cfg(not(feature = "internals"))]
#[allow(unused_imports)]
pub(crate) use socket::SocketSource;

use crate::error::Result;
use crate::plan::{BatchPlan, TopicPartition};

/// What a source can promise when a logged plan is executed again after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// The ranges of a logged plan read the same records again (Kafka, files): with a
    /// transactional sink every record lands exactly once.
    ExactlyOnce,
    /// Data is gone once read (a socket): the records of a batch that was planned but not
    /// finished before a crash are lost, and none is ever delivered twice.
    AtMostOnce,
}

/// A source of batches: data numbered by partition and offset, read range by range.
///
/// The scheduler discovers partitions, asks for their [`Watermarks`], plans ranges between them
/// with the `Planner`, logs the plan, and only then calls [`fetch`](Source::fetch). A source
/// that must remember anything to read a range again (a file source's list of files) makes it
/// durable before `watermarks` returns offsets that cover it, so that a logged plan always
/// means the same data.
pub trait Source: Send {
    /// Every partition of the source now.
    ///
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe: the scheduler may drop the future on shutdown.
    fn discover(&mut self) -> impl Future<Output = Result<BTreeSet<TopicPartition>>> + Send;

    /// The first and the one-past-last readable offset of each of `partitions`.
    ///
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe.
    fn watermarks(
        &mut self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> impl Future<Output = Result<BTreeMap<TopicPartition, Watermarks>>> + Send;

    /// Where each of `partitions` starts on a pipeline's first run.
    ///
    /// # Cancel safety
    ///
    /// Implementations must be cancel safe.
    fn starting_positions(
        &mut self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> impl Future<Output = Result<BTreeMap<TopicPartition, i64>>> + Send;

    /// Reads exactly these partitions from these offsets on, replacing any earlier assignment.
    fn assign(&mut self, positions: &BTreeMap<TopicPartition, i64>) -> Result<()>;

    /// The partitions assigned now.
    fn assigned(&self) -> BTreeSet<TopicPartition>;

    /// Every record of every range of `plan`, one [`PartitionBatch`] per range, in the plan's
    /// order. `replay` is true when the plan was logged by an earlier run and is executed again
    /// during recovery.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: after a cancellation, [`assign`](Source::assign) again before fetching.
    fn fetch(
        &mut self,
        plan: &BatchPlan,
        replay: bool,
    ) -> impl Future<Output = Result<Vec<PartitionBatch>>> + Send;

    /// Reads the ranges of `plan` as [`fetch`](Source::fetch) does, but sends each range's
    /// records down its channel in `outputs` (one per range, any order) as they arrive, so that
    /// they can be written while the rest is still being read; returns the records read. A
    /// reader that is gone needs nothing more, but its range is still read to its end (the
    /// next range starts there). The default reads every range whole, then sends it.
    ///
    /// # Cancel safety
    ///
    /// As [`fetch`](Source::fetch); the readers of a cancelled fetch see an error, never a
    /// short range.
    fn fetch_into(
        &mut self,
        plan: &BatchPlan,
        replay: bool,
        outputs: Vec<RangeSender>,
    ) -> impl Future<Output = Result<u64>> + Send {
        async move {
            let mut outputs: BTreeMap<TopicPartition, RangeSender> = outputs
                .into_iter()
                .map(|o| (o.range().tp.clone(), o))
                .collect();
            let mut read = 0;
            for batch in self.fetch(plan, replay).await? {
                read += batch.records.len() as u64;
                if let Some(output) = outputs.remove(&batch.range.tp)
                    && output.send(batch.records).await
                {
                    output.finish().await;
                }
            }
            Ok(read)
        }
    }

    /// Tells the source that every offset before `positions` is done, for lag tools. Nothing
    /// is ever read back from it as truth.
    fn commit_offsets(&self, positions: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        let _ = positions;
        Ok(())
    }

    /// What a replay of a logged plan reads.
    fn guarantee(&self) -> Guarantee {
        Guarantee::ExactlyOnce
    }
}

/// A one-partition source's answer about `partitions`: `value` for its own partition `own`, if
/// asked, and nothing for others.
fn answer_for<V>(
    partitions: &BTreeSet<TopicPartition>,
    own: &TopicPartition,
    value: V,
) -> BTreeMap<TopicPartition, V> {
    partitions
        .get(own)
        .map(|tp| (tp.clone(), value))
        .into_iter()
        .collect()
}

impl Source for KafkaSource {
    async fn discover(&mut self) -> Result<BTreeSet<TopicPartition>> {
        KafkaSource::discover(self).await
    }

    async fn watermarks(
        &mut self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, Watermarks>> {
        KafkaSource::watermarks(self, partitions).await
    }

    async fn starting_positions(
        &mut self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        KafkaSource::starting_positions(self, partitions).await
    }

    fn assign(&mut self, positions: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        KafkaSource::assign(self, positions)
    }

    fn assigned(&self) -> BTreeSet<TopicPartition> {
        KafkaSource::assigned(self)
    }

    async fn fetch(&mut self, plan: &BatchPlan, _replay: bool) -> Result<Vec<PartitionBatch>> {
        KafkaSource::fetch(self, plan).await
    }

    async fn fetch_into(
        &mut self,
        plan: &BatchPlan,
        _replay: bool,
        outputs: Vec<RangeSender>,
    ) -> Result<u64> {
        KafkaSource::fetch_into(self, plan, outputs).await
    }

    fn commit_offsets(&self, positions: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        KafkaSource::commit_offsets(self, positions)
    }
}
