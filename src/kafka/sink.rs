//! The producer of violations and dead letters: `acks=all`, at least once. An
//! output counts as produced only when the broker's delivery report says
//! so; a failed delivery fails the output in the watermark (which then
//! holds) and is queued to be sent again: as it is when the failure is
//! transient, as a dead letter when the broker refused it for good.
//! Nothing is dropped.

use super::{Output, Progress, RECORD_OVERHEAD, Retry, Ticket};
use crate::config::Settings;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The ticket partition of outputs no record waits for.
const UNTRACKED: i32 = -1;

pub struct SinkContext {
    progress: Arc<Progress>,
    /// Set when the broker fenced this producer or broke its sequence: it
    /// will refuse everything from then on, and must be replaced.
    broken: Arc<AtomicBool>,
    /// Outputs the broker acknowledged, for the retry backoff.
    delivered: Arc<AtomicU64>,
    /// Failed deliveries, logged a line at a time (an outage fails thousands).
    failures: Arc<Mutex<Throttle>>,
    /// Where an output refused for good goes, and the size it must fit.
    dead_letters: String,
    max_message_bytes: usize,
}

/// One log line for a flood of the same failure: the first at once, then at
/// most one per `EVERY`, carrying how many were held back since the last.
/// Every failure is still counted in the metrics.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub const EVERY: Duration = Duration::from_secs(10);

    /// `Some(held back since the last line)` when a line is due at `now`.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Throttle::EVERY)
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

fn log_due(throttle: &Mutex<Throttle>) -> Option<u64> {
    throttle
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .due(Instant::now())
}

/// Delivery errors after which an idempotent producer is of no more use.
fn breaks_the_producer(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::InvalidProducerIdMapping
        )
    )
}

/// Whether a failed delivery can succeed by itself later (`transient`: the
/// broker down or slow, a queue full, a leader moving) or not as it is
/// (`permanent`: too large, not authorised, refused as invalid). The class
/// is a metric label, so that an alert and a person can tell an outage from
/// a record that will never pass; `SinkContext::after_failure` acts on it.
pub fn failure_class(e: &KafkaError) -> &'static str {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::UnsupportedVersion,
        ) => "permanent",
        _ => "transient",
    }
}

/// The dead-letter class of an output the broker refused for good.
pub const DELIVERY_REFUSED: &str = "delivery_refused";

impl SinkContext {
    /// What goes out again after a failed delivery of `output` for the
    /// record of `ticket`. A transient failure: the output as it is. A
    /// dead letter too large for the broker: cut to half its size (the
    /// headers keep the original's size and SHA-256). Any other output the
    /// broker refuses for good (too large, not authorised, invalid): a dead
    /// letter of class `delivery_refused` at once, carrying that output (a
    /// violation, free of personal values) and the record's provenance, so
    /// that its partition moves on instead of holding for ever.
    fn after_failure(&self, e: &KafkaError, ticket: &Ticket, output: Output) -> Output {
        if failure_class(e) != "permanent" {
            return output;
        }
        if output.is_dead_letter() {
            if matches!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::MessageSizeTooLarge)
            ) {
                tracing::warn!(topic = %output.topic, size = output.size(), "dead letter too large for the broker; cutting it to half");
                let half = output.size() / 2 + RECORD_OVERHEAD;
                return output.fitted(half);
            }
            // The dead-letter topic itself refuses: nothing else can hold
            // the record; its partition holds and the alert on commits pages.
            return output;
        }
        tracing::error!(error = %e, topic = %output.topic, partition = ticket.partition, offset = ticket.offset, "output refused for good; sending it to the dead-letter topic");
        self.progress
            .metrics
            .dead_letters
            .with_label_values(&[DELIVERY_REFUSED])
            .inc();
        let message = format!(
            "the broker refused this output for topic {} for good: {}",
            output.topic,
            e.rdkafka_error_code()
                .map_or_else(|| e.to_string(), |c| format!("{c:?}"))
        );
        let rec = super::Record {
            topic: self.progress.topic.clone(),
            partition: ticket.partition,
            offset: ticket.offset,
            key: output.key,
            payload: Some(output.payload),
            headers: output.headers,
            timestamp: None,
        };
        Output::dead_letter(
            &self.dead_letters,
            rec,
            DELIVERY_REFUSED,
            message,
            self.max_message_bytes,
        )
    }
}

impl ClientContext for SinkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        super::client_error(&self.progress.metrics, "producer", &error, reason);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Ticket>;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: Box<Ticket>) {
        let m = &self.progress.metrics;
        if let Err((e, _)) = result
            && breaks_the_producer(e)
            && !self.broken.swap(true, Ordering::Relaxed)
        {
            tracing::error!(error = %e, "the broker refuses this producer from now on; it will be replaced");
        }
        let mut marks = self.progress.lock();
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(w) = marks.by_partition.get_mut(&ticket.partition) {
                    let _ = w.ack(ticket.offset);
                }
                if let Some(at) = ticket.occurred_at_ms {
                    let now = crate::model::Timestamp::now().millis();
                    m.event_to_alert_seconds
                        .observe(((now - at).max(0) as f64) / 1000.0);
                }
            }
            Err((e, msg)) if ticket.partition == UNTRACKED => {
                m.delivery_failures
                    .with_label_values(&[failure_class(e)])
                    .inc();
                tracing::debug!(error = %e, topic = msg.topic(), "progress report not delivered; the next one supersedes it");
            }
            Err((e, msg)) => {
                m.delivery_failures
                    .with_label_values(&[failure_class(e)])
                    .inc();
                if let Some(held_back) = log_due(&self.failures) {
                    tracing::warn!(error = %e, topic = msg.topic(), partition = ticket.partition, offset = ticket.offset, held_back, "delivery failed; holding the watermark and retrying");
                }
                if let Some(w) = marks.by_partition.get_mut(&ticket.partition)
                    && w.fail(ticket.offset).is_ok()
                {
                    let headers = super::headers(msg);
                    let output = Output {
                        topic: msg.topic().to_owned(),
                        key: msg.key().map(<[u8]>::to_vec),
                        payload: msg.payload().unwrap_or_default().to_vec(),
                        headers,
                        partition: None,
                    };
                    let output = self.after_failure(e, &ticket, output);
                    marks.retries.push(Retry {
                        ticket: *ticket,
                        output,
                    });
                }
            }
        }
        drop(marks);
        self.progress.notify();
    }
}

pub struct Sink {
    producer: ThreadedProducer<SinkContext>,
    progress: Arc<Progress>,
    config: rdkafka::ClientConfig,
    broken: Arc<AtomicBool>,
    delivered: Arc<AtomicU64>,
    backoff: Mutex<Backoff>,
    failures: Arc<Mutex<Throttle>>,
}

/// When failed outputs go out again: at once after a success, then
/// after a delay that doubles while nothing gets through (200 ms up to
/// 5 s), so that a broker that refuses everything is not hammered and a
/// backlog of retries cannot outrun its message timeout.
#[derive(Debug)]
pub struct Backoff {
    delay: Duration,
    next: Option<Instant>,
    delivered: u64,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(200);
    pub const MOST: Duration = Duration::from_secs(5);

    pub fn new() -> Backoff {
        Backoff {
            delay: Backoff::FIRST,
            next: None,
            delivered: 0,
        }
    }

    /// Whether a round of retries is due at `now`, given how many outputs
    /// the broker acknowledged so far; if so, when the next one will be.
    pub fn due(&mut self, now: Instant, delivered: u64) -> bool {
        if self.next.is_some_and(|next| now < next) {
            return false;
        }
        if delivered != self.delivered {
            self.delay = Backoff::FIRST;
            self.delivered = delivered;
        } else if self.next.is_some() {
            self.delay = (self.delay * 2).min(Backoff::MOST);
        }
        self.next = Some(now + self.delay);
        true
    }

    /// Nothing waits for a retry: the next failure is retried at once.
    pub fn clear(&mut self) {
        self.delay = Backoff::FIRST;
        self.next = None;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

impl Sink {
    pub fn new(settings: &Settings, progress: Arc<Progress>) -> Result<Sink, KafkaError> {
        let mut config = super::producer_config(settings);
        config.set("acks", "all");
        // Not idempotent by default: an alert written twice is harmless
        // (same alert_id), one dropped is not. Two brokers of the tests
        // (librdkafka's mock cluster and tansu 0.6) acknowledged records
        // they then did not keep, taking a restarted sequence for
        // duplicates, and tansu fenced the producer after a timeout.
        // `-X enable.idempotence=true` turns it on.
        super::set_default(&mut config, "enable.idempotence", "false");
        let broken = Arc::new(AtomicBool::new(false));
        let delivered = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Throttle::default()));
        let producer = config.create_with_context(SinkContext {
            progress: Arc::clone(&progress),
            broken: Arc::clone(&broken),
            delivered: Arc::clone(&delivered),
            failures: Arc::clone(&failures),
            dead_letters: settings.topics.dead_letters.clone(),
            max_message_bytes: settings.max_message_bytes,
        })?;
        Ok(Sink {
            producer,
            progress,
            config,
            broken,
            delivered,
            backoff: Mutex::new(Backoff::new()),
            failures,
        })
    }

    /// The round of repairs a stage runs now and then: a broken producer
    /// replaced (`recover`), then failed outputs sent again when the backoff
    /// says so (`resend_failed`).
    pub fn retry(&mut self) {
        self.recover();
        self.resend_failed();
    }

    /// An idempotent producer that hit a fatal error, or that the broker
    /// fenced or whose sequence broke, refuses everything from then on;
    /// librdkafka's answer is a new producer. The old one's queued outputs
    /// fail as purged and are retried through the new one. Checked before
    /// each round of retries.
    fn recover(&mut self) {
        let fatal = self.producer.client().fatal_error();
        if fatal.is_none() && !self.broken.load(Ordering::Relaxed) {
            return;
        }
        tracing::error!(fatal = ?fatal, "replacing the producer (failed outputs are sent again)");
        // A flag of its own: the old producer's late refusals must not condemn the new one.
        let broken = Arc::new(AtomicBool::new(false));
        match self.config.create_with_context(SinkContext {
            progress: Arc::clone(&self.progress),
            broken: Arc::clone(&broken),
            delivered: Arc::clone(&self.delivered),
            failures: Arc::clone(&self.failures),
            dead_letters: self.producer.context().dead_letters.clone(),
            max_message_bytes: self.producer.context().max_message_bytes,
        }) {
            // Dropping the old producer purges its queue: each output fails and is queued for a retry.
            Ok(fresh) => {
                self.broken = broken;
                drop(std::mem::replace(&mut self.producer, fresh));
            }
            Err(e) => tracing::error!(error = %e, "cannot create a new producer; trying again"),
        }
    }

    /// Enqueues an output for the record of `ticket`; a refusal fails it in
    /// the watermark and queues it for `resend_failed`.
    pub fn deliver(&self, output: Output, ticket: Ticket) {
        if let Err(e) = self.send(&output, ticket) {
            self.progress
                .metrics
                .delivery_failures
                .with_label_values(&[failure_class(&e)])
                .inc();
            if let Some(held_back) = log_due(&self.failures) {
                tracing::warn!(error = %e, topic = %output.topic, held_back, "enqueue refused; retrying");
            }
            let output = self.producer.context().after_failure(&e, &ticket, output);
            let mut marks = self.progress.lock();
            if let Some(w) = marks.by_partition.get_mut(&ticket.partition) {
                let _ = w.fail(ticket.offset);
            }
            marks.retries.push(Retry { ticket, output });
        }
    }

    /// Enqueues an output no record waits for (a progress report): a
    /// refusal or a failed delivery is counted and logged, and the next
    /// report supersedes it.
    pub fn send_untracked(&self, output: &Output) {
        let ticket = Ticket {
            partition: UNTRACKED,
            offset: -1,
            occurred_at_ms: None,
        };
        if let Err(e) = self.send(output, ticket) {
            self.progress
                .metrics
                .delivery_failures
                .with_label_values(&[failure_class(&e)])
                .inc();
            tracing::warn!(error = %e, topic = %output.topic, "untracked output (progress report, checkpoint or repeated alert) not enqueued");
        }
    }

    /// Sends every failed output again, when the backoff says so.
    fn resend_failed(&self) {
        {
            let mut backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
            if self.progress.lock().retries.is_empty() {
                backoff.clear();
                return;
            }
            if !backoff.due(Instant::now(), self.delivered.load(Ordering::Relaxed)) {
                return;
            }
        }
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
            self.deliver(r.output, r.ticket);
        }
    }

    /// Enqueues one output; waits while librdkafka's queue is full (that is
    /// the backpressure of a slow alert topic). Other enqueue errors are
    /// returned: the caller fails the output and retries it.
    fn send(&self, out: &Output, ticket: Ticket) -> Result<(), KafkaError> {
        let (topic, key, payload, headers) = (
            out.topic.as_str(),
            out.key.as_deref(),
            out.payload.as_slice(),
            &out.headers,
        );
        let mut ticket = Box::new(ticket);
        loop {
            let mut record = BaseRecord::with_opaque_to(topic, ticket).payload(payload);
            // Most outputs (alerts, candidates) have none: librdkafka is then
            // spared a header list to allocate and free for each.
            if !headers.is_empty() {
                let mut h = OwnedHeaders::new_with_capacity(headers.len());
                for (k, v) in headers {
                    h = h.insert(Header {
                        key: k,
                        value: Some(v),
                    });
                }
                record = record.headers(h);
            }
            if let Some(p) = out.partition {
                record = record.partition(p);
            }
            if let Some(k) = key {
                record = record.key(k);
            }
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    ticket = r.delivery_opaque;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits for everything enqueued to be delivered (or `timeout`).
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_failures_is_one_line_per_ten_seconds_with_the_count_held_back() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut t = Throttle::default();
        assert_eq!(t.due(t0), Some(0), "the first failure is logged at once");
        assert_eq!(t.due(s(1)), None);
        assert_eq!(t.due(s(9)), None);
        assert_eq!(
            t.due(s(10)),
            Some(2),
            "ten seconds on: one line, two held back"
        );
        assert_eq!(t.due(s(11)), None);
        assert_eq!(t.due(s(60)), Some(1));
        assert_eq!(
            t.due(s(120)),
            Some(0),
            "a lone failure later is logged as it comes"
        );
    }

    #[test]
    fn retries_back_off_while_nothing_gets_through_and_start_over_after_a_success() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut b = Backoff::new();
        assert!(b.due(ms(0), 0), "the first round goes at once");
        assert!(!b.due(ms(100), 0));
        assert!(b.due(ms(200), 0), "200 ms later");
        assert!(!b.due(ms(500), 0), "then 400 ms");
        assert!(b.due(ms(600), 0));
        let mut at = 600;
        for _ in 0..10 {
            at += 5_000;
            assert!(b.due(ms(at), 0));
        }
        assert!(!b.due(ms(at + 4_999), 0), "never more than 5 s apart");
        assert!(b.due(ms(at + 5_000), 0));
        // A delivery got through: the next round comes 200 ms after this one.
        assert!(b.due(ms(at + 10_000), 1));
        assert!(b.due(ms(at + 10_200), 1));
        // Nothing waits any more: a new failure is retried at once.
        b.clear();
        assert!(b.due(ms(at + 10_250), 1));
    }

    fn context() -> SinkContext {
        let metrics = Arc::new(crate::telemetry::Metrics::new().unwrap());
        SinkContext {
            progress: Arc::new(Progress::new(metrics, "events")),
            broken: Arc::default(),
            delivered: Arc::default(),
            failures: Arc::default(),
            dead_letters: "dlq".into(),
            max_message_bytes: 1_000_000,
        }
    }

    fn header<'a>(o: &'a Output, name: &str) -> Option<&'a [u8]> {
        o.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    const TICKET: Ticket = Ticket {
        partition: 2,
        offset: 41,
        occurred_at_ms: None,
    };

    #[test]
    fn a_dead_letter_the_broker_finds_too_large_is_halved_keeping_the_original_digest() {
        let sink = context();
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        let dead = Output {
            topic: "dlq".into(),
            key: None,
            payload: vec![7; 10_000],
            headers: vec![(super::super::CLASS_HEADER.to_owned(), b"avro".to_vec())],
            partition: None,
        };
        let once = sink.after_failure(&too_large, &TICKET, dead);
        assert!(once.size() < 5_100, "{}", once.size());
        let digest = header(&once, super::super::SHA256_HEADER).map(<[u8]>::to_vec);
        let twice = sink.after_failure(&too_large, &TICKET, once);
        assert!(twice.size() < 2_600, "{}", twice.size());
        assert_eq!(
            header(&twice, super::super::SHA256_HEADER).map(<[u8]>::to_vec),
            digest,
            "the original's digest and size stay"
        );
        let sizes = twice
            .headers
            .iter()
            .filter(|(k, _)| k == super::super::SIZE_HEADER)
            .count();
        assert_eq!(sizes, 1);
        // A transient failure changes nothing.
        let queue_full = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        assert_eq!(
            sink.after_failure(&queue_full, &TICKET, twice.clone())
                .size(),
            twice.size()
        );
    }

    #[test]
    fn an_output_refused_for_good_becomes_a_dead_letter_with_its_provenance() {
        let sink = context();
        let alert = Output {
            topic: "violations".into(),
            key: Some(b"sf-express".to_vec()),
            payload: b"{\"rule_id\":\"x\"}".to_vec(),
            headers: vec![],
            partition: None,
        };
        let queue_full = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        let same = sink.after_failure(&queue_full, &TICKET, alert.clone());
        assert_eq!(
            (same.topic.as_str(), same.headers.len()),
            ("violations", 0),
            "a transient failure: retried as it is"
        );
        for code in [
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidRecord,
        ] {
            let dead =
                sink.after_failure(&KafkaError::MessageProduction(code), &TICKET, alert.clone());
            assert_eq!(dead.topic, "dlq");
            assert_eq!(dead.payload, alert.payload, "the output itself");
            assert_eq!(dead.key, alert.key);
            assert_eq!(
                header(&dead, "shareaudit.error.class"),
                Some(&b"delivery_refused"[..])
            );
            assert_eq!(
                header(&dead, "shareaudit.source.topic"),
                Some(&b"events"[..])
            );
            assert_eq!(
                header(&dead, "shareaudit.source.partition"),
                Some(&b"2"[..])
            );
            assert_eq!(header(&dead, "shareaudit.source.offset"), Some(&b"41"[..]));
            let message =
                String::from_utf8(header(&dead, "shareaudit.error.message").unwrap().to_vec())
                    .unwrap();
            assert!(
                message.contains("violations") && message.contains(&format!("{code:?}")),
                "{message}"
            );
        }
        assert_eq!(
            sink.progress
                .metrics
                .dead_letters
                .with_label_values(&[DELIVERY_REFUSED])
                .get(),
            3
        );
    }

    #[test]
    fn failures_are_classed_transient_or_permanent() {
        let class = |c| failure_class(&KafkaError::MessageProduction(c));
        assert_eq!(class(RDKafkaErrorCode::MessageSizeTooLarge), "permanent");
        assert_eq!(
            class(RDKafkaErrorCode::TopicAuthorizationFailed),
            "permanent"
        );
        assert_eq!(class(RDKafkaErrorCode::MessageTimedOut), "transient");
        assert_eq!(class(RDKafkaErrorCode::QueueFull), "transient");
        assert_eq!(class(RDKafkaErrorCode::NotEnoughReplicas), "transient");
        assert_eq!(class(RDKafkaErrorCode::AllBrokersDown), "transient");
    }
}
