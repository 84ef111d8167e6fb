//! Engine properties the policy cases do not show by rule ids alone: ids,
//! keyed refs, severities, exceptions, and that no personal value leaks.

use super::*;
use crate::codec::json;
use crate::policy;

fn policy() -> Arc<Policy> {
    Arc::new(policy::load_default(Timestamp(0)).unwrap().policy)
}

fn event(patch: serde_json::Value) -> DataSharingEvent {
    let mut base = serde_json::json!({
        "event_id": "e-1", "occurred_at": "2026-11-20T10:15:30+08:00", "source_service": "order-fulfilment", "flow": "share",
        "subject": {"user_id": "u-10023", "role": "buyer", "age": 34},
        "recipient": {"id": "sf-express", "category": "logistics_carrier", "region": "CN"},
        "purpose": "delivery", "legal_basis": "contract",
        "order": {"id": "o-88121", "type": "general", "merchant_id": "m-301"},
        "data": [
            {"field": "receiver_name", "category": "contact.recipient_name", "value": "张三"},
            {"field": "receiver_phone", "category": "contact.recipient_phone", "value": "13800138000"}
        ],
        "record_count": 1, "transport": {"encrypted": true, "protocol": "TLS1.3"}
    });
    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }
    merge(&mut base, patch);
    json::decode_event(base.to_string().as_bytes()).unwrap()
}

fn ctx() -> AuditContext {
    AuditContext {
        detected_at: Timestamp::parse_rfc3339("2026-11-20T02:15:31Z").unwrap(),
        source: None,
    }
}

fn audit(e: &DataSharingEvent) -> Verdict {
    Engine::new(policy(), b"k").audit(e, None, &ctx()).unwrap()
}

fn rules(v: &Verdict) -> Vec<&str> {
    v.violations.iter().map(|v| v.rule_id.as_str()).collect()
}

#[test]
fn a_compliant_event_yields_nothing() {
    assert!(audit(&event(serde_json::json!({}))).violations.is_empty());
}

#[test]
fn alert_ids_are_deterministic_per_event_and_rule() {
    let e = event(serde_json::json!({"transport": {"encrypted": false}, "record_count": 600}));
    let a = audit(&e);
    let b = audit(&e);
    assert_eq!(a.violations.len(), 2);
    assert_eq!(a.violations[0].alert_id, b.violations[0].alert_id);
    assert_ne!(a.violations[0].alert_id, a.violations[1].alert_id);
    assert_eq!(a.violations[0].alert_id.len(), 32);
    assert_eq!(
        alert_id("e-1", RuleId::TransportUnencrypted),
        alert_id("e-1", RuleId::TransportUnencrypted)
    );
    assert_ne!(
        alert_id("e-1", RuleId::TransportUnencrypted),
        alert_id("e-2", RuleId::TransportUnencrypted)
    );
}

#[test]
fn subject_ref_is_an_hmac_of_the_user_id_under_the_configured_key() {
    let e = event(serde_json::json!({"transport": {"encrypted": false}}));
    let p = policy();
    let with = |key: &[u8]| {
        Engine::new(Arc::clone(&p), key)
            .audit(&e, None, &ctx())
            .unwrap()
            .violations[0]
            .subject_ref
            .clone()
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"key-1").unwrap();
    mac.update(b"u-10023");
    assert_eq!(with(b"key-1"), hex(&mac.finalize().into_bytes()));
    assert_ne!(with(b"key-1"), with(b"key-2"));
}

#[test]
fn no_personal_value_of_the_event_appears_in_any_violation() {
    // Everything wrong at once, with personal values everywhere.
    let e = event(serde_json::json!({
        "subject": {"user_id": "u-secret-4711", "age": 9},
        "recipient": {"id": "overseas-analytics", "category": "authorized_partner", "region": "US"},
        "purpose": "marketing", "legal_basis": "none", "order": {"id": "o-secret-99"},
        "data": [
            {"field": "buyer_memo", "category": null, "value": "身份证 11010519491231002X 卡号 6217000000000000004"},
            {"field": "device_lat", "category": null, "value": "39.9087,116.3975"},
            {"field": "access_token", "category": null, "value": "tok-abcdef-secret"},
            {"field": "email", "category": null, "value": "zhangsan@163.com"},
            {"field": "receiver_name", "category": "contact.recipient_name", "value": "张三丰"}
        ],
        "record_count": 7000, "transport": {"encrypted": false, "protocol": "HTTP"}
    }));
    let v = audit(&e);
    assert!(v.violations.len() >= 8, "{:?}", rules(&v));
    let text = serde_json::to_string(&v.violations).unwrap();
    for secret in [
        "u-secret-4711",
        "o-secret-99",
        "11010519491231002X",
        "6217000000000000004",
        "39.9087",
        "tok-abcdef-secret",
        "zhangsan@163.com",
        "张三丰",
        "13800138000",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into {text}");
    }
    assert!(
        !text.contains("\"9\"") && !text.contains(" 9 "),
        "the age leaked"
    );
}

#[test]
fn every_violation_speaks_both_languages_and_quotes_the_same_ids_in_each() {
    let e = event(serde_json::json!({
        "subject": {"user_id": "u-1", "age": 9},
        "recipient": {"id": "overseas-analytics", "category": "authorized_partner", "region": "US"},
        "purpose": "marketing", "legal_basis": "none",
        "data": [
            {"field": "buyer_memo", "category": null, "value": "身份证 11010519491231002X"},
            {"field": "access_token", "category": null, "value": "tok-abcdef-secret"}
        ],
        "record_count": 7000, "transport": {"encrypted": false, "protocol": "HTTP"}
    }));
    let v = audit(&e);
    assert!(v.violations.len() >= 8, "{:?}", rules(&v));
    let p = policy();
    for x in &v.violations {
        let meta = p.rule(x.rule_id.parse().unwrap()).unwrap();
        assert_eq!((&x.title, &x.title_zh), (&meta.title, &meta.title_zh));
        let cjk = |s: &str| s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
        assert!(cjk(&x.title_zh) && cjk(&x.detail_zh), "{x:?}");
        assert!(!cjk(&x.detail), "{x:?}");
        // Every `id` the English detail quotes, the Chinese quotes too.
        for id in x.detail.split('`').skip(1).step_by(2) {
            assert!(x.detail_zh.contains(&format!("`{id}`")), "{id}: {x:?}");
        }
    }
}

#[test]
fn severities_go_up_with_sensitive_data_and_bulk_and_escalate_by_parameters() {
    let plain = audit(&event(
        serde_json::json!({"transport": {"encrypted": false}}),
    ));
    assert_eq!(plain.violations[0].severity, Severity::High);
    // A minor's data is all sensitive: "up" raises transport.unencrypted to critical.
    let minor = audit(&event(
        serde_json::json!({"transport": {"encrypted": false}, "subject": {"age": 10, "guardian_consent": true}}),
    ));
    assert_eq!(
        minor
            .violations
            .iter()
            .find(|v| v.rule_id == "transport.unencrypted")
            .unwrap()
            .severity,
        Severity::Critical
    );
    let bulk = audit(&event(serde_json::json!({"record_count": 600})));
    assert_eq!(bulk.violations[0].severity, Severity::High);
    let huge = audit(&event(serde_json::json!({"record_count": 5000})));
    assert_eq!(huge.violations[0].severity, Severity::Critical);
    let id = audit(&event(
        serde_json::json!({"data": [{"field": "buyer_memo", "category": null, "value": "身份证 11010519491231002X"}]}),
    ));
    let pii = id
        .violations
        .iter()
        .find(|v| v.rule_id == "content.undeclared_pii")
        .unwrap();
    assert_eq!(pii.severity, Severity::Critical);
    assert_eq!(pii.categories, vec!["identity.id_card_number"]);
    assert_eq!(pii.fields, vec!["buyer_memo"]);
    assert_eq!(pii.clause, "5.2, 2.8.2");
}

#[test]
fn violations_carry_what_event_model_lists() {
    let e = event(serde_json::json!({"transport": {"encrypted": false}}));
    let ctx = AuditContext {
        detected_at: Timestamp(1),
        source: Some(Source {
            topic: "t".into(),
            partition: 3,
            offset: 42,
        }),
    };
    let v = &Engine::new(policy(), b"k")
        .audit(&e, None, &ctx)
        .unwrap()
        .violations[0];
    assert_eq!(
        (
            v.event_id.as_str(),
            v.recipient_id.as_str(),
            v.recipient_region.as_str()
        ),
        ("e-1", "sf-express", "CN")
    );
    assert_eq!(
        (v.recipient_category, v.purpose, v.legal_basis, v.flow),
        (
            RecipientCategory::LogisticsCarrier,
            Purpose::Delivery,
            LegalBasis::Contract,
            Flow::Share
        )
    );
    assert_eq!(v.occurred_at, e.occurred_at);
    assert_eq!(v.detected_at, Timestamp(1));
    assert_eq!(v.source, ctx.source);
    assert_eq!(v.mode, Mode::Enforce);
    assert_eq!(v.record_count, 1);
    assert!(v.policy_version.hash.starts_with("sha256:"));
    assert!(v.detail.contains("unencrypted") && !v.title.is_empty());
}

#[test]
fn exceptions_suppress_until_they_expire_and_shadow_ones_only_count() {
    let text = policy::DEFAULT_POLICY.replace(
        "exceptions: []",
        "exceptions:\n  - {rule: transport.unencrypted, match: {recipient_id: sf-express}, owner: ops, reason: r, expires: \"2026-12-31\"}\n  - {rule: volume.bulk_transfer, owner: ops, reason: trial, expires: \"2026-12-31\", mode: shadow}\n",
    );
    let p = Arc::new(policy::load(&text, "p", Timestamp(0)).unwrap().policy);
    let e = event(serde_json::json!({"transport": {"encrypted": false}, "record_count": 600}));
    let mut engine = Engine::new(p, b"k");
    let before = engine.audit(&e, None, &ctx()).unwrap();
    assert_eq!(rules(&before), vec!["volume.bulk_transfer"]);
    assert_eq!(
        before.suppressed,
        vec![
            Suppressed {
                rule: RuleId::TransportUnencrypted,
                exception_mode: Mode::Enforce
            },
            Suppressed {
                rule: RuleId::VolumeBulkTransfer,
                exception_mode: Mode::Shadow
            }
        ]
    );
    let late = AuditContext {
        detected_at: Timestamp::parse_rfc3339("2027-01-01T00:00:00+08:00").unwrap(),
        source: None,
    };
    let after = engine.audit(&e, None, &late).unwrap();
    assert_eq!(
        rules(&after),
        vec!["transport.unencrypted", "volume.bulk_transfer"]
    );
    assert!(after.suppressed.is_empty());
}

#[test]
fn a_shadow_rule_reports_in_shadow_mode() {
    let text = policy::DEFAULT_POLICY.replace(
        "    title: Personal data sent without encryption in transit\n",
        "    title: Personal data sent without encryption in transit\n    mode: shadow\n",
    );
    let p = Arc::new(policy::load(&text, "p", Timestamp(0)).unwrap().policy);
    let v = Engine::new(p, b"k")
        .audit(
            &event(serde_json::json!({"transport": {"encrypted": false}})),
            None,
            &ctx(),
        )
        .unwrap();
    assert_eq!(v.violations[0].mode, Mode::Shadow);
    assert_eq!(v.enforced().count(), 0);
}

#[test]
fn an_unknown_declared_category_makes_the_event_invalid_with_its_path() {
    let e = event(
        serde_json::json!({"data": [{"field": "x", "category": "contact.pigeon", "value": "v"}]}),
    );
    let err = Engine::new(policy(), b"k")
        .audit(&e, None, &ctx())
        .unwrap_err();
    assert_eq!(err.0[0].path, "data[0].category");
    assert!(
        err.0[0]
            .message
            .contains("unknown category `contact.pigeon`")
    );
}

#[test]
fn a_new_policy_is_swapped_in_between_events() {
    let mut engine = Engine::new(policy(), b"k");
    let e = event(serde_json::json!({"transport": {"encrypted": false}}));
    assert_eq!(engine.audit(&e, None, &ctx()).unwrap().violations.len(), 1);
    let off = policy::DEFAULT_POLICY.replace(
        "    title: Personal data sent without encryption in transit\n",
        "    title: Personal data sent without encryption in transit\n    enabled: false\n",
    );
    engine.set_policy(Arc::new(
        policy::load(&off, "p", Timestamp(0)).unwrap().policy,
    ));
    assert!(
        engine
            .audit(&e, None, &ctx())
            .unwrap()
            .violations
            .is_empty()
    );
}

#[test]
fn the_window_counts_distinct_subjects_by_event_time() {
    let mut w = volume::RateWindows::default();
    let hour = 3_600_000;
    assert_eq!(w.count("r", "a", 0, hour), 1);
    assert_eq!(w.count("r", "b", 10, hour), 2);
    assert_eq!(
        w.count("r", "a", 20, hour),
        2,
        "a repeated subject counts once"
    );
    assert_eq!(
        w.count("r", "a", 20, hour),
        2,
        "a re-delivered event changes nothing"
    );
    assert_eq!(w.count("r2", "a", 20, hour), 1, "per recipient");
    // b (last seen at 10) falls out one hour later; a (last seen at 20) stays until 20 + hour.
    assert_eq!(w.count("r", "c", 10 + hour, hour), 2);
    assert_eq!(w.count("r", "d", 20 + hour, hour), 2);
    assert_eq!(w.size(), (2, 3));
}

#[test]
fn hex_is_lower_case_two_digits_a_byte() {
    assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    assert_eq!(hex(&[]), "");
}

/// `audit --threads` judges with deferring engines and `finish_rate` in
/// input order: the verdicts must be the engine's alone, violation for
/// violation, the windowed rule's included (limit low, events out of
/// order, repeated subjects, and a shadow exception on the rule).
#[test]
fn a_deferring_engine_and_finish_rate_say_what_one_engine_says() {
    use rand::{Rng, SeedableRng};
    let text = policy::DEFAULT_POLICY
        .replace("max_subjects_per_hour: 1000", "max_subjects_per_hour: 4")
        .replace(
            "exceptions: []",
            "exceptions:\n  - rule: volume.recipient_rate\n    match: {recipient_id: partner-crm}\n    owner: a@b.example\n    reason: trial\n    expires: 2099-01-01\n    mode: shadow\n",
        );
    let policy = Arc::new(policy::load(&text, "p.yaml", Timestamp(0)).unwrap().policy);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut one = Engine::new(Arc::clone(&policy), b"k");
    let mut split = Engine::new(Arc::clone(&policy), b"k").defer_rate();
    let mut windows = volume::RateWindows::default();
    let (mut fired, mut judged) = (0, 0);
    for i in 0..3_000 {
        // 3,000 events over 300 hours, ten an hour, up to half an hour out
        // of order; in turns of 30 hours among 3 subjects (under the limit)
        // and among 9 (over it), so that the window fires again and again.
        let t = Timestamp::parse_rfc3339("2026-11-01T00:00:00Z")
            .unwrap()
            .millis()
            + i64::from(i) * 360_000
            + rng.random_range(-1_800_000..1_800_000i64);
        let subjects = if (i / 300) % 2 == 0 { 3 } else { 9 };
        let e = event(serde_json::json!({
            "event_id": format!("e-{i}"),
            "occurred_at": Timestamp(t).to_string(),
            "subject": {"user_id": format!("u-{}", rng.random_range(0..subjects))},
            "recipient": {"id": "partner-crm", "category": "authorized_partner"},
            "purpose": "customer_service", "legal_basis": "consent", "order": null,
            "data": [{"field": "receiver_phone", "category": "contact.recipient_phone", "value": "13800138000"}],
            "agreement_ref": "dpa-1"
        }));
        let alone = one.audit(&e, None, &ctx()).unwrap();
        let mut v = split.audit(&e, None, &ctx()).unwrap();
        finish_rate(&policy, &mut windows, &e.subject.user_id, &mut v);
        assert_eq!(v.violations, alone.violations, "event {i}");
        assert_eq!(
            format!("{:?}", v.suppressed),
            format!("{:?}", alone.suppressed),
            "event {i}"
        );
        judged += 1;
        fired += alone
            .violations
            .iter()
            .filter(|x| x.rule_id == "volume.recipient_rate")
            .count();
    }
    assert!(
        fired >= 5 && judged == 3_000,
        "the window fired {fired} times"
    );
}
