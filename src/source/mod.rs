//! The direct Kafka source: assignment, watermarks, planning and range fetch.

mod record;

pub use record::{PartitionBatch, Record};

mod config;
mod kafka;
mod planner;

pub use config::{IsolationLevel, KafkaSourceConfig, OnDataLoss, PidConfig, StartingOffsets};
pub use kafka::KafkaSource;
pub use planner::{Planner, Watermarks, lags};
