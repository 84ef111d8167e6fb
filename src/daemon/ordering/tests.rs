use super::*;
use crate::model::{
    Flow, LegalBasis, Mode, PolicyVersion, Purpose, RecipientCategory, Severity, Timestamp,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

fn candidate(event_id: &str, t: i64) -> Violation {
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
                let arrival = state.arrive(offset, candidate(id, *t));
                assert!(matches!(arrival, Arrival::Held), "{arrival:?}");
            }
            next[p] += burst;
            let done = if next[p] == stream.len() {
                i64::MAX
            } else {
                stream[next[p] - 1].0
            };
            state.report(ProgressReport {
                source_partition: p as i32,
                event_time: done,
                sources,
            });
            judged.extend(
                state
                    .ready()
                    .into_iter()
                    .map(|r| (r.v.occurred_at.millis(), r.v.event_id)),
            );
        }
        assert_eq!(judged, want, "seed {seed}");
        assert!(state.held.is_empty());
    }
}

#[test]
fn nothing_is_judged_before_every_event_partition_reported() {
    let mut state = PartitionState::default();
    state.arrive(1, candidate("a", 5));
    state.report(ProgressReport {
        source_partition: 0,
        event_time: 100,
        sources: 2,
    });
    assert!(state.ready().is_empty(), "partition 1 has not reported");
    state.report(ProgressReport {
        source_partition: 1,
        event_time: 4,
        sources: 2,
    });
    assert!(state.ready().is_empty(), "partition 1 is not past 5 yet");
    state.report(ProgressReport {
        source_partition: 1,
        event_time: 3,
        sources: 2,
    });
    assert_eq!(state.watermark(), 4, "reports never go back");
    state.report(ProgressReport {
        source_partition: 1,
        event_time: i64::MAX,
        sources: 2,
    });
    assert_eq!(state.ready().len(), 1);
    // Out of idleness, the partition holds the watermark again.
    state.report(ProgressReport {
        source_partition: 1,
        event_time: 50,
        sources: 2,
    });
    assert_eq!(state.watermark(), 50);
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
                pending.push_back(Item::Candidate(Box::new(v)));
                n += 1;
            }
            left[p] -= burst;
            pending.push_back(Item::Progress(ProgressReport {
                source_partition: p as i32,
                event_time: if left[p] == 0 { i64::MAX } else { clock[p] },
                sources,
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
            Item::Candidate(v) => match self.state.arrive(offset, *v) {
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

    fn judge(&mut self, policy: &Policy, v: &Violation) {
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
        let (state, _) = PartitionState::rebuild(records(&log), committed, &policy);
        let (blind, _) = PartitionState::rebuild(records(&log), i64::MAX, &policy);
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
