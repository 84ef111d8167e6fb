//! Reads the compacted consent topic: every partition from the beginning
//! (no group, no commits: the table is rebuilt at each start), to the end
//! it had at start ("caught up"), then kept current. The daemon's consent
//! task turns what it reads into the table, and tells the reader what it
//! applied; the reader then says, through [`ConsentSync`], up to which log
//! time the table holds every consent record.

use crate::config::Settings;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// How far the consent table has come, for the event stage: every consent
/// record whose log time is at or before `covered_through` is applied
/// (`i64::MAX`: every record the broker has, as of the last fetch). An
/// event whose record's log time is later waits (the time synchronisation
/// of a stream-table join).
#[derive(Debug)]
pub struct ConsentSync {
    covered_through: AtomicI64,
}

impl ConsentSync {
    fn new() -> ConsentSync {
        ConsentSync {
            covered_through: AtomicI64::new(i64::MIN),
        }
    }

    /// Whether every consent record logged at or before `log_time` (ms) is
    /// in the table.
    pub fn covers(&self, log_time: i64) -> bool {
        self.covered_through.load(Ordering::Acquire) >= log_time
    }
}

/// Per consent partition: the next offset to apply, the end the broker
/// reported at the last fetch, the log time of the last record applied.
#[derive(Debug, Default, Clone, Copy)]
struct Partition {
    position: i64,
    high: i64,
    last_time: Option<i64>,
}

impl Partition {
    /// Up to which log time this partition's records are all applied: all
    /// of them when it is read to the end the broker reported, else up to
    /// the last applied one (log times grow with offsets; a producer's
    /// create times nearly so).
    fn covered_through(&self) -> i64 {
        if self.position >= self.high {
            i64::MAX
        } else {
            self.last_time.unwrap_or(i64::MIN)
        }
    }
}

/// One record of the consent topic, owned.
pub struct ConsentRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// `None`: a tombstone (the user named by the key is forgotten).
    pub payload: Option<Vec<u8>>,
    /// Its log time (ms).
    pub timestamp: Option<i64>,
}

pub struct ConsentReader {
    consumer: StreamConsumer,
    pub topic: String,
    /// Per partition, the end offset seen at start: reading to it is "caught up".
    targets: BTreeMap<i32, i64>,
    partitions: BTreeMap<i32, Partition>,
    sync: Arc<ConsentSync>,
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
        // A caught-up reader's fetches come back at least this often: how
        // stale "read to the end" can be (ConsentSync).
        super::set_default(&mut c, "fetch.wait.max.ms", "100");
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
        let partitions = targets
            .iter()
            .map(|(&p, &high)| {
                let part = Partition {
                    position: 0,
                    high,
                    last_time: None,
                };
                (p, part)
            })
            .collect();
        let reader = ConsentReader {
            consumer,
            topic,
            targets,
            partitions,
            sync: Arc::new(ConsentSync::new()),
        };
        reader.publish();
        Ok(reader)
    }

    /// How far the table has come, shared with the event stage.
    pub fn sync(&self) -> Arc<ConsentSync> {
        Arc::clone(&self.sync)
    }

    fn publish(&self) {
        let through = self
            .partitions
            .values()
            .map(Partition::covered_through)
            .min()
            .unwrap_or(i64::MAX);
        self.sync.covered_through.store(through, Ordering::Release);
    }

    /// The record was applied to the table.
    pub fn applied(&mut self, r: &ConsentRecord) {
        let p = self.partitions.entry(r.partition).or_default();
        p.position = p.position.max(r.offset + 1);
        p.high = p.high.max(p.position);
        if let Some(t) = r.timestamp {
            p.last_time = Some(p.last_time.map_or(t, |last| last.max(t)));
        }
        self.publish();
    }

    /// Takes the end of each partition from the last fetch (librdkafka's
    /// cached high watermarks: no request), so that a partition read to
    /// its end covers every time.
    pub fn refresh(&mut self) {
        for (&id, p) in self.partitions.iter_mut() {
            if let Some(high) = super::cached_end(self.consumer.client(), &self.topic, id) {
                p.high = high;
            }
        }
        self.publish();
    }

    /// Whether every partition was read to the end it had at start.
    pub fn caught_up(&self) -> bool {
        self.targets.iter().all(|(p, high)| {
            *high == 0 || self.partitions.get(p).is_some_and(|s| s.position >= *high)
        })
    }

    /// The next record (`applied` says when it is in the table).
    pub async fn next(&mut self) -> Result<ConsentRecord, KafkaError> {
        let msg = self.consumer.recv().await?;
        let record = ConsentRecord {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            timestamp: msg.timestamp().to_millis(),
        };
        drop(msg);
        // Read, not applied yet: its partition is behind until `applied`
        // (the record may wait long, for its schema).
        let p = self.partitions.entry(record.partition).or_default();
        p.high = p.high.max(record.offset + 1);
        self.publish();
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_covers_every_time_at_its_end_else_up_to_its_last_record() {
        let behind = Partition {
            position: 5,
            high: 9,
            last_time: Some(1_000),
        };
        assert_eq!(behind.covered_through(), 1_000);
        let at_end = Partition {
            position: 9,
            ..behind
        };
        assert_eq!(at_end.covered_through(), i64::MAX);
        let nothing_read = Partition {
            position: 0,
            high: 3,
            last_time: None,
        };
        assert_eq!(nothing_read.covered_through(), i64::MIN);
        let empty = Partition::default();
        assert_eq!(empty.covered_through(), i64::MAX);
        let sync = ConsentSync::new();
        assert!(!sync.covers(0));
        sync.covered_through.store(1_000, Ordering::Release);
        assert!(sync.covers(1_000) && !sync.covers(1_001));
    }
}
