//! Reads the compacted consent topic into the consent table: every
//! partition from the beginning (no group, no commits: the table is rebuilt
//! at each start), to the end before the daemon audits anything, then kept
//! current. A null value (tombstone) removes the user named by the key.

use crate::codec::wire::{self, SchemaLookup};
use crate::config::Settings;
use crate::consent::ConsentTable;
use crate::telemetry::Metrics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub struct ConsentReader {
    consumer: BaseConsumer,
    topic: String,
    /// Per partition, the end offset seen at start: reading to it is "caught up".
    targets: BTreeMap<i32, i64>,
    positions: BTreeMap<i32, i64>,
}

impl ConsentReader {
    pub fn new(settings: &Settings) -> Result<ConsentReader, KafkaError> {
        let mut c = super::client_config(settings);
        c.set("group.id", format!("{}-consent-reader", settings.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        // The table is the memory that matters: bound what librdkafka buffers ahead of it.
        super::set_default(&mut c, "queued.max.messages.kbytes", "16384");
        let consumer: BaseConsumer = c.create()?;
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

    /// Applies what arrives within `budget` (or up to `max` records) to the table.
    pub fn poll(
        &mut self,
        table: &mut ConsentTable,
        schemas: &dyn SchemaLookup,
        metrics: &Metrics,
        budget: Duration,
        max: usize,
    ) {
        let deadline = Instant::now() + budget;
        for _ in 0..max {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(msg) = self.consumer.poll(left) else {
                break;
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, topic = %self.topic, "consent topic");
                    break;
                }
            };
            self.positions.insert(msg.partition(), msg.offset() + 1);
            match msg.payload() {
                None => {
                    if let Some(user) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) {
                        table.remove(user);
                        metrics
                            .consent_records
                            .with_label_values(&["tombstone"])
                            .inc();
                    }
                }
                Some(bytes) => match wire::decode_consent(bytes, schemas) {
                    Ok(state) => {
                        table.upsert(state);
                        metrics.consent_records.with_label_values(&["ok"]).inc();
                    }
                    Err(e) => {
                        metrics
                            .consent_records
                            .with_label_values(&["invalid"])
                            .inc();
                        tracing::warn!(
                            class = e.class(),
                            partition = msg.partition(),
                            offset = msg.offset(),
                            "consent record skipped: cannot be decoded"
                        );
                    }
                },
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        metrics.consent_users.set(table.users() as i64);
    }
}
