//! How much: records per event, and distinct subjects per recipient per window.

use super::{Facts, Finding};
use crate::model::{RuleId, Severity};
use rustc_hash::{FxHashMap, FxHasher};
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

/// 5.2, 4.2: more records in one transmission than the recipient category may
/// receive. Critical in bulk, or at a lower count with location, communications or
/// financial data.
pub(super) fn check_bulk(f: &Facts<'_>, out: &mut Vec<Finding>) {
    if f.policy.rule(RuleId::VolumeBulkTransfer).is_none() || !f.over_bulk_limit {
        return;
    }
    let p = &f.policy.params;
    let n = f.event.record_count;
    let risky = f.cats.intersect(p.bulk_critical_with);
    let critical =
        n >= p.bulk_critical_from || (n >= p.bulk_critical_with_count && !risky.is_empty());
    let limit = f.profile.bulk_limit.unwrap_or(i64::MAX);
    let mut finding = Finding::new(
        RuleId::VolumeBulkTransfer,
        format!(
            "{n} records in one event to {} `{}` (limit {limit})",
            f.event.recipient.category, f.event.recipient.id
        ),
    )
    .with_cats(if critical { risky } else { Default::default() });
    if critical {
        finding.severity = Some(Severity::Critical);
    }
    out.push(finding);
}

/// The distinct subjects each limited recipient received within the sliding
/// window, by event time. Subjects are kept as 64-bit hashes of their ids.
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
    /// Counts the event; a finding when this event takes the recipient over
    /// its limit and it was not already over within the last full window.
    pub(super) fn observe(&mut self, f: &Facts<'_>) -> Option<Finding> {
        let r = &f.event.recipient;
        let limit = f
            .entry
            .and_then(|e| e.max_subjects_per_hour)
            .or(f.profile.max_subjects_per_hour)?;
        let window = f.policy.params.rate_window_millis;
        let count = self.count(
            &r.id,
            &f.event.subject.user_id,
            f.event.occurred_at.millis(),
            window,
        );
        let w = self.by_recipient.get_mut(r.id.as_str())?;
        if count as u64 <= limit {
            return None;
        }
        let t = f.event.occurred_at.millis();
        let fire = w.last_over.is_none_or(|last| t - last >= window);
        w.last_over = Some(w.last_over.map_or(t, |last| last.max(t)));
        fire.then(|| {
            Finding::new(
                RuleId::VolumeRecipientRate,
                format!(
                    "{count} distinct subjects to {} `{}` within {} s (limit {limit})",
                    r.category,
                    r.id,
                    window / 1000
                ),
            )
        })
    }

    /// Records (recipient, subject) at `t` and returns the distinct subjects
    /// within (max_t - window, max_t]. A repeated subject is counted once, so
    /// a re-delivered event changes nothing.
    pub fn count(&mut self, recipient: &str, subject: &str, t: i64, window: i64) -> usize {
        let w = match self.by_recipient.get_mut(recipient) {
            Some(w) => w,
            None => self.by_recipient.entry(recipient.to_owned()).or_default(),
        };
        let mut h = FxHasher::default();
        subject.hash(&mut h);
        let key = h.finish();
        let newer = w.last_seen.get(&key).is_none_or(|&seen| t > seen);
        if newer {
            w.last_seen.insert(key, t);
            w.order.push_back((t, key));
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
