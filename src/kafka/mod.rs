//! Kafka: where records come from and where verdicts go. Only this module
//! knows librdkafka; the pipeline speaks of records, outputs and
//! acknowledgements.
//!
//! - [`source`]: the consumer-group member (manual offset commits of the
//!   contiguous acknowledged prefix; on revoke: drain, commit, let go).
//! - [`sink`]: the idempotent producer (`acks=all`) whose delivery reports
//!   acknowledge or fail outputs in the [`Progress`].
//! - [`consent`]: reads the compacted consent topic into the table.
//! - [`watermark`]: the per-partition commit watermark.

pub mod admin;
pub mod consent;
pub mod sink;
pub mod source;
pub mod traffic;
pub mod watermark;

use crate::config::Settings;
use crate::telemetry::Metrics;
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use watermark::Watermark;

/// A record of the event topic, owned (no librdkafka buffer is held while
/// its outputs are in flight).
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The record's own headers, carried into a dead letter.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Which record an output belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    pub partition: i32,
    pub offset: i64,
    /// For violations: when the event happened (for event-to-alert latency).
    pub occurred_at_ms: Option<i64>,
}

/// A record to produce: a violation or a dead letter.
#[derive(Debug, Clone)]
pub struct Output {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// A partition of its own choosing (else the key's).
    pub partition: Option<i32>,
}

/// An output whose delivery failed, to be sent again.
#[derive(Debug, Clone)]
pub struct Retry {
    pub ticket: Ticket,
    pub output: Output,
}

/// What the consumer thread and the producer's delivery reports share.
pub struct Progress {
    marks: Mutex<Marks>,
    changed: Condvar,
    pub metrics: Arc<Metrics>,
    /// The topic whose partitions these are (metric labels).
    pub topic: String,
}

#[derive(Default)]
pub struct Marks {
    pub by_partition: BTreeMap<i32, Watermark>,
    /// The last offset committed, per partition.
    pub committed: BTreeMap<i32, i64>,
    pub retries: Vec<Retry>,
    /// Partitions assigned (true) or revoked (false) since the owner last
    /// looked, in order; for stages that keep state per partition.
    pub rebalances: Vec<(i32, bool)>,
}

impl Marks {
    pub fn in_flight(&self) -> usize {
        self.by_partition.values().map(Watermark::in_flight).sum()
    }

    /// Partitions whose watermark passed their last commit: (partition, offset to commit).
    pub fn to_commit(&self) -> Vec<(i32, i64)> {
        self.by_partition
            .iter()
            .filter_map(|(p, w)| {
                w.commit_offset()
                    .filter(|o| self.committed.get(p).is_none_or(|c| o > c))
                    .map(|o| (*p, o))
            })
            .collect()
    }
}

impl Progress {
    pub fn new(metrics: Arc<Metrics>, topic: &str) -> Progress {
        Progress {
            marks: Mutex::new(Marks::default()),
            changed: Condvar::new(),
            metrics,
            topic: topic.to_owned(),
        }
    }

    /// Offsets the broker took as committed.
    pub fn committed(&self, offsets: &[(i32, i64)]) {
        let mut marks = self.lock();
        for &(p, o) in offsets {
            marks.committed.insert(p, o);
            self.metrics
                .committed_offset
                .with_label_values(&[&self.topic, &p.to_string()])
                .set(o);
        }
    }

    pub fn set_lag(&self, partition: i32, lag: i64) {
        self.metrics
            .lag
            .with_label_values(&[&self.topic, &partition.to_string()])
            .set(lag);
    }

    /// A partition left this replica: its series go with it.
    pub fn forget_partition(&self, partition: i32) {
        let labels = [self.topic.as_str(), &partition.to_string()];
        let _ = self.metrics.lag.remove_label_values(&labels);
        let _ = self.metrics.committed_offset.remove_label_values(&labels);
    }

    pub fn set_assigned(&self, n: usize) {
        self.metrics
            .assigned_partitions
            .with_label_values(&[&self.topic])
            .set(n as i64);
    }

    pub fn lock(&self) -> MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Waits until `done` holds or `deadline` passes; true if it holds.
    pub fn wait_until(&self, deadline: Instant, mut done: impl FnMut(&Marks) -> bool) -> bool {
        let mut marks = self.lock();
        loop {
            if done(&marks) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            marks = self
                .changed
                .wait_timeout(marks, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// A message's headers, owned (values of null headers become empty).
pub fn owned_headers<M: rdkafka::Message>(msg: &M) -> Vec<(String, Vec<u8>)> {
    use rdkafka::message::Headers;
    msg.headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `key` unless the operator's passthrough already did.
pub fn set_default(c: &mut ClientConfig, key: &str, value: &str) {
    if c.get(key).is_none() {
        c.set(key, value);
    }
}

/// The librdkafka configuration common to shareaudit's clients: the brokers,
/// then the operator's passthrough (TLS, SASL, tuning).
pub fn client_config(settings: &Settings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.brokers);
    for (k, v) in &settings.librdkafka {
        c.set(k, v);
    }
    c
}

/// An error librdkafka reported for a client as a whole (not a record's):
/// all brokers down, a connection refused, authentication. Counted and
/// logged; librdkafka reconnects by itself.
pub(crate) fn client_error(
    metrics: &crate::telemetry::Metrics,
    client: &str,
    error: &rdkafka::error::KafkaError,
    reason: &str,
) {
    metrics.kafka_errors.with_label_values(&[client]).inc();
    tracing::warn!(client, error = %error, reason, "kafka client error");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawSettings;
    use rdkafka::producer::BaseProducer;

    #[test]
    fn tls_and_sasl_settings_pass_through_to_a_librdkafka_built_with_openssl() {
        let raw = RawSettings {
            brokers: Some("127.0.0.1:9".into()),
            librdkafka: [
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", "SCRAM-SHA-512"),
                ("sasl.username", "shareaudit"),
                ("sasl.password", "secret"),
                ("ssl.endpoint.identification.algorithm", "https"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
            ..RawSettings::default()
        };
        let settings = Settings::from_raw(raw).unwrap();
        let c = client_config(&settings);
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        // Creating the client checks the properties: it fails for an SSL protocol without OpenSSL.
        let _producer: BaseProducer = c
            .create()
            .expect("librdkafka accepts TLS and SASL/SCRAM settings");
        let mut bad = client_config(&settings);
        bad.set("security.protocol", "carrier-pigeon");
        assert!(
            bad.create::<BaseProducer>().is_err(),
            "a wrong value is refused, not ignored"
        );
    }
}
