//! The dead-letter topic: where a record that cannot be processed goes, so
//! that its partition keeps moving and the record is never lost silently.

use rdkafka::Message;
use rdkafka::message::{Header, OwnedHeaders};

use crate::producer::{Acked, Producer};
use crate::{Result, headers};

/// Copies `message` to the dead-letter topic with the reason and its origin
/// in headers, and waits for the acknowledgement (only then may the source
/// offset be stored).
pub async fn send<M: Message>(
    producer: &Producer,
    dead_letter_topic: &str,
    message: &M,
    reason: &str,
) -> Result<Acked> {
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let mut out = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        use rdkafka::message::Headers as _;
        for h in original.iter() {
            out = out.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let out = out
        .insert(Header {
            key: headers::DLQ_REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: headers::DLQ_SOURCE_TOPIC,
            value: Some(message.topic()),
        })
        .insert(Header {
            key: headers::DLQ_SOURCE_PARTITION,
            value: Some(&partition),
        })
        .insert(Header {
            key: headers::DLQ_SOURCE_OFFSET,
            value: Some(&offset),
        });
    tracing::warn!(
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        reason,
        "record sent to the dead-letter topic"
    );
    producer
        .send(
            dead_letter_topic,
            message.key().unwrap_or_default(),
            Some(message.payload().unwrap_or_default()),
            out,
        )
        .await
}
