//! The policy: the file format people edit, its validation, and the
//! compiled form the engine runs on.
//!
//! `load` parses the YAML into typed structs (unknown keys and rule ids are
//! refused there, with line and column), then checks what types cannot
//! (unknown categories, contradictions, expired exceptions), pointing at
//! the line and column of the offending node, then compiles category
//! patterns into bit sets and enum lists into masks. A policy with any
//! error is refused whole; warnings are returned beside the policy.

mod compile;
pub mod file;
pub mod positions;
pub mod taxonomy;
pub mod text;

pub use compile::*;
pub use taxonomy::{CatId, CatSet, Taxonomy};
pub use text::{Arg, Case, Detail, Lang};

use crate::model::Timestamp;
use std::fmt;

/// The default policy, compiled into the binary so that it runs with no file.
pub const DEFAULT_POLICY: &str = include_str!("../../deploy/policy/default.yaml");
pub const DEFAULT_POLICY_NAME: &str = "deploy/policy/default.yaml (embedded)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
}

/// One thing `policy check` reports, at a line and column of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub line: usize,
    pub column: usize,
    /// The node, as a `/`-separated path (`/registry/alipay/licensed`).
    pub path: String,
    pub message: String,
}

/// A policy that was refused, and every reason why.
#[derive(Debug, Clone)]
pub struct PolicyError {
    pub file: String,
    pub findings: Vec<Finding>,
}

impl PolicyError {
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.level == Level::Error)
    }
}

/// `file:line:column: error: message (at path)`, one per line, like a compiler.
pub fn format_finding(file: &str, f: &Finding) -> String {
    let level = match f.level {
        Level::Error => "error",
        Level::Warning => "warning",
    };
    if f.path.is_empty() {
        format!("{file}:{}:{}: {level}: {}", f.line, f.column, f.message)
    } else {
        format!(
            "{file}:{}:{}: {level}: {} (at {})",
            f.line, f.column, f.message, f.path
        )
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors().count();
        writeln!(
            f,
            "policy {} refused: {n} error{}",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for finding in &self.findings {
            writeln!(f, "{}", format_finding(&self.file, finding))?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

/// A policy that loaded, and what it warned about.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub warnings: Vec<Finding>,
}

/// Parses, validates and compiles a policy. `now` dates the check for
/// expired exceptions.
pub fn load(text: &str, file: &str, now: Timestamp) -> Result<Loaded, PolicyError> {
    compile::load(text, file, now)
}

/// The embedded default policy.
pub fn load_default(now: Timestamp) -> Result<Loaded, PolicyError> {
    load(DEFAULT_POLICY, DEFAULT_POLICY_NAME, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RecipientCategory, RuleId};

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2026-11-29T00:00:00Z").unwrap()
    }

    fn refused(text: &str) -> PolicyError {
        load(text, "p.yaml", now()).expect_err("the policy should be refused")
    }

    #[test]
    fn the_default_policy_loads_without_findings_and_configures_every_rule() {
        let loaded = load_default(now()).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let p = loaded.policy;
        for id in RuleId::ALL {
            let rule = p.rule(*id).unwrap_or_else(|| panic!("{id} not configured"));
            assert!(
                !rule.clause.is_empty() && !rule.quote.is_empty() && !rule.title.is_empty(),
                "{id}"
            );
        }
        assert_eq!(p.registry.len(), 18);
        assert!(
            p.is_open(RecipientCategory::Merchant)
                && !p.is_open(RecipientCategory::LogisticsCarrier)
        );
        assert!(p.version.hash.starts_with("sha256:"));
    }

    #[test]
    fn an_unknown_key_is_refused_with_line_and_column() {
        let text = DEFAULT_POLICY.replace(
            "  minor_max_age: 14\n",
            "  minor_max_age: 14\n  minor_max_agee: 15\n",
        );
        let err = refused(&text);
        let f = &err.findings[0];
        let line = text
            .lines()
            .position(|l| l.contains("minor_max_agee"))
            .unwrap()
            + 1;
        assert_eq!((f.line, f.column), (line, 3), "{err}");
        assert!(
            f.message.contains("unknown field `minor_max_agee`"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("p.yaml:{line}:3: error:")),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_rule_id_is_refused() {
        let text =
            DEFAULT_POLICY.replace("  volume.recipient_rate:\n", "  volume.recipient_rates:\n");
        let err = refused(&text);
        assert!(
            err.findings[0]
                .message
                .contains("unknown field `volume.recipient_rates`"),
            "{err}"
        );
        assert!(err.findings[0].line > 1);
    }

    #[test]
    fn an_unknown_enum_value_is_refused() {
        let text = DEFAULT_POLICY.replace(
            "purposes: [delivery, return_pickup]",
            "purposes: [delivery, teleport]",
        );
        let err = refused(&text);
        assert!(
            err.findings[0]
                .message
                .contains("unknown Purpose `teleport`"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_category_is_refused_at_its_item() {
        let text = DEFAULT_POLICY.replace(
            "never: [identity.*, biometric.*, financial.*,",
            "never: [identity.*, biometrics.*, financial.*,",
        );
        let err = refused(&text);
        let f = err.errors().next().unwrap();
        assert!(
            f.message.contains("unknown category `biometrics.*`"),
            "{err}"
        );
        assert_eq!(f.path, "/recipient_categories/logistics_carrier/never/1");
        let line = text
            .lines()
            .position(|l| l.contains("biometrics.*"))
            .unwrap()
            + 1;
        assert_eq!(f.line, line, "{err}");
    }

    #[test]
    fn a_category_both_allowed_and_never_is_a_contradiction() {
        let text = DEFAULT_POLICY.replace(
            "never: [identity.*, biometric.*, financial.*, behaviour.*, comms.*, location.precise_gps, health.*]",
            "never: [identity.*, biometric.*, financial.*, behaviour.*, comms.*, location.precise_gps, health.*, order.notes]",
        );
        let err = refused(&text);
        assert!(
            err.errors().any(|f| f
                .message
                .contains("contradiction: order.notes both allowed and never")),
            "{err}"
        );
    }

    #[test]
    fn exceptions_are_checked_and_expired_ones_warn() {
        let ok = DEFAULT_POLICY.replace(
            "exceptions: []",
            "exceptions:\n  - rule: transport.unencrypted\n    match: {recipient_id: zto-express}\n    owner: ops\n    reason: migration\n    expires: 2026-01-31\n",
        );
        let loaded = load(&ok, "p.yaml", now()).unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert!(
            loaded.warnings[0].message.contains("expired on 2026-01-31"),
            "{:?}",
            loaded.warnings
        );
        let bad = ok
            .replace("rule: transport.unencrypted", "rule: transport.plaintext")
            .replace("2026-01-31", "soon");
        let err = refused(&bad);
        assert!(
            err.errors()
                .any(|f| f.message.contains("unknown RuleId `transport.plaintext`")),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_and_missing_sections_are_refused_not_panics() {
        assert!(refused("api_version: [").findings[0].line >= 1);
        assert!(refused("").findings[0].message.len() > 3);
        assert!(
            refused("api_version: shareaudit/v1\n").findings[0]
                .message
                .contains("missing field")
        );
    }

    #[test]
    fn a_rule_left_out_warns() {
        let start = DEFAULT_POLICY
            .find("  personalization.opted_out:\n")
            .unwrap();
        let end = DEFAULT_POLICY
            .find("  minor.no_guardian_consent:\n")
            .unwrap();
        let text = format!("{}{}", &DEFAULT_POLICY[..start], &DEFAULT_POLICY[end..]);
        let loaded = load(&text, "p.yaml", now()).unwrap();
        assert!(loaded.warnings.iter().any(|w| {
            w.message
                .contains("`personalization.opted_out` is not configured")
        }));
        assert!(
            loaded
                .policy
                .rule(RuleId::PersonalizationOptedOut)
                .is_none()
        );
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn the_shipped_policy_writes_every_title_and_detail_in_both_languages() {
        let raw: serde_json::Value = serde_norway::from_str(DEFAULT_POLICY).unwrap();
        for case in Case::ALL {
            let rule = &raw["rules"][case.rule().as_str()];
            assert!(
                rule["title_zh"].as_str().is_some_and(|t| !t.is_empty()),
                "{} has no title_zh",
                case.rule()
            );
            let mut quoted = Vec::new();
            for lang in Lang::ALL {
                let text = rule["detail"][case.name()][lang.key()]
                    .as_str()
                    .unwrap_or_else(|| {
                        panic!("{} {} has no {}", case.rule(), case.name(), lang.key())
                    });
                let t = text::Template::parse(text, *case).unwrap();
                quoted.push(t.args());
            }
            // Both languages quote the same values, every one the case supplies.
            assert_eq!(quoted[0], quoted[1], "{} {}", case.rule(), case.name());
            let mut supplied = case.args().to_vec();
            supplied.sort_unstable();
            assert_eq!(quoted[0], supplied, "{} {}", case.rule(), case.name());
        }
    }

    #[test]
    fn a_detail_template_is_checked_against_its_case_with_line_and_column() {
        let text = DEFAULT_POLICY.replace(
            r#"zh: "数据流向 {region}（接收方 `{recipient}`）""#,
            r#"zh: "数据流向 {region}（用户 {user_id}）""#,
        );
        let err = refused(&text);
        let f = err.errors().next().unwrap();
        assert_eq!(f.path, "/rules/cross_border.prohibited/detail/region/zh");
        assert_eq!(f.line, line_of(&text, "{user_id}"), "{err}");
        assert!(
            f.message.contains("`{user_id}`") && f.message.contains("{region}, {recipient}"),
            "{err}"
        );

        let text = DEFAULT_POLICY.replacen(
            "      registered_region:\n",
            "      registered_regions:\n",
            1,
        );
        let err = refused(&text);
        let f = err.errors().next().unwrap();
        assert_eq!(f.line, line_of(&text, "registered_regions:"), "{err}");
        assert!(
            f.message.contains("no detail case `registered_regions`")
                && f.message.contains("region, registered_region"),
            "{err}"
        );
    }

    #[test]
    fn words_left_out_are_the_shipped_ones_and_written_ones_win() {
        let shipped = load_default(now()).unwrap().policy;
        // No title_zh, no detail at all for consent.withdrawn; only the
        // Chinese of one case for cross_border.prohibited.
        let start = DEFAULT_POLICY.find("  consent.withdrawn:\n").unwrap();
        let rule = &DEFAULT_POLICY[start..];
        let end = start + rule.find("    severity:").unwrap();
        let title_end = start + rule.find("    title_zh:").unwrap();
        let text = format!("{}{}", &DEFAULT_POLICY[..title_end], &DEFAULT_POLICY[end..]).replace(
            r#"zh: "数据流向 {region}（接收方 `{recipient}`）""#,
            r#"zh: "境外：{region}""#,
        );
        assert!(!text.contains("用户已撤回对共享的全部同意"));
        let loaded = load(&text, "p.yaml", now()).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let p = loaded.policy;
        let id = RuleId::ConsentWithdrawn;
        assert_eq!(
            p.rule(id).unwrap().title_zh,
            shipped.rule(id).unwrap().title_zh
        );
        let d = Detail::new(Case::WithdrewAll).arg(Arg::LegalBasis, "consent");
        for lang in Lang::ALL {
            assert_eq!(p.texts.render(&d, lang), shipped.texts.render(&d, lang));
        }
        let d = Detail::new(Case::AbroadRegion)
            .arg(Arg::Region, "US")
            .arg(Arg::Recipient, "ov");
        assert_eq!(p.texts.render(&d, Lang::Zh), "境外：US");
        assert_eq!(
            p.texts.render(&d, Lang::En),
            shipped.texts.render(&d, Lang::En)
        );
    }
}
