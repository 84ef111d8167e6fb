//! The consumer-group member of a stage: a `StreamConsumer` awaited on the
//! runtime. Offsets are never auto-committed nor auto-stored: the stage
//! commits the watermark (the contiguous prefix whose outputs the broker
//! acknowledged). On revoke the member waits for that prefix to cover what
//! it read (within a deadline shorter than the session timeout), commits it
//! synchronously, then lets go.
//!
//! Rebalance callbacks run inside `recv`, on the stage's task; the wait on
//! revoke blocks that thread (`block_in_place` hands the worker's other
//! tasks to another thread), while the producer's own thread delivers the
//! acknowledgements it waits for.

use super::{Progress, Record};
use crate::config::Settings;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One answer to [`Source::end_probe`].
#[derive(Debug, Clone, Default)]
pub struct EndProbe {
    /// When the question was asked (ms, this process's clock).
    pub asked_at: i64,
    /// Per partition, its end offset at the broker's answer.
    pub ends: BTreeMap<i32, i64>,
    /// Per partition, the next offset this member hands over (read after the answer).
    pub positions: BTreeMap<i32, i64>,
}

impl EndProbe {
    /// Whether every record of `partition` logged before the probe was asked
    /// has been handed over (`position` past the end) or is done by
    /// the member's watermark (`done_through`, the next offset to commit).
    pub fn reached(&self, partition: i32, done_through: Option<i64>) -> Reached {
        let Some(&end) = self.ends.get(&partition) else {
            return Reached::Unknown;
        };
        if done_through.is_some_and(|o| o >= end) {
            Reached::Done
        } else if self.positions.get(&partition).is_some_and(|&o| o >= end) {
            Reached::HandedOver
        } else {
            Reached::Behind
        }
    }
}

/// How far a member had come at an end probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// The broker's answer said nothing of the partition.
    Unknown,
    /// Records logged before the probe are not all handed over yet.
    Behind,
    /// Every record logged before the probe was handed over (the stage
    /// must still have finished with them).
    HandedOver,
    /// Every record logged before the probe has its outputs acknowledged.
    Done,
}

pub struct SourceContext {
    progress: Arc<Progress>,
    topic: String,
    drain_timeout: Duration,
    /// Whether fetching is paused as a whole (backpressure, drain).
    /// librdkafka keeps a partition's pause through revoke and re-assign, so
    /// every assignment is set to this: a partition paused when it moved
    /// away, and back after a resume, would otherwise never be fetched again.
    paused: AtomicBool,
    /// Partitions the stage holds on their own (a record waits for its
    /// writer schema): paused whatever `paused` says; forgotten on revoke.
    held: Mutex<BTreeSet<i32>>,
    /// The partitions assigned, followed from the rebalance events (asking
    /// the consumer from its own callback hung while it closed: its
    /// `assignment()` waits on a thread that no longer serves it).
    assigned: Mutex<BTreeSet<i32>>,
    /// Where this member started each partition it has not committed yet
    /// (the group's commit, or the start), for its lag: asked of the
    /// broker once per assignment; forgotten on revoke.
    started: Mutex<BTreeMap<i32, i64>>,
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        super::client_error(&self.progress.metrics, "consumer", &error, reason);
    }
}

/// Runs a blocking wait without starving the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl SourceContext {
    fn held(&self) -> std::sync::MutexGuard<'_, BTreeSet<i32>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn started(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, i64>> {
        self.started.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits what the watermark allows for `partitions`, synchronously.
    fn commit(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) {
        let to_commit: Vec<(i32, i64)> = self
            .progress
            .lock()
            .to_commit()
            .into_iter()
            .filter(|(p, _)| partitions.contains(p))
            .collect();
        if to_commit.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &to_commit {
            let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o));
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => self.progress.committed(&to_commit),
            Err(e) => {
                tracing::warn!(error = %e, "commit on revoke failed; the next owner re-reads from the last commit")
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect();
        let deadline = Instant::now() + self.drain_timeout;
        let drained = blocking(|| {
            self.progress.wait_until(deadline, |m| {
                partitions.iter().all(|p| m.partition_drained(*p))
            })
        });
        if !drained {
            tracing::warn!(
                ?partitions,
                "revoke: outputs still unacknowledged at the deadline; committing the acknowledged prefix only"
            );
        }
        blocking(|| self.commit(consumer, &partitions));
        let mut marks = self.progress.lock();
        let mut held = self.held();
        for p in &partitions {
            marks.forget(*p);
            held.remove(p);
            self.progress.forget_partition(*p);
        }
        self.progress
            .rebalance(&mut marks, partitions.iter().map(|p| (*p, false)));
        drop(marks);
        let n = {
            let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
            let mut started = self.started();
            for p in &partitions {
                assigned.remove(p);
                started.remove(p);
            }
            assigned.len()
        };
        self.progress.set_assigned(n);
        tracing::info!(topic = %self.topic, ?partitions, drained, "partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(topic = %self.topic, ?partitions, "partitions assigned");
            let paused = self.paused.load(Ordering::Relaxed);
            let set = if paused {
                consumer.pause(tpl)
            } else {
                consumer.resume(tpl)
            };
            if let Err(e) = set {
                tracing::warn!(topic = %self.topic, paused, error = %e, "could not set the pause of assigned partitions");
            }
            let mut marks = self.progress.lock();
            self.progress
                .rebalance(&mut marks, partitions.iter().map(|p| (*p, true)));
            drop(marks);
            let n = {
                let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
                assigned.extend(partitions.iter().copied());
                assigned.len()
            };
            self.progress.set_assigned(n);
        }
    }
}

/// Where a member stands in each of `partitions` (blocks for a round trip
/// or two): librdkafka's position (the next offset it hands over, stepping
/// over offsets that hold no record), or, for a partition it has handed
/// nothing of since it was assigned, the group's commit, or with none the
/// partition's start (`auto.offset.reset` earliest, the default).
fn standing(
    consumer: &StreamConsumer<SourceContext>,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<BTreeMap<i32, i64>, KafkaError> {
    let offsets =
        |tpl: &TopicPartitionList| -> BTreeMap<i32, i64> { super::offsets(tpl, topic).collect() };
    let mut positions = consumer.position().map(|t| offsets(&t)).unwrap_or_default();
    positions.retain(|p, _| partitions.contains(p));
    let missing = |positions: &BTreeMap<i32, i64>| -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions.iter().filter(|p| !positions.contains_key(p)) {
            tpl.add_partition(topic, p);
        }
        tpl
    };
    let ask = missing(&positions);
    if ask.count() > 0 {
        let committed = consumer.committed_offsets(ask, timeout)?;
        for (p, o) in offsets(&committed) {
            positions.entry(p).or_insert(o);
        }
    }
    let mut ask = missing(&positions);
    if ask.count() > 0 {
        ask.set_all_offsets(Offset::Beginning)?;
        let starts = consumer.offsets_for_times(ask, timeout)?;
        for (p, o) in offsets(&starts) {
            positions.entry(p).or_insert(o);
        }
    }
    Ok(positions)
}

pub struct Source {
    /// Shared with the end probes, which run off the runtime.
    consumer: Arc<StreamConsumer<SourceContext>>,
    topic: String,
}

impl Source {
    /// A member of `group` reading `topic` (the event topic in the group
    /// `settings.group_id`, or the recipient-rate topic in its own group).
    /// Made within a tokio runtime's context: the consumer keeps a wake-up
    /// task there.
    pub fn new(
        settings: &Settings,
        topic: &str,
        group: &str,
        progress: Arc<Progress>,
    ) -> Result<Source, KafkaError> {
        let mut c = super::consumer_config(settings);
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        super::set_default(&mut c, "auto.offset.reset", "earliest");
        // Payloads are owned once read: bound what librdkafka buffers ahead.
        super::set_default(&mut c, "queued.max.messages.kbytes", "16384");
        let context = SourceContext {
            progress,
            topic: topic.to_owned(),
            drain_timeout: settings.drain_timeout,
            paused: AtomicBool::new(false),
            held: Mutex::new(BTreeSet::new()),
            assigned: Mutex::new(BTreeSet::new()),
            started: Mutex::new(BTreeMap::new()),
        };
        let consumer: StreamConsumer<SourceContext> = c.create_with_context(context)?;
        consumer.subscribe(&[topic])?;
        Ok(Source {
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
        })
    }

    /// The next record, owned. Rebalance callbacks run inside this call;
    /// while fetching is paused it serves them and returns nothing.
    pub async fn recv(&self) -> Result<Record, KafkaError> {
        let msg = self.consumer.recv().await?;
        Ok(Record {
            topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            headers: super::headers(&msg),
            timestamp: msg.timestamp().to_millis(),
        })
    }

    /// `recv` within `timeout`, blocking the calling thread: for tests
    /// that drive members by hand, outside any task.
    pub fn poll(&self, timeout: Duration) -> Option<Result<Record, KafkaError>> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut fut = std::pin::pin!(self.recv());
            let waker = futures::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            if let std::task::Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
                return Some(r);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Commits offsets (next to read) asynchronously or synchronously.
    fn commit(&self, offsets: &[(i32, i64)], sync: bool) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o))?;
        }
        if sync {
            blocking(|| self.consumer.commit(&tpl, CommitMode::Sync))
        } else {
            // Only enqueued: librdkafka sends it from its own thread.
            self.consumer.commit(&tpl, CommitMode::Async)
        }
    }

    /// Commits what the watermarks allow (and records it).
    pub fn commit_watermarks(&self, progress: &Progress, sync: bool) {
        let to_commit = progress.lock().to_commit();
        if to_commit.is_empty() {
            return;
        }
        match self.commit(&to_commit, sync) {
            Ok(()) => progress.committed(&to_commit),
            Err(e) => {
                tracing::warn!(topic = %self.topic, error = %e, "commit failed; will commit again")
            }
        }
    }

    /// Lag per assigned partition: its end minus this member's last
    /// commit, or before its first commit of the partition, minus how far
    /// it has come ([`Source::read_or_started`]). A partition taken over at
    /// its end has no lag.
    pub fn update_lag(&self, progress: &Progress) {
        let committed = progress.lock().committed.clone();
        let assigned = self.assigned();
        let fresh: Vec<i32> = assigned
            .iter()
            .copied()
            .filter(|p| !committed.contains_key(p))
            .collect();
        let since = if fresh.is_empty() {
            BTreeMap::new()
        } else {
            self.read_or_started(&fresh)
        };
        for p in assigned {
            let Some(done) = committed.get(&p).or(since.get(&p)).copied() else {
                continue;
            };
            if let Some(end) = self.end_offset(p) {
                progress.set_lag(p, (end - done).max(0));
            }
        }
    }

    /// How far this member has read in each of `partitions` (librdkafka's
    /// position), or else where it started them ([`standing`]: asked of the
    /// broker once per assignment, within half a second, so that a broker
    /// that does not answer holds the stage little).
    fn read_or_started(&self, partitions: &[i32]) -> BTreeMap<i32, i64> {
        let mut read: BTreeMap<i32, i64> = self
            .consumer
            .position()
            .map(|t| super::offsets(&t, &self.topic).collect())
            .unwrap_or_default();
        read.retain(|p, _| partitions.contains(p));
        let ctx = self.consumer.context();
        let unknown: Vec<i32> = {
            let started = ctx.started();
            partitions
                .iter()
                .copied()
                .filter(|p| !read.contains_key(p) && !started.contains_key(p))
                .collect()
        };
        if !unknown.is_empty() {
            let ask = || {
                standing(
                    &self.consumer,
                    &self.topic,
                    &unknown,
                    Duration::from_millis(500),
                )
            };
            match blocking(ask) {
                Ok(found) => ctx.started().extend(found),
                Err(e) => {
                    tracing::debug!(topic = %self.topic, error = %e, "lag: where the member started is not known yet")
                }
            }
        }
        let started = ctx.started();
        for p in partitions {
            if let Some(&o) = started.get(p) {
                read.entry(*p).or_insert(o);
            }
        }
        read
    }

    /// Stops (or resumes) fetching as a whole, for backpressure and
    /// shutdown; `recv` goes on serving heartbeats and rebalances. Held
    /// partitions stay paused.
    pub fn set_paused(&mut self, pause: bool) {
        if pause == self.is_paused() {
            return;
        }
        let Ok(a) = self.consumer.assignment() else {
            return;
        };
        let r = if pause {
            self.consumer.pause(&a)
        } else {
            let held = self.consumer.context().held().clone();
            let mut tpl = TopicPartitionList::new();
            for e in a.elements() {
                if !held.contains(&e.partition()) {
                    tpl.add_partition(e.topic(), e.partition());
                }
            }
            self.consumer.resume(&tpl)
        };
        if r.is_ok() {
            // Partitions assigned from now on take the same state.
            self.consumer
                .context()
                .paused
                .store(pause, Ordering::Relaxed);
        }
    }

    pub fn is_paused(&self) -> bool {
        self.consumer.context().paused.load(Ordering::Relaxed)
    }

    /// Holds one partition (or lets it go): its records wait, the others flow.
    pub fn hold(&self, partition: i32, hold: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        let ctx = self.consumer.context();
        let r = if hold {
            ctx.held().insert(partition);
            self.consumer.pause(&tpl)
        } else {
            ctx.held().remove(&partition);
            if self.is_paused() {
                Ok(())
            } else {
                self.consumer.resume(&tpl)
            }
        };
        if let Err(e) = r {
            tracing::warn!(topic = %self.topic, partition, hold, error = %e, "could not hold or release a partition");
        }
    }

    /// Partitions assigned now.
    pub fn assigned(&self) -> Vec<i32> {
        self.consumer
            .assignment()
            .map(|a| a.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    }

    /// The end offset of a partition, for lag and idleness: librdkafka's
    /// copy from its last fetch response (no round trip), else asked of
    /// the broker.
    pub fn end_offset(&self, partition: i32) -> Option<i64> {
        if let Some(high) = self.cached_end(partition) {
            return Some(high);
        }
        blocking(|| {
            self.consumer
                .fetch_watermarks(&self.topic, partition, Duration::from_secs(1))
                .ok()
                .map(|(_, high)| high)
        })
    }

    fn cached_end(&self, partition: i32) -> Option<i64> {
        super::cached_end(self.consumer.client(), &self.topic, partition)
    }

    /// The group's committed offset for `partition` (`None`: no commit yet).
    pub fn committed_offset(
        &self,
        partition: i32,
        timeout: Duration,
    ) -> Result<Option<i64>, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        let got = blocking(|| self.consumer.committed_offsets(tpl, timeout))?;
        Ok(
            match got
                .find_partition(&self.topic, partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
    }

    /// The question of an end probe of the assigned partitions, to be
    /// asked off the runtime (it blocks for a round trip or two): the time
    /// it was asked, the end of each partition then (ListOffsets, latest:
    /// every record logged before that time lies below it), and afterwards
    /// where this member stands in each ([`standing`]).
    pub fn end_probe(&self) -> impl FnOnce() -> Result<EndProbe, KafkaError> + Send + 'static {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        let partitions = self.assigned();
        move || {
            if partitions.is_empty() {
                // Nothing assigned yet (or any more): nothing to ask, and
                // librdkafka refuses an empty question as an invalid argument.
                return Ok(EndProbe {
                    asked_at: crate::model::Timestamp::now().millis(),
                    ..EndProbe::default()
                });
            }
            let ask = |offset: Offset| -> Result<TopicPartitionList, KafkaError> {
                let mut tpl = TopicPartitionList::new();
                for &p in &partitions {
                    tpl.add_partition_offset(&topic, p, offset)?;
                }
                Ok(tpl)
            };
            let offsets = |tpl: &TopicPartitionList| -> BTreeMap<i32, i64> {
                super::offsets(tpl, &topic).collect()
            };
            let question = ask(Offset::End)?;
            let asked_at = crate::model::Timestamp::now().millis();
            let ends = offsets(&consumer.offsets_for_times(question, Duration::from_secs(2))?);
            let positions = standing(&consumer, &topic, &partitions, Duration::from_secs(2))?;
            Ok(EndProbe {
                asked_at,
                ends,
                positions,
            })
        }
    }

    /// Leaves the group (after the final commit).
    pub fn close(&self) {
        self.consumer.unsubscribe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> EndProbe {
        EndProbe {
            asked_at: 1_000,
            ends: BTreeMap::from([(0, 10), (1, 10), (2, 0)]),
            positions: BTreeMap::from([(0, 10), (1, 7), (2, 0)]),
        }
    }

    #[test]
    fn a_probe_is_reached_by_the_acknowledged_prefix_or_by_what_was_handed_over() {
        let p = probe();
        assert_eq!(p.reached(0, Some(10)), Reached::Done);
        assert_eq!(
            p.reached(0, Some(9)),
            Reached::HandedOver,
            "offset 9 not done yet"
        );
        assert_eq!(p.reached(0, None), Reached::HandedOver);
        assert_eq!(
            p.reached(1, Some(7)),
            Reached::Behind,
            "7, 8, 9 not handed over"
        );
        assert_eq!(
            p.reached(1, Some(10)),
            Reached::Done,
            "a commit past the position"
        );
        assert_eq!(
            p.reached(2, None),
            Reached::HandedOver,
            "an empty partition"
        );
        assert_eq!(p.reached(3, Some(100)), Reached::Unknown);
    }

    #[test]
    fn a_member_with_nothing_assigned_is_answered_without_asking() {
        // Every replica probes before its first assignment; the answer
        // used to be librdkafka's "invalid argument", warned of at start.
        let kafka = crate::kafka::embedded::Embedded::new().unwrap();
        kafka.create_topic("events", 2).unwrap();
        let settings = Settings::from_raw(crate::config::RawSettings {
            brokers: Some(kafka.bootstrap_servers()),
            ..Default::default()
        })
        .unwrap();
        let runtime = crate::daemon::runtime().unwrap();
        let _inside = runtime.enter();
        let metrics = Arc::new(crate::telemetry::Metrics::new().unwrap());
        let progress = Arc::new(Progress::new(metrics, "events"));
        let source = Source::new(&settings, "events", "g", progress).unwrap();
        assert!(source.assigned().is_empty(), "no poll, no assignment");
        let answer = source.end_probe()().expect("an empty probe is an answer");
        assert!(answer.ends.is_empty() && answer.positions.is_empty());
        assert!(answer.asked_at > 0);
        assert_eq!(answer.reached(0, None), Reached::Unknown);
    }
}
