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
use crate::kafka::admin::Topology;
use crate::kafka::consent::ConsentReader;
use crate::kafka::sink::Sink;
use crate::kafka::source::Source;
use crate::kafka::{Output, Progress, Record, Ticket};
use crate::model::{Mode, Source as EventSource, Timestamp, Violation};
use crate::policy::{self, format_finding};
use crate::recipient_rate::{self, RateStage, SharedPolicy};
use crate::telemetry::Metrics;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
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
    #[error("{0}")]
    Thread(String),
}

/// A violation as the alert topic takes it.
pub fn encode_violation(format: &OutputFormat, v: &Violation) -> Vec<u8> {
    match format {
        OutputFormat::Json => serde_json::to_vec(v).unwrap_or_default(),
        OutputFormat::Avro { schema_id } => match (avro::encode_violation(v), avro::schemas()) {
            (Ok(datum), Ok(s)) => match schema_id {
                Some(id) => wire::confluent(*id, &datum),
                None => wire::single_object(&s.violation, &datum),
            },
            // The schemas are compiled in and tested; JSON is the fallback of last resort.
            _ => serde_json::to_vec(v).unwrap_or_default(),
        },
    }
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
    /// The policy in force, for the recipient-rate stage.
    shared_policy: SharedPolicy,
    control: Control,
    /// Partition counts, for the recipient-rate progress reports.
    topology: Topology,
    /// Per assigned partition, when a record last came (or it was assigned).
    last_record: BTreeMap<i32, Instant>,
}

/// A partition read to its end, with nothing in flight and nothing read for
/// this long, is idle: its progress report holds no candidate back.
const IDLE_AFTER: Duration = Duration::from_secs(1);

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
        let progress = Arc::new(Progress::new(Arc::clone(&metrics), &settings.topics.events));
        let sink = Sink::new(&settings, Arc::clone(&progress))?;
        let table = ConsentTable::new(engine.policy().settings.consent_history_per_user);
        metrics.set_policy(&engine.policy().version);
        let policy = PolicyFile::new(settings.policy.clone());
        let shared_policy = Arc::new(RwLock::new(Arc::clone(engine.policy())));
        let engine = engine.defer_rate();
        Ok(Pipeline {
            settings,
            progress,
            metrics,
            sink,
            engine,
            table,
            schemas,
            policy,
            shared_policy,
            control,
            topology: Topology {
                event_partitions: 1,
                rate_partitions: 1,
            },
            last_record: BTreeMap::new(),
        })
    }

    fn stopping(&self) -> bool {
        self.control.shutdown.load(Ordering::Relaxed)
    }

    /// Runs until shutdown is asked; returns after the final commit.
    pub fn run(mut self) -> Result<(), PipelineError> {
        let window = self.engine.policy().params.rate_window_millis;
        self.topology = crate::kafka::admin::ensure_rate_topic(
            &self.settings,
            window.saturating_mul(3).max(3_600_000),
        )?;
        let stage = RateStage::new(
            self.settings.clone(),
            Arc::clone(&self.shared_policy),
            Arc::clone(&self.metrics),
            self.control.clone(),
        )?;
        let stage = std::thread::Builder::new()
            .name("recipient-rate".into())
            .spawn(move || stage.run())
            .map_err(|e| PipelineError::Thread(e.to_string()))?;
        let result = self.run_events();
        // The stage stops on the same shutdown flag; a failed event loop stops it too.
        self.control.shutdown.store(true, Ordering::Relaxed);
        match stage.join() {
            Ok(r) => r?,
            Err(_) => {
                return Err(PipelineError::Thread(
                    "the recipient-rate stage panicked".into(),
                ));
            }
        }
        result
    }

    fn run_events(&mut self) -> Result<(), PipelineError> {
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

        let mut source = Source::new(
            &self.settings,
            &self.settings.topics.events,
            &self.settings.group_id,
            Arc::clone(&self.progress),
        )?;
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
                self.report_progress(&source);
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
        source.commit_watermarks(&self.progress, sync);
    }

    /// Tells the recipient-rate stage how far each partition of ours has
    /// come in event time: every event up to the reported time has its
    /// candidate acknowledged on the rate topic. A partition read to its
    /// end, with nothing in flight and nothing read for a second, is idle
    /// and holds nobody back.
    fn report_progress(&mut self, source: &Source) {
        let changes = std::mem::take(&mut self.progress.lock().rebalances);
        for (p, assigned) in changes {
            if assigned {
                self.last_record.insert(p, Instant::now());
            } else {
                self.last_record.remove(&p);
            }
        }
        let mut reports = Vec::new();
        {
            let marks = self.progress.lock();
            for (&p, last) in &self.last_record {
                let w = marks.by_partition.get(&p);
                let idle = w.is_none_or(|w| w.in_flight() == 0)
                    && !source.is_paused()
                    && last.elapsed() >= IDLE_AFTER
                    && source.at_end(p);
                let time = if idle {
                    Some(i64::MAX)
                } else {
                    w.and_then(|w| w.done_time())
                };
                if let Some(t) = time {
                    reports.push((p, t));
                }
            }
        }
        for output in recipient_rate::progress_outputs(&self.settings, self.topology, &reports) {
            self.sink.send_untracked(&output);
        }
    }

    fn update_lag(&self, source: &Source) {
        source.update_lag(&self.progress);
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
                let policy = Arc::new(loaded.policy);
                *self
                    .shared_policy
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Arc::clone(&policy);
                self.engine.set_policy(policy);
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
        self.sink.recover();
        self.sink.resend_failed();
    }

    fn send(&self, output: Output, ticket: Ticket) {
        self.sink.deliver(output, ticket);
    }

    fn encode(&self, v: &Violation) -> Vec<u8> {
        encode_violation(&self.settings.output, v)
    }

    /// Judges one record and enqueues its outputs. False when shutdown
    /// interrupted it (the record is left for the next owner).
    fn handle(&mut self, rec: Record) -> bool {
        let started = Instant::now();
        self.last_record.insert(rec.partition, started);
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
                partition: None,
            };
            (output, None)
        };
        let mut event_time = None;
        match decoded {
            Err(e) => outputs.push(dead_letter(e.class(), e.to_string())),
            Ok(event) => {
                event_time = Some(event.occurred_at.millis());
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
                                partition: None,
                            };
                            outputs.push((output, Some(v.occurred_at.millis())));
                        }
                        let outcome = if outputs.is_empty() {
                            "clean"
                        } else {
                            "violation"
                        };
                        m.events.with_label_values(&[outcome]).inc();
                        if let Some(candidate) = &verdict.rate_candidate {
                            outputs.push((
                                Output {
                                    topic: self.settings.topics.recipient_rate.clone(),
                                    key: Some(candidate.recipient_id.clone().into_bytes()),
                                    payload: recipient_rate::encode_candidate(candidate),
                                    headers: Vec::new(),
                                    partition: None,
                                },
                                None,
                            ));
                        }
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
            if let Some(last) = w.last_begun()
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
            if let Err(e) = w.begin_timed(rec.offset, outputs.len() as u32, event_time) {
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
