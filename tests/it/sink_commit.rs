//! The commit protocol on real databases: replays change nothing, contiguity is enforced, and
//! the commit table reports where each output partition stands.

use anyhow::Result;
use weir::Error;
use weir::sink::{Sink, WriteOutcome};

use crate::sink_support::{ID_BODY_COLUMNS, batch, committed, every_db, range, write};

fn append() -> String {
    format!("table = \"events\"\ncreate_table = true\n{ID_BODY_COLUMNS}")
}

#[tokio::test]
async fn sink_replaying_a_committed_write_changes_nothing() -> Result<()> {
    for db in every_db().await? {
        let sink = db.sink(&append()).await?;
        // Not idempotent by itself: append mode has no key, so a second apply would double rows.
        let input = batch(
            0,
            &[
                Some(r#"{"id":1,"body":"a"}"#),
                Some(r#"{"id":2,"body":"b"}"#),
            ],
        );
        let first = write(&sink, 1_000, &input).await?;
        assert_eq!(first, committed(2, 0, 0), "{}", db.name());
        for _ in 0..3 {
            assert_eq!(
                write(&sink, 1_000, &input).await?,
                WriteOutcome::AlreadyCommitted,
                "{}",
                db.name()
            );
        }
        // A fresh sink (a restarted process) sees the same.
        let restarted = db.sink(&append()).await?;
        assert_eq!(
            write(&restarted, 1_000, &input).await?,
            WriteOutcome::AlreadyCommitted
        );
        assert_eq!(db.count("events").await?, 2, "{}", db.name());
        assert_eq!(db.count("weir_commits").await?, 1, "{}", db.name());

        // The same batch time with a different plan is a bug upstream, not a replay.
        let replanned = batch(0, &[Some(r#"{"id":1,"body":"a"}"#)]);
        let err = write(&sink, 1_000, &replanned).await.unwrap_err();
        assert!(
            matches!(err, Error::Contiguity { .. }),
            "{}: {err}",
            db.name()
        );
        assert!(
            err.to_string().contains("orders/0[0..2)")
                && err.to_string().contains("orders/0[0..1)"),
            "{err}"
        );
        assert_eq!(db.count("events").await?, 2);
    }
    Ok(())
}

#[tokio::test]
async fn sink_a_write_breaking_contiguity_is_refused() -> Result<()> {
    for db in every_db().await? {
        let sink = db.sink(&append()).await?;
        write(
            &sink,
            1_000,
            &batch(0, &[Some(r#"{"id":1}"#), None, Some(r#"{"id":3}"#)]),
        )
        .await?;
        // A gap: [4..5) after [0..3).
        let gap = write(&sink, 2_000, &batch(4, &[Some(r#"{"id":5}"#)]))
            .await
            .unwrap_err();
        assert!(
            matches!(gap, Error::Contiguity { .. }),
            "{}: {gap}",
            db.name()
        );
        let text = gap.to_string();
        assert!(
            text.contains("orders/0[4..5)") && text.contains("orders/0[0..3)"),
            "both ranges named: {text}"
        );
        // An overlap: [2..4).
        let overlap = write(
            &sink,
            2_000,
            &batch(2, &[Some(r#"{"id":3}"#), Some(r#"{"id":4}"#)]),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(overlap, Error::Contiguity { .. }),
            "{}: {overlap}",
            db.name()
        );
        // Nothing of the refused writes landed, not even their commit rows.
        assert_eq!(db.count("events").await?, 2);
        assert_eq!(db.count("weir_commits").await?, 1);
        // The contiguous continuation is accepted, and so is an empty range after it.
        let next = write(&sink, 2_000, &batch(3, &[Some(r#"{"id":4}"#)])).await?;
        assert_eq!(next, committed(1, 0, 0));
        let empty = write(&sink, 3_000, &batch(4, &[])).await?;
        assert_eq!(empty, committed(0, 0, 0), "{}", db.name());
        write(&sink, 4_000, &batch(4, &[Some(r#"{"id":5}"#)])).await?;

        let positions = sink.committed_positions("p").await?;
        assert_eq!(positions.len(), 1, "{}", db.name());
        let position = &positions[&(0, range(0, 0).tp)];
        assert_eq!(position.range, range(4, 5));
        assert_eq!(position.batch_time.as_millis(), 4_000);
        assert!(sink.committed_positions("other").await?.is_empty());
        assert_eq!(db.count("events").await?, 4);
    }
    Ok(())
}

/// `sink.commit_retention`: old commit rows fold into one per output partition covering the same
/// offsets; a replay of a folded batch is refused by the contiguity check, never written twice.
#[tokio::test]
async fn sink_old_commits_fold_into_one_row_and_a_replay_of_them_is_refused() -> Result<()> {
    use weir::plan::BatchTime;
    for db in every_db().await? {
        let sink = db.sink(&append()).await?;
        let inputs = [
            batch(0, &[Some(r#"{"id":1,"body":"a"}"#)]),
            batch(
                1,
                &[
                    Some(r#"{"id":2,"body":"b"}"#),
                    Some(r#"{"id":3,"body":"c"}"#),
                ],
            ),
            batch(3, &[Some(r#"{"id":4,"body":"d"}"#)]),
        ];
        for (t, input) in [1_000, 2_000, 3_000].into_iter().zip(&inputs) {
            write(&sink, t, input).await?;
        }
        let removed = sink
            .fold_commits("p", BatchTime::from_millis(3_000))
            .await?;
        assert_eq!(removed, 1, "{}", db.name());
        let rows: Vec<(i64, String)> = db
            .fetch("SELECT batch_time, ranges FROM weir_commits ORDER BY batch_time")
            .await?;
        let folded: Vec<weir::plan::OffsetRange> = serde_json::from_str(&rows[0].1)?;
        assert_eq!(rows.len(), 2, "{}: {rows:?}", db.name());
        assert_eq!(
            (rows[0].0, folded),
            (2_000, vec![range(0, 3)]),
            "{}",
            db.name()
        );
        assert_eq!(rows[1].0, 3_000, "{}: the newest commit stays", db.name());

        // A replay of the folded batch 1000 finds no commit row of its own, but cannot write.
        match write(&sink, 1_000, &inputs[0]).await {
            Err(Error::Contiguity { .. }) => {}
            other => panic!("{}: a replay of a folded batch gave {other:?}", db.name()),
        }
        assert_eq!(db.count("events").await?, 4, "{}", db.name());
        // Folding again changes nothing.
        assert_eq!(
            sink.fold_commits("p", BatchTime::from_millis(3_000))
                .await?,
            0
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_pipelines_starting_at_once_on_a_fresh_database_all_start() -> Result<()> {
    const SINKS: usize = 4;
    const ROUNDS: usize = 3;
    let config = format!(
        "table = \"events\"\nmode = \"upsert\"\nkey = [\"id\"]\ncreate_table = true\n{ID_BODY_COLUMNS}"
    );
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        // A fresh database each round: the bookkeeping tables and the table do not exist yet.
        for db in every_db().await? {
            let opened = futures::future::join_all((0..SINKS).map(|_| db.sink(&config))).await;
            for (i, sink) in opened.into_iter().enumerate() {
                if let Err(e) = sink {
                    failures.push(format!("{} round {round} sink {i}: {e:#}", db.name()));
                }
            }
        }
    }
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// The first commit of a Kafka partition under a source-aligned output partition id is refused
/// when the sink already holds commits of that topic-partition under another such id: the ids
/// changed, and accepting any start could write committed ranges twice under new keys.
#[tokio::test]
async fn sink_first_commit_under_a_changed_output_partition_id_is_refused() -> Result<()> {
    use weir::plan::{BatchTime, TopicPartition};
    use weir::sink::{CommitKey, source_partition_id};
    for db in every_db().await? {
        let sink = db.sink(&append()).await?;
        let tp = TopicPartition::new(crate::sink_support::TOPIC, 0);
        let id = source_partition_id(&tp);
        let input = batch(0, &[Some(r#"{"id":1,"body":"a"}"#)]);
        let key = |t: i64, id: i64| CommitKey::new("p", BatchTime::from_millis(t), id);
        sink.write(&key(1_000, id), &[range(0, 1)], &input).await?;

        let changed = source_partition_id(&TopicPartition::new("renamed", 0));
        match sink
            .write(&key(2_000, changed), &[range(0, 1)], &input)
            .await
        {
            Err(Error::Contiguity { detail, .. }) => {
                assert!(detail.contains("ids changed"), "{}: {detail}", db.name());
            }
            other => panic!(
                "{}: a second first commit of {tp} gave {other:?}",
                db.name()
            ),
        }
        assert_eq!(db.count("events").await?, 1, "{}", db.name());
    }
    Ok(())
}
