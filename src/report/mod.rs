//! The compliance report of a run (`audit --report`, `--summary-json`):
//! what was shared with whom, under which promise of the policy, what went
//! wrong and what was suppressed, for a privacy officer.
//!
//! [`Tally`] collects, in input order, what the judge saw; [`Tally::summary`]
//! makes the figures (the `--summary-json` document); [`html`] renders
//! them as one self-contained page: inline CSS and SVG, no script, no
//! request, Chinese and English labels side by side, printable.
//!
//! Nothing personal goes in: no user id, no data value, no subject_ref.
//! Recipients, categories, rule ids, clauses, event ids and alert ids do.

mod html;

pub use html::html;

use crate::audit::Verdict;
use crate::model::{DataSharingEvent, Mode, RecipientCategory, RuleId, Severity, Timestamp};
use crate::policy::Policy;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

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
        for v in &verdict.violations {
            let Ok(rule) = v.rule_id.parse::<RuleId>() else {
                continue;
            };
            if v.mode == Mode::Shadow {
                *self.shadow.entry(rule).or_default() += 1;
                continue;
            }
            let r = self.rules.entry(rule).or_default();
            r.violations += 1;
            *r.by_severity.entry(v.severity).or_default() += 1;
            if r.examples.len() < EXAMPLES {
                r.examples.push(Example {
                    alert_id: v.alert_id.clone(),
                    event_id: v.event_id.clone(),
                    recipient_id: v.recipient_id.clone(),
                    severity: v.severity,
                });
            }
            if rule == RuleId::VolumeRecipientRate {
                if self.rate_windows.len() < RATE_WINDOWS {
                    self.rate_windows.push(RateWindow {
                        recipient_id: v.recipient_id.clone(),
                        occurred_at: v.occurred_at,
                        alert_id: v.alert_id.clone(),
                    });
                } else {
                    self.rate_windows_more += 1;
                }
            }
        }
        for s in &verdict.suppressed {
            if s.exception_mode == Mode::Enforce {
                *self.suppressed.entry(s.rule).or_default() += 1;
            }
        }
    }

    /// The figures of the run: the `--summary-json` document, and what the
    /// page shows.
    pub fn summary(&self, policy: &Policy) -> Summary {
        let share = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
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
        Summary {
            shareaudit_version: env!("CARGO_PKG_VERSION").to_owned(),
            policy: policy.version.clone(),
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
            rate_windows: self.rate_windows.clone(),
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
            suppressed: self
                .suppressed
                .iter()
                .map(|(r, n)| (r.as_str(), *n))
                .collect(),
        }
    }
}

/// The figures of a run (`--summary-json`).
#[derive(Serialize)]
pub struct Summary {
    pub shareaudit_version: String,
    pub policy: crate::model::PolicyVersion,
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
    /// Violations suppressed by exceptions in force, per rule.
    pub suppressed: BTreeMap<&'static str, u64>,
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
