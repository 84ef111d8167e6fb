//! Produces generated traffic to a cluster: consent states, then events at
//! a rate, with poison records mixed in. For `shareaudit generate --brokers`,
//! the demo and the end-to-end tests.

use super::generate::{self, Generated, Options};
use crate::codec::{avro, wire};
use crate::config::Settings;
use crate::kafka::KafkaError;
pub use crate::kafka::plain::PlainError as TrafficError;
use crate::kafka::plain::PlainProducer;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How events are framed on the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Confluent wire format with this schema id (the daemon must know it).
    Confluent(u32),
    SingleObject,
    Json,
}

/// A poison record: bytes, and the dead-letter class the daemon must give it.
pub struct Poison {
    pub key: String,
    pub payload: Vec<u8>,
    pub class: &'static str,
}

/// `n` poison records cycling through: random bytes, a wrong magic byte, an
/// unknown schema id, and a schema-valid but semantically invalid event.
pub fn poison(n: usize, seed: u64, framing: Framing) -> Vec<Poison> {
    let valid = generate::events(
        &Options {
            seed,
            ..Options::default()
        },
        1,
    )
    .remove(0)
    .event;
    (0..n)
        .map(|i| {
            let key = format!("poison-{seed}-{i}");
            match i % 4 {
                0 => Poison {
                    key,
                    payload: (0..37)
                        .map(|b| (b * 97 + i * 13 + 7) as u8 | 0x80)
                        .collect(),
                    class: "framing",
                },
                1 => Poison {
                    key,
                    payload: [&[7u8, 0, 0, 0, 1][..], b"not avro"].concat(),
                    class: "framing",
                },
                2 => Poison {
                    key,
                    payload: wire::confluent(999_999, b"\x02xx"),
                    class: "unknown_schema",
                },
                _ => {
                    let mut bad = valid.clone();
                    bad.record_count = 0;
                    Poison {
                        key,
                        payload: encode(&bad, framing),
                        class: "invalid",
                    }
                }
            }
        })
        .collect()
}

pub fn encode(e: &crate::model::DataSharingEvent, framing: Framing) -> Vec<u8> {
    match (framing, avro::encode_event(e), avro::schemas()) {
        (Framing::Json, ..) | (_, Err(_), _) | (_, _, Err(_)) => {
            serde_json::to_vec(e).unwrap_or_default()
        }
        (Framing::Confluent(id), Ok(d), _) => wire::confluent(id, &d),
        (Framing::SingleObject, Ok(d), Ok(s)) => wire::single_object(&s.event, &d),
    }
}

/// Counts what was produced, for summaries.
#[derive(Default)]
pub struct Produced {
    pub events: AtomicU64,
    pub poison: AtomicU64,
    pub consent: AtomicU64,
}

pub struct Traffic {
    producer: PlainProducer,
    pub produced: Arc<Produced>,
}

impl Traffic {
    pub fn new(settings: &Settings) -> Result<Traffic, KafkaError> {
        Ok(Traffic {
            producer: PlainProducer::new(settings)?,
            produced: Arc::new(Produced::default()),
        })
    }

    fn send(&self, topic: &str, key: &str, payload: Option<&[u8]>) -> Result<(), KafkaError> {
        self.producer.send(topic, key, payload)
    }

    /// The pool's consent states, as JSON (compacted topic, key = user id).
    pub fn consent_states(&self, topic: &str, o: &Options) -> Result<(), KafkaError> {
        for s in generate::consent_states(o) {
            let bytes = serde_json::to_vec(&s).unwrap_or_default();
            self.send(topic, &s.user_id, Some(&bytes))?;
            self.produced.consent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Events at `rate` per second (0: as fast as possible), poison records
    /// spread among them, until done or `stop`. Returns what was sent. At a
    /// set rate the events are live: `occurred_at` is when each is sent.
    pub fn events(
        &self,
        topic: &str,
        stream: &[Generated],
        poison: &[Poison],
        framing: Framing,
        rate: u64,
        stop: &AtomicBool,
    ) -> Result<usize, KafkaError> {
        let started = Instant::now();
        let every = if poison.is_empty() {
            usize::MAX
        } else {
            (stream.len() / poison.len()).max(1)
        };
        let mut poison = poison.iter();
        for (i, g) in stream.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                return Ok(i);
            }
            let payload = if rate > 0 {
                // Live traffic: the event happens as it is sent, so that
                // event-to-alert latency means what it says.
                let mut live = g.event.clone();
                live.occurred_at = crate::model::Timestamp::now();
                encode(&live, framing)
            } else {
                encode(&g.event, framing)
            };
            self.send(topic, &g.event.subject.user_id, Some(&payload))?;
            self.produced.events.fetch_add(1, Ordering::Relaxed);
            if i % every == every - 1
                && let Some(p) = poison.next()
            {
                self.send(topic, &p.key, Some(&p.payload))?;
                self.produced.poison.fetch_add(1, Ordering::Relaxed);
            }
            if rate > 0 {
                let due = started + Duration::from_secs_f64((i + 1) as f64 / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        }
        for p in poison {
            self.send(topic, &p.key, Some(&p.payload))?;
            self.produced.poison.fetch_add(1, Ordering::Relaxed);
        }
        Ok(stream.len())
    }

    /// Withdraws all consent for `user` (a newer state on the compacted topic).
    pub fn withdraw(
        &self,
        topic: &str,
        mut state: crate::model::ConsentState,
    ) -> Result<(), KafkaError> {
        state.updated_at = crate::model::Timestamp::now();
        state.consent_withdrawn = true;
        let bytes = serde_json::to_vec(&state).unwrap_or_default();
        self.send(topic, &state.user_id.clone(), Some(&bytes))
    }

    /// A tombstone (null value) for `user`: the compacted topic forgets them.
    pub fn tombstone(&self, topic: &str, user: &str) -> Result<(), KafkaError> {
        self.send(topic, user, None)
    }

    /// Waits for every record's delivery report; an error if any failed.
    pub fn flush(&self, timeout: Duration) -> Result<(), TrafficError> {
        self.producer.flush(timeout)
    }
}
