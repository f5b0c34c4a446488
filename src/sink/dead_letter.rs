//! Dead letters: records that could not be written, stored raw with their coordinates and the
//! error in `weir_dead_letters`, inside the batch's transaction.

use base64::Engine as _;
use serde::Serialize;

use crate::sink::CommitKey;
use crate::sink::mapping::Origin;
use crate::sink::types::ColumnType;
use crate::sink::value::{BASE64, SqlValue};

/// The insert statement; `?` placeholders.
pub(crate) const INSERT_DEAD_LETTER: &str = "INSERT INTO weir_dead_letters (pipeline, batch_time, partition_id, topic, kafka_partition, kafka_offset, record_timestamp, record_key, record_value, headers, error_message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

#[derive(Serialize)]
struct Header<'a> {
    key: &'a str,
    value: Option<String>,
}

/// The parameters of [`INSERT_DEAD_LETTER`] for one record.
pub(crate) fn parameters(key: &CommitKey, origin: Origin<'_>, reason: &str) -> Vec<SqlValue> {
    let record = origin.record;
    let headers: Vec<Header<'_>> = record
        .headers
        .iter()
        .map(|(k, v)| Header {
            key: k,
            value: v.as_deref().map(|v| BASE64.encode(v)),
        })
        .collect();
    let headers = serde_json::to_string(&headers).unwrap_or_else(|_| "[]".to_owned());
    let bytes = |b: &Option<Vec<u8>>| match b {
        Some(b) => SqlValue::Bytes(b.clone()),
        None => SqlValue::Null(ColumnType::Bytes),
    };
    vec![
        SqlValue::Text(key.pipeline.clone()),
        SqlValue::BigInt(key.batch_time.as_millis()),
        SqlValue::BigInt(key.partition_id),
        SqlValue::Text(origin.tp.topic.clone()),
        SqlValue::Integer(origin.tp.partition),
        SqlValue::BigInt(record.offset),
        record
            .timestamp
            .map_or(SqlValue::Null(ColumnType::BigInt), SqlValue::BigInt),
        bytes(&record.key),
        bytes(&record.value),
        SqlValue::Text(headers),
        // Reasons may quote the record; PostgreSQL text cannot hold NUL.
        SqlValue::Text(reason.replace('\0', "\\0")),
    ]
}
