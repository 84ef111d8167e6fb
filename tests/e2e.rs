//! End to end against a real Kafka-protocol broker (tansu): the shareaudit
//! binary as a process, `generate --brokers` for the traffic, the broker and
//! `/metrics` for the verdict. Run by `scripts/e2e.sh`, which starts the
//! broker and sets SHAREAUDIT_E2E_BROKERS; ignored by a plain `cargo test`.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
mod common;

use common::read_all;
use rdkafka::ClientConfig;
use rdkafka::message::{Headers, Message};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn brokers() -> String {
    std::env::var("SHAREAUDIT_E2E_BROKERS")
        .expect("SHAREAUDIT_E2E_BROKERS: run these through scripts/e2e.sh")
}

/// (event_id, rule_id) of each violation in JSON lines (the offline audit's output).
fn violation_pairs(lines: &[u8]) -> BTreeSet<(String, String)> {
    String::from_utf8_lossy(lines)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["event_id"].as_str().unwrap().to_owned(),
                v["rule_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Unique topic names and group for one test.
struct Names {
    events: String,
    consent: String,
    violations: String,
    dlq: String,
    rate: String,
    group: String,
}

fn names(test: &str) -> Names {
    let run = format!("{test}-{}", std::process::id());
    Names {
        events: format!("events-{run}"),
        consent: format!("consent-{run}"),
        violations: format!("violations-{run}"),
        dlq: format!("dlq-{run}"),
        rate: format!("rate-{run}"),
        group: format!("shareaudit-{run}"),
    }
}

fn create_topics(n: &Names) {
    create(&[
        (&n.events, 4),
        (&n.consent, 2),
        (&n.violations, 2),
        (&n.dlq, 1),
    ]);
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shareaudit"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// tansu 0.6 answers a fetch that starts inside a producer batch from the
/// next batch, skipping the rest of the one asked for (seen: a fetch from
/// offset 1086 of a batch 1074-1087 returned 1088 first). Kafka returns the
/// containing batch. Every producer in these tests therefore sends one
/// record per batch, so that every offset is a batch boundary.
const ONE_RECORD_PER_BATCH: &str = "producer.batch.num.messages=1";

fn generate(n: &Names, count: usize, poison: usize, seed: u64, dir: &Path) -> PathBuf {
    let expected = dir.join(format!("expected-{seed}.jsonl"));
    let status = bin()
        .args([
            "generate",
            "--brokers",
            &brokers(),
            "--count",
            &count.to_string(),
            "--poison",
            &poison.to_string(),
        ])
        .args([
            "--seed",
            &seed.to_string(),
            "--users",
            "2000",
            "--events-topic",
            &n.events,
            "--consent-topic",
            &n.consent,
        ])
        .args([
            "--expected",
            expected.to_str().unwrap(),
            "-X",
            ONE_RECORD_PER_BATCH,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    expected
}

struct Daemon {
    child: Child,
    port: u16,
}

fn start(n: &Names, dir: &Path) -> Daemon {
    start_with(n, dir, &[])
}

fn start_with(n: &Names, dir: &Path, extra: &[&str]) -> Daemon {
    let port = free_port();
    // Logs are kept for a failed run to be read: target/e2e-logs/.
    let _ = dir;
    let logs = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = std::fs::File::create(logs.join(format!("{}-{port}.log", n.group))).unwrap();
    let child = bin()
        .args([
            "run",
            "--brokers",
            &brokers(),
            "--group-id",
            &n.group,
            "--events-topic",
            &n.events,
            "--consent-topic",
            &n.consent,
        ])
        .args([
            "--violations-topic",
            &n.violations,
            "--dead-letter-topic",
            &n.dlq,
            "--recipient-rate-topic",
            &n.rate,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args([
            "--commit-interval-ms",
            "200",
            "-X",
            ONE_RECORD_PER_BATCH,
            "--schema-id",
            concat!(
                "1=",
                env!("CARGO_MANIFEST_DIR"),
                "/schemas/DataSharingEvent.avsc"
            ),
        ])
        .args(extra)
        .args(rdkafka_debug())
        .env("SHAREAUDIT_HMAC_KEY", "e2e-key-sixteen-bytes")
        .env("SHAREAUDIT_LOG", log_filter())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Daemon { child, port }
}

/// `SHAREAUDIT_E2E_RDKAFKA_DEBUG=cgrp,fetch` (librdkafka's `debug`
/// contexts) puts the consumers' librdkafka debug lines in the replicas'
/// logs (target/e2e-logs/), for a failure that only a rebalance explains.
fn rdkafka_debug() -> Vec<String> {
    match std::env::var("SHAREAUDIT_E2E_RDKAFKA_DEBUG") {
        Ok(contexts) if !contexts.is_empty() => {
            vec!["-X".into(), format!("consumer.debug={contexts}")]
        }
        _ => Vec::new(),
    }
}

fn log_filter() -> &'static str {
    if rdkafka_debug().is_empty() {
        "info"
    } else {
        "info,librdkafka=debug"
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failed test must not leave a daemon behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn metrics(&self) -> Option<String> {
        let mut resp = ureq::get(&format!("http://127.0.0.1:{}/metrics", self.port))
            .call()
            .ok()?;
        resp.body_mut().read_to_string().ok()
    }

    /// The sum of a metric's samples (optionally those with `label`).
    fn sum(&self, name: &str, label: Option<&str>) -> f64 {
        self.metrics()
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                (l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
                    && label.is_none_or(|x| l.contains(x))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// `shareaudit_consumer_lag_messages` of each partition of `topic` it owns.
    fn lags(&self, topic: &str) -> Vec<f64> {
        let label = format!("topic=\"{topic}\"");
        self.metrics()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("shareaudit_consumer_lag_messages{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect()
    }

    fn wait_for(&mut self, what: &str, timeout: Duration, done: impl Fn(&Daemon) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited ({status}) while waiting for {what}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {}",
                self.metrics().unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM; the exit status and how long the exit took.
    fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status, started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("the daemon did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn committed_and_ends(n: &Names) -> (BTreeMap<i32, i64>, BTreeMap<i32, i64>) {
    common::committed_and_ends(&brokers(), &n.group, &n.events, 4)
}

/// (event_id, rule_id) expected, and key -> dead-letter class.
fn expectations(path: &Path) -> (BTreeSet<(String, String)>, BTreeMap<String, String>) {
    let mut violations = BTreeSet::new();
    let mut dead = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(rules) = v["expected"].as_array() {
            for r in rules {
                violations.insert((
                    v["event_id"].as_str().unwrap().to_owned(),
                    r.as_str().unwrap().to_owned(),
                ));
            }
        } else {
            dead.insert(
                v["key"].as_str().unwrap().to_owned(),
                v["dead_letter"].as_str().unwrap().to_owned(),
            );
        }
    }
    (violations, dead)
}

/// Asserts two sets of (event_id, rule_id) are equal, naming what differs.
fn same(got: &BTreeSet<(String, String)>, want: &BTreeSet<(String, String)>, what: &str) {
    let missing: Vec<_> = want.difference(got).take(10).collect();
    let extra: Vec<_> = got.difference(want).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} missing, e.g. {missing:?}; {} extra, e.g. {extra:?}",
        want.difference(got).count(),
        got.difference(want).count()
    );
}

/// (event_id, rule_id) of every alert in the topic, and how many alerts there are.
fn alerts(n: &Names) -> (BTreeSet<(String, String)>, usize) {
    let all = read_all(&brokers(), &n.violations);
    let mut by_id: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut set = BTreeSet::new();
    for m in &all {
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        set.insert((
            v["event_id"].as_str().unwrap().to_owned(),
            v["rule_id"].as_str().unwrap().to_owned(),
        ));
        // A duplicate (a re-audited record) is its first copy, byte for
        // byte: the same alert_id, and `detected_at` from the record's log time.
        let bytes = m.payload().unwrap().to_vec();
        let id = v["alert_id"].as_str().unwrap().to_owned();
        if let Some(first) = by_id.get(&id) {
            assert_eq!(
                first, &bytes,
                "a duplicate alert {id} differs from its first copy"
            );
        }
        by_id.insert(id, bytes);
    }
    (set, all.len())
}

#[test]
#[ignore = "needs a Kafka-protocol broker: scripts/e2e.sh"]
fn twenty_thousand_events_through_one_daemon_with_poison_and_metrics_that_agree() {
    let dir = tempfile::tempdir().unwrap();
    let n = names("one");
    create_topics(&n);
    let expected = generate(&n, 20_000, 12, 101, dir.path());
    let (want, mut dead) = expectations(&expected);
    // Two events that decode but that the daemon refuses to judge (dead
    // letters): one dated far ahead, one whose data category the policy's
    // taxonomy lacks. The report counts them as refused.
    let mut future: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/event-full.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut refused = Vec::new();
    for (user, at, category, class) in [
        (
            "u-future",
            "2099-01-01T00:00:00Z",
            "contact.recipient_name",
            "future_event_time",
        ),
        (
            "u-unknown-category",
            "2026-11-20T10:15:30+08:00",
            "contact.telepathy",
            "invalid",
        ),
    ] {
        future["event_id"] = format!("{user}-1").into();
        future["subject"]["user_id"] = user.into();
        future["occurred_at"] = at.into();
        future["data"][0]["category"] = category.into();
        refused.push((user.to_owned(), serde_json::to_vec(&future).unwrap()));
        dead.insert(user.to_owned(), class.to_owned());
    }
    produce(&n.events, &refused);

    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, shareaudit::policy::DEFAULT_POLICY).unwrap();
    let mut d = start_with(&n, dir.path(), &["--policy", policy.to_str().unwrap()]);
    d.wait_for("every record judged", Duration::from_secs(240), |d| {
        d.sum("shareaudit_events_total", None) as usize == 20_014
    });
    // SIGHUP reloads the policy.
    let _ = Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status();
    d.wait_for(
        "the policy reloaded on SIGHUP",
        Duration::from_secs(10),
        |d| d.sum("shareaudit_policy_reloads_total", Some("result=\"ok\"")) == 1.0,
    );
    d.wait_for("every output acknowledged", Duration::from_secs(60), |d| {
        d.sum("shareaudit_in_flight_records", None) == 0.0
    });

    // The probes a Kubernetes deployment uses.
    let status = |path: &str| {
        ureq::get(&format!("http://127.0.0.1:{}{path}", d.port))
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(status("/healthz"), 200);
    assert_eq!(
        status("/readyz"),
        200,
        "ready once the consent table is loaded"
    );
    // /metrics agrees with what was produced and consumed.
    assert_eq!(
        d.sum("shareaudit_dead_letters_total", None) as usize,
        dead.len()
    );
    assert_eq!(
        d.sum("shareaudit_events_total", Some("outcome=\"dead_letter\"")) as usize,
        dead.len()
    );
    let violating: BTreeSet<&String> = want.iter().map(|(e, _)| e).collect();
    assert_eq!(
        d.sum("shareaudit_events_total", Some("outcome=\"violation\"")) as usize,
        violating.len()
    );
    assert_eq!(
        d.sum("shareaudit_violations_total", Some("mode=\"enforce\"")) as usize,
        want.len()
    );
    assert_eq!(d.sum("shareaudit_consent_table_users", None) as usize, 2000);

    let (status, took) = d.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    let (got, count) = alerts(&n);
    same(&got, &want, "every expected violation, nothing else");
    assert_eq!(count, want.len(), "no duplicates in a run without restarts");
    let dlq = read_all(&brokers(), &n.dlq);
    assert_eq!(dlq.len(), dead.len());
    for m in &dlq {
        let key = String::from_utf8_lossy(m.key().unwrap()).into_owned();
        let class = m
            .headers()
            .unwrap()
            .iter()
            .find(|h| h.key == "shareaudit.error.class")
            .map(|h| String::from_utf8_lossy(h.value.unwrap()).into_owned());
        assert_eq!(
            class.as_deref(),
            dead.get(&key).map(String::as_str),
            "{key}"
        );
    }
    let (committed, ends) = committed_and_ends(&n);
    assert_eq!(committed, ends, "committed offsets at the end");

    // The compliance report of the period, from what the daemon wrote.
    let summary = report_of(&n, dir.path(), "2000-01-01T00:00:00Z", None, &[]);
    report_agrees(&summary, &want, dead.len(), 20_014);
    assert_eq!(
        summary["refused_event_records"], 2,
        "the two refused events"
    );
    // Kept for scripts/report-browser.sh, which renders it in chromium.
    let keep = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/report/topics");
    std::fs::create_dir_all(&keep).unwrap();
    for f in ["report.html", "summary.json"] {
        std::fs::copy(dir.path().join(f), keep.join(f)).unwrap();
    }
    assert_eq!(
        summary["inputs"]["consent_states"],
        read_all(&brokers(), &n.consent).len()
    );
    assert_eq!(summary["duplicates_dropped"], 0);
    let seen = summary["policies_seen"].as_array().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["violations"], want.len());
    assert_eq!(seen[0]["version"], summary["policy"]["version"]);
    // A period before any of it: nothing, and no figure made up.
    let before = report_of(
        &n,
        dir.path(),
        "2000-01-01T00:00:00Z",
        Some("2000-01-02T00:00:00Z"),
        &[],
    );
    assert_eq!(before["inputs"]["events_judged"], 0);
    assert_eq!(before["inputs"]["events_with_violations"], 0);
    assert!(before["recipients"].as_array().unwrap().is_empty());
}

/// `shareaudit report` over the test's topics: its summary JSON (the HTML
/// page is written beside it and checked for what a topic cannot tell).
fn report_of(
    n: &Names,
    dir: &Path,
    from: &str,
    to: Option<&str>,
    extra: &[&str],
) -> serde_json::Value {
    let json = dir.join("summary.json");
    let html = dir.join("report.html");
    let mut cmd = bin();
    cmd.args(["report", "--brokers", &brokers(), "--from", from])
        .args([
            "--violations-topic",
            &n.violations,
            "--events-topic",
            &n.events,
        ])
        .args(["--dead-letter-topic", &n.dlq, "--consent-topic", &n.consent])
        .args(["--summary-json", json.to_str().unwrap()])
        .args([
            "--report",
            html.to_str().unwrap(),
            "--timeout-seconds",
            "120",
            "--schema-id",
            concat!(
                "1=",
                env!("CARGO_MANIFEST_DIR"),
                "/schemas/DataSharingEvent.avsc"
            ),
        ])
        .args(extra);
    if let Some(to) = to {
        cmd.args(["--to", to]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("data-figure=\"source\"") && !page.contains("<script"));
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

/// The report's figures equal what one careful reader of everything says:
/// each rule's violations, the events with any, the dead letters, the
/// events judged (every record but the poison), per recipient and per hour
/// adding up; what exceptions suppressed is on no topic (null, not 0).
fn report_agrees(
    summary: &serde_json::Value,
    want: &BTreeSet<(String, String)>,
    dead: usize,
    records: usize,
) {
    let mut per_rule: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, rule) in want {
        *per_rule.entry(rule.as_str()).or_default() += 1;
    }
    let mut got: BTreeMap<&str, u64> = BTreeMap::new();
    for c in summary["clauses"].as_array().unwrap() {
        let n = c["violations"].as_u64().unwrap();
        if n > 0 {
            got.insert(c["rule_id"].as_str().unwrap(), n);
        }
    }
    assert_eq!(got, per_rule, "violations per clause");
    let events: BTreeSet<&String> = want.iter().map(|(e, _)| e).collect();
    assert_eq!(summary["inputs"]["events_with_violations"], events.len());
    assert_eq!(summary["inputs"]["events_judged"], records - dead);
    assert_eq!(summary["inputs"]["invalid_records"], dead);
    assert_eq!(
        summary["undecoded_event_records"].as_u64().unwrap()
            + summary["refused_event_records"].as_u64().unwrap(),
        dead as u64,
        "every dead letter is a record that does not decode or that is refused"
    );
    let recipients = summary["recipients"].as_array().unwrap();
    let with: u64 = recipients
        .iter()
        .map(|r| r["events_with_violations"].as_u64().unwrap())
        .sum();
    assert_eq!(
        with as usize,
        events.len(),
        "events with violations per recipient"
    );
    let shared: u64 = recipients
        .iter()
        .map(|r| r["events"].as_u64().unwrap())
        .sum();
    assert_eq!(shared as usize, records - dead, "events per recipient");
    assert!(summary["suppressed"].is_null());
    let trend: u64 = summary["trend"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["events"].as_u64().unwrap())
        .sum();
    assert_eq!(trend as usize, records - dead, "the trend adds up");
}

#[test]
#[ignore = "needs a Kafka-protocol broker: scripts/e2e.sh"]
fn sigterm_under_load_exits_within_ten_seconds_and_a_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = names("term");
    create_topics(&n);
    // The consent states exist before the daemon starts, as in production
    // (they race with the events otherwise: two topics, no order between them).
    generate(&n, 0, 0, 202, dir.path());
    let mut d = start(&n, dir.path());
    // Traffic arrives while the daemon runs.
    let n2 = names("term");
    let gen_dir = dir.path().to_path_buf();
    let producer = std::thread::spawn(move || generate(&n2, 20_000, 4, 202, &gen_dir));
    d.wait_for("the daemon under load", Duration::from_secs(120), |d| {
        d.sum("shareaudit_events_total", None) > 2_000.0
    });
    let judged_first = d.sum("shareaudit_events_total", None) as usize;
    let (status, took) = d.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let (committed_at_stop, _) = committed_and_ends(&n);
    let expected = producer.join().unwrap();
    let (want, dead) = expectations(&expected);

    let mut d = start(&n, dir.path());
    let total = 20_000 + dead.len();
    let committed: i64 = committed_at_stop.values().sum();
    let left = (total as i64 - committed) as f64;
    d.wait_for("the rest judged", Duration::from_secs(240), |d| {
        d.sum("shareaudit_events_total", None) >= left
            && d.sum("shareaudit_in_flight_records", None) == 0.0
    });
    let judged_second = d.sum("shareaudit_events_total", None) as usize;
    let (status, _) = d.terminate();
    assert!(status.success());

    let (committed_end, ends) = committed_and_ends(&n);
    assert_eq!(
        committed_end, ends,
        "committed offsets at the end after the restart"
    );
    assert_eq!(ends.values().sum::<i64>() as usize, total);
    let (got, _) = alerts(&n);
    same(&got, &want, "nothing lost across the restart");
    // Nothing re-audited beyond the uncommitted tail: the second run judged
    // exactly what the first left uncommitted.
    assert_eq!(
        judged_second as i64,
        total as i64 - committed,
        "first run judged {judged_first}, committed {committed}"
    );
}

// ---------------------------------------------------------------------------
// The cluster: several replicas in one group, faults, and the one-process truth.

/// A generated stream as records, and what one process judging it offline
/// (`shareaudit audit`, in event-time order) finds in it.
struct Stream {
    /// (key, JSON payload, event id) in event-time order.
    events: Vec<(String, Vec<u8>, String)>,
    /// (key, JSON payload) of the consent states.
    states: Vec<(String, Vec<u8>)>,
    truth: BTreeSet<(String, String)>,
}

fn stream(dir: &Path, count: usize, seed: u64, policy: &Path) -> Stream {
    let events = dir.join(format!("events-{seed}.jsonl"));
    let states = dir.join(format!("states-{seed}.jsonl"));
    let status = bin()
        .args([
            "generate",
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .args(["--users", "2000", "--events", events.to_str().unwrap()])
        .args(["--state", states.to_str().unwrap()])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let out = bin()
        .args(["audit", "--events", events.to_str().unwrap()])
        .args([
            "--state",
            states.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
        ])
        .args(["--hmac-key", "e2e-key-sixteen-bytes"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the offline audit finds violations"
    );
    let truth = violation_pairs(&out.stdout);
    let lines = |p: &Path| -> Vec<(serde_json::Value, Vec<u8>)> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| (serde_json::from_str(l).unwrap(), l.as_bytes().to_vec()))
            .collect()
    };
    Stream {
        events: lines(&events)
            .into_iter()
            .map(|(v, b)| {
                let key = v["subject"]["user_id"].as_str().unwrap().to_owned();
                (key, b, v["event_id"].as_str().unwrap().to_owned())
            })
            .collect(),
        states: lines(&states)
            .into_iter()
            .map(|(v, b)| (v["user_id"].as_str().unwrap().to_owned(), b))
            .collect(),
        truth,
    }
}

/// Counts the broker's acknowledgements and refusals.
#[derive(Default)]
struct Acks {
    ok: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicUsize,
}

impl rdkafka::ClientContext for Acks {}

impl rdkafka::producer::ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        let n = if r.is_ok() { &self.ok } else { &self.failed };
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Produces `records` (key, payload) to `topic` and waits for every acknowledgement.
fn produce(topic: &str, records: &[(String, Vec<u8>)]) {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    use std::sync::atomic::Ordering;
    let producer: ThreadedProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("client.id", TEST_CLIENT)
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create_with_context(Acks::default())
        .unwrap();
    for (k, p) in records {
        let mut record = BaseRecord::to(topic).key(k).payload(p);
        while let Err((_, r)) = producer.send(record) {
            record = r;
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    let acks = producer.context();
    assert_eq!(
        acks.failed.load(Ordering::Relaxed),
        0,
        "deliveries to {topic} failed"
    );
    assert_eq!(acks.ok.load(Ordering::Relaxed), records.len());
}

fn create(topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    for r in futures::executor::block_on(admin.create_topics(
        &new,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .unwrap()
    {
        r.unwrap();
    }
}

/// A poison record every `every` events: (key, payload), JSON or framing garbage.
fn with_poison(
    events: &[(String, Vec<u8>, String)],
    every: usize,
) -> (Vec<(String, Vec<u8>)>, BTreeSet<String>) {
    let mut out = Vec::with_capacity(events.len() + events.len() / every + 1);
    let mut keys = BTreeSet::new();
    for (i, (k, p, _)) in events.iter().enumerate() {
        if i % every == every / 2 {
            let key = format!("poison-{i}");
            let payload = if keys.len() % 2 == 0 {
                b"{\"event_id\": \"cut short".to_vec()
            } else {
                vec![0, 0, 0, 0, 42, 1, 2, 3]
            };
            keys.insert(key.clone());
            out.push((key, payload));
        }
        out.push((k.clone(), p.clone()));
    }
    (out, keys)
}

/// The keys of the dead letters in `topic`, each with how often it came.
fn dead_letter_keys(topic: &str) -> BTreeMap<String, usize> {
    let mut keys = BTreeMap::new();
    for m in read_all(&brokers(), topic) {
        *keys
            .entry(String::from_utf8_lossy(m.key().unwrap()).into_owned())
            .or_insert(0) += 1;
    }
    keys
}

/// Waits until `topic` holds every (event, rule) of `want`; returns what it holds.
fn alerts_reach(
    n: &Names,
    want: &BTreeSet<(String, String)>,
    timeout: Duration,
) -> (BTreeSet<(String, String)>, usize) {
    let deadline = Instant::now() + timeout;
    loop {
        let (got, count) = alerts(n);
        if want.is_subset(&got) || Instant::now() >= deadline {
            return (got, count);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Prints each replica's rate-stage and assignment metrics (for a failed
/// run to be read), then stops them with SIGTERM: each must exit cleanly.
fn stop_all(daemons: Vec<Daemon>, what: &str) {
    for (i, d) in daemons.iter().enumerate() {
        for l in d.metrics().unwrap_or_default().lines() {
            if l.starts_with("shareaudit_rate_") || l.starts_with("shareaudit_assigned") {
                eprintln!("{what} {i}: {l}");
            }
        }
    }
    for d in daemons {
        let (status, _) = d.terminate();
        assert!(status.success(), "{what}: a replica did not exit cleanly");
    }
}

/// Fails the test when one of `daemons` has exited.
fn all_alive(daemons: &mut [Daemon], when: &str) {
    for d in daemons.iter_mut() {
        if let Ok(Some(status)) = d.child.try_wait() {
            panic!("a replica exited ({status}) {when}");
        }
    }
}

/// Waits until the group committed every partition of `n.events` to its end.
fn wait_committed(n: &Names, partitions: i32, timeout: Duration, daemons: &mut [Daemon]) {
    let deadline = Instant::now() + timeout;
    loop {
        let (committed, ends) =
            common::committed_and_ends(&brokers(), &n.group, &n.events, partitions);
        if committed == ends {
            return;
        }
        all_alive(daemons, "before the stream was committed");
        assert!(
            Instant::now() < deadline,
            "not committed to the end: {committed:?} of {ends:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until the event topic's partitions, and the recipient-rate
/// topic's (as many), are all owned, each by one of `daemons`, and every
/// one of the `members` replicas owns some of each.
fn settled(n: &Names, daemons: &mut [Daemon], partitions: i32, members: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let owned = |topic: &str| -> Vec<f64> {
            let label = format!("topic=\"{topic}\"");
            daemons
                .iter()
                .map(|d| d.sum("shareaudit_assigned_partitions", Some(&label)))
                .collect()
        };
        let (events, rate) = (owned(&n.events), owned(&n.rate));
        let spread = |o: &[f64]| {
            o.iter().sum::<f64>() as i32 == partitions
                && o.iter().filter(|x| **x > 0.0).count() == members
        };
        if spread(&events) && spread(&rate) {
            return;
        }
        all_alive(daemons, "while the group settled");
        assert!(
            Instant::now() < deadline,
            "the groups did not settle on {members} replicas owning {partitions} partitions: events {events:?}, recipient-rate {rate:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Fast failure detection for the kill tests: a dead replica's partitions
/// move after six seconds instead of forty-five.
const FAST_GROUP: [&str; 4] = [
    "-X",
    "consumer.session.timeout.ms=6000",
    "-X",
    "consumer.heartbeat.interval.ms=500",
];
const SESSION: Duration = Duration::from_secs(6);

/// The policy of the cluster tests: the default, with `volume.recipient_rate`
/// on a one-minute window and a limit the stream crosses now and then, so
/// that which event crosses depends on the order of judging.
fn cluster_policy(dir: &Path) -> PathBuf {
    let text = shareaudit::policy::DEFAULT_POLICY
        .replace("max_subjects_per_hour: 1000", "max_subjects_per_hour: 55")
        .replace("window_seconds: 3600", "window_seconds: 60");
    assert_ne!(text, shareaudit::policy::DEFAULT_POLICY);
    let p = dir.join("cluster-policy.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
#[ignore = "needs a Kafka-protocol broker: scripts/e2e.sh"]
fn one_replica_and_three_with_a_kill_a_restart_and_a_join_judge_exactly_what_one_process_does() {
    const EVENTS: usize = 100_000;
    const PARTITIONS: i32 = 6;
    let dir = tempfile::tempdir().unwrap();
    let policy = cluster_policy(dir.path());
    let s = stream(dir.path(), EVENTS, 404, &policy);
    let rate_alerts = s
        .truth
        .iter()
        .filter(|(_, r)| r == "volume.recipient_rate")
        .count();
    assert!(
        rate_alerts >= 10,
        "the stream must cross the rate limit often: {rate_alerts}"
    );

    // One stream, judged twice: by one replica (group "solo"), then by three (group "trio").
    let solo = names("solo");
    let mut trio = names("trio");
    trio.events = solo.events.clone();
    trio.consent = solo.consent.clone();
    create(&[
        (&solo.events, PARTITIONS),
        (&solo.consent, 2),
        (&solo.violations, 2),
        (&solo.dlq, 1),
        (&trio.violations, 2),
        (&trio.dlq, 1),
    ]);
    produce(&solo.consent, &s.states);
    let (records, poison) = with_poison(&s.events, 5_000);
    produce(&solo.events, &records);

    let args: Vec<&str> = ["--policy", policy.to_str().unwrap()]
        .into_iter()
        .chain(FAST_GROUP)
        .collect();
    let mut one = vec![start_with(&solo, dir.path(), &args)];
    wait_committed(&solo, PARTITIONS, Duration::from_secs(600), &mut one);
    let (got_solo, _) = alerts_reach(&solo, &s.truth, Duration::from_secs(60));
    stop_all(one, "solo");
    same(
        &got_solo,
        &s.truth,
        "one replica against the one-process truth",
    );
    assert_eq!(
        dead_letter_keys(&solo.dlq)
            .into_keys()
            .collect::<BTreeSet<_>>(),
        poison
    );

    // Three replicas; one is killed mid-stream and restarted; a fourth joins, then leaves.
    // Each step waits for the group to settle: every partition owned by a live replica.
    // tansu 0.6 does not evict a member that died without leaving until
    // the group rebalances for another reason after its session expired
    // (seen: its partitions stayed orphaned for 20 s and more, past
    // session.timeout.ms; and a rebalance within the session kept it in the
    // new generation). Kafka evicts it after session.timeout.ms. Here the
    // restart is that reason.
    let mut three: Vec<Daemon> = (0..3)
        .map(|_| start_with(&trio, dir.path(), &args))
        .collect();
    settled(&trio, &mut three, PARTITIONS, 3);
    let total: i64 = (records.len()) as i64;
    let progress = |n: &Names| -> i64 {
        common::committed_and_ends(&brokers(), &n.group, &n.events, PARTITIONS)
            .0
            .values()
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while progress(&trio) < total / 10 {
        assert!(Instant::now() < deadline, "the trio does not progress");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A fourth joins mid-stream, works, and leaves.
    three.push(start_with(&trio, dir.path(), &args));
    settled(&trio, &mut three, PARTITIONS, 4);
    // At work: judging, or owning partitions the others had already
    // finished (the trio reads fast; seen in one run in seven), which it
    // shows with no lag.
    three[3].wait_for("the fourth replica at work", Duration::from_secs(60), |d| {
        let lags = d.lags(&trio.events);
        d.sum("shareaudit_events_total", None) > 0.0
            || (!lags.is_empty() && lags.iter().all(|l| *l == 0.0))
    });
    let (status, _) = three.remove(3).terminate();
    assert!(status.success(), "the fourth replica leaves cleanly");
    settled(&trio, &mut three, PARTITIONS, 3);
    // One is killed mid-stream, and restarted.
    let mut killed = three.remove(0);
    killed.child.kill().unwrap(); // SIGKILL: no drain, no commit, no leave
    killed.child.wait().unwrap();
    let killed_at = Instant::now();
    let at_kill = progress(&trio);
    // The restart joins once the dead member's session has expired (with a
    // margin for the broker's clock): its rebalance then leaves the dead one
    // out (tansu drops a dead member only at a rebalance after its session
    // expired, and says nothing before). Meanwhile the others keep running.
    while killed_at.elapsed() < SESSION + Duration::from_secs(4) {
        for d in three.iter_mut() {
            assert!(d.child.try_wait().unwrap().is_none(), "a replica exited");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    three.push(start_with(&trio, dir.path(), &args));
    settled(&trio, &mut three, PARTITIONS, 3);
    wait_committed(&trio, PARTITIONS, Duration::from_secs(600), &mut three);
    let (got_trio, count) = alerts_reach(&trio, &s.truth, Duration::from_secs(60));
    stop_all(three, "trio");
    // Every expected violation, nothing else; duplicates (the killed
    // replica's uncommitted tail, judged again) identical to their first
    // copy (checked by `alerts`).
    same(
        &got_trio,
        &s.truth,
        "three replicas, a kill and a join, against the one-process truth",
    );
    same(&got_trio, &got_solo, "three replicas against one");
    assert!(count >= s.truth.len());
    assert!(at_kill < total, "the kill came mid-stream");
    let dead = dead_letter_keys(&trio.dlq);
    assert_eq!(
        dead.keys().cloned().collect::<BTreeSet<_>>(),
        poison,
        "every dead letter, and only those"
    );

    // The compliance reports of both groups say the same, duplicates
    // counted once, and agree with the one-process truth.
    let with_policy = ["--policy", policy.to_str().unwrap()];
    let from = "2000-01-01T00:00:00Z";
    let solo_report = report_of(&solo, dir.path(), from, None, &with_policy);
    let trio_report = report_of(&trio, dir.path(), from, None, &with_policy);
    report_agrees(&trio_report, &s.truth, poison.len(), records.len());
    assert_eq!(
        trio_report["duplicates_dropped"],
        count - s.truth.len(),
        "every copy dropped"
    );
    for part in [
        "inputs",
        "clauses",
        "recipients",
        "recipient_categories",
        "trend",
        "rate_windows",
    ] {
        assert_eq!(
            solo_report[part], trio_report[part],
            "{part}: one replica and three"
        );
    }
}

/// A broker of the test's own (tansu, memory storage) behind a proxy that
/// can refuse produce: while `refuse` is set, a connection that sends a
/// Produce request (API key 0) from any client but the test's own is cut
/// before the request reaches the broker. Consumers, commits and metadata
/// pass. tansu advertises the proxy, so every client goes through it.
struct RefusingBroker {
    tansu: Child,
    addr: String,
    refuse: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// While set, every connection but the test's own is cut at its next
    /// request, as a broker restart cuts them; tansu keeps its data.
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Open connections (not the test's own) that have carried a fetch:
    /// once `down` is set, none is left when every fetch that was waiting
    /// at the broker has returned and its connection been cut.
    fetching: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for RefusingBroker {
    fn drop(&mut self) {
        let _ = self.tansu.kill();
        let _ = self.tansu.wait();
    }
}

/// The client id of the tests' own producers, which the proxy lets through.
const TEST_CLIENT: &str = "e2e-test";

fn refusing_broker() -> RefusingBroker {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (broker_port, proxy) = (free_port(), TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = proxy.local_addr().unwrap().to_string();
    let tansu = Command::new("tansu")
        .args(["broker", "--storage-engine", "memory://tansu/"])
        .args(["--listener-url", &format!("tcp://127.0.0.1:{broker_port}")])
        .args(["--advertised-listener-url", &format!("tcp://{addr}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu on PATH (scripts/e2e.sh installs it)");
    let refuse = Arc::new(AtomicBool::new(false));
    let down = Arc::new(AtomicBool::new(false));
    let fetching = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flag = Arc::clone(&refuse);
    let down_flag = Arc::clone(&down);
    let fetching_count = Arc::clone(&fetching);
    std::thread::spawn(move || {
        for client in proxy.incoming().flatten() {
            let Ok(broker) = TcpStream::connect(("127.0.0.1", broker_port)) else {
                continue;
            };
            let (mut c_in, mut b_out) = (client.try_clone().unwrap(), broker.try_clone().unwrap());
            let (mut b_in, mut c_out) = (broker, client);
            let flag = Arc::clone(&flag);
            let down = Arc::clone(&down_flag);
            let fetching = Arc::clone(&fetching_count);
            // Client to broker, frame by frame: [size: i32][api_key: i16]...
            std::thread::spawn(move || {
                let mut fetched = false;
                let mut size = [0u8; 4];
                while c_in.read_exact(&mut size).is_ok() {
                    let mut frame = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
                    if c_in.read_exact(&mut frame).is_err() {
                        break;
                    }
                    let produce = frame.len() >= 2 && frame[0] == 0 && frame[1] == 0;
                    // Request header: api_key, api_version, correlation_id, client_id (i16 length, bytes).
                    let client = frame
                        .get(8..10)
                        .map(|l| i16::from_be_bytes([l[0], l[1]]).max(0) as usize)
                        .and_then(|len| frame.get(10..10 + len));
                    let ours = client == Some(TEST_CLIENT.as_bytes());
                    let fetch = frame.len() >= 2 && frame[0] == 0 && frame[1] == 1;
                    if !ours && down.load(Ordering::Relaxed) {
                        break;
                    }
                    if fetch && !ours && !fetched {
                        fetched = true;
                        fetching.fetch_add(1, Ordering::SeqCst);
                    }
                    if !ours && produce && flag.load(Ordering::Relaxed) {
                        break;
                    }
                    if b_out
                        .write_all(&size)
                        .and_then(|()| b_out.write_all(&frame))
                        .is_err()
                    {
                        break;
                    }
                }
                let _ = c_in.shutdown(Shutdown::Both);
                let _ = b_out.shutdown(Shutdown::Both);
                if fetched {
                    fetching.fetch_sub(1, Ordering::SeqCst);
                }
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut b_in, &mut c_out);
                let _ = c_out.shutdown(Shutdown::Both);
            });
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", broker_port)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    RefusingBroker {
        tansu,
        addr,
        refuse,
        down,
        fetching,
    }
}

/// Per partition, the offsets of the events whose ids are in `ids`.
/// Puts back the shared broker's address when a test with its own is done.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: the e2e tests run one at a time (--test-threads=1); nothing else reads the variable now.
        unsafe { std::env::set_var("SHAREAUDIT_E2E_BROKERS", &self.0) };
    }
}

/// Makes `brokers()` name `addr` until the returned guard is dropped.
fn use_broker(addr: &str) -> Restore {
    let shared = brokers();
    // SAFETY: as in `Restore::drop`.
    unsafe { std::env::set_var("SHAREAUDIT_E2E_BROKERS", addr) };
    Restore(shared)
}

/// A broker of the test's own behind the faulty proxy; `brokers()` names
/// it until the returned guard is dropped.
fn own_broker() -> (RefusingBroker, Restore) {
    let broker = refusing_broker();
    let restore = use_broker(&broker.addr);
    (broker, restore)
}

/// The set-up of a fault test: a broker of its own behind the faulty
/// proxy, a generated stream under the default policy, the topics, the
/// consent states produced; the events (key, payload) left to the test.
struct FaultTest {
    broker: RefusingBroker,
    _restore: Restore,
    dir: tempfile::TempDir,
    stream: Stream,
    names: Names,
    records: Vec<(String, Vec<u8>)>,
}

impl FaultTest {
    fn new(test: &str, events: usize, seed: u64, partitions: i32) -> FaultTest {
        let (broker, restore) = own_broker();
        let (dir, stream, names, records) = set_up(test, events, seed, partitions);
        FaultTest {
            broker,
            _restore: restore,
            dir,
            stream,
            names,
            records,
        }
    }
}

/// On the broker `brokers()` names: a generated stream under the default
/// policy, the topics, the consent states produced; the events (key,
/// payload) left to the test.
fn set_up(
    test: &str,
    events: usize,
    seed: u64,
    partitions: i32,
) -> (tempfile::TempDir, Stream, Names, Vec<(String, Vec<u8>)>) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, shareaudit::policy::DEFAULT_POLICY).unwrap();
    let stream = stream(dir.path(), events, seed, &policy);
    let names = names(test);
    create(&[
        (&names.events, partitions),
        (&names.consent, 2),
        (&names.violations, 2),
        (&names.dlq, 1),
    ]);
    produce(&names.consent, &stream.states);
    let records = stream
        .events
        .iter()
        .map(|(k, p, _)| (k.clone(), p.clone()))
        .collect();
    (dir, stream, names, records)
}

/// Waits out `outage`, failing at once if the daemon exits meanwhile.
fn outlive(d: &mut Daemon, outage: Duration) {
    let started = Instant::now();
    while started.elapsed() < outage {
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "the daemon died while the broker was down"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn offsets_of(topic: &str, ids: &BTreeSet<&String>) -> BTreeMap<i32, Vec<i64>> {
    let mut out: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for m in read_all(&brokers(), topic) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(m.payload().unwrap_or_default())
        else {
            continue;
        };
        if v["event_id"]
            .as_str()
            .is_some_and(|id| ids.contains(&id.to_owned()))
        {
            out.entry(m.partition()).or_default().push(m.offset());
        }
    }
    for o in out.values_mut() {
        o.sort_unstable();
    }
    out
}

#[test]
#[ignore = "needs a Kafka-protocol broker: scripts/e2e.sh"]
fn an_alert_topic_outage_holds_the_commits_and_loses_no_alert() {
    const PARTITIONS: i32 = 4;
    const OUTAGE: Duration = Duration::from_secs(60);
    // This test's own broker, behind the proxy that refuses produce on demand.
    let f = FaultTest::new("outage", 20_000, 505, PARTITIONS);
    let (broker, dir, s, n, records) = (&f.broker, f.dir.path(), &f.stream, &f.names, &f.records);
    let (before, during) = records.split_at(records.len() / 2);
    let during_ids: BTreeSet<String> = s.events[before.len()..]
        .iter()
        .map(|(_, _, id)| id.clone())
        .collect();
    produce(&n.events, before);

    // Deliveries time out within the outage, so failed deliveries and the
    // pipeline's own retries are exercised, with librdkafka's default
    // pipelining (up to five requests in flight per connection). Nothing
    // here fetches from inside a batch the daemon wrote, so its producer
    // batches as usual: one record per request made the backlog slower to
    // drain than the message timeout.
    let mut d = start_with(
        n,
        dir,
        &[
            "-X",
            "producer.message.timeout.ms=10000",
            "-X",
            "producer.batch.num.messages=10000",
            "--max-in-flight",
            "2000",
        ],
    );
    wait_committed(
        n,
        PARTITIONS,
        Duration::from_secs(300),
        std::slice::from_mut(&mut d),
    );
    d.wait_for("the first half delivered", Duration::from_secs(60), |d| {
        d.sum("shareaudit_in_flight_records", None) == 0.0
    });

    // The broker refuses the daemon's produce for a minute while the second half arrives.
    broker
        .refuse
        .store(true, std::sync::atomic::Ordering::Relaxed);
    produce(&n.events, during);
    let failures_before = d.sum("shareaudit_alert_delivery_failures_total", None);
    let started = Instant::now();
    let mut highest: BTreeMap<i32, i64> = BTreeMap::new();
    let mut most_in_flight = 0.0f64;
    while started.elapsed() < OUTAGE {
        let (committed, _) =
            common::committed_and_ends(&brokers(), &n.group, &n.events, PARTITIONS);
        for (p, o) in committed {
            let h = highest.entry(p).or_insert(o);
            *h = (*h).max(o);
        }
        most_in_flight = most_in_flight.max(d.sum("shareaudit_in_flight_records", None));
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "the daemon died in the outage"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Visible while it lasts: failed deliveries counted, records held in flight.
    assert!(
        d.sum("shareaudit_alert_delivery_failures_total", None) > failures_before,
        "delivery failures are counted during the outage"
    );
    assert!(
        most_in_flight > 0.0,
        "records are held in flight during the outage"
    );
    broker
        .refuse
        .store(false, std::sync::atomic::Ordering::Relaxed);

    // The commits never passed the first record whose alert was not
    // acknowledged: nothing was, so the first violating event of the
    // second half bounds every partition's commit.
    let violating: BTreeSet<&String> = s
        .truth
        .iter()
        .map(|(e, _)| e)
        .filter(|e| during_ids.contains(*e))
        .collect();
    let first_violating = offsets_of(&n.events, &violating);
    for (p, h) in &highest {
        let first = first_violating[p][0];
        assert!(
            *h <= first,
            "partition {p}: committed {h} during the outage, past the first unacknowledged record {first}"
        );
    }

    // The broker takes produce again: the backlog drains and every alert is there, once or more.
    wait_committed(
        n,
        PARTITIONS,
        Duration::from_secs(300),
        std::slice::from_mut(&mut d),
    );
    let events_seen = read_all(&brokers(), &n.events).len();
    let judged = d.sum("shareaudit_events_total", None) as usize;
    let found = d.sum("shareaudit_violations_total", Some("mode=\"enforce\"")) as usize;
    eprintln!(
        "outage: {} events produced, {events_seen} readable, {judged} judged; {found} violations found, {} expected",
        records.len(),
        s.truth.len()
    );
    let (got, read) = alerts_reach(n, &s.truth, Duration::from_secs(120));
    let (_, stored) = common::committed_and_ends(&brokers(), &n.group, &n.violations, 2);
    eprintln!(
        "outage: the alert topic's offsets say {} records, a reader from the start gets {read}",
        stored.values().sum::<i64>()
    );
    let (status, _) = d.terminate();
    assert!(status.success());
    same(&got, &s.truth, "every alert, the outage's included");
    let (committed, ends) = common::committed_and_ends(&brokers(), &n.group, &n.events, PARTITIONS);
    assert_eq!(committed, ends);
}

#[test]
#[ignore = "needs a Kafka-protocol broker: scripts/e2e.sh"]
fn a_broker_restart_stops_consumption_and_loses_nothing() {
    const PARTITIONS: i32 = 4;
    const DOWN: Duration = Duration::from_secs(20);
    let f = FaultTest::new("restart", 10_000, 606, PARTITIONS);
    let (broker, dir, s, n, records) = (&f.broker, f.dir.path(), &f.stream, &f.names, &f.records);
    let (before, during) = records.split_at(records.len() / 2);
    produce(&n.events, before);
    let mut d = start(n, dir);
    wait_committed(
        n,
        PARTITIONS,
        Duration::from_secs(300),
        std::slice::from_mut(&mut d),
    );
    d.wait_for("the first half delivered", Duration::from_secs(60), |d| {
        d.sum("shareaudit_in_flight_records", None) == 0.0
    });

    // The broker goes away as in a restart: every connection of the
    // daemon's is cut, and cut again when it reconnects. Once every
    // connection that fetched is gone (a fetch already waiting at the broker
    // has returned, empty), the second half arrives (the test's own
    // producer still gets through).
    let judged = d.sum("shareaudit_events_total", None);
    assert_eq!(judged as usize, before.len(), "the first half, judged once");
    let errors_before = d.sum("shareaudit_kafka_errors_total", None);
    broker
        .down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // Every fetch that was waiting at the broker has returned and its
    // connection been cut: nothing produced from now on can be read.
    let fetching = || broker.fetching.load(std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while fetching() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} connections still fetching",
            fetching()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    produce(&n.events, during);
    outlive(&mut d, DOWN);
    // Visible while it lasts: consumption stopped, client errors counted and logged.
    let errors = d.sum("shareaudit_kafka_errors_total", None) - errors_before;
    eprintln!("broker down for {DOWN:?}: {errors} client errors counted");
    assert_eq!(
        d.sum("shareaudit_events_total", None),
        judged,
        "nothing of the second half is judged while the broker is down"
    );
    assert!(
        errors >= 2.0,
        "the consumer's and the producer's errors are counted while the broker is down: {errors}"
    );
    broker
        .down
        .store(false, std::sync::atomic::Ordering::Relaxed);

    // The broker is back: the backlog drains, nothing is skipped, every alert arrives.
    drains_completely(d, n, PARTITIONS, &s.truth, records.len());
}

/// After a fault has cleared: the commits reach the ends, every expected
/// alert arrives, every one of `events` is judged, the daemon exits cleanly.
fn drains_completely(
    mut d: Daemon,
    n: &Names,
    partitions: i32,
    truth: &BTreeSet<(String, String)>,
    events: usize,
) {
    wait_committed(
        n,
        partitions,
        Duration::from_secs(300),
        std::slice::from_mut(&mut d),
    );
    let (got, _) = alerts_reach(n, truth, Duration::from_secs(120));
    let judged = d.sum("shareaudit_events_total", None) as usize;
    let (status, _) = d.terminate();
    assert!(status.success());
    same(&got, truth, "every alert, after the fault as before it");
    assert!(judged >= events, "every event judged: {judged} of {events}");
    let (committed, ends) = common::committed_and_ends(&brokers(), &n.group, &n.events, partitions);
    assert_eq!(committed, ends, "the commits reach the end");
}

/// A tansu of the test's own that keeps its data in SQLite, so that it can
/// be stopped and started again as a broker restarts (memory storage
/// forgets everything). Same port, same file.
struct PersistentBroker {
    tansu: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl PersistentBroker {
    fn new(dir: &Path) -> PersistentBroker {
        let mut b = PersistentBroker {
            tansu: None,
            port: free_port(),
            dir: dir.to_path_buf(),
        };
        b.start();
        b
    }

    fn start(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let tansu = Command::new("tansu")
            // tansu reads the file name of a sqlite:// URL relative to its working directory.
            .current_dir(&self.dir)
            .args(["broker", "--storage-engine", "sqlite://tansu.db"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu on PATH (scripts/e2e.sh installs it)");
        self.tansu = Some(tansu);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.tansu.as_mut().and_then(|t| t.try_wait().unwrap()) {
                panic!(
                    "tansu with SQLite storage exited ({status}): built without `--features libsql`? scripts/e2e.sh installs it with"
                );
            }
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, as an orchestrator stops a broker, and wait for the exit.
    fn stop(&mut self) {
        let Some(mut tansu) = self.tansu.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &tansu.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tansu.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = tansu.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PersistentBroker {
    fn drop(&mut self) {
        if let Some(t) = self.tansu.as_mut() {
            let _ = t.kill();
            let _ = t.wait();
        }
    }
}

#[test]
#[ignore = "needs a Kafka-protocol broker: scripts/e2e.sh"]
fn a_real_broker_restart_with_its_data_loses_nothing() {
    const PARTITIONS: i32 = 4;
    const DOWN: Duration = Duration::from_secs(10);
    let storage = tempfile::tempdir().unwrap();
    let mut broker = PersistentBroker::new(storage.path());
    let _restore = use_broker(&format!("127.0.0.1:{}", broker.port));
    let (dir, s, n, records) = set_up("real-restart", 10_000, 707, PARTITIONS);
    let (before, after) = records.split_at(records.len() / 2);
    produce(&n.events, before);
    let mut d = start(&n, dir.path());
    wait_committed(
        &n,
        PARTITIONS,
        Duration::from_secs(300),
        std::slice::from_mut(&mut d),
    );
    assert!(
        d.sum("shareaudit_events_total", None) as usize >= before.len(),
        "the first half judged before the broker stops"
    );
    let errors_before = d.sum("shareaudit_kafka_errors_total", None);

    // The broker stops; the daemon waits it out, and says so.
    broker.stop();
    outlive(&mut d, DOWN);
    let errors = d.sum("shareaudit_kafka_errors_total", None) - errors_before;
    eprintln!("broker stopped for {DOWN:?}: {errors} client errors counted");
    assert!(
        errors >= 1.0,
        "the broker's absence is counted while it lasts: {errors}"
    );

    // The broker starts again on the same data; the second half arrives.
    broker.start();
    produce(&n.events, after);
    drains_completely(d, &n, PARTITIONS, &s.truth, records.len());
}

/// Polls `sources` until `done` holds of them, at most `timeout`.
fn poll_until(
    sources: &[&shareaudit::kafka::source::Source],
    what: &str,
    timeout: Duration,
    done: impl Fn() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for s in sources {
            let _ = s.poll(Duration::from_millis(50));
        }
    }
}

#[test]
#[ignore = "needs a Kafka-protocol broker: scripts/e2e.sh"]
fn a_partition_paused_when_it_moved_away_is_read_when_it_comes_back() {
    // librdkafka keeps a partition's pause through revoke and re-assign. A
    // replica that is paused (backpressure) when a rebalance takes two of
    // its partitions, resumes what it still has, and gets the two back
    // later, must read them.
    use shareaudit::config::{RawSettings, Settings};
    use shareaudit::kafka::Progress;
    use shareaudit::kafka::source::Source;
    use shareaudit::telemetry::Metrics;
    use std::sync::Arc;
    // The daemon's consumer lives on a runtime (it keeps a wake-up task there).
    let runtime = shareaudit::daemon::runtime().unwrap();
    let _inside = runtime.enter();
    let n = names("pause");
    create(&[(&n.events, 4)]);
    let settings = Settings::from_raw(RawSettings {
        brokers: Some(brokers()),
        ..RawSettings::default()
    })
    .unwrap();
    let member = || {
        let progress = Arc::new(Progress::new(Arc::new(Metrics::new().unwrap()), &n.events));
        Source::new(&settings, &n.events, &n.group, progress).unwrap()
    };
    let mut a = member();
    poll_until(
        &[&a],
        "the first member to own all four",
        Duration::from_secs(60),
        || a.assigned().len() == 4,
    );
    a.set_paused(true);
    let b = member();
    poll_until(
        &[&a, &b],
        "two members with two each",
        Duration::from_secs(120),
        || a.assigned().len() == 2 && b.assigned().len() == 2,
    );
    a.set_paused(false);
    drop(b);
    poll_until(
        &[&a],
        "the first member to own all four again",
        Duration::from_secs(120),
        || a.assigned().len() == 4,
    );

    let records: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| (format!("user-{i}"), format!("record {i}").into_bytes()))
        .collect();
    produce(&n.events, &records);
    let mut read = BTreeMap::<i32, usize>::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while read.values().sum::<usize>() < records.len() && Instant::now() < deadline {
        if let Some(Ok(r)) = a.poll(Duration::from_millis(100)) {
            *read.entry(r.partition).or_default() += 1;
        }
    }
    assert_eq!(
        read.values().sum::<usize>(),
        records.len(),
        "every record read, from every partition: {read:?} of {:?}",
        a.assigned()
    );
}

/// Produces `backlog` consent states of other users (batched, as a burst
/// comes) and then a cancelled account for `user`; once the broker has
/// them all, at once 40 events of `user` (one record per batch: tansu).
/// Returns the events' ids.
fn burst_then_change_then_events(
    n: &Names,
    user: &str,
    backlog: usize,
    gate: Option<u32>,
) -> BTreeSet<String> {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    use std::sync::atomic::Ordering;
    let producer = |batched: bool| -> ThreadedProducer<Acks> {
        ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("client.id", TEST_CLIENT)
            .set("linger.ms", if batched { "5" } else { "0" })
            .set("batch.num.messages", if batched { "10000" } else { "1" })
            .set("queue.buffering.max.messages", "1000000")
            .create_with_context(Acks::default())
            .unwrap()
    };
    let send = |p: &ThreadedProducer<Acks>, topic: &str, key: &str, payload: &[u8]| {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        while let Err((_, r)) = p.send(record) {
            record = r;
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let consent = producer(true);
    if let Some(id) = gate {
        // A consent record whose writer schema the registry withholds: the
        // reader stops at it (consent records wait, never skipped), so
        // everything after it is unread until the gate opens.
        let bytes = std::fs::read(fixtures.join("consent-full.json")).unwrap();
        let mut gated = shareaudit::codec::json::decode_consent(&bytes).unwrap();
        gated.user_id = format!("{user}-gated");
        let datum = shareaudit::codec::avro::encode_consent(&gated).unwrap();
        let framed = shareaudit::codec::wire::confluent(id, &datum);
        send(&consent, &n.consent, &gated.user_id, &framed);
    }
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("consent-full.json")).unwrap())
            .unwrap();
    for i in 0..backlog {
        let other = format!("{user}-other-{i}");
        state["user_id"] = other.clone().into();
        send(
            &consent,
            &n.consent,
            &other,
            &serde_json::to_vec(&state).unwrap(),
        );
    }
    state["user_id"] = user.into();
    state["account_status"] = "cancelled".into();
    send(
        &consent,
        &n.consent,
        user,
        &serde_json::to_vec(&state).unwrap(),
    );
    consent.flush(Duration::from_secs(120)).unwrap();
    assert_eq!(consent.context().failed.load(Ordering::Relaxed), 0);
    let events = producer(false);
    let mut event: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("event-full.json")).unwrap()).unwrap();
    event["subject"]["user_id"] = user.into();
    let mut ids = BTreeSet::new();
    for i in 0..40 {
        let id = format!("{user}-event-{i}");
        event["event_id"] = id.clone().into();
        send(
            &events,
            &n.events,
            user,
            &serde_json::to_vec(&event).unwrap(),
        );
        ids.insert(id);
    }
    events.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(events.context().failed.load(Ordering::Relaxed), 0);
    ids
}

/// The events of `ids` flagged `account.cancelled` in the alert topic.
fn cancelled(n: &Names, ids: &BTreeSet<String>) -> BTreeSet<String> {
    read_all(&brokers(), &n.violations)
        .iter()
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(m.payload()?).ok())
        .filter(|v| v["rule_id"] == "account.cancelled")
        .filter_map(|v| v["event_id"].as_str().map(str::to_owned))
        .filter(|id| ids.contains(id))
        .collect()
}

/// A schema registry that withholds the consent schema under the ids not
/// opened yet (503), and serves it for the opened ones.
fn gated_registry() -> (String, Arc<Mutex<BTreeSet<u32>>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    let open = Arc::new(Mutex::new(BTreeSet::new()));
    let opened = Arc::clone(&open);
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let id: Option<u32> = req
                .url()
                .strip_prefix("/schemas/ids/")
                .and_then(|id| id.parse().ok());
            let resp = match id {
                Some(id) if opened.lock().unwrap().contains(&id) => {
                    let body =
                        serde_json::json!({ "schema": shareaudit::codec::avro::CONSENT_AVSC });
                    tiny_http::Response::from_string(body.to_string()).with_status_code(200)
                }
                _ => tiny_http::Response::from_string("unavailable").with_status_code(503),
            };
            let _ = req.respond(resp);
        }
    });
    (url, open)
}

/// The 40 events of `ids` are all flagged `account.cancelled`.
fn all_flagged(n: &Names, ids: &BTreeSet<String>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while cancelled(n, ids) != *ids {
        assert!(
            Instant::now() < deadline,
            "{what}: {} of 40 events judged with the cancellation",
            cancelled(n, ids).len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The consent reader deliberately behind: a consent record whose schema
/// the registry withholds stops it (a paused consent partition, in
/// effect), then 100,000 consent states of other users, a cancellation,
/// and at once 40 events of that user. The events wait (none is judged
/// while the reader is stopped); the gate opens; every one is judged with
/// the cancellation. The same after a restart (the new process reads the
/// burst first) and after a rebalance (two replicas, both readers held).
#[test]
#[ignore = "needs a Kafka-protocol broker: scripts/e2e.sh"]
fn a_consent_change_behind_a_burst_of_100000_applies_to_the_events_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let n = names("consent-lag");
    create_topics(&n);
    let (registry, gates) = gated_registry();
    let args = [
        "--schema-registry-url",
        registry.as_str(),
        "--consent-max-wait-ms",
        "120000",
    ];
    let mut d = start_with(&n, dir.path(), &args);
    d.wait_for("ready", Duration::from_secs(60), |d| {
        d.sum("shareaudit_ready", None) == 1.0
    });
    let ids = burst_then_change_then_events(&n, "u-lag", 100_000, Some(78));
    d.wait_for("the 40 events held", Duration::from_secs(60), |d| {
        d.sum("shareaudit_consent_held_records", None) > 0.0
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        d.sum("shareaudit_events_total", None),
        0.0,
        "no event is judged while the consent reader is stopped behind it"
    );
    gates.lock().unwrap().insert(78);
    d.wait_for("the 40 events judged", Duration::from_secs(180), |d| {
        d.sum("shareaudit_events_total", None) == 40.0
    });
    let waited = d.sum("shareaudit_consent_wait_seconds_count", None);
    assert!(waited > 0.0, "the events waited for the consent reader");
    assert_eq!(d.sum("shareaudit_consent_stale_total", None), 0.0);
    all_flagged(&n, &ids, "with the reader behind");

    // A reader that keeps pace with a burst, no gate: it may believe itself
    // at the end while the broker holds the change (the gap that a cached
    // end of the last fetch left: 0 of 40 in one run of four).
    let paced = burst_then_change_then_events(&n, "u-lag-paced", 100_000, None);
    d.wait_for(
        "the 40 paced events judged",
        Duration::from_secs(180),
        |d| d.sum("shareaudit_events_total", None) == 80.0,
    );
    all_flagged(&n, &paced, "a reader keeping pace");
    let (status, _) = d.terminate();
    assert!(status.success());

    // A restart: another burst, another user, while no replica runs.
    let again = burst_then_change_then_events(&n, "u-lag-2", 100_000, None);
    let mut d = start_with(&n, dir.path(), &args);
    d.wait_for("the 40 new events judged", Duration::from_secs(180), |d| {
        d.sum("shareaudit_events_total", None) == 40.0
    });
    all_flagged(&n, &again, "after a restart");

    // A rebalance: a second replica joins; then a third burst, both
    // readers stopped behind it until the gate opens.
    let mut joined = start_with(&n, dir.path(), &args);
    let events_topic = format!("topic=\"{}\"", n.events);
    joined.wait_for(
        "the new replica owns partitions",
        Duration::from_secs(60),
        |d| d.sum("shareaudit_assigned_partitions", Some(&events_topic)) > 0.0,
    );
    d.wait_for("the first gave some up", Duration::from_secs(60), |d| {
        d.sum("shareaudit_assigned_partitions", Some(&events_topic)) < 4.0
    });
    let third = burst_then_change_then_events(&n, "u-lag-3", 100_000, Some(79));
    let held = |d: &mut Daemon| d.sum("shareaudit_consent_held_records", None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while held(&mut d) + held(&mut joined) == 0.0 {
        assert!(Instant::now() < deadline, "the third 40 not held");
        std::thread::sleep(Duration::from_millis(200));
    }
    gates.lock().unwrap().insert(79);
    let deadline = Instant::now() + Duration::from_secs(180);
    while d.sum("shareaudit_events_total", None) + joined.sum("shareaudit_events_total", None)
        < 80.0
    {
        assert!(Instant::now() < deadline, "the third 40 not judged");
        std::thread::sleep(Duration::from_millis(200));
    }
    all_flagged(&n, &third, "after a rebalance");
    for r in [d, joined] {
        let (status, _) = r.terminate();
        assert!(status.success());
    }
}

/// One randomised schedule of the group under failure: `seed` picks the
/// stream's length and rate, the number of replicas, when one is
/// SIGKILLed and how soon it comes back, and whether a new replica joins
/// and another leaves gracefully (SIGTERM) while the stream flows. The
/// events are produced into the running group, as they come in
/// production; the alerts must be the offline truth's,
/// `volume.recipient_rate` included, byte for byte per alert.
fn kill_schedule(seed: u64) -> Result<(), String> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let count = rng.random_range(600..=1_600);
    let per_second = rng.random_range(80..=240) as u64;
    let replicas = rng.random_range(1..=3usize);
    let ms = |rng: &mut rand::rngs::StdRng, lo: u64, hi: u64| {
        Duration::from_millis(rng.random_range(lo..=hi))
    };
    let kill_at = ms(&mut rng, 500, 6_000);
    // tansu keeps a member that died without leaving in the group until a
    // rebalance after its session expired (docs/decisions.md): a restart
    // sooner leaves its partitions orphaned. Kafka needs no such wait.
    // SHAREAUDIT_SCHEDULE_BACK_MS sets it, to try a sooner one.
    let back_after = std::env::var("SHAREAUDIT_SCHEDULE_BACK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or_else(|| SESSION + ms(&mut rng, 4_000, 8_000));
    // A join or a leave rebalances the group; on tansu one within the dead
    // replica's session hands it partitions that nobody then reads (the
    // same bug), so they come before the kill or after its session.
    let membership_change = |rng: &mut rand::rngs::StdRng| {
        if rng.random_bool(0.5) {
            ms(rng, 0, kill_at.as_millis() as u64)
        } else {
            kill_at + SESSION + ms(rng, 1_000, 9_000)
        }
    };
    let join_at = rng.random_bool(0.5).then(|| membership_change(&mut rng));
    let leave_at = (replicas > 2 && rng.random_bool(0.5)).then(|| membership_change(&mut rng));
    let schedule = format!(
        "seed {seed}: {count} events at {per_second}/s, {replicas} replicas, kill at {kill_at:?}, back after {back_after:?}, join at {join_at:?}, leave at {leave_at:?}"
    );
    eprintln!("schedule {schedule}");
    let dir = tempfile::tempdir().unwrap();
    let policy = cluster_policy(dir.path());
    let s = stream(dir.path(), count, 1_000 + seed, &policy);
    let n = names(&format!("sched{seed}"));
    const PARTITIONS: i32 = 6;
    create(&[
        (&n.events, PARTITIONS),
        (&n.consent, 2),
        (&n.violations, 2),
        (&n.dlq, 1),
    ]);
    produce(&n.consent, &s.states);
    let args: Vec<&str> = ["--policy", policy.to_str().unwrap()]
        .into_iter()
        .chain(FAST_GROUP)
        .collect();
    let mut group: Vec<Daemon> = (0..replicas)
        .map(|_| start_with(&n, dir.path(), &args))
        .collect();
    settled(&n, &mut group, PARTITIONS, replicas);
    let records: Vec<(String, Vec<u8>)> = s
        .events
        .iter()
        .map(|(k, p, _)| (k.clone(), p.clone()))
        .collect();
    let topic = n.events.clone();
    let producer = std::thread::spawn(move || {
        let gap = Duration::from_micros(1_000_000 / per_second);
        for chunk in records.chunks(per_second as usize / 10 + 1) {
            produce(&topic, chunk);
            std::thread::sleep(gap * chunk.len() as u32);
        }
    });
    // The actions in time order, from the stream's start: the victim is
    // the first replica, the one that leaves the last of the first ones.
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Act {
        Kill,
        Restart,
        Join,
        Leave,
    }
    let mut acts = vec![(kill_at, Act::Kill), (kill_at + back_after, Act::Restart)];
    acts.extend(join_at.map(|t| (t, Act::Join)));
    acts.extend(leave_at.map(|t| (t, Act::Leave)));
    acts.sort();
    let started = Instant::now();
    let mut victim = Some(0usize);
    let mut leaver = leave_at.map(|_| replicas - 1);
    let mut gone: Vec<usize> = Vec::new();
    for (at, act) in acts {
        std::thread::sleep(at.saturating_sub(started.elapsed()));
        match act {
            Act::Kill => {
                let i = victim.take().expect("one kill");
                group[i].child.kill().unwrap();
                group[i].child.wait().unwrap();
                gone.push(i);
            }
            Act::Leave => {
                let i = leaver.take().expect("one leave");
                let _ = Command::new("kill")
                    .args(["-TERM", &group[i].child.id().to_string()])
                    .status();
                gone.push(i);
            }
            Act::Restart | Act::Join => group.push(start_with(&n, dir.path(), &args)),
        }
    }
    // The ones that left are gone from the group; a graceful one must have
    // exited cleanly.
    gone.sort_unstable();
    for i in gone.into_iter().rev() {
        let mut d = group.remove(i);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Ok(Some(status)) = d.child.try_wait() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{schedule}: a replica did not leave"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        if i != 0 {
            assert!(
                status.success(),
                "{schedule}: the leaving replica exited with {status}"
            );
        }
    }
    producer.join().unwrap();
    wait_committed(&n, PARTITIONS, Duration::from_secs(300), &mut group);
    let (got, _) = alerts_reach(&n, &s.truth, Duration::from_secs(60));
    stop_all(group, &schedule);
    if got == s.truth {
        return Ok(());
    }
    let missing: Vec<_> = s.truth.difference(&got).collect();
    let extra: Vec<_> = got.difference(&s.truth).collect();
    Err(format!("{schedule}: missing {missing:?}, extra {extra:?}"))
}

/// Randomised kill schedules against the offline truth:
/// `SHAREAUDIT_SCHEDULES` of them (default 3) from `SHAREAUDIT_SCHEDULE_SEED`
/// (default 1). scripts/kill-schedules.sh runs hundreds.
#[test]
#[ignore = "needs a Kafka-protocol broker: scripts/kill-schedules.sh"]
fn random_kill_schedules_give_the_offline_truth() {
    let count: u64 = std::env::var("SHAREAUDIT_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let first: u64 = std::env::var("SHAREAUDIT_SCHEDULE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let failures: Vec<String> = (first..first + count)
        .filter_map(|seed| kill_schedule(seed).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {count} schedules differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Produces each (partition, key, payload) to `topic`, in order, one at a
/// time (each acknowledged before the next is sent: logged in this order).
fn produce_to(topic: &str, records: &[(i32, &str, Vec<u8>)]) {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    use std::sync::atomic::Ordering;
    let producer: ThreadedProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("client.id", TEST_CLIENT)
        .set("linger.ms", "0")
        .create_with_context(Acks::default())
        .unwrap();
    for (partition, key, payload) in records {
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(*partition)
                    .key(*key)
                    .payload(payload),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
    }
    assert_eq!(producer.context().failed.load(Ordering::Relaxed), 0);
}

/// Sends `sig` (`-STOP`, `-CONT`) to the process `pid`.
fn signal(pid: &str, sig: &str) {
    let sent = Command::new("kill").args([sig, pid]).status().unwrap();
    assert!(sent.success(), "kill {sig} {pid}");
}

/// Whether `d` owns `partition` of `topic` (it has committed there).
fn owns(d: &Daemon, topic: &str, partition: i32) -> bool {
    let label =
        format!("shareaudit_committed_offset{{partition=\"{partition}\",topic=\"{topic}\"}}");
    d.metrics()
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(&label))
}

/// Issue 14's idle partition. Two replicas, each owning one of the two
/// event partitions; both partitions were read and are idle. One replica
/// is frozen (SIGSTOP); an event is logged on its partition (to a partner
/// with a limit of one subject an hour), then a later one on the other
/// partition, to the same partner. The running replica judges the later
/// one at once. In event-time order, as the offline audit reads them, the
/// later event crosses the limit. The first rule took an idle partition as
/// past everything until its next report: the running replica's rate stage
/// counted the later event first, and the older one came `late` and took
/// the alert. Now the later one waits until the frozen replica's partition
/// is read through its log time.
#[test]
#[ignore = "needs a Kafka-protocol broker: scripts/e2e.sh"]
fn an_older_event_on_an_idle_partition_is_counted_before_a_newer_one_read_first() {
    let dir = tempfile::tempdir().unwrap();
    let n = names("idle");
    create(&[
        (&n.events, 2),
        (&n.consent, 1),
        (&n.violations, 1),
        (&n.dlq, 1),
    ]);
    let policy = dir.path().join("limit-one.yaml");
    let text = shareaudit::policy::DEFAULT_POLICY
        .replace("max_subjects_per_hour: 1000", "max_subjects_per_hour: 1");
    assert_ne!(text, shareaudit::policy::DEFAULT_POLICY);
    std::fs::write(&policy, text).unwrap();
    let args = ["--policy", policy.to_str().unwrap()];
    let mut daemons = vec![start_with(&n, dir.path(), &args)];
    daemons[0].wait_for("ready", Duration::from_secs(60), |d| {
        d.sum("shareaudit_ready", None) == 1.0
    });
    daemons.push(start_with(&n, dir.path(), &args));
    settled(&n, &mut daemons, 2, 2);

    let fixture =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/event-full.json"))
            .unwrap();
    let event = |id: &str, user: &str, at: &str, partner: bool| -> serde_json::Value {
        let mut e: serde_json::Value = serde_json::from_slice(&fixture).unwrap();
        e["event_id"] = id.into();
        e["subject"]["user_id"] = user.into();
        e["occurred_at"] = at.into();
        if partner {
            e["recipient"] = serde_json::json!({"id": "partner-crm", "category": "authorized_partner", "region": "CN"});
            e["purpose"] = "customer_service".into();
            e["legal_basis"] = "consent".into();
            e["order"] = serde_json::Value::Null;
            e["data"] =
                serde_json::json!([{"field": "uid", "category": "account.user_id", "value": "x"}]);
        }
        e
    };
    let json = |e: &serde_json::Value| serde_json::to_vec(e).unwrap();
    // Both partitions read and committed, then idle (the first rule took
    // a partition as idle after a second with nothing read). The partner
    // event two hours earlier (outside the window of the others) shows
    // which partition of the rate topic the partner's candidates take.
    let warm = [
        event("idle-warm-0", "u-w0", "2026-11-20T08:00:00+08:00", false),
        event("idle-warm-1", "u-w1", "2026-11-20T08:00:01+08:00", false),
        event("idle-warm-2", "u-w2", "2026-11-20T08:00:02+08:00", true),
    ];
    produce_to(
        &n.events,
        &[
            (0, "u-w0", json(&warm[0])),
            (1, "u-w1", json(&warm[1])),
            (0, "u-w2", json(&warm[2])),
        ],
    );
    wait_committed(&n, 2, Duration::from_secs(60), &mut daemons);
    let candidate_partition = read_all(&brokers(), &n.rate)
        .iter()
        .find(|m| m.headers().is_none())
        .map(|m| m.partition())
        .expect("the partner event's candidate on the recipient-rate topic");
    // Freeze the replica that does not judge the partner's candidates.
    let frozen = (0..2)
        .find(|&i| !owns(&daemons[i], &n.rate, candidate_partition))
        .expect("a replica that does not own the partner's rate partition");
    let running = 1 - frozen;
    let slow = (0..2)
        .find(|&p| owns(&daemons[frozen], &n.events, p))
        .expect("the frozen replica's event partition");
    std::thread::sleep(Duration::from_secs(3));
    let pid = daemons[frozen].child.id().to_string();
    signal(&pid, "-STOP");

    let judged = |d: &Daemon| d.sum("shareaudit_events_total", None);
    let before = judged(&daemons[running]);
    let older = event("idle-older", "u-old", "2026-11-20T10:00:10+08:00", true);
    let newer = event("idle-newer", "u-new", "2026-11-20T10:00:20+08:00", true);
    produce_to(
        &n.events,
        &[
            (slow, "u-old", json(&older)),
            (1 - slow, "u-new", json(&newer)),
        ],
    );
    daemons[running].wait_for("the newer event judged", Duration::from_secs(60), |d| {
        judged(d) == before + 1.0
    });
    std::thread::sleep(Duration::from_secs(3));
    let pending = daemons[running].sum("shareaudit_rate_pending_observations", None);
    let rate_metrics: Vec<String> = daemons[running]
        .metrics()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("shareaudit_rate_") || l.starts_with("shareaudit_committed"))
        .map(str::to_owned)
        .collect();
    signal(&pid, "-CONT");
    assert_eq!(
        pending, 1.0,
        "the newer candidate waits for the frozen replica's partition: {rate_metrics:?}"
    );
    wait_committed(&n, 2, Duration::from_secs(60), &mut daemons);

    let events = dir.path().join("idle-events.jsonl");
    let lines: Vec<String> = warm
        .iter()
        .chain([&older, &newer])
        .map(|e| e.to_string())
        .collect();
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let out = bin()
        .args(["audit", "--events", events.to_str().unwrap()])
        .args(["--policy", policy.to_str().unwrap()])
        .args(["--hmac-key", "e2e-key-sixteen-bytes"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let truth: BTreeSet<(String, String)> = violation_pairs(&out.stdout);
    let crossing = ("idle-newer".to_owned(), "volume.recipient_rate".to_owned());
    assert!(truth.contains(&crossing), "the offline truth: {truth:?}");
    let (got, _) = alerts_reach(&n, &truth, Duration::from_secs(30));
    same(&got, &truth, "alerts against the offline audit");
    for d in &daemons {
        assert_eq!(
            d.sum(
                "shareaudit_rate_observations_total",
                Some("outcome=\"late\"")
            ),
            0.0,
            "no candidate came late"
        );
    }
    stop_all(daemons, "idle");
}
