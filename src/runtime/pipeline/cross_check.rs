//! The start-up cross-check of the checkpoint against the sink's commit table.
//!
//! A batch's plan is logged before the batch writes anything (invariant 2), so a checkpoint knows
//! at least as much as the sink: for every Kafka partition, the checkpoint's position (its
//! snapshot advanced by its logged plans) is at or after the end of the sink's newest commit. A
//! sink *ahead* of the checkpoint means the checkpoint was lost or restored from an old copy.
//! The sink's newer commit then belongs to a batch that ran after every plan the checkpoint
//! logged, and batches run one at a time, so every one of those plans was committed. Then:
//!
//! - a stateless pipeline whose output partitions are its Kafka partitions resumes from the
//!   sink's positions, and says so in the log;
//! - any other pipeline stops with [`Error::SinkAhead`]: its state cannot be rebuilt from the
//!   sink.
//!
//! A sink *behind* the checkpoint is normal (plans logged but not yet committed are replayed);
//! a sink that lost commits the checkpoint relied on is refused by the sink's own contiguity
//! check at the next write.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::blocking::run_blocking;
use crate::checkpoint::{CheckpointStore, PipelineIdentity, Recovery, Snapshot};
use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::plan::{BatchTime, TopicPartition};
use crate::sink::{
    CommittedPosition, CommittedPositions, Sink, legacy_partition_id, source_partition_id,
};
use crate::source::KafkaSource;

/// A Kafka partition where the sink is ahead of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lead {
    /// Where the checkpoint would start the partition's next batch; `None` when it does not know
    /// the partition.
    checkpoint: Option<i64>,
    /// The sink's newest commit of the partition.
    sink: CommittedPosition,
}

/// Recovers `store` and compares it with the sink's commit table; when the sink is ahead, either
/// rewrites the checkpoint to start where the sink ends (stateless pipelines) or fails. Returns
/// the store, ready for the scheduler's own recovery.
///
/// # Cancel safety
///
/// Not cancel safe: dropped while the checkpoint is being rewritten, the directory may hold part
/// of the old checkpoint, which the next start refuses with an error (never a silent restart).
pub(super) async fn reconcile<S: Sink>(
    store: CheckpointStore,
    identity: &PipelineIdentity,
    sink: &S,
    source: &KafkaSource,
    config: &PipelineConfig,
) -> Result<CheckpointStore> {
    let recover_as = identity.clone();
    let (store, known) = with_store(store, move |store| {
        Ok(match store.recover(&recover_as)? {
            Recovery::Fresh => None,
            Recovery::Resume { snapshot, .. } => Some((
                store.positions().cloned().unwrap_or_default(),
                store.last_batch_time().unwrap_or(snapshot.batch_time),
            )),
        })
    })
    .await?;
    let mut committed = sink.committed_positions(&config.pipeline.name).await?;
    let renames = legacy_ids(&config.source.topics, &committed);
    if !renames.is_empty() {
        sink.adopt_partition_ids(&config.pipeline.name, &renames)
            .await?;
        committed = sink.committed_positions(&config.pipeline.name).await?;
    }
    let at_sink = sink_positions(&config.source.topics, committed);
    let leads = leads(known.as_ref().map(|(positions, _)| positions), &at_sink);
    let Some((tp, first)) = leads.iter().next() else {
        return Ok(store);
    };
    let dir = store.dir().to_path_buf();
    refuse_if_stateful(identity, &dir, tp, first)?;

    let mut positions = match &known {
        Some((positions, _)) => positions.clone(),
        None => {
            let partitions = source.discover().await?;
            source.starting_positions(&partitions).await?
        }
    };
    for (tp, lead) in &leads {
        positions.insert(tp.clone(), lead.sink.range.until);
    }
    let newest_commit = leads
        .values()
        .map(|lead| lead.sink.batch_time)
        .max()
        .unwrap_or(first.sink.batch_time);
    let batch_time = known
        .as_ref()
        .map_or(newest_commit, |(_, last)| (*last).max(newest_commit));
    let snapshot = Snapshot::initial(
        identity.clone(),
        config.pipeline.batch_interval,
        batch_time,
        positions,
    );
    let had_files = known.is_some();
    let reset_as = identity.clone();
    let (store, set_aside) = with_store(store, move |store| {
        let set_aside = if had_files {
            let aside = set_aside(store.dir(), batch_time)?;
            if store.recover(&reset_as)? != Recovery::Fresh {
                return Err(Error::checkpoint(
                    store.dir(),
                    "still holds a checkpoint after its files were set aside; this is a weir bug",
                ));
            }
            Some(aside)
        } else {
            None
        };
        store.write_snapshot(&snapshot)?;
        Ok(set_aside)
    })
    .await?;
    warn!(
        message = "The sink is ahead of the checkpoint: the checkpoint was lost or restored from an old copy. This pipeline is stateless, so it resumes from the sink's committed positions.",
        checkpoint = %dir.display(),
        newest_commit = %newest_commit,
        partitions = %describe(&leads),
        old_checkpoint_moved_to = ?set_aside.as_ref().map(|p| p.display().to_string()),
    );
    if let Some(aside) = &set_aside {
        info!(message = "The old checkpoint files are kept for inspection; remove them when done.", dir = %aside.display());
    }
    Ok(store)
}

/// The start-up cross-check of a streaming program: recovers `store` and fails with
/// [`Error::SinkAhead`] when a sink committed offsets the checkpoint does not know. `committed`
/// holds each sink's commit table rows for the program, whatever their output partition. A
/// streaming program keeps state or shuffles by key, or may at any time, so it never resumes
/// from the sink: the checkpoint must be restored. Returns the store, ready for the scheduler.
///
/// # Cancel safety
///
/// Cancel safe: it only reads.
pub(crate) async fn refuse_when_sink_ahead(
    store: CheckpointStore,
    identity: &PipelineIdentity,
    committed: Vec<CommittedPositions>,
) -> Result<CheckpointStore> {
    if committed.iter().all(BTreeMap::is_empty) {
        return Ok(store);
    }
    let recover_as = identity.clone();
    let (store, known) = with_store(store, move |store| {
        Ok(match store.recover(&recover_as)? {
            Recovery::Fresh => None,
            Recovery::Resume { .. } => Some(store.positions().cloned().unwrap_or_default()),
        })
    })
    .await?;
    // A keyed program's output partitions each cover every Kafka partition: the sink's
    // position of a partition is the furthest any output partition reached.
    let mut at_sink: BTreeMap<TopicPartition, CommittedPosition> = BTreeMap::new();
    for ((_, tp), position) in committed.into_iter().flatten() {
        let further = at_sink
            .get(&tp)
            .is_none_or(|p| position.range.until > p.range.until);
        if further {
            at_sink.insert(tp, position);
        }
    }
    let leads = leads(known.as_ref(), &at_sink);
    let Some((tp, first)) = leads.iter().next() else {
        return Ok(store);
    };
    let known = match first.checkpoint {
        Some(position) => format!("holds {tp} only up to offset {position}"),
        None => format!("does not know {tp}"),
    };
    Err(Error::SinkAhead {
        range: first.sink.range.clone(),
        message: format!(
            "the sink committed it in batch {}, but checkpoint {} {known}: the checkpoint was lost or restored from an old copy. A streaming program's state cannot be rebuilt from its sink: restore the newest checkpoint, or delete this program's rows from the sink's weir_commits and weir_offsets tables (and its output) to start over",
            first.sink.batch_time,
            store.dir().display(),
        ),
    })
}

/// The error for a pipeline whose state cannot be rebuilt from the sink (stateful operators, or
/// output partitions that are not the Kafka partitions), given the first partition `tp` where
/// the sink is ahead of the checkpoint in `dir`.
fn refuse_if_stateful(
    identity: &PipelineIdentity,
    dir: &Path,
    tp: &TopicPartition,
    lead: &Lead,
) -> Result<()> {
    if identity.operators.is_empty() && identity.output_partitions.is_none() {
        return Ok(());
    }
    let known = match lead.checkpoint {
        Some(position) => format!("holds {tp} only up to offset {position}"),
        None => format!("does not know {tp}"),
    };
    Err(Error::SinkAhead {
        range: lead.sink.range.clone(),
        message: format!(
            "the sink committed it in batch {}, but checkpoint {} {known}: the checkpoint was lost or restored from an old copy. This pipeline keeps state or shuffles by key, which cannot be rebuilt from the sink: restore the newest checkpoint",
            lead.sink.batch_time,
            dir.display(),
        ),
    })
}

/// The rows of the main job's topics under output partition ids of an older weir, which put the
/// topic's index in `source.topics` in the high half of the id and the Kafka partition in the
/// low half, with the id each must have now: `(old, tp, new)`. The main job writes one output
/// partition per Kafka partition, so every such row is one.
fn legacy_ids(
    topics: &[String],
    committed: &CommittedPositions,
) -> Vec<(i64, TopicPartition, i64)> {
    committed
        .keys()
        .filter(|(id, tp)| {
            topics.contains(&tp.topic)
                && u16::try_from(*id >> 32)
                    .is_ok_and(|index| *id == legacy_partition_id(index, tp.partition))
        })
        .map(|(id, tp)| (*id, tp.clone(), source_partition_id(tp)))
        .collect()
}

/// The sink's newest commit per Kafka partition of the configured topics, from the output
/// partitions a source-aligned pipeline writes.
fn sink_positions(
    topics: &[String],
    committed: CommittedPositions,
) -> BTreeMap<TopicPartition, CommittedPosition> {
    committed
        .into_iter()
        .filter(|((partition_id, tp), _)| {
            topics.contains(&tp.topic) && *partition_id == source_partition_id(tp)
        })
        .map(|((_, tp), position)| (tp, position))
        .collect()
}

/// The partitions where the sink ends after the checkpoint's position, or that the checkpoint
/// (`None`: an empty one) does not know.
fn leads(
    checkpoint: Option<&BTreeMap<TopicPartition, i64>>,
    sink: &BTreeMap<TopicPartition, CommittedPosition>,
) -> BTreeMap<TopicPartition, Lead> {
    sink.iter()
        .filter_map(|(tp, position)| {
            let known = checkpoint.and_then(|c| c.get(tp)).copied();
            let ahead = known.is_none_or(|k| position.range.until > k);
            ahead.then(|| {
                let lead = Lead {
                    checkpoint: known,
                    sink: position.clone(),
                };
                (tp.clone(), lead)
            })
        })
        .collect()
}

/// `orders/0: checkpoint 120, sink 480; orders/1: checkpoint none, sink 75`.
fn describe(leads: &BTreeMap<TopicPartition, Lead>) -> String {
    let mut text = String::new();
    for (tp, lead) in leads {
        if !text.is_empty() {
            text.push_str("; ");
        }
        let checkpoint = lead
            .checkpoint
            .map_or_else(|| "none".to_owned(), |p| p.to_string());
        let _ = write!(
            text,
            "{tp}: checkpoint {checkpoint}, sink {}",
            lead.sink.range.until
        );
    }
    text
}

/// Moves every entry of checkpoint directory `dir` but its `LOCK` (held by this process) into the
/// sibling directory `<dir>.behind-sink-<t>`, so that the checkpoint is empty; returns that
/// directory. Snapshots go first: a crash half-way leaves no snapshot newer than the ones moved,
/// and the next start either repeats this or refuses the directory, never resumes silently.
fn set_aside(dir: &Path, t: BatchTime) -> Result<PathBuf> {
    let name = dir.file_name().ok_or_else(|| {
        Error::checkpoint(
            dir,
            "is behind the sink and must be emptied, but has no name to derive a sibling directory from; move its files away and start again",
        )
    })?;
    let aside = dir.with_file_name(format!("{}.behind-sink-{t}", name.to_string_lossy()));
    fs::create_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|entry| entry.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<_>>()?;
    entries.retain(|path| path.file_name().is_some_and(|n| n != "LOCK"));
    entries.sort_by_key(|path| {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        (
            !name.is_some_and(|n| n.starts_with("snapshot-")),
            path.clone(),
        )
    });
    for path in &entries {
        let Some(file) = path.file_name() else {
            continue;
        };
        let to = aside.join(file);
        fs::rename(path, &to).map_err(|e| Error::io(path, e))?;
    }
    let synced: BTreeSet<&Path> = [dir, aside.as_path()].into_iter().collect();
    for d in synced {
        fs::File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(d, e))?;
    }
    Ok(aside)
}

/// Runs `f` on `store` on a blocking thread (checkpoint I/O fsyncs), handing the store back.
async fn with_store<T: Send + 'static>(
    mut store: CheckpointStore,
    f: impl FnOnce(&mut CheckpointStore) -> Result<T> + Send + 'static,
) -> Result<(CheckpointStore, T)> {
    run_blocking("the start-up cross-check of the checkpoint", move || {
        f(&mut store).map(|value| (store, value))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::OffsetRange;

    fn tp(topic: &str, p: i32) -> TopicPartition {
        TopicPartition::new(topic, p)
    }

    fn committed(t: i64, tp: &TopicPartition, from: i64, until: i64) -> CommittedPosition {
        CommittedPosition {
            batch_time: BatchTime::from_millis(t),
            range: OffsetRange::new(tp.clone(), from, until),
        }
    }

    #[test]
    fn rows_under_an_older_weirs_ids_are_renamed_to_the_topic_partitions_own() {
        let topics = vec!["a".to_owned(), "b".to_owned()];
        let (a0, b1, c0) = (tp("a", 0), tp("b", 1), tp("c", 0));
        let rows: CommittedPositions = [
            (
                (legacy_partition_id(0, 0), a0.clone()),
                committed(1, &a0, 0, 10),
            ),
            (
                (legacy_partition_id(1, 1), b1.clone()),
                committed(1, &b1, 0, 5),
            ),
            // Already renamed, another pipeline's topic, a keyed partition of another layout.
            (
                (source_partition_id(&a0), a0.clone()),
                committed(1, &a0, 0, 10),
            ),
            (
                (legacy_partition_id(0, 0), c0.clone()),
                committed(1, &c0, 0, 3),
            ),
            (
                (legacy_partition_id(0, 3), a0.clone()),
                committed(1, &a0, 0, 3),
            ),
        ]
        .into_iter()
        .collect();
        let mut renames = legacy_ids(&topics, &rows);
        renames.sort();
        assert_eq!(
            renames,
            vec![
                (
                    legacy_partition_id(0, 0),
                    a0.clone(),
                    source_partition_id(&a0)
                ),
                (
                    legacy_partition_id(1, 1),
                    b1.clone(),
                    source_partition_id(&b1)
                ),
            ]
        );
    }

    #[test]
    fn only_source_aligned_rows_of_configured_topics_count() {
        let topics = vec!["a".to_owned(), "b".to_owned()];
        let (a0, b1, gone) = (tp("a", 0), tp("b", 1), tp("gone", 0));
        let rows: CommittedPositions = [
            (
                (source_partition_id(&a0), a0.clone()),
                committed(1, &a0, 0, 10),
            ),
            (
                (source_partition_id(&b1), b1.clone()),
                committed(1, &b1, 0, 5),
            ),
            // A keyed pipeline's output partition 7 covering a/0: not a source-aligned row.
            ((7, a0.clone()), committed(1, &a0, 0, 99)),
            (
                (source_partition_id(&gone), gone.clone()),
                committed(1, &gone, 0, 3),
            ),
        ]
        .into_iter()
        .collect();
        let positions = sink_positions(&topics, rows);
        assert_eq!(
            positions.keys().cloned().collect::<Vec<_>>(),
            vec![a0.clone(), b1]
        );
        assert_eq!(positions[&a0].range.until, 10);
    }

    #[test]
    fn a_sink_ahead_of_the_checkpoint_leads() {
        let (p0, p1, p2) = (tp("t", 0), tp("t", 1), tp("t", 2));
        let sink: BTreeMap<_, _> = [
            (p0.clone(), committed(5, &p0, 100, 200)),
            (p1.clone(), committed(5, &p1, 40, 50)),
            (p2.clone(), committed(5, &p2, 0, 7)),
        ]
        .into_iter()
        .collect();
        // The checkpoint logged a plan the sink has not committed yet on p1: normal, no lead.
        let checkpoint: BTreeMap<_, _> =
            [(p0.clone(), 120), (p1.clone(), 60)].into_iter().collect();
        let found = leads(Some(&checkpoint), &sink);
        assert_eq!(
            found.keys().cloned().collect::<Vec<_>>(),
            vec![p0.clone(), p2.clone()]
        );
        assert_eq!(found[&p0].checkpoint, Some(120));
        assert_eq!(found[&p2].checkpoint, None);
        assert_eq!(
            describe(&found),
            "t/0: checkpoint 120, sink 200; t/2: checkpoint none, sink 7"
        );
        // An empty checkpoint knows nothing: every partition the sink has leads.
        assert_eq!(leads(None, &sink).len(), 3);
        // A checkpoint at or after the sink everywhere agrees with it.
        let current: BTreeMap<_, _> = [(p0, 200), (p1, 50), (p2, 9)].into_iter().collect();
        assert!(leads(Some(&current), &sink).is_empty());
    }

    #[test]
    fn a_stateful_pipeline_behind_its_sink_stops() {
        let t0 = tp("t", 0);
        let lead = Lead {
            checkpoint: Some(120),
            sink: committed(5, &t0, 100, 200),
        };
        let dir = Path::new("/ckpt");
        let stateless = PipelineIdentity::new("p", ["t"], "sqlite://x table=y");
        assert!(refuse_if_stateful(&stateless, dir, &t0, &lead).is_ok());
        for stateful in [
            stateless.clone().with_operator("counts", 1),
            stateless.clone().with_output_partitions(8),
        ] {
            let e = refuse_if_stateful(&stateful, dir, &t0, &lead).unwrap_err();
            assert!(matches!(e, Error::SinkAhead { .. }), "{e}");
            let text = e.to_string();
            assert!(
                text.contains("t/0[100..200)")
                    && text.contains("batch 5")
                    && text.contains("/ckpt holds t/0 only up to offset 120"),
                "{text}"
            );
        }
    }

    #[test]
    fn setting_aside_keeps_the_lock_and_moves_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        fs::create_dir(&dir).unwrap();
        for name in ["LOCK", "snapshot-100.ckpt", "plans-100.log"] {
            fs::write(dir.join(name), name).unwrap();
        }
        let aside = set_aside(&dir, BatchTime::from_millis(300)).unwrap();
        assert_eq!(aside, root.path().join("ckpt.behind-sink-300"));
        let names = |d: &Path| {
            let mut n: Vec<String> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(&dir), vec!["LOCK"]);
        assert_eq!(names(&aside), vec!["plans-100.log", "snapshot-100.ckpt"]);
    }
}
