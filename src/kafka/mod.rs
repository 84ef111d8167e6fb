//! Kafka: where records come from and where verdicts go. Only this module
//! knows librdkafka; the daemon speaks of records, outputs and
//! acknowledgements.
//!
//! - [`source`]: the consumer-group member, a `StreamConsumer` on tokio
//!   (manual commits of the contiguous acknowledged prefix; on revoke:
//!   drain, commit, let go).
//! - `sink`: the producer (`acks=all`) whose delivery reports acknowledge
//!   or fail outputs in the [`Progress`].
//! - `consent`: reads the compacted consent topic.
//! - `restore`: reads one partition from its start to its end (the rate
//!   stage's windows).
//! - [`scan`]: reads what a topic logged since a time, outside any group
//!   (`shareaudit report`).
//! - `admin`: creates the recipient-rate topic.
//! - `embedded`: librdkafka's mock cluster, the demo's Kafka.
//! - `plain`: a producer of generated traffic (the demo, `generate --brokers`).
//! - [`watermark`]: the per-partition commit watermark.

pub(crate) mod admin;
pub(crate) mod consent;
pub(crate) mod embedded;
pub(crate) mod plain;
pub(crate) mod restore;
pub mod scan;
pub(crate) mod sink;
pub mod source;
pub mod watermark;

use crate::config::Settings;
use crate::telemetry::Metrics;
use rdkafka::ClientConfig;
/// librdkafka's error, the one Kafka type the rest of the crate names.
pub use rdkafka::error::KafkaError;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use watermark::{Watermark, WatermarkError};

/// A record of a topic, owned (no librdkafka buffer is held while its
/// outputs are in flight).
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The record's own headers, carried into a dead letter. A name that is
    /// not UTF-8 keeps its valid parts, its other bytes written `\xNN`.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Its timestamp in the log (create or log-append time, in ms): the same
    /// for every reader, every time it is read.
    pub timestamp: Option<i64>,
}

/// Which record an output belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    pub partition: i32,
    pub offset: i64,
    /// For violations: when the event happened (for event-to-alert latency).
    pub occurred_at_ms: Option<i64>,
}

/// A record to produce: a violation, a dead letter, a candidate, a report.
#[derive(Debug, Clone)]
pub struct Output {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// A partition of its own choosing (else the key's).
    pub partition: Option<i32>,
}

/// The headers every dead letter carries after the record's own: where it
/// came from and why (`message` names fields and types, never values).
pub const DLQ_HEADERS: [&str; 5] = [
    "shareaudit.source.topic",
    "shareaudit.source.partition",
    "shareaudit.source.offset",
    CLASS_HEADER,
    "shareaudit.error.message",
];
/// The header every dead letter carries (its class): what marks an output as one.
pub const CLASS_HEADER: &str = "shareaudit.error.class";
/// Headers that say a dead letter's payload was cut to fit the topic.
pub const TRUNCATED_HEADER: &str = "shareaudit.payload.truncated";
pub const SIZE_HEADER: &str = "shareaudit.payload.size";
pub const SHA256_HEADER: &str = "shareaudit.payload.sha256";
/// Set when the record's own headers did not fit beside ours: how many were left out.
pub const HEADERS_DROPPED_HEADER: &str = "shareaudit.headers.dropped";
/// Set when the record's key did not fit: its size (the key is left out).
pub const KEY_DROPPED_HEADER: &str = "shareaudit.key.dropped";

/// What a record costs beside its key, value and headers (record and batch
/// framing), with room to spare.
pub(crate) const RECORD_OVERHEAD: usize = 1024;
/// Room kept for the headers `fitted` may add.
const FIT_HEADERS: usize = 192;

impl Output {
    /// A dead letter of `rec` for `topic`: its key, payload and headers
    /// unchanged, then `DLQ_HEADERS`; cut to fit `max_bytes` (`fitted`).
    pub fn dead_letter(
        topic: &str,
        rec: Record,
        class: &str,
        message: String,
        max_bytes: usize,
    ) -> Output {
        let mut headers = rec.headers;
        let values = [
            rec.topic,
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
        Output {
            topic: topic.to_owned(),
            key: rec.key,
            payload: rec.payload.unwrap_or_default(),
            headers,
            partition: None,
        }
        .fitted(max_bytes)
    }

    /// Bytes of its headers.
    fn header_bytes(&self) -> usize {
        self.headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum()
    }

    /// Bytes of its key, payload and headers.
    pub fn size(&self) -> usize {
        self.payload.len() + self.key.as_ref().map_or(0, Vec::len) + self.header_bytes()
    }

    /// Whether it is a dead letter (only dead letters may be cut).
    pub fn is_dead_letter(&self) -> bool {
        self.headers.iter().any(|(k, _)| k == CLASS_HEADER)
    }

    /// The output cut to fit `max_bytes` (the producer's `message.max.bytes`,
    /// or less): its payload keeps what fits, and headers say that it was
    /// cut, from what size, and the SHA-256 of the whole. When the record's
    /// own headers, then its key, leave no room for ours, they are left out
    /// and a header says so. Unchanged when it fits.
    pub fn fitted(mut self, max_bytes: usize) -> Output {
        let budget = max_bytes.saturating_sub(RECORD_OVERHEAD);
        if self.size() <= budget {
            return self;
        }
        let fixed =
            |o: &Output| o.header_bytes() + o.key.as_ref().map_or(0, Vec::len) + FIT_HEADERS;
        if fixed(&self) > budget {
            let before = self.headers.len();
            self.headers.retain(|(k, _)| k.starts_with("shareaudit."));
            let dropped = before - self.headers.len();
            if dropped > 0 {
                self.headers.push((
                    HEADERS_DROPPED_HEADER.to_owned(),
                    dropped.to_string().into_bytes(),
                ));
            }
        }
        if fixed(&self) > budget
            && let Some(key) = self.key.take()
        {
            self.headers.push((
                KEY_DROPPED_HEADER.to_owned(),
                key.len().to_string().into_bytes(),
            ));
        }
        // Cut again (the broker refused the first cut): the headers keep the original.
        if !self.payload.is_empty() && !self.headers.iter().any(|(k, _)| k == TRUNCATED_HEADER) {
            use sha2::{Digest, Sha256};
            let size = self.payload.len().to_string().into_bytes();
            let digest = crate::model::hex(&Sha256::digest(&self.payload)).into_bytes();
            self.headers.extend([
                (TRUNCATED_HEADER.to_owned(), b"true".to_vec()),
                (SIZE_HEADER.to_owned(), size),
                (SHA256_HEADER.to_owned(), digest),
            ]);
        }
        let room =
            budget.saturating_sub(self.header_bytes() + self.key.as_ref().map_or(0, Vec::len));
        self.payload.truncate(room);
        self
    }
}

/// An output whose delivery failed, to be sent again.
#[derive(Debug, Clone)]
struct Retry {
    ticket: Ticket,
    output: Output,
}

/// What a stage's task, the consumer's rebalance callbacks and the
/// producer's delivery reports share: the watermarks of one topic's
/// partitions. Only `kafka` changes them; a stage asks through methods.
pub struct Progress {
    marks: Mutex<Marks>,
    /// For the rebalance callback, which waits synchronously.
    changed: Condvar,
    /// How many wait on `changed`: std's `notify_all` is a futex syscall
    /// even with no one waiting, and `notify` runs for every record and
    /// delivery report (4% of a replica's CPU in scripts/profile-daemon.sh).
    waiting: std::sync::atomic::AtomicUsize,
    /// For the stage's task, which waits on the runtime.
    notify: tokio::sync::Notify,
    /// Set when `Marks::rebalances` has something: the stage's hot path
    /// looks here before it takes the lock.
    rebalanced: std::sync::atomic::AtomicBool,
    pub metrics: Arc<Metrics>,
    /// The topic whose partitions these are (metric labels).
    pub topic: String,
}

#[derive(Default)]
pub struct Marks {
    by_partition: BTreeMap<i32, Watermark>,
    /// The last offset committed, per partition.
    committed: BTreeMap<i32, i64>,
    retries: Vec<Retry>,
    /// Partitions assigned (true) or revoked (false) since the owner last
    /// looked, in order; for stages that keep state per partition.
    rebalances: Vec<(i32, bool)>,
}

impl Marks {
    /// Records read whose outputs are not all acknowledged.
    pub fn in_flight(&self) -> usize {
        self.by_partition.values().map(Watermark::in_flight).sum()
    }

    /// Every output sent is acknowledged, on every partition (held records aside).
    pub fn drained(&self) -> bool {
        self.by_partition.values().all(Watermark::is_drained)
    }

    /// Every output sent for `partition` is acknowledged.
    pub fn partition_drained(&self, partition: i32) -> bool {
        self.by_partition
            .get(&partition)
            .is_none_or(Watermark::is_drained)
    }

    /// Records of `partition` in flight.
    pub fn partition_in_flight(&self, partition: i32) -> usize {
        self.by_partition
            .get(&partition)
            .map_or(0, Watermark::in_flight)
    }

    /// The latest event time behind `partition`'s watermark.
    pub fn done_time(&self, partition: i32) -> Option<i64> {
        self.by_partition
            .get(&partition)
            .and_then(Watermark::done_time)
    }

    /// The offset below which every record of `partition` read in this
    /// assignment has all its outputs acknowledged (the next to commit).
    pub fn done_through(&self, partition: i32) -> Option<i64> {
        self.by_partition
            .get(&partition)
            .and_then(Watermark::commit_offset)
    }

    /// Whether anything of `partition` was read in this assignment.
    pub fn knows(&self, partition: i32) -> bool {
        self.by_partition.contains_key(&partition)
    }

    /// The last offset begun on `partition`.
    pub fn last_begun(&self, partition: i32) -> Option<i64> {
        self.by_partition
            .get(&partition)
            .and_then(Watermark::last_begun)
    }

    /// A record was read and produces `outputs` outputs (`Watermark::begin_timed`).
    pub fn begin(
        &mut self,
        partition: i32,
        offset: i64,
        outputs: u32,
        time: Option<i64>,
    ) -> Result<(), WatermarkError> {
        self.by_partition
            .entry(partition)
            .or_default()
            .begin_timed(offset, outputs, time)
    }

    /// A record was read whose outputs are decided later (`Watermark::begin_held`).
    pub fn begin_held(&mut self, partition: i32, offset: i64) -> Result<(), WatermarkError> {
        self.by_partition
            .entry(partition)
            .or_default()
            .begin_held(offset)
    }

    /// A held record was decided (`Watermark::release`). `Ok(false)`: the
    /// partition was revoked meanwhile (the next owner judges it again).
    pub fn release(
        &mut self,
        partition: i32,
        offset: i64,
        outputs: u32,
    ) -> Result<bool, WatermarkError> {
        match self.by_partition.get_mut(&partition) {
            Some(w) => w.release(offset, outputs).map(|()| true),
            None => Ok(false),
        }
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

    /// The last commit of each partition.
    pub fn committed(&self) -> &BTreeMap<i32, i64> {
        &self.committed
    }

    /// A partition left: its watermark, commit and failed outputs go (the
    /// next owner reads those records again). The caller records the revoke.
    fn forget(&mut self, partition: i32) {
        self.by_partition.remove(&partition);
        self.committed.remove(&partition);
        self.retries.retain(|r| r.ticket.partition != partition);
    }
}

impl Progress {
    pub fn new(metrics: Arc<Metrics>, topic: &str) -> Progress {
        Progress {
            marks: Mutex::new(Marks::default()),
            changed: Condvar::new(),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            notify: tokio::sync::Notify::new(),
            rebalanced: std::sync::atomic::AtomicBool::new(false),
            metrics,
            topic: topic.to_owned(),
        }
    }

    /// Offsets the broker took as committed.
    fn committed(&self, offsets: &[(i32, i64)]) {
        let mut marks = self.lock();
        for &(p, o) in offsets {
            marks.committed.insert(p, o);
            self.metrics
                .committed_offset
                .with_label_values(&[&self.topic, &p.to_string()])
                .set(o);
        }
    }

    fn set_lag(&self, partition: i32, lag: i64) {
        self.metrics
            .lag
            .with_label_values(&[&self.topic, &partition.to_string()])
            .set(lag);
    }

    /// A partition left this replica: its series go with it.
    fn forget_partition(&self, partition: i32) {
        let labels = [self.topic.as_str(), &partition.to_string()];
        let _ = self.metrics.lag.remove_label_values(&labels);
        let _ = self.metrics.committed_offset.remove_label_values(&labels);
    }

    fn set_assigned(&self, n: usize) {
        self.metrics
            .assigned_partitions
            .with_label_values(&[&self.topic])
            .set(n as i64);
    }

    /// Partitions assigned (true) or revoked (false) since the last call, in order.
    pub fn take_rebalances(&self) -> Vec<(i32, bool)> {
        use std::sync::atomic::Ordering;
        if !self.rebalanced.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut self.lock().rebalances)
    }

    /// Records partitions assigned or revoked, for `take_rebalances`.
    fn rebalance(&self, marks: &mut Marks, partitions: impl IntoIterator<Item = (i32, bool)>) {
        marks.rebalances.extend(partitions);
        self.rebalanced
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn lock(&self) -> MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes whoever waits for the marks to change.
    pub fn notify(&self) {
        // A waiter counts itself under the lock before it sleeps, and whoever
        // changed the marks did so under the lock: the count seen here is
        // not stale for any waiter that could have missed the change.
        if self.waiting.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            self.changed.notify_all();
        }
        self.notify.notify_waiters();
    }

    /// Waits (blocking the thread) until `done` holds or `deadline` passes;
    /// true if it holds. For the rebalance callback.
    fn wait_until(&self, deadline: Instant, mut done: impl FnMut(&Marks) -> bool) -> bool {
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
            self.waiting
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            marks = self
                .changed
                .wait_timeout(marks, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
            self.waiting
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Waits on the runtime until `done` holds or `deadline` passes; true if it holds.
    pub async fn settled(
        &self,
        deadline: tokio::time::Instant,
        mut done: impl FnMut(&Marks) -> bool,
    ) -> bool {
        loop {
            let notified = self.notify.notified();
            if done(&self.lock()) {
                return true;
            }
            // Delivery reports notify; a short tick covers a missed wake-up.
            let tick = (tokio::time::Instant::now() + Duration::from_millis(50)).min(deadline);
            let _ = tokio::time::timeout_at(tick, notified).await;
            if tokio::time::Instant::now() >= deadline {
                return done(&self.lock());
            }
        }
    }
}

/// A message's headers, owned (values of null headers become empty).
/// Read through librdkafka's C API: rdkafka's own accessor panics on a
/// header name that is not UTF-8, and any producer can write one. Such a
/// name keeps its valid parts, its other bytes written `\xNN`.
pub(crate) fn headers(msg: &rdkafka::message::BorrowedMessage<'_>) -> Vec<(String, Vec<u8>)> {
    use rdkafka::bindings as rd;
    use std::ffi::CStr;
    let mut hdrs: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `msg.ptr()` is a live message for the borrow; its headers
    // belong to it and are only read here, within that borrow.
    let err = unsafe { rd::rd_kafka_message_headers(msg.ptr(), &mut hdrs) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
        return Vec::new();
    }
    let n = unsafe { rd::rd_kafka_header_cnt(hdrs) };
    let mut out = Vec::with_capacity(n);
    for idx in 0..n {
        let mut name = std::ptr::null();
        let mut value = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: `idx` < count; the pointers stay valid while `msg` is borrowed.
        let err =
            unsafe { rd::rd_kafka_header_get_all(hdrs, idx, &mut name, &mut value, &mut size) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            continue;
        }
        let name = unsafe { CStr::from_ptr(name) }.to_bytes();
        let value = if value.is_null() {
            Vec::new()
        } else {
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec()
        };
        out.push((escape_name(name), value));
    }
    out
}

/// The end of `partition` as of the client's last fetch from it
/// (librdkafka's cached high watermark: no request is made).
pub(crate) fn cached_end<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    use rdkafka::bindings as rd;
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: a live client, a NUL-terminated topic name, two out-parameters.
    let err = unsafe {
        rd::rd_kafka_get_watermark_offsets(
            client.native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// A header name as text: valid UTF-8 as it is, other bytes as `\xNN`.
pub fn escape_name(name: &[u8]) -> String {
    let mut s = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// Sets `key` unless the operator's passthrough already did.
/// The offsets of `topic` in a list the broker answered, partition by
/// partition, leaving out those it answered with an error or no offset.
fn offsets<'a>(
    tpl: &'a rdkafka::TopicPartitionList,
    topic: &'a str,
) -> impl Iterator<Item = (i32, i64)> + 'a {
    tpl.elements_for_topic(topic)
        .into_iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) if e.error().is_ok() => Some((e.partition(), o)),
            _ => None,
        })
}

pub fn set_default(c: &mut ClientConfig, key: &str, value: &str) {
    if c.get(key).is_none() {
        c.set(key, value);
    }
}

/// The librdkafka configuration common to shareaudit's clients: the
/// brokers, then the operator's passthrough (TLS, SASL, tuning) meant for
/// both kinds of client (keys without a `consumer.` or `producer.` prefix).
pub fn client_config(settings: &Settings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.brokers);
    for (k, v) in &settings.librdkafka {
        if !k.starts_with(CONSUMER) && !k.starts_with(PRODUCER) {
            c.set(k, v);
        }
    }
    c
}

const CONSUMER: &str = "consumer.";
const PRODUCER: &str = "producer.";

fn with_prefixed(settings: &Settings, prefix: &str) -> ClientConfig {
    let mut c = client_config(settings);
    for (k, v) in &settings.librdkafka {
        if let Some(k) = k.strip_prefix(prefix) {
            c.set(k, v);
        }
    }
    c
}

/// A consumer's configuration: `client_config`, then the passthrough keys
/// prefixed `consumer.` (`-X consumer.fetch.wait.max.ms=10`), unprefixed.
pub fn consumer_config(settings: &Settings) -> ClientConfig {
    with_prefixed(settings, CONSUMER)
}

/// A producer's configuration: `client_config`, then the keys prefixed `producer.`.
pub fn producer_config(settings: &Settings) -> ClientConfig {
    with_prefixed(settings, PRODUCER)
}

/// Whether librdkafka takes the settings' properties: a consumer and a
/// producer are made (which opens no connection) and dropped.
pub fn check_properties(settings: &Settings) -> Result<(), KafkaError> {
    consumer_config(settings).create::<rdkafka::consumer::BaseConsumer>()?;
    producer_config(settings).create::<rdkafka::producer::BaseProducer>()?;
    Ok(())
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

    #[test]
    fn prefixed_properties_reach_one_kind_of_client_only() {
        let raw = RawSettings {
            brokers: Some("127.0.0.1:9".into()),
            librdkafka: [
                ("client.id", "both"),
                ("consumer.fetch.wait.max.ms", "10"),
                ("producer.linger.ms", "7"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
            ..RawSettings::default()
        };
        let settings = Settings::from_raw(raw).unwrap();
        let (c, p) = (consumer_config(&settings), producer_config(&settings));
        assert_eq!(c.get("client.id"), Some("both"));
        assert_eq!(p.get("client.id"), Some("both"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(p.get("fetch.wait.max.ms"), None);
        assert_eq!(p.get("linger.ms"), Some("7"));
        assert_eq!(c.get("linger.ms"), None);
        assert_eq!(
            c.get("consumer.fetch.wait.max.ms"),
            None,
            "the prefix is gone"
        );
        // Each client takes its own: librdkafka would refuse a property it does not know.
        c.create::<rdkafka::consumer::BaseConsumer>().unwrap();
        p.create::<BaseProducer>().unwrap();
    }

    fn record(key: usize, headers: usize, payload: usize) -> Record {
        Record {
            topic: "events".into(),
            partition: 1,
            offset: 9,
            key: Some(vec![b'k'; key]),
            payload: Some(vec![b'p'; payload]),
            headers: (0..headers)
                .map(|i| (format!("h{i}"), vec![b'v'; 1_000]))
                .collect(),
            timestamp: None,
        }
    }

    fn has(o: &Output, name: &str) -> Option<String> {
        o.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    #[test]
    fn a_dead_letter_that_fits_is_the_record_unchanged_with_its_provenance() {
        let o = Output::dead_letter("dlq", record(3, 2, 100), "avro", "m".into(), 1_000_000);
        assert_eq!(o.payload.len(), 100);
        assert_eq!(o.key.as_deref(), Some(&b"kkk"[..]));
        assert_eq!(o.headers.len(), 2 + DLQ_HEADERS.len());
        assert_eq!(has(&o, "shareaudit.source.offset").as_deref(), Some("9"));
        assert_eq!(has(&o, TRUNCATED_HEADER), None);
    }

    #[test]
    fn a_dead_letter_always_fits_cutting_payload_then_own_headers_then_key() {
        let max = 20_000;
        // Payload too large: cut, with size and digest.
        let o = Output::dead_letter("dlq", record(3, 2, 50_000), "avro", "m".into(), max);
        assert!(o.size() + RECORD_OVERHEAD <= max, "{}", o.size());
        assert_eq!(has(&o, SIZE_HEADER).as_deref(), Some("50000"));
        assert_eq!(
            o.headers.len(),
            2 + DLQ_HEADERS.len() + 3,
            "the record's own headers stay"
        );
        // The record's own headers alone are too large: left out, and counted.
        let o = Output::dead_letter("dlq", record(3, 40, 500), "avro", "m".into(), max);
        assert!(o.size() + RECORD_OVERHEAD <= max, "{}", o.size());
        assert_eq!(has(&o, HEADERS_DROPPED_HEADER).as_deref(), Some("40"));
        assert_eq!(has(&o, "shareaudit.error.class").as_deref(), Some("avro"));
        assert_eq!(has(&o, SIZE_HEADER).as_deref(), Some("500"));
        // And the key: left out, its size said.
        let o = Output::dead_letter("dlq", record(30_000, 1, 10), "avro", "m".into(), max);
        assert!(o.size() + RECORD_OVERHEAD <= max, "{}", o.size());
        assert_eq!(o.key, None);
        assert_eq!(has(&o, KEY_DROPPED_HEADER).as_deref(), Some("30000"));
        // Halving as a broker refuses again and again ends with our headers alone.
        let mut o = Output::dead_letter(
            "dlq",
            record(30_000, 40, 90_000),
            "avro",
            "m".into(),
            1 << 20,
        );
        for _ in 0..40 {
            o = o.clone().fitted(o.size() / 2 + RECORD_OVERHEAD);
        }
        assert!(o.size() < 1_000, "{}", o.size());
        assert_eq!(has(&o, "shareaudit.source.partition").as_deref(), Some("1"));
    }

    #[test]
    fn header_names_that_are_not_utf8_keep_their_bytes_escaped() {
        assert_eq!(escape_name(b"trace-id"), "trace-id");
        assert_eq!(escape_name(b"\xff\xfeid"), "\\xff\\xfeid");
        assert_eq!(escape_name("名前".as_bytes()), "名前");
    }
}
