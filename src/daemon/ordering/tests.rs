use super::*;
use crate::model::{
    Flow, LegalBasis, Mode, PolicyVersion, Purpose, RecipientCategory, Severity, Timestamp,
    Violation,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

/// The stage's clock in these tests: later than every log time.
const NOW: i64 = i64::MAX;

pub(super) fn candidate(event_id: &str, t: i64) -> Violation {
    Violation {
        alert_id: String::new(),
        rule_id: "volume.recipient_rate".into(),
        clause: "5.2".into(),
        severity: Severity::High,
        title: String::new(),
        title_zh: String::new(),
        detail: String::new(),
        detail_zh: String::new(),
        event_id: event_id.into(),
        occurred_at: Timestamp(t),
        detected_at: Timestamp(t),
        recipient_id: "partner-crm".into(),
        recipient_category: RecipientCategory::AuthorizedPartner,
        recipient_region: "CN".into(),
        purpose: Purpose::CustomerService,
        legal_basis: LegalBasis::Consent,
        flow: Flow::Share,
        categories: vec![],
        fields: vec![],
        subject_ref: format!("s-{}", t % 7),
        record_count: 1,
        mode: Mode::Enforce,
        policy_version: PolicyVersion {
            version: "t".into(),
            hash: "h".into(),
        },
        source: None,
    }
}

/// A candidate as the rate stage reads it from the topic.
fn on_topic(v: Violation) -> Candidate {
    Candidate::read(crate::codec::encode_candidate(&v)).expect("a candidate record")
}

/// Three event partitions, owned by replicas that run at different
/// speeds: their candidates and reports interleave differently each
/// time, and the judged order is always the event-time order.
#[test]
fn candidates_are_judged_in_event_time_order_whatever_the_interleaving() {
    let sources = 3;
    // Per source partition, candidates with increasing event times.
    let mut streams: Vec<Vec<(i64, String)>> = vec![Vec::new(); sources];
    for i in 0..300i64 {
        streams[(i % 3) as usize].push((i * 10, format!("e-{i:04}")));
    }
    let mut want: Vec<(i64, String)> = streams.iter().flatten().cloned().collect();
    want.sort();
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut state = PartitionState::default();
        let mut next = vec![0usize; sources];
        let mut offset = 0i64;
        let mut judged = Vec::new();
        while next.iter().zip(&streams).any(|(n, s)| *n < s.len()) {
            let p = rng.random_range(0..sources);
            let stream = &streams[p];
            if next[p] >= stream.len() {
                continue;
            }
            // A replica sends a few candidates, then reports how far it is.
            let burst = rng.random_range(1..5).min(stream.len() - next[p]);
            for (t, id) in &stream[next[p]..next[p] + burst] {
                offset += 1;
                let arrival = state.arrive(offset, on_topic(candidate(id, *t)), NOW);
                assert!(matches!(arrival, Arrival::Held), "{arrival:?}");
            }
            next[p] += burst;
            // A partition read to its end is read through every log time.
            state.report(ProgressReport {
                source_partition: p as i32,
                event_time: stream[next[p] - 1].0,
                sources,
                idle_through: (next[p] == stream.len()).then_some(NOW),
            });
            judged.extend(
                state
                    .ready()
                    .into_iter()
                    .map(|r| (r.v.occurred_at, r.v.event_id)),
            );
        }
        assert_eq!(judged, want, "seed {seed}");
        assert!(state.held.is_empty());
    }
}

fn report(p: i32, event_time: i64, idle_through: Option<i64>) -> ProgressReport {
    ProgressReport {
        source_partition: p,
        event_time,
        sources: 2,
        idle_through,
    }
}

#[test]
fn nothing_is_judged_before_every_event_partition_reported() {
    let mut state = PartitionState::default();
    state.arrive(1, on_topic(candidate("a", 5)), NOW);
    state.report(report(0, 100, None));
    assert!(state.ready().is_empty(), "partition 1 has not reported");
    state.report(report(1, 4, None));
    assert!(state.ready().is_empty(), "partition 1 is not past 5 yet");
    state.report(report(1, 3, None));
    assert_eq!(state.progress[&1].event_time, 4, "reports never go back");
    // The first form's "idle" (i64::MAX until the next report) is no progress.
    state.report(report(1, i64::MAX, None));
    assert!(state.ready().is_empty());
    state.report(report(1, 4, Some(4)));
    assert!(state.ready().is_empty(), "read through log time 4, not 5");
    state.report(report(1, 4, Some(5)));
    assert_eq!(
        state.ready().len(),
        1,
        "read through the candidate's log time"
    );
}

/// Issue 14's idle partition: partition 1 was idle (read through log time
/// 1,000), then an event (1,500) is logged on it, then one on partition 0
/// (2,000), whose replica is faster. The first rule took an idle partition
/// as past everything until its next report, and judged 2,000 first: the
/// event of 1,500 came `late`. Now 2,000 waits for partition 1 to be read
/// through its log time, and the two are judged in event-time order.
#[test]
fn an_idle_partition_holds_what_was_logged_after_it_was_read_through() {
    let mut state = PartitionState::default();
    state.report(report(1, i64::MIN, Some(1_000)));
    assert!(matches!(
        state.arrive(1, on_topic(candidate("late-reader", 2_000)), NOW),
        Arrival::Held
    ));
    state.report(report(0, 2_000, Some(2_100)));
    assert!(
        state.ready().is_empty(),
        "partition 1 is read through 1,000 only"
    );
    assert!(matches!(
        state.arrive(2, on_topic(candidate("idle-partition", 1_500)), NOW),
        Arrival::Held
    ));
    state.report(report(1, 1_500, Some(2_050)));
    let judged: Vec<String> = state.ready().into_iter().map(|r| r.v.event_id).collect();
    assert_eq!(judged, ["idle-partition", "late-reader"]);

    // With no event on it, a newer probe of the idle partition releases.
    let mut state = PartitionState::default();
    state.report(report(1, i64::MIN, Some(1_000)));
    state.arrive(1, on_topic(candidate("c", 2_000)), NOW);
    state.report(report(0, 2_000, None));
    assert!(state.ready().is_empty());
    state.report(report(1, i64::MIN, Some(2_000)));
    assert_eq!(state.ready().len(), 1);
}

/// A candidate whose record's time is far ahead of the stage's clock (a
/// producer's clock, or a hostile timestamp) is taken as logged when the
/// stage read it: idle partitions release it once read through that.
#[test]
fn a_log_time_ahead_of_the_clock_is_taken_as_the_time_read() {
    let mut state = PartitionState::default();
    let mut v = candidate("ahead", 2_000);
    v.detected_at = Timestamp(9_000_000_000_000);
    state.arrive(1, on_topic(v), 3_000);
    state.report(report(0, 2_000, None));
    state.report(report(1, i64::MIN, Some(2_999)));
    assert!(state.ready().is_empty());
    state.report(report(1, i64::MIN, Some(3_000)));
    assert_eq!(state.ready().len(), 1);
}

/// Events logged in event-time order on three partitions, each partition
/// idle for long stretches (the traffic moves between them), read by
/// replicas at their own pace, reporting at random moments with end
/// probes: every candidate is judged in event-time order, none is `late`,
/// and each as soon as every partition came past it.
#[test]
fn partitions_that_go_idle_and_wake_up_never_make_a_candidate_late() {
    let sources = 3usize;
    for seed in 0..200 {
        let mut rng = StdRng::seed_from_u64(seed);
        // The log: (log time = event time, partition), in logging order.
        let mut log: Vec<(i64, usize)> = Vec::new();
        let mut t = 0i64;
        let mut hot = 0usize;
        for _ in 0..240 {
            if rng.random_bool(0.1) {
                hot = rng.random_range(0..sources);
            }
            t += rng.random_range(1..50);
            let p = if rng.random_bool(0.9) {
                hot
            } else {
                rng.random_range(0..sources)
            };
            log.push((t, p));
        }
        let per: Vec<Vec<i64>> = (0..sources)
            .map(|p| log.iter().filter(|e| e.1 == p).map(|e| e.0).collect())
            .collect();
        let mut logged = 0usize; // how much of `log` the broker holds
        let mut read = vec![0usize; sources]; // per partition, events its replica read
        // What each replica has sent the rate topic and the stage has not read.
        let mut queues: Vec<VecDeque<Item>> = (0..sources).map(|_| VecDeque::new()).collect();
        let mut state = PartitionState::default();
        let mut judged = Vec::new();
        let mut offset = 0i64;
        loop {
            let now = if logged == 0 { 0 } else { log[logged - 1].0 };
            let all_read = (0..sources).all(|p| read[p] == per[p].len());
            if logged == log.len() && all_read && queues.iter().all(VecDeque::is_empty) {
                break;
            }
            match rng.random_range(0..4) {
                0 if logged < log.len() => logged += 1,
                1 => {
                    // A replica reads one event logged so far on its partition.
                    let p = rng.random_range(0..sources);
                    let available = per[p].iter().filter(|&&e| e <= now).count();
                    if read[p] < available {
                        let e = per[p][read[p]];
                        read[p] += 1;
                        queues[p].push_back(Item::Candidate(on_topic(candidate(
                            &format!("e-{e:06}"),
                            e,
                        ))));
                    }
                }
                2 => {
                    // A replica reports: event time done, and, if it has read
                    // everything logged so far, an end probe asked now.
                    let p = rng.random_range(0..sources);
                    let available = per[p].iter().filter(|&&e| e <= now).count();
                    queues[p].push_back(Item::Progress(ProgressReport {
                        source_partition: p as i32,
                        event_time: if read[p] == 0 {
                            i64::MIN
                        } else {
                            per[p][read[p] - 1]
                        },
                        sources,
                        idle_through: (read[p] == available).then_some(now),
                    }));
                }
                _ => {
                    // The stage reads the next record some replica sent.
                    let p = rng.random_range(0..sources);
                    if let Some(item) = queues[p].pop_front() {
                        offset += 1;
                        match item {
                            Item::Candidate(v) => {
                                let arrival = state.arrive(offset, v, NOW);
                                assert!(
                                    matches!(arrival, Arrival::Held),
                                    "seed {seed}: {arrival:?}"
                                );
                            }
                            Item::Progress(r) => state.report(r),
                            _ => {}
                        }
                        for r in state.ready() {
                            state.judged(r.v.occurred_at, &r.v.event_id, 1 << 40);
                            judged.push(r.v.occurred_at);
                        }
                    }
                }
            }
            // Once everything is logged and read, the replicas report at the end.
            if logged == log.len()
                && all_read
                && queues.iter().all(VecDeque::is_empty)
                && !state.held.is_empty()
            {
                for (p, q) in queues.iter_mut().enumerate() {
                    q.push_back(Item::Progress(ProgressReport {
                        source_partition: p as i32,
                        event_time: per[p].last().copied().unwrap_or(i64::MIN),
                        sources,
                        idle_through: Some(now),
                    }));
                }
            }
        }
        let want: Vec<i64> = log.iter().map(|e| e.0).collect();
        assert_eq!(judged, want, "seed {seed}");
    }
}

/// The rate topic as the producers fill it, and the members that read it.
struct Log {
    /// What the event pipelines will produce, in order.
    pending: VecDeque<Item>,
    records: Vec<(i64, Item)>,
}

impl Log {
    /// Three event partitions' candidates (increasing event times per
    /// partition, thirty subjects, one recipient) in bursts, each
    /// burst followed by the report of how far that partition is.
    fn generate(rng: &mut StdRng, events: usize) -> Log {
        let sources = 3;
        let mut clock = vec![0i64; sources];
        let mut left = vec![events / sources; sources];
        let mut pending = VecDeque::new();
        let mut n = 0;
        while left.iter().any(|l| *l > 0) {
            let p = rng.random_range(0..sources);
            if left[p] == 0 {
                continue;
            }
            let burst = rng.random_range(1..6).min(left[p]);
            for _ in 0..burst {
                clock[p] += rng.random_range(1..16_000);
                let mut v = candidate(&format!("e-{n:05}"), clock[p]);
                v.subject_ref = format!("s-{}", rng.random_range(0..30));
                pending.push_back(Item::Candidate(on_topic(v)));
                n += 1;
            }
            left[p] -= burst;
            pending.push_back(Item::Progress(ProgressReport {
                source_partition: p as i32,
                event_time: clock[p],
                sources,
                idle_through: (left[p] == 0).then_some(NOW),
            }));
        }
        Log {
            pending,
            records: Vec::new(),
        }
    }

    /// The producers append up to `n` more records.
    fn grow(&mut self, n: usize) {
        for _ in 0..n {
            let Some(item) = self.pending.pop_front() else {
                return;
            };
            let offset = self.records.len() as i64;
            self.records.push((offset, item));
        }
    }

    fn item(&self, offset: usize) -> Item {
        match &self.records[offset].1 {
            Item::Candidate(v) => Item::Candidate(v.clone()),
            Item::Progress(r) => Item::Progress(*r),
            Item::Checkpoint(c) => Item::Checkpoint(*c),
            Item::Unreadable => Item::Unreadable,
        }
    }
}

/// A member of the rate group, as `RateStage` drives a partition, with
/// acknowledgements at once: what it fired, and where it may commit.
struct Member {
    state: PartitionState,
    next: usize,
    /// Offsets of candidates read and not yet judged.
    unjudged: BTreeSet<i64>,
    fired: BTreeSet<String>,
}

impl Member {
    fn new(state: PartitionState, from: usize) -> Member {
        Member {
            state,
            next: from,
            unjudged: BTreeSet::new(),
            fired: BTreeSet::new(),
        }
    }

    fn read(&mut self, log: &Log, policy: &Policy) {
        let offset = self.next as i64;
        match log.item(self.next) {
            Item::Candidate(v) => match self.state.arrive(offset, v, NOW) {
                Arrival::Held => {
                    self.unjudged.insert(offset);
                }
                Arrival::Late(v) => self.judge(policy, &v),
                Arrival::Duplicate => {}
            },
            Item::Progress(r) => self.state.report(r),
            _ => {}
        }
        self.next += 1;
        for r in self.state.ready() {
            if let Some(o) = r.offset {
                self.unjudged.remove(&o);
            }
            if !self.state.judged.contains(&r.v.event_id) {
                self.judge(policy, &r.v);
            }
        }
    }

    fn judge(&mut self, policy: &Policy, v: &Candidate) {
        if self.state.decide(policy, v).is_some() {
            self.fired.insert(v.event_id.clone());
        }
    }

    /// The group's commit: the first candidate not judged, or the position.
    fn commit(&self) -> i64 {
        self.unjudged.first().copied().unwrap_or(self.next as i64)
    }
}

fn rate_policy() -> Policy {
    let text = crate::policy::DEFAULT_POLICY
        .replace("max_subjects_per_hour: 1000", "max_subjects_per_hour: 5")
        .replace("window_seconds: 3600", "window_seconds: 20");
    crate::policy::load(&text, "rate.yaml", Timestamp(0))
        .unwrap()
        .policy
}

/// An owner reads while the producers write and checkpoints now and
/// then; it is killed at a random point; the next owner rebuilds from
/// the partition and the commit, and reads on. Together they fire on
/// exactly the candidates one owner reading it all fires on.
#[test]
fn a_new_owner_goes_on_exactly_where_a_killed_one_stopped() {
    let policy = rate_policy();
    let mut fired_somewhere = 0;
    for seed in 0..200 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut log = Log::generate(&mut rng, 240);
        let total = log.pending.len();

        // One owner, from the start to the end: the truth.
        let mut truth_log = Log {
            pending: log
                .pending
                .iter()
                .map(|i| match i {
                    Item::Candidate(v) => Item::Candidate(v.clone()),
                    Item::Progress(r) => Item::Progress(*r),
                    _ => Item::Unreadable,
                })
                .collect(),
            records: Vec::new(),
        };
        truth_log.grow(total);
        let mut one = Member::new(PartitionState::default(), 0);
        while one.next < truth_log.records.len() {
            one.read(&truth_log, &policy);
        }
        assert!(one.state.held.is_empty());

        // The first owner, killed after a random number of reads.
        let mut first = Member::new(PartitionState::default(), 0);
        let kill_after = rng.random_range(1..total);
        for _ in 0..kill_after {
            log.grow(rng.random_range(0..4));
            if first.next >= log.records.len() {
                log.grow(1);
            }
            first.read(&log, &policy);
            if rng.random_bool(0.2)
                && first.state.judged_time > first.state.checkpointed.unwrap_or(0)
            {
                first.state.checkpointed = Some(first.state.judged_time);
                let offset = log.records.len() as i64;
                log.records.push((
                    offset,
                    Item::Checkpoint(Checkpoint {
                        judged_through: first.state.judged_time,
                    }),
                ));
            }
        }
        let committed = first.commit();

        // The next owner: rebuilt from the partition as it is now, then reads from the commit.
        // Also when it could not read the commit (`restore` then takes
        // everything read as below it): more judged again, nothing lost.
        let records = |log: &Log| -> Vec<(i64, Item)> {
            (0..log.records.len())
                .map(|o| (o as i64, log.item(o)))
                .collect()
        };
        let (state, _) = PartitionState::rebuild(records(&log), committed, &policy, NOW);
        let (blind, _) = PartitionState::rebuild(records(&log), i64::MAX, &policy, NOW);
        let mut second = Member::new(state, committed as usize);
        let mut second_blind = Member::new(blind, committed as usize);
        log.grow(total);
        for m in [&mut second, &mut second_blind] {
            while m.next < log.records.len() {
                m.read(&log, &policy);
            }
            assert!(m.state.held.is_empty(), "seed {seed}: all judged");
            let together: BTreeSet<String> = first.fired.union(&m.fired).cloned().collect();
            assert_eq!(
                together, one.fired,
                "seed {seed}: killed after {kill_after} of {total}"
            );
        }
        fired_somewhere += one.fired.len();
    }
    assert!(
        fired_somewhere > 200,
        "the limit is crossed often: {fired_somewhere}"
    );
}

#[test]
fn a_late_observation_neither_counts_outside_its_window_nor_outlives_it() {
    let mut w = volume::RateWindows::default();
    let window = 1_000;
    for (i, t) in [10_000i64, 10_500, 10_900].iter().enumerate() {
        assert_eq!(w.observe("r", i as u64, *t, 10, window), None);
    }
    // Late but inside the window: counted, and kept in time order.
    assert_eq!(w.count("r", "late", 10_200, window), 4);
    // Older than the window: changes nothing, and cannot fire.
    assert_eq!(w.observe("r", 99, 9_000, 0, window), None);
    assert_eq!(w.size(), (1, 4));
    // Time moves on: the late one expires with its peers, not after them.
    assert_eq!(
        w.count("r", "next", 11_300, window),
        3,
        "10,500, 10,900 and 11,300 remain"
    );
}

#[test]
fn judged_event_ids_are_remembered_for_two_windows() {
    let mut state = PartitionState::default();
    state.judged(1_000, "old", 100);
    state.judged(1_150, "mid", 100);
    assert!(state.judged.contains("old"));
    state.judged(1_300, "new", 100);
    assert!(!state.judged.contains("old"), "older than two windows");
    assert!(state.judged.contains("mid") && state.judged.contains("new"));
}
