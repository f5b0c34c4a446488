//! Records from Kafka messages: the source's half of [`crate::batch::Record`].

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};

use crate::batch::Record;

impl Record {
    /// An owned copy of a message received from Kafka.
    pub(crate) fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}
