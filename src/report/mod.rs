//! The compliance report of a run (`audit --report`, `--summary-json`):
//! what was shared with whom, under which promise of the policy, what went
//! wrong and what was suppressed, for a privacy officer.
//!
//! [`Tally`] collects, in input order, what the judge saw (`audit`), or
//! what the daemon wrote over a period (`shareaudit report`: the violations
//! topic, and the records logged on the event, dead-letter and consent
//! topics); [`Tally::summary`] makes the figures (the `--summary-json`
//! document); [`html`] renders them as one self-contained page: inline CSS
//! and SVG, no script, no request, Chinese and English labels side by
//! side, printable.
//!
//! From the topics, the events of the period are decoded again to count
//! what each recipient received; what exceptions suppressed is not on any
//! topic: `null` in the summary and "—" on the page, never 0.
//!
//! Nothing personal goes in: no user id, no data value, no subject_ref.
//! Recipients, categories, rule ids, clauses, event ids and alert ids do.

mod html;

pub use html::html;

use crate::audit::Verdict;
use crate::model::{
    DataSharingEvent, Mode, PolicyVersion, RecipientCategory, RuleId, Severity, Timestamp,
    Violation,
};
use crate::policy::Policy;
use rustc_hash::{FxHashSet, FxHasher};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

/// Example violations kept per rule.
const EXAMPLES: usize = 3;
/// Rate windows listed in full; past this, counted.
const RATE_WINDOWS: usize = 200;

/// What the judge saw, as it saw it.
#[derive(Default)]
pub struct Tally {
    events: u64,
    invalid: u64,
    consent_states: u64,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    categories: BTreeMap<RecipientCategory, Share>,
    recipients: BTreeMap<String, (RecipientCategory, Share)>,
    rules: BTreeMap<RuleId, RuleTally>,
    /// Per hour (UTC milliseconds at its start): events, events with violations.
    hours: BTreeMap<i64, (u64, u64)>,
    rate_windows: Vec<RateWindow>,
    rate_windows_more: u64,
    shadow: BTreeMap<RuleId, u64>,
    suppressed: BTreeMap<RuleId, u64>,
    /// Set when the figures come from the topics over a period.
    topics: Option<Topics>,
}

/// What a report from the topics knows beyond an audit's tally.
struct Topics {
    source: String,
    /// Alert ids seen (a violation written twice, after a crash, counts once).
    alerts: FxHashSet<u128>,
    /// Events with an enforced violation, by a 64-bit hash of their id.
    events: FxHashSet<u64>,
    policies: BTreeMap<PolicyVersion, u64>,
    duplicates: u64,
    undecoded: u64,
    refused: u64,
}

fn key64(s: &str) -> u64 {
    let mut h = FxHasher::default();
    s.hash(&mut h);
    h.finish()
}

/// An alert id (32 hex digits) as a number; any other string by two hashes.
fn key128(s: &str) -> u128 {
    u128::from_str_radix(s, 16)
        .ok()
        .filter(|_| s.len() == 32)
        .unwrap_or_else(|| (u128::from(key64(s)) << 64) | u128::from(key64(&format!("{s}\0"))))
}

#[derive(Default)]
struct Share {
    events: u64,
    with_violations: u64,
    /// The categories of data shared (kept for recipient categories).
    data: BTreeSet<String>,
}

impl Share {
    fn count(&mut self, violated: bool) {
        self.events += 1;
        self.with_violations += u64::from(violated);
    }
}

#[derive(Default)]
struct RuleTally {
    violations: u64,
    by_severity: BTreeMap<Severity, u64>,
    examples: Vec<Example>,
}

#[derive(Clone, Serialize)]
pub struct Example {
    pub alert_id: String,
    pub event_id: String,
    pub recipient_id: String,
    pub severity: Severity,
    /// The event's time, which orders the examples of a report from the topics.
    #[serde(skip)]
    at: i64,
}

#[derive(Clone, Serialize)]
pub struct RateWindow {
    pub recipient_id: String,
    pub occurred_at: Timestamp,
    pub alert_id: String,
}

impl Tally {
    /// The records that could not be judged, and the consent states read.
    pub fn inputs(&mut self, invalid: u64, consent_states: u64) {
        self.invalid = invalid;
        self.consent_states = consent_states;
    }

    /// A judged event and its verdict.
    pub fn event(&mut self, policy: &Policy, e: &DataSharingEvent, verdict: &Verdict) {
        self.events += 1;
        let t = e.occurred_at;
        self.from = Some(self.from.map_or(t, |f| f.min(t)));
        self.to = Some(self.to.map_or(t, |x| x.max(t)));
        let violated = verdict.enforced().next().is_some();
        let hour = self
            .hours
            .entry(t.millis().div_euclid(3_600_000) * 3_600_000)
            .or_default();
        hour.0 += 1;
        hour.1 += u64::from(violated);
        self.shared(policy, e, violated);
        for v in &verdict.violations {
            self.violation(v);
        }
        for s in &verdict.suppressed {
            if s.exception_mode == Mode::Enforce {
                *self.suppressed.entry(s.rule).or_default() += 1;
            }
        }
    }

    /// An event shared with its recipient: counted for the recipient and its
    /// category, with the categories of data it carries.
    fn shared(&mut self, policy: &Policy, e: &DataSharingEvent, violated: bool) {
        let category = self.categories.entry(e.recipient.category).or_default();
        category.count(violated);
        let taxonomy = &policy.taxonomy;
        for d in &e.data {
            let id = match &d.category {
                Some(c) => taxonomy.get(c).map(|c| taxonomy.name(c)),
                None => taxonomy.classify_field(&d.field).map(|c| taxonomy.name(c)),
            };
            let id = id.unwrap_or("unclassified");
            if !category.data.contains(id) {
                category.data.insert(id.to_owned());
            }
        }
        let recipient = match self.recipients.get_mut(e.recipient.id.as_str()) {
            Some(r) => r,
            None => self
                .recipients
                .entry(e.recipient.id.clone())
                .or_insert_with(|| (e.recipient.category, Share::default())),
        };
        recipient.1.count(violated);
    }

    /// A report of what the daemon wrote between `from` (included) and `to`
    /// (excluded), by the time the events were logged (a violation's
    /// `detected_at` is its event's log time). `source` names the topics.
    pub fn over(from: Timestamp, to: Timestamp, source: String) -> Tally {
        Tally {
            from: Some(from),
            to: Some(to),
            topics: Some(Topics {
                source,
                alerts: FxHashSet::default(),
                events: FxHashSet::default(),
                policies: BTreeMap::new(),
                duplicates: 0,
                undecoded: 0,
                refused: 0,
            }),
            ..Tally::default()
        }
    }

    /// An event logged on the event topic at `t` (ms), within the period:
    /// counted for its recipient, its category and the categories of data
    /// it carries, as `audit` counts a judged event.
    pub fn logged_event(&mut self, policy: &Policy, t: i64, event: &DataSharingEvent) {
        self.events += 1;
        self.hours
            .entry(t.div_euclid(3_600_000) * 3_600_000)
            .or_default()
            .0 += 1;
        self.shared(policy, event, false);
    }

    /// A record of the event topic, within the period, that does not decode
    /// here (the daemon made it a dead letter, or its writer schema is not
    /// known to this command).
    pub fn undecoded_event(&mut self) {
        if let Some(t) = &mut self.topics {
            t.undecoded += 1;
        }
    }

    /// A record of the event topic, within the period, that decodes but
    /// that the daemon refuses to judge (the engine's checks, an event time
    /// far ahead of its log time): the daemon made it a dead letter.
    pub fn refused_event(&mut self) {
        if let Some(t) = &mut self.topics {
            t.refused += 1;
        }
    }

    /// A violation read from the violations topic, within the period.
    /// Returns false for a copy of one already counted (same `alert_id`).
    pub fn written(&mut self, v: &Violation) -> bool {
        let Some(t) = &mut self.topics else {
            return false;
        };
        if !t.alerts.insert(key128(&v.alert_id)) {
            t.duplicates += 1;
            return false;
        }
        *t.policies.entry(v.policy_version.clone()).or_default() += 1;
        if v.mode == Mode::Enforce && t.events.insert(key64(&v.event_id)) {
            let hour = v.detected_at.millis().div_euclid(3_600_000) * 3_600_000;
            self.hours.entry(hour).or_default().1 += 1;
            self.categories
                .entry(v.recipient_category)
                .or_default()
                .with_violations += 1;
            let r = match self.recipients.get_mut(v.recipient_id.as_str()) {
                Some(r) => r,
                None => self
                    .recipients
                    .entry(v.recipient_id.clone())
                    .or_insert_with(|| (v.recipient_category, Share::default())),
            };
            r.1.with_violations += 1;
        }
        if v.mode == Mode::Enforce {
            let data = &mut self
                .categories
                .entry(v.recipient_category)
                .or_default()
                .data;
            for c in &v.categories {
                if !data.contains(c) {
                    data.insert(c.clone());
                }
            }
        }
        self.violation(v);
        true
    }

    /// One violation into the per-rule figures.
    fn violation(&mut self, v: &Violation) {
        {
            let Ok(rule) = v.rule_id.parse::<RuleId>() else {
                return;
            };
            if v.mode == Mode::Shadow {
                *self.shadow.entry(rule).or_default() += 1;
                return;
            }
            let r = self.rules.entry(rule).or_default();
            r.violations += 1;
            *r.by_severity.entry(v.severity).or_default() += 1;
            let example = || Example {
                alert_id: v.alert_id.clone(),
                event_id: v.event_id.clone(),
                recipient_id: v.recipient_id.clone(),
                severity: v.severity,
                at: v.occurred_at.millis(),
            };
            if self.topics.is_some() {
                // Read order depends on partitions and replicas: the examples
                // are the earliest events (then the lowest alert ids) instead.
                let key = |e: &Example| (e.at, e.alert_id.clone());
                let new = example();
                let at = r.examples.partition_point(|e| key(e) < key(&new));
                if at < EXAMPLES {
                    r.examples.insert(at, new);
                    r.examples.truncate(EXAMPLES);
                }
            } else if r.examples.len() < EXAMPLES {
                r.examples.push(example());
            }
            if rule == RuleId::VolumeRecipientRate {
                let window = RateWindow {
                    recipient_id: v.recipient_id.clone(),
                    occurred_at: v.occurred_at,
                    alert_id: v.alert_id.clone(),
                };
                if self.topics.is_some() {
                    // The earliest RATE_WINDOWS in event-time order (read
                    // order depends on the replicas), kept sorted and no more.
                    let key = |w: &RateWindow| (w.occurred_at, w.alert_id.clone());
                    let at = self.rate_windows.partition_point(|w| key(w) < key(&window));
                    if at < RATE_WINDOWS {
                        self.rate_windows.insert(at, window);
                    }
                    if self.rate_windows.len() > RATE_WINDOWS || at >= RATE_WINDOWS {
                        self.rate_windows.truncate(RATE_WINDOWS);
                        self.rate_windows_more += 1;
                    }
                } else if self.rate_windows.len() < RATE_WINDOWS {
                    self.rate_windows.push(window);
                } else {
                    self.rate_windows_more += 1;
                }
            }
        }
    }

    /// The figures of the run: the `--summary-json` document, and what the
    /// page shows.
    pub fn summary(&self, policy: &Policy) -> Summary {
        let share = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
        // From the topics, what exceptions suppressed is not known.
        let known = self.topics.is_none();
        let per_day = match (self.from, self.to) {
            (Some(f), Some(t)) => t.millis() - f.millis() > 3 * 86_400_000,
            _ => false,
        };
        let offset = i64::from(policy.settings.utc_offset_minutes) * 60_000;
        let mut trend: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
        for (&hour, &(n, v)) in &self.hours {
            let start = if per_day {
                (hour + offset).div_euclid(86_400_000) * 86_400_000 - offset
            } else {
                hour
            };
            let b = trend.entry(start).or_default();
            b.0 += n;
            b.1 += v;
        }
        let mut recipients: Vec<RecipientRow> = self
            .recipients
            .iter()
            .map(|(id, (category, s))| RecipientRow {
                recipient_id: id.clone(),
                category: *category,
                events: s.events,
                events_with_violations: s.with_violations,
                violation_share: share(s.with_violations, s.events),
            })
            .collect();
        recipients.sort_by(|a, b| {
            b.events_with_violations
                .cmp(&a.events_with_violations)
                .then(b.events.cmp(&a.events))
                .then(a.recipient_id.cmp(&b.recipient_id))
        });
        let rate_windows = &self.rate_windows;
        Summary {
            shareaudit_version: env!("CARGO_PKG_VERSION").to_owned(),
            source: self
                .topics
                .as_ref()
                .map_or_else(|| "audit".to_owned(), |t| t.source.clone()),
            policy: policy.version.clone(),
            policies_seen: self.topics.as_ref().map(|t| {
                t.policies
                    .iter()
                    .map(|(p, n)| PolicySeen {
                        version: p.version.clone(),
                        hash: p.hash.clone(),
                        violations: *n,
                    })
                    .collect()
            }),
            duplicates_dropped: self.topics.as_ref().map(|t| t.duplicates),
            undecoded_event_records: self.topics.as_ref().map(|t| t.undecoded),
            refused_event_records: self.topics.as_ref().map(|t| t.refused),
            period: Period {
                from: self.from,
                to: self.to,
                trend_bucket: if per_day { "day" } else { "hour" },
            },
            inputs: Inputs {
                events_judged: self.events,
                events_with_violations: self.hours.values().map(|h| h.1).sum(),
                invalid_records: self.invalid,
                consent_states: self.consent_states,
            },
            recipient_categories: self
                .categories
                .iter()
                .map(|(c, s)| CategoryRow {
                    category: *c,
                    events: s.events,
                    events_with_violations: s.with_violations,
                    violation_share: share(s.with_violations, s.events),
                    data_categories: s.data.iter().cloned().collect(),
                })
                .collect(),
            recipients,
            clauses: RuleId::ALL
                .iter()
                .filter_map(|&id| Some((id, policy.rule(id)?)))
                .map(|(id, meta)| {
                    let t = self.rules.get(&id);
                    ClauseRow {
                        rule_id: id.as_str(),
                        clause: meta.clause.clone(),
                        quote: meta.quote.clone(),
                        title: meta.title.clone(),
                        title_zh: meta.title_zh.clone(),
                        mode: meta.mode,
                        violations: t.map_or(0, |t| t.violations),
                        by_severity: t.map(|t| t.by_severity.clone()).unwrap_or_default(),
                        examples: t.map(|t| t.examples.clone()).unwrap_or_default(),
                    }
                })
                .collect(),
            trend: trend
                .into_iter()
                .map(|(start, (events, v))| TrendRow {
                    start: Timestamp(start),
                    events,
                    events_with_violations: v,
                })
                .collect(),
            rate_windows: rate_windows.clone(),
            rate_windows_not_listed: self.rate_windows_more,
            shadow: self.shadow.iter().map(|(r, n)| (r.as_str(), *n)).collect(),
            exceptions: policy
                .exceptions
                .iter()
                .map(|x| ExceptionRow {
                    rule_id: x.rule.as_str(),
                    recipient_id: x.recipient_id.clone(),
                    owner: x.owner.clone(),
                    reason: x.reason.clone(),
                    expires: x.expires,
                    mode: x.mode,
                })
                .collect(),
            suppressed: known.then(|| {
                self.suppressed
                    .iter()
                    .map(|(r, n)| (r.as_str(), *n))
                    .collect()
            }),
        }
    }
}

/// The figures of a run (`--summary-json`).
#[derive(Serialize)]
pub struct Summary {
    pub shareaudit_version: String,
    /// `audit`, or the topics the figures were read from.
    pub source: String,
    /// The policy whose clauses, titles and exceptions the report shows.
    pub policy: PolicyVersion,
    /// From the topics: the policies that judged the violations read, and how many each.
    pub policies_seen: Option<Vec<PolicySeen>>,
    /// From the topics: copies of violations already counted (same alert id), dropped.
    pub duplicates_dropped: Option<u64>,
    /// From the topics: records of the event topic in the period that did
    /// not decode here (dead letters, or writer schemas this command lacks).
    pub undecoded_event_records: Option<u64>,
    /// From the topics: records of the event topic in the period that
    /// decoded but that the daemon refuses to judge (dead letters too).
    pub refused_event_records: Option<u64>,
    pub period: Period,
    pub inputs: Inputs,
    pub recipient_categories: Vec<CategoryRow>,
    pub recipients: Vec<RecipientRow>,
    pub clauses: Vec<ClauseRow>,
    pub trend: Vec<TrendRow>,
    pub rate_windows: Vec<RateWindow>,
    pub rate_windows_not_listed: u64,
    /// Violations of rules in shadow mode, per rule: counted, not alerted.
    pub shadow: BTreeMap<&'static str, u64>,
    pub exceptions: Vec<ExceptionRow>,
    /// Violations suppressed by exceptions in force, per rule (not known from the topics).
    pub suppressed: Option<BTreeMap<&'static str, u64>>,
}

#[derive(Serialize)]
pub struct PolicySeen {
    pub version: String,
    pub hash: String,
    pub violations: u64,
}

#[derive(Serialize)]
pub struct Period {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub trend_bucket: &'static str,
}

#[derive(Serialize)]
pub struct Inputs {
    pub events_judged: u64,
    pub events_with_violations: u64,
    pub invalid_records: u64,
    pub consent_states: u64,
}

#[derive(Serialize)]
pub struct CategoryRow {
    pub category: RecipientCategory,
    pub events: u64,
    pub events_with_violations: u64,
    pub violation_share: f64,
    pub data_categories: Vec<String>,
}

#[derive(Serialize)]
pub struct RecipientRow {
    pub recipient_id: String,
    pub category: RecipientCategory,
    pub events: u64,
    pub events_with_violations: u64,
    pub violation_share: f64,
}

#[derive(Serialize)]
pub struct ClauseRow {
    pub rule_id: &'static str,
    pub clause: String,
    pub quote: String,
    pub title: String,
    pub title_zh: String,
    pub mode: Mode,
    pub violations: u64,
    pub by_severity: BTreeMap<Severity, u64>,
    pub examples: Vec<Example>,
}

#[derive(Serialize)]
pub struct TrendRow {
    pub start: Timestamp,
    pub events: u64,
    pub events_with_violations: u64,
}

#[derive(Serialize)]
pub struct ExceptionRow {
    pub rule_id: &'static str,
    pub recipient_id: Option<String>,
    pub owner: String,
    pub reason: String,
    pub expires: Timestamp,
    pub mode: Mode,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::seq::SliceRandom;

    /// What the violations topic holds, in whatever order its partitions
    /// and replicas wrote it: the summary of a period is the same.
    #[test]
    fn a_report_from_the_topics_does_not_depend_on_read_order_and_counts_copies_once() {
        let policy = crate::policy::load_default(Timestamp(0)).unwrap().policy;
        let base: Violation =
            serde_json::from_str(include_str!("../../tests/fixtures/violation-full.json")).unwrap();
        let mut written = Vec::new();
        for i in 0..300i64 {
            let mut v = base.clone();
            v.event_id = format!("e-{}", i / 2);
            v.rule_id = if i % 7 == 0 {
                "volume.recipient_rate"
            } else {
                "minimisation.prohibited"
            }
            .into();
            v.alert_id = format!("{:032x}", i * 7919);
            v.recipient_id = format!("r-{}", (i / 2) % 5);
            v.occurred_at = Timestamp(1_700_000_000_000 + (i % 50) * 60_000);
            v.detected_at = Timestamp(v.occurred_at.millis() + 1_000);
            written.push(v);
        }
        // A crash: some violations written again.
        let copies: Vec<Violation> = written[10..40].to_vec();
        written.extend(copies);
        let summary = |order: &[Violation]| {
            let mut t = Tally::over(Timestamp(0), Timestamp(i64::MAX / 2), "t".into());
            for v in order {
                t.written(v);
            }
            serde_json::to_string(&t.summary(&policy)).unwrap()
        };
        let first = summary(&written);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..5 {
            written.shuffle(&mut rng);
            assert_eq!(summary(&written), first);
        }
        let s: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(s["duplicates_dropped"], 30);
        assert_eq!(s["inputs"]["events_with_violations"], 150);
        assert!(s["suppressed"].is_null());
    }

    /// From the topics, the listed rate windows are the earliest
    /// `RATE_WINDOWS` in event-time order, whatever the read order, and no
    /// more are ever kept: a flood of rate alerts costs no memory.
    #[test]
    fn a_report_from_the_topics_keeps_the_earliest_rate_windows_and_no_more() {
        let policy = crate::policy::load_default(Timestamp(0)).unwrap().policy;
        let base: Violation =
            serde_json::from_str(include_str!("../../tests/fixtures/violation-full.json")).unwrap();
        let mut written: Vec<Violation> = (0..RATE_WINDOWS as i64 + 250)
            .map(|i| {
                let mut v = base.clone();
                v.event_id = format!("e-{i}");
                v.rule_id = "volume.recipient_rate".into();
                v.alert_id = format!("{:032x}", i);
                v.occurred_at = Timestamp(1_700_000_000_000 + i * 1_000);
                v.detected_at = v.occurred_at;
                v
            })
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        written.shuffle(&mut rng);
        let mut t = Tally::over(Timestamp(0), Timestamp(i64::MAX / 2), "t".into());
        for v in &written {
            t.written(v);
            assert!(t.rate_windows.len() <= RATE_WINDOWS);
        }
        let s = t.summary(&policy);
        assert_eq!(s.rate_windows.len(), RATE_WINDOWS);
        assert_eq!(s.rate_windows_not_listed, 250);
        let listed: Vec<i64> = s
            .rate_windows
            .iter()
            .map(|w| w.occurred_at.millis())
            .collect();
        let want: Vec<i64> = (0..RATE_WINDOWS as i64)
            .map(|i| 1_700_000_000_000 + i * 1_000)
            .collect();
        assert_eq!(listed, want);
    }
}
