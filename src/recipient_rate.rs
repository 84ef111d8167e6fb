//! The cluster-wide `volume.recipient_rate` stage.
//!
//! Events are keyed by user, so every replica sees a share of each
//! recipient's events. The event pipeline therefore does not count them: for
//! each event to a limited recipient it produces the violation that event
//! would be (the *candidate*: no personal value, the subject as its keyed
//! `subject_ref`) to an internal topic keyed by recipient, as Kafka Streams
//! repartitions. This stage, a member of its own consumer group on that
//! topic, sees all of a recipient's candidates in one place and counts them.
//!
//! - **Event-time order.** Candidates from several replicas interleave in
//!   any order. So that the outcome is the one a single process judging
//!   the stream in event-time order gets, whatever the number of replicas,
//!   the stage judges a candidate only once every partition of the event
//!   topic is known to have come past its event time: each replica reports,
//!   to every partition of the rate topic, how far in event time each of
//!   its event partitions is acknowledged (an idle partition holds nobody
//!   back). Candidates are held until the least of those reports passes
//!   them, then judged sorted by (event time, event id), as Flink's
//!   watermarks order a stream. A candidate older than one already judged
//!   (an event partition whose event times go backwards, or one that was
//!   idle) is judged at once and counted as `late`.
//! - **Commits.** A held candidate holds its partition's watermark
//!   (`Watermark::begin_held`); a judged one releases it with its output
//!   (a violation) or none.
//! - **Rebalances.** Once every alert of what it judged is acknowledged,
//!   the stage writes a checkpoint (the event time it judged through) into
//!   the partition. A new owner reads the partition to its end, replays the
//!   progress reports and, without alerting, the candidates up to the
//!   latest checkpoint, in event-time order: its windows are then the
//!   previous owner's. The topic's retention covers that.
//! - **Duplicates.** A candidate produced twice (its event re-audited after
//!   a crash) is recognised by its event id and judged once; one judged
//!   again after this stage's own crash gives the same decision and the
//!   same `alert_id`.

use crate::audit::{decide_rate, volume};
use crate::config::Settings;
use crate::kafka::admin::Topology;
use crate::kafka::sink::Sink;
use crate::kafka::source::Source;
use crate::kafka::{Output, Progress, Record, Ticket};
use crate::model::{Mode, Timestamp, Violation};
use crate::pipeline::{Control, encode_violation};
use crate::policy::Policy;
use crate::telemetry::Metrics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The policy in force, shared with the event pipeline (which reloads it).
pub type SharedPolicy = Arc<RwLock<Arc<Policy>>>;

/// How long a new owner may take to replay a partition's windows.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);

/// A candidate as the internal topic carries it: the violation, JSON.
pub fn encode_candidate(v: &Violation) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// The header that marks a progress report on the rate topic.
pub const KIND_HEADER: &str = "shareaudit.kind";
pub const KIND_PROGRESS: &str = "progress";
/// A checkpoint: the stage judged every candidate of this partition up to
/// `judged_through` (event time), and their alerts are acknowledged.
pub const KIND_CHECKPOINT: &str = "checkpoint";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub judged_through: i64,
}

/// How often the stage writes a checkpoint, at most.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// "Every event of `source_partition` up to `event_time` has its candidate
/// on this topic" (`i64::MAX`: the partition is idle), from the replica
/// that owns it; `sources` is the number of event partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressReport {
    pub source_partition: i32,
    pub event_time: i64,
    pub sources: usize,
}

/// The progress reports of one replica, to every partition of the rate topic.
pub fn progress_outputs(
    settings: &Settings,
    topology: Topology,
    reports: &[(i32, i64)],
) -> Vec<Output> {
    let mut out = Vec::with_capacity(reports.len() * topology.rate_partitions);
    for &(source_partition, event_time) in reports {
        let report = ProgressReport {
            source_partition,
            event_time,
            sources: topology.event_partitions,
        };
        let payload = serde_json::to_vec(&report).unwrap_or_default();
        for q in 0..topology.rate_partitions {
            out.push(Output {
                topic: settings.topics.recipient_rate.clone(),
                key: None,
                payload: payload.clone(),
                headers: vec![(KIND_HEADER.to_owned(), KIND_PROGRESS.as_bytes().to_vec())],
                partition: Some(q as i32),
            });
        }
    }
    out
}

/// What a record of the rate topic is.
enum Item {
    Candidate(Box<Violation>),
    Progress(ProgressReport),
    Checkpoint(Checkpoint),
    Unreadable,
}

fn read_item(headers: &[(String, Vec<u8>)], payload: Option<&[u8]>) -> Item {
    let kind = headers
        .iter()
        .find(|(k, _)| k == KIND_HEADER)
        .map(|(_, v)| v.as_slice());
    let Some(b) = payload else {
        return Item::Unreadable;
    };
    match kind {
        Some(k) if k == KIND_PROGRESS.as_bytes() => {
            serde_json::from_slice(b).map_or(Item::Unreadable, Item::Progress)
        }
        Some(k) if k == KIND_CHECKPOINT.as_bytes() => {
            serde_json::from_slice(b).map_or(Item::Unreadable, Item::Checkpoint)
        }
        Some(_) => Item::Unreadable,
        None => {
            serde_json::from_slice(b).map_or(Item::Unreadable, |v| Item::Candidate(Box::new(v)))
        }
    }
}

/// The order candidates are judged in.
type Key = (i64, String, i64);

/// A candidate waiting for the watermark.
struct Held {
    v: Violation,
    /// Below the group's commit: the previous owner judged it and its
    /// alerts were acknowledged, so it holds no offset of this owner's and
    /// its alerts (duplicates) are sent untracked.
    committed: bool,
}

/// A candidate the watermark has passed, to be judged.
struct Ready {
    /// `None`: below the group's commit (see `Held::committed`).
    offset: Option<i64>,
    v: Violation,
}

/// What became of an arriving candidate.
#[derive(Debug)]
enum Arrival {
    /// Judged before (here, or by the previous owner up to its checkpoint).
    Duplicate,
    /// Older than what was judged already: judge it at once.
    Late(Box<Violation>),
    /// Waits for the watermark.
    Held,
}

#[derive(Default)]
struct PartitionState {
    windows: volume::RateWindows,
    /// Held candidates by (event time, event id, offset).
    held: BTreeMap<Key, Held>,
    /// Per event partition, the latest event time reported done.
    progress: BTreeMap<i32, i64>,
    /// How many event partitions there are (from the reports).
    sources: usize,
    /// The latest event time judged.
    judged_time: i64,
    /// Event ids judged recently (duplicates are judged once), with their times for pruning.
    judged: HashSet<String>,
    judged_order: VecDeque<(i64, String)>,
    /// The last checkpoint written or restored (event time), and when.
    checkpointed: Option<i64>,
    /// The checkpoint a restore replayed through: every candidate at or
    /// before it was judged by the previous owner.
    restored_through: Option<i64>,
    checkpointed_at: Option<Instant>,
}

impl PartitionState {
    /// The event time every event partition has come past.
    fn watermark(&self) -> i64 {
        if self.sources == 0 || self.progress.len() < self.sources {
            return i64::MIN;
        }
        self.progress.values().copied().min().unwrap_or(i64::MIN)
    }

    /// The held candidates the watermark has passed, in judging order.
    fn ready(&mut self) -> Vec<Ready> {
        let horizon = self.watermark();
        let mut out = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            if entry.key().0 > horizon {
                break;
            }
            let offset = entry.key().2;
            let h = entry.remove();
            out.push(Ready {
                offset: (!h.committed).then_some(offset),
                v: h.v,
            });
        }
        out
    }

    /// A progress report. Reports of one event partition only move
    /// forward, except out of idleness (`i64::MAX`, "nothing to wait
    /// for"): a partition that gets events again holds the watermark again.
    fn report(&mut self, r: ProgressReport) {
        self.sources = self.sources.max(r.sources);
        let t = self.progress.entry(r.source_partition).or_insert(i64::MIN);
        *t = if *t == i64::MAX {
            r.event_time
        } else {
            (*t).max(r.event_time)
        };
    }

    /// A candidate read at `offset` of this partition.
    fn arrive(&mut self, offset: i64, v: Violation) -> Arrival {
        let t = v.occurred_at.millis();
        let replayed = self.restored_through.is_some_and(|through| t <= through);
        if replayed || self.judged.contains(&v.event_id) {
            Arrival::Duplicate
        } else if t < self.judged_time {
            Arrival::Late(Box::new(v))
        } else {
            self.held.insert(
                (t, v.event_id.clone(), offset),
                Held {
                    v,
                    committed: false,
                },
            );
            Arrival::Held
        }
    }

    /// Counts a candidate in its recipient's window: `Some(count)` when it
    /// takes the recipient over its limit (the rule fires). The candidate
    /// is remembered as judged.
    fn decide(&mut self, policy: &Policy, v: &Violation) -> Option<usize> {
        let t = v.occurred_at.millis();
        let window = policy.params.rate_window_millis;
        let fired =
            volume::rate_limit(policy, &v.recipient_id, v.recipient_category).and_then(|limit| {
                self.windows.observe(
                    &v.recipient_id,
                    volume::subject_key(&v.subject_ref),
                    t,
                    limit,
                    window,
                )
            });
        self.judged(t, &v.event_id, window);
        fired
    }

    /// Remembers a judged event; forgets those too old to come again.
    fn judged(&mut self, t: i64, event_id: &str, window: i64) {
        self.judged_time = self.judged_time.max(t);
        if self.judged.insert(event_id.to_owned()) {
            self.judged_order.push_back((t, event_id.to_owned()));
        }
        let horizon = self.judged_time.saturating_sub(window.saturating_mul(2));
        while let Some((t, _)) = self.judged_order.front() {
            if *t >= horizon {
                break;
            }
            if let Some((_, id)) = self.judged_order.pop_front() {
                self.judged.remove(&id);
            }
        }
    }

    /// A new owner's state, from the partition's records up to its end and
    /// the group's commit (the first offset this owner reads itself):
    ///
    /// - the candidates up to the latest checkpoint (wherever they sit) are
    ///   counted, without alerting: the previous owner judged them and its
    ///   alerts were acknowledged;
    /// - the candidates after the checkpoint but below the commit were
    ///   judged too, but after the checkpoint, so not necessarily before
    ///   every candidate the new owner reads (the commit stops at the first
    ///   held candidate, not at the last judged one): they are held again
    ///   and judged in event-time order with what comes, their alerts
    ///   duplicates of acknowledged ones;
    /// - the progress reports below the commit are replayed; those after it
    ///   come again, after the candidates they vouch for.
    ///
    /// Returns the state and how many candidates were counted silently.
    fn rebuild(records: Vec<(i64, Item)>, committed: i64, policy: &Policy) -> (Self, u64) {
        let mut state = PartitionState::default();
        let through = records
            .iter()
            .filter_map(|(_, item)| match item {
                Item::Checkpoint(c) => Some(c.judged_through),
                _ => None,
            })
            .max();
        let mut replay: BTreeMap<(i64, String), Violation> = BTreeMap::new();
        let mut again: Vec<(i64, Violation)> = Vec::new();
        for (offset, item) in records {
            match item {
                Item::Candidate(v) => {
                    let t = v.occurred_at.millis();
                    if through.is_some_and(|through| t <= through) {
                        replay.insert((t, v.event_id.clone()), *v);
                    } else if offset < committed {
                        again.push((offset, *v));
                    }
                }
                Item::Progress(r) if offset < committed => state.report(r),
                _ => {}
            }
        }
        let replayed = replay.len() as u64;
        for v in replay.into_values() {
            state.decide(policy, &v);
        }
        if let Some(through) = through {
            state.checkpointed = Some(through);
            state.restored_through = Some(through);
        }
        for (offset, v) in again {
            if state.judged.contains(&v.event_id) {
                continue;
            }
            state.held.insert(
                (v.occurred_at.millis(), v.event_id.clone(), offset),
                Held { v, committed: true },
            );
        }
        (state, replayed)
    }
}

pub struct RateStage {
    settings: Settings,
    progress: Arc<Progress>,
    sink: Sink,
    metrics: Arc<Metrics>,
    policy: SharedPolicy,
    control: Control,
    partitions: BTreeMap<i32, PartitionState>,
}

impl RateStage {
    pub fn new(
        settings: Settings,
        policy: SharedPolicy,
        metrics: Arc<Metrics>,
        control: Control,
    ) -> Result<RateStage, rdkafka::error::KafkaError> {
        let progress = Arc::new(Progress::new(
            Arc::clone(&metrics),
            &settings.topics.recipient_rate,
        ));
        let sink = Sink::new(&settings, Arc::clone(&progress))?;
        Ok(RateStage {
            settings,
            progress,
            sink,
            metrics,
            policy,
            control,
            partitions: BTreeMap::new(),
        })
    }

    fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs until shutdown; held candidates are left to the next owner
    /// (the commit stops before them).
    pub fn run(mut self) -> Result<(), rdkafka::error::KafkaError> {
        let group = self.settings.rate_group_id();
        let mut source = Source::new(
            &self.settings,
            &self.settings.topics.recipient_rate,
            &group,
            Arc::clone(&self.progress),
        )?;
        let mut last_commit = Instant::now();
        let mut last_lag = Instant::now();
        let mut last_retry = Instant::now();
        while !self.control.shutdown.load(Ordering::Relaxed) {
            if let Some(Ok(rec)) = source.poll(Duration::from_millis(50)) {
                self.rebalanced(&source);
                self.arrive(rec);
            } else {
                self.rebalanced(&source);
            }
            self.release();
            self.checkpoint();
            if last_retry.elapsed() >= Duration::from_millis(200) {
                self.sink.recover();
                self.sink.resend_failed();
                last_retry = Instant::now();
            }
            if last_commit.elapsed() >= self.settings.commit_interval {
                source.commit_watermarks(&self.progress, false);
                last_commit = Instant::now();
            }
            if last_lag.elapsed() >= Duration::from_secs(5) {
                source.update_lag(&self.progress);
                last_lag = Instant::now();
            }
        }
        // Drain what was sent; held candidates stay unjudged and uncommitted.
        source.set_paused(true);
        let deadline = Instant::now() + self.settings.drain_timeout;
        while !self.progress.wait_until(
            (Instant::now() + Duration::from_millis(100)).min(deadline),
            |m| m.by_partition.values().all(|w| w.is_drained()),
        ) && Instant::now() < deadline
        {
            self.sink.resend_failed();
            let _ = source.poll(Duration::ZERO);
        }
        source.commit_watermarks(&self.progress, true);
        source.close();
        self.sink.flush(Duration::from_secs(1));
        Ok(())
    }

    /// Partitions that came or went since the last look: state dropped, or rebuilt.
    fn rebalanced(&mut self, source: &Source) {
        let changes = std::mem::take(&mut self.progress.lock().rebalances);
        for (p, assigned) in changes {
            if assigned {
                let state = self.restore(source, p);
                self.partitions.insert(p, state);
            } else {
                self.partitions.remove(&p);
            }
        }
        self.metrics
            .rate_pending
            .set(self.partitions.values().map(|s| s.held.len() as i64).sum());
    }

    /// A new owner's windows, rebuilt (`PartitionState::rebuild`) from the
    /// partition read from the start of its retention to its end, and the
    /// group's commit. Without a commit, the whole partition is read again.
    fn restore(&self, source: &Source, partition: i32) -> PartitionState {
        let started = Instant::now();
        let mut records: Vec<(i64, Item)> = Vec::new();
        let topic = self.settings.topics.recipient_rate.as_str();
        // Where this owner starts reading: the commit; no commit, the start.
        // Unknown, every candidate read now counts as below it: those after
        // the checkpoint are judged again (duplicates), none is left out.
        let committed = match source.committed_offset(partition, Duration::from_secs(10)) {
            Ok(c) => c.unwrap_or(0),
            Err(e) => {
                tracing::warn!(partition, error = %e, "recipient-rate commit not read; judging again all after the checkpoint");
                i64::MAX
            }
        };
        let read = (|| -> Result<(), rdkafka::error::KafkaError> {
            let mut c = crate::kafka::client_config(&self.settings);
            c.set("enable.auto.commit", "false").set(
                "group.id",
                format!("{}.restore", self.settings.rate_group_id()),
            );
            crate::kafka::set_default(&mut c, "queued.max.messages.kbytes", "16384");
            let consumer: BaseConsumer = c.create()?;
            let (low, end) =
                consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
            if end <= low {
                return Ok(());
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(low))?;
            consumer.assign(&tpl)?;
            let deadline = Instant::now() + RESTORE_TIMEOUT;
            loop {
                if Instant::now() >= deadline {
                    tracing::error!(
                        partition,
                        end,
                        "recipient-rate restore timed out; windows start partial"
                    );
                    return Ok(());
                }
                let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let msg = msg?;
                let headers = crate::kafka::owned_headers(&msg);
                records.push((msg.offset(), read_item(&headers, msg.payload())));
                if msg.offset() + 1 >= end {
                    return Ok(());
                }
            }
        })();
        if let Err(e) = read {
            tracing::error!(partition, error = %e, "recipient-rate restore failed; windows start partial");
        }
        let read_through = records.last().map(|(o, _)| *o);
        let (state, replayed) = PartitionState::rebuild(records, committed, &self.policy());
        self.metrics
            .rate_observations
            .with_label_values(&["restored"])
            .inc_by(replayed);
        tracing::info!(
            partition,
            candidates = replayed,
            judged_again = state.held.len(),
            judged_through = state.restored_through,
            committed,
            read_through,
            seconds = started.elapsed().as_secs_f64(),
            "recipient-rate windows restored"
        );
        state
    }

    /// After judging: a checkpoint per partition whose judged event time
    /// moved, once every alert sent for it is acknowledged.
    fn checkpoint(&mut self) {
        let marks = self.progress.lock();
        let mut out = Vec::new();
        for (p, state) in self.partitions.iter_mut() {
            let moved = state.judged_time > state.checkpointed.unwrap_or(0);
            let due = state
                .checkpointed_at
                .is_none_or(|at| at.elapsed() >= CHECKPOINT_EVERY);
            let acknowledged = marks.by_partition.get(p).is_none_or(|w| w.is_drained());
            if moved && due && acknowledged {
                state.checkpointed = Some(state.judged_time);
                state.checkpointed_at = Some(Instant::now());
                let c = Checkpoint {
                    judged_through: state.judged_time,
                };
                out.push(Output {
                    topic: self.settings.topics.recipient_rate.clone(),
                    key: None,
                    payload: serde_json::to_vec(&c).unwrap_or_default(),
                    headers: vec![(KIND_HEADER.to_owned(), KIND_CHECKPOINT.as_bytes().to_vec())],
                    partition: Some(*p),
                });
            }
        }
        drop(marks);
        for o in &out {
            self.sink.send_untracked(o);
        }
    }

    /// A record of the rate topic: a progress report, or a candidate, held
    /// for ordering, judged at once when late, skipped when a duplicate.
    fn arrive(&mut self, rec: Record) {
        let item = read_item(&rec.headers, rec.payload.as_deref());
        let held = matches!(item, Item::Candidate(_));
        let begun = {
            let mut marks = self.progress.lock();
            let w = marks.by_partition.entry(rec.partition).or_default();
            if held {
                w.begin_held(rec.offset)
            } else {
                w.begin(rec.offset, 0)
            }
        };
        if let Err(e) = begun {
            tracing::warn!(error = %e, "rate record not begun");
            return;
        }
        let v = match item {
            Item::Candidate(v) => *v,
            Item::Progress(r) => {
                self.partitions.entry(rec.partition).or_default().report(r);
                return;
            }
            Item::Checkpoint(_) => return, // for a new owner's restore
            Item::Unreadable => {
                // Only shareaudit writes this topic: a record it cannot read is a bug or a stranger.
                self.observed("invalid");
                tracing::error!(
                    partition = rec.partition,
                    offset = rec.offset,
                    "unreadable record on the recipient-rate topic; skipped"
                );
                return;
            }
        };
        let state = self.partitions.entry(rec.partition).or_default();
        match state.arrive(rec.offset, v) {
            Arrival::Duplicate => {
                self.observed("duplicate");
                self.settle(rec.partition, Some(rec.offset), Vec::new());
            }
            Arrival::Late(v) => {
                self.observed("late");
                self.judge(rec.partition, Some(rec.offset), *v);
            }
            Arrival::Held => {}
        }
    }

    fn observed(&self, outcome: &str) {
        self.metrics
            .rate_observations
            .with_label_values(&[outcome])
            .inc();
    }

    /// Judges, in event-time order, the held candidates every event
    /// partition has come past.
    fn release(&mut self) {
        let mut ready: Vec<(i32, Ready)> = Vec::new();
        for (p, state) in self.partitions.iter_mut() {
            ready.extend(state.ready().into_iter().map(|r| (*p, r)));
        }
        for (p, r) in ready {
            let duplicate = self
                .partitions
                .get(&p)
                .is_some_and(|s| s.judged.contains(&r.v.event_id));
            if duplicate {
                self.observed("duplicate");
                self.settle(p, r.offset, Vec::new());
                continue;
            }
            self.observed("counted");
            self.judge(p, r.offset, r.v);
        }
        self.metrics
            .rate_pending
            .set(self.partitions.values().map(|s| s.held.len() as i64).sum());
    }

    /// Counts one candidate; alerts when it takes its recipient over the limit.
    fn judge(&mut self, partition: i32, offset: Option<i64>, v: Violation) {
        let policy = self.policy();
        let mut outputs = Vec::new();
        let fired = self
            .partitions
            .entry(partition)
            .or_default()
            .decide(&policy, &v);
        if let Some(count) = fired
            && policy
                .rule(crate::model::RuleId::VolumeRecipientRate)
                .is_some()
        {
            let verdict = decide_rate(&policy, v, count, Timestamp::now());
            for s in verdict
                .suppressed
                .iter()
                .filter(|s| s.exception_mode == Mode::Enforce)
            {
                self.metrics
                    .suppressed
                    .with_label_values(&[s.rule.as_str()])
                    .inc();
            }
            for v in verdict.violations {
                let registered = policy.registry.contains_key(&v.recipient_id);
                self.metrics.violation(&v, registered);
                if v.mode == Mode::Shadow {
                    tracing::info!(rule = %v.rule_id, alert_id = %v.alert_id, event_id = %v.event_id, "shadow violation");
                    continue;
                }
                outputs.push((
                    Output {
                        topic: self.settings.topics.violations.clone(),
                        key: Some(v.recipient_id.clone().into_bytes()),
                        payload: encode_violation(&self.settings.output, &v),
                        headers: Vec::new(),
                        partition: None,
                    },
                    v.occurred_at.millis(),
                ));
            }
        }
        self.settle(partition, offset, outputs);
    }

    /// Releases a held record with its outputs, and sends them. A candidate
    /// below the group's commit (`offset` `None`) holds nothing: its
    /// outputs, duplicates of acknowledged alerts, go untracked.
    fn settle(&mut self, partition: i32, offset: Option<i64>, outputs: Vec<(Output, i64)>) {
        let Some(offset) = offset else {
            for (output, _) in &outputs {
                self.sink.send_untracked(output);
            }
            return;
        };
        {
            let mut marks = self.progress.lock();
            let Some(w) = marks.by_partition.get_mut(&partition) else {
                return; // revoked meanwhile: the next owner judges it again
            };
            if let Err(e) = w.release(offset, outputs.len() as u32) {
                tracing::warn!(error = %e, "candidate not released");
                return;
            }
        }
        for (output, at) in outputs {
            self.sink.deliver(
                output,
                Ticket {
                    partition,
                    offset,
                    occurred_at_ms: Some(at),
                },
            );
        }
        self.progress.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Flow, LegalBasis, PolicyVersion, Purpose, RecipientCategory, Severity};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    fn candidate(event_id: &str, t: i64) -> Violation {
        Violation {
            alert_id: String::new(),
            rule_id: "volume.recipient_rate".into(),
            clause: "5.2".into(),
            severity: Severity::High,
            title: String::new(),
            detail: String::new(),
            event_id: event_id.into(),
            occurred_at: Timestamp(t),
            detected_at: Timestamp(t),
            recipient_id: "partner-crm".into(),
            recipient_category: RecipientCategory::AuthorizedPartner,
            recipient_region: "CN".into(),
            purpose: Purpose::CustomerService,
            legal_basis: LegalBasis::Consent,
            flow: Flow::Share,
            categories: vec![],
            fields: vec![],
            subject_ref: format!("s-{}", t % 7),
            record_count: 1,
            mode: Mode::Enforce,
            policy_version: PolicyVersion {
                version: "t".into(),
                hash: "h".into(),
            },
            source: None,
        }
    }

    /// Three event partitions, owned by replicas that run at different
    /// speeds: their candidates and reports interleave differently each
    /// time, and the judged order is always the event-time order.
    #[test]
    fn candidates_are_judged_in_event_time_order_whatever_the_interleaving() {
        let sources = 3;
        // Per source partition, candidates with increasing event times.
        let mut streams: Vec<Vec<(i64, String)>> = vec![Vec::new(); sources];
        for i in 0..300i64 {
            streams[(i % 3) as usize].push((i * 10, format!("e-{i:04}")));
        }
        let mut want: Vec<(i64, String)> = streams.iter().flatten().cloned().collect();
        want.sort();
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut state = PartitionState::default();
            let mut next = vec![0usize; sources];
            let mut offset = 0i64;
            let mut judged = Vec::new();
            while next.iter().zip(&streams).any(|(n, s)| *n < s.len()) {
                let p = rng.random_range(0..sources);
                let stream = &streams[p];
                if next[p] >= stream.len() {
                    continue;
                }
                // A replica sends a few candidates, then reports how far it is.
                let burst = rng.random_range(1..5).min(stream.len() - next[p]);
                for (t, id) in &stream[next[p]..next[p] + burst] {
                    offset += 1;
                    let arrival = state.arrive(offset, candidate(id, *t));
                    assert!(matches!(arrival, Arrival::Held), "{arrival:?}");
                }
                next[p] += burst;
                let done = if next[p] == stream.len() {
                    i64::MAX
                } else {
                    stream[next[p] - 1].0
                };
                state.report(ProgressReport {
                    source_partition: p as i32,
                    event_time: done,
                    sources,
                });
                judged.extend(
                    state
                        .ready()
                        .into_iter()
                        .map(|r| (r.v.occurred_at.millis(), r.v.event_id)),
                );
            }
            assert_eq!(judged, want, "seed {seed}");
            assert!(state.held.is_empty());
        }
    }

    #[test]
    fn nothing_is_judged_before_every_event_partition_reported() {
        let mut state = PartitionState::default();
        state.arrive(1, candidate("a", 5));
        state.report(ProgressReport {
            source_partition: 0,
            event_time: 100,
            sources: 2,
        });
        assert!(state.ready().is_empty(), "partition 1 has not reported");
        state.report(ProgressReport {
            source_partition: 1,
            event_time: 4,
            sources: 2,
        });
        assert!(state.ready().is_empty(), "partition 1 is not past 5 yet");
        state.report(ProgressReport {
            source_partition: 1,
            event_time: 3,
            sources: 2,
        });
        assert_eq!(state.watermark(), 4, "reports never go back");
        state.report(ProgressReport {
            source_partition: 1,
            event_time: i64::MAX,
            sources: 2,
        });
        assert_eq!(state.ready().len(), 1);
        // Out of idleness, the partition holds the watermark again.
        state.report(ProgressReport {
            source_partition: 1,
            event_time: 50,
            sources: 2,
        });
        assert_eq!(state.watermark(), 50);
    }

    /// The rate topic as the producers fill it, and the members that read it.
    struct Log {
        /// What the event pipelines will produce, in order.
        pending: VecDeque<Item>,
        records: Vec<(i64, Item)>,
    }

    impl Log {
        /// Three event partitions' candidates (increasing event times per
        /// partition, thirty subjects, one recipient) in bursts, each
        /// burst followed by the report of how far that partition is.
        fn generate(rng: &mut StdRng, events: usize) -> Log {
            let sources = 3;
            let mut clock = vec![0i64; sources];
            let mut left = vec![events / sources; sources];
            let mut pending = VecDeque::new();
            let mut n = 0;
            while left.iter().any(|l| *l > 0) {
                let p = rng.random_range(0..sources);
                if left[p] == 0 {
                    continue;
                }
                let burst = rng.random_range(1..6).min(left[p]);
                for _ in 0..burst {
                    clock[p] += rng.random_range(1..16_000);
                    let mut v = candidate(&format!("e-{n:05}"), clock[p]);
                    v.subject_ref = format!("s-{}", rng.random_range(0..30));
                    pending.push_back(Item::Candidate(Box::new(v)));
                    n += 1;
                }
                left[p] -= burst;
                pending.push_back(Item::Progress(ProgressReport {
                    source_partition: p as i32,
                    event_time: if left[p] == 0 { i64::MAX } else { clock[p] },
                    sources,
                }));
            }
            Log {
                pending,
                records: Vec::new(),
            }
        }

        /// The producers append up to `n` more records.
        fn grow(&mut self, n: usize) {
            for _ in 0..n {
                let Some(item) = self.pending.pop_front() else {
                    return;
                };
                let offset = self.records.len() as i64;
                self.records.push((offset, item));
            }
        }

        fn item(&self, offset: usize) -> Item {
            match &self.records[offset].1 {
                Item::Candidate(v) => Item::Candidate(v.clone()),
                Item::Progress(r) => Item::Progress(*r),
                Item::Checkpoint(c) => Item::Checkpoint(*c),
                Item::Unreadable => Item::Unreadable,
            }
        }
    }

    /// A member of the rate group, as `RateStage` drives a partition, with
    /// acknowledgements at once: what it fired, and where it may commit.
    struct Member {
        state: PartitionState,
        next: usize,
        /// Offsets of candidates read and not yet judged.
        unjudged: BTreeSet<i64>,
        fired: BTreeSet<String>,
    }

    impl Member {
        fn new(state: PartitionState, from: usize) -> Member {
            Member {
                state,
                next: from,
                unjudged: BTreeSet::new(),
                fired: BTreeSet::new(),
            }
        }

        fn read(&mut self, log: &Log, policy: &Policy) {
            let offset = self.next as i64;
            match log.item(self.next) {
                Item::Candidate(v) => match self.state.arrive(offset, *v) {
                    Arrival::Held => {
                        self.unjudged.insert(offset);
                    }
                    Arrival::Late(v) => self.judge(policy, &v),
                    Arrival::Duplicate => {}
                },
                Item::Progress(r) => self.state.report(r),
                _ => {}
            }
            self.next += 1;
            for r in self.state.ready() {
                if let Some(o) = r.offset {
                    self.unjudged.remove(&o);
                }
                if !self.state.judged.contains(&r.v.event_id) {
                    self.judge(policy, &r.v);
                }
            }
        }

        fn judge(&mut self, policy: &Policy, v: &Violation) {
            if self.state.decide(policy, v).is_some() {
                self.fired.insert(v.event_id.clone());
            }
        }

        /// The group's commit: the first candidate not judged, or the position.
        fn commit(&self) -> i64 {
            self.unjudged.first().copied().unwrap_or(self.next as i64)
        }
    }

    fn rate_policy() -> Policy {
        let text = crate::policy::DEFAULT_POLICY
            .replace("max_subjects_per_hour: 1000", "max_subjects_per_hour: 5")
            .replace("window_seconds: 3600", "window_seconds: 20");
        crate::policy::load(&text, "rate.yaml", Timestamp(0))
            .unwrap()
            .policy
    }

    /// An owner reads while the producers write and checkpoints now and
    /// then; it is killed at a random point; the next owner rebuilds from
    /// the partition and the commit, and reads on. Together they fire on
    /// exactly the candidates one owner reading it all fires on.
    #[test]
    fn a_new_owner_goes_on_exactly_where_a_killed_one_stopped() {
        let policy = rate_policy();
        let mut fired_somewhere = 0;
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut log = Log::generate(&mut rng, 240);
            let total = log.pending.len();

            // One owner, from the start to the end: the truth.
            let mut truth_log = Log {
                pending: log
                    .pending
                    .iter()
                    .map(|i| match i {
                        Item::Candidate(v) => Item::Candidate(v.clone()),
                        Item::Progress(r) => Item::Progress(*r),
                        _ => Item::Unreadable,
                    })
                    .collect(),
                records: Vec::new(),
            };
            truth_log.grow(total);
            let mut one = Member::new(PartitionState::default(), 0);
            while one.next < truth_log.records.len() {
                one.read(&truth_log, &policy);
            }
            assert!(one.state.held.is_empty());

            // The first owner, killed after a random number of reads.
            let mut first = Member::new(PartitionState::default(), 0);
            let kill_after = rng.random_range(1..total);
            for _ in 0..kill_after {
                log.grow(rng.random_range(0..4));
                if first.next >= log.records.len() {
                    log.grow(1);
                }
                first.read(&log, &policy);
                if rng.random_bool(0.2)
                    && first.state.judged_time > first.state.checkpointed.unwrap_or(0)
                {
                    first.state.checkpointed = Some(first.state.judged_time);
                    let offset = log.records.len() as i64;
                    log.records.push((
                        offset,
                        Item::Checkpoint(Checkpoint {
                            judged_through: first.state.judged_time,
                        }),
                    ));
                }
            }
            let committed = first.commit();

            // The next owner: rebuilt from the partition as it is now, then reads from the commit.
            // Also when it could not read the commit (`restore` then takes
            // everything read as below it): more judged again, nothing lost.
            let records = |log: &Log| -> Vec<(i64, Item)> {
                (0..log.records.len())
                    .map(|o| (o as i64, log.item(o)))
                    .collect()
            };
            let (state, _) = PartitionState::rebuild(records(&log), committed, &policy);
            let (blind, _) = PartitionState::rebuild(records(&log), i64::MAX, &policy);
            let mut second = Member::new(state, committed as usize);
            let mut second_blind = Member::new(blind, committed as usize);
            log.grow(total);
            for m in [&mut second, &mut second_blind] {
                while m.next < log.records.len() {
                    m.read(&log, &policy);
                }
                assert!(m.state.held.is_empty(), "seed {seed}: all judged");
                let together: BTreeSet<String> = first.fired.union(&m.fired).cloned().collect();
                assert_eq!(
                    together, one.fired,
                    "seed {seed}: killed after {kill_after} of {total}"
                );
            }
            fired_somewhere += one.fired.len();
        }
        assert!(
            fired_somewhere > 200,
            "the limit is crossed often: {fired_somewhere}"
        );
    }

    #[test]
    fn a_late_observation_neither_counts_outside_its_window_nor_outlives_it() {
        let mut w = volume::RateWindows::default();
        let window = 1_000;
        for (i, t) in [10_000i64, 10_500, 10_900].iter().enumerate() {
            assert_eq!(w.observe("r", i as u64, *t, 10, window), None);
        }
        // Late but inside the window: counted, and kept in time order.
        assert_eq!(w.count("r", "late", 10_200, window), 4);
        // Older than the window: changes nothing, and cannot fire.
        assert_eq!(w.observe("r", 99, 9_000, 0, window), None);
        assert_eq!(w.size(), (1, 4));
        // Time moves on: the late one expires with its peers, not after them.
        assert_eq!(
            w.count("r", "next", 11_300, window),
            3,
            "10,500, 10,900 and 11,300 remain"
        );
    }

    #[test]
    fn judged_event_ids_are_remembered_for_two_windows() {
        let mut state = PartitionState::default();
        state.judged(1_000, "old", 100);
        state.judged(1_150, "mid", 100);
        assert!(state.judged.contains("old"));
        state.judged(1_300, "new", 100);
        assert!(!state.judged.contains("old"), "older than two windows");
        assert!(state.judged.contains("mid") && state.judged.contains("new"));
    }
}
