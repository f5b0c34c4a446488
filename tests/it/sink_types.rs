//! Values: type round trips (exact numerics, timestamps), hostile values stored byte-exact, and
//! values a database cannot hold sent to the dead-letter table.

use std::str::FromStr;

use anyhow::Result;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::sink_support::{ID_BODY_COLUMNS, TestDb, batch, committed, every_db, write};

const TYPED: &str = r#"
table = "typed"
create_table = true
[[columns]]
name = "id"
type = "bigint"
[[columns]]
name = "i"
type = "integer"
[[columns]]
name = "d"
type = "double"
[[columns]]
name = "b"
type = "boolean"
[[columns]]
name = "n"
type = "numeric(38,9)"
path = "/amount/exact"
[[columns]]
name = "ts"
type = "timestamptz"
[[columns]]
name = "day"
type = "date"
[[columns]]
name = "j"
type = "json"
[[columns]]
name = "raw"
type = "bytes"
"#;

/// What a typed row reads back as, the same on every database.
#[derive(Debug, PartialEq)]
struct Typed {
    id: i64,
    i: Option<i32>,
    d: Option<f64>,
    b: Option<bool>,
    n: Option<Decimal>,
    ts: Option<DateTime<Utc>>,
    day: Option<NaiveDate>,
    j: Option<serde_json::Value>,
    raw: Option<Vec<u8>>,
}

type ServerTyped = (
    i64,
    Option<i32>,
    Option<f64>,
    Option<bool>,
    Option<Decimal>,
    Option<DateTime<Utc>>,
    Option<NaiveDate>,
    Option<String>,
    Option<Vec<u8>>,
);
type LiteTyped = (
    i64,
    Option<i32>,
    Option<f64>,
    Option<bool>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
);

fn server_typed(
    row: ServerTyped,
    json: impl Fn(Option<String>) -> Option<serde_json::Value>,
) -> Typed {
    let (id, i, d, b, n, ts, day, j, raw) = row;
    Typed {
        id,
        i,
        d,
        b,
        n,
        ts,
        day,
        j: json(j),
        raw,
    }
}

async fn read_typed(db: &TestDb) -> Result<Vec<Typed>> {
    let json = |s: Option<String>| s.map(|s| serde_json::from_str(&s).expect("stored JSON parses"));
    Ok(match db {
        TestDb::Sqlite(..) => {
            let rows: Vec<LiteTyped> = db
                .fetch("SELECT id, i, d, b, n, ts, day, j, raw FROM typed ORDER BY id")
                .await?;
            rows.into_iter()
                .map(|(id, i, d, b, n, ts, day, j, raw)| Typed {
                    id,
                    i,
                    d,
                    b,
                    n: n.map(|n| Decimal::from_str(&n).expect("exact decimal text")),
                    ts: ts.map(|t| {
                        DateTime::parse_from_rfc3339(&t)
                            .expect("RFC 3339")
                            .with_timezone(&Utc)
                    }),
                    day: day.map(|d| NaiveDate::from_str(&d).expect("date")),
                    j: json(j),
                    raw,
                })
                .collect()
        }
        TestDb::Postgres(d) => {
            let sql = "SELECT id, i, d, b, n, ts, day, j::text, raw FROM typed ORDER BY id";
            let rows: Vec<ServerTyped> = sqlx::query_as(sql).fetch_all(&d.pool).await?;
            rows.into_iter()
                .map(|row| server_typed(row, json))
                .collect()
        }
        TestDb::MySql(d) => {
            let sql = "SELECT id, i, d, b, n, ts, day, j, raw FROM typed ORDER BY id";
            let rows: Vec<ServerTyped> = sqlx::query_as(sql).fetch_all(&d.pool).await?;
            rows.into_iter()
                .map(|row| server_typed(row, json))
                .collect()
        }
    })
}

#[tokio::test]
async fn sink_types_round_trip_exactly() -> Result<()> {
    let full = r#"{"id":1,"i":-2147483648,"d":0.1,"b":true,"amount":{"exact":1234567890123456789.123456789},
        "ts":"2024-05-01T12:00:00.123456+02:00","day":"2024-02-29","j":{"a":[1,"x",null],"b":{"c":1.5}},"raw":"AP8A"}"#;
    let strings = r#"{"id":2,"i":"7","d":"1e-300","b":"false","amount":{"exact":"-0.000000001"},"ts":1714557600123,"day":19844,"j":"just a string","raw":""}"#;
    let nulls = r#"{"id":3}"#;
    for db in every_db().await? {
        let sink = db.sink(TYPED).await?;
        let outcome = write(
            &sink,
            1_000,
            &batch(0, &[Some(full), Some(strings), Some(nulls)]),
        )
        .await?;
        assert_eq!(outcome, committed(3, 0, 0), "{}", db.name());
        let rows = read_typed(&db).await?;
        let utc = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("timestamp")
                .with_timezone(&Utc)
        };
        let expected = [
            Typed {
                id: 1,
                i: Some(i32::MIN),
                d: Some(0.1),
                b: Some(true),
                n: Some(Decimal::from_str("1234567890123456789.123456789")?),
                ts: Some(utc("2024-05-01T10:00:00.123456Z")),
                day: NaiveDate::from_ymd_opt(2024, 2, 29),
                j: Some(serde_json::json!({"a": [1, "x", null], "b": {"c": 1.5}})),
                raw: Some(vec![0, 255, 0]),
            },
            Typed {
                id: 2,
                i: Some(7),
                d: Some(1e-300),
                b: Some(false),
                n: Some(Decimal::from_str("-0.000000001")?),
                ts: Some(utc("2024-05-01T10:00:00.123Z")),
                day: NaiveDate::from_ymd_opt(2024, 5, 1),
                j: Some(serde_json::json!("just a string")),
                raw: Some(Vec::new()),
            },
            Typed {
                id: 3,
                i: None,
                d: None,
                b: None,
                n: None,
                ts: None,
                day: None,
                j: None,
                raw: None,
            },
        ];
        assert_eq!(rows, expected, "{}", db.name());
    }
    Ok(())
}

#[tokio::test]
async fn sink_hostile_values_are_stored_byte_exact() -> Result<()> {
    let hostile = [
        "'; DROP TABLE texts; --",
        "\"quoted\" `back` 'single'",
        "back\\slash \\N \\. \\x41",
        "tab\there\nnewline\r\ncrlf",
        "\\.",
        "$1 ? :name @p %s {}",
        "emoji 🦀 rtl \u{202e} zero-width \u{200b} é",
        "",
    ];
    let long = "x".repeat(100_000);
    for mode in ["append", "upsert"] {
        let config = format!(
            "table = \"texts\"\nmode = \"{mode}\"\nkey = [\"id\"]\ncreate_table = true\n{ID_BODY_COLUMNS}"
        );
        for db in every_db().await? {
            let sink = db.sink(&config).await?;
            let values: Vec<String> = hostile
                .iter()
                .copied()
                .chain([long.as_str()])
                .enumerate()
                .map(|(i, s)| serde_json::json!({"id": i, "body": s}).to_string())
                .collect();
            let input: Vec<Option<&str>> = values.iter().map(|v| Some(v.as_str())).collect();
            write(&sink, 1_000, &batch(0, &input)).await?;
            let rows: Vec<(i64, String)> =
                db.fetch("SELECT id, body FROM texts ORDER BY id").await?;
            let stored: Vec<&str> = rows.iter().map(|(_, s)| s.as_str()).collect();
            let expected: Vec<&str> = hostile.iter().copied().chain([long.as_str()]).collect();
            assert_eq!(stored, expected, "{} {mode}", db.name());
        }
    }
    Ok(())
}

#[tokio::test]
async fn sink_nul_bytes_and_invalid_utf8_go_to_dead_letters() -> Result<()> {
    let config = format!(
        "table = \"texts\"\non_error = \"dead_letter\"\ncreate_table = true\n{ID_BODY_COLUMNS}"
    );
    for db in every_db().await? {
        let sink = db.sink(&config).await?;
        let mut input = batch(
            0,
            &[
                Some(r#"{"id":1,"body":"ok"}"#),
                Some(r#"{"id":2,"body":"nul\u0000inside"}"#),
                None,
                Some(r#"{"id":4,"body":"ok"}"#),
            ],
        );
        input[0].records[2].value = Some(b"{\"id\":3,\"body\":\"\xff\xfe\"}".to_vec());
        let outcome = write(&sink, 1_000, &input).await?;
        let letters: Vec<(i64, String)> = db
            .fetch(
                "SELECT kafka_offset, error_message FROM weir_dead_letters ORDER BY kafka_offset",
            )
            .await?;
        let ids: Vec<(i64, String)> = db.fetch("SELECT id, body FROM texts ORDER BY id").await?;
        if matches!(db, TestDb::Postgres(_)) {
            // PostgreSQL text cannot hold NUL: the record is the problem, not the database.
            assert_eq!(outcome, committed(2, 0, 2));
            assert_eq!(letters.iter().map(|l| l.0).collect::<Vec<_>>(), [1, 2]);
            assert!(letters[0].1.contains("NUL"), "{}", letters[0].1);
            assert_eq!(ids.len(), 2);
        } else {
            assert_eq!(outcome, committed(3, 0, 1), "{}", db.name());
            assert_eq!(letters.iter().map(|l| l.0).collect::<Vec<_>>(), [2]);
            assert_eq!(
                ids[1],
                (2, "nul\0inside".to_owned()),
                "{} stores NUL byte-exact",
                db.name()
            );
        }
        assert!(
            letters.last().expect("a dead letter").1.contains("UTF-8"),
            "{}",
            db.name()
        );
        let raw: Vec<(Vec<u8>, String)> = db
            .fetch("SELECT record_value, headers FROM weir_dead_letters WHERE kafka_offset = 2")
            .await?;
        assert_eq!(
            raw[0].0,
            b"{\"id\":3,\"body\":\"\xff\xfe\"}",
            "{}: the raw value is kept",
            db.name()
        );
        assert_eq!(raw[0].1, r#"[{"key":"h","value":"AP8="}]"#);
    }
    Ok(())
}

/// Instants and dates far from today, with `on_error` as given.
fn far_dates_sink(on_error: &str) -> String {
    format!(
        "table = \"far\"\ncreate_table = true\non_error = \"{on_error}\"\n[[columns]]\nname = \"id\"\ntype = \"bigint\"\n[[columns]]\nname = \"ts\"\ntype = \"timestamptz\"\n[[columns]]\nname = \"day\"\ntype = \"date\"\n"
    )
}

/// Rows every database holds exactly: the edges of MySQL's DATETIME and DATE, and instants
/// outside 1970–2038 (a MySQL TIMESTAMP's range).
const FAR_IN_RANGE: [&str; 4] = [
    r#"{"id":1,"ts":"1960-06-01T12:00:00.5Z","day":"1960-06-01"}"#,
    r#"{"id":2,"ts":"2100-01-01T00:00:00.000001Z","day":"2100-01-01"}"#,
    r#"{"id":3,"ts":"1000-01-01T00:00:00Z","day":"1000-01-01"}"#,
    r#"{"id":4,"ts":"9999-12-31T23:59:59.999999Z","day":"9999-12-31"}"#,
];

#[tokio::test]
async fn sink_far_timestamps_are_stored_exactly_or_refused() -> Result<()> {
    let utc = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .expect("timestamp")
            .with_timezone(&Utc)
    };
    for db in every_db().await? {
        let name = db.name();
        let sink = db.sink(&far_dates_sink("fail")).await?;
        let outcome = write(&sink, 1_000, &batch(0, &FAR_IN_RANGE.map(Some))).await?;
        assert_eq!(outcome, committed(4, 0, 0), "{name}");
        let stored: Vec<(i64, Option<DateTime<Utc>>, Option<NaiveDate>)> = match &db {
            TestDb::Sqlite(..) => {
                let rows: Vec<(i64, Option<String>, Option<String>)> =
                    db.fetch("SELECT id, ts, day FROM far ORDER BY id").await?;
                rows.into_iter()
                    .map(|(id, ts, day)| {
                        (
                            id,
                            ts.map(|t| utc(&t)),
                            day.map(|d| NaiveDate::from_str(&d).expect("date")),
                        )
                    })
                    .collect()
            }
            _ => db.fetch("SELECT id, ts, day FROM far ORDER BY id").await?,
        };
        let expected: Vec<(i64, Option<DateTime<Utc>>, Option<NaiveDate>)> = [
            ("1960-06-01T12:00:00.5Z", (1960, 6, 1)),
            ("2100-01-01T00:00:00.000001Z", (2100, 1, 1)),
            ("1000-01-01T00:00:00Z", (1000, 1, 1)),
            ("9999-12-31T23:59:59.999999Z", (9999, 12, 31)),
        ]
        .into_iter()
        .zip(1..)
        .map(|((ts, (y, m, d)), id)| (id, Some(utc(ts)), NaiveDate::from_ymd_opt(y, m, d)))
        .collect();
        assert_eq!(stored, expected, "{name}");

        if !matches!(db, TestDb::MySql(_)) {
            continue;
        }
        // Beyond what DATETIME and DATE hold (years 1000 to 9999): refused, naming the record,
        // never stored as NULL or 0000-00-00. Year 10000 as epoch milliseconds and days.
        let beyond = [
            r#"{"id":5,"ts":253402300800000}"#,
            r#"{"id":6,"day":2932897}"#,
            r#"{"id":7,"ts":"0999-12-31T23:59:59Z"}"#,
            r#"{"id":8,"day":"0999-12-31"}"#,
        ];
        for record in beyond {
            // Nothing is committed, so each attempt starts where the first batch ended.
            let err = write(&sink, 2_000, &batch(4, &[Some(record)]))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, weir::Error::Record { offset: 4, reason, .. } if reason.contains("years 1000 to 9999")),
                "{name}: {record}: {err}"
            );
        }
        let dead_letter = db.sink(&far_dates_sink("dead_letter")).await?;
        let outcome = write(&dead_letter, 2_000, &batch(4, &beyond.map(Some))).await?;
        assert_eq!(outcome, committed(0, 0, 4), "{name}");
        assert_eq!(db.count("far").await?, 4, "{name}");

        // A TIMESTAMP column (1970–2038) made elsewhere: what it cannot hold is refused too.
        if let TestDb::MySql(d) = &db {
            sqlx::query("CREATE TABLE near (id BIGINT PRIMARY KEY, ts TIMESTAMP(6) NULL)")
                .execute(&d.pool)
                .await?;
            let near = db
                .sink(
                    &far_dates_sink("fail")
                        .replace("\"far\"", "\"near\"")
                        .replace("create_table = true\n", "")
                        .replace("[[columns]]\nname = \"day\"\ntype = \"date\"\n", ""),
                )
                .await?;
            let key = weir::sink::CommitKey::new("near", weir::plan::BatchTime::from_millis(1), 0);
            let input = batch(
                0,
                &FAR_IN_RANGE[..2]
                    .iter()
                    .copied()
                    .map(Some)
                    .collect::<Vec<_>>(),
            );
            let ranges = [input[0].range.clone()];
            let err = weir::sink::Sink::write(&near, &key, &ranges, &input)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, weir::Error::Record { offset: 0, .. }),
                "{name}: {err}"
            );
            assert_eq!(db.count("near").await?, 0, "{name}");
        }
    }
    Ok(())
}
