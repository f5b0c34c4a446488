//! Produces sample orders as JSON to a Kafka topic, creating the topic when it is missing.
//!
//! ```text
//! cargo run --example produce_orders -- --brokers 127.0.0.1:19092 --topic orders --partitions 4 --count 5000
//! ```
//!
//! Record `i` has key `order-<i>` and value
//! `{"id": i, "customer": "c<i mod 97>", "amount": "<i mod 1000>.<i mod 100>", "placed_at": "2026-…Z"}`;
//! `--start` shifts `i`, so several runs can add distinct orders. Delivery is idempotent, so the
//! topic holds each order once.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

#[derive(Debug, Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "WEIR_KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    /// The topic to write to.
    #[arg(long, default_value = "orders")]
    topic: String,
    /// Partitions of the topic, when it has to be created.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// How many orders to produce.
    #[arg(long, default_value_t = 5000)]
    count: u64,
    /// The id of the first order.
    #[arg(long, default_value_t = 0)]
    start: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args.brokers);

    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let topic = NewTopic::new(&args.topic, args.partitions, TopicReplication::Fixed(1));
    for result in admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .context("creating the topic")?
    {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }

    let producer: FutureProducer = config
        .clone()
        .set("enable.idempotence", "true")
        .set("linger.ms", "10")
        .create()?;
    let mut pending = Vec::new();
    for i in args.start..args.start + args.count {
        let key = format!("order-{i}");
        let value = serde_json::json!({
            "id": i,
            "customer": format!("c{}", i % 97),
            "amount": format!("{}.{:02}", i % 1000, i % 100),
            "placed_at": format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + i % 28, i % 24, i % 60),
        })
        .to_string();
        let record = FutureRecord::to(&args.topic).key(&key).payload(&value);
        pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
        if pending.len() >= 10_000 {
            for delivery in pending.drain(..) {
                delivery.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for delivery in pending {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    println!("produced {} orders to {}", args.count, args.topic);
    Ok(())
}
