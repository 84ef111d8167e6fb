//! Verdict -> outputs, once for both stages: the violations a verdict
//! enforces become records for the alert topic (keyed by recipient), with
//! their event times for the latency histogram; shadow violations and
//! suppressions are counted, not sent. A record that cannot be judged
//! becomes a dead letter with its provenance.

use crate::audit::Verdict;
use crate::codec;
use crate::config::Settings;
use crate::kafka::{Output, Record};
use crate::model::{Mode, Violation};
use crate::policy::Policy;
use crate::telemetry::Metrics;

/// An output and the event time of its violation (`None`: not a violation).
pub type Timed = (Output, Option<i64>);

/// Counts what `verdict` found and returns the alerts it enforces.
pub fn verdict(
    settings: &Settings,
    metrics: &Metrics,
    policy: &Policy,
    verdict: &Verdict,
    out: &mut Vec<Timed>,
) {
    for s in verdict
        .suppressed
        .iter()
        .filter(|s| s.exception_mode == Mode::Enforce)
    {
        metrics
            .suppressed
            .with_label_values(&[s.rule.as_str()])
            .inc();
    }
    for v in &verdict.violations {
        metrics.violation(v, policy.registry.contains_key(&v.recipient_id));
        if v.mode == Mode::Shadow {
            tracing::info!(rule = %v.rule_id, alert_id = %v.alert_id, event_id = %v.event_id, "shadow violation");
            continue;
        }
        out.push((alert(settings, v), Some(v.occurred_at.millis())));
    }
}

fn alert(settings: &Settings, v: &Violation) -> Output {
    Output {
        topic: settings.topics.violations.clone(),
        key: Some(v.recipient_id.clone().into_bytes()),
        payload: codec::encode_violation(&settings.output, v),
        headers: Vec::new(),
        partition: None,
    }
}

/// A candidate of `volume.recipient_rate` for the rate stage, keyed by recipient.
pub fn candidate(settings: &Settings, v: &Violation) -> Output {
    Output {
        topic: settings.topics.recipient_rate.clone(),
        key: Some(v.recipient_id.clone().into_bytes()),
        payload: codec::encode_candidate(v),
        headers: Vec::new(),
        partition: None,
    }
}

/// `rec` unchanged, to the dead-letter topic, with headers naming where it
/// came from and why (`message` names fields and types, never values).
/// Counted; logged without the message. A record too large for the
/// producer is cut to fit, with headers that say so (`Output::fitted`).
pub fn dead_letter(
    settings: &Settings,
    metrics: &Metrics,
    rec: &Record,
    class: &str,
    message: String,
) -> Output {
    metrics.dead_letters.with_label_values(&[class]).inc();
    metrics.events.with_label_values(&["dead_letter"]).inc();
    tracing::warn!(
        class,
        partition = rec.partition,
        offset = rec.offset,
        "dead letter"
    );
    Output::dead_letter(
        &settings.topics.dead_letters,
        rec.clone(),
        class,
        message,
        settings.max_message_bytes,
    )
}
