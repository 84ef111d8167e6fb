//! The engine: compiled policy + event + consent state as of the event ->
//! violations. Pure: no I/O, no clock (the caller passes `detected_at`), no
//! Kafka. The offline `audit` command and the daemon call the same
//! [`Engine::audit`].
//!
//! One event is judged in three steps:
//! 1. [`Facts`]: what the event carries. Each data item's category (declared,
//!    else by field name) and what the content detectors find in its value;
//!    undeclared finds join `cats(e)` as `rules.md` says.
//! 2. The rules, one small function each, grouped by what they look at:
//!    `recipient` (who), `basis` (why and on what basis), `data` (what),
//!    `subject` (whose), [`volume`] (how much). Each returns a [`Breach`].
//! 3. Findings become [`Violation`]s: severity (with "up"), deterministic
//!    `alert_id`, keyed `subject_ref`, mode, exceptions.

mod basis;
mod data;
mod recipient;
mod subject;
pub mod volume;

use crate::detect::{self, Hits};
use crate::model::*;
use crate::policy::{Arg, Case, CatId, CatSet, Detail, Entry, Lang, Policy, Profile, RuleMeta};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What one rule found wrong with an event.
#[derive(Debug, Clone)]
pub struct Breach {
    pub rule: RuleId,
    /// The case and its values; the policy's templates say it in words.
    pub detail: Detail,
    /// The offending categories (their fields are listed in the violation).
    pub cats: CatSet,
    /// A severity the rule's parameters impose (bulk and PII escalations).
    pub severity: Option<Severity>,
}

impl Breach {
    fn new(case: Case) -> Breach {
        Breach {
            rule: case.rule(),
            detail: Detail::new(case),
            cats: CatSet::EMPTY,
            severity: None,
        }
    }

    /// Supplies a value the detail may quote.
    fn arg(mut self, arg: Arg, value: impl std::fmt::Display) -> Breach {
        self.detail = self.detail.arg(arg, value);
        self
    }

    fn with_cats(mut self, cats: CatSet) -> Breach {
        self.cats = cats;
        self
    }
}

/// A rule: the facts of an event in, what is wrong with it (if anything) out.
type Rule = fn(&Facts<'_>) -> Option<Breach>;

/// Runs the enabled rules of a family.
fn run_rules(f: &Facts<'_>, rules: &[(RuleId, Rule)], out: &mut Vec<Breach>) {
    for (id, rule) in rules {
        if f.policy.rule(*id).is_some()
            && let Some(finding) = rule(f)
        {
            out.push(finding);
        }
    }
}

/// One data item, resolved.
#[derive(Debug, Clone, Default)]
pub struct Item {
    /// Declared, or classified from the field name.
    pub cat: Option<CatId>,
    /// Categories the detectors found and the item's category does not account for.
    pub undeclared: CatSet,
    pub hits: Hits,
}

/// Everything the rules need to know about one event, computed once.
pub struct Facts<'a> {
    pub event: &'a DataSharingEvent,
    pub policy: &'a Policy,
    /// The user's consent state as of `occurred_at`, if known.
    pub state: Option<&'a ConsentState>,
    pub entry: Option<&'a Entry>,
    pub profile: &'a Profile,
    pub items: &'a [Item],
    /// `cats(e)`.
    pub cats: CatSet,
    /// The categories that count as sensitive for this event (taxonomy,
    /// contextual by purpose, everything for a minor).
    pub sensitive: CatSet,
    pub minor: bool,
    pub over_bulk_limit: bool,
}

impl Facts<'_> {
    /// Sensitive data or bulk volume: the "up" of rules.md.
    pub fn raises(&self) -> bool {
        !self.cats.intersect(self.sensitive).is_empty() || self.over_bulk_limit
    }

    /// The separate consents valid at the event naming its recipient.
    pub fn consents(&self, scope: Option<ConsentScope>) -> impl Iterator<Item = &SeparateConsent> {
        let t = self.event.occurred_at;
        let rid = &self.event.recipient.id;
        self.state
            .into_iter()
            .flat_map(|s| s.separate_consents.iter())
            .filter(move |c| {
                scope.is_none_or(|s| c.scope == s) && &c.recipient_id == rid && c.valid_at(t)
            })
    }

    pub fn names(&self, cats: CatSet) -> String {
        join(cats.iter().map(|c| self.policy.taxonomy.name(c)))
    }
}

pub fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut s = String::new();
    for (i, x) in items.enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(x);
    }
    s
}

/// Per-call inputs that are not part of the event.
#[derive(Debug, Clone)]
pub struct AuditContext {
    pub detected_at: Timestamp,
    pub source: Option<Source>,
}

/// A violation an exception suppressed (or, in shadow, would have).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    pub rule: RuleId,
    /// `Shadow`: the exception is on trial and did not suppress.
    pub exception_mode: Mode,
}

/// The outcome of judging one event.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Enforced and shadow violations (see `Violation::mode`).
    pub violations: Vec<Violation>,
    pub suppressed: Vec<Suppressed>,
    /// With the recipient-rate rule deferred (`Engine::defer_rate`): the
    /// violation this event would be if it took its recipient over the
    /// limit, for the cluster stage to count and decide. Boxed: a verdict
    /// is returned by value for every event, and a violation is 432 bytes
    /// to copy (the verdict is 56 with it boxed).
    pub rate_candidate: Option<Box<Violation>>,
}

impl Verdict {
    pub fn enforced(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|v| v.mode == Mode::Enforce)
    }
}

/// The audit engine. Holds the compiled policy, the HMAC key for
/// `subject_ref`, and the state of the windowed rule.
pub struct Engine {
    policy: Arc<Policy>,
    hmac: Hmac<Sha256>,
    pub windows: volume::RateWindows,
    /// `volume.recipient_rate` is decided elsewhere (the cluster stage).
    defer_rate: bool,
    items: Vec<Item>,
    findings: Vec<Breach>,
    day: DayCache,
}

impl Engine {
    /// `hmac_key` keys `subject_ref`; any length works (HMAC pads or hashes it).
    pub fn new(policy: Arc<Policy>, hmac_key: &[u8]) -> Engine {
        let hmac = <Hmac<Sha256> as Mac>::new_from_slice(hmac_key).unwrap_or_else(|_| {
            // new_from_slice accepts every key length for HMAC; keep a defined fallback anyway.
            <Hmac<Sha256> as Mac>::new(&Default::default())
        });
        Engine {
            policy,
            hmac,
            windows: volume::RateWindows::default(),
            defer_rate: false,
            items: Vec::new(),
            findings: Vec::new(),
            day: DayCache::default(),
        }
    }

    /// Leaves `volume.recipient_rate` to the cluster stage: instead of
    /// counting locally, each event to a limited recipient yields a
    /// `rate_candidate` (see `recipient_rate`).
    pub fn defer_rate(mut self) -> Engine {
        self.defer_rate = true;
        self
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Swaps in a new policy between events (hot reload). Window state is
    /// kept: the counts are facts about traffic, not about the policy.
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.policy = policy;
    }

    /// Whether the engine judges `event` at all: `Err` when it names
    /// categories the taxonomy does not know (the daemon makes it a dead
    /// letter). The first step of [`Engine::audit`], alone for `report`,
    /// which counts such records apart. Returns the event's local date.
    pub fn check(&mut self, event: &DataSharingEvent) -> Result<Date, Problems> {
        let policy = Arc::clone(&self.policy);
        self.check_with(&policy, event)
    }

    /// `check` with the policy `audit` already holds (one count of the
    /// `Arc` an event, not two).
    fn check_with(&mut self, policy: &Policy, event: &DataSharingEvent) -> Result<Date, Problems> {
        let today = self
            .day
            .local_date(event.occurred_at, policy.settings.utc_offset_minutes)
            .unwrap_or_else(|| Date::ymd(2100, 1, 1).unwrap_or(Date(chrono::NaiveDate::MIN)));
        self.resolve_items(policy, event, today)?;
        Ok(today)
    }

    /// Judges one event against the consent state that held at `occurred_at`.
    /// `Err` when the event names categories the taxonomy does not know: the
    /// record is invalid (dead letter), not silently judged without them.
    pub fn audit(
        &mut self,
        event: &DataSharingEvent,
        state: Option<&ConsentState>,
        ctx: &AuditContext,
    ) -> Result<Verdict, Problems> {
        let policy = Arc::clone(&self.policy);
        let today = self.check_with(&policy, event)?;

        let entry = policy.registry.get(event.recipient.id.as_str());
        let profile = policy.profile(event.recipient.category);
        let cats = self.items.iter().fold(CatSet::EMPTY, |a, item| {
            let declared = item.cat.map_or(CatSet::EMPTY, CatSet::of);
            a.union(declared).union(item.undeclared)
        });
        let minor = subject::is_minor(event, state, &policy, today);
        let mut sensitive = policy.taxonomy.sensitive();
        if !policy
            .settings
            .contextual_except_purposes
            .contains(event.purpose)
        {
            sensitive = sensitive.union(policy.settings.contextual_sensitive);
        }
        if minor {
            sensitive = CatSet::all(policy.taxonomy.len());
        }
        let over_bulk_limit = profile.bulk_limit.is_some_and(|l| event.record_count > l);
        let facts = Facts {
            event,
            policy: &policy,
            state,
            entry,
            profile,
            items: &self.items,
            cats,
            sensitive,
            minor,
            over_bulk_limit,
        };

        self.findings.clear();
        let out = &mut self.findings;
        recipient::check(&facts, out);
        basis::check(&facts, out);
        data::check(&facts, out);
        subject::check(&facts, out);
        volume::check_bulk(&facts, out);
        let mut verdict = Verdict::default();
        if let Some(meta) = policy.rule(RuleId::VolumeRecipientRate) {
            if !self.defer_rate {
                if let Some(f) = self.windows.observe_event(&facts) {
                    out.push(f);
                }
            } else if volume::rate_limit(&policy, &event.recipient.id, event.recipient.category)
                .is_some()
            {
                // Its detail is written when the cluster stage decides it (`decide_rate`).
                let f = Breach::new(Case::RateOverLimit);
                let words = [String::new(), String::new()];
                verdict.rate_candidate =
                    Some(Box::new(build(&self.hmac, &facts, meta, &f, words, ctx)));
            }
        }

        for f in self.findings.drain(..) {
            let Some(meta) = policy.rule(f.rule) else {
                continue;
            };
            let words = Lang::ALL.map(|lang| policy.texts.render(&f.detail, lang));
            let v = build(&self.hmac, &facts, meta, &f, words, ctx);
            match exception(&policy, &v, f.cats, ctx.detected_at) {
                Some(Mode::Enforce) => verdict.suppressed.push(Suppressed {
                    rule: f.rule,
                    exception_mode: Mode::Enforce,
                }),
                Some(Mode::Shadow) => {
                    verdict.suppressed.push(Suppressed {
                        rule: f.rule,
                        exception_mode: Mode::Shadow,
                    });
                    verdict.violations.push(v);
                }
                None => verdict.violations.push(v),
            }
        }
        Ok(verdict)
    }

    fn resolve_items(
        &mut self,
        policy: &Policy,
        event: &DataSharingEvent,
        today: Date,
    ) -> Result<(), Problems> {
        self.items.clear();
        let mut problems = Problems::default();
        let tax = &policy.taxonomy;
        for (i, d) in event.data.iter().enumerate() {
            let cat = match &d.category {
                Some(id) => match tax.get(id) {
                    Some(c) => Some(c),
                    None => {
                        problems.push(
                            format!("data[{i}].category"),
                            format!(
                                "unknown category `{}` (not in the policy's taxonomy)",
                                id.escape_debug()
                            ),
                        );
                        None
                    }
                },
                None => tax.classify_field(&d.field),
            };
            let mut item = Item {
                cat,
                ..Item::default()
            };
            if let Some(value) = &d.value {
                item.hits = detect::scan(value, &d.field, today, &policy.detectors.allow_values);
                for kind in item.hits.reportable() {
                    let Some(rule) = policy.detectors.get(kind) else {
                        continue;
                    };
                    if !cat.is_some_and(|c| rule.satisfied_by.contains(c)) {
                        item.undeclared.insert(rule.category);
                    }
                }
            }
            self.items.push(item);
        }
        problems.into_result()
    }
}

/// Fields whose category (or undeclared find) is in `cats`, names only, once each.
fn fields(facts: &Facts<'_>, cats: CatSet) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (item, d) in facts.items.iter().zip(&facts.event.data) {
        let hit = item.cat.is_some_and(|c| cats.contains(c))
            || !item.undeclared.intersect(cats).is_empty();
        if hit && !out.iter().any(|f| f == d.field.as_str()) {
            out.push(d.field.to_string());
        }
    }
    out
}

/// How far past `judged_at` an event's `occurred_at` lies, when that is
/// more than `skew_ms`: such an event is a dead letter (`future_event_time`).
/// A clock far ahead must not move a window or a progress report, or one
/// event dated 2099 would switch `volume.recipient_rate` off for its
/// recipient until then.
pub fn too_far_ahead(event: &DataSharingEvent, judged_at: Timestamp, skew_ms: i64) -> Option<i64> {
    let ahead = event
        .occurred_at
        .millis()
        .saturating_sub(judged_at.millis());
    (ahead > skew_ms).then_some(ahead)
}

/// `alert_id`: the first 128 bits of SHA-256(event_id, rule_id), hex.
pub fn alert_id(event_id: &str, rule: RuleId) -> String {
    let mut h = Sha256::new();
    h.update(event_id.as_bytes());
    h.update([0]);
    h.update(rule.as_str().as_bytes());
    hex(&h.finalize()[..16])
}

fn build(
    hmac: &Hmac<Sha256>,
    facts: &Facts<'_>,
    meta: &RuleMeta,
    f: &Breach,
    [detail, detail_zh]: [String; 2],
    ctx: &AuditContext,
) -> Violation {
    let e = facts.event;
    let mut severity = f.severity.unwrap_or(meta.severity);
    if meta.raise && facts.raises() {
        severity = severity.raised();
    }
    let mut mac = hmac.clone();
    mac.update(e.subject.user_id.as_bytes());
    Violation {
        alert_id: alert_id(&e.event_id, f.rule),
        rule_id: f.rule.as_str().to_owned(),
        clause: meta.clause.clone(),
        severity,
        title: meta.title.clone(),
        title_zh: meta.title_zh.clone(),
        detail,
        detail_zh,
        event_id: e.event_id.to_string(),
        occurred_at: e.occurred_at,
        detected_at: ctx.detected_at,
        recipient_id: e.recipient.id.to_string(),
        recipient_category: e.recipient.category,
        recipient_region: e.recipient.region.to_string(),
        purpose: e.purpose,
        legal_basis: e.legal_basis,
        flow: e.flow,
        categories: f
            .cats
            .iter()
            .map(|c| facts.policy.taxonomy.name(c).to_owned())
            .collect(),
        fields: fields(facts, f.cats),
        subject_ref: hex(&mac.finalize().into_bytes()),
        record_count: e.record_count,
        mode: meta.mode,
        policy_version: facts.policy.version.clone(),
        source: ctx.source.clone(),
    }
}

/// The cluster stage's decision on a `rate_candidate` that fired: its
/// detail written, the current policy's exceptions applied (as of
/// `detected_at`) as the engine applies them to every other rule.
pub fn decide_rate(
    policy: &Policy,
    mut v: Violation,
    count: usize,
    detected_at: Timestamp,
) -> Verdict {
    let limit = volume::rate_limit(policy, &v.recipient_id, v.recipient_category).unwrap_or(0);
    let detail = volume::rate_detail(
        count,
        v.recipient_category,
        &v.recipient_id,
        policy.params.rate_window_millis,
        limit,
    );
    v.detail = policy.texts.render(&detail, Lang::En);
    v.detail_zh = policy.texts.render(&detail, Lang::Zh);
    if let Some(meta) = policy.rule(RuleId::VolumeRecipientRate) {
        v.title.clone_from(&meta.title);
        v.title_zh.clone_from(&meta.title_zh);
    }
    v.detected_at = detected_at;
    let mut verdict = Verdict::default();
    match exception(policy, &v, CatSet::EMPTY, detected_at) {
        Some(mode) => {
            verdict.suppressed.push(Suppressed {
                rule: RuleId::VolumeRecipientRate,
                exception_mode: mode,
            });
            if mode == Mode::Shadow {
                verdict.violations.push(v);
            }
        }
        None => verdict.violations.push(v),
    }
    verdict
}

/// The windowed rule, after an engine that deferred it (`Engine::defer_rate`),
/// in input order: `windows` counts the verdict's candidate (its subject by
/// `user_id`, as the engine alone counts it); when it takes its recipient
/// over the limit, the rule's violation, or its suppression, joins the
/// verdict last, where the engine alone puts it. `audit --threads` judges
/// with deferring engines on every thread and this on one.
pub fn finish_rate(
    policy: &Policy,
    windows: &mut volume::RateWindows,
    user_id: &str,
    verdict: &mut Verdict,
) {
    // Borrowed: most candidates do not fire, and are dropped with the
    // verdict by whoever made it (`audit --threads`: the worker, on its
    // own thread, when it reuses the slot).
    let Some(candidate) = &verdict.rate_candidate else {
        return;
    };
    let Some(limit) = volume::rate_limit(
        policy,
        &candidate.recipient_id,
        candidate.recipient_category,
    ) else {
        return;
    };
    let Some(count) = windows.observe(
        &candidate.recipient_id,
        volume::subject_key(user_id),
        candidate.occurred_at.millis(),
        limit,
        policy.params.rate_window_millis,
    ) else {
        return;
    };
    let detected_at = candidate.detected_at;
    let decided = decide_rate(policy, Violation::clone(candidate), count, detected_at);
    verdict.violations.extend(decided.violations);
    verdict.suppressed.extend(decided.suppressed);
}

/// The mode of the first valid exception matching `v`, if any.
fn exception(policy: &Policy, v: &Violation, cats: CatSet, now: Timestamp) -> Option<Mode> {
    policy
        .exceptions
        .iter()
        .find(|x| {
            x.rule.as_str() == v.rule_id
                && now < x.expires
                && x.recipient_id.as_ref().is_none_or(|r| *r == v.recipient_id)
                && x.purpose.is_none_or(|p| p == v.purpose)
                && x.categories
                    .is_none_or(|allowed| !cats.is_empty() && cats.minus(allowed).is_empty())
        })
        .map(|x| x.mode)
}

#[cfg(test)]
mod tests;
