//! Streams into SQL tables through the transactional sink, on the real broker and databases:
//! PersistWordCount into MariaDB through crashes (replayed batches find their commit rows), two
//! runs over the same topic giving identical tables (determinism), a lost checkpoint refused
//! rather than counted again over the table, and sliding windows of a keyed
//! stream appended to PostgreSQL, committed every batch, between slides too.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, ensure};
use serde::Serialize;
use weir::sink::SqlSinkConfig;
use weir::stream::DStream;

use crate::common::TestEnv;
use crate::stream_support::{
    Collected, Program, crash_at, lines_in_window, produce_lines, sample_lines, word_counts,
};

#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/persist_word_count.rs"]
mod persist_word_count;

const PARTITIONS: i32 = 2;

async fn mysql_table(pool: &sqlx::MySqlPool) -> Result<Vec<(String, i64)>> {
    Ok(
        sqlx::query_as("SELECT word, `count` FROM word_count ORDER BY word")
            .fetch_all(pool)
            .await?,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn persist_word_count_lands_exactly_once_and_deterministically() -> Result<()> {
    let env = TestEnv::get().await;
    let lines = sample_lines(240);
    let topic = env.topic("stream-persist", PARTITIONS).await?;
    produce_lines(&env.producer()?, &topic, PARTITIONS, &lines).await?;
    let expected: Vec<(String, i64)> = word_counts(&lines)
        .into_iter()
        .map(|(w, c)| (w, i64::try_from(c).unwrap()))
        .collect();

    let mut tables = Vec::new();
    for crashes in [vec![3, 5, 2], vec![]] {
        let db = env.mysql_database().await?;
        let mut program = Program::new(env, "stream-persist", &topic, 15);
        program.lines = lines.len();
        let dir = tempfile::tempdir()?;
        let input = Collected::default();
        let build = |lines: &DStream<String>, crash: Option<u64>| {
            persist_word_count::running_counts(lines)
                .sink(persist_word_count::word_count_table(&db.url));
            if let Some(k) = crash {
                crash_at(lines, k);
            }
        };
        for k in crashes {
            let error = program
                .run_expecting_error(dir.path(), &input, |l| build(l, Some(k)))
                .await?;
            ensure!(error.contains("injected crash"), "{error}");
        }
        program.run(dir.path(), &input, |l| build(l, None)).await?;
        let table = mysql_table(&db.pool).await?;
        ensure!(table == expected, "table {table:?} != {expected:?}");
        tables.push(table);

        // A lost checkpoint: the running counts cannot be rebuilt from the table, so the
        // program refuses to start over it rather than count every word again.
        let lost = tempfile::tempdir()?;
        let error = program
            .run_expecting_error(lost.path(), &input, |l| build(l, None))
            .await?;
        ensure!(
            error.contains("sink and checkpoint disagree")
                && error.contains("restore the newest checkpoint"),
            "{error}"
        );
        ensure!(
            mysql_table(&db.pool).await? == expected,
            "the refused start wrote rows"
        );
    }
    ensure!(tables[0] == tables[1], "two runs gave different tables");
    Ok(())
}

/// A row of the windows table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct WindowRow {
    window_end: i64,
    word: String,
    count: u64,
}

#[tokio::test(flavor = "multi_thread")]
async fn keyed_windows_append_to_postgres() -> Result<()> {
    let env = TestEnv::get().await;
    let lines = sample_lines(200);
    let topic = env.topic("stream-windows", PARTITIONS).await?;
    produce_lines(&env.producer()?, &topic, PARTITIONS, &lines).await?;
    let schema = env.postgres_schema().await?;
    let mut config: SqlSinkConfig = toml::from_str(
        r#"
        table = "windows"
        create_table = true
        columns = [
            { name = "window_end", type = "bigint" },
            { name = "word", type = "text" },
            { name = "count", type = "bigint" },
        ]
        "#,
    )?;
    config.url = schema.url.clone();
    let mut program = Program::new(env, "stream-windows", &topic, 10);
    program.lines = lines.len();
    let dir = tempfile::tempdir()?;
    let (window, slide) = (Duration::from_millis(400), Duration::from_millis(300));
    let input = Collected::default();
    let build = |lines: &DStream<String>, crash: Option<u64>| {
        lines
            .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .map(|w| (w, 1_u64))
            .reduce_by_key_and_window(|a, b| a + b, window, slide)
            .map_partitions(|cx, counts| {
                let end = cx.batch_time.as_millis();
                counts
                    .into_iter()
                    .map(|(word, count)| WindowRow {
                        window_end: end,
                        word,
                        count,
                    })
                    .collect()
            })
            .sink(config.clone());
        if let Some(k) = crash {
            crash_at(lines, k);
        }
    };
    let error = program
        .run_expecting_error(dir.path(), &input, |l| build(l, Some(5)))
        .await?;
    ensure!(error.contains("injected crash"), "{error}");
    program.run(dir.path(), &input, |l| build(l, None)).await?;

    let input = input.batches()?;
    let rows: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT window_end, word, count FROM windows ORDER BY window_end, word")
            .fetch_all(&schema.pool)
            .await?;
    let mut expected = Vec::new();
    for &t in input.keys().filter(|t| *t % 300 == 0) {
        for (word, count) in word_counts(&lines_in_window(&input, t, window)) {
            expected.push((t, word, i64::try_from(count)?));
        }
    }
    ensure!(!expected.is_empty(), "no window was due");
    ensure!(rows == expected, "table {rows:?}\n!= {expected:?}");
    let commits: BTreeMap<i64, i64> = sqlx::query_as(
        "SELECT partition_id, count(*) FROM weir_commits WHERE pipeline = $1 GROUP BY partition_id",
    )
    .bind(&program.config.name)
    .fetch_all(&schema.pool)
    .await?
    .into_iter()
    .collect();
    ensure!(
        commits.keys().copied().collect::<Vec<_>>() == vec![0, 1, 2],
        "one commit series per key partition: {commits:?}"
    );
    Ok(())
}
