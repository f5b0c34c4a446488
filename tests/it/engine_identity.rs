//! A checkpoint restored into a pipeline with different topics is refused with a message that
//! names the change and what to do, and is left as it was.

use anyhow::{Result, bail, ensure};

use crate::common::engine::{Fixture, read_plan_logs};

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_of_other_topics_is_refused_naming_the_change() -> Result<()> {
    let f = Fixture::new("engine-ident-a", 1).await?;
    let second = f.env.topic("engine-ident-b", 1).await?;
    f.setup.run(f.job(), 2).await?;
    let logged = read_plan_logs(f.dir.path())?;

    let mut changed = f.setup.clone();
    changed.source.topics.push(second.name.clone());
    let error = match changed.run(f.job(), 2).await {
        Ok(summary) => bail!("a pipeline with other topics resumed the checkpoint: {summary:?}"),
        Err(error) => error,
    };
    let weir::Error::FingerprintMismatch { changes, .. } = &error else {
        bail!("expected a fingerprint mismatch, got: {error}");
    };
    let mut both = [f.topic.name.clone(), second.name.clone()];
    both.sort();
    let expected = format!("topics: [{}] -> [{}]", f.topic.name, both.join(", "));
    ensure!(
        changes == &expected,
        "the change reads {changes:?}, not {expected:?}"
    );
    let message = error.to_string();
    ensure!(
        message.contains(&expected) && message.contains("checkpoint reset --keep-offsets"),
        "the message must say what changed and how to proceed: {message}"
    );
    ensure!(
        f.recorder.snapshot().batches.len() == 2,
        "the refused run ran no batch"
    );
    ensure!(
        read_plan_logs(f.dir.path())? == logged,
        "the checkpoint is untouched"
    );

    // The original pipeline still resumes it.
    let resumed = f.setup.run(f.job(), 1).await?;
    ensure!(resumed.batches == 1, "{resumed:?}");
    Ok(())
}
