//! The producer of violations and dead letters: `acks=all`, at least once. An
//! output counts as produced only when the broker's delivery report says
//! so; a failed delivery fails the output in the watermark (which then
//! holds) and is queued to be sent again. Nothing is dropped.

use super::{Output, Progress, Retry, Ticket};
use crate::config::Settings;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The ticket partition of outputs no record waits for.
const UNTRACKED: i32 = -1;

pub struct SinkContext {
    progress: Arc<Progress>,
    /// Set when the broker fenced this producer or broke its sequence: it
    /// will refuse everything from then on, and must be replaced.
    broken: Arc<AtomicBool>,
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
                m.delivery_failures.inc();
                tracing::debug!(error = %e, topic = msg.topic(), "progress report not delivered; the next one supersedes it");
            }
            Err((e, msg)) => {
                m.delivery_failures.inc();
                tracing::warn!(error = %e, topic = msg.topic(), partition = ticket.partition, offset = ticket.offset, "delivery failed; holding the watermark and retrying");
                if let Some(w) = marks.by_partition.get_mut(&ticket.partition)
                    && w.fail(ticket.offset).is_ok()
                {
                    let headers = super::owned_headers(msg);
                    let output = Output {
                        topic: msg.topic().to_owned(),
                        key: msg.key().map(<[u8]>::to_vec),
                        payload: msg.payload().unwrap_or_default().to_vec(),
                        headers,
                        partition: None,
                    };
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
}

impl Sink {
    pub fn new(settings: &Settings, progress: Arc<Progress>) -> Result<Sink, KafkaError> {
        let mut config = super::client_config(settings);
        config.set("acks", "all");
        // Not idempotent by default: an alert written twice is harmless
        // (same alert_id), one dropped is not. Two brokers of the tests
        // (librdkafka's mock cluster and tansu 0.6) acknowledged records
        // they then did not keep, taking a restarted sequence for
        // duplicates, and tansu fenced the producer after a timeout.
        // `-X enable.idempotence=true` turns it on.
        super::set_default(&mut config, "enable.idempotence", "false");
        let broken = Arc::new(AtomicBool::new(false));
        let producer = config.create_with_context(SinkContext {
            progress: Arc::clone(&progress),
            broken: Arc::clone(&broken),
        })?;
        Ok(Sink {
            producer,
            progress,
            config,
            broken,
        })
    }

    /// An idempotent producer that hit a fatal error, or that the broker
    /// fenced or whose sequence broke, refuses everything from then on;
    /// librdkafka's answer is a new producer. The old one's queued outputs
    /// fail as purged and are retried through the new one. Checked before
    /// each round of retries.
    pub fn recover(&mut self) {
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
            self.progress.metrics.delivery_failures.inc();
            tracing::warn!(error = %e, topic = %output.topic, "enqueue refused; retrying");
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
            self.progress.metrics.delivery_failures.inc();
            tracing::warn!(error = %e, topic = %output.topic, "untracked output (progress report, checkpoint or repeated alert) not enqueued");
        }
    }

    /// Sends every failed output again.
    pub fn resend_failed(&self) {
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
    pub fn send(&self, out: &Output, ticket: Ticket) -> Result<(), KafkaError> {
        let (topic, key, payload, headers) = (
            out.topic.as_str(),
            out.key.as_deref(),
            out.payload.as_slice(),
            &out.headers,
        );
        let mut ticket = Box::new(ticket);
        loop {
            let mut h = OwnedHeaders::new_with_capacity(headers.len());
            for (k, v) in headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut record = BaseRecord::with_opaque_to(topic, ticket)
                .payload(payload)
                .headers(h);
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

    pub fn in_queue(&self) -> i32 {
        self.producer.in_flight_count()
    }
}
