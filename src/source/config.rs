//! The `[source]` table of a pipeline file: where to read and how fast.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::error::{Error, Result};
use crate::plan::TopicPartition;
use crate::rate::RateConfig;
use crate::redact::{MASK, is_secret_name};

/// Where a partition starts the first time a pipeline runs (a checkpoint overrides it later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartingOffsets {
    /// The first record still in the log.
    #[default]
    Earliest,
    /// The end of the log when the pipeline first starts: only new records.
    Latest,
    /// The consumer group's committed offsets (`source.group_id`), earliest where there are none.
    Committed,
}

/// What to do when records weir has not read yet were deleted by retention (invariant 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDataLoss {
    /// Stop with an error that names the lost range.
    #[default]
    Fail,
    /// Skip to the log start, and record the gap in the log, the metrics and the batch plan.
    Skip,
}

/// Kafka's transaction isolation for reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationLevel {
    /// Only records of committed transactions; batches end at the last stable offset.
    #[default]
    ReadCommitted,
    /// Every record, aborted transactions included.
    ReadUncommitted,
}

impl IsolationLevel {
    fn as_kafka(self) -> &'static str {
        match self {
            Self::ReadCommitted => "read_committed",
            Self::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// The PID estimator's gains, as Spark names them; the defaults are Spark's.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PidConfig {
    /// Weight of the current error (records/s).
    pub proportional: f64,
    /// Weight of the accumulated error (the backlog, through the scheduling delay).
    pub integral: f64,
    /// Weight of the change of the error.
    pub derivative: f64,
    /// The lowest total rate the estimator proposes, records/s.
    pub min_rate: f64,
}

impl Default for PidConfig {
    fn default() -> Self {
        let rate = RateConfig::default();
        Self {
            proportional: rate.proportional,
            integral: rate.integral,
            derivative: rate.derivative,
            min_rate: rate.min_rate,
        }
    }
}

/// The direct Kafka source. Its `Debug` output masks secret `properties` (`sasl.password`, …).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Kafka bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Topics to read; every partition of each, including partitions added later.
    pub topics: Vec<String>,
    /// Where partitions start on the first run: `earliest`, `latest` or `committed`.
    #[serde(default)]
    pub starting_offsets: StartingOffsets,
    /// Explicit first-run offsets per partition, keyed `"topic/partition"`; they override
    /// `starting_offsets` for the partitions they name.
    #[serde(default)]
    pub start_offsets: BTreeMap<String, i64>,
    /// Consumer group, used to commit finished offsets for lag tools (never read back as truth)
    /// and by `starting_offsets = "committed"`. Defaults to `weir-<pipeline name>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Commit each finished batch's offsets to `group_id`, for lag monitoring tools.
    #[serde(default)]
    pub commit_offsets: bool,
    /// Hard cap per partition in records per second; each batch reads at most
    /// `rate × batch_interval` records of a partition, the first batch after a start included.
    #[serde(default)]
    pub max_rate_per_partition: Option<u64>,
    /// Adapt the rate to what the pipeline sustains (Spark's PID backpressure).
    #[serde(default)]
    pub backpressure: bool,
    /// Total records/s for the first batches after a start, until backpressure has measured one.
    #[serde(default)]
    pub initial_rate: Option<u64>,
    /// Gains of the backpressure estimator.
    #[serde(default)]
    pub backpressure_pid: PidConfig,
    /// What to do when retention deleted records before weir read them: `fail` or `skip`.
    #[serde(default)]
    pub on_data_loss: OnDataLoss,
    /// `read_committed` (default) or `read_uncommitted`.
    #[serde(default)]
    pub isolation_level: IsolationLevel,
    /// How often to look for new partitions, e.g. `"5s"`.
    #[serde(default = "default_metadata_refresh", with = "duration")]
    pub metadata_refresh_interval: Duration,
    /// Extra librdkafka consumer properties, e.g. `"security.protocol" = "ssl"`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so that a new field cannot be left out.
        let Self {
            brokers,
            topics,
            starting_offsets,
            start_offsets,
            group_id,
            commit_offsets,
            max_rate_per_partition,
            backpressure,
            initial_rate,
            backpressure_pid,
            on_data_loss,
            isolation_level,
            metadata_refresh_interval,
            properties,
        } = self;
        let properties: BTreeMap<&str, &str> = properties
            .iter()
            .map(|(key, value)| {
                let value = if is_secret_name(key) {
                    MASK
                } else {
                    value.as_str()
                };
                (key.as_str(), value)
            })
            .collect();
        f.debug_struct("KafkaSourceConfig")
            .field("brokers", brokers)
            .field("topics", topics)
            .field("starting_offsets", starting_offsets)
            .field("start_offsets", start_offsets)
            .field("group_id", group_id)
            .field("commit_offsets", commit_offsets)
            .field("max_rate_per_partition", max_rate_per_partition)
            .field("backpressure", backpressure)
            .field("initial_rate", initial_rate)
            .field("backpressure_pid", backpressure_pid)
            .field("on_data_loss", on_data_loss)
            .field("isolation_level", isolation_level)
            .field("metadata_refresh_interval", metadata_refresh_interval)
            .field("properties", &properties)
            .finish()
    }
}

fn default_metadata_refresh() -> Duration {
    Duration::from_secs(5)
}

/// librdkafka properties weir sets itself: the protocol depends on them.
const RESERVED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "auto.offset.reset",
    "enable.partition.eof",
];

impl KafkaSourceConfig {
    /// A configuration reading `topics` from `brokers` with every default.
    pub fn new(brokers: impl Into<String>, topics: Vec<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topics,
            starting_offsets: StartingOffsets::default(),
            start_offsets: BTreeMap::new(),
            group_id: None,
            commit_offsets: false,
            max_rate_per_partition: None,
            backpressure: false,
            initial_rate: None,
            backpressure_pid: PidConfig::default(),
            on_data_loss: OnDataLoss::default(),
            isolation_level: IsolationLevel::default(),
            metadata_refresh_interval: default_metadata_refresh(),
            properties: BTreeMap::new(),
        }
    }

    /// Checks every key; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            return Err(Error::config(
                "source.brokers",
                "is empty; give at least one host:port, e.g. \"127.0.0.1:9092\"",
            ));
        }
        if self.topics.is_empty() {
            return Err(Error::config(
                "source.topics",
                "is empty; name at least one topic",
            ));
        }
        for (i, topic) in self.topics.iter().enumerate() {
            let legal = !topic.is_empty()
                && topic.len() <= 249
                && topic
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !legal {
                return Err(Error::config(
                    format!("source.topics[{i}]"),
                    format!("{topic:?} is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)"),
                ));
            }
            if self.topics[..i].contains(topic) {
                return Err(Error::config(
                    format!("source.topics[{i}]"),
                    format!("{topic:?} is listed twice"),
                ));
            }
        }
        for (key, offset) in &self.start_offsets {
            let tp = parse_topic_partition(key).ok_or_else(|| {
                Error::config(
                    format!("source.start_offsets.\"{key}\""),
                    "is not of the form \"topic/partition\"",
                )
            })?;
            if !self.topics.contains(&tp.topic) {
                return Err(Error::config(
                    format!("source.start_offsets.\"{key}\""),
                    format!("topic {:?} is not in source.topics", tp.topic),
                ));
            }
            if *offset < 0 {
                return Err(Error::config(
                    format!("source.start_offsets.\"{key}\""),
                    "must be an offset ≥ 0",
                ));
            }
        }
        if self.metadata_refresh_interval.is_zero() {
            return Err(Error::config(
                "source.metadata_refresh_interval",
                "must be more than zero",
            ));
        }
        if let Some(key) = self
            .properties
            .keys()
            .find(|k| RESERVED_PROPERTIES.contains(&k.as_str()))
        {
            return Err(Error::config(
                format!("source.properties.\"{key}\""),
                "is set by weir itself; use the matching source key instead",
            ));
        }
        self.rate_config().validate()?;
        Ok(())
    }

    /// The rate-control settings.
    pub fn rate_config(&self) -> RateConfig {
        RateConfig {
            max_rate_per_partition: self.max_rate_per_partition,
            backpressure: self.backpressure,
            initial_rate: self.initial_rate,
            proportional: self.backpressure_pid.proportional,
            integral: self.backpressure_pid.integral,
            derivative: self.backpressure_pid.derivative,
            min_rate: self.backpressure_pid.min_rate,
        }
    }

    /// Explicit start offsets, parsed.
    pub fn explicit_start_offsets(&self) -> BTreeMap<TopicPartition, i64> {
        self.start_offsets
            .iter()
            .filter_map(|(k, v)| parse_topic_partition(k).map(|tp| (tp, *v)))
            .collect()
    }

    /// The librdkafka consumer configuration for the direct source.
    pub(crate) fn client_config(&self, group_id: &str) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", self.isolation_level.as_kafka())
            // Offsets always come from the checkpoint or the plan: an out-of-range position is a
            // data-loss question for the planner, never something to paper over.
            .set("auto.offset.reset", "error");
        config
    }
}

/// Parses `"topic/partition"`.
pub(crate) fn parse_topic_partition(key: &str) -> Option<TopicPartition> {
    let (topic, partition) = key.rsplit_once('/')?;
    let partition: i32 = partition.parse().ok()?;
    (partition >= 0 && !topic.is_empty()).then(|| TopicPartition::new(topic, partition))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KafkaSourceConfig {
        KafkaSourceConfig::new("127.0.0.1:9092", vec!["orders".into()])
    }

    #[test]
    fn bad_keys_are_named() {
        let mut c = config();
        c.topics.push("bad topic".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("source.topics[1]")
        );

        let mut c = config();
        c.start_offsets.insert("orders-3".into(), 1);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("source.start_offsets")
        );

        let mut c = config();
        c.properties.insert("group.id".into(), "x".into());
        assert!(c.validate().unwrap_err().to_string().contains("group.id"));

        let mut c = config();
        c.max_rate_per_partition = Some(0);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("max_rate_per_partition")
        );
    }

    #[test]
    fn debug_output_masks_secret_properties() {
        let mut c = config();
        for key in ["sasl.password", "ssl.key.password", "ssl.keystore.password"] {
            c.properties.insert(key.into(), "hunter2".into());
        }
        c.properties
            .insert("security.protocol".into(), "sasl_ssl".into());
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("\"sasl.password\": \"***\""), "{debug}");
        assert!(debug.contains("sasl_ssl"), "{debug}");
    }

    #[test]
    fn explicit_offsets_parse() {
        let mut c = config();
        c.start_offsets.insert("orders/3".into(), 42);
        c.validate().unwrap();
        assert_eq!(
            c.explicit_start_offsets(),
            BTreeMap::from([(TopicPartition::new("orders", 3), 42)])
        );
    }
}
