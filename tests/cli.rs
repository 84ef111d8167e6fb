//! The `shareaudit` binary, end to end on files: every policy case through
//! `shareaudit audit`, exit codes, bad input, Avro input, the policy commands.

use shareaudit::codec::{avro, json};
use shareaudit::policy::DEFAULT_POLICY;
use shareaudit::policytest;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A subject_ref key of the shortest length accepted.
const KEY: &str = "test-key-16bytes";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shareaudit"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.env_remove("SHAREAUDIT_POLICY")
        .env_remove("SHAREAUDIT_HMAC_KEY");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// Rule ids per event id in the violation lines of `out`.
fn by_event(out: &[u8]) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text(out).lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        m.entry(v["event_id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(v["rule_id"].as_str().unwrap().to_owned());
    }
    m
}

#[test]
fn every_policy_case_holds_through_the_audit_command() {
    let dir = tempfile::tempdir().unwrap();
    let cases_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/policy/tests");
    let mut cases = Vec::new();
    for f in std::fs::read_dir(&cases_dir).unwrap() {
        let p = f.unwrap().path();
        cases.extend(
            policytest::parse(
                &p.display().to_string(),
                &std::fs::read_to_string(&p).unwrap(),
            )
            .unwrap(),
        );
    }
    let (no_violating, no_compliant) = policytest::coverage(&cases);
    assert!(
        no_violating.is_empty() && no_compliant.is_empty(),
        "{no_violating:?} {no_compliant:?}"
    );
    for (n, case) in cases.iter().enumerate() {
        // Each step gets its own event id so that its violations can be told apart.
        let mut events = String::new();
        for (i, (line, _)) in case.steps.iter().enumerate() {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["event_id"] = format!("step-{i}").into();
            events.push_str(&format!("{v}\n"));
        }
        let events = write(dir.path(), &format!("events-{n}.jsonl"), &events);
        let state = write(
            dir.path(),
            &format!("state-{n}.jsonl"),
            &(case.states.join("\n") + "\n"),
        );
        let mut args = vec![
            "audit".to_owned(),
            "--events".into(),
            events.display().to_string(),
            "--state".into(),
            state.display().to_string(),
        ];
        args.extend(["--hmac-key".into(), KEY.into()]);
        if let Some(w) = &case.with {
            let p = write(
                dir.path(),
                &format!("policy-{n}.yaml"),
                &policytest::overlay(DEFAULT_POLICY, w).unwrap(),
            );
            args.extend(["--policy".into(), p.display().to_string()]);
        }
        if let Some(now) = case.now {
            args.extend(["--detected-at".into(), now.to_string()]);
        }
        let out = bin().args(&args).output().unwrap();
        let got = by_event(&out.stdout);
        for (i, (_, expected)) in case.steps.iter().enumerate() {
            let got = got.get(&format!("step-{i}")).cloned().unwrap_or_default();
            // Shadow violations are written too; the expectation lists every fired rule.
            assert_eq!(
                &got,
                expected,
                "{} / {} step {}: {}",
                case.file,
                case.name,
                i + 1,
                text(&out.stderr)
            );
        }
        let violated = case.steps.iter().any(|(_, e)| !e.is_empty());
        let shadow_only = text(&out.stdout)
            .lines()
            .all(|l| l.contains("\"mode\":\"shadow\""));
        let code = out.status.code();
        if violated && !shadow_only {
            assert_eq!(code, Some(1), "{}: {}", case.name, text(&out.stderr));
        } else {
            assert_eq!(code, Some(0), "{}: {}", case.name, text(&out.stderr));
        }
    }
}

#[test]
fn the_examples_give_exactly_what_the_generator_planted() {
    let out = run(&[
        "audit",
        "--events",
        "examples/events.jsonl",
        "--state",
        "examples/state.jsonl",
        "--hmac-key",
        KEY,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let got = by_event(&out.stdout);
    let expected = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/expected.jsonl"),
    )
    .unwrap();
    let mut n = 0;
    for line in expected.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let want: BTreeSet<String> = v["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            got.get(v["event_id"].as_str().unwrap())
                .cloned()
                .unwrap_or_default(),
            want,
            "{line}"
        );
        n += 1;
    }
    assert!(n >= 50);
    assert!(
        text(&out.stderr).contains("violations:"),
        "a summary on stderr"
    );
}

const GOOD: &str = r#"{"event_id":"e-1","occurred_at":"2026-11-20T10:15:30+08:00","source_service":"s","flow":"share","subject":{"user_id":"u-1","role":"buyer"},"recipient":{"id":"sf-express","category":"logistics_carrier","region":"CN"},"purpose":"delivery","legal_basis":"contract","order":{"id":"o-1","type":"general","merchant_id":"m-1"},"data":[{"field":"receiver_name","category":"contact.recipient_name","value":"张三"}],"record_count":1,"transport":{"encrypted":true}}"#;

#[test]
fn exit_codes_say_clean_violations_or_bad_input_and_bad_lines_do_not_stop_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let clean = write(dir.path(), "clean.jsonl", &format!("{GOOD}\n"));
    let out = run(&[
        "audit",
        "--events",
        clean.to_str().unwrap(),
        "--hmac-key",
        KEY,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());

    let bad_event = GOOD
        .replace("\"e-1\"", "\"e-3\"")
        .replace("\"encrypted\":true", "\"encrypted\":false");
    let mixed = format!(
        "{GOOD}\n{{\"event_id\": broken\n{}\n{}\n{bad_event}\n",
        GOOD.replace("\"purpose\":\"delivery\"", "\"purpose\":\"teleport\""),
        GOOD.replace("\"record_count\":1", "\"record_count\":-1")
    );
    let mixed = write(dir.path(), "mixed.jsonl", &mixed);
    let out_file = dir.path().join("out.jsonl");
    let out = run(&[
        "audit",
        "--events",
        mixed.to_str().unwrap(),
        "--hmac-key",
        KEY,
        "--output",
        out_file.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("mixed.jsonl:2: JSON syntax error"), "{err}");
    assert!(
        err.contains("mixed.jsonl:3: malformed record: purpose: unknown Purpose `…`"),
        "{err}"
    );
    assert!(
        !err.contains("teleport"),
        "the value found is not repeated: {err}"
    );
    assert!(
        err.contains("mixed.jsonl:4: invalid record: record_count: must be at least 1, got -1"),
        "{err}"
    );
    assert!(err.contains("3 invalid records"), "{err}");
    let written = std::fs::read(&out_file).unwrap();
    assert_eq!(
        by_event(&written).get("e-3").map(|s| s.len()),
        Some(1),
        "the run went on past the bad lines"
    );

    let out = run(&["audit", "--events", "/no/such/file.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/no/such/file.jsonl"));
    let out = run(&["audit"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
}

/// A generated share with `partner-crm`, a recipient with a rate limit:
/// the template of the windowed rule's tests.
fn partner_crm_share() -> shareaudit::model::DataSharingEvent {
    use shareaudit::demo::generate::{self, Options};
    let options = Options {
        seed: 9,
        users: 100,
        violation_share: 0.0,
        ..Options::default()
    };
    generate::events(&options, 400)
        .into_iter()
        .map(|g| g.event)
        .find(|e| e.recipient.id == "partner-crm")
        .expect("a partner-crm share")
}

/// `--threads` changes nothing in what `audit` says: the same violations,
/// byte for byte and in the same order (the windowed rule included), the
/// same messages with the same line numbers, the same exit code, over a
/// generated file of several batches with bad, blank and comment lines
/// between them and no newline at its end.
#[test]
fn any_thread_count_says_exactly_what_one_thread_says() {
    let dir = tempfile::tempdir().unwrap();
    let (events, state) = (dir.path().join("ev.jsonl"), dir.path().join("st.jsonl"));
    let out = run(&[
        "generate",
        "--count",
        "6000",
        "--violation-share",
        "0.2",
        "--events",
        events.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let generated = std::fs::read_to_string(&events).unwrap();
    let lines: Vec<&str> = generated.lines().collect();
    // 1,100 distinct users to `partner-crm` within the hour, one after every
    // fifth generated line: the windowed rule's count crosses batches.
    use shareaudit::model::Timestamp;
    let template = partner_crm_share();
    let start = Timestamp::parse_rfc3339("2026-11-20T00:00:00Z").unwrap();
    let mut body = String::new();
    for (i, l) in lines.iter().enumerate() {
        body.push_str(l);
        body.push('\n');
        if i % 5 == 0 && i / 5 < 1100 {
            let mut e = template.clone();
            e.event_id = format!("rate-{i:05}");
            e.subject.user_id = format!("u-rate-{i:05}");
            e.occurred_at = Timestamp(start.millis() + i as i64 * 500);
            body.push_str(&serde_json::to_string(&e).unwrap());
            body.push('\n');
        }
        match i % 1500 {
            7 => body.push_str("{\"event_id\": broken\n"),
            8 => body.push_str("\n   \n# a comment\n"),
            // A line longer than a batch (128 KiB) makes its batch longer.
            1000 => body.push_str(&format!("# {}\n", "x".repeat(300_000))),
            9 => body.push_str(&format!(
                "{}\n",
                GOOD.replace("\"record_count\":1", "\"record_count\":-1")
            )),
            _ => {}
        }
    }
    body.push_str(GOOD); // no newline at the end
    let input = write(dir.path(), "mixed.jsonl", &body);
    let audit = |threads: &str| {
        run(&[
            "audit",
            "--events",
            input.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--hmac-key",
            KEY,
            "--detected-at",
            "2026-12-01T00:00:00Z",
            "--threads",
            threads,
        ])
    };
    let one = audit("1");
    let err = text(&one.stderr);
    assert_eq!(one.status.code(), Some(2), "{err}");
    assert!(err.contains("mixed.jsonl:11: JSON syntax error"), "{err}");
    assert!(err.contains("invalid record: record_count"), "{err}");
    let out = text(&one.stdout);
    assert!(out.lines().count() > 1000, "violations written");
    assert!(
        out.contains("volume.recipient_rate"),
        "the windowed rule fired"
    );
    // A file is mapped whole; standard input is read in buffers.
    for threads in ["2", "3", "8"] {
        let many = audit(threads);
        assert_eq!(many.status.code(), one.status.code(), "--threads {threads}");
        assert!(
            many.stdout == one.stdout,
            "--threads {threads}: other violations"
        );
        assert_eq!(text(&many.stderr), err, "--threads {threads}");
    }
    for threads in ["1", "2"] {
        let piped = audit_stdin(
            &body,
            &["--state", state.to_str().unwrap(), "--threads", threads],
        );
        assert_eq!(
            piped.status.code(),
            one.status.code(),
            "stdin, --threads {threads}"
        );
        assert!(
            piped.stdout == one.stdout,
            "stdin, --threads {threads}: other violations"
        );
        let named = text(&piped.stderr).replace("-:", &format!("{}:", input.display()));
        assert_eq!(named, err, "stdin, --threads {threads}");
    }
}

/// `audit --events -` with `body` on standard input.
fn audit_stdin(body: &str, args: &[&str]) -> Output {
    let mut child = bin()
        .args(["audit", "--events", "-", "--hmac-key", KEY])
        .args(["--detected-at", "2026-12-01T00:00:00Z"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let body = body.to_owned();
    // Written from a thread: the child's output fills its pipes meanwhile.
    let writer = std::thread::spawn(move || stdin.write_all(body.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

/// `count` generated events, half of them violating, in `dir/ev.jsonl`.
fn generated(dir: &Path, count: usize) -> PathBuf {
    let events = dir.join("ev.jsonl");
    let count = count.to_string();
    let out = run(&[
        "generate",
        "--count",
        &count,
        "--violation-share",
        "0.5",
        "--events",
        events.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    events
}

/// A file that cannot be mapped (sysfs reports a size and refuses to map)
/// is read, on two threads as on one.
#[test]
fn a_file_that_cannot_be_mapped_is_read() {
    let path = "/sys/devices/system/cpu/online";
    if !Path::new(path).exists() {
        eprintln!("no {path} here: nothing to test");
        return;
    }
    let audit = |threads: &str| {
        run(&[
            "audit",
            "--events",
            path,
            "--hmac-key",
            KEY,
            "--threads",
            threads,
        ])
    };
    let (one, two) = (audit("1"), audit("2"));
    assert!(
        !text(&two.stderr).contains("cannot map"),
        "{}",
        text(&two.stderr)
    );
    assert_eq!(
        two.status.code(),
        one.status.code(),
        "{}",
        text(&two.stderr)
    );
    assert_eq!(text(&two.stderr), text(&one.stderr));
    assert_eq!(two.stdout, one.stdout);
}

/// An output that fails (a full disk) ends the audit with the error, on
/// any thread count: the workers, which hold a bounded number of decoded
/// batches, are let go when the judge stops, and drain the reader.
#[test]
fn an_output_that_fails_ends_the_audit_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let events = generated(dir.path(), 20_000);
    for threads in ["1", "2", "8"] {
        let mut child = bin()
            .args([
                "audit",
                "--events",
                events.to_str().unwrap(),
                "--hmac-key",
                KEY,
            ])
            .args(["--output", "/dev/full", "--threads", threads])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("--threads {threads}: the audit did not end after its output failed");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "--threads {threads}");
        assert!(
            text(&out.stderr).contains("No space left on device"),
            "--threads {threads}: {}",
            text(&out.stderr)
        );
    }
}

/// `shareaudit audit ... | head` ends as `cat ... | head` does: killed by
/// SIGPIPE once its reader is gone, nothing on stderr.
#[test]
fn a_reader_that_goes_away_ends_the_audit_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let events = generated(dir.path(), 20_000);
    for threads in ["1", "2"] {
        let mut child = bin()
            .args([
                "audit",
                "--events",
                events.to_str().unwrap(),
                "--hmac-key",
                KEY,
                "--threads",
                threads,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.contains("rule_id"), "{first}");
        // The reader is dropped: the pipe is closed with megabytes unwritten.
        let done = child.wait_with_output().unwrap();
        assert_eq!(
            done.status.signal(),
            Some(13),
            "killed by SIGPIPE: {:?}",
            done.status
        );
        assert_eq!(text(&done.stderr), "", "--threads {threads}: nothing said");
    }
    // The schema printer, too (print! would panic).
    let mut child = bin()
        .args(["schema", "event"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let done = child.wait_with_output().unwrap();
    assert!(
        !text(&done.stderr).contains("panicked"),
        "{}",
        text(&done.stderr)
    );
}

/// The value at `path` (`clauses.3.by_severity.high`) of the summary.
fn at<'a>(v: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) if v.is_array() => &v[i],
        _ => &v[k],
    })
}

/// `audit --report` writes one page that shows exactly the figures of
/// `--summary-json`, stands alone (no script, no request, no external
/// resource) and holds no user id or data value of its input.
#[test]
fn the_report_shows_the_summary_s_figures_and_nothing_personal() {
    let dir = tempfile::tempdir().unwrap();
    let (page, figures) = (dir.path().join("r.html"), dir.path().join("r.json"));
    let out = run(&[
        "audit",
        "--events",
        "examples/events.jsonl",
        "--state",
        "examples/state.jsonl",
        "--hmac-key",
        KEY,
        "--detected-at",
        "2026-12-01T00:00:00Z",
        "--report",
        page.to_str().unwrap(),
        "--summary-json",
        figures.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&figures).unwrap()).unwrap();
    assert!(html.len() < 2 << 20, "{} bytes", html.len());
    for outside in [
        "<script",
        "http://",
        "https://",
        "src=",
        "url(",
        "@import",
        "<link",
        "@font-face",
    ] {
        assert!(
            !html.contains(outside),
            "the page reaches outside: {outside}"
        );
    }
    // Every figure on the page is the summary's.
    let figure =
        regex::Regex::new(r#"data-figure="([^"]+)"(?: data-value="([^"]+)")?>([^<]*)<"#).unwrap();
    let mut seen = 0;
    for c in figure.captures_iter(&html) {
        let path = &c[1];
        let want = if path == "rate_windows.length" {
            serde_json::json!(json["rate_windows"].as_array().unwrap().len())
        } else {
            at(&json, path).clone()
        };
        match (c.get(2), &want) {
            (Some(v), serde_json::Value::Number(n)) => {
                // serde_json reads floats to within an ulp or two.
                let (a, b) = (v.as_str().parse::<f64>().unwrap(), n.as_f64().unwrap());
                assert!((a - b).abs() <= 1e-12, "{path}: {a} against {b}")
            }
            (_, serde_json::Value::String(s)) => assert_eq!(&c[3], s.as_str(), "{path}"),
            (_, serde_json::Value::Number(n)) => assert_eq!(&c[3], n.to_string(), "{path}"),
            (_, other) => panic!(
                "{path}: the page shows {:?}, the summary has {other}",
                &c[3]
            ),
        }
        seen += 1;
    }
    let inputs = &json["inputs"];
    assert_eq!(inputs["events_judged"], 60);
    assert_eq!(inputs["consent_states"], 100);
    let clauses = json["clauses"].as_array().unwrap();
    assert!(clauses.len() >= 20, "every rule of the policy");
    assert!(clauses.iter().any(|c| c["violations"].as_u64() > Some(0)));
    assert!(
        html.contains("“") && html.contains("我们"),
        "the promises quoted in Chinese"
    );
    assert!(seen > 100, "{seen} figures checked");
    let recipients = json["recipients"].as_array().unwrap().len();
    for i in 0..recipients {
        assert!(html.contains(&format!("data-figure=\"recipients.{i}.events\"")));
    }
    // Nothing personal: no user id, no data value of the input.
    let mut personal = BTreeSet::new();
    for line in std::fs::read_to_string("examples/events.jsonl")
        .unwrap()
        .lines()
    {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        personal.insert(e["subject"]["user_id"].as_str().unwrap().to_owned());
        for d in e["data"].as_array().unwrap() {
            if let Some(v) = d["value"].as_str().filter(|v| v.chars().count() >= 2) {
                personal.insert(v.to_owned());
            }
        }
    }
    for line in std::fs::read_to_string("examples/state.jsonl")
        .unwrap()
        .lines()
    {
        let c: serde_json::Value = serde_json::from_str(line).unwrap();
        personal.insert(c["user_id"].as_str().unwrap().to_owned());
    }
    assert!(personal.len() > 100);
    let json_text = std::fs::read_to_string(&figures).unwrap();
    for p in &personal {
        assert!(
            !html.contains(p.as_str()),
            "the page holds a personal value"
        );
        assert!(
            !json_text.contains(p.as_str()),
            "the summary holds a personal value"
        );
    }
}

#[test]
fn avro_container_files_and_stdin_are_read_too() {
    let dir = tempfile::tempdir().unwrap();
    let e = json::decode_event(
        GOOD.replace("\"encrypted\":true", "\"encrypted\":false")
            .as_bytes(),
    )
    .unwrap();
    let schemas = avro::schemas().unwrap();
    let file = avro::write_container(&schemas.event, [avro::event_to_value(&e)]).unwrap();
    let path = dir.path().join("events.avro");
    std::fs::write(&path, file).unwrap();
    let out = run(&[
        "audit",
        "--events",
        path.to_str().unwrap(),
        "--hmac-key",
        KEY,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        by_event(&out.stdout)["e-1"],
        BTreeSet::from(["transport.unencrypted".to_owned()])
    );

    let mut child = bin()
        .args(["audit", "--events", "-", "--hmac-key", KEY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{GOOD}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn policy_check_reports_line_and_column_and_fails_on_errors() {
    let out = run(&["policy", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("ok: version 2026.12.06-2"));

    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.yaml",
        &DEFAULT_POLICY.replace(
            "never: [identity.*, biometric.*, financial.*,",
            "never: [identity.*, biometrics.*, financial.*,",
        ),
    );
    let out = run(&["policy", "check", bad.to_str().unwrap()]);
    let line = DEFAULT_POLICY
        .lines()
        .position(|l| l.contains("never: [identity.*, biometric.*, financial.*,"))
        .unwrap()
        + 1;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(&format!("bad.yaml:{line}:")),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("unknown category `biometrics.*`"));

    // An audit with a bad policy refuses to run rather than judging with a broken one.
    let out = run(&[
        "audit",
        "--events",
        "examples/events.jsonl",
        "--policy",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn policy_test_and_explain() {
    let out = run(&["policy", "test", "--coverage"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains(" passed, 0 failed"));

    let out = run(&["policy", "explain", "minor.no_guardian_consent"]);
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(s.contains("clause    8 of 快手小店隐私政策"), "{s}");
    assert!(s.contains("14周岁以下"), "{s}");
    assert!(s.contains("exempt_bases"), "{s}");
    assert_eq!(
        run(&["policy", "explain", "no.such_rule"]).status.code(),
        Some(2)
    );
    assert!(
        text(&run(&["policy", "explain", "all"]).stdout)
            .lines()
            .count()
            >= 26
    );
}

#[test]
fn schemas_are_printed() {
    for name in ["event", "consent", "violation"] {
        let out = run(&["schema", name]);
        assert!(
            apache_avro::Schema::parse_str(&text(&out.stdout)).is_ok(),
            "{name}"
        );
    }
}

#[test]
fn run_check_merges_settings_files_in_order_and_connects_to_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(
        dir.path(),
        "settings.yaml",
        "brokers: kafka-a:9092\ngroup_id: audit-a\nlibrdkafka:\n  security.protocol: SASL_SSL\n  sasl.mechanisms: SCRAM-SHA-512\n",
    );
    let creds = write(
        dir.path(),
        "credentials.yaml",
        "group_id: audit-b\nlibrdkafka:\n  sasl.username: shareaudit\n  sasl.password: secret\n",
    );
    let key = write(dir.path(), "hmac.key", "0123456789abcdef0123456789abcdef\n");
    let config = format!("{},{}", base.display(), creds.display());
    let key_arg = format!("--hmac-key-file={}", key.display());
    let out = run(&["run", "--check", "--config", &config, &key_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The later file wins key by key; nothing else changes.
    let said = text(&out.stdout);
    assert!(
        said.contains("brokers kafka-a:9092, group audit-b"),
        "{said}"
    );
    assert!(
        !said.contains("secret"),
        "credentials are not printed: {said}"
    );

    // librdkafka judges the merged properties: a misspelt one names itself.
    let typo = write(dir.path(), "typo.yaml", "librdkafka:\n  sasl.usernme: x\n");
    let config = format!("{},{}", base.display(), typo.display());
    let out = run(&["run", "--check", "--config", &config, &key_arg]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("sasl.usernme"),
        "{}",
        text(&out.stderr)
    );

    // A bad second file is refused with its name, line and column.
    let bad = write(dir.path(), "bad.yaml", "brokers: x\nmax_inflight: 3\n");
    let config = format!("{},{}", base.display(), bad.display());
    let out = run(&["run", "--check", "--config", &config, &key_arg]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("bad.yaml:2:"),
        "{}",
        text(&out.stderr)
    );
}

/// One event dated 2099 once switched `volume.recipient_rate` off for its
/// recipient until then: 1,100 subjects in an hour fired once, the same
/// file plus that event not at all. Now the event is refused (future event
/// time, like a record that cannot be decoded: reported, exit 2) and the
/// window is the same with or without it.
#[test]
fn an_event_dated_far_ahead_is_refused_and_moves_no_window() {
    use shareaudit::model::Timestamp;
    let dir = tempfile::tempdir().unwrap();
    let template = partner_crm_share();
    let start = Timestamp::parse_rfc3339("2026-11-20T00:00:00Z").unwrap();
    let lines: Vec<String> = (0..1100)
        .map(|i| {
            let mut e = template.clone();
            e.event_id = format!("rate-{i:04}");
            e.subject.user_id = format!("u-rate-{i:04}");
            e.occurred_at = Timestamp(start.millis() + i * 3_000);
            serde_json::to_string(&e).unwrap()
        })
        .collect();
    let mut ahead = template.clone();
    ahead.event_id = "from-2099".into();
    ahead.occurred_at = Timestamp::parse_rfc3339("2099-01-01T00:00:00Z").unwrap();
    let ahead = serde_json::to_string(&ahead).unwrap();
    let rate_alerts = |out: &Output| {
        text(&out.stdout)
            .lines()
            .filter(|l| l.contains("\"volume.recipient_rate\""))
            .count()
    };
    let audit = |body: String| {
        let file = write(dir.path(), "rate.jsonl", &body);
        run(&[
            "audit",
            "--events",
            file.to_str().unwrap(),
            "--hmac-key",
            KEY,
            "--detected-at",
            "2026-11-21T00:00:00Z",
        ])
    };
    let plain = audit(lines.join("\n"));
    assert_eq!(rate_alerts(&plain), 1, "{}", text(&plain.stderr));
    let with_ahead = audit(format!("{ahead}\n{}", lines.join("\n")));
    assert_eq!(rate_alerts(&with_ahead), 1, "the window is the same");
    assert_eq!(with_ahead.status.code(), Some(2));
    let stderr = text(&with_ahead.stderr);
    assert!(
        stderr.contains("rate.jsonl:1: future event time"),
        "{stderr}"
    );
    assert_eq!(
        plain.stdout, with_ahead.stdout,
        "every other verdict the same"
    );
}

/// One key file, one `subject_ref`, whichever reads it; a short key is refused.
#[test]
fn a_key_file_means_the_same_key_everywhere_and_short_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let events = "examples/events.jsonl";
    let refs = |out: &Output| -> BTreeSet<String> {
        text(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["subject_ref"].to_string()
            })
            .collect()
    };
    let as_flag = run(&["audit", "--events", events, "--hmac-key", KEY]);
    let file = write(dir.path(), "key", &format!("{KEY}\n"));
    let from_file = run(&[
        "audit",
        "--events",
        events,
        "--hmac-key-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        refs(&as_flag),
        refs(&from_file),
        "the file's line end is not part of the key"
    );
    assert!(!refs(&as_flag).is_empty());

    let short = write(dir.path(), "short", "short-key\n");
    for args in [
        vec![
            "audit",
            "--events",
            events,
            "--hmac-key-file",
            short.to_str().unwrap(),
        ],
        vec!["audit", "--events", events, "--hmac-key", "short-key"],
        vec![
            "run",
            "--check",
            "--brokers",
            "b:9092",
            "--hmac-key-file",
            short.to_str().unwrap(),
        ],
    ] {
        let out = run(&args);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        let said = text(&out.stderr);
        assert!(said.contains("9 bytes; at least 16"), "{args:?}: {said}");
    }
}

#[test]
fn report_refuses_a_bad_period_naming_it_and_an_unreachable_broker_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("s.json");
    let json = json.to_str().unwrap();
    let base = ["report", "--brokers", "127.0.0.1:1", "--summary-json", json];
    let out = run(&[&base[..], &["--from", "yesterday"]].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--from \"yesterday\""),
        "{}",
        text(&out.stderr)
    );
    let out = run(&[
        &base[..],
        &[
            "--from",
            "2026-12-02T00:00:00Z",
            "--to",
            "2026-12-01T00:00:00+08:00",
        ],
    ]
    .concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("must be after --from"));
    // Nothing to write to: refused by the argument parser.
    let out = run(&[
        "report",
        "--brokers",
        "x:1",
        "--from",
        "2026-12-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(2));
    // No broker: an error naming the topic, and no report written.
    let out = run(&[
        &base[..],
        &[
            "--from",
            "2026-12-01T00:00:00Z",
            "-X",
            "socket.connection.setup.timeout.ms=1000",
        ],
    ]
    .concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("reading privacy.violations"));
    assert!(!Path::new(json).exists());
}
