//! Stateful streaming programs through crashes and rebuilds, on the real broker.
//!
//! A crash is an output that fails at the `k`-th batch of a run: the run ends with an error
//! after the batch's plan was logged and some of its outputs ran, and the next run (a program
//! built anew, as after a restart of a recompiled binary) recovers from the checkpoint. Every
//! batch a replay emits again must equal what it emitted before, and the running state and every
//! window must equal a reference computed from the lines each batch read, as in a run without
//! crashes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use weir::stream::DStream;

use crate::common::TestEnv;
use crate::stream_support::{
    Collected, Program, crash_at, lines_in_window, produce_lines, sample_lines, word_counts,
};

const PARTITIONS: i32 = 2;

fn totals(lines: &DStream<String>) -> DStream<(String, u64)> {
    words(lines)
        .update_state_by_key(|new: &[u64], total: Option<u64>| {
            Some(total.unwrap_or(0) + new.iter().sum::<u64>())
        })
        .with_state_id("totals")
}

fn words(lines: &DStream<String>) -> DStream<(String, u64)> {
    lines
        .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .map(|w| (w, 1_u64))
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

#[tokio::test(flavor = "multi_thread")]
async fn crashes_leave_state_and_windows_as_without_them() -> Result<()> {
    let env = TestEnv::get().await;
    let lines = sample_lines(300);
    let topic = env.topic("stream-crash", PARTITIONS).await?;
    produce_lines(&env.producer()?, &topic, PARTITIONS, &lines).await?;
    let mut program = Program::new(env, "stream-crash", &topic, 10);
    program.lines = lines.len();
    // Snapshots fall between slides, so recovery restores half-filled panes.
    program.config.checkpoint_interval = Some(Duration::from_millis(300));
    let dir = tempfile::tempdir()?;
    let (window, slide) = (Duration::from_millis(500), Duration::from_millis(200));
    let (input, state, windows, inverse) = (
        Collected::default(),
        Collected::default(),
        Collected::default(),
        Collected::default(),
    );
    let build = |lines: &DStream<String>, crash: Option<u64>| {
        state.attach(&totals(lines), |_| {});
        let pairs = words(lines);
        windows.attach(
            &pairs.reduce_by_key_and_window(|a, b| a + b, window, slide),
            |_| {},
        );
        inverse.attach(
            &pairs
                .reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, window, slide)
                .with_state_id("inverse"),
            |_| {},
        );
        if let Some(k) = crash {
            crash_at(lines, k);
        }
    };

    for k in [4, 6, 3] {
        let error = program
            .run_expecting_error(dir.path(), &input, |l| build(l, Some(k)))
            .await?;
        ensure!(error.contains("injected crash"), "{error}");
    }
    program.run(dir.path(), &input, |l| build(l, None)).await?;

    let input = input.batches()?;
    let read: Vec<String> = input.values().flatten().cloned().collect();
    ensure!(
        sorted(read.clone()) == sorted(lines.clone()),
        "every line exactly once: read {} of {}",
        read.len(),
        lines.len()
    );
    let state = state.batches()?;
    let mut seen: Vec<String> = Vec::new();
    for (t, batch) in &input {
        seen.extend(batch.iter().cloned());
        let expected: Vec<(String, u64)> = word_counts(&seen).into_iter().collect();
        let got = sorted(state.get(t).cloned().unwrap_or_default());
        ensure!(
            got == expected,
            "state after batch {t}: {got:?} != {expected:?}"
        );
    }
    let windows = windows.batches()?;
    ensure!(windows.len() >= 3, "too few windows: {}", windows.len());
    ensure!(
        windows == inverse.batches()?,
        "the incremental windows differ from the plain ones"
    );
    for (t, got) in &windows {
        let expected: Vec<(String, u64)> = word_counts(&lines_in_window(&input, *t, window))
            .into_iter()
            .collect();
        ensure!(
            sorted(got.clone()) == expected,
            "window ending {t}: {got:?} != {expected:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuilt_program_resumes_and_a_changed_state_type_is_refused() -> Result<()> {
    let env = TestEnv::get().await;
    let first = sample_lines(60);
    let topic = env.topic("stream-rebuild", PARTITIONS).await?;
    let producer = env.producer()?;
    produce_lines(&producer, &topic, PARTITIONS, &first).await?;
    let mut program = Program::new(env, "stream-rebuild", &topic, 20);
    program.lines = first.len();
    let dir = tempfile::tempdir()?;
    let input = Collected::default();
    program
        .run(dir.path(), &input, |l| {
            let _ = totals(l);
        })
        .await?;

    // The same id and schema version with a state type whose encoding differs: refused with
    // what to do, never mis-decoded here.
    let error = program
        .run_expecting_error(dir.path(), &input, |l| {
            let _ = words(l)
                .update_state_by_key(|_: &[u64], s: Option<String>| s)
                .with_state_id("totals");
        })
        .await?;
    ensure!(
        error.contains("the state of stream operator \"totals\"")
            && error.contains("cannot be decoded as")
            && error.contains("with_schema_version"),
        "{error}"
    );
    // A new schema version: the checkpoint says what changed and how to go on.
    let error = program
        .run_expecting_error(dir.path(), &input, |l| {
            let _ = totals(l).with_schema_version(2);
        })
        .await?;
    ensure!(
        error.contains("operator \"totals\" state schema 1 -> 2")
            && error.contains("checkpoint reset --keep-offsets"),
        "{error}"
    );

    // The program rebuilt with an unrelated change (another output) resumes its totals.
    let second = sample_lines(90)[60..].to_vec();
    produce_lines(&producer, &topic, PARTITIONS, &second).await?;
    program.lines = second.len();
    let (input, state) = (Collected::default(), Collected::default());
    program
        .run(dir.path(), &input, |l| {
            state.attach(&totals(l), |_| {});
            l.filter(|line| line.contains("weir"))
                .foreach_batch(|_, _| Ok(()));
        })
        .await?;
    let last = state.batches()?.into_values().last().unwrap_or_default();
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let expected: Vec<(String, u64)> = word_counts(&all).into_iter().collect();
    ensure!(
        sorted(last.clone()) == expected,
        "totals after the rebuild: {last:?} != {expected:?}"
    );
    let _: BTreeMap<i64, Vec<String>> = input.batches()?;
    Ok(())
}

/// Whether [`Fragile`] refuses to be encoded once a total reaches [`FRAGILE_AT`].
static FRAGILE: AtomicBool = AtomicBool::new(true);
const FRAGILE_AT: u64 = 12;

/// A running total whose encoding fails, while [`FRAGILE`] is set, once it is large: a state
/// that passes the check at the first batch and fails at a later snapshot.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Fragile(u64);

impl Serialize for Fragile {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if FRAGILE.load(Ordering::SeqCst) && self.0 >= FRAGILE_AT {
            return Err(serde::ser::Error::custom(
                "the fragile total refuses to be encoded",
            ));
        }
        serializer.serialize_newtype_struct("Fragile", &self.0)
    }
}

fn fragile_totals(lines: &DStream<String>) -> DStream<(String, Fragile)> {
    words(lines)
        .update_state_by_key(|new: &[u64], total: Option<Fragile>| {
            Some(Fragile(total.map_or(0, |t| t.0) + new.iter().sum::<u64>()))
        })
        .with_state_id("fragile-totals")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_that_cannot_be_encoded_stops_the_pipeline_without_a_snapshot() -> Result<()> {
    let env = TestEnv::get().await;
    let lines = sample_lines(80);
    let topic = env.topic("stream-encode", PARTITIONS).await?;
    produce_lines(&env.producer()?, &topic, PARTITIONS, &lines).await?;
    let mut program = Program::new(env, "stream-encode", &topic, 4);
    program.lines = lines.len();
    program.config.checkpoint_interval = Some(Duration::from_millis(200));
    let dir = tempfile::tempdir()?;

    // Both runs collect into the same collectors, which check that a replayed batch gives
    // what its first run gave.
    let (input, state) = (Collected::default(), Collected::default());
    let error = program
        .run_expecting_error(dir.path(), &input, |l| {
            state.attach(&fragile_totals(l), |_| {});
        })
        .await?;
    ensure!(
        error.contains("\"fragile-totals\"")
            && error.contains("the fragile total refuses to be encoded"),
        "{error}"
    );
    // Every snapshot left is one recovery can read: the newest holds the operator's state.
    let inspection = weir::checkpoint::inspect(dir.path())?;
    let newest = inspection.snapshots.first().context("no snapshot at all")?;
    let weir::checkpoint::SnapshotStatus::Valid(summary) = &newest.status else {
        bail!("the newest snapshot is not valid: {newest:?}");
    };
    ensure!(
        summary.operator_state.contains_key("fragile-totals"),
        "{summary:?}"
    );

    // Once the state can be encoded, the program resumes from that snapshot and the replayed
    // batches, and its totals are those of every line.
    FRAGILE.store(false, Ordering::SeqCst);
    program
        .run(dir.path(), &input, |l| {
            state.attach(&fragile_totals(l), |_| {});
        })
        .await?;
    let last = state.batches()?.into_values().last().unwrap_or_default();
    let got: Vec<(String, u64)> = sorted(last.into_iter().map(|(w, t)| (w, t.0)).collect());
    let expected: Vec<(String, u64)> = word_counts(&lines).into_iter().collect();
    ensure!(
        got == expected,
        "totals after recovery: {got:?} != {expected:?}"
    );
    Ok(())
}
