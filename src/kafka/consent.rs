//! Reads the compacted consent topic: every partition from the beginning
//! (no group, no commits: the table is rebuilt at each start), to the end
//! it had at start ("caught up"), then kept current. The daemon's consent
//! task turns what it reads into the table.

use crate::config::Settings;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;

/// One record of the consent topic, owned.
pub struct ConsentRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// `None`: a tombstone (the user named by the key is forgotten).
    pub payload: Option<Vec<u8>>,
}

pub struct ConsentReader {
    consumer: StreamConsumer,
    pub topic: String,
    /// Per partition, the end offset seen at start: reading to it is "caught up".
    targets: BTreeMap<i32, i64>,
    positions: BTreeMap<i32, i64>,
}

impl ConsentReader {
    /// Assigns every partition of the consent topic from its beginning.
    /// Blocking (metadata and end offsets are asked of the broker).
    pub fn new(settings: &Settings) -> Result<ConsentReader, KafkaError> {
        let mut c = super::consumer_config(settings);
        c.set("group.id", format!("{}-consent-reader", settings.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        // The table is the memory that matters: bound what librdkafka buffers ahead of it.
        super::set_default(&mut c, "queued.max.messages.kbytes", "16384");
        let consumer: StreamConsumer = c.create()?;
        let topic = settings.topics.consent.clone();
        let meta = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let partitions: Vec<i32> = meta
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut tpl = TopicPartitionList::new();
        let mut targets = BTreeMap::new();
        for p in partitions {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
            let (_, high) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
            targets.insert(p, high);
        }
        if targets.is_empty() {
            // Not fatal (the topic may be created later), but every event would
            // be judged with no consent state: say so loudly.
            tracing::error!(topic = %topic, "the consent topic has no partitions (does it exist?); judging with an empty consent table");
        }
        consumer.assign(&tpl)?;
        Ok(ConsentReader {
            consumer,
            topic,
            targets,
            positions: BTreeMap::new(),
        })
    }

    /// Whether every partition was read to the end it had at start.
    pub fn caught_up(&self) -> bool {
        self.targets
            .iter()
            .all(|(p, high)| *high == 0 || self.positions.get(p).is_some_and(|pos| pos >= high))
    }

    /// The next record.
    pub async fn next(&mut self) -> Result<ConsentRecord, KafkaError> {
        let msg = self.consumer.recv().await?;
        let record = ConsentRecord {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
        };
        drop(msg);
        self.positions.insert(record.partition, record.offset + 1);
        Ok(record)
    }
}
