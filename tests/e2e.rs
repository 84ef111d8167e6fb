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
use std::time::{Duration, Instant};

fn brokers() -> String {
    std::env::var("SHAREAUDIT_E2E_BROKERS")
        .expect("SHAREAUDIT_E2E_BROKERS: run these through scripts/e2e.sh")
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
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let topics = [
        (&n.events, 4),
        (&n.consent, 2),
        (&n.violations, 2),
        (&n.dlq, 1),
    ];
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let results = futures::executor::block_on(admin.create_topics(
        &new,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .unwrap();
    for r in results {
        r.unwrap();
    }
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
const ONE_RECORD_PER_BATCH: &str = "batch.num.messages=1";

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
        .env("SHAREAUDIT_HMAC_KEY", "e2e-key")
        .env("SHAREAUDIT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Daemon { child, port }
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
        // A duplicate (a re-audited record) carries the same alert_id and the same content.
        let mut content = v.clone();
        content["detected_at"] = serde_json::Value::Null;
        content["source"] = serde_json::Value::Null;
        let bytes = serde_json::to_vec(&content).unwrap();
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
    let (want, dead) = expectations(&expected);

    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, shareaudit::policy::DEFAULT_POLICY).unwrap();
    let mut d = start_with(&n, dir.path(), &["--policy", policy.to_str().unwrap()]);
    d.wait_for("every record judged", Duration::from_secs(240), |d| {
        d.sum("shareaudit_events_total", None) as usize == 20_012
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
