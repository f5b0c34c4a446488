//! Input streams: how a record becomes an item ([`FromKafka`]), the node that decodes each
//! planned range into the partition of its Kafka partition (also used for socket lines), and the
//! node that splits a directory source's files into lines.

use std::collections::BTreeSet;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::batch::Record;
use crate::error::{Error, Result};
use crate::plan::TopicPartition;

use super::dstream::Data;
use super::graph::{Batch, Node, PartitionId, Step};

/// An item decoded from a Kafka record. Implemented for the value as bytes (`Vec<u8>`), as UTF-8
/// text (`String`), as JSON of any serde type ([`Json`]), and for the whole record
/// ([`KafkaRecord`]).
pub trait FromKafka: Data + Sized {
    /// The item of `record` of `tp`; `None` leaves the record out (tombstones, for the value
    /// types). A record that cannot be decoded is an error that names it.
    fn from_kafka(tp: &TopicPartition, record: &Record) -> Result<Option<Self>>;
}

fn undecodable(tp: &TopicPartition, record: &Record, reason: String) -> Error {
    Error::Record {
        tp: tp.clone(),
        offset: record.offset,
        reason,
    }
}

impl FromKafka for Vec<u8> {
    fn from_kafka(_: &TopicPartition, record: &Record) -> Result<Option<Self>> {
        Ok(record.value.clone())
    }
}

impl FromKafka for String {
    fn from_kafka(tp: &TopicPartition, record: &Record) -> Result<Option<Self>> {
        record
            .value
            .as_deref()
            .map(|v| {
                String::from_utf8(v.to_vec()).map_err(|e| {
                    undecodable(tp, record, format!("the value is not UTF-8 text: {e}"))
                })
            })
            .transpose()
    }
}

/// A record value decoded from JSON into `T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + Data> FromKafka for Json<T> {
    fn from_kafka(tp: &TopicPartition, record: &Record) -> Result<Option<Self>> {
        record
            .value
            .as_deref()
            .map(|v| {
                serde_json::from_slice(v).map(Json).map_err(|e| {
                    undecodable(
                        tp,
                        record,
                        format!(
                            "the value is not the JSON of a {}: {e}",
                            std::any::type_name::<T>()
                        ),
                    )
                })
            })
            .transpose()
    }
}

/// A whole Kafka record with its coordinates; tombstones included (`value` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Where the record is.
    pub tp: TopicPartition,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp in epoch milliseconds, when it has one.
    pub timestamp: Option<i64>,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

impl FromKafka for KafkaRecord {
    fn from_kafka(tp: &TopicPartition, record: &Record) -> Result<Option<Self>> {
        Ok(Some(KafkaRecord {
            tp: tp.clone(),
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key.clone(),
            value: record.value.clone(),
        }))
    }
}

/// Decodes the records of its topics, one partition per Kafka partition (empty ones included).
pub(crate) struct KafkaInput<V> {
    pub(crate) topics: BTreeSet<String>,
    pub(crate) _items: PhantomData<fn() -> V>,
}

impl<V: FromKafka> Node for KafkaInput<V> {
    fn compute(&mut self, step: &mut Step<'_>) -> Result<()> {
        let mut out: Batch<V> = Batch::new();
        for batch in step.input.records {
            let tp = &batch.range.tp;
            if !self.topics.contains(&tp.topic) {
                continue;
            }
            let mut items = Vec::with_capacity(batch.records.len());
            for record in &batch.records {
                items.extend(V::from_kafka(tp, record)?);
            }
            out.insert(PartitionId::Source(tp.clone()), items);
        }
        step.put(Some(out));
        Ok(())
    }
}

/// Splits the files of a directory source into lines, one partition for the source's one
/// partition (empty when the batch found no new file).
pub(crate) struct TextFileInput {
    pub(crate) topic: String,
}

impl Node for TextFileInput {
    fn compute(&mut self, step: &mut Step<'_>) -> Result<()> {
        let mut out: Batch<String> = Batch::new();
        for batch in step.input.records {
            let tp = &batch.range.tp;
            if tp.topic != self.topic {
                continue;
            }
            let mut lines = Vec::new();
            for file in &batch.records {
                let text = std::str::from_utf8(file.value.as_deref().unwrap_or_default()).map_err(
                    |e| {
                        let path = String::from_utf8_lossy(file.key.as_deref().unwrap_or_default());
                        undecodable(tp, file, format!("file {path} is not UTF-8 text: {e}"))
                    },
                )?;
                lines.extend(text.lines().map(str::to_owned));
            }
            out.insert(PartitionId::Source(tp.clone()), lines);
        }
        step.put(Some(out));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &[u8]) -> Record {
        Record {
            offset: 7,
            timestamp: None,
            key: None,
            value: Some(value.to_vec()),
            headers: Vec::new(),
        }
    }

    #[test]
    fn decode_errors_name_the_record() {
        let tp = TopicPartition::new("orders", 2);
        let e = String::from_kafka(&tp, &record(&[0xff])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("record orders/2@7: the value is not UTF-8"),
            "{e}"
        );
        let e = Json::<u32>::from_kafka(&tp, &record(b"\"x\"")).unwrap_err();
        assert!(
            e.to_string().contains("orders/2@7") && e.to_string().contains("u32"),
            "{e}"
        );
        assert_eq!(
            Json::<u32>::from_kafka(&tp, &record(b"5")).unwrap(),
            Some(Json(5))
        );
    }
}
