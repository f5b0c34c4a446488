//! Increment mode (`count = count + excluded.count`) on every database: totals over repeated
//! keys within and across batches, a replayed batch adding nothing, `on_error` finding the one
//! record the database refuses, and `weir verify` recomputing the sums.

use std::collections::BTreeMap;

use anyhow::{Result, ensure};
use sqlx::AssertSqlSafe;
use tokio_util::sync::CancellationToken;
use weir::Error;
use weir::config::PipelineConfig;
use weir::plan::BatchTime;
use weir::sink::{CommitKey, Sink, WriteOutcome};
use weir::source::PartitionBatch;

use crate::common::TestEnv;
use crate::pipeline_support::{pipeline_file, send};
use crate::sink_support::{TestDb, batch, committed, every_db, range, write};

/// Word counts: `count` and `seen` are added to; `note` and the offset column are overwritten.
const WORD_COUNTS: &str = r#"
table = "word_counts"
mode = "increment"
key = ["word"]
increment = ["count", "seen"]
batch_size = 7
create_table = true
[[columns]]
name = "word"
type = "text"
[[columns]]
name = "count"
type = "bigint"
[[columns]]
name = "seen"
type = "integer"
[[columns]]
name = "note"
type = "text"
[metadata]
offset = "src_offset"
"#;

/// The words of the records: case matters, so `The` and `the` are two keys.
const WORDS: [&str; 7] = ["the", "a", "The", "stream", "é", "kafka", "sink"];

/// What the table must hold per word: `(count, seen, note, src_offset)`.
type Totals = BTreeMap<String, (i64, i32, String, i64)>;

/// `len` records from offset `from`, with repeated words, and their effect added to `totals`.
fn word_batch(from: i64, len: usize, totals: &mut Totals) -> Vec<PartitionBatch> {
    let values: Vec<String> = (0..len)
        .zip(from..)
        .map(|(i, offset)| {
            let word = WORDS[(i * i + i / 3) % WORDS.len()];
            let count = i64::try_from(i % 5).unwrap_or(0) - 1;
            let note = format!("n{offset}");
            let total = totals.entry(word.to_owned()).or_default();
            total.0 += count;
            total.1 += 1;
            total.2.clone_from(&note);
            total.3 = offset;
            format!(r#"{{"word":"{word}","count":{count},"seen":1,"note":"{note}"}}"#)
        })
        .collect();
    let values: Vec<Option<&str>> = values.iter().map(|v| Some(v.as_str())).collect();
    batch(from, &values)
}

async fn word_counts(db: &TestDb) -> Result<Totals> {
    let rows: Vec<(String, i64, i32, String, i64)> = db
        .fetch("SELECT word, count, seen, note, src_offset FROM word_counts")
        .await?;
    Ok(rows
        .into_iter()
        .map(|(word, count, seen, note, offset)| (word, (count, seen, note, offset)))
        .collect())
}

async fn execute(db: &TestDb, sql: &str) -> Result<()> {
    let sql = AssertSqlSafe(sql.to_owned());
    match db {
        TestDb::Postgres(d) => sqlx::query(sql).execute(&d.pool).await.map(drop)?,
        TestDb::MySql(d) => sqlx::query(sql).execute(&d.pool).await.map(drop)?,
        TestDb::Sqlite(_, pool) => sqlx::query(sql).execute(pool).await.map(drop)?,
    }
    Ok(())
}

#[tokio::test]
async fn sink_increment_sums_repeated_keys_within_and_across_batches() -> Result<()> {
    for db in every_db().await? {
        let name = db.name();
        let sink = db.sink(WORD_COUNTS).await?;
        let mut totals = Totals::new();
        // Two small batches, then one larger than a PostgreSQL COPY chunk (10,000 rows), so that
        // a word's records also fall into several chunks of one write.
        let mut from = 0;
        let mut written = Vec::new();
        for (t, len) in [(1_000, 40), (2_000, 25), (3_000, 12_000)] {
            let input = word_batch(from, len, &mut totals);
            let outcome = write(&sink, t, &input).await?;
            let rows = u64::try_from(len)?;
            assert_eq!(outcome, committed(rows, 0, 0), "{name}: batch {t}");
            assert_eq!(word_counts(&db).await?, totals, "{name}: after batch {t}");
            from += i64::try_from(len)?;
            written.push((t, input));
        }
        assert_eq!(totals.len(), WORDS.len(), "every word was written");

        // Replays, after a crash or a lost COMMIT reply, find the commit row and add nothing.
        for (t, input) in &written {
            let outcome = write(&sink, *t, input).await?;
            assert_eq!(
                outcome,
                WriteOutcome::AlreadyCommitted,
                "{name}: replay of {t}"
            );
        }
        assert_eq!(word_counts(&db).await?, totals, "{name}: after the replays");

        // Tombstones are skipped: a total cannot be taken back.
        let tombstone = batch(from, &[None]);
        assert_eq!(
            write(&sink, 4_000, &tombstone).await?,
            committed(0, 0, 0),
            "{name}"
        );
        assert_eq!(word_counts(&db).await?, totals, "{name}: after a tombstone");
    }
    Ok(())
}

#[tokio::test]
async fn sink_increment_adds_exact_numerics_and_sqlite_refuses_them() -> Result<()> {
    let config = r#"
table = "balances"
mode = "increment"
key = ["account"]
increment = ["amount"]
create_table = true
[[columns]]
name = "account"
type = "bigint"
[[columns]]
name = "amount"
type = "numeric(14,2)"
"#;
    for db in every_db().await? {
        let name = db.name();
        if name == "sqlite" {
            let err = db.sink(config).await.unwrap_err().to_string();
            ensure!(err.contains("sink.increment[0]"), "{err}");
            continue;
        }
        let sink = db.sink(config).await?;
        // 0.10 thirty times in one batch and 0.01 forty times in the next: a float would drift.
        let first: Vec<String> = (0..30)
            .map(|i| format!(r#"{{"account":{},"amount":"0.10"}}"#, i % 2))
            .collect();
        let second: Vec<String> = (0..40)
            .map(|i| format!(r#"{{"account":{},"amount":0.01}}"#, i % 2))
            .collect();
        for (t, from, values) in [(1_000, 0, &first), (2_000, 30, &second)] {
            let values: Vec<Option<&str>> = values.iter().map(|v| Some(v.as_str())).collect();
            write(&sink, t, &batch(from, &values)).await?;
        }
        let cast = if name == "mysql" { "CHAR" } else { "TEXT" };
        let rows: Vec<(i64, String)> = db
            .fetch(&format!(
                "SELECT account, CAST(amount AS {cast}) FROM balances ORDER BY account"
            ))
            .await?;
        assert_eq!(
            rows,
            [(0, "1.70".to_owned()), (1, "1.70".to_owned())],
            "{name}"
        );
    }
    Ok(())
}

/// A stock table whose CHECK constraint caps a quantity at 10: the database's refusal of a
/// total is the record's fault. (A bound no single delta breaks: PostgreSQL checks the proposed
/// row, the delta itself, too.)
const STOCK_TABLE: &str =
    "CREATE TABLE stock (item BIGINT NOT NULL PRIMARY KEY, qty BIGINT NOT NULL CHECK (qty <= 10))";

/// Moves of items 1 and 2; offset 2 would take item 1 above 10, offset 4 has no quantity.
const MOVES: [&str; 6] = [
    r#"{"item":1,"qty":5}"#,
    r#"{"item":1,"qty":3}"#,
    r#"{"item":1,"qty":4}"#,
    r#"{"item":2,"qty":1}"#,
    r#"{"item":2}"#,
    r#"{"item":1,"qty":1}"#,
];

fn stock_sink(on_error: &str) -> String {
    format!(
        "table = \"stock\"\nmode = \"increment\"\nkey = [\"item\"]\nincrement = [\"qty\"]\non_error = \"{on_error}\"\n[[columns]]\nname = \"item\"\ntype = \"bigint\"\n[[columns]]\nname = \"qty\"\ntype = \"bigint\"\n"
    )
}

#[tokio::test]
async fn sink_increment_sets_aside_only_the_records_at_fault() -> Result<()> {
    for db in every_db().await? {
        let name = db.name();
        execute(&db, STOCK_TABLE).await?;
        let input = batch(0, &MOVES.map(Some));

        // `fail`: the record the database refuses is named, and nothing is committed. The
        // missing quantity is found first, before any row is written.
        let fail = db.sink(&stock_sink("fail")).await?;
        let err = write(&fail, 1_000, &input).await.unwrap_err();
        ensure!(
            matches!(&err, Error::Record { offset: 4, reason, .. } if reason.contains("needs a number")),
            "{name}: {err}"
        );
        let without_missing = batch(0, &MOVES[..4].iter().copied().map(Some).collect::<Vec<_>>());
        let err = write(&fail, 1_000, &without_missing).await.unwrap_err();
        ensure!(
            matches!(&err, Error::Record { offset: 2, .. }),
            "{name}: {err}"
        );
        assert_eq!(db.count("stock").await?, 0, "{name}");
        assert_eq!(db.count("weir_commits").await?, 0, "{name}");

        // `dead_letter`: the chunk is redone row by row; the good moves add up, the two bad
        // ones are dead letters, in the same transaction.
        let dead_letter = db.sink(&stock_sink("dead_letter")).await?;
        let outcome = write(&dead_letter, 1_000, &input).await?;
        assert_eq!(outcome, committed(4, 0, 2), "{name}");
        let rows: Vec<(i64, i64)> = db
            .fetch("SELECT item, qty FROM stock ORDER BY item")
            .await?;
        assert_eq!(rows, [(1, 9), (2, 1)], "{name}");
        let letters: Vec<(i64,)> = db
            .fetch("SELECT kafka_offset FROM weir_dead_letters ORDER BY kafka_offset")
            .await?;
        assert_eq!(letters, [(2,), (4,)], "{name}");

        // `skip`, on another table, leaves them out the same way.
        execute(&db, &STOCK_TABLE.replace("stock", "stock_skip")).await?;
        let skip = db
            .sink(&stock_sink("skip").replace("\"stock\"", "\"stock_skip\""))
            .await?;
        // Another pipeline: commit keys and offsets are per pipeline.
        let key = CommitKey::new("skip", BatchTime::from_millis(1_000), 0);
        let outcome = skip.write(&key, &[range(0, 6)], &input).await?;
        assert_eq!(outcome, committed(4, 2, 0), "{name}");
        let rows: Vec<(i64, i64)> = db
            .fetch("SELECT item, qty FROM stock_skip ORDER BY item")
            .await?;
        assert_eq!(rows, [(1, 9), (2, 1)], "{name}");
    }
    Ok(())
}

/// Words of the verify test: keyed by word, spread over every partition.
fn word_records(words: &[&str], partitions: i32) -> Vec<(i32, String)> {
    words
        .iter()
        .enumerate()
        .map(|(i, word)| {
            let partition = i32::try_from(i).unwrap_or(0) % partitions;
            let count = i % 3 + 1;
            (
                partition,
                format!(r#"{{"word":"{word}","count":{count},"last":"{word}{i}"}}"#),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_increment_recomputes_the_sums() -> Result<()> {
    const PARTITIONS: i32 = 3;
    let env = TestEnv::get().await;
    for db in every_db().await? {
        let name = db.name();
        let topic = env.topic("verify-increment", PARTITIONS).await?;
        let dir = tempfile::tempdir()?;
        let sink = r#"table = "totals"
mode = "increment"
key = ["word"]
increment = ["count"]
create_table = true
columns = [
    { name = "word", type = "text" },
    { name = "count", type = "bigint" },
    { name = "last", type = "text" },
]
"#;
        let toml = pipeline_file(
            env,
            &topic,
            db.url(),
            &dir.path().join("checkpoint"),
            "",
            sink,
        );
        let config = PipelineConfig::from_toml_str(&toml)?;
        let producer = env.producer()?;
        // Two batches; every word is written by several partitions of one batch at once.
        let words = ["the", "a", "the", "b", "the", "a", "c", "the", "b"];
        for round in 0..2 {
            let records = word_records(&words, PARTITIONS);
            send(
                &producer,
                &topic,
                records.into_iter().map(|(p, v)| (p, None, Some(v))),
            )
            .await?;
            let summary =
                weir::runtime::run_pipeline(&config, CancellationToken::new(), Some(1)).await?;
            ensure!(summary.batches == 1, "{name}: round {round}: {summary:?}");
        }
        let counts: Vec<(String, i64)> = db
            .fetch("SELECT word, count FROM totals ORDER BY count")
            .await?;
        // the: 1+3+2+2 per round; a: 2+3; b: 1+3; c: 1.
        assert_eq!(
            counts,
            [
                ("c".to_owned(), 2),
                ("b".to_owned(), 8),
                ("a".to_owned(), 10),
                ("the".to_owned(), 16)
            ],
            "{name}"
        );

        let clean = weir::verify::verify(&config, |_| {}).await?;
        ensure!(clean.is_clean(), "{name}: {clean}");
        ensure!(
            clean.mode == "increment" && clean.records == 18 && clean.table_rows == 4,
            "{name}: {clean}"
        );

        execute(&db, "UPDATE totals SET count = count + 1 WHERE word = 'a'").await?;
        let tampered = weir::verify::verify(&config, |_| {}).await?;
        ensure!(
            (tampered.missing, tampered.differing, tampered.unexpected) == (0, 1, 0),
            "{name}: {tampered}"
        );
        ensure!(
            tampered
                .examples
                .iter()
                .any(|e| e.contains("count=11") && e.contains("count=10")),
            "{name}: {tampered}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn sink_increment_overflow_is_refused_on_every_database() -> Result<()> {
    // A 64-bit and a 32-bit total, each one step from overflowing.
    let start = format!(
        r#"{{"id":1,"big":{},"small":{}}}"#,
        i64::MAX - 10,
        i32::MAX - 10
    );
    let over_big = r#"{"id":1,"big":11,"small":0}"#;
    let over_small = r#"{"id":1,"big":0,"small":11}"#;
    let fits = r#"{"id":1,"big":10,"small":10}"#;
    for db in every_db().await? {
        let name = db.name();
        for (i, on_error) in ["fail", "dead_letter", "skip"].into_iter().enumerate() {
            let table = format!("totals_{i}");
            let sink = db
                .sink(&format!(
                    "table = \"{table}\"\nmode = \"increment\"\nkey = [\"id\"]\nincrement = [\"big\", \"small\"]\non_error = \"{on_error}\"\ncreate_table = true\n[[columns]]\nname = \"id\"\ntype = \"bigint\"\n[[columns]]\nname = \"big\"\ntype = \"bigint\"\n[[columns]]\nname = \"small\"\ntype = \"integer\"\n"
                ))
                .await?;
            let key = |t: i64| CommitKey::new(table.as_str(), BatchTime::from_millis(t), 0);
            let first = batch(0, &[Some(start.as_str())]);
            sink.write(&key(1_000), &[range(0, 1)], &first).await?;
            let input = batch(1, &[Some(over_big), Some(over_small), Some(fits)]);
            let outcome = sink.write(&key(2_000), &[range(1, 4)], &input).await;
            match on_error {
                "fail" => {
                    let Err(err) = outcome else {
                        anyhow::bail!("{name}: an overflowing total was committed: {outcome:?}");
                    };
                    ensure!(
                        matches!(&err, Error::Record { offset: 1, .. }),
                        "{name}: {err}"
                    );
                }
                "dead_letter" => assert_eq!(outcome?, committed(1, 0, 2), "{name}"),
                _ => assert_eq!(outcome?, committed(1, 2, 0), "{name}"),
            }
            let expected = if on_error == "fail" {
                (i64::MAX - 10, i32::MAX - 10)
            } else {
                (i64::MAX, i32::MAX)
            };
            let rows: Vec<(i64, i32)> =
                db.fetch(&format!("SELECT big, small FROM {table}")).await?;
            assert_eq!(rows, [expected], "{name} {on_error}");
        }
    }
    Ok(())
}
