//! The rate stage: the cluster-wide `volume.recipient_rate`, a member of
//! its own group on the internal rate topic (see [`super::ordering`] for
//! why and how it judges in event-time order). Here: reading the topic,
//! restoring a partition's windows when it is assigned, judging what the
//! watermark releases, checkpoints.

use super::ordering::{
    Arrival, Candidate, Checkpoint, Item, KIND_CHECKPOINT, KIND_HEADER, PartitionState, read_item,
};
use super::outputs::{self, Timed};
use super::stage::{Stage, StageIo};
use crate::audit::decide_rate;
use crate::kafka::restore::{Stored, read_partition};
use crate::kafka::{Marks, Output, Record};
use crate::model::{RuleId, Timestamp};
use crate::policy::Policy;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a new owner may take to replay a partition's windows.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the stage writes a checkpoint, at most.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

pub struct RateStage {
    pub(super) policy: watch::Receiver<Arc<Policy>>,
    pub(super) partitions: BTreeMap<i32, PartitionState>,
}

impl Stage for RateStage {
    /// A progress report, or a candidate: held for ordering, judged at once
    /// when late, skipped when a duplicate.
    fn record(&mut self, io: &mut StageIo, mut rec: Record) {
        let item = read_item(&rec.headers, rec.payload.take());
        let begun = {
            let mut marks = io.progress.lock();
            if matches!(item, Item::Candidate(_)) {
                marks.begin_held(rec.partition, rec.offset)
            } else {
                marks.begin(rec.partition, rec.offset, 0, None)
            }
        };
        if let Err(e) = begun {
            tracing::warn!(error = %e, "rate record not begun");
            return;
        }
        let v = match item {
            Item::Candidate(v) => v,
            Item::Progress(r) => {
                self.partitions.entry(rec.partition).or_default().report(r);
                return;
            }
            Item::Checkpoint(_) => return, // for a new owner's restore
            Item::Unreadable => {
                // Only shareaudit writes this topic: a record it cannot read is a bug or a stranger.
                observed(io, "invalid");
                tracing::error!(
                    partition = rec.partition,
                    offset = rec.offset,
                    "unreadable record on the recipient-rate topic; skipped"
                );
                return;
            }
        };
        let state = self.partitions.entry(rec.partition).or_default();
        match state.arrive(rec.offset, v, Timestamp::now().millis()) {
            Arrival::Duplicate => {
                observed(io, "duplicate");
                settle(io, rec.partition, Some(rec.offset), Vec::new());
            }
            Arrival::Late(v) => {
                observed(io, "late");
                self.judge(io, rec.partition, Some(rec.offset), v);
            }
            Arrival::Held => {}
        }
    }

    /// Partitions that came or went: state rebuilt, or dropped.
    async fn rebalanced(&mut self, io: &mut StageIo, changes: Vec<(i32, bool)>) {
        for (p, assigned) in changes {
            if assigned {
                let state = self.restore(io, p).await;
                self.partitions.insert(p, state);
            } else {
                self.partitions.remove(&p);
            }
        }
        self.pending(io);
    }

    fn tick(&mut self, io: &mut StageIo) {
        self.release(io);
        self.checkpoint(io);
    }

    /// Never paused: the progress reports that release held candidates
    /// come on the same partitions, behind them.
    fn backpressure(&self, _: &Marks, _: &crate::config::Settings, _: bool) -> bool {
        false
    }
}

fn observed(io: &StageIo, outcome: &str) {
    io.metrics
        .rate_observations
        .with_label_values(&[outcome])
        .inc();
}

/// Releases a held record with its outputs, and sends them. A candidate
/// below the group's commit (`offset` `None`) holds nothing: its outputs,
/// duplicates of acknowledged alerts, go untracked.
fn settle(io: &StageIo, partition: i32, offset: Option<i64>, out: Vec<Timed>) {
    let Some(offset) = offset else {
        for (output, _) in &out {
            io.sink.send_untracked(output);
        }
        return;
    };
    match io
        .progress
        .lock()
        .release(partition, offset, out.len() as u32)
    {
        Ok(true) => {}
        Ok(false) => return, // revoked meanwhile: the next owner judges it again
        Err(e) => {
            tracing::warn!(error = %e, "candidate not released");
            return;
        }
    }
    io.deliver(partition, offset, out);
}

impl RateStage {
    fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.borrow())
    }

    fn pending(&self, io: &StageIo) {
        io.metrics
            .rate_pending
            .set(self.partitions.values().map(|s| s.held.len() as i64).sum());
    }

    /// Judges, in event-time order, the held candidates every event
    /// partition has come past.
    fn release(&mut self, io: &mut StageIo) {
        let mut ready = Vec::new();
        for (p, state) in self.partitions.iter_mut() {
            ready.extend(state.ready().into_iter().map(|r| (*p, r)));
        }
        for (p, r) in ready {
            let duplicate = self
                .partitions
                .get(&p)
                .is_some_and(|s| s.judged.contains(&r.v.event_id));
            if duplicate {
                observed(io, "duplicate");
                settle(io, p, r.offset, Vec::new());
                continue;
            }
            observed(io, "counted");
            self.judge(io, p, r.offset, r.v);
        }
        self.pending(io);
    }

    /// Counts one candidate; alerts when it takes its recipient over the limit.
    fn judge(&mut self, io: &mut StageIo, partition: i32, offset: Option<i64>, c: Candidate) {
        let policy = self.policy();
        let fired = self
            .partitions
            .entry(partition)
            .or_default()
            .decide(&policy, &c);
        let mut out = Vec::new();
        if let Some(count) = fired
            && policy.rule(RuleId::VolumeRecipientRate).is_some()
        {
            match c.violation() {
                Ok(v) => {
                    // At the candidate's own detection time (its event's log
                    // time): whichever owner fires it, and however often, says the same.
                    let verdict = decide_rate(&policy, v, count, Timestamp(c.detected_at));
                    outputs::verdict(&io.settings, &io.metrics, &policy, &verdict, &mut out);
                }
                Err(e) => {
                    // Its keys were read, the rest is not a violation: only a
                    // stranger writes such a record (see `read_item`).
                    observed(io, "invalid");
                    tracing::error!(
                        partition,
                        offset,
                        line = e.line(),
                        column = e.column(),
                        "recipient-rate candidate fired but is not a whole violation; no alert"
                    );
                }
            }
        }
        settle(io, partition, offset, out);
    }

    /// A checkpoint per partition whose judged event time moved, once every
    /// alert sent for it is acknowledged.
    fn checkpoint(&mut self, io: &mut StageIo) {
        let mut out = Vec::new();
        {
            let marks = io.progress.lock();
            for (p, state) in self.partitions.iter_mut() {
                let moved = state.judged_time > state.checkpointed.unwrap_or(0);
                let due = state
                    .checkpointed_at
                    .is_none_or(|at| at.elapsed() >= CHECKPOINT_EVERY);
                if moved && due && marks.partition_drained(*p) {
                    state.checkpointed = Some(state.judged_time);
                    state.checkpointed_at = Some(Instant::now());
                    out.push(Output {
                        topic: io.settings.topics.recipient_rate.clone(),
                        key: None,
                        payload: Checkpoint {
                            judged_through: state.judged_time,
                        }
                        .encode(),
                        headers: vec![(
                            KIND_HEADER.to_owned(),
                            KIND_CHECKPOINT.as_bytes().to_vec(),
                        )],
                        partition: Some(*p),
                    });
                }
            }
        }
        for o in &out {
            io.sink.send_untracked(o);
        }
    }

    /// A new owner's windows, rebuilt (`PartitionState::rebuild`) from the
    /// partition read from the start of its retention to its end, and the
    /// group's commit. Without a commit, the whole partition is read again.
    async fn restore(&self, io: &StageIo, partition: i32) -> PartitionState {
        let started = Instant::now();
        // Where this owner starts reading: the commit; no commit, the start.
        // Unknown, every candidate read now counts as below it: those after
        // the checkpoint are judged again (duplicates), none is left out.
        let committed = match io
            .source
            .committed_offset(partition, Duration::from_secs(10))
        {
            Ok(c) => c.unwrap_or(0),
            Err(e) => {
                tracing::warn!(partition, error = %e, "recipient-rate commit not read; judging again all after the checkpoint");
                i64::MAX
            }
        };
        let settings = Arc::clone(&io.settings);
        let read = tokio::task::spawn_blocking(move || {
            read_partition(
                &settings,
                &format!("{}.restore", settings.rate_group_id()),
                &settings.topics.recipient_rate,
                partition,
                RESTORE_TIMEOUT,
            )
        })
        .await;
        let stored: Vec<Stored> = match read {
            Ok((stored, Ok(()))) => stored,
            Ok((stored, Err(e))) => {
                tracing::error!(partition, error = %e, "recipient-rate restore incomplete; windows start partial");
                stored
            }
            Err(e) => {
                tracing::error!(partition, error = %e, "recipient-rate restore failed; windows start partial");
                Vec::new()
            }
        };
        let read_through = stored.last().map(|(o, _, _)| *o);
        let records = stored
            .into_iter()
            .map(|(o, headers, payload)| (o, read_item(&headers, payload)))
            .collect();
        let (state, replayed) = PartitionState::rebuild(
            records,
            committed,
            &self.policy(),
            Timestamp::now().millis(),
        );
        observed_by(io, "restored", replayed);
        tracing::info!(
            partition,
            candidates = replayed,
            judged_again = state.held.len(),
            judged_through = state.restored_through,
            committed,
            read_through,
            seconds = started.elapsed().as_secs_f64(),
            "recipient-rate windows restored"
        );
        state
    }
}

fn observed_by(io: &StageIo, outcome: &str, n: u64) {
    io.metrics
        .rate_observations
        .with_label_values(&[outcome])
        .inc_by(n);
}
