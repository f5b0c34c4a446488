//! Reference tables in PostgreSQL joined with every batch (TransformBlacklist), on the real
//! broker: the blacklist changes while the program runs and the output follows it at the points
//! of the refresh grid, and a batch replayed after a crash uses the version its first run used,
//! whatever the database says by then.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, ensure};
use weir::runtime::RunSummary;
use weir::sink::SqlValue;
use weir::stream::{DStream, ReferenceTable};

use crate::common::{TestEnv, TestPgSchema, TestTopic};
use crate::stream_support::{Collected, INTERVAL, Program, crash_at, produce_lines};

const PARTITIONS: i32 = 2;
const REFRESH: Duration = Duration::from_millis(300);

/// What each batch did: the users blocked in the version it used, and the clicks it kept.
type Joined = (Vec<String>, Vec<String>);

/// A test's services and rig: a topic holding `n` clicks, a program reading them 10 per batch,
/// a schema holding `blacklist(user_name, blocked)` with `tom` blocked, a checkpoint, and the
/// collectors of the input and of the joined output.
struct Setup {
    _topic: TestTopic,
    program: Program,
    schema: TestPgSchema,
    checkpoint: tempfile::TempDir,
    input: Collected<String>,
    output: Collected<Joined>,
}

impl Setup {
    async fn new(prefix: &str, n: usize) -> Result<Self> {
        let env = TestEnv::get().await;
        let lines = clicks(n);
        let topic = env.topic(prefix, PARTITIONS).await?;
        produce_lines(&env.producer()?, &topic, PARTITIONS, &lines).await?;
        let mut program = Program::new(env, prefix, &topic, 5);
        program.lines = lines.len();
        Ok(Self {
            _topic: topic,
            program,
            schema: blacklist_schema(env).await?,
            checkpoint: tempfile::tempdir()?,
            input: Collected::default(),
            output: Collected::default(),
        })
    }

    /// Runs the program: the join output, then the outputs `more` adds (a crash).
    async fn run(&self, more: impl FnOnce(&DStream<String>)) -> Result<RunSummary> {
        let table = blacklist(&self.schema);
        let build = |clicks: &DStream<String>| {
            self.output.attach(&joined(clicks, &table), |_| {});
            more(clicks);
        };
        self.program
            .run(self.checkpoint.path(), &self.input, build)
            .await
    }
}

async fn blacklist_schema(env: &TestEnv) -> Result<TestPgSchema> {
    let schema = env.postgres_schema().await?;
    sqlx::query("CREATE TABLE blacklist (user_name text PRIMARY KEY, blocked boolean NOT NULL)")
        .execute(&schema.pool)
        .await?;
    sqlx::query("INSERT INTO blacklist VALUES ('tom', true), ('leo', false)")
        .execute(&schema.pool)
        .await?;
    Ok(schema)
}

/// The blocked users, reloaded every [`REFRESH`].
fn blacklist(schema: &TestPgSchema) -> ReferenceTable<String, bool> {
    ReferenceTable::from_sql(
        "blacklist",
        &schema.url,
        "SELECT user_name, blocked FROM blacklist WHERE blocked = $1",
        |(user, blocked): (String, bool)| (user, blocked),
    )
    .bind(SqlValue::Boolean(true))
    .refresh_every(REFRESH)
}

/// Each batch's blocked users and the clicks `<date> <user>` of the others.
fn joined(clicks: &DStream<String>, table: &ReferenceTable<String, bool>) -> DStream<Joined> {
    clicks.transform_with(table, |_, clicks, blacklist| {
        let valid = clicks
            .into_iter()
            .filter(|line| !blacklist.contains_key(user_of(line)))
            .collect();
        vec![(blacklist.keys().cloned().collect(), valid)]
    })
}

fn user_of(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or_default()
}

fn clicks(n: usize) -> Vec<String> {
    let users = ["tom", "leo", "jack", "mary"];
    (0..n)
        .map(|i| format!("2026010{} {}", i % 9, users[i % users.len()]))
        .collect()
}

fn refresh_period(t: i64) -> i64 {
    t.div_euclid(i64::try_from(REFRESH.as_millis()).unwrap_or(1))
}

/// Checks every batch against its input and its version, and that the version changed only
/// where a refresh period begins; returns the blocked users of each batch.
fn check_batches(
    input: &BTreeMap<i64, Vec<String>>,
    output: &BTreeMap<i64, Vec<Joined>>,
) -> Result<Vec<(i64, Vec<String>)>> {
    let mut versions = Vec::new();
    let mut previous: Option<(i64, &Vec<String>)> = None;
    for (t, lines) in input {
        let got = output.get(t).map(Vec::as_slice).unwrap_or_default();
        let [(blocked, valid)] = got else {
            anyhow::bail!("batch {t}: one item per batch, got {got:?}");
        };
        let expected: Vec<String> = lines
            .iter()
            .filter(|l| !blocked.iter().any(|u| u == user_of(l)))
            .cloned()
            .collect();
        ensure!(*valid == expected, "batch {t}: {valid:?} != {expected:?}");
        if let Some((before, was)) = previous
            && was != blocked
        {
            ensure!(
                refresh_period(before) < refresh_period(*t),
                "the blacklist changed between batches {before} and {t}, inside one refresh period of {REFRESH:?}"
            );
        }
        previous = Some((*t, blocked));
        versions.push((*t, blocked.clone()));
    }
    Ok(versions)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_output_follows_the_blacklist_at_the_refresh_grid() -> Result<()> {
    let setup = Setup::new("stream-reference", 240).await?;

    // Blocks leo once a few batches ran.
    let watched = setup.output.clone();
    let pool = setup.schema.pool.clone();
    let change = tokio::spawn(async move {
        while watched.batches()?.len() < 5 {
            tokio::time::sleep(INTERVAL / 2).await;
        }
        sqlx::query("UPDATE blacklist SET blocked = true WHERE user_name = 'leo'")
            .execute(&pool)
            .await?;
        anyhow::Ok(())
    });
    setup.run(|_| {}).await?;
    change.await??;

    let versions = check_batches(&setup.input.batches()?, &setup.output.batches()?)?;
    let (tom, both) = (
        vec!["tom".to_owned()],
        vec!["leo".to_owned(), "tom".to_owned()],
    );
    ensure!(
        versions.first().map(|(_, v)| v) == Some(&tom),
        "the first batch saw {versions:?}"
    );
    ensure!(
        versions.last().map(|(_, v)| v) == Some(&both),
        "the change never reached the output: {versions:?}"
    );
    ensure!(
        versions.iter().all(|(_, v)| *v == tom || *v == both),
        "a version the database never held: {versions:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_batch_uses_the_version_its_first_run_used() -> Result<()> {
    let setup = Setup::new("stream-reference-crash", 160).await?;

    // The 6th batch's plan is logged and its join output, then the program dies.
    let Err(error) = setup.run(|clicks| crash_at(clicks, 6)).await else {
        anyhow::bail!("the run should have crashed");
    };
    let error = format!("{error:#}");
    ensure!(error.contains("injected crash"), "{error}");
    let before = setup.output.batches()?;
    ensure!(
        before.values().all(|b| b[0].0 == ["tom"]),
        "before the change only tom is blocked: {before:?}"
    );

    // The blacklist changes while the program is down; the replay must not see it.
    sqlx::query("UPDATE blacklist SET blocked = NOT blocked")
        .execute(&setup.schema.pool)
        .await?;
    let summary = setup.run(|_| {}).await?;
    ensure!(summary.replayed >= 6, "replayed {summary:?}");

    // `Collected` fails here if a replayed batch gave other items than its first run.
    let after = setup.output.batches()?;
    for (t, joined) in &before {
        ensure!(after.get(t) == Some(joined), "batch {t} changed on replay");
    }
    let versions = check_batches(&setup.input.batches()?, &after)?;
    ensure!(
        versions.last().map(|(_, v)| v.as_slice()) == Some(&["leo".to_owned()][..]),
        "new batches follow the changed blacklist: {versions:?}"
    );
    Ok(())
}
