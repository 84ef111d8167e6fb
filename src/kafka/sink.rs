//! The producer of violations and dead letters: idempotent, `acks=all`. An
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
use std::time::Duration;

/// The ticket partition of outputs no record waits for.
const UNTRACKED: i32 = -1;

pub struct SinkContext {
    progress: Arc<Progress>,
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Ticket>;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: Box<Ticket>) {
        let m = &self.progress.metrics;
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
}

impl Sink {
    pub fn new(settings: &Settings, progress: Arc<Progress>) -> Result<Sink, KafkaError> {
        let mut c = super::client_config(settings);
        c.set("enable.idempotence", "true").set("acks", "all");
        let producer = c.create_with_context(SinkContext {
            progress: Arc::clone(&progress),
        })?;
        Ok(Sink { producer, progress })
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
            tracing::warn!(error = %e, topic = %output.topic, "progress report not enqueued");
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
