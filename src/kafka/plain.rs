//! A plain producer for generated traffic (the demo, `shareaudit generate
//! --brokers`, the tests): idempotent, `acks=all`, waits while librdkafka's
//! queue is full, and counts the records the broker did not acknowledge.

use crate::config::Settings;
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counts deliveries the broker did not acknowledge: generated traffic
/// that silently failed to arrive would make every later check meaningless.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "generated record not delivered");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlainError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(
        "{0} generated records were not delivered (does the topic exist? see the warnings above)"
    )]
    Undelivered(u64),
}

pub struct PlainProducer {
    producer: ThreadedProducer<Deliveries>,
}

impl PlainProducer {
    pub fn new(settings: &Settings) -> Result<PlainProducer, KafkaError> {
        let mut c = super::producer_config(settings);
        c.set("enable.idempotence", "true").set("acks", "all");
        super::set_default(&mut c, "linger.ms", "5");
        Ok(PlainProducer {
            producer: c.create_with_context(Deliveries::default())?,
        })
    }

    /// Enqueues a record (`payload` `None`: a tombstone).
    pub fn send(&self, topic: &str, key: &str, payload: Option<&[u8]>) -> Result<(), KafkaError> {
        loop {
            let mut r = BaseRecord::to(topic).key(key);
            if let Some(p) = payload {
                r = r.payload(p);
            }
            match self.producer.send::<str, [u8]>(r) {
                Ok(()) => return Ok(()),
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    _,
                )) => std::thread::sleep(Duration::from_millis(5)),
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits for every record's delivery report; an error if any failed.
    pub fn flush(&self, timeout: Duration) -> Result<(), PlainError> {
        self.producer.flush(timeout)?;
        match self.producer.context().failed.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(PlainError::Undelivered(n)),
        }
    }
}
