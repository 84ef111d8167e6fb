//! The metrics shareaudit exports (Prometheus text format). Names follow
//! `shareaudit_<name>_<unit>[_total]`; label values are bounded (rule ids,
//! enum values, partition numbers), never user or event ids.

use crate::model::{Mode, PolicyVersion, RuleId, Violation};
use crate::policy::Policy;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::Mutex;

/// The `recipient` label of a violation whose recipient is not in the registry.
pub const UNREGISTERED: &str = "unregistered";

pub struct Metrics {
    pub registry: Registry,
    pub events: IntCounterVec,
    pub violations: IntCounterVec,
    pub suppressed: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub audit_seconds: Histogram,
    pub event_to_alert_seconds: Histogram,
    pub lag: IntGaugeVec,
    pub delivery_failures: IntCounterVec,
    pub kafka_errors: IntCounterVec,
    pub consent_users: IntGauge,
    pub consent_records: IntCounterVec,
    pub policy_reloads: IntCounterVec,
    pub policy_info: IntGaugeVec,
    pub rule_info: IntGaugeVec,
    pub in_flight: IntGauge,
    pub committed_offset: IntGaugeVec,
    pub assigned_partitions: IntGaugeVec,
    pub topic_partitions: IntGaugeVec,
    pub rate_observations: IntCounterVec,
    pub rate_pending: IntGauge,
    pub consent_held: IntGauge,
    pub consent_confirming: IntGauge,
    pub consent_wait_seconds: Histogram,
    pub consent_stale: IntCounter,
    pub ready: IntGauge,
    current_policy: Mutex<Option<PolicyVersion>>,
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
) -> prometheus::Result<Histogram> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let delivery_failures = counter_vec(
            &r,
            "shareaudit_alert_delivery_failures_total",
            "Deliveries of violations or dead letters the broker did not acknowledge, by class: transient (broker down, timeout, queue; retried) or permanent (too large, not authorised, refused as invalid; an alert becomes a delivery_refused dead letter)",
            &["class"],
        )?;
        Ok(Metrics {
            events: counter_vec(
                &r,
                "shareaudit_events_total",
                "Sharing events judged, by outcome",
                &["outcome"],
            )?,
            violations: counter_vec(
                &r,
                "shareaudit_violations_total",
                "Violations found. `recipient` is the registry id, or `unregistered`: labels stay bounded by the policy",
                &[
                    "rule",
                    "clause",
                    "severity",
                    "recipient_category",
                    "recipient",
                    "mode",
                ],
            )?,
            suppressed: counter_vec(
                &r,
                "shareaudit_suppressed_violations_total",
                "Violations suppressed by a valid exception",
                &["rule"],
            )?,
            dead_letters: counter_vec(
                &r,
                "shareaudit_dead_letters_total",
                "Records sent to the dead-letter topic, by error class",
                &["reason"],
            )?,
            audit_seconds: histogram(
                &r,
                "shareaudit_event_audit_seconds",
                "Time to decode and judge one event",
                vec![1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2],
            )?,
            event_to_alert_seconds: histogram(
                &r,
                "shareaudit_event_to_alert_seconds",
                "From an event's occurred_at to the broker acknowledging its violation",
                vec![
                    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0,
                ],
            )?,
            lag: gauge_vec(
                &r,
                "shareaudit_consumer_lag_messages",
                "Messages between the committed watermark and the partition's end",
                &["topic", "partition"],
            )?,
            delivery_failures,
            kafka_errors: counter_vec(
                &r,
                "shareaudit_kafka_errors_total",
                "Errors librdkafka reported for a client (a broker down or unreachable, authentication, ...), by client",
                &["client"],
            )?,
            consent_users: gauge(
                &r,
                "shareaudit_consent_table_users",
                "Users in the consent table",
            )?,
            consent_records: counter_vec(
                &r,
                "shareaudit_consent_records_total",
                "Consent-state records read, by outcome",
                &["outcome"],
            )?,
            policy_reloads: counter_vec(
                &r,
                "shareaudit_policy_reloads_total",
                "Policy reloads, by result",
                &["result"],
            )?,
            policy_info: gauge_vec(
                &r,
                "shareaudit_policy_info",
                "The policy in force (value 1)",
                &["version", "hash"],
            )?,
            rule_info: gauge_vec(
                &r,
                "shareaudit_rule_info",
                "Each rule that runs (value 1), with its clause, severity, mode and titles in English and Chinese, for alert annotations",
                &["rule", "clause", "severity", "mode", "title", "title_zh"],
            )?,
            in_flight: gauge(
                &r,
                "shareaudit_in_flight_records",
                "Records read whose outputs are not all acknowledged",
            )?,
            committed_offset: gauge_vec(
                &r,
                "shareaudit_committed_offset",
                "The last offset committed, by partition",
                &["topic", "partition"],
            )?,
            assigned_partitions: gauge_vec(
                &r,
                "shareaudit_assigned_partitions",
                "Partitions assigned to this replica: of the event topic, and of the recipient-rate topic",
                &["topic"],
            )?,
            topic_partitions: gauge_vec(
                &r,
                "shareaudit_topic_partitions",
                "Partitions the event topic and the recipient-rate topic have (as this replica found at start): the group's assignments must add up to it",
                &["topic"],
            )?,
            rate_observations: counter_vec(
                &r,
                "shareaudit_rate_observations_total",
                "Observations judged by the cluster-wide volume.recipient_rate stage: counted (in event-time order), late (after later ones were judged), restored (replayed into the windows after a rebalance), invalid",
                &["outcome"],
            )?,
            rate_pending: gauge(
                &r,
                "shareaudit_rate_pending_observations",
                "Observations held by the recipient-rate stage until every event partition has come past them",
            )?,
            consent_held: gauge(
                &r,
                "shareaudit_consent_held_records",
                "Events read and not judged yet because the consent reader is behind them: it knows of consent records it has not applied (their partitions wait)",
            )?,
            consent_confirming: gauge(
                &r,
                "shareaudit_consent_confirming_records",
                "Events logged after the last end probe of the consent topic, waiting for the next one (every few ms) to confirm no consent change came before them; the reader is current",
            )?,
            consent_wait_seconds: histogram(
                &r,
                "shareaudit_consent_wait_seconds",
                "How long an event waited for the consent reader to catch up to its time",
                vec![0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0],
            )?,
            consent_stale: counter(
                &r,
                "shareaudit_consent_stale_total",
                "Events judged with a consent view that had not caught up to their time (after consent_max_wait_ms); their alerts carry the header shareaudit.consent.stale",
            )?,
            ready: gauge(
                &r,
                "shareaudit_ready",
                "1 once the consent table is loaded and the pipeline runs",
            )?,
            registry: r,
            current_policy: Mutex::new(None),
        })
        .inspect(|m| {
            // Known label values start at zero: an alert on `increase()` sees
            // the first error only if the series was there before it.
            for client in ["consumer", "producer"] {
                m.kafka_errors.with_label_values(&[client]);
            }
            for result in ["ok", "error"] {
                m.policy_reloads.with_label_values(&[result]);
            }
            for class in ["transient", "permanent"] {
                m.delivery_failures.with_label_values(&[class]);
            }
        })
    }

    /// Counts a violation. `registered` says whether its recipient is in the
    /// policy's registry; only registered ids become label values.
    pub fn violation(&self, v: &Violation, registered: bool) {
        let mode = if v.mode == Mode::Shadow {
            "shadow"
        } else {
            "enforce"
        };
        self.violations
            .with_label_values(&[
                v.rule_id.as_str(),
                v.clause.as_str(),
                v.severity.as_str(),
                v.recipient_category.as_str(),
                if registered {
                    v.recipient_id.as_str()
                } else {
                    UNREGISTERED
                },
                mode,
            ])
            .inc();
    }

    /// The policy in force: its info series and those of its rules are 1,
    /// the previous ones removed.
    pub fn set_policy(&self, policy: &Policy) {
        let v = &policy.version;
        let mut current = self
            .current_policy
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.rule_info.reset();
        for id in RuleId::ALL {
            if let Some(m) = policy.rule(*id) {
                self.rule_info
                    .with_label_values(&[
                        id.as_str(),
                        m.clause.as_str(),
                        m.severity.as_str(),
                        m.mode.as_str(),
                        m.title.as_str(),
                        m.title_zh.as_str(),
                    ])
                    .set(1);
            }
        }
        if let Some(old) = current.take() {
            let _ = self
                .policy_info
                .remove_label_values(&[old.version.as_str(), old.hash.as_str()]);
        }
        self.policy_info
            .with_label_values(&[v.version.as_str(), v.hash.as_str()])
            .set(1);
        *current = Some(v.clone());
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// The sum of a counter family's samples whose labels include `label=value` (for summaries and tests).
    pub fn sum(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| {
                let counter = f.get_field_type() == prometheus::proto::MetricType::COUNTER;
                f.get_metric().iter().map(move |m| (counter, m))
            })
            .filter(|(_, m)| {
                label.is_none_or(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == k && l.value() == v)
                })
            })
            .map(|(counter, m)| {
                if counter {
                    m.get_counter().get_value()
                } else {
                    m.get_gauge().get_value()
                }
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The alert annotations quote each rule's titles from `shareaudit_rule_info`.
    #[test]
    fn each_running_rule_exports_its_titles_and_a_reload_replaces_them() {
        let now = crate::model::Timestamp::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        let m = Metrics::new().unwrap();
        let shipped = crate::policy::load_default(now).unwrap().policy;
        m.set_policy(&shipped);
        let text = m.render();
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("shareaudit_rule_info{"))
                .count(),
            RuleId::ALL.len(),
            "{text}"
        );
        let withdrawn = text
            .lines()
            .find(|l| l.contains(r#"rule="consent.withdrawn""#))
            .unwrap();
        assert!(
            withdrawn.contains(r#"title_zh="以用户已撤回的同意共享数据""#)
                && withdrawn.contains(r#"title="Data shared on a consent the user withdrew""#)
                && withdrawn.contains(r#"mode="enforce""#)
                && withdrawn.ends_with(" 1"),
            "{withdrawn}"
        );
        let text = crate::policy::DEFAULT_POLICY
            .replace(
                "    title_zh: 以用户已撤回的同意共享数据\n",
                "    title_zh: 用户撤回同意后仍共享\n",
            )
            .replace(
                "    title: Data of a cancelled account shared\n",
                "    title: Data of a cancelled account shared\n    enabled: false\n",
            );
        let reloaded = crate::policy::load(&text, "p.yaml", now).unwrap().policy;
        m.set_policy(&reloaded);
        let text = m.render();
        assert!(
            text.contains("用户撤回同意后仍共享") && !text.contains("以用户已撤回的同意共享数据")
        );
        assert!(!text.contains(r#"rule="account.cancelled""#), "{text}");
    }

    /// A counter whose series appears with its first increment is invisible
    /// to `increase()`: the alerts on the first refused reload and the first
    /// client error need the series there, at zero, from the start.
    #[test]
    fn the_series_alerts_count_on_start_at_zero() {
        let text = Metrics::new().unwrap().render();
        for series in [
            r#"shareaudit_policy_reloads_total{result="ok"} 0"#,
            r#"shareaudit_policy_reloads_total{result="error"} 0"#,
            r#"shareaudit_kafka_errors_total{client="consumer"} 0"#,
            r#"shareaudit_kafka_errors_total{client="producer"} 0"#,
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }
}
