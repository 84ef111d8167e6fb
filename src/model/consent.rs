//! `ConsentState`: a user's consents and account as of `updated_at`
//! (`event-model.md` section 2).

use super::Problems;
use super::enums::{AccountStatus, ConsentScope, Purpose};
use super::time::{Date, Timestamp};
use serde::{Deserialize, Serialize};

/// `user_id`, `updated_at` and `account_status` are required; the flags and
/// lists default to "nothing withdrawn, nothing opted out, no consents".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentState {
    pub user_id: String,
    pub updated_at: Timestamp,
    pub account_status: AccountStatus,
    #[serde(default)]
    pub consent_withdrawn: bool,
    #[serde(default)]
    pub withdrawn_purposes: Vec<Purpose>,
    #[serde(default)]
    pub personalized_ads_opt_out: bool,
    #[serde(default)]
    pub personalized_recommendation_opt_out: bool,
    #[serde(default)]
    pub separate_consents: Vec<SeparateConsent>,
    #[serde(default)]
    pub birth_date: Option<Date>,
    #[serde(default)]
    pub guardian_consent: Option<bool>,
}

/// A separate (单独) consent, valid from `granted_at` until `withdrawn_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeparateConsent {
    pub scope: ConsentScope,
    pub recipient_id: String,
    #[serde(default)]
    pub purpose: Option<Purpose>,
    /// Taxonomy ids, or family wildcards such as `identity.*`.
    #[serde(default)]
    pub categories: Vec<String>,
    pub granted_at: Timestamp,
    #[serde(default)]
    pub withdrawn_at: Option<Timestamp>,
}

impl ConsentState {
    /// A record to decode into (`codec::datum`): empty strings and lists,
    /// the first value of each enum. Not a valid state as it stands.
    pub fn empty() -> ConsentState {
        ConsentState {
            user_id: String::new(),
            updated_at: Timestamp(0),
            account_status: AccountStatus::ALL[0],
            consent_withdrawn: false,
            withdrawn_purposes: Vec::new(),
            personalized_ads_opt_out: false,
            personalized_recommendation_opt_out: false,
            separate_consents: Vec::new(),
            birth_date: None,
            guardian_consent: None,
        }
    }
}

impl SeparateConsent {
    /// In force at `t`: granted at or before it and not withdrawn by then.
    pub fn valid_at(&self, t: Timestamp) -> bool {
        self.granted_at <= t && self.withdrawn_at.is_none_or(|w| w > t)
    }

    /// Names the category `id` exactly or through a `family.*` wildcard.
    pub fn covers_category(&self, id: &str) -> bool {
        self.categories.iter().any(|c| match c.strip_suffix(".*") {
            Some(family) => id
                .strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('.')),
            None => c == id,
        })
    }
}

impl ConsentState {
    pub fn problems(&self) -> Problems {
        let mut p = Problems::default();
        if self.user_id.trim().is_empty() {
            p.push("user_id", "must not be empty");
        }
        if !self.updated_at.is_plausible() {
            p.push(
                "updated_at",
                format!("{} is outside 2000-01-01..2100-01-01", self.updated_at),
            );
        }
        for (i, c) in self.separate_consents.iter().enumerate() {
            if c.recipient_id.trim().is_empty() {
                p.push(
                    format!("separate_consents[{i}].recipient_id"),
                    "must not be empty",
                );
            }
            if let Some(w) = c.withdrawn_at
                && w < c.granted_at
            {
                p.push(
                    format!("separate_consents[{i}].withdrawn_at"),
                    "is before granted_at",
                );
            }
        }
        p
    }
}
