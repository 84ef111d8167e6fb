//! The JSON form of `event-model.md`: one record per line.
//!
//! The fast path decodes an event in one pass straight into the model
//! (`fast.rs`: strings, most of an event, scanned 16 bytes at a time, the
//! record checked as UTF-8 once with SIMD). When it doubts, serde_json
//! parses the record again, so what is accepted is what serde_json accepts,
//! and a failure is explained with serde_json's line and column and, field
//! by field, every top-level field that is wrong (and the first problem
//! inside each) with its path, not just the first one serde met.

use super::{DecodeError, fast};
use crate::model::{ConsentState, DataSharingEvent, Problems, Timestamp, Violation};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::sync::LazyLock;

/// A violation as one line of JSON (no newline), appended to `out`: the
/// bytes serde_json writes for it (tested so), without its per-byte
/// escape table, the timestamps' strings or serde's calls. Alerts, rate
/// candidates and `audit`'s output are written this way.
pub fn write_violation(out: &mut Vec<u8>, v: &Violation) {
    let mut o = Object::new(out);
    o.str("alert_id", &v.alert_id);
    o.str("rule_id", &v.rule_id);
    o.str("clause", &v.clause);
    o.str("severity", v.severity.as_str());
    o.str("title", &v.title);
    o.str("title_zh", &v.title_zh);
    o.str("detail", &v.detail);
    o.str("detail_zh", &v.detail_zh);
    o.str("event_id", &v.event_id);
    o.time("occurred_at", v.occurred_at);
    o.time("detected_at", v.detected_at);
    o.str("recipient_id", &v.recipient_id);
    o.str("recipient_category", v.recipient_category.as_str());
    o.str("recipient_region", &v.recipient_region);
    o.str("purpose", v.purpose.as_str());
    o.str("legal_basis", v.legal_basis.as_str());
    o.str("flow", v.flow.as_str());
    o.strs("categories", &v.categories);
    o.strs("fields", &v.fields);
    o.str("subject_ref", &v.subject_ref);
    o.int("record_count", v.record_count);
    o.str("mode", v.mode.as_str());
    o.key("policy_version");
    let mut p = Object::new(o.out);
    p.str("version", &v.policy_version.version);
    p.str("hash", &v.policy_version.hash);
    p.end();
    o.key("source");
    match &v.source {
        Some(s) => {
            let mut s_ = Object::new(o.out);
            s_.str("topic", &s.topic);
            s_.int("partition", i64::from(s.partition));
            s_.int("offset", s.offset);
            s_.end();
        }
        None => o.out.extend_from_slice(b"null"),
    }
    o.end();
}

/// A JSON object being written: `{`, then `"key":value` pairs, then `}`.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn new(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object { out, first: true }
    }

    /// `key` is one of ours: nothing in it to escape, so it is not looked at.
    fn key(&mut self, key: &str) {
        debug_assert_eq!(fast::plain_end(key.as_bytes(), 0), key.len());
        let sep: &[u8] = if self.first { b"\"" } else { b",\"" };
        self.first = false;
        self.out.extend_from_slice(sep);
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        write_str(self.out, value);
    }

    fn strs(&mut self, key: &str, values: &[String]) {
        self.key(key);
        self.out.push(b'[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write_str(self.out, v);
        }
        self.out.push(b']');
    }

    fn int(&mut self, key: &str, n: i64) {
        self.key(key);
        // Writing to a Vec cannot fail.
        let _ = std::io::Write::write_fmt(self.out, format_args!("{n}"));
    }

    /// As `Timestamp`'s `Display` writes it (RFC 3339, UTC, milliseconds):
    /// the calendar date by integer arithmetic (`civil`), the whole written
    /// at once. chrono's conversion and a push a digit were a tenth of
    /// writing a violation.
    fn time(&mut self, key: &str, t: Timestamp) {
        self.key(key);
        let ms = t.millis();
        let (day, in_day) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS));
        let (year, month, mday) = civil(day);
        if !(0..=9999).contains(&year) {
            write_str(self.out, &t.to_string());
            return;
        }
        let secs = (in_day / 1000) as u32;
        let mut b = *b"\"0000-00-00T00:00:00.000Z\"";
        put(&mut b[1..5], year as u32);
        put(&mut b[6..8], month);
        put(&mut b[9..11], mday);
        put(&mut b[12..14], secs / 3600);
        put(&mut b[15..17], secs / 60 % 60);
        put(&mut b[18..20], secs % 60);
        put(&mut b[21..24], (in_day % 1000) as u32);
        self.out.extend_from_slice(&b);
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

const DAY_MS: i64 = 86_400_000;

/// The proleptic Gregorian date (year, month, day) of a day counted from
/// 1970-01-01: Howard Hinnant's `civil_from_days`.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], from March
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `n` into `field`'s digits, zero-padded.
fn put(field: &mut [u8], mut n: u32) {
    for d in field.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// A JSON string, escaped as serde_json escapes it: `"` and `\`, and
/// control characters (`\n` and the like where JSON has a short form,
/// `\u00xx` otherwise); all else as it is.
fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    out.push(b'"');
    let mut start = 0;
    loop {
        let end = fast::plain_end(b, start);
        out.extend_from_slice(&b[start..end]);
        let Some(&c) = b.get(end) else { break };
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            c => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xf)],
            ]),
        }
        start = end + 1;
    }
    out.push(b'"');
}

/// Decodes and validates one event.
pub fn decode_event(bytes: &[u8]) -> Result<DataSharingEvent, DecodeError> {
    let mut event = DataSharingEvent::empty();
    decode_event_into(bytes, &mut event).map(|()| event)
}

/// Decodes and validates one event into `event`, reusing its allocations:
/// a stream of records decoded into one event allocates (almost) nothing.
/// On an error, `event` holds no meaningful record.
pub fn decode_event_into(bytes: &[u8], event: &mut DataSharingEvent) -> Result<(), DecodeError> {
    if fast::event(bytes, event).is_none() {
        match serde_json::from_slice::<DataSharingEvent>(bytes) {
            Ok(e) => *event = e,
            Err(e) => return Err(explain(bytes, e, event_field_problems)),
        }
    }
    event.problems().into_result().map_err(DecodeError::Invalid)
}

/// Decodes and validates one event through serde_json alone: the
/// reference the fast path must agree with (tests and fuzzing).
pub fn decode_event_serde(bytes: &[u8]) -> Result<DataSharingEvent, DecodeError> {
    let event: DataSharingEvent =
        serde_json::from_slice(bytes).map_err(|e| explain(bytes, e, event_field_problems))?;
    event
        .problems()
        .into_result()
        .map_err(DecodeError::Invalid)?;
    Ok(event)
}

/// Decodes and validates one consent state.
pub fn decode_consent(bytes: &[u8]) -> Result<ConsentState, DecodeError> {
    match serde_json::from_slice::<ConsentState>(bytes) {
        Ok(state) => state
            .problems()
            .into_result()
            .map(|()| state)
            .map_err(DecodeError::Invalid),
        Err(e) => Err(explain(bytes, e, consent_field_problems)),
    }
}

fn explain(
    bytes: &[u8],
    first: serde_json::Error,
    fields: fn(&Map<String, Value>) -> Problems,
) -> DecodeError {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return DecodeError::Syntax {
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            };
        }
    };
    let Some(obj) = value.as_object() else {
        return DecodeError::Malformed(Problems(vec![crate::model::Problem::new(
            "$",
            "must be a JSON object",
        )]));
    };
    let problems = fields(obj);
    if problems.is_empty() {
        // The field-by-field look found nothing: fall back to serde's own word.
        let mut p = Problems::default();
        p.push("$", first.to_string());
        return DecodeError::Malformed(p);
    }
    DecodeError::Malformed(problems)
}

/// Checks that `obj[name]` is present (when required) and decodes as `T`,
/// recording the first problem inside it with its full path.
fn check<T: DeserializeOwned>(
    p: &mut Problems,
    obj: &Map<String, Value>,
    name: &str,
    required: bool,
) {
    match obj.get(name) {
        None if required => p.push(name, "is required"),
        Some(Value::Null) if required => p.push(name, "is required (got null)"),
        None => {}
        Some(v) => {
            if let Err(e) = serde_path_to_error::deserialize::<_, T>(v) {
                let inner = e.path().to_string();
                let path = if inner == "." {
                    name.to_owned()
                } else {
                    format!("{name}.{inner}")
                };
                p.push(path, e.into_inner().to_string());
            }
        }
    }
}

fn event_field_problems(o: &Map<String, Value>) -> Problems {
    use crate::model::*;
    let mut p = Problems::default();
    check::<String>(&mut p, o, "event_id", true);
    check::<Timestamp>(&mut p, o, "occurred_at", true);
    check::<String>(&mut p, o, "source_service", true);
    check::<Flow>(&mut p, o, "flow", true);
    check::<Subject>(&mut p, o, "subject", true);
    check::<Recipient>(&mut p, o, "recipient", true);
    check::<Purpose>(&mut p, o, "purpose", true);
    check::<LegalBasis>(&mut p, o, "legal_basis", true);
    check::<Option<Order>>(&mut p, o, "order", false);
    check::<Vec<DataItem>>(&mut p, o, "data", true);
    check::<i64>(&mut p, o, "record_count", true);
    check::<Transport>(&mut p, o, "transport", true);
    check::<Option<LegalDocument>>(&mut p, o, "legal_document", false);
    check::<Option<bool>>(&mut p, o, "files_encrypted", false);
    check::<Option<String>>(&mut p, o, "agreement_ref", false);
    check::<Option<String>>(&mut p, o, "consent_ref", false);
    p
}

fn consent_field_problems(o: &Map<String, Value>) -> Problems {
    use crate::model::*;
    let mut p = Problems::default();
    check::<String>(&mut p, o, "user_id", true);
    check::<Timestamp>(&mut p, o, "updated_at", true);
    check::<AccountStatus>(&mut p, o, "account_status", true);
    check::<bool>(&mut p, o, "consent_withdrawn", false);
    check::<Vec<Purpose>>(&mut p, o, "withdrawn_purposes", false);
    check::<bool>(&mut p, o, "personalized_ads_opt_out", false);
    check::<bool>(&mut p, o, "personalized_recommendation_opt_out", false);
    check::<Vec<SeparateConsent>>(&mut p, o, "separate_consents", false);
    check::<Option<Date>>(&mut p, o, "birth_date", false);
    check::<Option<bool>>(&mut p, o, "guardian_consent", false);
    p
}

/// A consent-state line may also be a tombstone: `{"user_id": "u-1", "tombstone": true}`
/// stands for the null value a compacted topic carries.
pub fn tombstone_user(bytes: &[u8]) -> Option<String> {
    // Its key is written out, or escaped: a line with neither (every state
    // of a long file) is not parsed a second time.
    static KEY: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"tombstone"));
    if KEY.find(bytes).is_none() && memchr::memchr(b'\\', bytes).is_none() {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Tombstone {
        user_id: String,
        tombstone: bool,
    }
    serde_json::from_slice::<Tombstone>(bytes)
        .ok()
        .filter(|t| t.tombstone)
        .map(|t| t.user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `write_violation` writes what serde_json writes, byte for byte: for
    /// every violation the engine makes of generated traffic (offline and
    /// with a Kafka source), for the fixture, and for strings and times of
    /// every kind.
    #[test]
    fn violations_are_written_as_serde_json_writes_them() {
        use crate::audit::{AuditContext, Engine};
        use crate::consent::ConsentTable;
        use crate::demo::generate;
        use crate::model::Source;
        use std::sync::Arc;

        let check = |v: &Violation| {
            let mut ours = Vec::new();
            write_violation(&mut ours, v);
            let theirs = serde_json::to_vec(v).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
        };
        let policy = Arc::new(crate::policy::load_default(Timestamp(0)).unwrap().policy);
        let o = generate::Options::default();
        let mut table = ConsentTable::for_policy(&policy.settings);
        for s in generate::consent_states(&o) {
            table.upsert(s);
        }
        let mut engine = Engine::new(Arc::clone(&policy), b"test-key");
        let mut written = 0;
        for (i, g) in generate::events(&o, 3000).iter().enumerate() {
            let e = &g.event;
            let ctx = AuditContext {
                detected_at: Timestamp(1_800_000_000_000 + i as i64),
                source: (i % 2 == 0).then(|| Source {
                    topic: "privacy.sharing-events".into(),
                    partition: (i % 7) as i32,
                    offset: i as i64 * 1000,
                }),
            };
            let verdict = engine
                .audit(e, table.as_of(&e.subject.user_id, e.occurred_at), &ctx)
                .unwrap();
            for v in &verdict.violations {
                check(v);
                written += 1;
            }
        }
        assert!(written > 300, "{written} violations");

        let full: Violation =
            serde_json::from_str(include_str!("../../tests/fixtures/violation-full.json")).unwrap();
        check(&full);
        let strings = [
            String::new(),
            "\"\\/\u{8}\u{c}\n\r\t\u{0}\u{1}\u{1f}\u{7f}\u{80}".to_owned(),
            "张三 13800138000 é 😀 \u{2028}\u{feff}".to_owned(),
            "x".repeat(100) + "\"" + &"y".repeat(17),
        ];
        for s in &strings {
            let mut v = full.clone();
            v.alert_id = s.clone();
            v.detail_zh = s.clone();
            v.recipient_region = s.clone();
            v.categories = vec![s.clone(), s.clone()];
            v.fields = vec![];
            v.policy_version.hash = s.clone();
            v.source = Some(Source {
                topic: s.clone(),
                partition: -1,
                offset: i64::MIN,
            });
            check(&v);
        }
        for ms in [
            0,
            -1,
            1,
            999,
            -62_135_596_800_000, // 0001-01-01
            -62_167_219_200_000, // 0000-01-01
            -62_167_219_200_001, // the year -1
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            253_402_300_800_000, // 10000-01-01
            4_102_444_800_000,
            i64::MIN,
            i64::MAX,
        ] {
            let mut v = full.clone();
            v.occurred_at = Timestamp(ms);
            v.detected_at = Timestamp(ms.wrapping_add(1));
            v.record_count = ms;
            check(&v);
        }
        // Instants of the years 0 to 9999, written by arithmetic, not chrono.
        proptest::proptest!(|(ms in -62_167_219_200_000i64..253_402_300_800_000)| {
            let mut v = full.clone();
            v.occurred_at = Timestamp(ms);
            v.detected_at = Timestamp(ms / 7);
            check(&v);
        });
        proptest::proptest!(|(s in ".*", bytes in proptest::collection::vec(0u8..0x80, 0..64), ms in proptest::num::i64::ANY)| {
            let mut v = full.clone();
            v.title = s.clone();
            v.detail = String::from_utf8(bytes).unwrap();
            v.occurred_at = Timestamp(ms);
            v.fields = vec![s];
            check(&v);
        });
    }

    /// Depth is bounded on both paths: a record nested a million deep is a
    /// syntax error (serde_json's recursion limit), not a stack overflow.
    #[test]
    fn a_record_nested_a_million_deep_is_an_error_not_a_crash() {
        for open in [&b"["[..], b"{\"a\":"] {
            let deep = open.repeat(1_000_000);
            let wrapped = [&b"{\"event_id\":"[..], &deep].concat();
            for bytes in [&deep, &wrapped] {
                assert!(matches!(
                    decode_event(bytes),
                    Err(DecodeError::Syntax { .. })
                ));
                assert!(matches!(
                    decode_event_serde(bytes),
                    Err(DecodeError::Syntax { .. })
                ));
                assert!(decode_consent(bytes).is_err());
            }
        }
    }

    const EVENT: &str = r#"{"event_id":"e-1","occurred_at":"2026-11-20T10:15:30.123+08:00","source_service":"order-fulfilment","flow":"share",
      "subject":{"user_id":"u-10023","role":"buyer","age":34,"guardian_consent":null,"third_party_authorized":null},
      "recipient":{"id":"sf-express","category":"logistics_carrier","region":"CN","acting_for_merchant":null},
      "purpose":"delivery","legal_basis":"contract",
      "order":{"id":"o-88121","type":"general","merchant_id":"m-301","cash_on_delivery":false,"insured":false},
      "data":[{"field":"receiver_phone","category":"contact.recipient_phone","value":"13800138000"},{"field":"buyer_memo","category":null,"value":"放门卫"}],
      "record_count":1,"transport":{"encrypted":true,"protocol":"TLS1.3"},"legal_document":null,"files_encrypted":null,"agreement_ref":null,"consent_ref":null,
      "some_future_field": 1}"#;

    #[test]
    fn the_spec_example_decodes_and_extra_fields_are_ignored() {
        let e = decode_event(EVENT.as_bytes()).unwrap();
        assert_eq!(e.recipient.id, "sf-express");
        assert_eq!(e.data[1].category, None);
        assert_eq!(e.occurred_at.to_string(), "2026-11-20T02:15:30.123Z");
    }

    #[test]
    fn every_wrong_field_is_named_with_its_path() {
        let bad = EVENT
            .replace(r#""purpose":"delivery""#, r#""purpose":"deliveryy""#)
            .replace(r#""region":"CN""#, r#""region":7"#)
            .replace(r#""event_id":"e-1","#, "");
        let err = decode_event(bad.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("event_id: is required"), "{err}");
        // The value found is not repeated: it could be anything personal.
        assert!(err.contains("purpose: unknown Purpose `…`"), "{err}");
        assert!(!err.contains("deliveryy"), "{err}");
        assert!(err.contains("recipient.region: invalid type"), "{err}");
    }

    #[test]
    fn absurd_values_are_invalid_not_panics() {
        let bad = EVENT
            .replace(r#""record_count":1"#, r#""record_count":-5"#)
            .replace("2026-11-20T10", "9999-11-20T10");
        let err = decode_event(bad.as_bytes()).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid(_)));
        let msg = err.to_string();
        assert!(
            msg.contains("record_count: must be at least 1, got -5"),
            "{msg}"
        );
        assert!(msg.contains("occurred_at: 9999-11-20"), "{msg}");
        let age = EVENT.replace(r#""age":34"#, r#""age":99999999999"#);
        assert!(
            decode_event(age.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("subject.age")
        );
    }

    #[test]
    fn broken_json_reports_line_and_column() {
        let err = decode_event(b"{\"event_id\": \n  ,}").unwrap_err();
        match err {
            DecodeError::Syntax { line, column, .. } => assert_eq!((line, column), (2, 3)),
            other => panic!("{other:?}"),
        }
        assert!(
            decode_event(b"[1,2]")
                .unwrap_err()
                .to_string()
                .contains("must be a JSON object")
        );
        assert!(decode_event(b"").is_err());
    }

    #[test]
    fn consent_states_decode_with_defaults_and_tombstones_are_recognised() {
        let s = decode_consent(br#"{"user_id":"u-1","updated_at":"2026-11-01T08:00:00+08:00","account_status":"active"}"#).unwrap();
        assert!(!s.consent_withdrawn && s.separate_consents.is_empty());
        let err = decode_consent(br#"{"user_id":"u-1","updated_at":"x","account_status":"gone"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("updated_at") && err.contains("account_status"),
            "{err}"
        );
        assert_eq!(
            tombstone_user(br#"{"user_id":"u-1","tombstone":true}"#).as_deref(),
            Some("u-1")
        );
        assert_eq!(
            tombstone_user(br#"{"user_id":"u-1","account_status":"active"}"#),
            None
        );
        // The key escaped is still the key: the quick look lets it through to the parse.
        assert_eq!(
            tombstone_user(br#"{"user_id":"u-1","tomb\u0073tone":true}"#).as_deref(),
            Some("u-1")
        );
        assert_eq!(
            tombstone_user(br#"{"user_id":"u-1","tombstone":false}"#),
            None
        );
    }
}
