//! Reads one partition from the start of its retention to its end, outside
//! any group: a new owner of a recipient-rate partition rebuilds its
//! windows from it. Blocking; the rate stage runs it off the runtime's
//! workers.

use crate::config::Settings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// One record read back: its offset, headers and payload.
pub type Stored = (i64, Vec<(String, Vec<u8>)>, Option<Vec<u8>>);

/// Why a read stopped short of the end.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("timed out at offset {read_through:?} of {end}")]
    TimedOut { read_through: Option<i64>, end: i64 },
}

/// Every record of `topic`/`partition` up to the end it has now, in offset
/// order, within `timeout`. What was read before an error comes with it.
pub fn read_partition(
    settings: &Settings,
    group: &str,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> (Vec<Stored>, Result<(), RestoreError>) {
    let mut records = Vec::new();
    let result = (|| {
        let mut c = super::consumer_config(settings);
        c.set("enable.auto.commit", "false").set("group.id", group);
        super::set_default(&mut c, "queued.max.messages.kbytes", "16384");
        let consumer: BaseConsumer = c.create()?;
        let (low, end) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        if end <= low {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(low))?;
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + timeout;
        loop {
            if Instant::now() >= deadline {
                return Err(RestoreError::TimedOut {
                    read_through: records.last().map(|(o, _, _)| *o),
                    end,
                });
            }
            let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let msg = msg?;
            records.push((
                msg.offset(),
                super::headers(&msg),
                msg.payload().map(<[u8]>::to_vec),
            ));
            if msg.offset() + 1 >= end {
                return Ok(());
            }
        }
    })();
    (records, result)
}
