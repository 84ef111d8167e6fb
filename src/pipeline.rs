//! The daemon's loop: source -> codec -> audit -> sink -> commit.
//!
//! One thread reads, judges and enqueues; the producer's own thread turns
//! delivery reports into acknowledgements in the per-partition watermarks;
//! this loop commits what the watermarks allow. The order of a partition is
//! kept because one thread handles its records in offset order.
//!
//! - Backpressure: at `max_in_flight` records whose outputs are not all
//!   acknowledged, fetching pauses (polling goes on, so heartbeats and
//!   rebalances are served); a slow alert topic slows consumption.
//! - A failed delivery holds its partition's watermark and is sent again,
//!   never skipped.
//! - A record that cannot be decoded or validated goes to the dead-letter
//!   topic unchanged, with headers naming where it came from and why.
//! - Shutdown: stop fetching, drain (within `drain_timeout`), commit, leave.

use crate::audit::{AuditContext, Engine};
use crate::codec::wire::{self, SchemaLookup};
use crate::codec::{DecodeError, avro};
use crate::config::{OutputFormat, Settings};
use crate::consent::ConsentTable;
use crate::kafka::consent::ConsentReader;
use crate::kafka::sink::Sink;
use crate::kafka::source::Source;
use crate::kafka::{Output, Progress, Record, Retry, Ticket};
use crate::model::{Mode, Source as EventSource, Timestamp, Violation};
use crate::policy::{self, format_finding};
use crate::telemetry::Metrics;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Flags the outside world sets: stop (SIGTERM, SIGINT), reload (SIGHUP).
#[derive(Clone, Default)]
pub struct Control {
    pub shutdown: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
    /// Set by the pipeline: the consent table is loaded and records flow.
    pub ready: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("schemas: {0}")]
    Schema(#[from] DecodeError),
}

/// Where the policy comes from, for hot reload.
pub struct PolicyFile {
    pub path: Option<PathBuf>,
    modified: Option<SystemTime>,
}

impl PolicyFile {
    pub fn new(path: Option<PathBuf>) -> PolicyFile {
        let modified = path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        PolicyFile { path, modified }
    }

    /// Whether the file changed since it was last read (a ConfigMap update
    /// swaps a symlink: metadata follows it).
    fn changed(&mut self) -> bool {
        let Some(p) = &self.path else { return false };
        let now = std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if now != self.modified {
            self.modified = now;
            return true;
        }
        false
    }
}

/// The daemon.
pub struct Pipeline {
    settings: Settings,
    progress: Arc<Progress>,
    metrics: Arc<Metrics>,
    sink: Sink,
    engine: Engine,
    table: ConsentTable,
    schemas: Box<dyn SchemaLookup + Send>,
    policy: PolicyFile,
    control: Control,
}

const DLQ_HEADERS: [&str; 5] = [
    "shareaudit.source.topic",
    "shareaudit.source.partition",
    "shareaudit.source.offset",
    "shareaudit.error.class",
    "shareaudit.error.message",
];

impl Pipeline {
    pub fn new(
        settings: Settings,
        engine: Engine,
        schemas: Box<dyn SchemaLookup + Send>,
        metrics: Arc<Metrics>,
        control: Control,
    ) -> Result<Pipeline, PipelineError> {
        let progress = Arc::new(Progress::new(Arc::clone(&metrics)));
        let sink = Sink::new(&settings, Arc::clone(&progress))?;
        let table = ConsentTable::new(engine.policy().settings.consent_history_per_user);
        metrics.set_policy(&engine.policy().version);
        let policy = PolicyFile::new(settings.policy.clone());
        Ok(Pipeline {
            settings,
            progress,
            metrics,
            sink,
            engine,
            table,
            schemas,
            policy,
            control,
        })
    }

    fn stopping(&self) -> bool {
        self.control.shutdown.load(Ordering::Relaxed)
    }

    /// Runs until shutdown is asked; returns after the final commit.
    pub fn run(mut self) -> Result<(), PipelineError> {
        let mut consent = ConsentReader::new(&self.settings)?;
        let started = Instant::now();
        while !consent.caught_up() {
            if self.stopping() {
                return Ok(());
            }
            consent.poll(
                &mut self.table,
                self.schemas.as_ref(),
                &self.metrics,
                Duration::from_millis(200),
                50_000,
            );
        }
        tracing::info!(
            users = self.table.users(),
            seconds = started.elapsed().as_secs_f64(),
            "consent table loaded"
        );

        let mut source = Source::new(&self.settings, Arc::clone(&self.progress))?;
        self.control.ready.store(true, Ordering::Relaxed);
        self.metrics.ready.set(1);
        let mut last_commit = Instant::now();
        let mut last_lag = Instant::now();
        let mut last_policy_check = Instant::now();
        let mut last_retry = Instant::now();

        while !self.stopping() {
            if self.control.reload.swap(false, Ordering::Relaxed)
                || (last_policy_check.elapsed() >= self.settings.policy_poll && {
                    last_policy_check = Instant::now();
                    self.policy.changed()
                })
            {
                self.reload();
            }
            if last_retry.elapsed() >= Duration::from_millis(200) {
                self.send_retries();
                last_retry = Instant::now();
            }
            consent.poll(
                &mut self.table,
                self.schemas.as_ref(),
                &self.metrics,
                Duration::ZERO,
                1_000,
            );

            let in_flight = self.progress.lock().in_flight();
            self.metrics.in_flight.set(in_flight as i64);
            if in_flight >= self.settings.max_in_flight {
                source.set_paused(true);
            } else if source.is_paused() && in_flight < self.settings.max_in_flight / 2 {
                source.set_paused(false);
            }

            let keep_going = match source.poll(Duration::from_millis(20)) {
                Some(Ok(record)) => self.handle(record),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer");
                    true
                }
                None => true,
            };
            if !keep_going {
                break;
            }
            if last_commit.elapsed() >= self.settings.commit_interval {
                self.commit(&source, false);
                last_commit = Instant::now();
            }
            if last_lag.elapsed() >= Duration::from_secs(5) {
                self.update_lag(&source);
                last_lag = Instant::now();
            }
        }
        self.drain(&mut source);
        Ok(())
    }

    /// Stop fetching, wait for every output to be acknowledged (sending
    /// retries), commit, leave the group.
    fn drain(&mut self, source: &mut Source) {
        self.control.ready.store(false, Ordering::Relaxed);
        self.metrics.ready.set(0);
        source.set_paused(true);
        let deadline = Instant::now() + self.settings.drain_timeout;
        loop {
            self.send_retries();
            let _ = source.poll(Duration::ZERO); // serve callbacks; records read now are left for the next owner
            if self.progress.wait_until(
                (Instant::now() + Duration::from_millis(100)).min(deadline),
                |m| m.in_flight() == 0,
            ) {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    in_flight = self.progress.lock().in_flight(),
                    "drain deadline reached; committing the acknowledged prefix only"
                );
                break;
            }
        }
        self.commit(source, true);
        source.close();
        self.sink.flush(Duration::from_secs(1));
        self.metrics
            .in_flight
            .set(self.progress.lock().in_flight() as i64);
        tracing::info!("drained and committed; leaving");
    }

    fn commit(&self, source: &Source, sync: bool) {
        let to_commit = self.progress.lock().to_commit();
        if to_commit.is_empty() {
            return;
        }
        match source.commit(&to_commit, sync) {
            Ok(()) => {
                let mut marks = self.progress.lock();
                for (p, o) in to_commit {
                    marks.committed.insert(p, o);
                    self.metrics
                        .committed_offset
                        .with_label_values(&[&p.to_string()])
                        .set(o);
                }
            }
            Err(e) => tracing::warn!(error = %e, "commit failed; will commit again"),
        }
    }

    fn update_lag(&self, source: &Source) {
        let committed = self.progress.lock().committed.clone();
        for p in source.assigned() {
            if let Some(end) = source.end_offset(p) {
                let done = committed.get(&p).copied().unwrap_or(0);
                self.metrics
                    .lag
                    .with_label_values(&[&p.to_string()])
                    .set((end - done).max(0));
            }
        }
    }

    fn reload(&mut self) {
        let Some(path) = self.policy.path.clone() else {
            return;
        };
        let name = path.display().to_string();
        let outcome = std::fs::read_to_string(&path)
            .map_err(|e| format!("{name}: cannot read: {e}"))
            .and_then(|text| {
                policy::load(&text, &name, Timestamp::now()).map_err(|e| e.to_string())
            });
        match outcome {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    tracing::warn!(finding = %format_finding(&name, w), "policy warning");
                }
                self.metrics.set_policy(&loaded.policy.version);
                self.metrics.policy_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(version = %loaded.policy.version.version, hash = %loaded.policy.version.hash, "policy reloaded");
                self.engine.set_policy(Arc::new(loaded.policy));
            }
            Err(e) => {
                self.metrics
                    .policy_reloads
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!(error = %e, "policy reload refused; the running policy stays");
            }
        }
    }

    fn send_retries(&mut self) {
        let retries = std::mem::take(&mut self.progress.lock().retries);
        for r in retries {
            if let Some(w) = self
                .progress
                .lock()
                .by_partition
                .get_mut(&r.ticket.partition)
            {
                let _ = w.retrying(r.ticket.offset);
            }
            self.send(r.output, r.ticket);
        }
    }

    /// Enqueues an output; a refusal fails it in the watermark and queues a retry.
    fn send(&self, output: Output, ticket: Ticket) {
        if let Err(e) = self.sink.send(&output, ticket) {
            self.metrics.delivery_failures.inc();
            tracing::warn!(error = %e, topic = %output.topic, "enqueue refused; retrying");
            let mut marks = self.progress.lock();
            if let Some(w) = marks.by_partition.get_mut(&ticket.partition) {
                let _ = w.fail(ticket.offset);
            }
            marks.retries.push(Retry { ticket, output });
        }
    }

    fn encode(&self, v: &Violation) -> Vec<u8> {
        match &self.settings.output {
            OutputFormat::Json => serde_json::to_vec(v).unwrap_or_default(),
            OutputFormat::Avro { schema_id } => {
                match (avro::encode_violation(v), avro::schemas()) {
                    (Ok(datum), Ok(s)) => match schema_id {
                        Some(id) => wire::confluent(*id, &datum),
                        None => wire::single_object(&s.violation, &datum),
                    },
                    // The schemas are compiled in and tested; JSON is the fallback of last resort.
                    _ => serde_json::to_vec(v).unwrap_or_default(),
                }
            }
        }
    }

    /// Judges one record and enqueues its outputs. False when shutdown
    /// interrupted it (the record is left for the next owner).
    fn handle(&mut self, rec: Record) -> bool {
        let started = Instant::now();
        let payload = rec.payload.as_deref().unwrap_or_default();
        let decoded = loop {
            match wire::decode_event(payload, self.schemas.as_ref()) {
                Err(DecodeError::Registry(e)) => {
                    tracing::warn!(error = %e, partition = rec.partition, offset = rec.offset, "schema registry unavailable; retrying this record");
                    if self.stopping() {
                        return false;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                other => break other,
            }
        };
        let m = &self.metrics;
        // Each output with the event time of its violation (None for a dead letter).
        let mut outputs: Vec<(Output, Option<i64>)> = Vec::new();
        let dead_letter = |class: &str, message: String| {
            m.dead_letters.with_label_values(&[class]).inc();
            m.events.with_label_values(&["dead_letter"]).inc();
            // The message can quote the record's values: it goes to the dead letter's headers, beside the record, not to the log.
            tracing::warn!(
                class,
                partition = rec.partition,
                offset = rec.offset,
                "dead letter"
            );
            let mut headers = rec.headers.clone();
            let values = [
                rec.topic.clone(),
                rec.partition.to_string(),
                rec.offset.to_string(),
                class.to_owned(),
                message,
            ];
            headers.extend(
                DLQ_HEADERS
                    .iter()
                    .zip(values)
                    .map(|(k, v)| ((*k).to_owned(), v.into_bytes())),
            );
            let output = Output {
                topic: self.settings.topics.dead_letters.clone(),
                key: rec.key.clone(),
                payload: payload.to_vec(),
                headers,
            };
            (output, None)
        };
        match decoded {
            Err(e) => outputs.push(dead_letter(e.class(), e.to_string())),
            Ok(event) => {
                let ctx = AuditContext {
                    detected_at: Timestamp::now(),
                    source: Some(EventSource {
                        topic: rec.topic.clone(),
                        partition: rec.partition,
                        offset: rec.offset,
                    }),
                };
                let state = self.table.as_of(&event.subject.user_id, event.occurred_at);
                match self.engine.audit(&event, state, &ctx) {
                    Err(problems) => outputs.push(dead_letter(
                        "invalid",
                        format!("invalid record: {problems}"),
                    )),
                    Ok(verdict) => {
                        for s in verdict
                            .suppressed
                            .iter()
                            .filter(|s| s.exception_mode == Mode::Enforce)
                        {
                            m.suppressed.with_label_values(&[s.rule.as_str()]).inc();
                        }
                        for v in &verdict.violations {
                            let registered =
                                self.engine.policy().registry.contains_key(&v.recipient_id);
                            m.violation(v, registered);
                            if v.mode == Mode::Shadow {
                                tracing::info!(rule = %v.rule_id, alert_id = %v.alert_id, event_id = %v.event_id, "shadow violation");
                                continue;
                            }
                            let output = Output {
                                topic: self.settings.topics.violations.clone(),
                                key: Some(v.recipient_id.clone().into_bytes()),
                                payload: self.encode(v),
                                headers: Vec::new(),
                            };
                            outputs.push((output, Some(v.occurred_at.millis())));
                        }
                        let outcome = if outputs.is_empty() {
                            "clean"
                        } else {
                            "violation"
                        };
                        m.events.with_label_values(&[outcome]).inc();
                    }
                }
            }
        }
        {
            let mut marks = self.progress.lock();
            if !marks.by_partition.contains_key(&rec.partition) {
                tracing::info!(
                    partition = rec.partition,
                    offset = rec.offset,
                    "first record of the partition in this assignment"
                );
            }
            let w = marks.by_partition.entry(rec.partition).or_default();
            if let Err(e) = w.begin(rec.offset, outputs.len() as u32) {
                // A record read twice within one assignment: it was handled the first time.
                tracing::warn!(error = %e, "record not begun");
                return true;
            }
        }
        for (output, occurred_at_ms) in outputs {
            self.send(
                output,
                Ticket {
                    partition: rec.partition,
                    offset: rec.offset,
                    occurred_at_ms,
                },
            );
        }
        self.progress.notify();
        m.audit_seconds.observe(started.elapsed().as_secs_f64());
        true
    }
}
