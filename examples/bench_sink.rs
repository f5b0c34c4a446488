//! Measures the SQL sink against the database's own ingest rate for the same rows, in the same
//! run, and `weir run` end to end from Kafka. Prints figures; asserts nothing.
//!
//! ```text
//! scripts/services up && eval "$(scripts/services env)"
//! cargo run --release --example bench_sink                 # 10^6 orders
//! cargo run --release --example bench_sink -- --records 200000 --skip-e2e
//! ```
//!
//! Each path writes the same orders (`{"id", "customer", "amount", "placed_at"}`, as
//! `examples/produce_orders.rs` makes them) in batches of `--batch` records spread over
//! `--partitions` partitions, one transaction per partition and batch, the partitions in
//! parallel on as many connections:
//!
//! - weir's sink path as `weir run` drives it (the main job, `TableJob`, over `SqlSink`): one
//!   transaction per partition with its commit row and contiguity check, from the JSON records
//!   (parsing and mapping included);
//! - the raw path, from typed rows: PostgreSQL `COPY` (append), `COPY` into a temporary table then
//!   `INSERT … SELECT … ON CONFLICT` (upsert), MariaDB multi-row `INSERT` (append);
//! - end to end (unless `--skip-e2e`): the orders produced to a fresh topic first, then the
//!   pipeline of `weir run` (in process) from that topic into PostgreSQL, timed from its start to
//!   its last commit.
//!
//! Peak RSS is the process's `VmHWM`, reset before each path (`/proc/self/clear_refs`), so it is
//! the path's own peak over what the process held before (the batch being written included).
//! The PostgreSQL schema, MariaDB database and topic it creates are dropped at the end. Set
//! `WEIR_LOG` (e.g. `info,weir::progress=debug`) to see the pipeline's log.
// A benchmark measures time; the ban on the clock (clippy.toml) guards the product's outputs.
#![allow(clippy::disallowed_methods)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::future::try_join_all;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sqlx::{AssertSqlSafe, MySqlPool, PgPool, QueryBuilder};
use tokio_util::sync::CancellationToken;
use weir::config::PipelineConfig;
use weir::plan::{BatchPlan, BatchTime, OffsetRange, TopicPartition};
use weir::runtime::{BatchJob, TableJob};
use weir::sink::{Sink, SqlSink, SqlSinkConfig};
use weir::source::{PartitionBatch, Record};

#[derive(Debug, Parser)]
struct Args {
    /// Orders per path.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Orders per batch, over all partitions.
    #[arg(long, default_value_t = 100_000)]
    batch: u64,
    /// Partitions, written in parallel, one connection each.
    #[arg(long, default_value_t = 4)]
    partitions: u64,
    /// PostgreSQL URL (a user that may create schemas).
    #[arg(long, env = "WEIR_POSTGRES_URL")]
    postgres: String,
    /// MariaDB/MySQL URL (a user that may create databases).
    #[arg(long, env = "WEIR_MYSQL_URL")]
    mysql: String,
    /// Kafka bootstrap servers, for the end-to-end run.
    #[arg(long, env = "WEIR_KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    /// Skip the end-to-end run through Kafka.
    #[arg(long)]
    skip_e2e: bool,
    /// Run only these paths (for profiling): pg-append, pg-upsert, mysql, e2e.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

impl Args {
    fn runs(&self, path: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|p| p == path))
            && !(path == "e2e" && self.skip_e2e)
    }
}

/// One order, the same for every path.
struct Order {
    id: i64,
    customer: String,
    amount: String,
    placed_at: String,
}

impl Order {
    fn new(i: u64) -> Result<Self> {
        Ok(Self {
            id: i64::try_from(i)?,
            customer: format!("c{}", i % 97),
            amount: format!("{}.{:02}", i % 1000, i % 100),
            placed_at: format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + i % 28, i % 24, i % 60),
        })
    }

    fn json(&self) -> String {
        serde_json::json!({
            "id": self.id,
            "customer": self.customer,
            "amount": self.amount,
            "placed_at": self.placed_at,
        })
        .to_string()
    }
}

/// An order as typed values, as a program that has them would bind them.
struct TypedOrder {
    id: i64,
    customer: String,
    amount: rust_decimal::Decimal,
    placed_at: chrono::DateTime<chrono::Utc>,
}

impl TypedOrder {
    fn new(o: &Order) -> Self {
        Self {
            id: o.id,
            customer: o.customer.clone(),
            amount: o.amount.parse().unwrap_or_default(),
            placed_at: chrono::DateTime::parse_from_rfc3339(&o.placed_at)
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or_default(),
        }
    }
}

/// The orders of one batch, by partition: partition `p` holds orders `i` with `i % partitions ==
/// p`, at offsets counting up from the partition's first.
struct Batch {
    /// `(partition, first offset, orders)`.
    partitions: Vec<(i32, i64, Vec<Order>)>,
}

fn batch(args: &Args, number: u64) -> Result<Batch> {
    let first = number * args.batch;
    let last = (first + args.batch).min(args.records);
    let mut partitions: Vec<(i32, i64, Vec<Order>)> = (0..args.partitions)
        .map(|p| -> Result<_> {
            Ok((
                i32::try_from(p)?,
                i64::try_from(first / args.partitions)?,
                Vec::new(),
            ))
        })
        .collect::<Result<_>>()?;
    for i in first..last {
        let p = usize::try_from(i % args.partitions)?;
        partitions[p].2.push(Order::new(i)?);
    }
    Ok(Batch { partitions })
}

fn batches(args: &Args) -> u64 {
    args.records.div_ceil(args.batch)
}

/// Resets the peak RSS so that the next reading is this path's own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `VmHWM` of this process, in MiB.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// A measured path.
struct Figure {
    rate: f64,
    peak_rss_mib: Option<u64>,
}

/// Runs `path` over every batch, timing only `path`: not making the batch, nor `prepare`,
/// which turns it into the path's input (JSON records for weir, typed rows for the raw paths).
async fn measure<T, P, F, Fut>(args: &Args, prepare: P, mut path: F) -> Result<Figure>
where
    P: Fn(u64, Batch) -> Result<T>,
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    reset_peak_rss();
    let mut spent = Duration::ZERO;
    for number in 0..batches(args) {
        let input = prepare(number, batch(args, number)?)?;
        let started = Instant::now();
        path(input).await?;
        spent += started.elapsed();
    }
    #[allow(clippy::cast_precision_loss)] // A rate for people to read.
    let rate = args.records as f64 / spent.as_secs_f64();
    Ok(Figure {
        rate,
        peak_rss_mib: peak_rss_mib(),
    })
}

fn sink_config(url: &str, table: &str, upsert: bool) -> Result<SqlSinkConfig> {
    let mode = if upsert {
        "mode = \"upsert\"\nkey = [\"id\"]"
    } else {
        "mode = \"append\""
    };
    let text = format!(
        r#"url = {url:?}
table = "{table}"
{mode}
create_table = true
pool_size = 4
[[columns]]
name = "id"
type = "bigint"
nullable = false
[[columns]]
name = "customer"
type = "text"
[[columns]]
name = "amount"
type = "numeric(12,2)"
[[columns]]
name = "placed_at"
type = "timestamptz"
"#
    );
    Ok(toml::from_str(&text)?)
}

/// The plan and JSON records of a batch, one range per partition, as `weir run` reads them.
fn records(number: u64, batch: Batch) -> Result<(BatchPlan, Vec<PartitionBatch>)> {
    let batch_time = BatchTime::from_millis(i64::try_from(number)? + 1);
    let input: Vec<PartitionBatch> = batch
        .partitions
        .into_iter()
        .map(|(p, from, orders)| {
            let records: Vec<Record> = orders
                .iter()
                .zip(from..)
                .map(|(order, offset)| Record {
                    offset,
                    timestamp: Some(1_795_000_000_000 + offset),
                    key: Some(format!("order-{}", order.id).into_bytes()),
                    value: Some(order.json().into_bytes()),
                    headers: Vec::new(),
                })
                .collect();
            let until = from + i64::try_from(records.len())?;
            let range = OffsetRange::new(TopicPartition::new("orders", p), from, until);
            Ok(PartitionBatch { range, records })
        })
        .collect::<Result<_>>()?;
    let ranges = input.iter().map(|b| b.range.clone()).collect();
    Ok((BatchPlan::new(batch_time, ranges), input))
}

/// weir's sink path as `weir run` drives it into `table` at `url`: the main job (`TableJob`),
/// one transaction per partition through `SqlSink`, the partitions in parallel up to the pool
/// size.
async fn weir_path(args: &Args, url: &str, table: &str, upsert: bool) -> Result<Figure> {
    let mut sink = SqlSink::new(sink_config(url, table, upsert)?)?;
    sink.open().await?;
    let sink = Arc::new(sink);
    let pipeline = format!("bench-{table}");
    let pipeline = pipeline.as_str();
    let parallelism = usize::try_from(args.partitions)?;
    let figure = measure(args, records, |(plan, input)| {
        // The job holds no state between batches: one per batch is the same job.
        let mut job = TableJob::new(pipeline.to_owned(), Arc::clone(&sink), parallelism);
        async move {
            job.run_batch(&plan, input).await?;
            Ok(())
        }
    })
    .await;
    sink.close().await;
    figure
}

/// COPY text of the orders.
fn copy_text(orders: &[Order]) -> Vec<u8> {
    let mut data = Vec::with_capacity(orders.len() * 48);
    for o in orders {
        let _ = writeln!(
            data,
            "{}\t{}\t{}\t{}",
            o.id, o.customer, o.amount, o.placed_at
        );
    }
    data
}

/// PostgreSQL's raw paths: COPY into `table`, or (with `upsert`) COPY into a temporary table then
/// `INSERT … SELECT … ON CONFLICT (id) DO UPDATE`.
async fn raw_postgres(args: &Args, pool: &PgPool, table: &str, upsert: bool) -> Result<Figure> {
    let prepare = |_, batch: Batch| -> Result<Vec<Vec<u8>>> {
        Ok(batch
            .partitions
            .iter()
            .map(|(_, _, orders)| copy_text(orders))
            .collect())
    };
    measure(args, prepare, |copies: Vec<Vec<u8>>| async move {
        let writes = copies.into_iter().map(|data| async move {
            let mut tx = pool.begin().await?;
            let target = if upsert { "stage" } else { table };
            if upsert {
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE TEMPORARY TABLE stage (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP"
                )))
                .execute(&mut *tx)
                .await?;
            }
            let mut copy = tx
                .copy_in_raw(&format!(
                    "COPY {target} (id, customer, amount, placed_at) FROM STDIN"
                ))
                .await?;
            copy.send(data).await?;
            copy.finish().await?;
            if upsert {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {table} SELECT * FROM stage ON CONFLICT (id) DO UPDATE SET customer = EXCLUDED.customer, amount = EXCLUDED.amount, placed_at = EXCLUDED.placed_at"
                )))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            anyhow::Ok(())
        });
        try_join_all(writes).await?;
        Ok(())
    })
    .await
}

/// MariaDB's raw path: multi-row INSERTs of 1,000 rows (weir's default `batch_size`).
async fn raw_mysql(args: &Args, pool: &MySqlPool, table: &str) -> Result<Figure> {
    let prepare = |_, batch: Batch| -> Result<Vec<Vec<TypedOrder>>> {
        Ok(batch
            .partitions
            .iter()
            .map(|(_, _, orders)| orders.iter().map(TypedOrder::new).collect())
            .collect())
    };
    measure(
        args,
        prepare,
        |partitions: Vec<Vec<TypedOrder>>| async move {
            let writes = partitions.into_iter().map(|orders| async move {
                let mut tx = pool.begin().await?;
                for chunk in orders.chunks(1_000) {
                    let mut insert = QueryBuilder::new(format!(
                        "INSERT INTO {table} (id, customer, amount, placed_at) "
                    ));
                    insert.push_values(chunk, |mut row, o| {
                        row.push_bind(o.id)
                            .push_bind(o.customer.as_str())
                            .push_bind(o.amount)
                            .push_bind(o.placed_at);
                    });
                    insert.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                anyhow::Ok(())
            });
            try_join_all(writes).await?;
            Ok(())
        },
    )
    .await
}

/// `weir run`, in process, from a fresh topic holding the orders into a PostgreSQL table.
async fn end_to_end(args: &Args, pg_url: &str, admin: &PgPool, schema: &str) -> Result<Figure> {
    let topic = format!("weir-bench-{}", std::process::id());
    let mut kafka = ClientConfig::new();
    kafka.set("bootstrap.servers", &args.brokers);
    let kafka_admin: AdminClient<DefaultClientContext> = kafka.create()?;
    let partitions = i32::try_from(args.partitions)?;
    let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
    for result in kafka_admin
        .create_topics([&new], &AdminOptions::new())
        .await?
    {
        result.map_err(|(t, code)| anyhow::anyhow!("creating topic {t}: {code}"))?;
    }
    let result = async {
        eprint!("  producing {} orders to {topic} …", args.records);
        let producer: FutureProducer = kafka
            .clone()
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("compression.type", "lz4")
            .create()?;
        for number in 0..batches(args) {
            let mut pending = Vec::new();
            for (p, _, orders) in batch(args, number)?.partitions {
                for order in orders {
                    let (key, value) = (format!("order-{}", order.id), order.json());
                    let record = FutureRecord::to(&topic)
                        .partition(p)
                        .key(&key)
                        .payload(&value);
                    pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
                }
            }
            for delivery in pending {
                delivery.await?.map_err(|(e, _)| e)?;
            }
        }
        producer.flush(Duration::from_secs(60))?;
        eprintln!(" done");

        let dir = tempfile::tempdir()?;
        let text = format!(
            r#"[pipeline]
name = "bench-e2e"
batch_interval = "500ms"
checkpoint_dir = {dir:?}
[source]
brokers = {brokers:?}
topics = [{topic:?}]
# At most 100,000 records per partition per batch: memory stays bounded by the caps.
max_rate_per_partition = 200000
[sink]
url = {pg_url:?}
table = "e2e"
create_table = true
pool_size = 4
[[sink.columns]]
name = "id"
type = "bigint"
nullable = false
[[sink.columns]]
name = "customer"
type = "text"
[[sink.columns]]
name = "amount"
type = "numeric(12,2)"
[[sink.columns]]
name = "placed_at"
type = "timestamptz"
"#,
            dir = dir.path().display().to_string(),
            brokers = args.brokers,
        );
        let config = PipelineConfig::from_toml_str(&text)?;
        reset_peak_rss();
        let started = Instant::now();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let run = tokio::spawn(async move { weir::runtime::run_pipeline(&config, token, None).await });
        let target = i64::try_from(args.records)?;
        let sql = format!(
            "SELECT COALESCE(SUM(next_offset), 0)::bigint FROM \"{schema}\".weir_offsets WHERE pipeline = 'bench-e2e'"
        );
        loop {
            if run.is_finished() {
                bail!("the pipeline stopped early: {:?}", run.await?);
            }
            let done: Option<(i64,)> = sqlx::query_as(AssertSqlSafe(sql.clone()))
                .fetch_optional(admin)
                .await
                .ok()
                .flatten();
            if done.is_some_and(|(n,)| n >= target) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let spent = started.elapsed();
        let peak = peak_rss_mib();
        shutdown.cancel();
        run.await??;
        #[allow(clippy::cast_precision_loss)] // A rate for people to read.
        let rate = args.records as f64 / spent.as_secs_f64();
        anyhow::Ok(Figure {
            rate,
            peak_rss_mib: peak,
        })
    }
    .await;
    let _ = kafka_admin
        .delete_topics(&[topic.as_str()], &AdminOptions::new())
        .await;
    result
}

fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |j| authority + j);
    let mut out = format!("{}/{database}", &base[..path]);
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

fn row(path: &str, weir: &Figure, raw_path: &str, raw: &Figure) {
    println!(
        "{path:<34} {:>10.0} {:>8} MiB   {raw_path:<28} {:>10.0} {:>8} MiB   {:>5.2}",
        weir.rate,
        weir.peak_rss_mib.unwrap_or(0),
        raw.rate,
        raw.peak_rss_mib.unwrap_or(0),
        weir.rate / raw.rate
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // `WEIR_LOG=info,weir::progress=debug` shows the pipeline's batches during the end-to-end run.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    if args.batch == 0 || args.partitions == 0 {
        bail!("--batch and --partitions must be positive");
    }
    let name = format!("weir_bench_{}", std::process::id());
    let pg_admin = PgPool::connect(&args.postgres)
        .await
        .with_context(|| format!("connecting to {}", args.postgres))?;
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
        .execute(&pg_admin)
        .await?;
    let my_admin = MySqlPool::connect(&args.mysql)
        .await
        .with_context(|| format!("connecting to {}", args.mysql))?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
        .execute(&my_admin)
        .await?;

    let result = run(&args, &name, &pg_admin).await;

    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA \"{name}\" CASCADE")))
        .execute(&pg_admin)
        .await?;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE `{name}`")))
        .execute(&my_admin)
        .await?;
    result
}

async fn run(args: &Args, name: &str, pg_admin: &PgPool) -> Result<()> {
    let separator = if args.postgres.contains('?') {
        '&'
    } else {
        '?'
    };
    let pg_url = format!("{}{separator}options[search_path]={name}", args.postgres);
    let my_url = with_database(&args.mysql, name);
    let pg = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&pg_url)
        .await?;
    let my = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(4)
        .connect(&my_url)
        .await?;

    println!(
        "weir sink benchmark: {} JSON orders per path, batches of {} over {} partitions (one transaction per partition and batch, partitions in parallel)",
        args.records, args.batch, args.partitions
    );
    println!(
        "{:<34} {:>10} {:>12}   {:<28} {:>10} {:>12}   {:>5}",
        "weir path", "records/s", "peak RSS", "raw database path", "rows/s", "peak RSS", "ratio"
    );

    if args.runs("pg-append") {
        let weir = weir_path(args, &pg_url, "weir_append", false).await?;
        sqlx::query("CREATE TABLE raw_append (LIKE weir_append INCLUDING ALL)")
            .execute(&pg)
            .await?;
        let raw = raw_postgres(args, &pg, "raw_append", false).await?;
        row("PostgreSQL append", &weir, "COPY", &raw);
    }
    if args.runs("pg-upsert") {
        let weir = weir_path(args, &pg_url, "weir_upsert", true).await?;
        sqlx::query("CREATE TABLE raw_upsert (LIKE weir_upsert INCLUDING ALL)")
            .execute(&pg)
            .await?;
        let raw = raw_postgres(args, &pg, "raw_upsert", true).await?;
        row(
            "PostgreSQL upsert",
            &weir,
            "COPY -> temp -> ON CONFLICT",
            &raw,
        );
    }
    if args.runs("mysql") {
        let weir = weir_path(args, &my_url, "weir_append", false).await?;
        sqlx::query("CREATE TABLE raw_append LIKE weir_append")
            .execute(&my)
            .await?;
        let raw = raw_mysql(args, &my, "raw_append").await?;
        row("MariaDB append", &weir, "multi-row INSERT (1000)", &raw);
    }
    if args.runs("e2e") {
        let e2e = end_to_end(args, &pg_url, pg_admin, name).await?;
        println!(
            "{:<34} {:>10.0} {:>8} MiB   (Kafka -> PostgreSQL append, from start to last commit)",
            "weir run, end to end",
            e2e.rate,
            e2e.peak_rss_mib.unwrap_or(0)
        );
    }
    Ok(())
}
