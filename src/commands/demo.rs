//! `shareaudit demo`: everything on one machine with no Kafka installed. An
//! embedded cluster (librdkafka's mock cluster), a generator producing a
//! realistic stream (Avro in the Confluent framing, every recipient
//! category, consent changes, ~10% violations, a few malformed records),
//! the real daemon pipeline, /metrics, and a live summary.

use super::OK;
use crate::cli::DemoArgs;
use anyhow::Result;
use rdkafka::mocking::MockCluster;
use shareaudit::audit::Engine;
use shareaudit::codec::avro;
use shareaudit::codec::wire::LocalSchemas;
use shareaudit::config::{RawSettings, Settings};
use shareaudit::generate::{self, Options};
use shareaudit::kafka::traffic::{self, Framing, Traffic};
use shareaudit::model::Timestamp;
use shareaudit::pipeline::{Control, Pipeline};
use shareaudit::telemetry::{Metrics, http};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The demo's events are framed with this schema id, mapped locally to ours.
const SCHEMA_ID: u32 = 1;

pub fn run(args: &DemoArgs) -> Result<i32> {
    let cluster = MockCluster::new(1)?;
    let raw = RawSettings {
        brokers: Some(cluster.bootstrap_servers()),
        listen: Some(args.listen.clone()),
        policy: args.policy.clone(),
        ..RawSettings::default()
    };
    let settings = Settings::from_raw(raw).map_err(|e| anyhow::anyhow!("{e}"))?;
    for (topic, partitions) in [
        (&settings.topics.events, 6),
        (&settings.topics.consent, 3),
        (&settings.topics.violations, 3),
        (&settings.topics.dead_letters, 1),
    ] {
        cluster.create_topic(topic, partitions, 1)?;
    }
    let (loaded, _, policy_name) = super::load_policy(settings.policy.as_deref(), Timestamp::now())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let metrics = Arc::new(Metrics::new()?);
    let control = Control::default();
    super::run::signals(&control)?;
    let server = http::Server::start(
        &settings.listen,
        Arc::clone(&metrics),
        Arc::clone(&control.ready),
    )?;

    // The generator: the users' consent states, then a stream with poison, and consent withdrawals as it goes.
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
    let gen_stop = Arc::clone(&control.shutdown);
    let (events_topic, consent_topic, rate) = (
        settings.topics.events.clone(),
        settings.topics.consent.clone(),
        args.rate,
    );
    let generator = std::thread::Builder::new()
        .name("generator".into())
        .spawn(move || {
            let states = generate::consent_states(&o);
            let mut batch = 0u64;
            while !gen_stop.load(Ordering::Relaxed) {
                let opts = Options {
                    seed: o.seed.wrapping_add(batch),
                    start: Timestamp::now(),
                    ..o.clone()
                };
                let stream = generate::events(&opts, rate.max(1) as usize);
                let poison = traffic::poison(3, opts.seed, Framing::Confluent(SCHEMA_ID));
                if traffic
                    .events(
                        &events_topic,
                        &stream,
                        &poison,
                        Framing::Confluent(SCHEMA_ID),
                        rate,
                        &gen_stop,
                    )
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
        })?;

    let mut schemas = LocalSchemas::ours()?;
    schemas.add_id(SCHEMA_ID, Arc::new(avro::schemas()?.event.clone()));
    let key: [u8; 32] = rand::random();
    let engine = Engine::new(Arc::new(loaded.policy), &key);
    let pipeline = Pipeline::new(
        settings,
        engine,
        Box::new(schemas),
        Arc::clone(&metrics),
        control.clone(),
    )?;
    let daemon = std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || pipeline.run())?;

    println!(
        "shareaudit demo: embedded Kafka at {}, policy {policy_name}",
        cluster.bootstrap_servers()
    );
    println!(
        "metrics at http://{}/metrics, health at /healthz and /readyz; Ctrl-C to stop\n",
        server.addr
    );
    let started = Instant::now();
    let mut last = (Instant::now(), 0.0);
    while !control.shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        let events = metrics.sum("shareaudit_events_total", None);
        let rate_now = ((events - last.1) / last.0.elapsed().as_secs_f64()).max(0.0);
        last = (Instant::now(), events);
        print_summary(
            &metrics,
            started.elapsed(),
            rate_now,
            produced.events.load(Ordering::Relaxed),
        );
        if args
            .duration
            .is_some_and(|d| started.elapsed() >= Duration::from_secs(d))
        {
            control.shutdown.store(true, Ordering::Relaxed);
        }
    }
    let _ = generator.join();
    match daemon.join() {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("the pipeline thread panicked"),
    }
    println!("\nstopped: drained and committed.");
    print_summary(
        &metrics,
        started.elapsed(),
        0.0,
        produced.events.load(Ordering::Relaxed),
    );
    Ok(OK)
}

fn print_summary(m: &Metrics, elapsed: Duration, rate: f64, produced: u64) {
    let n = |name: &str, label: Option<(&str, &str)>| m.sum(name, label) as u64;
    println!(
        "[{:>5.0}s] {:>7.0} events/s | produced {produced} | judged {} (clean {}, with violations {}) | dead letters {} | in flight {} | lag {}",
        elapsed.as_secs_f64(),
        rate,
        n("shareaudit_events_total", None),
        n("shareaudit_events_total", Some(("outcome", "clean"))),
        n("shareaudit_events_total", Some(("outcome", "violation"))),
        n("shareaudit_dead_letters_total", None),
        n("shareaudit_in_flight_records", None),
        n("shareaudit_consumer_lag_messages", None),
    );
    let sev: Vec<String> = ["critical", "high", "medium", "low"]
        .iter()
        .map(|s| {
            format!(
                "{s} {}",
                n("shareaudit_violations_total", Some(("severity", s)))
            )
        })
        .collect();
    let mut rules: Vec<(u64, &str)> = shareaudit::model::RuleId::ALL
        .iter()
        .map(|r| {
            (
                n("shareaudit_violations_total", Some(("rule", r.as_str()))),
                r.as_str(),
            )
        })
        .filter(|(c, _)| *c > 0)
        .collect();
    rules.sort_unstable_by(|a, b| b.cmp(a));
    let top: Vec<String> = rules
        .iter()
        .take(5)
        .map(|(c, r)| format!("{r} {c}"))
        .collect();
    println!(
        "         violations: {} | top rules: {}",
        sev.join(", "),
        top.join(", ")
    );
}
