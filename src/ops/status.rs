//! What the status page and the health endpoints show, per pipeline: the last batches, the lag,
//! the last commits, the records skipped and dead-lettered, readiness, and a configuration summary without secrets.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use serde::Serialize;

/// Batches kept for the charts.
const BATCHES_KEPT: usize = 120;
/// Commits kept for the table.
const EVENTS_KEPT: usize = 20;

/// One batch, for the charts.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BatchPoint {
    /// The batch time, epoch ms.
    pub time_ms: i64,
    pub records: u64,
    pub rows: u64,
    pub processing_ms: u64,
    pub scheduling_delay_ms: u64,
}

/// A partition's lag after the last planned batch.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// Where the next batch starts.
    pub position: i64,
    /// The end of the log (the last stable offset).
    pub end: i64,
    pub lag: u64,
}

/// A batch that committed something.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CommitPoint {
    pub batch_time_ms: i64,
    /// When it finished, epoch ms.
    pub committed_at_ms: i64,
    pub ranges: Vec<String>,
    pub records: u64,
    pub rows: u64,
    pub already_committed: u64,
}

/// One record stored in `weir_dead_letters`, for the status page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct DeadLetterPoint {
    pub batch_time_ms: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
struct Inner {
    batch_interval_ms: u64,
    config: serde_json::Value,
    recovered: bool,
    sink_ready: bool,
    paused: Option<String>,
    sink_failure: Option<String>,
    rate_limit: Option<f64>,
    totals: Totals,
    batches: VecDeque<BatchPoint>,
    lag: BTreeMap<(String, i32), PartitionLag>,
    commits: VecDeque<CommitPoint>,
    dead_letters: VecDeque<DeadLetterPoint>,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Totals {
    batches: u64,
    records: u64,
    rows: u64,
    skipped: u64,
    dead_letters: u64,
}

/// The live status of one pipeline.
#[derive(Debug)]
pub(crate) struct PipelineStatus {
    name: String,
    inner: Mutex<Inner>,
    /// Sink writes waiting to retry.
    retrying: AtomicUsize,
}

static REGISTRY: LazyLock<Mutex<BTreeMap<String, Arc<PipelineStatus>>>> =
    LazyLock::new(Mutex::default);

/// The status of pipeline `name`, created on first use.
pub(crate) fn status(name: &str) -> Arc<PipelineStatus> {
    let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(registry.entry(name.to_owned()).or_insert_with(|| {
        Arc::new(PipelineStatus {
            name: name.to_owned(),
            inner: Mutex::default(),
            retrying: AtomicUsize::new(0),
        })
    }))
}

/// Marks a sink write as retrying until dropped.
#[derive(Debug)]
pub(crate) struct Retrying(Arc<PipelineStatus>);

impl Drop for Retrying {
    fn drop(&mut self) {
        self.0.retrying.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PipelineStatus {
    // The data behind the lock is whole even after a panic elsewhere: only counters and copies.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh run: forgets readiness and the last run's pause.
    pub(crate) fn starting(&self, batch_interval_ms: u64, config: serde_json::Value) {
        let mut inner = self.lock();
        super::metrics::register(&self.name);
        inner.batch_interval_ms = batch_interval_ms;
        inner.config = config;
        inner.recovered = false;
        inner.sink_ready = false;
        inner.paused = None;
    }

    pub(crate) fn set_sink_ready(&self) {
        self.lock().sink_ready = true;
    }

    pub(crate) fn set_recovered(&self) {
        self.lock().recovered = true;
    }

    /// Sets or clears (`None`) the reason the pipeline is paused.
    pub(crate) fn set_paused(&self, reason: Option<&str>) {
        ::metrics::gauge!(super::metrics::PAUSED, "pipeline" => self.name.clone(), "reason" => "disk_full")
            .set(if reason.is_some() { 1.0 } else { 0.0 });
        self.lock().paused = reason.map(str::to_owned);
    }

    /// A sink write failed and waits to retry: not ready until the guard is dropped.
    pub(crate) fn sink_retrying(self: &Arc<Self>, reason: String) -> Retrying {
        self.retrying.fetch_add(1, Ordering::SeqCst);
        self.lock().sink_failure = Some(reason);
        Retrying(Arc::clone(self))
    }

    pub(crate) fn set_rate_limit(&self, rate: Option<f64>) {
        if let Some(rate) = rate {
            ::metrics::gauge!(super::metrics::RATE_LIMIT, "pipeline" => self.name.clone())
                .set(rate);
        }
        self.lock().rate_limit = rate;
    }

    /// `Ok` when ready, else why not.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        let inner = self.lock();
        if let Some(paused) = &inner.paused {
            return Err(format!("paused: {paused}"));
        }
        if self.retrying.load(Ordering::SeqCst) > 0 {
            let reason = inner
                .sink_failure
                .as_deref()
                .unwrap_or("sink write failing");
            return Err(format!("sink failing: {reason}"));
        }
        if !inner.sink_ready {
            return Err("connecting to the sink".to_owned());
        }
        if !inner.recovered {
            return Err("recovering from the checkpoint".to_owned());
        }
        Ok(())
    }

    pub(crate) fn record_batch(&self, batch: BatchPoint, commit: Option<CommitPoint>) {
        let mut inner = self.lock();
        inner.totals.batches += 1;
        inner.totals.records += batch.records;
        inner.totals.rows += batch.rows;
        push(&mut inner.batches, batch, BATCHES_KEPT);
        if let Some(commit) = commit {
            push(&mut inner.commits, commit, EVENTS_KEPT);
        }
    }

    pub(crate) fn record_rejects(&self, skipped: u64, dead_letters: u64) {
        let mut inner = self.lock();
        inner.totals.skipped += skipped;
        inner.totals.dead_letters += dead_letters;
    }

    /// A record written to `weir_dead_letters`. A write that rolled back and ran again writes
    /// its dead letters again: each record is listed once.
    pub(crate) fn record_dead_letter(&self, point: DeadLetterPoint) {
        let mut inner = self.lock();
        let same = |d: &DeadLetterPoint| {
            (d.topic.as_str(), d.partition, d.offset)
                == (point.topic.as_str(), point.partition, point.offset)
        };
        if !inner.dead_letters.iter().any(same) {
            push(&mut inner.dead_letters, point, EVENTS_KEPT);
        }
    }

    pub(crate) fn set_lag(&self, lags: impl IntoIterator<Item = PartitionLag>) {
        let mut inner = self.lock();
        for lag in lags {
            #[allow(clippy::cast_precision_loss)]
            ::metrics::gauge!(
                super::metrics::PARTITION_LAG,
                "pipeline" => self.name.clone(),
                "topic" => lag.topic.clone(),
                "partition" => lag.partition.to_string(),
            )
            .set(lag.lag as f64);
            inner.lag.insert((lag.topic.clone(), lag.partition), lag);
        }
    }

    /// Everything, as the JSON of `/api/status`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let ready = self.readiness();
        let inner = self.lock();
        serde_json::json!({
            "pipeline": self.name,
            "ready": ready.is_ok(),
            "not_ready_reason": ready.err(),
            "batch_interval_ms": inner.batch_interval_ms,
            "rate_limit_records_per_second": inner.rate_limit,
            "totals": inner.totals,
            "batches": inner.batches,
            "lag": inner.lag.values().collect::<Vec<_>>(),
            "commits": inner.commits.iter().rev().collect::<Vec<_>>(),
            "dead_letters": inner.dead_letters.iter().rev().collect::<Vec<_>>(),
            "config": inner.config,
        })
    }
}

fn push<T>(queue: &mut VecDeque<T>, item: T, keep: usize) {
    if queue.len() == keep {
        queue.pop_front();
    }
    queue.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_dead_letters_are_listed_once_each_newest_first() {
        let status = status("status-dead-letters-test");
        let point = |offset: i64| DeadLetterPoint {
            batch_time_ms: 1_000,
            topic: "orders".to_owned(),
            partition: 0,
            offset,
            reason: "not a number".to_owned(),
        };
        for offset in [5, 6, 5] {
            status.record_dead_letter(point(offset));
        }
        for offset in 0..30 {
            status.record_dead_letter(point(100 + offset));
        }
        let json = status.to_json();
        let listed = json["dead_letters"].as_array().unwrap();
        assert_eq!(listed.len(), EVENTS_KEPT);
        assert_eq!(listed[0]["offset"], 129);
        assert_eq!(listed[0]["reason"], "not a number");
    }
}
