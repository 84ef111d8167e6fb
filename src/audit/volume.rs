//! How much: records per event, and distinct subjects per recipient per window.

use super::{Breach, Facts};
use crate::model::{RecipientCategory, RuleId, Severity};
use crate::policy::{Arg, Case, Detail, Policy};
use rustc_hash::{FxHashMap, FxHasher};
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

/// 5.2, 4.2: more records in one transmission than the recipient category may
/// receive. Critical in bulk, or at a lower count with location, communications or
/// financial data.
pub(super) fn check_bulk(f: &Facts<'_>, out: &mut Vec<Breach>) {
    if f.policy.rule(RuleId::VolumeBulkTransfer).is_none() || !f.over_bulk_limit {
        return;
    }
    let p = &f.policy.params;
    let n = f.event.record_count;
    let risky = f.cats.intersect(p.bulk_critical_with);
    let critical =
        n >= p.bulk_critical_from || (n >= p.bulk_critical_with_count && !risky.is_empty());
    let limit = f.profile.bulk_limit.unwrap_or(i64::MAX);
    let mut finding = Breach::new(Case::BulkOverLimit)
        .arg(Arg::Count, n)
        .arg(Arg::RecipientCategory, f.event.recipient.category)
        .arg(Arg::Recipient, &f.event.recipient.id)
        .arg(Arg::Limit, limit)
        .with_cats(if critical { risky } else { Default::default() });
    if critical {
        finding.severity = Some(Severity::Critical);
    }
    out.push(finding);
}

/// The subject limit of a recipient for `volume.recipient_rate`: its
/// registry entry's, else its category's; `None` when it has none.
pub fn rate_limit(policy: &Policy, recipient_id: &str, category: RecipientCategory) -> Option<u64> {
    policy
        .registry
        .get(recipient_id)
        .and_then(|e| e.max_subjects_per_hour)
        .or(policy.profile(category).max_subjects_per_hour)
}

/// The detail of a `volume.recipient_rate` violation.
pub fn rate_detail(
    count: usize,
    category: RecipientCategory,
    recipient: &str,
    window_ms: i64,
    limit: u64,
) -> Detail {
    Detail::new(Case::RateOverLimit)
        .arg(Arg::Count, count)
        .arg(Arg::RecipientCategory, category)
        .arg(Arg::Recipient, recipient)
        .arg(Arg::WindowSeconds, window_ms / 1000)
        .arg(Arg::Limit, limit)
}

/// A subject's identity in the windows: 64 bits of a hash of its id (the
/// user id offline, the keyed `subject_ref` in the cluster stage).
pub fn subject_key(id: &str) -> u64 {
    let mut h = FxHasher::default();
    id.hash(&mut h);
    h.finish()
}

/// The distinct subjects each limited recipient received within the sliding
/// window, by event time. Subjects are kept as 64-bit hashes of their ids.
///
/// Observations are judged in the order given. Given in event-time order
/// (the cluster stage sorts them), the outcome depends only on the set of
/// observations: an event is over the limit when the distinct subjects in
/// (t - window, t] exceed it, and it fires when no event of the previous
/// full window was over.
#[derive(Debug, Default)]
pub struct RateWindows {
    by_recipient: FxHashMap<String, Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// Subject -> the latest event time seen for it.
    last_seen: FxHashMap<u64, i64>,
    /// (event time, subject) in arrival order, for expiry.
    order: VecDeque<(i64, u64)>,
    /// The latest event time seen.
    max_t: i64,
    /// The last event time at which the count was over the limit.
    last_over: Option<i64>,
}

impl RateWindows {
    /// The offline engine's entry: counts the event of `f`; a finding when it
    /// takes the recipient over its limit (see `observe`).
    pub(super) fn observe_event(&mut self, f: &Facts<'_>) -> Option<Breach> {
        let r = &f.event.recipient;
        let limit = rate_limit(f.policy, &r.id, r.category)?;
        let window = f.policy.params.rate_window_millis;
        let key = subject_key(&f.event.subject.user_id);
        let count = self.observe(&r.id, key, f.event.occurred_at.millis(), limit, window)?;
        Some(Breach {
            detail: rate_detail(count, r.category, &r.id, window, limit),
            ..Breach::new(Case::RateOverLimit)
        })
    }

    /// Counts `subject` for `recipient` at `t`. `Some(count)` when this
    /// observation takes the recipient over `limit` and it was not already
    /// over within the last full window: the rule fires.
    pub fn observe(
        &mut self,
        recipient: &str,
        subject: u64,
        t: i64,
        limit: u64,
        window: i64,
    ) -> Option<usize> {
        if self
            .by_recipient
            .get(recipient)
            .is_some_and(|w| t <= w.max_t - window)
        {
            return None; // older than the window: it can change no count of it
        }
        let count = self.count_key(recipient, subject, t, window);
        let w = self.by_recipient.get_mut(recipient)?;
        if count as u64 <= limit {
            return None;
        }
        let fire = w.last_over.is_none_or(|last| t - last >= window);
        w.last_over = Some(w.last_over.map_or(t, |last| last.max(t)));
        fire.then_some(count)
    }

    /// Records (recipient, subject) at `t` and returns the distinct subjects
    /// within (max_t - window, max_t]. A repeated subject is counted once, so
    /// a re-delivered event changes nothing.
    pub fn count(&mut self, recipient: &str, subject: &str, t: i64, window: i64) -> usize {
        self.count_key(recipient, subject_key(subject), t, window)
    }

    fn count_key(&mut self, recipient: &str, key: u64, t: i64, window: i64) -> usize {
        let w = match self.by_recipient.get_mut(recipient) {
            Some(w) => w,
            None => self.by_recipient.entry(recipient.to_owned()).or_default(),
        };
        let newer = w.last_seen.get(&key).is_none_or(|&seen| t > seen);
        if newer && t > w.max_t - window {
            w.last_seen.insert(key, t);
            // Kept in event-time order, so that expiry stops at the first live entry.
            if w.order.back().is_none_or(|&(b, _)| b <= t) {
                w.order.push_back((t, key));
            } else {
                let i = w.order.partition_point(|&(b, _)| b <= t);
                w.order.insert(i, (t, key));
            }
        }
        w.max_t = w.max_t.max(t);
        let horizon = w.max_t - window;
        while let Some(&(ts, k)) = w.order.front() {
            if ts > horizon {
                break;
            }
            w.order.pop_front();
            if w.last_seen.get(&k).is_some_and(|&seen| seen <= horizon) {
                w.last_seen.remove(&k);
            }
        }
        w.last_seen.len()
    }

    /// Recipients tracked, and subjects held across them (for metrics and sizing).
    pub fn size(&self) -> (usize, usize) {
        (
            self.by_recipient.len(),
            self.by_recipient.values().map(|w| w.last_seen.len()).sum(),
        )
    }
}
