//! The rig of the streaming tests: lines produced to a fresh topic, a streaming program run
//! against it with a short batch interval until every line was read (at most 120 s), and
//! collectors that keep each batch's items by batch time (and check that a replayed batch gave
//! the same items).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;
use weir::runtime::RunSummary;
use weir::stream::{DStream, Data, StreamConfig, StreamingContext};

use crate::common::{TestEnv, TestTopic};

/// The batch interval of the tests.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Produces `lines` round-robin over `partitions` partitions, in order within each.
pub async fn produce_lines(
    producer: &FutureProducer,
    topic: &TestTopic,
    partitions: i32,
    lines: &[String],
) -> Result<()> {
    let mut pending = Vec::new();
    for (i, line) in (0..).zip(lines) {
        let record = FutureRecord::<(), _>::to(&topic.name)
            .partition(i % partitions)
            .payload(line);
        pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for delivery in pending {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// Each batch's items by batch time, over every run of a program.
pub struct Collected<T> {
    batches: Arc<Mutex<BTreeMap<i64, Vec<T>>>>,
    mismatches: Arc<Mutex<Vec<String>>>,
}

impl<T> Clone for Collected<T> {
    fn clone(&self) -> Self {
        Self {
            batches: Arc::clone(&self.batches),
            mismatches: Arc::clone(&self.mismatches),
        }
    }
}

impl<T> Default for Collected<T> {
    fn default() -> Self {
        Self {
            batches: Arc::default(),
            mismatches: Arc::default(),
        }
    }
}

impl<T: Data + PartialEq + std::fmt::Debug> Collected<T> {
    /// Collects every batch of `stream`; `on_batch` is told the total of items collected.
    pub fn attach(&self, stream: &DStream<T>, on_batch: impl Fn(usize) + Send + 'static) {
        let me = self.clone();
        stream.foreach_batch(move |t, items| {
            let t = t.as_millis();
            let mut batches = me.batches.lock().unwrap_or_else(PoisonError::into_inner);
            match batches.get(&t) {
                Some(before) if *before != items => me
                    .mismatches
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(format!(
                        "batch {t} replayed with other items:\nbefore {before:?}\nafter  {items:?}"
                    )),
                _ => {
                    batches.insert(t, items);
                }
            }
            on_batch(batches.values().map(Vec::len).sum());
            Ok(())
        });
    }

    /// Every batch, checked for replays that differ.
    pub fn batches(&self) -> Result<BTreeMap<i64, Vec<T>>> {
        let mismatches = self
            .mismatches
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ensure!(mismatches.is_empty(), "{}", mismatches.join("\n"));
        Ok(self
            .batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }
}

/// A streaming program over one topic, run in the test's process.
pub struct Program {
    /// The configuration each run starts from.
    pub config: StreamConfig,
    /// The topic.
    pub topic: String,
    /// The lines the program must read before it stops.
    pub lines: usize,
}

impl Program {
    /// A program named after `prefix` reading `topic` with batches of at most
    /// `per_batch` records per partition.
    pub fn new(env: &TestEnv, prefix: &str, topic: &TestTopic, per_batch: u64) -> Self {
        let mut config = StreamConfig::new(TestEnv::unique_name(prefix), &env.brokers);
        config.output_partitions = 3;
        config.source.max_rate_per_partition = Some(per_batch * 10);
        Self {
            config,
            topic: topic.name.clone(),
            lines: 0,
        }
    }

    /// Runs until the input collector `input` holds `self.lines` lines, then stops gracefully;
    /// `build` adds the operators and outputs to the input stream. Fails after 120 s.
    pub async fn run(
        &self,
        dir: &Path,
        input: &Collected<String>,
        build: impl FnOnce(&DStream<String>),
    ) -> Result<RunSummary> {
        let stop = CancellationToken::new();
        let ssc = StreamingContext::get_or_create(dir, || {
            let ssc = StreamingContext::new(self.config.clone(), INTERVAL);
            let lines = ssc.kafka_direct_stream::<String>(&[&self.topic]);
            let (want, done) = (self.lines, stop.clone());
            input.attach(&lines, move |n| {
                if n >= want {
                    done.cancel();
                }
            });
            build(&lines);
            Ok(ssc)
        })?;
        let run = tokio::spawn(ssc.run(stop.clone(), None));
        let summary = tokio::select! {
            joined = run => joined?,
            () = tokio::time::sleep(Duration::from_secs(120)) => {
                stop.cancel();
                bail!("the program did not read {} lines within 120 s", self.lines);
            }
        };
        summary.context("the streaming program failed")
    }

    /// Runs once and returns the run's error, which the test expects.
    pub async fn run_expecting_error(
        &self,
        dir: &Path,
        input: &Collected<String>,
        build: impl FnOnce(&DStream<String>),
    ) -> Result<String> {
        match self.run(dir, input, build).await {
            Ok(summary) => bail!("the run should have failed, but ended with {summary:?}"),
            Err(e) => Ok(format!("{e:#}")),
        }
    }
}

/// The words of every line of the batches in `(end - window, end]`.
pub fn lines_in_window(
    input: &BTreeMap<i64, Vec<String>>,
    end: i64,
    window: Duration,
) -> Vec<String> {
    let window = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    input
        .range(end - window + 1..=end)
        .flat_map(|(_, lines)| lines.iter().cloned())
        .collect()
}

/// How often each word occurs in `lines`.
pub fn word_counts<'a>(lines: impl IntoIterator<Item = &'a String>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        for word in line.split_whitespace() {
            *counts.entry(word.to_owned()).or_default() += 1;
        }
    }
    counts
}

/// `n` lines of words from a small vocabulary, deterministic.
pub fn sample_lines(n: usize) -> Vec<String> {
    const WORDS: [&str; 7] = ["hello", "world", "me", "you", "spark", "weir", "kafka"];
    (0..n)
        .map(|i| {
            (0..1 + i % 4)
                .map(|j| WORDS[(i * 7 + j * 3 + i / 5) % WORDS.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// An output that fails at its `k`-th batch: a crash after the batch's plan was logged and the
/// outputs defined before it ran, before its sink writes.
pub fn crash_at(lines: &DStream<String>, k: u64) {
    let calls = Arc::new(AtomicU64::new(0));
    lines.foreach_batch(move |_, _| {
        if calls.fetch_add(1, Ordering::SeqCst) + 1 == k {
            return Err("injected crash".into());
        }
        Ok(())
    });
}
