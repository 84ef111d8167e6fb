//! The ordering logic of the recipient-rate stage, with no Kafka in it:
//! what one partition of the rate topic holds (candidates waiting for the
//! event-time watermark, the progress each event partition reported, the
//! windows, the event ids judged), how a candidate arrives, when it is
//! judged, and how a new owner rebuilds it all from the partition's
//! records. [`super::rate`] drives it from a consumer.
//!
//! Events are keyed by user, so every replica sees a share of each
//! recipient's events. The event pipeline therefore does not count them: for
//! each event to a limited recipient it produces the violation that event
//! would be (the *candidate*: no personal value, the subject as its keyed
//! `subject_ref`) to an internal topic keyed by recipient, as Kafka Streams
//! repartitions. This stage, a member of its own consumer group on that
//! topic, sees all of a recipient's candidates in one place and counts them.
//!
//! - **Event-time order.** Candidates from several replicas interleave in
//!   any order. So that the outcome is the one a single process judging
//!   the stream in event-time order gets, whatever the number of replicas,
//!   the stage judges a candidate only once every partition of the event
//!   topic is known to have come past it: each replica reports, to every
//!   partition of the rate topic, how far in event time each of its event
//!   partitions is acknowledged, and up to which log time it has read and
//!   acknowledged everything the broker holds (from an end probe, as the
//!   consent reader's). A partition has come past a candidate when its
//!   event time has, or when it is read through the candidate's log time:
//!   events are logged in event-time order, so nothing it yields later is
//!   older. Candidates are held until every partition has come past them,
//!   then judged sorted by (event time, event id), as Flink's watermarks
//!   order a stream. A candidate older than one already judged (an event
//!   partition whose event times go backwards, a producer that logs out of
//!   event-time order) is judged at once and counted as `late`.
//! - **Commits.** A held candidate holds its partition's watermark
//!   (`Watermark::begin_held`); a judged one releases it with its output
//!   (a violation) or none.
//! - **Rebalances.** Once every alert of what it judged is acknowledged,
//!   the stage writes a checkpoint (the event time it judged through) into
//!   the partition. A new owner reads the partition to its end, replays the
//!   progress reports and, without alerting, the candidates up to the
//!   latest checkpoint, in event-time order: its windows are then the
//!   previous owner's. The topic's retention covers that.
//! - **Duplicates.** A candidate produced twice (its event re-audited after
//!   a crash) is recognised by its event id and judged once; one judged
//!   again after this stage's own crash gives the same decision and the
//!   same `alert_id`.

use crate::audit::volume;
use crate::policy::Policy;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Instant;

/// The header that marks a progress report on the rate topic.
pub const KIND_HEADER: &str = "shareaudit.kind";
pub const KIND_PROGRESS: &str = "progress";
/// A checkpoint: the stage judged every candidate of this partition up to
/// `judged_through` (event time), and their alerts are acknowledged.
pub const KIND_CHECKPOINT: &str = "checkpoint";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub judged_through: i64,
}

/// "Every event of `source_partition` up to `event_time` has its candidate
/// on this topic", and, with `idle_through`, "every event of it logged at or
/// before that time (ms) has its candidate on this topic", from the replica
/// that owns it; `sources` is the number of event partitions.
///
/// The first form of the report said "idle" with `event_time` `i64::MAX`,
/// until the partition's next report; that is read as no progress (see
/// [`PartitionState::report`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressReport {
    pub source_partition: i32,
    pub event_time: i64,
    pub sources: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_through: Option<i64>,
}

impl ProgressReport {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What a record of the rate topic is.
pub enum Item {
    Candidate(Candidate),
    Progress(ProgressReport),
    Checkpoint(Checkpoint),
    Unreadable,
}

/// Tells a record of the rate topic by its kind header.
pub fn read_item(headers: &[(String, Vec<u8>)], payload: Option<Vec<u8>>) -> Item {
    let kind = headers
        .iter()
        .find(|(k, _)| k == KIND_HEADER)
        .map(|(_, v)| v.as_slice());
    let Some(b) = payload else {
        return Item::Unreadable;
    };
    match kind {
        Some(k) if k == KIND_PROGRESS.as_bytes() => {
            serde_json::from_slice(&b).map_or(Item::Unreadable, Item::Progress)
        }
        Some(k) if k == KIND_CHECKPOINT.as_bytes() => {
            serde_json::from_slice(&b).map_or(Item::Unreadable, Item::Checkpoint)
        }
        Some(_) => Item::Unreadable,
        None => Candidate::read(b).map_or(Item::Unreadable, Item::Candidate),
    }
}

/// The order candidates are judged in.
pub type Key = (i64, String, i64);

/// A candidate waiting for the watermark.
pub struct Held {
    pub v: Candidate,
    /// Its event's log time, as the idle rule compares it (`log_time`).
    pub log_time: i64,
    /// Below the group's commit: the previous owner judged it and its
    /// alerts were acknowledged, so it holds no offset of this owner's and
    /// its alerts (duplicates) are sent untracked.
    pub committed: bool,
}

/// A candidate the watermark has passed, to be judged.
pub struct Ready {
    /// `None`: below the group's commit (see `Held::committed`).
    pub offset: Option<i64>,
    pub v: Candidate,
}

/// What became of an arriving candidate.
#[derive(Debug)]
pub enum Arrival {
    /// Judged before (here, or by the previous owner up to its checkpoint).
    Duplicate,
    /// Older than what was judged already: judge it at once.
    Late(Candidate),
    /// Waits for the watermark.
    Held,
}

/// How far one event partition has come, from its reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    /// Every event up to this event time has its candidate here.
    pub event_time: i64,
    /// Every event logged at or before this time has its candidate here.
    pub log_time: i64,
}

impl Reached {
    /// Whether the partition has come past a candidate of event time `t`
    /// logged at `logged`.
    fn past(&self, t: i64, logged: i64) -> bool {
        self.event_time >= t || self.log_time >= logged
    }
}

/// The log time the idle rule takes for a candidate: its event's
/// (`detected_at`), but never later than `now`, when the stage reads it
/// (the event was logged before its candidate was): a producer's clock far
/// ahead must not hold the stage until the stage's clock catches up.
pub fn log_time(v: &Candidate, now: i64) -> i64 {
    v.detected_at.min(now)
}

#[derive(Default)]
pub struct PartitionState {
    pub windows: volume::RateWindows,
    /// Held candidates by (event time, event id, offset).
    pub held: BTreeMap<Key, Held>,
    /// Per event partition, how far it is reported to have come.
    pub progress: BTreeMap<i32, Reached>,
    /// How many event partitions there are (from the reports).
    pub sources: usize,
    /// The latest event time judged.
    pub judged_time: i64,
    /// Event ids judged recently (duplicates are judged once), with their times for pruning.
    pub judged: HashSet<String>,
    pub judged_order: VecDeque<(i64, String)>,
    /// The last checkpoint written or restored (event time), and when.
    pub checkpointed: Option<i64>,
    /// The checkpoint a restore replayed through: every candidate at or
    /// before it was judged by the previous owner.
    pub restored_through: Option<i64>,
    pub checkpointed_at: Option<Instant>,
}

impl PartitionState {
    /// Whether every event partition has come past a candidate of event
    /// time `t` logged at `logged`.
    pub fn passed(&self, t: i64, logged: i64) -> bool {
        self.sources > 0
            && self.progress.len() >= self.sources
            && self.progress.values().all(|r| r.past(t, logged))
    }

    /// The held candidates every event partition has come past, in judging
    /// order: up to the first that some partition has not.
    pub fn ready(&mut self) -> Vec<Ready> {
        let mut out = Vec::new();
        while let Some((key, h)) = self.held.first_key_value() {
            if !self.passed(key.0, h.log_time) {
                break;
            }
            let Some(entry) = self.held.first_entry() else {
                break;
            };
            let offset = entry.key().2;
            let h = entry.remove();
            out.push(Ready {
                offset: (!h.committed).then_some(offset),
                v: h.v,
            });
        }
        out
    }

    /// A progress report. Both of a partition's marks only move forward:
    /// what they say stays true. An `event_time` of `i64::MAX` is the
    /// first form's "idle until my next report", which nothing here could
    /// undo: it is read as no progress (during a rolling upgrade, an old
    /// replica's idle partitions hold candidates until it is gone).
    pub fn report(&mut self, r: ProgressReport) {
        self.sources = self.sources.max(r.sources);
        let reached = self.progress.entry(r.source_partition).or_insert(Reached {
            event_time: i64::MIN,
            log_time: i64::MIN,
        });
        if r.event_time != i64::MAX {
            reached.event_time = reached.event_time.max(r.event_time);
        }
        if let Some(t) = r.idle_through {
            reached.log_time = reached.log_time.max(t);
        }
    }

    /// A candidate read at `offset` of this partition, at `now` (ms).
    pub fn arrive(&mut self, offset: i64, v: Candidate, now: i64) -> Arrival {
        let t = v.occurred_at;
        let replayed = self.restored_through.is_some_and(|through| t <= through);
        if replayed || self.judged.contains(&v.event_id) {
            Arrival::Duplicate
        } else if t < self.judged_time {
            Arrival::Late(v)
        } else {
            self.held.insert(
                (t, v.event_id.clone(), offset),
                Held {
                    log_time: log_time(&v, now),
                    v,
                    committed: false,
                },
            );
            Arrival::Held
        }
    }

    /// Counts a candidate in its recipient's window: `Some(count)` when it
    /// takes the recipient over its limit (the rule fires). The candidate
    /// is remembered as judged.
    pub fn decide(&mut self, policy: &Policy, v: &Candidate) -> Option<usize> {
        let t = v.occurred_at;
        let window = policy.params.rate_window_millis;
        let fired =
            volume::rate_limit(policy, &v.recipient_id, v.recipient_category).and_then(|limit| {
                self.windows
                    .observe(&v.recipient_id, v.subject, t, limit, window)
            });
        self.judged(t, &v.event_id, window);
        fired
    }

    /// Remembers a judged event; forgets those too old to come again.
    pub fn judged(&mut self, t: i64, event_id: &str, window: i64) {
        self.judged_time = self.judged_time.max(t);
        if self.judged.insert(event_id.to_owned()) {
            self.judged_order.push_back((t, event_id.to_owned()));
        }
        let horizon = self.judged_time.saturating_sub(window.saturating_mul(2));
        while let Some((t, _)) = self.judged_order.front() {
            if *t >= horizon {
                break;
            }
            if let Some((_, id)) = self.judged_order.pop_front() {
                self.judged.remove(&id);
            }
        }
    }

    /// A new owner's state, from the partition's records up to its end and
    /// the group's commit (the first offset this owner reads itself):
    ///
    /// - the candidates up to the latest checkpoint (wherever they sit) are
    ///   counted, without alerting: the previous owner judged them and its
    ///   alerts were acknowledged;
    /// - the candidates after the checkpoint but below the commit were
    ///   judged too, but after the checkpoint, so not necessarily before
    ///   every candidate the new owner reads (the commit stops at the first
    ///   held candidate, not at the last judged one): they are held again
    ///   and judged in event-time order with what comes, their alerts
    ///   duplicates of acknowledged ones;
    /// - the progress reports below the commit are replayed; those after it
    ///   come again, after the candidates they vouch for.
    ///
    /// Returns the state and how many candidates were counted silently.
    pub fn rebuild(
        records: Vec<(i64, Item)>,
        committed: i64,
        policy: &Policy,
        now: i64,
    ) -> (Self, u64) {
        let mut state = PartitionState::default();
        let through = records
            .iter()
            .filter_map(|(_, item)| match item {
                Item::Checkpoint(c) => Some(c.judged_through),
                _ => None,
            })
            .max();
        let mut replay: BTreeMap<(i64, String), Candidate> = BTreeMap::new();
        let mut again: Vec<(i64, Candidate)> = Vec::new();
        for (offset, item) in records {
            match item {
                Item::Candidate(v) => {
                    let t = v.occurred_at;
                    if through.is_some_and(|through| t <= through) {
                        replay.insert((t, v.event_id.clone()), v);
                    } else if offset < committed {
                        again.push((offset, v));
                    }
                }
                Item::Progress(r) if offset < committed => state.report(r),
                _ => {}
            }
        }
        let replayed = replay.len() as u64;
        for v in replay.into_values() {
            state.decide(policy, &v);
        }
        if let Some(through) = through {
            state.checkpointed = Some(through);
            state.restored_through = Some(through);
        }
        for (offset, v) in again {
            if state.judged.contains(&v.event_id) {
                continue;
            }
            state.held.insert(
                (v.occurred_at, v.event_id.clone(), offset),
                Held {
                    log_time: log_time(&v, now),
                    v,
                    committed: true,
                },
            );
        }
        (state, replayed)
    }
}

mod candidate;
pub use candidate::Candidate;

#[cfg(test)]
mod tests;
