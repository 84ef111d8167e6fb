//! The daemon (`shareaudit run`, the demo): tasks on one tokio runtime,
//! stopped by one cancellation token and all joined before it returns.
//!
//! | task | file |
//! |---|---|
//! | the event stage: events judged, alerts and dead letters out, progress reported | `events` |
//! | the rate stage: the cluster-wide `volume.recipient_rate` | `rate`, its pure ordering logic in `ordering` |
//! | the loop and the drain both stages run on | `stage` |
//! | verdict -> outputs, once for both | `outputs` |
//! | the consent topic into the table | `consent` |
//! | the policy file watched and reloaded | `reload` |
//! | signals: SIGTERM/SIGINT stop, SIGHUP reloads | [`signals`] |
//! | `/metrics`, `/healthz`, `/readyz` | `telemetry::http` |
//! | writer schemas fetched from the registry | spawned by the event stage and the consent task |
//!
//! The engine stays synchronous and pure: the stages call it. Shutdown has
//! the shape of mini-redis's: the token is cancelled (a signal, or a task
//! that failed), each task finishes what it must (the stages drain within
//! the deadline and commit), and `run` returns once every task is joined.

mod consent;
mod events;
mod ordering;
mod outputs;
mod rate;
mod reload;
mod stage;

/// For `benches/audit.rs`: the rate stage's read of a candidate record.
pub use ordering::Candidate;

use crate::audit::Engine;
use crate::codec::registry::Registry;
use crate::codec::wire::{LocalSchemas, SchemaLookup};
use crate::config::Settings;
use crate::consent::ConsentTable;
use crate::kafka::Progress;
use crate::kafka::admin::{self, Topology};
use crate::kafka::consent::{ConsentReader, ConsentSync};
use crate::kafka::sink::Sink;
use crate::kafka::source::Source;
use crate::policy::Policy;
use crate::telemetry::{Metrics, http};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The consent table, written by the consent task, read by the event stage.
pub type SharedTable = Arc<RwLock<ConsentTable>>;

/// Where writer schemas come from: what is known without asking, and the
/// registry to ask (if any).
#[derive(Clone)]
pub struct Schemas {
    pub lookup: Arc<dyn SchemaLookup + Send + Sync>,
    pub registry: Option<Arc<Registry>>,
}

impl Schemas {
    pub fn local(local: LocalSchemas) -> Schemas {
        Schemas {
            lookup: Arc::new(local),
            registry: None,
        }
    }

    pub fn registry(registry: Registry) -> Schemas {
        let registry = Arc::new(registry);
        Schemas {
            lookup: Arc::clone(&registry) as Arc<dyn SchemaLookup + Send + Sync>,
            registry: Some(registry),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("Kafka: {0}")]
    Kafka(#[from] crate::kafka::KafkaError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a task of the daemon failed: {0}")]
    Task(String),
}

/// The daemon, ready to run.
pub struct Daemon {
    settings: Arc<Settings>,
    engine: Engine,
    schemas: Schemas,
    metrics: Arc<Metrics>,
    http: Option<std::net::TcpListener>,
    signals: bool,
    reload: Arc<Notify>,
}

impl Daemon {
    pub fn new(
        settings: Settings,
        engine: Engine,
        schemas: Schemas,
        metrics: Arc<Metrics>,
    ) -> Daemon {
        Daemon {
            settings: Arc::new(settings),
            engine,
            schemas,
            metrics,
            http: None,
            signals: false,
            reload: Arc::new(Notify::new()),
        }
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `listener` while it runs.
    pub fn with_http(mut self, listener: std::net::TcpListener) -> Daemon {
        self.http = Some(listener);
        self
    }

    /// Stops on SIGTERM and SIGINT, reloads the policy on SIGHUP.
    pub fn with_signals(mut self) -> Daemon {
        self.signals = true;
        self
    }

    /// Notified, the policy file is read again (SIGHUP does it in `run`).
    pub fn reloader(&self) -> Arc<Notify> {
        Arc::clone(&self.reload)
    }

    /// Runs every task until `stop` is cancelled (or one of them fails),
    /// then waits for all of them: the stages drain and commit first.
    pub async fn run(self, stop: CancellationToken) -> Result<(), DaemonError> {
        let Daemon {
            settings,
            engine,
            schemas,
            metrics,
            http,
            signals: with_signals,
            reload,
        } = self;
        // One token for every task: cancelled from outside, or by a task that failed.
        let stop = stop.child_token();
        let mut tasks = JoinSet::new();
        if let Some(listener) = http {
            let server = http::Server::new(listener, Arc::clone(&metrics))?;
            tasks.spawn(server.run(stop.clone()));
        }
        if with_signals {
            let (stop, reload) = (stop.clone(), Arc::clone(&reload));
            tasks.spawn(async move { Ok(signals(stop, reload).await?) });
        }
        let policy = Arc::clone(engine.policy());
        metrics.set_policy(&policy);
        let (policy_tx, policy_rx) = watch::channel(policy);
        let watch = reload::run(
            settings.policy.clone(),
            settings.policy_poll,
            policy_tx,
            Arc::clone(&metrics),
            reload,
            stop.clone(),
        );
        tasks.spawn(async move {
            watch.await;
            Ok(())
        });
        let setup = async {
            let window = engine.policy().params.rate_window_millis;
            let topology =
                admin::ensure_rate_topic(&settings, window.saturating_mul(3).max(3_600_000))
                    .await?;
            let s = Arc::clone(&settings);
            let reader = tokio::task::spawn_blocking(move || ConsentReader::new(&s))
                .await
                .map_err(|e| DaemonError::Task(e.to_string()))??;
            Ok::<_, DaemonError>((topology, reader))
        };
        let result = match setup.await {
            Ok((topology, reader)) => {
                for (topic, n) in [
                    (&settings.topics.events, topology.event_partitions),
                    (&settings.topics.recipient_rate, topology.rate_partitions),
                ] {
                    metrics
                        .topic_partitions
                        .with_label_values(&[topic.as_str()])
                        .set(n as i64);
                }
                let table: SharedTable = Arc::new(RwLock::new(ConsentTable::for_policy(
                    &engine.policy().settings,
                )));
                let (loaded_tx, loaded_rx) = watch::channel(false);
                let consent_sync = reader.sync();
                let reader = consent::run(
                    reader,
                    Arc::clone(&table),
                    schemas.clone(),
                    Arc::clone(&metrics),
                    loaded_tx,
                    stop.clone(),
                );
                tasks.spawn(async move {
                    reader.await;
                    Ok(())
                });
                let rate = RateStart {
                    settings: Arc::clone(&settings),
                    metrics: Arc::clone(&metrics),
                    policy: policy_rx.clone(),
                };
                let events = EventStart {
                    settings: Arc::clone(&settings),
                    metrics: Arc::clone(&metrics),
                    engine,
                    table,
                    schemas,
                    policy: policy_rx,
                    topology,
                    loaded: loaded_rx,
                    consent_sync,
                };
                let (s1, s2) = (stop.clone(), stop.clone());
                tasks.spawn(async move { guard(rate.run(s1.clone()).await, &s1) });
                tasks.spawn(async move { guard(events.run(s2.clone()).await, &s2) });
                Ok(())
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            stop.cancel();
        }
        let mut failure = result.err();
        while let Some(joined) = tasks.join_next().await {
            let outcome = match joined {
                Ok(r) => r,
                Err(e) => Err(DaemonError::Task(e.to_string())),
            };
            if let Err(e) = outcome {
                tracing::error!(error = %e, "a task of the daemon failed; stopping");
                stop.cancel();
                failure.get_or_insert(e);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Runs the daemon on a runtime of its own, on a thread of its own: for
    /// the demo and the tests, which live outside a runtime.
    pub fn spawn(self) -> std::io::Result<Handle> {
        let stop = CancellationToken::new();
        let reload = self.reloader();
        let token = stop.clone();
        let runtime = runtime()?;
        let thread = std::thread::Builder::new()
            .name("shareaudit-daemon".into())
            .spawn(move || runtime.block_on(self.run(token)))?;
        Ok(Handle {
            stop,
            reload,
            thread: Some(thread),
        })
    }
}

/// The daemon's runtime: a worker per core, at least two (a stage blocked
/// in a rebalance callback must not starve the others).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("shareaudit")
        .enable_all()
        .build()
}

/// A failed stage stops the others.
fn guard(r: Result<(), DaemonError>, stop: &CancellationToken) -> Result<(), DaemonError> {
    if r.is_err() {
        stop.cancel();
    }
    r
}

/// A daemon running on its own thread.
pub struct Handle {
    stop: CancellationToken,
    reload: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<Result<(), DaemonError>>>,
}

impl Handle {
    /// Asks it to stop (drain, commit, leave), as SIGTERM does.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Asks it to read the policy file again, as SIGHUP does.
    pub fn reload(&self) {
        self.reload.notify_one();
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops it and waits for it to finish.
    pub fn join(mut self) -> Result<(), DaemonError> {
        self.stop();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(DaemonError::Task("the daemon's thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SIGTERM and SIGINT cancel `stop`; SIGHUP notifies `reload`. Ends with `stop`.
pub async fn signals(stop: CancellationToken, reload: Arc<Notify>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); stop.cancel(); }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); stop.cancel(); }
            _ = hup.recv() => { tracing::info!("SIGHUP: reloading the policy"); reload.notify_one(); }
        }
    }
}

/// What the rate stage starts from.
struct RateStart {
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    policy: watch::Receiver<Arc<Policy>>,
}

impl RateStart {
    async fn run(self, stop: CancellationToken) -> Result<(), DaemonError> {
        let topic = &self.settings.topics.recipient_rate;
        let io = stage_io(
            &self.settings,
            &self.metrics,
            topic,
            &self.settings.rate_group_id(),
        )?;
        let stage = rate::RateStage {
            policy: self.policy,
            partitions: BTreeMap::new(),
        };
        let (_wake, wakes) = mpsc::unbounded_channel();
        stage::run(io, stage, wakes, stop).await;
        Ok(())
    }
}

/// What the event stage starts from.
struct EventStart {
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    engine: Engine,
    table: SharedTable,
    schemas: Schemas,
    policy: watch::Receiver<Arc<Policy>>,
    topology: Topology,
    loaded: watch::Receiver<bool>,
    consent_sync: Arc<ConsentSync>,
}

impl EventStart {
    async fn run(mut self, stop: CancellationToken) -> Result<(), DaemonError> {
        // No event is judged before the consent table is loaded.
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = self.loaded.wait_for(|l| *l) => if r.is_err() { return Ok(()) },
        }
        let s = &self.settings;
        let io = stage_io(s, &self.metrics, &s.topics.events, &s.group_id)?;
        self.metrics.ready.set(1);
        let (wake, wakes) = mpsc::unbounded_channel();
        let stage = events::EventStage {
            engine: self.engine.defer_rate(),
            table: self.table,
            schemas: self.schemas,
            policy: self.policy,
            topology: self.topology,
            assigned: BTreeSet::new(),
            epoch: 0,
            probe: None,
            probe_failures: 0,
            waiting: BTreeMap::new(),
            fetching: BTreeMap::new(),
            consent: self.consent_sync,
            consent_held: BTreeMap::new(),
            paused: BTreeSet::new(),
            event: crate::model::DataSharingEvent::empty(),
            wake,
            fetches: JoinSet::new(),
            stop: stop.clone(),
        };
        stage::run(io, stage, wakes, stop).await;
        Ok(())
    }
}

fn stage_io(
    settings: &Arc<Settings>,
    metrics: &Arc<Metrics>,
    topic: &str,
    group: &str,
) -> Result<stage::StageIo, DaemonError> {
    let progress = Arc::new(Progress::new(Arc::clone(metrics), topic));
    Ok(stage::StageIo {
        source: Source::new(settings, topic, group, Arc::clone(&progress))?,
        sink: Sink::new(settings, Arc::clone(&progress))?,
        settings: Arc::clone(settings),
        metrics: Arc::clone(metrics),
        progress,
    })
}
