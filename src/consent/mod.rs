//! The consent table: each user's recent consent states, so that an event is
//! judged against the state that held at its `occurred_at`, whatever order
//! the event and a change of consent were read in.

use crate::model::{ConsentState, Timestamp};
use rustc_hash::FxHashMap;

/// Memory: a user costs one hash entry (two boxed slices, 32 bytes, at
/// hashbrown's load factor), the id once (as the key: the states kept have
/// their `user_id` emptied), and the states themselves, allocated to size.
/// BENCHMARKS.md, "Memory", has the measured figure.
#[derive(Debug)]
pub struct ConsentTable {
    /// Per user, states ordered by `updated_at`, oldest first.
    users: FxHashMap<Box<str>, Box<[ConsentState]>>,
    max_history: usize,
    /// A state superseded this long (ms) before the user's newest is
    /// dropped (`None`: only `max_history` bounds the history).
    horizon: Option<i64>,
}

impl ConsentTable {
    /// Keeps at most `max_history` (at least 1) states per user.
    pub fn new(max_history: usize) -> ConsentTable {
        ConsentTable {
            users: FxHashMap::default(),
            max_history: max_history.max(1),
            horizon: None,
        }
    }

    /// The table a policy asks for: by time (`consent_history_days`), at
    /// most `consent_history_per_user` states per user.
    pub fn for_policy(settings: &crate::policy::Settings) -> ConsentTable {
        let mut table = ConsentTable::new(settings.consent_history_per_user);
        table.horizon = Some(i64::from(settings.consent_history_days) * 86_400_000);
        table
    }

    /// Adds a state. One with the same `updated_at` replaces the old one
    /// (a re-delivered record changes nothing). A state is dropped when it
    /// was superseded before the horizon (only an event older than the
    /// user's newest state minus the horizon could need it), and the
    /// oldest beyond `max_history` (memory).
    pub fn upsert(&mut self, mut state: ConsentState) {
        let user = std::mem::take(&mut state.user_id);
        state.withdrawn_purposes.shrink_to_fit();
        state.separate_consents.shrink_to_fit();
        let Some(slot) = self.users.get_mut(user.as_str()) else {
            self.users.insert(user.into_boxed_str(), Box::new([state]));
            return;
        };
        let mut history = std::mem::take(slot).into_vec();
        match history.binary_search_by_key(&state.updated_at, |s| s.updated_at) {
            Ok(i) => history[i] = state,
            Err(i) => history.insert(i, state),
        }
        if let (Some(horizon), Some(newest)) = (self.horizon, history.last()) {
            let start = newest.updated_at.millis().saturating_sub(horizon);
            // The last state before the start is still in force at it: kept.
            let before = history.partition_point(|s| s.updated_at.millis() < start);
            history.drain(..before.saturating_sub(1));
        }
        if history.len() > self.max_history {
            let excess = history.len() - self.max_history;
            history.drain(..excess);
        }
        *slot = history.into_boxed_slice();
    }

    /// A tombstone: the user is gone from the table.
    pub fn remove(&mut self, user_id: &str) {
        self.users.remove(user_id);
    }

    /// The state that held at `t`: the latest with `updated_at <= t`. `None`
    /// when the user is unknown or every state kept is newer than `t`. Its
    /// `user_id` is empty (the table keeps the id once, as the key).
    pub fn as_of(&self, user_id: &str, t: Timestamp) -> Option<&ConsentState> {
        let history = self.users.get(user_id)?;
        let i = history.partition_point(|s| s.updated_at <= t);
        i.checked_sub(1).map(|i| &history[i])
    }

    pub fn users(&self) -> usize {
        self.users.len()
    }

    pub fn states(&self) -> usize {
        self.users.values().map(|h| h.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccountStatus;

    fn state(user: &str, at: &str, withdrawn: bool) -> ConsentState {
        ConsentState {
            user_id: user.into(),
            updated_at: Timestamp::parse_rfc3339(at).unwrap(),
            account_status: AccountStatus::Active,
            consent_withdrawn: withdrawn,
            withdrawn_purposes: vec![],
            personalized_ads_opt_out: false,
            personalized_recommendation_opt_out: false,
            separate_consents: vec![],
            birth_date: None,
            guardian_consent: None,
        }
    }

    fn t(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn the_state_as_of_an_instant_ignores_later_changes_read_first() {
        let mut table = ConsentTable::new(4);
        // The withdrawal is read before the older grant.
        table.upsert(state("u1", "2026-11-10T00:00:00Z", true));
        table.upsert(state("u1", "2026-11-01T00:00:00Z", false));
        assert!(
            !table
                .as_of("u1", t("2026-11-05T00:00:00Z"))
                .unwrap()
                .consent_withdrawn
        );
        assert!(
            table
                .as_of("u1", t("2026-11-10T00:00:00Z"))
                .unwrap()
                .consent_withdrawn
        );
        assert!(
            table.as_of("u1", t("2026-10-01T00:00:00Z")).is_none(),
            "before any known state"
        );
        assert!(table.as_of("u2", t("2026-11-05T00:00:00Z")).is_none());
    }

    /// By time, not by count: a burst of changes keeps every version an
    /// event within the horizon can need, however many; a version
    /// superseded before the horizon goes.
    #[test]
    fn history_is_kept_by_time_within_a_memory_bound() {
        let policy = crate::policy::load_default(Timestamp(0)).unwrap().policy;
        assert_eq!(policy.settings.consent_history_days, 30);
        let mut table = ConsentTable::for_policy(&policy.settings);
        // Forty changes in one day: all kept (16 used to be the limit).
        for minute in 0..40 {
            let at = format!("2026-11-20T10:{minute:02}:00Z");
            table.upsert(state("u1", &at, minute % 2 == 1));
        }
        assert_eq!(table.states(), 40);
        for minute in 0..40 {
            let at = t(&format!("2026-11-20T10:{minute:02}:30Z"));
            assert_eq!(
                table.as_of("u1", at).unwrap().consent_withdrawn,
                minute % 2 == 1
            );
        }
        // A change two months later: what was superseded before its horizon
        // goes, the one in force at the horizon's start stays.
        table.upsert(state("u1", "2027-01-25T00:00:00Z", false));
        assert_eq!(table.states(), 2);
        let at_start = table.as_of("u1", t("2026-12-26T00:00:00Z")).unwrap();
        assert!(
            at_start.consent_withdrawn,
            "the last of the burst (minute 39) holds then"
        );
        // The memory bound holds whatever the times.
        for second in 0..100 {
            table.upsert(state(
                "u2",
                &format!("2026-11-20T10:00:{:02}.{second:03}Z", second % 60),
                false,
            ));
        }
        assert!(table.as_of("u2", t("2026-11-21T00:00:00Z")).is_some());
        assert!(table.states() <= 2 + policy.settings.consent_history_per_user);
    }

    #[test]
    fn history_is_bounded_redelivery_is_idempotent_and_tombstones_delete() {
        let mut table = ConsentTable::new(2);
        for day in 1..=5 {
            table.upsert(state("u1", &format!("2026-11-0{day}T00:00:00Z"), false));
        }
        table.upsert(state("u1", "2026-11-05T00:00:00Z", true));
        assert_eq!(table.states(), 2);
        assert!(
            table
                .as_of("u1", t("2026-11-06T00:00:00Z"))
                .unwrap()
                .consent_withdrawn
        );
        table.remove("u1");
        assert_eq!(table.users(), 0);
    }
}
