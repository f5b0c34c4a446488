//! `weir verify` against real pipelines: a clean run verifies on every database; a row deleted,
//! duplicated or altered in the table, or a commit removed from the commit table, is reported
//! with the right counts and partitions.

use anyhow::{Context, Result, ensure};
use rdkafka::producer::FutureProducer;
use sqlx::AssertSqlSafe;
use tokio_util::sync::CancellationToken;
use weir::config::PipelineConfig;
use weir::plan::TopicPartition;
use weir::sink::source_partition_id;
use weir::verify::{ProblemKind, Report};

use crate::common::{TestEnv, TestTopic};
use crate::pipeline_support::{pipeline_file, send};
use crate::sink_support::{TestDb, every_db};

const PARTITIONS: i32 = 3;

/// `[[sink.columns]]` entries of `(name, type)`; the first one is not nullable.
fn columns(list: &[(&str, &str)]) -> String {
    list.iter()
        .enumerate()
        .map(|(i, (name, kind))| {
            let nullable = if i == 0 { "nullable = false\n" } else { "" };
            format!("[[sink.columns]]\nname = \"{name}\"\ntype = \"{kind}\"\n{nullable}")
        })
        .collect()
}

/// Every column type the sink knows, so that each one is read back and compared.
fn append_sink() -> String {
    let list = [
        ("id", "bigint"),
        ("name", "text"),
        ("amount", "numeric(12,2)"),
        ("placed_at", "timestamptz"),
        ("paid", "boolean"),
        ("tags", "json"),
        ("day", "date"),
        ("ratio", "double"),
        ("blob", "bytes"),
    ];
    format!(
        "table = \"verified\"\ncreate_table = true\n{}[sink.metadata]\npartition = \"kafka_partition\"\noffset = \"kafka_offset\"\n",
        columns(&list)
    )
}

fn upsert_sink() -> String {
    format!(
        "table = \"verified\"\ncreate_table = true\nmode = \"upsert\"\nkey = [\"id\"]\n{}",
        columns(&[("id", "bigint"), ("name", "text")])
    )
}

fn order(id: i64) -> String {
    format!(
        r#"{{"id":{id},"name":"n{id}","amount":"{id}.5","placed_at":{},"paid":{},"tags":{{"b":{id},"a":[1,"x"]}},"day":"2024-05-01","ratio":{},"blob":"AAE="}}"#,
        1_714_557_600_123_i64 + id,
        id % 2 == 0,
        // A fraction that no database may round.
        f64::from(i32::try_from(id).unwrap_or(0)) / 3.0,
    )
}

/// A fresh topic and checkpoint directory, and the pipeline file that joins them to a database.
struct Case {
    topic: TestTopic,
    producer: FutureProducer,
    dir: tempfile::TempDir,
    toml: String,
}

impl Case {
    async fn new(env: &TestEnv, db: &TestDb, prefix: &str, sink: &str) -> Result<Self> {
        let topic = env.topic(prefix, PARTITIONS).await?;
        let dir = tempfile::tempdir()?;
        let checkpoint = dir.path().join("checkpoint");
        let toml = pipeline_file(env, &topic, db.url(), &checkpoint, "", sink);
        Ok(Self {
            topic,
            producer: env.producer()?,
            dir,
            toml,
        })
    }
}

/// Sends `(partition, key, value)` records and waits for every acknowledgement.
async fn produce(
    producer: &FutureProducer,
    topic: &TestTopic,
    records: &[(i32, String, Option<String>)],
) -> Result<()> {
    let records = records
        .iter()
        .map(|(p, k, v)| (*p, Some(k.clone()), v.clone()));
    send(producer, topic, records).await
}

fn orders(ids: std::ops::Range<i64>) -> Vec<(i32, String, Option<String>)> {
    ids.map(|id| {
        let partition = i32::try_from(id % i64::from(PARTITIONS)).unwrap_or(0);
        (partition, format!("{{\"id\":{id}}}"), Some(order(id)))
    })
    .collect()
}

/// Runs the pipeline in process for one new batch, which takes everything produced so far.
async fn run_one_batch(toml: &str) -> Result<()> {
    let config = PipelineConfig::from_toml_str(toml)?;
    let summary = weir::runtime::run_pipeline(&config, CancellationToken::new(), Some(1)).await?;
    ensure!(summary.batches == 1, "{summary:?}");
    Ok(())
}

async fn verify(toml: &str) -> Result<Report> {
    let config = PipelineConfig::from_toml_str(toml)?;
    Ok(weir::verify::verify(&config, |_| {}).await?)
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

/// `(missing, duplicated, differing, unexpected)` of every partition, by partition number.
fn per_partition(report: &Report) -> Vec<(u64, u64, u64, u64)> {
    report
        .partitions
        .iter()
        .map(|p| (p.missing, p.duplicated, p.differing, p.unexpected))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_append_is_clean_then_reports_each_tampering() -> Result<()> {
    let env = TestEnv::get().await;
    for db in every_db().await? {
        let name = db.name();
        let case = Case::new(env, &db, "verify-append", &append_sink()).await?;
        // Two batches, so each partition has a chain of two commits.
        produce(&case.producer, &case.topic, &orders(0..150)).await?;
        run_one_batch(&case.toml).await?;
        produce(&case.producer, &case.topic, &orders(150..300)).await?;
        run_one_batch(&case.toml).await?;

        let clean = verify(&case.toml).await?;
        ensure!(clean.is_clean(), "{name}: {clean}");
        ensure!(
            clean.records == 300 && clean.table_rows == 300,
            "{name}: {clean}"
        );
        ensure!(
            clean.commits == 6 && clean.partitions.len() == 3,
            "{name}: {clean}"
        );

        // id 5 is in partition 2, id 7 in partition 1, id 9 in partition 0.
        execute(&db, "DELETE FROM verified WHERE id = 5").await?;
        execute(
            &db,
            "INSERT INTO verified SELECT * FROM verified WHERE id = 7",
        )
        .await?;
        execute(&db, "UPDATE verified SET name = 'changed' WHERE id = 9").await?;
        let tampered = verify(&case.toml).await?;
        ensure!(!tampered.is_clean(), "{name}: {tampered}");
        ensure!(
            (
                tampered.missing,
                tampered.duplicated,
                tampered.differing,
                tampered.unexpected
            ) == (1, 1, 1, 0),
            "{name}: {tampered}"
        );
        ensure!(
            per_partition(&tampered) == [(0, 0, 1, 0), (0, 1, 0, 0), (1, 0, 0, 0)],
            "{name}: {tampered}"
        );
        ensure!(
            tampered
                .examples
                .iter()
                .any(|e| e.starts_with("differs:") && e.contains("name=changed")),
            "{name}: {tampered}"
        );

        // Without the first commit of partition 0 its chain starts late, and its 50 rows are
        // explained by no commit.
        let p0_id = source_partition_id(&TopicPartition::new(&case.topic.name, 0));
        let first: Vec<(i64,)> = db
            .fetch(&format!(
                "SELECT MIN(batch_time) FROM weir_commits WHERE partition_id = {p0_id}"
            ))
            .await?;
        execute(
            &db,
            &format!(
                "DELETE FROM weir_commits WHERE partition_id = {p0_id} AND batch_time = {}",
                first[0].0
            ),
        )
        .await?;
        let broken = verify(&case.toml).await?;
        let problems: Vec<(&str, ProblemKind, i64, i64)> = broken
            .problems
            .iter()
            .map(|p| (p.partition.as_str(), p.kind, p.from, p.until))
            .collect();
        let p0 = format!("{}/0", case.topic.name);
        ensure!(
            problems == [(p0.as_str(), ProblemKind::WrongStart, 0, 50)],
            "{name}: {broken}"
        );
        ensure!(broken.unexpected == 50, "{name}: {broken}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_upsert_compares_the_last_write_per_key() -> Result<()> {
    let env = TestEnv::get().await;
    for db in every_db().await? {
        let name = db.name();
        let case = Case::new(env, &db, "verify-upsert", &upsert_sink()).await?;
        let keyed = |id: i64, value: Option<String>| {
            let partition = i32::try_from(id % i64::from(PARTITIONS)).unwrap_or(0);
            (partition, format!("{{\"id\":{id}}}"), value)
        };
        let first: Vec<_> = (0..30)
            .map(|id| keyed(id, Some(format!(r#"{{"id":{id},"name":"v1"}}"#))))
            .collect();
        produce(&case.producer, &case.topic, &first).await?;
        run_one_batch(&case.toml).await?;
        // Rewrites of 0..10 and tombstones of 10..15, partly in the same batch as a write.
        let mut second: Vec<_> = (0..10)
            .map(|id| keyed(id, Some(format!(r#"{{"id":{id},"name":"v2"}}"#))))
            .collect();
        second.extend((10..15).map(|id| keyed(id, None)));
        second.push(keyed(40, Some(r#"{"id":40,"name":"v1"}"#.to_owned())));
        second.push(keyed(40, None));
        produce(&case.producer, &case.topic, &second).await?;
        run_one_batch(&case.toml).await?;

        let clean = verify(&case.toml).await?;
        ensure!(clean.is_clean(), "{name}: {clean}");
        ensure!(clean.table_rows == 25, "{name}: {clean}");

        // id 1 (partition 1) rewritten, id 20 (partition 2) lost, id 12 (partition 0) deleted
        // last but back, id 999 written by nobody.
        execute(&db, "UPDATE verified SET name = 'v1' WHERE id = 1").await?;
        execute(&db, "DELETE FROM verified WHERE id = 20").await?;
        execute(&db, "INSERT INTO verified (id, name) VALUES (12, 'v1')").await?;
        execute(&db, "INSERT INTO verified (id, name) VALUES (999, 'x')").await?;
        let tampered = verify(&case.toml).await?;
        ensure!(
            (
                tampered.missing,
                tampered.duplicated,
                tampered.differing,
                tampered.unexpected
            ) == (1, 0, 1, 2),
            "{name}: {tampered}"
        );
        ensure!(
            per_partition(&tampered) == [(0, 0, 0, 1), (0, 0, 1, 0), (1, 0, 0, 0)],
            "{name}: {tampered}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn weir_verify_prints_json_and_exits_non_zero_on_a_difference() -> Result<()> {
    let env = TestEnv::get().await;
    let db = every_db()
        .await?
        .into_iter()
        .find(|db| db.name() == "sqlite")
        .context("no SQLite database")?;
    let case = Case::new(env, &db, "verify-cli", &append_sink()).await?;
    produce(&case.producer, &case.topic, &orders(0..30)).await?;
    run_one_batch(&case.toml).await?;
    let file = case.dir.path().join("pipeline.toml");
    std::fs::write(&file, &case.toml)?;
    let weir = |json: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_weir"));
        command.arg("verify").arg(&file);
        if json {
            command.arg("--json");
        }
        command.output()
    };

    let ok = weir(false)?;
    let text = String::from_utf8_lossy(&ok.stdout);
    ensure!(ok.status.success(), "{text}");
    ensure!(text.contains("OK: the table holds exactly"), "{text}");

    execute(&db, "DELETE FROM verified WHERE id < 3").await?;
    let failed = weir(true)?;
    ensure!(!failed.status.success());
    let report: serde_json::Value = serde_json::from_slice(&failed.stdout)?;
    ensure!(
        report["missing"] == 3 && report["records"] == 30,
        "{report}"
    );
    let stderr = String::from_utf8_lossy(&failed.stderr);
    ensure!(stderr.contains("3 missing"), "{stderr}");
    Ok(())
}

/// Committed records that retention deleted cannot be read again: verify says so at once,
/// naming the range, instead of waiting minutes for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_at_once_when_retention_deleted_committed_records() -> Result<()> {
    let env = TestEnv::get().await;
    let lite = env.sqlite()?;
    let pool = sqlx::SqlitePool::connect(&lite.url).await?;
    let db = TestDb::Sqlite(lite, pool);
    let case = Case::new(env, &db, "verify-retention", &upsert_sink()).await?;
    produce(&case.producer, &case.topic, &orders(0..40)).await?;
    run_one_batch(&case.toml).await?;
    ensure!(verify(&case.toml).await?.is_clean());

    let tp = TopicPartition::new(&case.topic.name, 0);
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        env.kafka_config().create()?;
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset(&tp.topic, 0, rdkafka::Offset::Offset(5))?;
    admin
        .delete_records(&list, &rdkafka::admin::AdminOptions::new())
        .await?;

    let started = std::time::Instant::now();
    let error = match verify(&case.toml).await {
        Ok(report) => anyhow::bail!("verify gave a verdict over deleted records: {report}"),
        Err(error) => format!("{error:#}"),
    };
    ensure!(
        error.contains("[0..5) were deleted by retention") && error.contains(&tp.to_string()),
        "the error must name the deleted range: {error}"
    );
    ensure!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    drop(case);
    Ok(())
}

/// The dead-letter table is part of what verify checks: a dead letter deleted or stored twice is
/// reported, naming the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_deleted_or_doubled_dead_letter() -> Result<()> {
    let env = TestEnv::get().await;
    let lite = env.sqlite()?;
    let pool = sqlx::SqlitePool::connect(&lite.url).await?;
    let db = TestDb::Sqlite(lite, pool);
    let sink = format!("on_error = \"dead_letter\"\n{}", upsert_sink());
    let case = Case::new(env, &db, "verify-dead-letters", &sink).await?;
    let mut records = orders(0..20);
    // Offsets 5 and 6 of partition 0 (ids 15 and 18) are not numbers: dead letters.
    for (_, _, value) in records
        .iter_mut()
        .filter(|(_, k, _)| k.contains(":15}") || k.contains(":18}"))
    {
        *value = Some(r#"{"id":"not a number"}"#.to_owned());
    }
    produce(&case.producer, &case.topic, &records).await?;
    run_one_batch(&case.toml).await?;
    let stored: Vec<(i64, i64, String)> = db
        .fetch("SELECT kafka_partition, kafka_offset, error_message FROM weir_dead_letters")
        .await?;
    ensure!(stored.len() == 2, "{stored:?}");
    let clean = verify(&case.toml).await?;
    ensure!(clean.is_clean(), "{clean}");

    let p0 = format!("{}/0", case.topic.name);
    execute(&db, "DELETE FROM weir_dead_letters WHERE kafka_offset = 5").await?;
    execute(&db, "INSERT INTO weir_dead_letters SELECT pipeline, batch_time + 1, partition_id, topic, kafka_partition, kafka_offset, record_timestamp, record_key, record_value, headers, error_message, created_at FROM weir_dead_letters WHERE kafka_offset = 6").await?;
    let report = verify(&case.toml).await?;
    let problems: Vec<(&str, ProblemKind, i64)> = report
        .problems
        .iter()
        .map(|p| (p.partition.as_str(), p.kind, p.from))
        .collect();
    ensure!(
        problems
            == [
                (p0.as_str(), ProblemKind::DeadLetterMissing, 5),
                (p0.as_str(), ProblemKind::DeadLetterDuplicated, 6)
            ],
        "{report}"
    );
    ensure!(!report.is_clean());
    Ok(())
}

/// A pipeline that commits while verify runs never makes verify report a false mismatch: verify
/// refuses clearly instead of counting the new rows as unexpected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_clearly_when_the_pipeline_commits_during_it() -> Result<()> {
    let env = TestEnv::get().await;
    let lite = env.sqlite()?;
    let pool = sqlx::SqlitePool::connect(&lite.url).await?;
    let db = TestDb::Sqlite(lite, pool);
    let case = Case::new(env, &db, "verify-live", &upsert_sink()).await?;
    produce(&case.producer, &case.topic, &orders(0..30)).await?;
    run_one_batch(&case.toml).await?;
    produce(&case.producer, &case.topic, &orders(30..60)).await?;

    // Once verify has read Kafka (and the commits before it), the pipeline commits a batch.
    let toml = case.toml.clone();
    let config = PipelineConfig::from_toml_str(&case.toml)?;
    let result = weir::verify::verify(&config, move |progress| {
        if let weir::verify::Progress::Kafka { offsets, total, .. } = progress
            && offsets == total
        {
            let toml = toml.clone();
            let ran = std::thread::spawn(move || {
                tokio::runtime::Runtime::new()?.block_on(run_one_batch(&toml))
            })
            .join();
            assert!(
                matches!(ran, Ok(Ok(()))),
                "the batch during verify: {ran:?}"
            );
        }
    })
    .await;
    let error = match result {
        Ok(report) => anyhow::bail!("verify gave a verdict while the pipeline committed: {report}"),
        Err(error) => error.to_string(),
    };
    ensure!(
        error.contains("committed") && error.contains("while the pipeline is stopped or idle"),
        "{error}"
    );
    // Once the pipeline is idle, verify is clean, also over old commits folded into one row.
    let report = verify(&case.toml).await?;
    ensure!(report.is_clean(), "{report}");
    produce(&case.producer, &case.topic, &orders(60..90)).await?;
    run_one_batch(&case.toml).await?;
    let mut sink = weir::sink::SqlSink::connect(&config.sink).await?;
    weir::sink::Sink::open(&mut sink).await?;
    let removed = weir::sink::Sink::fold_commits(
        &sink,
        &config.pipeline.name,
        weir::plan::BatchTime::from_millis(i64::MAX),
    )
    .await?;
    ensure!(removed > 0, "nothing was folded");
    let report = verify(&case.toml).await?;
    ensure!(report.is_clean(), "after the fold: {report}");
    Ok(())
}
