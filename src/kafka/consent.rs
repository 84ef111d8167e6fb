//! Reads the compacted consent topic: every partition from the beginning
//! (no group, no commits: the table is rebuilt at each start), to the end
//! it had at start ("caught up"), then kept current. The daemon's consent
//! task turns what it reads into the table, and tells the reader what it
//! applied; the reader then says, through [`ConsentSync`], up to which log
//! time the table holds every consent record.
//!
//! How far that is comes from **end probes**: every few milliseconds the
//! reader asks the broker for the end of each consent partition
//! (ListOffsets, latest), noting the time it asked. Every consent record
//! logged before that time sits below the end the broker answered; once
//! the table holds every record below it, the table is complete up to
//! that time. A cached end from the last fetch would not do: a reader
//! that keeps pace with a burst sees itself at the end until its next
//! fetch, while the broker already holds more.

use crate::config::Settings;
use crate::model::Timestamp;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// How far the consent table has come, for the event stage: every consent
/// record whose log time is at or before `covered_through` is applied. An
/// event whose record's log time is later waits (the time synchronisation
/// of a stream-table join).
#[derive(Debug)]
pub struct ConsentSync {
    covered_through: AtomicI64,
    /// A probe found records the table does not hold yet (or the first
    /// catch-up is not done): the reader is behind. Otherwise the table
    /// holds all the broker had at the last probe, and an event logged
    /// since waits only for the next probe to confirm nothing came after.
    behind: AtomicBool,
}

impl ConsentSync {
    fn new() -> ConsentSync {
        ConsentSync {
            covered_through: AtomicI64::new(i64::MIN),
            behind: AtomicBool::new(true),
        }
    }

    /// Whether every consent record logged at or before `log_time` (ms) is
    /// in the table.
    pub fn covers(&self, log_time: i64) -> bool {
        self.covered_through.load(Ordering::Acquire) >= log_time
    }

    /// Whether the reader is behind at `now` (ms): it knows of consent
    /// records it has not applied, or its coverage has not moved for
    /// `FRESH_MS` (probes come every few ms; a reader stopped on a record,
    /// or probes failing, leave it behind without knowing by how much).
    pub fn behind(&self, now: i64) -> bool {
        self.behind.load(Ordering::Acquire)
            || now.saturating_sub(self.covered_through.load(Ordering::Acquire)) > FRESH_MS
    }
}

/// How old the table's coverage may be while the reader counts as current:
/// fifty probe intervals.
pub const FRESH_MS: i64 = 250;

/// Probes answered while the table was still below their end, per
/// partition: beyond this, new ones are dropped (coverage then advances
/// by the probes after the reader catches up).
const MAX_PENDING_PROBES: usize = 1024;

/// One answer of the broker: the time the question was asked (ms, this
/// process's clock) and, per partition, the end offset and librdkafka's
/// position (the next offset it hands the reader).
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub asked_at: i64,
    pub ends: Vec<(i32, i64)>,
    pub positions: Vec<(i32, i64)>,
}

/// Per consent partition: the next offset to apply, the log time up to
/// which every record is applied, and the probes whose end is not reached.
#[derive(Debug, Clone)]
struct Partition {
    position: i64,
    covered: i64,
    pending: VecDeque<(i64, i64)>,
}

impl Default for Partition {
    fn default() -> Partition {
        Partition {
            position: 0,
            covered: i64::MIN,
            pending: VecDeque::new(),
        }
    }
}

impl Partition {
    /// A probe asked at `asked_at` found the end at `end`: every record
    /// logged before `asked_at` is below `end`.
    fn probed(&mut self, asked_at: i64, end: i64) {
        if self.position >= end {
            self.covered = self.covered.max(asked_at - 1);
            self.pending.clear();
        } else if let Some(last) = self.pending.back_mut().filter(|(_, e)| *e == end) {
            last.0 = asked_at;
        } else if self.pending.len() < MAX_PENDING_PROBES {
            self.pending.push_back((asked_at, end));
        }
    }

    /// Every offset below `position` is applied (or was never a record).
    fn reached(&mut self, position: i64) {
        self.position = self.position.max(position);
        while let Some(&(asked_at, end)) = self.pending.front() {
            if end > self.position {
                break;
            }
            self.covered = self.covered.max(asked_at - 1);
            self.pending.pop_front();
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
}

pub struct ConsentReader {
    consumer: Arc<StreamConsumer>,
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
        let partitions = targets.keys().map(|&p| (p, Partition::default())).collect();
        let reader = ConsentReader {
            consumer: Arc::new(consumer),
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
            .map(|p| p.covered)
            .min()
            .unwrap_or(i64::MAX);
        self.sync.covered_through.store(through, Ordering::Release);
        let behind = !self.caught_up() || self.partitions.values().any(|p| !p.pending.is_empty());
        self.sync.behind.store(behind, Ordering::Release);
    }

    /// The record was applied to the table.
    pub fn applied(&mut self, r: &ConsentRecord) {
        let p = self.partitions.entry(r.partition).or_default();
        p.reached(r.offset + 1);
        self.publish();
    }

    /// The question of an end probe, to be asked off the runtime (it
    /// blocks for a round trip): the ends of every consent partition, then
    /// librdkafka's positions (which step over offsets that hold no
    /// record: transaction markers, compacted gaps).
    pub fn probe(&self) -> impl FnOnce() -> Result<Probe, KafkaError> + Send + 'static {
        let consumer = Arc::clone(&self.consumer);
        let (topic, ids) = (
            self.topic.clone(),
            self.partitions.keys().copied().collect::<Vec<_>>(),
        );
        move || {
            let mut tpl = TopicPartitionList::new();
            for &p in &ids {
                tpl.add_partition_offset(&topic, p, Offset::End)?;
            }
            let asked_at = Timestamp::now().millis();
            let answer = consumer.offsets_for_times(tpl, Duration::from_secs(2))?;
            let ends = super::offsets(&answer, &topic).collect();
            let positions = consumer
                .position()
                .map(|t| super::offsets(&t, &topic).collect())
                .unwrap_or_default();
            Ok(Probe {
                asked_at,
                ends,
                positions,
            })
        }
    }

    /// The broker's answer to a probe. Called from the task that applies
    /// the records, between two of them: every record librdkafka handed
    /// over before the positions were read is applied by now.
    pub fn probed(&mut self, probe: &Probe) {
        for &(id, position) in &probe.positions {
            if let Some(p) = self.partitions.get_mut(&id) {
                p.reached(position);
            }
        }
        for &(id, end) in &probe.ends {
            if let Some(p) = self.partitions.get_mut(&id) {
                p.probed(probe.asked_at, end);
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
        };
        drop(msg);
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_covers_the_time_of_a_probe_once_it_reaches_the_probes_end() {
        let mut p = Partition::default();
        assert_eq!(p.covered, i64::MIN, "nothing known before the first probe");
        // Behind: the probe waits for the reader.
        p.reached(5);
        p.probed(1_000, 9);
        assert_eq!(p.covered, i64::MIN);
        // A later probe with more records behind it.
        p.probed(2_000, 12);
        p.reached(9);
        assert_eq!(
            p.covered, 999,
            "up to just before the first probe was asked"
        );
        p.reached(11);
        assert_eq!(p.covered, 999);
        p.reached(12);
        assert_eq!(p.covered, 1_999);
        // At the end: a probe covers at once.
        p.probed(3_000, 12);
        assert_eq!(p.covered, 2_999);
        // Never backwards, and a burst of probes with one end keeps one entry.
        p.probed(2_500, 12);
        assert_eq!(p.covered, 2_999);
        for t in 4_000..4_100 {
            p.probed(t, 20);
        }
        assert_eq!(p.pending.len(), 1);
        p.reached(20);
        assert_eq!(p.covered, 4_098);
    }

    #[test]
    fn a_reader_is_behind_while_a_probe_found_records_it_has_not_applied() {
        let mut p = Partition::default();
        p.reached(5);
        p.probed(1_000, 5);
        assert!(p.pending.is_empty(), "at the end: current as of the probe");
        p.probed(2_000, 8);
        assert!(!p.pending.is_empty(), "records 5..8 to apply: behind");
        p.reached(8);
        assert!(p.pending.is_empty());
    }

    #[test]
    fn the_table_covers_what_every_partition_covers() {
        let sync = ConsentSync::new();
        assert!(!sync.covers(0));
        sync.covered_through.store(1_000, Ordering::Release);
        assert!(sync.covers(1_000) && !sync.covers(1_001));
    }

    #[test]
    fn a_reader_whose_coverage_stopped_moving_is_behind() {
        let sync = ConsentSync::new();
        sync.covered_through.store(1_000, Ordering::Release);
        sync.behind.store(false, Ordering::Release);
        assert!(!sync.behind(1_000 + FRESH_MS), "fresh: current");
        assert!(
            sync.behind(1_001 + FRESH_MS),
            "stopped (a record waits for its schema): behind"
        );
        sync.behind.store(true, Ordering::Release);
        assert!(sync.behind(1_000), "records known and not applied: behind");
    }
}
