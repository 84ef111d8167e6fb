//! The event stage: each record of the event topic decoded, judged against
//! the policy in force and the consent table as of the event's time, and
//! turned into outputs (alerts, a dead letter, a `volume.recipient_rate`
//! candidate for the rate stage). Its progress in event time is reported to
//! the rate stage at every commit interval.
//!
//! A record whose writer schema is not known yet holds its partition (and
//! only it) while the registry is asked on the runtime, with backoff; the
//! records read behind it wait in order and are judged when the answer
//! comes. So does an event logged after the last consent record the table
//! is known to hold (`ConsentSync`): it waits, at most `consent_max_wait`,
//! for the consent reader to catch up to its log time; past that it is
//! judged with the table as it is, and its alerts say so (the header
//! `shareaudit.consent.stale`).

use super::Schemas;
use super::SharedTable;
use super::ordering::{KIND_HEADER, KIND_PROGRESS, ProgressReport};
use super::outputs::{self, Timed};
use super::stage::{Stage, StageIo};
use crate::audit::{AuditContext, Engine, too_far_ahead};
use crate::codec::{DecodeError, wire};
use crate::config::Settings;
use crate::kafka::admin::Topology;
use crate::kafka::consent::ConsentSync;
use crate::kafka::source::{EndProbe, Reached};
use crate::kafka::{Output, Record};
use crate::model::{DataSharingEvent, Source as EventSource, Timestamp, redact};
use crate::policy::Policy;
use crate::telemetry::Metrics;
use futures::FutureExt;
use rdkafka::error::KafkaError;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A partition whose records wait for the consent reader goes on being
/// read into memory, up to this many records; then it is paused. A pause
/// costs librdkafka's prefetched records and a new fetch, too much for the
/// few milliseconds an event logged just now waits for the next end probe.
const CONSENT_QUEUE: usize = 4_096;

pub struct EventStage {
    pub(super) engine: Engine,
    pub(super) table: SharedTable,
    pub(super) schemas: Schemas,
    pub(super) policy: watch::Receiver<Arc<Policy>>,
    pub(super) topology: Topology,
    /// The partitions assigned, as the rebalances said.
    pub(super) assigned: BTreeSet<i32>,
    /// Bumped at every rebalance: an end probe asked before one says
    /// nothing of the partitions now.
    pub(super) epoch: u64,
    /// The end probe under way (asked at the last commit interval), with
    /// the epoch it was asked in.
    pub(super) probe: Option<(u64, tokio::task::JoinHandle<Result<EndProbe, KafkaError>>)>,
    /// End probes failed in a row (logged at 1, 2, 4, … of them).
    pub(super) probe_failures: u64,
    /// Held partitions: the records that wait for a writer schema, in order.
    pub(super) waiting: BTreeMap<i32, VecDeque<Record>>,
    /// Writer schemas being fetched, with the partitions that wait for each.
    pub(super) fetching: BTreeMap<u32, BTreeSet<i32>>,
    /// Where a fetch says it is done.
    pub(super) wake: mpsc::UnboundedSender<u32>,
    /// The fetches under way: the stage's own tasks, aborted with it.
    pub(super) fetches: JoinSet<()>,
    pub(super) stop: CancellationToken,
    /// How far in log time the consent table is complete.
    pub(super) consent: Arc<ConsentSync>,
    /// Held partitions whose first record waits for the consent reader, since when.
    pub(super) consent_held: BTreeMap<i32, Instant>,
    /// The held partitions paused at the consumer.
    pub(super) paused: BTreeSet<i32>,
    /// The event each record is decoded into: JSON records reuse its
    /// strings and items, as `audit` does.
    pub(super) event: DataSharingEvent,
}

/// The header an alert carries when its event was judged with a consent
/// view that had not caught up to it (after `consent_max_wait`).
pub const STALE_HEADER: &str = "shareaudit.consent.stale";

/// What became of a record.
enum Judged {
    Done,
    /// Its writer schema must be fetched first.
    Waits(u32),
    /// The consent table has not caught up to its log time yet.
    WaitsForConsent,
}

impl Stage for EventStage {
    fn record(&mut self, io: &mut StageIo, rec: Record) {
        let p = rec.partition;
        if let Some(queue) = self.waiting.get_mut(&p) {
            if queue.back().is_none_or(|last| rec.offset > last.offset) {
                queue.push_back(rec);
            }
            if queue.len() >= CONSENT_QUEUE {
                self.pause(io, p);
            }
            if self.consent_held.contains_key(&p) {
                self.count_held(io);
            }
            return;
        }
        match self.judge(io, &rec, false) {
            Judged::Done => {}
            Judged::Waits(id) => self.hold(io, id, rec),
            Judged::WaitsForConsent => {
                self.consent_held.insert(rec.partition, Instant::now());
                self.waiting.insert(rec.partition, VecDeque::from([rec]));
                self.count_held(io);
            }
        }
    }

    async fn rebalanced(&mut self, _io: &mut StageIo, changes: Vec<(i32, bool)>) {
        self.epoch += 1;
        for (p, assigned) in changes {
            if assigned {
                self.assigned.insert(p);
            } else {
                // Records waiting were never begun: the next owner reads them.
                self.assigned.remove(&p);
                self.waiting.remove(&p);
                self.consent_held.remove(&p);
                self.paused.remove(&p);
                for waiting in self.fetching.values_mut() {
                    waiting.remove(&p);
                }
            }
        }
    }

    fn tick(&mut self, io: &mut StageIo) {
        while self.fetches.try_join_next().is_some() {}
        if self.probe.as_ref().is_some_and(|(_, h)| h.is_finished()) {
            let answered = self.probe.take().and_then(|(epoch, h)| {
                let failed = |failures: &mut u64, error: &dyn std::fmt::Display| {
                    *failures += 1;
                    if failures.is_power_of_two() {
                        tracing::warn!(%error, failures = *failures, "end probe of the event partitions failed; idle partitions hold volume.recipient_rate until one succeeds");
                    }
                };
                match h.now_or_never()? {
                    Ok(Ok(probe)) => {
                        self.probe_failures = 0;
                        // A rebalance came between: it says nothing of the partitions now.
                        (epoch == self.epoch).then_some(probe)
                    }
                    Ok(Err(e)) => {
                        failed(&mut self.probe_failures, &e);
                        None
                    }
                    Err(e) => {
                        failed(&mut self.probe_failures, &e);
                        None
                    }
                }
            });
            self.report_progress(io, answered.as_ref());
        }
        let held: Vec<i32> = self.consent_held.keys().copied().collect();
        for p in held {
            self.drain(io, p);
        }
        if self.policy.has_changed().unwrap_or(false) {
            let policy = Arc::clone(&self.policy.borrow_and_update());
            self.engine.set_policy(policy);
        }
        io.metrics
            .in_flight
            .set(io.progress.lock().in_flight() as i64);
    }

    /// Asks an end probe; its answer sends the progress reports (`tick`).
    /// One still unanswered from the last interval (a slow broker) does not
    /// hold the reports of event time back.
    fn committed(&mut self, io: &mut StageIo) {
        if self.probe.is_some() {
            self.report_progress(io, None);
            return;
        }
        let ask = io.source.end_probe();
        self.probe = Some((self.epoch, tokio::task::spawn_blocking(ask)));
    }

    fn woken(&mut self, io: &mut StageIo, id: u32) {
        let Some(partitions) = self.fetching.remove(&id) else {
            return;
        };
        for p in partitions {
            tracing::info!(partition = p, schema_id = id, "writer schema known");
            self.drain(io, p);
        }
    }

    fn stopping(&mut self, io: &mut StageIo) {
        io.metrics.ready.set(0);
    }

    fn stopped(&mut self, io: &mut StageIo) {
        io.metrics
            .in_flight
            .set(io.progress.lock().in_flight() as i64);
    }
}

impl EventStage {
    /// Judges the records a held partition has waiting, in order, until one
    /// must wait again (for a schema, or for the consent reader; one that
    /// waited for it `consent_max_wait` is judged stale); lets the
    /// partition flow again when none is left.
    fn drain(&mut self, io: &mut StageIo, p: i32) {
        let Some(mut queue) = self.waiting.remove(&p) else {
            self.consent_held.remove(&p);
            return;
        };
        let max_wait = io.settings.consent_max_wait;
        while let Some(rec) = queue.pop_front() {
            let since = self.consent_held.get(&p).copied();
            let overdue = since.is_some_and(|s| s.elapsed() >= max_wait);
            match self.judge(io, &rec, overdue) {
                Judged::Done => {
                    if let Some(since) = self.consent_held.remove(&p) {
                        io.metrics
                            .consent_wait_seconds
                            .observe(since.elapsed().as_secs_f64());
                    }
                }
                Judged::Waits(next) => {
                    queue.push_front(rec);
                    self.pause(io, p);
                    self.fetch(next, p);
                    break;
                }
                Judged::WaitsForConsent => {
                    queue.push_front(rec);
                    self.consent_held.entry(p).or_insert_with(Instant::now);
                    break;
                }
            }
        }
        if queue.is_empty() {
            if self.paused.remove(&p) {
                io.source.hold(p, false);
            }
        } else {
            self.waiting.insert(p, queue);
        }
        self.count_held(io);
    }

    /// The records waiting for the consent reader, for the metrics: held
    /// while it is behind them, confirming while it is current and only
    /// the next end probe is awaited (the steady state of live traffic).
    fn count_held(&self, io: &StageIo) {
        let waiting: usize = self
            .consent_held
            .keys()
            .filter_map(|p| self.waiting.get(p))
            .map(VecDeque::len)
            .sum();
        let (held, confirming) = if self.consent.behind(Timestamp::now().millis()) {
            (waiting, 0)
        } else {
            (0, waiting)
        };
        io.metrics.consent_held.set(held as i64);
        io.metrics.consent_confirming.set(confirming as i64);
    }

    /// Holds `rec`'s partition until schema `id` is known.
    fn hold(&mut self, io: &mut StageIo, id: u32, rec: Record) {
        tracing::warn!(
            partition = rec.partition,
            offset = rec.offset,
            schema_id = id,
            "writer schema not known yet; holding the partition while the registry is asked"
        );
        let p = rec.partition;
        self.pause(io, p);
        self.waiting.insert(p, VecDeque::from([rec]));
        self.fetch(id, p);
    }

    /// Pauses a held partition at the consumer, once.
    fn pause(&mut self, io: &mut StageIo, p: i32) {
        if self.paused.insert(p) {
            io.source.hold(p, true);
        }
    }

    /// Asks the registry for `id` on the runtime, unless that is under way.
    fn fetch(&mut self, id: u32, partition: i32) {
        let first = !self.fetching.contains_key(&id);
        self.fetching.entry(id).or_default().insert(partition);
        let (Some(registry), true) = (self.schemas.registry.clone(), first) else {
            return;
        };
        let (wake, stop) = (self.wake.clone(), self.stop.clone());
        self.fetches.spawn(async move {
            let answered = crate::codec::registry::fetch_until_answered(
                &registry,
                id,
                &stop,
                |e, tries| {
                    if tries.is_power_of_two() {
                        tracing::warn!(schema_id = id, tries, error = %e, "schema registry unavailable; the partition waits");
                    }
                },
            )
            .await;
            if answered {
                let _ = wake.send(id);
            }
        });
    }

    /// Decodes, judges and sends the outputs of one record. An event logged
    /// after what the consent table is known to hold waits, unless it
    /// waited long enough (`stale_ok`): it is then judged, marked stale.
    fn judge(&mut self, io: &mut StageIo, rec: &Record, stale_ok: bool) -> Judged {
        // Taken out for the call, so that `self` stays free to borrow.
        let mut event = std::mem::replace(&mut self.event, DataSharingEvent::empty());
        let judged = self.judge_into(io, rec, stale_ok, &mut event);
        self.event = event;
        judged
    }

    /// `judge`, decoding into `event`.
    fn judge_into(
        &mut self,
        io: &mut StageIo,
        rec: &Record,
        stale_ok: bool,
        event: &mut DataSharingEvent,
    ) -> Judged {
        let started = Instant::now();
        let payload = rec.payload.as_deref().unwrap_or_default();
        let decoded = wire::decode_event_into(payload, self.schemas.lookup.as_ref(), event);
        let (settings, metrics) = (&*io.settings, &*io.metrics);
        let mut out: Vec<Timed> = Vec::new();
        let mut event_time = None;
        let now = Timestamp::now();
        let skew = settings.max_future_skew.as_millis() as i64;
        match decoded {
            Err(DecodeError::Pending(id)) if self.schemas.registry.is_some() => {
                return Judged::Waits(id);
            }
            Err(e) => out.push((
                outputs::dead_letter(settings, metrics, rec, e.class(), e.to_string()),
                None,
            )),
            Ok(()) => match too_far_ahead(event, now, skew) {
                Some(ahead) => {
                    let message = format!(
                        "occurred_at is {ahead} ms after the time it was judged; at most {skew} ms allowed"
                    );
                    out.push((
                        outputs::dead_letter(settings, metrics, rec, "future_event_time", message),
                        None,
                    ));
                }
                None => {
                    let behind = rec.timestamp.is_some_and(|t| !self.consent.covers(t));
                    if behind && !stale_ok {
                        return Judged::WaitsForConsent;
                    }
                    event_time = Some(event.occurred_at.millis());
                    self.audit(settings, metrics, rec, event, now, &mut out);
                    if behind {
                        metrics.consent_stale.inc();
                        tracing::warn!(
                            partition = rec.partition,
                            offset = rec.offset,
                            waited_ms = settings.consent_max_wait.as_millis() as u64,
                            "event judged with a consent view behind its time (consent_max_wait_ms passed); its alerts are marked stale"
                        );
                        for (o, _) in &mut out {
                            o.headers.push((STALE_HEADER.to_owned(), b"true".to_vec()));
                        }
                    }
                }
            },
        }
        {
            let mut marks = io.progress.lock();
            if !marks.knows(rec.partition) {
                tracing::info!(
                    partition = rec.partition,
                    offset = rec.offset,
                    "first record of the partition in this assignment"
                );
            }
            if let Some(last) = marks.last_begun(rec.partition)
                && rec.offset > last + 1
            {
                // Compaction and transaction markers make gaps; so does a broker that skips records.
                tracing::warn!(
                    partition = rec.partition,
                    after = last,
                    offset = rec.offset,
                    "offsets skipped between two records read"
                );
            }
            if let Err(e) = marks.begin(rec.partition, rec.offset, out.len() as u32, event_time) {
                // A record read twice within one assignment: it was handled the first time.
                tracing::warn!(error = %e, "record not begun");
                return Judged::Done;
            }
        }
        io.deliver(rec.partition, rec.offset, out);
        io.metrics
            .audit_seconds
            .observe(started.elapsed().as_secs_f64());
        Judged::Done
    }

    /// Judges a decoded event: its alerts, or a dead letter if the engine
    /// refuses it, and its `volume.recipient_rate` candidate.
    fn audit(
        &mut self,
        settings: &Settings,
        metrics: &Metrics,
        rec: &Record,
        event: &DataSharingEvent,
        now: Timestamp,
        out: &mut Vec<Timed>,
    ) {
        // The record's log time, not the clock: a copy judged again after a
        // crash or a rebalance is then the same, byte for byte.
        let ctx = AuditContext {
            detected_at: rec.timestamp.map_or(now, Timestamp),
            source: Some(EventSource {
                topic: rec.topic.clone(),
                partition: rec.partition,
                offset: rec.offset,
            }),
        };
        let verdict = {
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            let state = table.as_of(&event.subject.user_id, event.occurred_at);
            self.engine.audit(event, state, &ctx)
        };
        match verdict {
            Err(problems) => {
                let message = format!("invalid record: {}", redact(&problems.to_string()));
                out.push((
                    outputs::dead_letter(settings, metrics, rec, "invalid", message),
                    None,
                ));
            }
            Ok(verdict) => {
                outputs::verdict(settings, metrics, self.engine.policy(), &verdict, out);
                let outcome = if out.is_empty() { "clean" } else { "violation" };
                metrics.events.with_label_values(&[outcome]).inc();
                if let Some(c) = &verdict.rate_candidate {
                    out.push((outputs::candidate(settings, c), None));
                }
            }
        }
    }

    /// Tells the rate stage how far each partition of ours has come: in
    /// event time, every event up to the reported time has its candidate
    /// acknowledged on the rate topic; with an end probe, every event
    /// logged before the probe was asked has (`idle_through`), if this
    /// member had come to the probe's end and finished with what it read.
    fn report_progress(&mut self, io: &mut StageIo, probe: Option<&EndProbe>) {
        let mut reports = Vec::new();
        {
            let marks = io.progress.lock();
            for &p in &self.assigned {
                let idle_through = probe.and_then(|probe| {
                    let finished =
                        marks.partition_in_flight(p) == 0 && !self.waiting.contains_key(&p);
                    match probe.reached(p, marks.done_through(p)) {
                        Reached::Done => Some(probe.asked_at - 1),
                        Reached::HandedOver if finished => Some(probe.asked_at - 1),
                        _ => None,
                    }
                });
                let done = marks.done_time(p);
                if done.is_some() || idle_through.is_some() {
                    reports.push((p, done.unwrap_or(i64::MIN), idle_through));
                }
            }
        }
        for output in progress_outputs(&io.settings.topics.recipient_rate, self.topology, &reports)
        {
            io.sink.send_untracked(&output);
        }
    }
}

/// The progress reports of one replica, to every partition of the rate topic.
fn progress_outputs(
    topic: &str,
    topology: Topology,
    reports: &[(i32, i64, Option<i64>)],
) -> Vec<Output> {
    let mut out = Vec::with_capacity(reports.len() * topology.rate_partitions);
    for &(source_partition, event_time, idle_through) in reports {
        let payload = ProgressReport {
            source_partition,
            event_time,
            sources: topology.event_partitions,
            idle_through,
        }
        .encode();
        for q in 0..topology.rate_partitions {
            out.push(Output {
                topic: topic.to_owned(),
                key: None,
                payload: payload.clone(),
                headers: vec![(KIND_HEADER.to_owned(), KIND_PROGRESS.as_bytes().to_vec())],
                partition: Some(q as i32),
            });
        }
    }
    out
}
