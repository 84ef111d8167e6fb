//! Reads what a topic logged from a point in time to the end it has now,
//! outside any group, committing nothing: the compliance report from what
//! the daemon wrote (`shareaudit report`). Blocking.
//!
//! Where to start: the broker's answer for the time (`ListOffsets` by
//! timestamp), an offset before which every record is older. tansu 0.6
//! answers every time with the log's start; that is only slower, never
//! wrong, because the caller keeps a record by its own timestamp. Where to
//! stop: each partition's high watermark when the scan begins, then until
//! nothing new comes for a moment (tansu 0.6 reports a high watermark short
//! of its last batch; see docs/decisions.md).

use crate::config::Settings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Why a scan stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("topic {0} does not exist (or this client may not describe it)")]
    NoTopic(String),
    #[error("timed out reading {topic}: partition {partition} at offset {at} of {end}")]
    TimedOut {
        topic: String,
        partition: i32,
        at: i64,
        end: i64,
    },
}

/// What a scan read.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scanned {
    pub partitions: usize,
    /// Records read (from the start offsets on, whatever their time).
    pub records: u64,
}

/// Calls `each(log_time_ms, payload)` for every record of `topic` logged
/// from about `from_ms` on (some older ones too: the caller filters), up to
/// the end each partition has now. A record without a timestamp passes
/// `None`.
pub fn scan(
    settings: &Settings,
    topic: &str,
    from_ms: i64,
    timeout: Duration,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<Scanned, ScanError> {
    let mut c = super::consumer_config(settings);
    c.set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    super::set_default(&mut c, "group.id", "shareaudit-report");
    // Whole batches per fetch (tansu 0.6 skips the rest of a batch a fetch
    // starts inside of).
    super::set_default(&mut c, "max.partition.fetch.bytes", "67108864");
    super::set_default(&mut c, "fetch.max.bytes", "134217728");
    super::set_default(&mut c, "receive.message.max.bytes", "134218728");
    let consumer: BaseConsumer = c.create()?;
    let wait = Duration::from_secs(10);
    let meta = consumer.fetch_metadata(Some(topic), wait)?;
    let partitions: Vec<i32> = meta
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(ScanError::NoTopic(topic.to_owned()));
    }
    let mut by_time = TopicPartitionList::new();
    for p in &partitions {
        by_time.add_partition_offset(topic, *p, Offset::Offset(from_ms))?;
    }
    let starts = consumer.offsets_for_times(by_time, wait)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, wait)?;
        let hint = starts
            .find_partition(topic, *p)
            .map(|e| e.offset())
            .and_then(|o| match o {
                Offset::Offset(o) => Some(o),
                // No record at or after the time: nothing to read.
                Offset::End => Some(high),
                _ => None,
            })
            .unwrap_or(low);
        let start = hint.clamp(low, high);
        if start < high {
            tpl.add_partition_offset(topic, *p, Offset::Offset(start))?;
            ends.insert(*p, high);
        }
    }
    let mut scanned = Scanned {
        partitions: partitions.len(),
        records: 0,
    };
    if ends.is_empty() {
        return Ok(scanned);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let behind = |next: &BTreeMap<i32, i64>| {
        ends.iter()
            .find(|(p, end)| next.get(p).copied().unwrap_or(0) < **end)
            .map(|(p, end)| (*p, next.get(p).copied().unwrap_or(0), *end))
    };
    let mut idle_since: Option<Instant> = None;
    loop {
        let lagging = behind(&next);
        if lagging.is_none() && idle_since.is_some_and(|t| t.elapsed() > Duration::from_millis(500))
        {
            return Ok(scanned);
        }
        if let Some((partition, at, end)) = lagging
            && Instant::now() >= deadline
        {
            return Err(ScanError::TimedOut {
                topic: topic.to_owned(),
                partition,
                at,
                end,
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                idle_since = None;
                next.insert(m.partition(), m.offset() + 1);
                scanned.records += 1;
                each(&m);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                idle_since.get_or_insert_with(Instant::now);
            }
        }
    }
}
