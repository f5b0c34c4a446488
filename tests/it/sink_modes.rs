//! Append and upsert, tombstones, and where keys come from.

use anyhow::Result;
use weir::plan::BatchTime;
use weir::sink::{CommitKey, Sink};
use weir::source::PartitionBatch;

use sqlx::AssertSqlSafe;

use crate::sink_support::{TestDb, committed, every_db, range, record, write};

fn records(items: &[(Option<&str>, Option<&str>)]) -> Vec<PartitionBatch> {
    let records = items
        .iter()
        .zip(0..)
        .map(|((k, v), offset)| record(offset, k.map(str::as_bytes), v.map(str::as_bytes)))
        .collect::<Vec<_>>();
    let until = i64::try_from(records.len()).unwrap_or(0);
    vec![PartitionBatch {
        range: range(0, until),
        records,
    }]
}

#[tokio::test]
async fn sink_upsert_keeps_the_last_write_and_tombstones_delete() -> Result<()> {
    let config = r#"
table = "accounts"
mode = "upsert"
key = ["id"]
create_table = true
[[columns]]
name = "id"
type = "bigint"
[[columns]]
name = "balance"
type = "bigint"
[metadata]
offset = "src_offset"
"#;
    for db in every_db().await? {
        let sink = db.sink(config).await?;
        let first = records(&[
            (Some(r#"{"id":1}"#), Some(r#"{"id":1,"balance":10}"#)),
            (Some(r#"{"id":2}"#), Some(r#"{"id":2,"balance":20}"#)),
            (Some(r#"{"id":3}"#), Some(r#"{"id":3,"balance":30}"#)),
            (Some(r#"{"id":1}"#), Some(r#"{"id":1,"balance":11}"#)),
        ]);
        write(&sink, 1_000, &first).await?;
        let rows: Vec<(i64, i64, i64)> = db
            .fetch("SELECT id, balance, src_offset FROM accounts ORDER BY id")
            .await?;
        assert_eq!(rows, [(1, 11, 3), (2, 20, 1), (3, 30, 2)], "{}", db.name());

        // Next batch: update 2, delete 3 (tombstone, key from the record key), write and delete 4.
        let mut second = records(&[
            (Some(r#"{"id":2}"#), Some(r#"{"id":2,"balance":21}"#)),
            (Some(r#"{"id":3}"#), None),
            (Some(r#"{"id":4}"#), Some(r#"{"id":4,"balance":40}"#)),
            (Some(r#"{"id":4}"#), None),
        ]);
        for b in &mut second {
            b.range = range(4, 8);
            for r in &mut b.records {
                r.offset += 4;
            }
        }
        let outcome = write(&sink, 2_000, &second).await?;
        assert_eq!(outcome, committed(3, 0, 0), "{}", db.name());
        let rows: Vec<(i64, i64, i64)> = db
            .fetch("SELECT id, balance, src_offset FROM accounts ORDER BY id")
            .await?;
        assert_eq!(rows, [(1, 11, 3), (2, 21, 4)], "{}", db.name());
    }
    Ok(())
}

#[tokio::test]
async fn sink_append_writes_every_record_and_ignores_tombstones() -> Result<()> {
    let config = r#"
table = "log"
create_table = true
[[columns]]
name = "id"
type = "bigint"
[metadata]
topic = "src_topic"
partition = "src_partition"
offset = "src_offset"
timestamp = "src_ts"
key = "src_key"
"#;
    for db in every_db().await? {
        let sink = db.sink(config).await?;
        let input = records(&[
            (Some("k1"), Some(r#"{"id":1}"#)),
            (None, Some(r#"{"id":1}"#)),
            (Some("k1"), None),
        ]);
        let outcome = write(&sink, 1_000, &input).await?;
        assert_eq!(outcome, committed(2, 0, 0));
        let rows: Vec<(i64, String, i32, i64, Option<String>)> =
            db.fetch("SELECT id, src_topic, src_partition, src_offset, src_key FROM log ORDER BY src_offset").await?;
        assert_eq!(
            rows,
            [
                (1, "orders".to_owned(), 0, 0, Some("k1".to_owned())),
                (1, "orders".to_owned(), 0, 1, None)
            ],
            "{}",
            db.name()
        );
    }
    Ok(())
}

#[tokio::test]
async fn sink_keys_from_the_record_key_and_from_kafka_coordinates() -> Result<()> {
    let by_record_key = r#"
table = "by_key"
mode = "upsert"
key = ["k"]
key_source = "record_key"
create_table = true
[[columns]]
name = "k"
type = "text"
[[columns]]
name = "v"
type = "bigint"
"#;
    let by_coordinates = r#"
table = "by_coordinates"
mode = "upsert"
key_source = "kafka"
create_table = true
[[columns]]
name = "v"
type = "bigint"
[metadata]
topic = "t"
partition = "p"
offset = "o"
"#;
    for db in every_db().await? {
        let sink = db.sink(by_record_key).await?;
        let input = records(&[
            (Some("alpha"), Some(r#"{"v":1}"#)),
            (Some("\"beta\""), Some(r#"{"v":2}"#)),
            (Some("alpha"), Some(r#"{"v":3}"#)),
            (Some("beta"), None),
        ]);
        write(&sink, 1_000, &input).await?;
        let rows: Vec<(String, i64)> = db.fetch("SELECT k, v FROM by_key ORDER BY k").await?;
        assert_eq!(rows, [("alpha".to_owned(), 3)], "{}", db.name());

        let sink = db.sink(by_coordinates).await?;
        let input = records(&[(None, Some(r#"{"v":1}"#)), (None, Some(r#"{"v":1}"#))]);
        // Another pipeline: commit keys and offsets are per pipeline.
        let key = CommitKey::new("coordinates", BatchTime::from_millis(1_000), 0);
        sink.write(&key, &[range(0, 2)], &input).await?;
        let rows: Vec<(String, i32, i64, i64)> = db
            .fetch("SELECT t, p, o, v FROM by_coordinates ORDER BY o")
            .await?;
        assert_eq!(
            rows,
            [
                ("orders".to_owned(), 0, 0, 1),
                ("orders".to_owned(), 0, 1, 1)
            ],
            "{}",
            db.name()
        );
    }
    Ok(())
}

#[tokio::test]
async fn sink_text_keys_compare_byte_for_byte() -> Result<()> {
    let config = r#"
table = "names"
mode = "upsert"
key = ["name"]
create_table = true
[[columns]]
name = "name"
type = "text"
[[columns]]
name = "n"
type = "bigint"
"#;
    // Keys that a PAD SPACE or case-insensitive collation would take for one.
    let names = ["a", "a ", "a  ", "A", "\u{e9}", "e\u{301}", "a\t"];
    for db in every_db().await? {
        let name = db.name();
        let sink = db.sink(config).await?;
        let values: Vec<String> = names
            .iter()
            .zip(0..)
            .map(|(k, n)| serde_json::json!({"name": k, "n": n}).to_string())
            .collect();
        let values: Vec<Option<&str>> = values.iter().map(|v| Some(v.as_str())).collect();
        write(&sink, 1_000, &crate::sink_support::batch(0, &values)).await?;
        // One key at a time in a later batch: each updates its own row only.
        let update = serde_json::json!({"name": "a ", "n": 100}).to_string();
        write(
            &sink,
            2_000,
            &crate::sink_support::batch(7, &[Some(&update)]),
        )
        .await?;
        let mut rows: Vec<(String, i64)> = db.fetch("SELECT name, n FROM names").await?;
        rows.sort();
        let mut expected: Vec<(String, i64)> = names
            .iter()
            .zip(0..)
            .map(|(k, n)| ((*k).to_owned(), if *k == "a " { 100 } else { n }))
            .collect();
        expected.sort();
        assert_eq!(rows, expected, "{name}");

        // A MySQL table made elsewhere whose key would merge such keys is refused at start-up.
        if let TestDb::MySql(d) = &db {
            for collation in ["utf8mb4_bin", "utf8mb4_unicode_ci"] {
                sqlx::query("DROP TABLE names").execute(&d.pool).await?;
                let create = format!(
                    "CREATE TABLE names (name VARCHAR(255) COLLATE {collation} PRIMARY KEY, n BIGINT)"
                );
                sqlx::query(AssertSqlSafe(create)).execute(&d.pool).await?;
                let err = db.sink(config).await.unwrap_err().to_string();
                assert!(
                    err.contains("sink.key") && err.contains(collation) && err.contains("names"),
                    "{collation}: {err}"
                );
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn sink_upsert_on_a_table_without_its_key_is_refused_at_start_up() -> Result<()> {
    let columns = "[[columns]]\nname = \"id\"\ntype = \"bigint\"\n[[columns]]\nname = \"body\"\ntype = \"text\"\n";
    for db in every_db().await? {
        let name = db.name();
        // Made by an append pipeline without a key: no primary key.
        let append = db
            .sink(&format!(
                "table = \"events\"\ncreate_table = true\n{columns}"
            ))
            .await?;
        let value = r#"{"id":1,"body":"x"}"#;
        write(
            &append,
            1_000,
            &crate::sink_support::batch(0, &[Some(value)]),
        )
        .await?;
        for mode in ["upsert", "increment"] {
            let (increment, extra) = if mode == "increment" {
                (
                    "increment = [\"n\"]\n",
                    "[[columns]]\nname = \"n\"\ntype = \"bigint\"\n",
                )
            } else {
                ("", "")
            };
            let keyed = format!(
                "table = \"events\"\ncreate_table = true\nmode = \"{mode}\"\nkey = [\"id\"]\n{increment}{columns}{extra}"
            );
            if mode == "increment" {
                // The column exists; only the key is missing.
                let add = "ALTER TABLE events ADD COLUMN n BIGINT";
                match &db {
                    TestDb::Postgres(d) => sqlx::query(add).execute(&d.pool).await.map(drop)?,
                    TestDb::MySql(d) => sqlx::query(add).execute(&d.pool).await.map(drop)?,
                    TestDb::Sqlite(_, pool) => sqlx::query(add).execute(pool).await.map(drop)?,
                }
            }
            let err = match db.sink(&keyed).await {
                Ok(_) => anyhow::bail!("{name} {mode}: a keyless table was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains("sink.key") && err.contains("events") && err.contains("UNIQUE INDEX"),
                "{name} {mode}: {err}"
            );
        }
        // With the index the error asks for, the keyed sink starts and upserts.
        let index = "CREATE UNIQUE INDEX events_weir_key ON events (id)";
        match &db {
            TestDb::Postgres(d) => sqlx::query(index).execute(&d.pool).await.map(drop)?,
            TestDb::MySql(d) => sqlx::query(index).execute(&d.pool).await.map(drop)?,
            TestDb::Sqlite(_, pool) => sqlx::query(index).execute(pool).await.map(drop)?,
        }
        let upsert = db
            .sink(&format!(
                "table = \"events\"\nmode = \"upsert\"\nkey = [\"id\"]\n{columns}"
            ))
            .await?;
        let value = r#"{"id":1,"body":"y"}"#;
        write(
            &upsert,
            2_000,
            &crate::sink_support::batch(1, &[Some(value)]),
        )
        .await?;
        let rows: Vec<(i64, String)> = db.fetch("SELECT id, body FROM events").await?;
        assert_eq!(rows, [(1, "y".to_owned())], "{name}");
    }
    Ok(())
}
