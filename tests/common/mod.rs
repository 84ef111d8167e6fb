//! Helpers shared by the test binaries that talk to a broker.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Every record of `topic`, from the beginning to the end it has now.
pub fn read_all(brokers: &str, topic: &str) -> Vec<OwnedMessage> {
    // Whole batches in every fetch: tansu 0.6 answers a fetch that starts
    // inside a batch from the next batch, so a reader that got part of a
    // batch would skip the rest of it.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .set("max.partition.fetch.bytes", "134217728")
        .set("fetch.max.bytes", "268435456")
        .set("receive.message.max.bytes", "268436456")
        .create()
        .unwrap();
    let meta = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in meta.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
        ends.insert(
            p.id(),
            consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap()
                .1,
        );
    }
    consumer.assign(&tpl).unwrap();
    let mut seen: BTreeMap<i32, i64> = BTreeMap::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ends
        .iter()
        .any(|(p, end)| seen.get(p).copied().unwrap_or(0) < *end)
    {
        assert!(
            Instant::now() < deadline,
            "could not read {topic} to its end"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            seen.insert(m.partition(), m.offset() + 1);
            out.push(m.detach());
        }
    }
    // tansu 0.6 reports a high watermark short of the last batch's last
    // record (seen: 3,533 where 3,541 were readable, with batches of
    // several records): read on until a second passes with nothing new.
    while let Some(Ok(m)) = consumer.poll(Duration::from_secs(1)) {
        out.push(m.detach());
    }
    out
}

/// The group's committed offsets of `topic`'s first `partitions` partitions
/// (those with one), and the partitions' end offsets.
pub fn committed_and_ends(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> (BTreeMap<i32, i64>, BTreeMap<i32, i64>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let committed = got
        .elements()
        .iter()
        .filter_map(|e| {
            if let Offset::Offset(o) = e.offset() {
                Some((e.partition(), o))
            } else {
                None
            }
        })
        .collect();
    let ends = (0..partitions)
        .map(|p| {
            (
                p,
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .unwrap()
                    .1,
            )
        })
        .collect();
    (committed, ends)
}
