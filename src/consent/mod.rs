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
}

impl ConsentTable {
    /// Keeps at most `max_history` (at least 1) states per user.
    pub fn new(max_history: usize) -> ConsentTable {
        ConsentTable {
            users: FxHashMap::default(),
            max_history: max_history.max(1),
        }
    }

    /// Adds a state. One with the same `updated_at` replaces the old one
    /// (a re-delivered record changes nothing); the oldest beyond the
    /// history limit are dropped.
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
