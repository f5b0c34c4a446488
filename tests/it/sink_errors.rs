//! Bad records under each `on_error` mode, and hostile identifiers refused at configuration load.

use anyhow::Result;
use weir::Error;
use weir::sink::{SqlSink, SqlSinkConfig, WriteOutcome};

use crate::sink_support::{batch, committed, every_db, write};

/// Good records at offsets 0, 2, 5, 6; bad ones at 1 (bad JSON), 3 (wrong type), 4 (duplicate
/// primary key: a constraint violation found by the database), 7 (missing non-nullable field).
const MIXED: [&str; 8] = [
    r#"{"id":1,"qty":1}"#,
    r#"{"id":2,"qty":"#,
    r#"{"id":3,"qty":3}"#,
    r#"{"id":4,"qty":"four"}"#,
    r#"{"id":1,"qty":5}"#,
    r#"{"id":6,"qty":6}"#,
    r#"{"id":7,"qty":7}"#,
    r#"{"qty":8}"#,
];

fn config(on_error: &str) -> String {
    format!(
        "table = \"items\"\nkey = [\"id\"]\non_error = \"{on_error}\"\ncreate_table = true\n[[columns]]\nname = \"id\"\ntype = \"bigint\"\nnullable = false\n[[columns]]\nname = \"qty\"\ntype = \"integer\"\n"
    )
}

#[tokio::test]
async fn sink_on_error_fail_commits_nothing_and_names_the_record() -> Result<()> {
    for db in every_db().await? {
        let sink = db.sink(&config("fail")).await?;
        let input = batch(0, &MIXED.map(Some));
        let err = write(&sink, 1_000, &input).await.unwrap_err();
        match &err {
            Error::Record { tp, offset, reason } => {
                assert_eq!(
                    (tp.to_string().as_str(), offset),
                    ("orders/0", &1),
                    "{}: {err}",
                    db.name()
                );
                assert!(reason.contains("JSON"), "{reason}");
            }
            other => panic!("{}: expected a record error, got {other}", db.name()),
        }
        assert_eq!(db.count("items").await?, 0);
        assert_eq!(db.count("weir_commits").await?, 0);
        assert_eq!(db.count("weir_offsets").await?, 0);
        // A constraint violation alone is found and named too.
        let dup = batch(
            0,
            &[Some(r#"{"id":1,"qty":1}"#), Some(r#"{"id":1,"qty":2}"#)],
        );
        let err = write(&sink, 1_000, &dup).await.unwrap_err();
        assert!(
            matches!(err, Error::Record { offset: 1, .. }),
            "{}: {err}",
            db.name()
        );
        assert_eq!(db.count("items").await?, 0);
    }
    Ok(())
}

#[tokio::test]
async fn sink_on_error_skip_writes_the_good_and_counts_the_bad() -> Result<()> {
    for db in every_db().await? {
        let sink = db.sink(&config("skip")).await?;
        let outcome = write(&sink, 1_000, &batch(0, &MIXED.map(Some))).await?;
        assert_eq!(outcome, committed(4, 4, 0), "{}", db.name());
        let rows: Vec<(i64, i32)> = db.fetch("SELECT id, qty FROM items ORDER BY id").await?;
        assert_eq!(rows, [(1, 1), (3, 3), (6, 6), (7, 7)], "{}", db.name());
        assert_eq!(db.count("weir_dead_letters").await?, 0);
    }
    Ok(())
}

#[tokio::test]
async fn sink_on_error_dead_letter_stores_each_bad_record_once() -> Result<()> {
    for db in every_db().await? {
        let sink = db.sink(&config("dead_letter")).await?;
        let input = batch(0, &MIXED.map(Some));
        let outcome = write(&sink, 1_000, &input).await?;
        assert_eq!(outcome, committed(4, 0, 4), "{}", db.name());
        assert_eq!(
            write(&sink, 1_000, &input).await?,
            WriteOutcome::AlreadyCommitted
        );
        let rows: Vec<(i64, i32)> = db.fetch("SELECT id, qty FROM items ORDER BY id").await?;
        assert_eq!(rows, [(1, 1), (3, 3), (6, 6), (7, 7)], "{}", db.name());
        let letters: Vec<(String, i32, i64, Vec<u8>, String)> = db
            .fetch("SELECT topic, kafka_partition, kafka_offset, record_value, error_message FROM weir_dead_letters ORDER BY kafka_offset")
            .await?;
        let offsets: Vec<i64> = letters.iter().map(|l| l.2).collect();
        assert_eq!(offsets, [1, 3, 4, 7], "{}", db.name());
        for (topic, partition, offset, value, error) in &letters {
            assert_eq!((topic.as_str(), *partition), ("orders", 0));
            let index = usize::try_from(*offset)?;
            assert_eq!(value, MIXED[index].as_bytes());
            assert!(!error.is_empty());
        }
        assert!(
            letters[2].4.contains("refused"),
            "{}: {}",
            db.name(),
            letters[2].4
        );
        // The database's message once, with its code, without PostgreSQL's source line.
        let reason = &letters[2].4;
        assert!(
            !reason.contains("error returned from database") && !reason.contains(" at line "),
            "{}: {reason}",
            db.name()
        );
        let code = match db.name() {
            "postgres" => "SQLSTATE 23505",
            "mysql" => "error 1062, SQLSTATE 23000",
            _ => "code 1555",
        };
        assert!(reason.contains(code), "{}: {reason}", db.name());
    }
    Ok(())
}

#[tokio::test]
async fn sink_a_database_that_is_down_is_not_a_bad_record() -> Result<()> {
    let text = format!(
        "url = \"postgres://weir:weir@127.0.0.1:1/weir\"\n{}",
        config("dead_letter")
    );
    let config: SqlSinkConfig = toml::from_str(&text)?;
    let retry = weir::sink::RetryPolicy {
        max_attempts: 2,
        initial_backoff: std::time::Duration::from_millis(1),
        max_backoff: std::time::Duration::from_millis(1),
    };
    let mut sink = SqlSink::new(config)?.with_retry_policy(retry);
    let err = weir::sink::Sink::open(&mut sink).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    Ok(())
}

#[tokio::test]
async fn sink_hostile_identifiers_are_refused_at_config_load() -> Result<()> {
    let cases = [
        ("table = \"t\\\"; DROP TABLE x; --\"", "sink.table"),
        ("table = \"t;\"", "sink.table"),
        ("table = \"tаble\"", "sink.table"),
        (&format!("table = \"{}\"", "t".repeat(64)), "sink.table"),
        ("table = \"t\"\nschema = \"public\\\"\"", "sink.schema"),
    ];
    for (top, key) in cases {
        let text = format!("{top}\n[[columns]]\nname = \"id\"\ntype = \"bigint\"\n");
        let config: SqlSinkConfig = toml::from_str(&text)?;
        let err = SqlSink::new(config).unwrap_err().to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    let text = "table = \"t\"\n[[columns]]\nname = \"id\"\ntype = \"bigint\"\n[[columns]]\nname = \"a b\"\ntype = \"text\"\n";
    let err = SqlSink::new(toml::from_str(text)?).unwrap_err().to_string();
    assert!(err.contains("sink.columns[1].name"), "{err}");
    Ok(())
}
