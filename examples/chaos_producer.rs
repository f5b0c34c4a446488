//! The crash campaign's producer and referee (`scripts/chaos`): it writes uniquely identified JSON
//! records, and afterwards counts what reached a table, independently of weir.
//!
//! ```text
//! # Records {"id": n, ...} with ids 0, 1, 2, … over 8 partitions, 2000/s, in transactions of 100
//! # of which 10% are aborted (aborted transactions carry ids from 10^12 up, never seen again):
//! cargo run --example chaos_producer -- produce --topic chaos --count 100000 --rate 2000 \
//!     --abort-percent 10 --report produced.json
//! # Has pipeline `p` committed everything the topic holds (read_committed)?
//! cargo run --example chaos_producer -- caught-up --topic chaos --url postgres://… --pipeline p
//! # What reached table `t`: lost, duplicated and aborted ids, by `SELECT id FROM t` alone.
//! cargo run --example chaos_producer -- count --url postgres://… --table t --report produced.json
//! ```
//!
//! Ids are allocated in order, so the ids that must reach the table are `0..next_id`, less the
//! transactions whose outcome the producer could not learn (a fatal error during COMMIT), which
//! may be there once or not at all. An abortable error aborts the transaction and sends the same
//! ids again, so the ids stay one dense range.
// A tool, not the product: it paces itself by the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use serde::{Deserialize, Serialize};

/// Ids of records in transactions the producer aborts on purpose start here.
const ABORTED_BASE: i64 = 1_000_000_000_000;
/// Attempts at one transaction before the producer gives up.
const MAX_ATTEMPTS: u32 = 100;
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "WEIR_KAFKA_BROKERS",
        default_value = "127.0.0.1:19092",
        global = true
    )]
    brokers: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Produce `count` records, then write the report of what was committed.
    Produce {
        /// The topic, created when missing.
        #[arg(long)]
        topic: String,
        /// Partitions of the topic, when it has to be created.
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        /// Records with ids 0..count.
        #[arg(long, default_value_t = 100_000)]
        count: i64,
        /// Records per second, in all.
        #[arg(long, default_value_t = 2_000)]
        rate: u64,
        /// Records per transaction (or per flush, without transactions).
        #[arg(long, default_value_t = 100)]
        batch: i64,
        /// Percentage of transactions aborted on purpose; without it the producer is
        /// idempotent but not transactional.
        #[arg(long)]
        abort_percent: Option<u32>,
        /// Seed of the abort decisions.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where to write the report (JSON).
        #[arg(long)]
        report: PathBuf,
    },
    /// Exit 0 once the pipeline has committed every partition of the topic to its end.
    CaughtUp {
        /// The topic.
        #[arg(long)]
        topic: String,
        /// The sink database.
        #[arg(long)]
        url: String,
        /// The pipeline name.
        #[arg(long)]
        pipeline: String,
    },
    /// Count the ids in a table against a producer report; exit 1 on any anomaly.
    Count {
        /// The sink database.
        #[arg(long)]
        url: String,
        /// The table, with an `id` column.
        #[arg(long)]
        table: String,
        /// The producer's report.
        #[arg(long)]
        report: PathBuf,
    },
}

/// What the producer committed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Produced {
    topic: String,
    /// Ids `0..next_id` were allocated to transactions meant to commit.
    next_id: i64,
    /// Id ranges `[from, until)` whose transaction's outcome is unknown.
    uncertain: Vec<(i64, i64)>,
    committed_transactions: u64,
    aborted_transactions: u64,
    aborted_records: u64,
    producer_restarts: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Produce {
            topic,
            partitions,
            count,
            rate,
            batch,
            abort_percent,
            seed,
            report,
        } => {
            create_topic(&args.brokers, &topic, partitions)?;
            let plan = Plan {
                topic,
                partitions,
                count,
                rate: rate.max(1),
                batch: batch.max(1),
                abort_percent,
                seed,
            };
            let produced = produce(&args.brokers, &plan)?;
            std::fs::write(&report, serde_json::to_vec_pretty(&produced)?)
                .with_context(|| format!("writing {}", report.display()))?;
            println!(
                "produced: records={} committed_transactions={} aborted_transactions={} aborted_records={} uncertain_ranges={} producer_restarts={}",
                produced.next_id,
                produced.committed_transactions,
                produced.aborted_transactions,
                produced.aborted_records,
                produced.uncertain.len(),
                produced.producer_restarts
            );
            Ok(())
        }
        Command::CaughtUp {
            topic,
            url,
            pipeline,
        } => {
            let behind = behind(&args.brokers, &topic, &url, &pipeline)?;
            println!("behind={behind}");
            if behind > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Count { url, table, report } => {
            let produced: Produced = serde_json::from_slice(
                &std::fs::read(&report).with_context(|| format!("reading {}", report.display()))?,
            )?;
            let counted = count(&url, &table, &produced)?;
            println!("{counted}");
            if !counted.clean() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()?;
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        for result in admin.create_topics([&new], &AdminOptions::new()).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => bail!("creating topic {topic}: {code}"),
            }
        }
        Ok(())
    })
}

struct Plan {
    topic: String,
    partitions: i32,
    count: i64,
    rate: u64,
    batch: i64,
    abort_percent: Option<u32>,
    seed: u64,
}

/// Remembers the ids whose delivery failed (idempotent mode).
#[derive(Default)]
struct Deliveries {
    failed: Mutex<Vec<i64>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<i64>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Box<i64>) {
        if result.is_err()
            && let Ok(mut failed) = self.failed.lock()
        {
            failed.push(*id);
        }
    }
}

type ChaosProducer = ThreadedProducer<Deliveries>;

fn new_producer(brokers: &str, plan: &Plan) -> Result<ChaosProducer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    if plan.abort_percent.is_some() {
        // A transaction left open by a broker restart must not pin the LSO for long; a message
        // may wait no longer than its transaction.
        config
            .set("transactional.id", format!("chaos-{}", plan.topic))
            .set("transaction.timeout.ms", "30000")
            .set("message.timeout.ms", "30000");
    } else {
        config.set("message.timeout.ms", "120000");
    }
    let producer: ChaosProducer = config.create_with_context(Deliveries::default())?;
    if plan.abort_percent.is_some() {
        producer.init_transactions(TIMEOUT)?;
    }
    Ok(producer)
}

/// How one attempt at a transaction ended.
enum Attempt {
    Done,
    /// Aborted (abortable error): send the same ids again.
    Retry,
    /// The producer is unusable; `committing` says whether COMMIT was under way.
    Fatal {
        committing: bool,
    },
}

fn produce(brokers: &str, plan: &Plan) -> Result<Produced> {
    let mut producer = new_producer(brokers, plan)?;
    let mut produced = Produced {
        topic: plan.topic.clone(),
        ..Produced::default()
    };
    let mut random = plan.seed.max(1);
    let mut aborted_next = ABORTED_BASE;
    let started = Instant::now();
    let mut sent: u64 = 0;
    while produced.next_id < plan.count {
        let n = plan.batch.min(plan.count - produced.next_id);
        let abort = plan
            .abort_percent
            .is_some_and(|p| next_random(&mut random) % 100 < u64::from(p));
        let from = if abort {
            aborted_next
        } else {
            produced.next_id
        };
        let ids = from..from + n;
        pace(started, sent, plan.rate);
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts > MAX_ATTEMPTS {
                bail!("gave up on ids {ids:?} after {MAX_ATTEMPTS} attempts");
            }
            match attempt(&producer, plan, ids.clone(), abort) {
                Attempt::Done => break,
                Attempt::Retry => continue,
                Attempt::Fatal { committing } => {
                    eprintln!("producer: fatal error; starting a new producer");
                    std::thread::sleep(Duration::from_secs(1));
                    producer = loop {
                        match new_producer(brokers, plan) {
                            Ok(p) => break p,
                            Err(e) => {
                                eprintln!("producer: {e:#}; retrying");
                                std::thread::sleep(Duration::from_secs(1));
                            }
                        }
                    };
                    produced.producer_restarts += 1;
                    if committing && !abort {
                        produced.uncertain.push((ids.start, ids.end));
                        break;
                    }
                }
            }
        }
        sent += u64::try_from(n)?;
        if abort {
            aborted_next += n;
            produced.aborted_transactions += 1;
            produced.aborted_records += u64::try_from(n)?;
        } else {
            produced.next_id += n;
            produced.committed_transactions += 1;
        }
    }
    producer.flush(TIMEOUT)?;
    // In a transaction a failed delivery aborts it, and its ids were sent again; alone, a failed
    // delivery may or may not have reached the log.
    if plan.abort_percent.is_none() {
        let failed = producer
            .context()
            .failed
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default();
        produced
            .uncertain
            .extend(failed.into_iter().map(|id| (id, id + 1)));
    }
    Ok(produced)
}

/// One transaction (or, without transactions, one flushed batch) of `ids`.
fn attempt(
    producer: &ChaosProducer,
    plan: &Plan,
    ids: std::ops::Range<i64>,
    abort: bool,
) -> Attempt {
    let transactional = plan.abort_percent.is_some();
    let outcome = (|| -> Result<(), (KafkaError, bool)> {
        if transactional {
            producer.begin_transaction().map_err(|e| (e, false))?;
        }
        for id in ids.clone() {
            send(producer, plan, id).map_err(|e| (e, false))?;
        }
        if !transactional {
            return producer.flush(TIMEOUT).map_err(|e| (e, false));
        }
        if abort {
            return producer.abort_transaction(TIMEOUT).map_err(|e| (e, false));
        }
        let mut tries = 0;
        loop {
            match producer.commit_transaction(TIMEOUT) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < 10 => tries += 1,
                Err(e) => return Err((e, true)),
            }
        }
    })();
    let Err((error, committing)) = outcome else {
        return Attempt::Done;
    };
    eprintln!("producer: ids {ids:?}: {error}");
    match &error {
        KafkaError::Transaction(e) if e.txn_requires_abort() => {
            match producer.abort_transaction(TIMEOUT) {
                Ok(()) => Attempt::Retry,
                Err(_) => Attempt::Fatal { committing },
            }
        }
        _ if !transactional => Attempt::Retry,
        _ => Attempt::Fatal { committing },
    }
}

fn send(producer: &ChaosProducer, plan: &Plan, id: i64) -> Result<(), KafkaError> {
    let key = id.to_string();
    let value = format!(
        r#"{{"id":{id},"producer":"chaos","payload":"record {id} of {}"}}"#,
        plan.topic
    );
    let partition = i32::try_from(id.rem_euclid(i64::from(plan.partitions))).unwrap_or(0);
    let mut record = BaseRecord::with_opaque_to(&plan.topic, Box::new(id))
        .partition(partition)
        .key(&key)
        .payload(&value);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Sleeps until `sent` records are due at `rate` per second.
fn pace(started: Instant, sent: u64, rate: u64) {
    let due = Duration::from_secs_f64(sent as f64 / rate as f64);
    if let Some(wait) = due.checked_sub(started.elapsed()) {
        std::thread::sleep(wait);
    }
}

/// xorshift64: abort decisions that a seed reproduces.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Offsets the pipeline has still to commit, summed over the topic's partitions.
fn behind(brokers: &str, topic: &str, url: &str, pipeline: &str) -> Result<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("isolation.level", "read_committed")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let sql_postgres =
        "SELECT kafka_partition, next_offset FROM weir_offsets WHERE pipeline = $1 AND topic = $2";
    let sql_mysql =
        "SELECT kafka_partition, next_offset FROM weir_offsets WHERE pipeline = ? AND topic = ?";
    let committed: Vec<(i32, i64)> = query(url, |runtime| {
        runtime.block_on(async {
            Ok(if url.starts_with("postgres") {
                let pool = sqlx::PgPool::connect(url).await?;
                sqlx::query_as(sql_postgres)
                    .bind(pipeline)
                    .bind(topic)
                    .fetch_all(&pool)
                    .await?
            } else {
                let pool = sqlx::MySqlPool::connect(&mysql_url(url)).await?;
                sqlx::query_as(sql_mysql)
                    .bind(pipeline)
                    .bind(topic)
                    .fetch_all(&pool)
                    .await?
            })
        })
    })
    .unwrap_or_default();
    let mut behind = 0;
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
        let position = committed
            .iter()
            .find(|(p, _)| *p == partition)
            .map_or(low, |(_, next)| *next);
        behind += (high - position).max(0);
    }
    Ok(behind)
}

/// What a table holds, by id.
struct Counted {
    rows: u64,
    distinct: u64,
    expected: u64,
    lost: u64,
    duplicated: u64,
    aborted_visible: u64,
    unexpected: u64,
}

impl Counted {
    fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.aborted_visible == 0 && self.unexpected == 0
    }
}

impl std::fmt::Display for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "count: rows={} distinct={} expected={} lost={} duplicated={} aborted_visible={} unexpected={}",
            self.rows,
            self.distinct,
            self.expected,
            self.lost,
            self.duplicated,
            self.aborted_visible,
            self.unexpected
        )
    }
}

fn count(url: &str, table: &str, produced: &Produced) -> Result<Counted> {
    if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("table {table:?}: only letters, digits and _");
    }
    let sql = format!("SELECT id FROM {table}");
    let ids: Vec<(i64,)> = query(url, |runtime| {
        runtime.block_on(async {
            let sql = sqlx::AssertSqlSafe(sql);
            Ok(if url.starts_with("postgres") {
                let pool = sqlx::PgPool::connect(url).await?;
                sqlx::query_as(sql).fetch_all(&pool).await?
            } else {
                let pool = sqlx::MySqlPool::connect(&mysql_url(url)).await?;
                sqlx::query_as(sql).fetch_all(&pool).await?
            })
        })
    })?;
    let uncertain = |id: i64| {
        produced
            .uncertain
            .iter()
            .any(|(a, b)| (*a..*b).contains(&id))
    };
    let mut seen = HashSet::with_capacity(ids.len());
    let mut counted = Counted {
        rows: ids.len() as u64,
        distinct: 0,
        expected: 0,
        lost: 0,
        duplicated: 0,
        aborted_visible: 0,
        unexpected: 0,
    };
    for (id,) in ids {
        if !seen.insert(id) {
            counted.duplicated += 1;
        } else if id >= ABORTED_BASE {
            counted.aborted_visible += 1;
        } else if !(0..produced.next_id).contains(&id) {
            counted.unexpected += 1;
        }
    }
    counted.distinct = seen.len() as u64;
    for id in 0..produced.next_id {
        if uncertain(id) {
            continue;
        }
        counted.expected += 1;
        if !seen.contains(&id) {
            counted.lost += 1;
        }
    }
    Ok(counted)
}

/// `mariadb://` is `mysql://` to sqlx.
fn mysql_url(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => format!("mysql://{rest}"),
        None => url.to_owned(),
    }
}

fn query<T>(url: &str, f: impl FnOnce(&tokio::runtime::Runtime) -> Result<T>) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    f(&runtime).with_context(|| format!("querying {}", url.split('@').next_back().unwrap_or("")))
}
