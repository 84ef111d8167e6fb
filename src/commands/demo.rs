//! `shareaudit demo`: everything on one machine with no Kafka installed. An
//! embedded cluster (librdkafka's mock cluster), a generator producing a
//! realistic stream (Avro in the Confluent framing, every recipient
//! category, consent changes, ~10% violations, a few malformed records),
//! the real daemon pipeline, /metrics, and a live summary.

use super::OK;
use crate::cli::DemoArgs;
use anyhow::Result;
use shareaudit::demo::Demo;
use shareaudit::model::Timestamp;
use shareaudit::telemetry::Metrics;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub fn run(args: &DemoArgs) -> Result<i32> {
    let (loaded, _, policy_name) = super::load_policy(args.policy.as_deref(), Timestamp::now())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let demo = Demo::start(&args.listen, args.policy.clone(), loaded.policy, args.rate)?;
    let (metrics, produced) = (
        std::sync::Arc::clone(&demo.metrics),
        std::sync::Arc::clone(&demo.produced),
    );
    println!(
        "shareaudit demo: embedded Kafka at {}, policy {policy_name}",
        demo.brokers
    );
    println!(
        "metrics at http://{}/metrics, health at /healthz and /readyz; Ctrl-C to stop\n",
        demo.metrics_addr
    );
    let started = Instant::now();
    let mut last = (Instant::now(), 0.0);
    // Ctrl-C (SIGINT) or SIGTERM stops the daemon, which drains and commits.
    while !demo.is_finished() {
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
            break;
        }
    }
    demo.stop()?;
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
