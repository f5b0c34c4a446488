//! Invariant 6 on the real broker: records that retention deleted before the pipeline read them
//! stop it with an error naming the partition and the lost range, unless `on_data_loss = "skip"`,
//! which records the gap in the batch's plan and warns. Deletion below the checkpoint's position
//! loses nothing and changes nothing.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use weir::plan::{OffsetRange, TopicPartition};
use weir::source::OnDataLoss;

use crate::common::engine::{
    CapturedLogs, Fixture, check_chain, delete_records_before, read_plan_logs,
};

// Current thread: the log capture sees the events of this thread, where the scheduler runs.
#[tokio::test]
async fn deleted_records_stop_the_pipeline_or_are_recorded_as_a_gap() -> Result<()> {
    let mut f = Fixture::new("engine-retention", 1).await?;
    let producer = f.env.producer()?;
    let tp = TopicPartition::new(&f.topic.name, 0);

    f.topic.produce_keyed(&producer, 100, 1).await?;
    f.run_until_count(100).await?;

    // Below the checkpoint's position (100): nothing the pipeline needs is gone.
    delete_records_before(f.env, &tp, 60).await?;
    f.topic.produce_keyed(&producer, 50, 1).await?;
    f.run_until_count(150).await?;

    // Beyond it: offsets 150..200 go before the pipeline read them.
    f.topic.produce_keyed(&producer, 100, 1).await?;
    delete_records_before(f.env, &tp, 200).await?;
    let logged = read_plan_logs(f.dir.path())?;
    let error = match f.setup.run(f.job(), 3).await {
        Ok(summary) => bail!("the pipeline ran over lost records: {summary:?}"),
        Err(error) => error,
    };
    match &error {
        weir::Error::DataLoss {
            tp: lost,
            from: 150,
            log_start: 200,
        } if *lost == tp => {}
        other => bail!("expected data loss of {tp} [150..200), got: {other}"),
    }
    let message = error.to_string();
    ensure!(
        message.contains(&format!("{tp}")) && message.contains("[150..200)"),
        "the error must name the partition and the range: {message}"
    );
    ensure!(
        read_plan_logs(f.dir.path())? == logged,
        "nothing may be planned over lost records"
    );

    // With skip, the gap is recorded in the plan and warned about, and reading goes on.
    f.setup.source.on_data_loss = OnDataLoss::Skip;
    let (logs, _capture) = CapturedLogs::start(tracing::Level::WARN);
    f.run_until_count(200)
        .await
        .with_context(|| format!("the log said:\n{}", logs.text()))?;
    let recording = f.recorder.snapshot();
    let plans = recording.plans()?;
    let gaps: Vec<&OffsetRange> = plans.iter().flat_map(|p| &p.lost).collect();
    ensure!(
        gaps == [&OffsetRange::new(tp.clone(), 150, 200)],
        "the plans record the gaps {gaps:?}"
    );
    check_chain(&plans, &BTreeMap::from([(tp.clone(), 0)]))?;
    ensure!(
        read_plan_logs(f.dir.path())? == plans,
        "the logged plans carry the gap"
    );
    let offsets: Vec<i64> = recording.records_once()?[&tp]
        .iter()
        .map(|r| r.offset)
        .collect();
    let expected: Vec<i64> = (0..150).chain(200..250).collect();
    ensure!(
        offsets == expected,
        "delivered offsets {:?}…",
        &offsets[offsets.len().saturating_sub(20)..]
    );
    let warnings = logs.text();
    ensure!(
        warnings.contains("retention deleted offsets [150..200)"),
        "no warning about the skipped records: {warnings}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn records_deleted_under_a_logged_plan_stop_its_replay() -> Result<()> {
    let f = Fixture::new("engine-retention-replay", 1).await?;
    let tp = TopicPartition::new(&f.topic.name, 0);
    f.topic.produce_keyed(&f.env.producer()?, 100, 1).await?;

    // The plan of [0..100) is logged, then the process "crashes" before any output.
    let crashed = f.setup.run(f.job().failing_at(1), 3).await;
    ensure!(crashed.is_err(), "the run must fail: {crashed:?}");
    let logged = f.recorder.snapshot().attempts;
    ensure!(
        logged.len() == 1 && logged[0].ranges[0] == OffsetRange::new(tp.clone(), 0, 100),
        "one plan of every record: {logged:?}"
    );

    // While it is down, retention deletes records its logged plan must replay.
    delete_records_before(f.env, &tp, 50).await?;
    let replay = tokio::time::timeout(std::time::Duration::from_secs(15), f.setup.run(f.job(), 3))
        .await
        .context("the replay of a plan over deleted records must stop, not wait forever")?;
    match replay {
        Err(weir::Error::DataLoss {
            tp: lost,
            from: 0,
            log_start: 50,
        }) if lost == tp => {}
        other => bail!("expected data loss of {tp} [0..50), got: {other:?}"),
    }
    ensure!(
        f.recorder.snapshot().batches.is_empty(),
        "no batch ran over the deleted records"
    );
    Ok(())
}
