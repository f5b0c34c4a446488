//! The Prometheus recorder and the names of weir's metrics (base units, `_total` counters).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::{Error, Result};

pub(crate) const RECORDS_READ: &str = "weir_records_read_total";
pub(crate) const BYTES_READ: &str = "weir_bytes_read_total";
pub(crate) const ROWS_WRITTEN: &str = "weir_rows_written_total";
pub(crate) const BATCHES: &str = "weir_batches_total";
pub(crate) const BATCH_PROCESSING: &str = "weir_batch_processing_seconds";
pub(crate) const BATCH_SCHEDULING_DELAY: &str = "weir_batch_scheduling_delay_seconds";
pub(crate) const PARTITION_LAG: &str = "weir_partition_lag";
pub(crate) const RECORDS_SKIPPED: &str = "weir_records_skipped_total";
pub(crate) const DEAD_LETTERS: &str = "weir_dead_letters_total";
pub(crate) const SINK_RETRIES: &str = "weir_sink_retries_total";
pub(crate) const COMMIT_CONFLICTS: &str = "weir_commit_conflicts_total";
pub(crate) const CHECKPOINT_WRITE: &str = "weir_checkpoint_write_seconds";
pub(crate) const CHECKPOINT_BYTES: &str = "weir_checkpoint_bytes";
pub(crate) const RATE_LIMIT: &str = "weir_rate_limit_records_per_second";
pub(crate) const PAUSED: &str = "weir_paused";
pub(crate) const RESIDENT_MEMORY: &str = "weir_process_resident_memory_bytes";

/// Buckets of the `_seconds` histograms: 1 ms to 1 min.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the process-wide Prometheus recorder once and returns its render handle.
pub(crate) fn install() -> Result<PrometheusHandle> {
    static HANDLE: OnceLock<std::result::Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
                .map_err(|e| e.to_string())?
                .build_recorder();
            let handle = recorder.handle();
            ::metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
            describe();
            Ok(handle)
        })
        .clone()
        .map_err(|message| {
            Error::config(
                "pipeline.http",
                format!("cannot install the metrics recorder: {message}"),
            )
        })
}

/// Shows the counters of rare events at 0 from the start, so that `rate()` and alerts see them
/// before the first event.
pub(crate) fn register(pipeline: &str) {
    for counter in [BATCHES, RECORDS_SKIPPED, DEAD_LETTERS, COMMIT_CONFLICTS] {
        ::metrics::counter!(counter, "pipeline" => pipeline.to_owned()).increment(0);
    }
    ::metrics::gauge!(PAUSED, "pipeline" => pipeline.to_owned(), "reason" => "disk_full").set(0.0);
}

/// The text format of every metric, after refreshing the process gauges.
pub(crate) fn render(handle: &PrometheusHandle) -> String {
    if let Some(bytes) = resident_memory_bytes() {
        #[allow(clippy::cast_precision_loss)]
        ::metrics::gauge!(RESIDENT_MEMORY).set(bytes as f64);
    }
    handle.run_upkeep();
    handle.render()
}

fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        RECORDS_READ,
        Unit::Count,
        "Records read from Kafka, replays included."
    );
    describe_counter!(
        BYTES_READ,
        Unit::Bytes,
        "Key and value bytes read from Kafka."
    );
    describe_counter!(
        ROWS_WRITTEN,
        Unit::Count,
        "Rows committed to the sink table, by operation."
    );
    describe_counter!(BATCHES, Unit::Count, "Batches run (replays not included).");
    describe_histogram!(
        BATCH_PROCESSING,
        Unit::Seconds,
        "Time from a batch's start to its commit."
    );
    describe_histogram!(
        BATCH_SCHEDULING_DELAY,
        Unit::Seconds,
        "Time a batch started after its batch time."
    );
    describe_gauge!(
        PARTITION_LAG,
        Unit::Count,
        "Records in the partition after the last planned batch."
    );
    describe_counter!(
        RECORDS_SKIPPED,
        Unit::Count,
        "Records left out by on_error = \"skip\"."
    );
    describe_counter!(
        DEAD_LETTERS,
        Unit::Count,
        "Records stored in the dead-letter table."
    );
    describe_counter!(
        SINK_RETRIES,
        Unit::Count,
        "Sink write attempts retried, by cause."
    );
    describe_counter!(
        COMMIT_CONFLICTS,
        Unit::Count,
        "Writes whose commit row was already there (replays after a crash)."
    );
    describe_histogram!(
        CHECKPOINT_WRITE,
        Unit::Seconds,
        "Time to write and fsync a plan or a snapshot."
    );
    describe_gauge!(
        CHECKPOINT_BYTES,
        Unit::Bytes,
        "Size of the checkpoint directory after the last snapshot."
    );
    describe_gauge!(
        RATE_LIMIT,
        "Records per second per partition the rate controller allows; absent while unbounded."
    );
    describe_gauge!(PAUSED, "1 while the pipeline is paused, by reason.");
    describe_gauge!(
        RESIDENT_MEMORY,
        Unit::Bytes,
        "Resident memory of the process."
    );
}

/// The resident set size from `/proc/self/statm` (Linux; `None` elsewhere).
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Every Linux weir runs on uses 4 KiB pages, and reading the real size needs libc.
    Some(pages * 4096)
}

/// A short cause for a retried sink error, as a label: the error's kind, not its text (which
/// may hold data).
pub(crate) fn retry_cause(error: &Error) -> &'static str {
    match error {
        Error::Database { source, .. } => match source {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Tls(_) => "connection",
            sqlx::Error::Database(db) => {
                let code = db.code();
                match code.as_deref().unwrap_or("") {
                    c if c.starts_with("40") => "conflict",
                    c if c.starts_with("08") || c.starts_with("57P") => "connection",
                    "5" | "6" => "busy",
                    _ => "database",
                }
            }
            _ => "database",
        },
        Error::Io { .. } => "io",
        _ => "other",
    }
}
