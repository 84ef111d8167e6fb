//! The consumer-group member for the event topic. Offsets are never
//! auto-committed nor auto-stored: the pipeline commits the watermark (the
//! contiguous prefix whose outputs the broker acknowledged). On revoke the
//! member waits for that prefix to cover what it read (within a deadline
//! shorter than the session timeout), commits it synchronously, then lets go.

use super::{Progress, Record};
use crate::config::Settings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct SourceContext {
    progress: Arc<Progress>,
    topic: String,
    drain_timeout: Duration,
    /// Whether fetching is paused (`Source::set_paused`). librdkafka keeps a
    /// partition's pause through revoke and re-assign, so every assignment
    /// is set to this: a partition paused when it moved away, and back after
    /// a resume, would otherwise never be fetched again.
    paused: AtomicBool,
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        super::client_error(&self.progress.metrics, "consumer", &error, reason);
    }
}

impl SourceContext {
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
        let drained = self.progress.wait_until(deadline, |m| {
            partitions
                .iter()
                .all(|p| m.by_partition.get(p).is_none_or(|w| w.is_drained()))
        });
        if !drained {
            tracing::warn!(
                ?partitions,
                "revoke: outputs still unacknowledged at the deadline; committing the acknowledged prefix only"
            );
        }
        self.commit(consumer, &partitions);
        let mut marks = self.progress.lock();
        for p in &partitions {
            marks.by_partition.remove(p);
            marks.committed.remove(p);
            marks.rebalances.push((*p, false));
            self.progress.forget_partition(*p);
        }
        // Failed outputs of revoked partitions: the next owner re-reads those records.
        marks
            .retries
            .retain(|r| !partitions.contains(&r.ticket.partition));
        tracing::info!(?partitions, drained, "partitions revoked");
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
            self.progress
                .lock()
                .rebalances
                .extend(partitions.iter().map(|p| (*p, true)));
        }
        let n = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.progress.set_assigned(n);
    }
}

pub struct Source {
    consumer: BaseConsumer<SourceContext>,
    topic: String,
}

impl Source {
    /// A member of `group` reading `topic` (the event topic in the group
    /// `settings.group_id`, or the recipient-rate topic in its own group).
    pub fn new(
        settings: &Settings,
        topic: &str,
        group: &str,
        progress: Arc<Progress>,
    ) -> Result<Source, KafkaError> {
        let mut c = super::client_config(settings);
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
        };
        let consumer: BaseConsumer<SourceContext> = c.create_with_context(context)?;
        consumer.subscribe(&[topic])?;
        Ok(Source {
            consumer,
            topic: topic.to_owned(),
        })
    }

    /// The next record, owned; `None` when nothing came within `timeout`.
    /// Rebalance callbacks run inside this call.
    pub fn poll(&self, timeout: Duration) -> Option<Result<Record, KafkaError>> {
        let msg = match self.consumer.poll(timeout)? {
            Ok(m) => m,
            Err(e) => return Some(Err(e)),
        };
        let headers = super::owned_headers(&msg);
        Some(Ok(Record {
            topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            headers,
        }))
    }

    /// Commits offsets (next to read) asynchronously or synchronously.
    pub fn commit(&self, offsets: &[(i32, i64)], sync: bool) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o))?;
        }
        self.consumer.commit(
            &tpl,
            if sync {
                CommitMode::Sync
            } else {
                CommitMode::Async
            },
        )
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

    /// Lag per assigned partition: its end minus the last commit.
    pub fn update_lag(&self, progress: &Progress) {
        let committed = progress.lock().committed.clone();
        for p in self.assigned() {
            if let Some(end) = self.end_offset(p) {
                let done = committed.get(&p).copied().unwrap_or(0);
                progress.set_lag(p, (end - done).max(0));
            }
        }
    }

    /// Stops (or resumes) fetching, for backpressure and shutdown; polling
    /// goes on (heartbeats, rebalances).
    pub fn set_paused(&mut self, pause: bool) {
        if pause == self.is_paused() {
            return;
        }
        if let Ok(a) = self.consumer.assignment() {
            let r = if pause {
                self.consumer.pause(&a)
            } else {
                self.consumer.resume(&a)
            };
            if r.is_ok() {
                // Partitions assigned from now on take the same state.
                self.consumer
                    .context()
                    .paused
                    .store(pause, Ordering::Relaxed);
            }
        }
    }

    pub fn is_paused(&self) -> bool {
        self.consumer.context().paused.load(Ordering::Relaxed)
    }

    /// Partitions assigned now.
    pub fn assigned(&self) -> Vec<i32> {
        self.consumer
            .assignment()
            .map(|a| a.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    }

    /// The end offset of a partition (from the broker), for lag.
    pub fn end_offset(&self, partition: i32) -> Option<i64> {
        self.consumer
            .fetch_watermarks(&self.topic, partition, Duration::from_secs(1))
            .ok()
            .map(|(_, high)| high)
    }

    /// The group's committed offset for `partition` (`None`: no commit yet).
    pub fn committed_offset(
        &self,
        partition: i32,
        timeout: Duration,
    ) -> Result<Option<i64>, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        let got = self.consumer.committed_offsets(tpl, timeout)?;
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

    /// Whether this member has read `partition` to its current end (the
    /// next offset to read is the broker's high watermark). A partition it
    /// has read nothing of since it was assigned has no position yet: the
    /// group's commit, where it starts, stands for it, so that a partition
    /// received already read to its end counts as idle.
    pub fn at_end(&self, partition: i32) -> bool {
        let Ok(positions) = self.consumer.position() else {
            return false;
        };
        let next = match positions
            .find_partition(&self.topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(next)) => next,
            _ => match self.committed_offset(partition, Duration::from_secs(1)) {
                Ok(Some(next)) => next,
                _ => return false,
            },
        };
        self.end_offset(partition).is_some_and(|end| next >= end)
    }

    /// Leaves the group (after the final commit).
    pub fn close(&self) {
        self.consumer.unsubscribe();
    }
}
