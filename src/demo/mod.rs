//! The demo and its traffic: everything `shareaudit demo` runs on one
//! machine with no Kafka installed, and the generated traffic the tests
//! and `shareaudit generate` use.
//!
//! - [`generate`]: seeded synthetic events and consent states that know
//!   which rules they should trip;
//! - [`traffic`]: that traffic produced to a cluster, poison included;
//! - [`Demo`]: an embedded cluster (librdkafka's mock cluster), a generator
//!   thread producing Avro in the Confluent framing with consent changes as
//!   it goes, and the real daemon with `/metrics`.

pub mod generate;
pub mod traffic;

use crate::audit::Engine;
use crate::codec::avro;
use crate::codec::wire::LocalSchemas;
use crate::config::{RawSettings, Settings};
use crate::daemon::{Daemon, DaemonError, Handle, Schemas};
use crate::kafka::embedded::Embedded;
use crate::model::Timestamp;
use crate::policy::Policy;
use crate::telemetry::{Metrics, http};
use generate::Options;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use traffic::{Framing, Produced, Traffic};

/// The demo's events are framed with this schema id, mapped locally to ours.
pub const SCHEMA_ID: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("embedded Kafka: {0}")]
    Kafka(#[from] crate::kafka::KafkaError),
    #[error("{0}")]
    Settings(#[from] crate::config::ConfigError),
    #[error("schemas: {0}")]
    Schemas(#[from] crate::codec::DecodeError),
    #[error("generated traffic: {0}")]
    Traffic(#[from] traffic::TrafficError),
    #[error("cannot listen on {listen}: {error}")]
    Listen {
        listen: String,
        error: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// A running demo.
pub struct Demo {
    pub brokers: String,
    pub metrics_addr: std::net::SocketAddr,
    pub metrics: Arc<Metrics>,
    pub produced: Arc<Produced>,
    daemon: Handle,
    generator: Option<JoinHandle<()>>,
    stop_generator: Arc<AtomicBool>,
    _cluster: Embedded,
}

impl Demo {
    /// Starts the cluster, the generator (`rate` events per second) and the
    /// daemon with `policy`, serving `/metrics` on `listen`.
    pub fn start(
        listen: &str,
        policy_file: Option<std::path::PathBuf>,
        policy: Policy,
        rate: u64,
    ) -> Result<Demo, DemoError> {
        let cluster = Embedded::new()?;
        let settings = Settings::from_raw(RawSettings {
            brokers: Some(cluster.bootstrap_servers()),
            listen: Some(listen.to_owned()),
            policy: policy_file,
            ..RawSettings::default()
        })?;
        for (topic, partitions) in [
            (&settings.topics.events, 6),
            (&settings.topics.consent, 3),
            (&settings.topics.violations, 3),
            (&settings.topics.dead_letters, 1),
        ] {
            cluster.create_topic(topic, partitions)?;
        }
        let metrics = Arc::new(Metrics::new().map_err(std::io::Error::other)?);
        let listener = http::bind(&settings.listen).map_err(|error| DemoError::Listen {
            listen: settings.listen.clone(),
            error,
        })?;
        let metrics_addr = listener.local_addr()?;

        // The users' consent states first, then the stream.
        let o = Options {
            seed: rand::random(),
            users: 5000,
            violation_share: 0.10,
            start: Timestamp::now(),
            spacing_millis: 1,
        };
        let traffic = Traffic::new(&settings)?;
        traffic.consent_states(&settings.topics.consent, &o)?;
        traffic.flush(Duration::from_secs(10))?;
        let produced = Arc::clone(&traffic.produced);
        let stop_generator = Arc::new(AtomicBool::new(false));
        let generator = generator(traffic, &settings, o, rate, Arc::clone(&stop_generator))?;

        let mut schemas = LocalSchemas::ours()?;
        schemas.add_id(SCHEMA_ID, Arc::new(avro::schemas()?.event.clone()));
        let key: [u8; 32] = rand::random();
        let engine = Engine::new(Arc::new(policy), &key);
        let brokers = settings.brokers.clone();
        let daemon = Daemon::new(
            settings,
            engine,
            Schemas::local(schemas),
            Arc::clone(&metrics),
        )
        .with_http(listener)
        .with_signals()
        .spawn()?;
        Ok(Demo {
            brokers,
            metrics_addr,
            metrics,
            produced,
            daemon,
            generator: Some(generator),
            stop_generator,
            _cluster: cluster,
        })
    }

    /// Whether the daemon stopped by itself (it failed).
    pub fn is_finished(&self) -> bool {
        self.daemon.is_finished()
    }

    /// Stops the generator, then the daemon (drained and committed).
    pub fn stop(mut self) -> Result<(), DemoError> {
        self.stop_generator.store(true, Ordering::Relaxed);
        if let Some(g) = self.generator.take() {
            let _ = g.join();
        }
        let Demo { daemon, .. } = self;
        Ok(daemon.join()?)
    }
}

/// Batches of `rate` live events a second with a few poison records, and
/// a consent withdrawal after each batch, until `stop`.
fn generator(
    traffic: Traffic,
    settings: &Settings,
    o: Options,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    let (events_topic, consent_topic) = (
        settings.topics.events.clone(),
        settings.topics.consent.clone(),
    );
    std::thread::Builder::new()
        .name("generator".into())
        .spawn(move || {
            let states = generate::consent_states(&o);
            let mut batch = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let opts = Options {
                    seed: o.seed.wrapping_add(batch),
                    start: Timestamp::now(),
                    ..o.clone()
                };
                let stream = generate::events(&opts, rate.max(1) as usize);
                let poison = traffic::poison(3, opts.seed, Framing::Confluent(SCHEMA_ID));
                let framing = Framing::Confluent(SCHEMA_ID);
                if traffic
                    .events(&events_topic, &stream, &poison, framing, rate, &stop)
                    .is_err()
                {
                    break;
                }
                // A user changes their mind now and then: the daemon must notice.
                let _ = traffic.withdraw(
                    &consent_topic,
                    states[(batch as usize * 7919) % states.len()].clone(),
                );
                batch += 1;
            }
            let _ = traffic.flush(Duration::from_secs(5));
        })
}
