//! Kafka: where records come from and where verdicts go. Only this module
//! will know librdkafka; for now it holds the broker-independent parts the
//! daemon is built on.

pub mod watermark;
