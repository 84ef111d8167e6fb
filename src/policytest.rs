//! `shareaudit policy test`: policy test cases as data, like `opa test`.
//!
//! A case file is YAML:
//!
//! ```yaml
//! defaults:
//!   event: { ... }          # merged under every case's event
//! cases:
//!   - name: GPS to a carrier is prohibited
//!     rule: minimisation.prohibited   # the rule the case is about
//!     event: { data: [{field: device_lat, category: null, value: "39.9087,116.3975"}] }
//!     state: [ {...ConsentState...} ]  # optional history
//!     with: { registry: { partner-crm: { max_subjects_per_hour: 2 } } }  # optional policy overlay
//!     now: "2026-12-01T00:00:00Z"      # optional detected_at (default: the event's occurred_at)
//!     expect: [minimisation.prohibited] # exactly the rule ids that fire
//!   - name: a window
//!     rule: volume.recipient_rate
//!     steps:                           # several events in order, each with its expectation
//!       - {event: {...}, expect: []}
//! ```
//!
//! A case is "violating" for its rule when its expectation names the rule,
//! "compliant" otherwise; `coverage` tells which rules lack either. Events go
//! through the JSON decoder like production records, so a case is also a
//! test of the contract.

use crate::audit::{AuditContext, Engine};
use crate::codec::json;
use crate::consent::ConsentTable;
use crate::model::{ConsentState, DataSharingEvent, RuleId, Timestamp};
use crate::policy::{self, Policy};
use serde::Deserialize;
use serde_norway::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    defaults: Defaults,
    cases: Vec<RawCase>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    #[serde(default)]
    event: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    rule: String,
    #[serde(default)]
    event: Option<Value>,
    #[serde(default)]
    expect: Option<Vec<String>>,
    #[serde(default)]
    steps: Vec<RawStep>,
    #[serde(default)]
    state: Vec<Value>,
    #[serde(default)]
    with: Option<Value>,
    #[serde(default)]
    now: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    event: Value,
    expect: Vec<String>,
}

/// One case, ready to run: events as the JSON lines `shareaudit audit` reads.
#[derive(Debug, Clone)]
pub struct Case {
    pub file: String,
    pub name: String,
    pub rule: RuleId,
    /// (event JSON line, the rule ids expected to fire for it).
    pub steps: Vec<(String, BTreeSet<String>)>,
    /// Consent-state JSON lines.
    pub states: Vec<String>,
    /// The policy overlay, as YAML text, if any.
    pub with: Option<String>,
    pub now: Option<Timestamp>,
}

impl Case {
    /// Violating for its rule: some step expects the rule to fire.
    pub fn violating(&self) -> bool {
        self.steps
            .iter()
            .any(|(_, e)| e.contains(self.rule.as_str()))
    }
}

/// Merges `over` into `base`: mappings key by key, anything else replaced.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn json_line(v: &Value) -> Result<String, String> {
    let j: serde_json::Value = serde_json::to_value(v).map_err(|e| e.to_string())?;
    Ok(j.to_string())
}

/// Parses one case file. `Err` names the file and what is wrong.
pub fn parse(file: &str, text: &str) -> Result<Vec<Case>, String> {
    let mut value: Value = serde_norway::from_str(text).map_err(|e| format!("{file}: {e}"))?;
    value.apply_merge().map_err(|e| format!("{file}: {e}"))?;
    let raw: CaseFile = serde_norway::from_value(value).map_err(|e| format!("{file}: {e}"))?;
    let mut out = Vec::new();
    for c in raw.cases {
        let here = |msg: String| format!("{file}: case `{}`: {msg}", c.name);
        let rule: RuleId = c
            .rule
            .parse()
            .map_err(|e: crate::model::UnknownValue| here(e.to_string()))?;
        let event = |over: &Value| -> Result<String, String> {
            let mut base = raw
                .defaults
                .event
                .clone()
                .unwrap_or(Value::Mapping(Default::default()));
            merge(&mut base, over);
            json_line(&base).map_err(here)
        };
        let expect = |ids: &[String]| -> Result<BTreeSet<String>, String> {
            for id in ids {
                id.parse::<RuleId>().map_err(|e| here(e.to_string()))?;
            }
            Ok(ids.iter().cloned().collect())
        };
        let mut steps = Vec::new();
        match (&c.event, &c.expect) {
            (Some(e), Some(x)) if c.steps.is_empty() => steps.push((event(e)?, expect(x)?)),
            (None, None) if !c.steps.is_empty() => {
                for s in &c.steps {
                    steps.push((event(&s.event)?, expect(&s.expect)?));
                }
            }
            _ => return Err(here("give either `event` and `expect`, or `steps`".into())),
        }
        let states = c
            .state
            .iter()
            .map(json_line)
            .collect::<Result<Vec<_>, _>>()
            .map_err(here)?;
        let with = c
            .with
            .as_ref()
            .map(|w| serde_norway::to_string(w).map_err(|e| here(e.to_string())))
            .transpose()?;
        let now = c
            .now
            .as_deref()
            .map(Timestamp::parse_rfc3339)
            .transpose()
            .map_err(here)?;
        out.push(Case {
            file: file.to_owned(),
            name: c.name,
            rule,
            steps,
            states,
            with,
            now,
        });
    }
    Ok(out)
}

/// The policy text with a case's overlay merged in.
pub fn overlay(policy_text: &str, with: &str) -> Result<String, String> {
    let mut base: Value = serde_norway::from_str(policy_text).map_err(|e| e.to_string())?;
    let over: Value = serde_norway::from_str(with).map_err(|e| e.to_string())?;
    merge(&mut base, &over);
    serde_norway::to_string(&base).map_err(|e| e.to_string())
}

/// The outcome of one case.
#[derive(Debug)]
pub struct Outcome {
    pub case: Case,
    /// `None`: passed; else what went wrong.
    pub failure: Option<String>,
}

/// Runs a case through the engine. `policy_text` is the policy under test
/// (overlays apply to it); `base` is it compiled, reused when no overlay.
pub fn run(case: &Case, policy_text: &str, base: &Arc<Policy>) -> Outcome {
    let fail = |msg: String| Outcome {
        case: case.clone(),
        failure: Some(msg),
    };
    let policy = match &case.with {
        None => Arc::clone(base),
        Some(w) => {
            let text = match overlay(policy_text, w) {
                Ok(t) => t,
                Err(e) => return fail(format!("overlay: {e}")),
            };
            match policy::load(&text, "policy with overlay", Timestamp(0)) {
                Ok(l) => Arc::new(l.policy),
                Err(e) => return fail(e.to_string()),
            }
        }
    };
    let mut table = ConsentTable::for_policy(&policy.settings);
    for s in &case.states {
        match json::decode_consent(s.as_bytes()) {
            Ok(state) => table.upsert(state),
            Err(e) => return fail(format!("state: {e}")),
        }
    }
    let mut engine = Engine::new(policy, b"policy-test");
    for (i, (line, expected)) in case.steps.iter().enumerate() {
        let event: DataSharingEvent = match json::decode_event(line.as_bytes()) {
            Ok(e) => e,
            Err(e) => return fail(format!("step {}: event does not decode: {e}", i + 1)),
        };
        let ctx = AuditContext {
            detected_at: case.now.unwrap_or(event.occurred_at),
            source: None,
        };
        let state: Option<&ConsentState> = table.as_of(&event.subject.user_id, event.occurred_at);
        let verdict = match engine.audit(&event, state, &ctx) {
            Ok(v) => v,
            Err(p) => return fail(format!("step {}: invalid event: {p}", i + 1)),
        };
        let got: BTreeSet<String> = verdict
            .violations
            .iter()
            .map(|v| v.rule_id.clone())
            .collect();
        if &got != expected {
            return fail(format!(
                "step {}: expected {:?}, got {:?}",
                i + 1,
                expected,
                got
            ));
        }
    }
    Outcome {
        case: case.clone(),
        failure: None,
    }
}

/// Rules lacking a violating case, and rules lacking a compliant one.
pub fn coverage(cases: &[Case]) -> (Vec<RuleId>, Vec<RuleId>) {
    let has = |violating: bool| -> Vec<RuleId> {
        RuleId::ALL
            .iter()
            .copied()
            .filter(|r| {
                !cases
                    .iter()
                    .any(|c| c.rule == *r && c.violating() == violating)
            })
            .collect()
    };
    (has(true), has(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped cases, through the engine (tests/cli.rs runs them through the binary).
    #[test]
    fn the_shipped_cases_pass_and_cover_every_rule() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/policy/tests");
        let mut cases = Vec::new();
        for f in std::fs::read_dir(&dir).unwrap() {
            let p = f.unwrap().path();
            cases.extend(
                parse(
                    &p.display().to_string(),
                    &std::fs::read_to_string(&p).unwrap(),
                )
                .unwrap(),
            );
        }
        assert!(cases.len() >= 2 * RuleId::ALL.len());
        let base = Arc::new(policy::load_default(Timestamp(0)).unwrap().policy);
        for case in &cases {
            let outcome = run(case, policy::DEFAULT_POLICY, &base);
            assert!(
                outcome.failure.is_none(),
                "{} / {}: {:?}",
                case.file,
                case.name,
                outcome.failure
            );
        }
        assert_eq!(coverage(&cases), (vec![], vec![]));
    }

    #[test]
    fn a_wrong_expectation_fails_and_bad_files_are_refused_with_their_name() {
        let text = r#"
defaults:
  event: {event_id: x, occurred_at: "2026-11-20T10:15:30+08:00", source_service: s, flow: share,
          subject: {user_id: u, role: buyer}, recipient: {id: sf-express, category: logistics_carrier, region: CN},
          purpose: delivery, legal_basis: contract, order: {id: o, type: general, merchant_id: m},
          data: [{field: device_lat, category: null, value: "39.9087,116.3975"}], record_count: 1, transport: {encrypted: true}}
cases:
  - {name: wrong, rule: minimisation.prohibited, event: {}, expect: []}
"#;
        let cases = parse("t.yaml", text).unwrap();
        let base = Arc::new(policy::load_default(Timestamp(0)).unwrap().policy);
        let failure = run(&cases[0], policy::DEFAULT_POLICY, &base)
            .failure
            .unwrap();
        assert!(
            failure.contains("expected {}, got {\"minimisation.prohibited\"}"),
            "{failure}"
        );
        let bad = parse(
            "t.yaml",
            &text.replace("rule: minimisation.prohibited", "rule: minimisation.nope"),
        )
        .unwrap_err();
        assert!(
            bad.contains("t.yaml: case `wrong`: unknown RuleId `minimisation.nope`"),
            "{bad}"
        );
        assert!(
            parse("t.yaml", "cases: [{name: x, rule: sdk.unlisted}]")
                .unwrap_err()
                .contains("give either")
        );
    }

    #[test]
    fn overlays_merge_mappings_and_replace_the_rest() {
        let merged = overlay("a: {b: 1, c: [1, 2]}\nd: 4\n", "a: {c: [3]}\n").unwrap();
        let v: Value = serde_norway::from_str(&merged).unwrap();
        assert_eq!(v["a"]["b"], Value::from(1));
        assert_eq!(v["a"]["c"], serde_norway::from_str::<Value>("[3]").unwrap());
        assert_eq!(v["d"], Value::from(4));
    }
}
