//! `Violation`: one (event, rule) that fails (`event-model.md` section 3).
//! It names what was wrong and why, never the personal data itself.

use super::enums::{Flow, LegalBasis, Mode, Purpose, RecipientCategory, Severity};
use super::time::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub alert_id: String,
    pub rule_id: String,
    pub clause: String,
    pub severity: Severity,
    pub title: String,
    /// The title in Chinese. Added after the first release: a violation
    /// written before it reads as empty.
    #[serde(default)]
    pub title_zh: String,
    pub detail: String,
    /// The detail in Chinese (same values, quoted as identifiers).
    #[serde(default)]
    pub detail_zh: String,
    pub event_id: String,
    pub occurred_at: Timestamp,
    pub detected_at: Timestamp,
    pub recipient_id: String,
    pub recipient_category: RecipientCategory,
    pub recipient_region: String,
    pub purpose: Purpose,
    pub legal_basis: LegalBasis,
    pub flow: Flow,
    pub categories: Vec<String>,
    pub fields: Vec<String>,
    pub subject_ref: String,
    pub record_count: i64,
    pub mode: Mode,
    pub policy_version: PolicyVersion,
    /// Where the event was read: a Kafka position, or `None` offline.
    pub source: Option<Source>,
}

/// The policy that judged: its declared version and the SHA-256 of its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub version: String,
    pub hash: String,
}

/// Topic, partition and offset of the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}
