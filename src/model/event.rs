//! `DataSharingEvent`: one outbound transmission of personal information
//! (`event-model.md` section 1).

use super::enums::{Flow, LegalBasis, OrderType, Purpose, RecipientCategory, Role};
use super::time::Timestamp;
use super::{Problem, Problems};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSharingEvent {
    pub event_id: String,
    pub occurred_at: Timestamp,
    pub source_service: String,
    pub flow: Flow,
    pub subject: Subject,
    pub recipient: Recipient,
    pub purpose: Purpose,
    pub legal_basis: LegalBasis,
    #[serde(default)]
    pub order: Option<Order>,
    pub data: Vec<DataItem>,
    /// Signed so that a negative count is reported as such, not as a type error.
    pub record_count: i64,
    pub transport: Transport,
    #[serde(default)]
    pub legal_document: Option<LegalDocument>,
    #[serde(default)]
    pub files_encrypted: Option<bool>,
    #[serde(default)]
    pub agreement_ref: Option<String>,
    #[serde(default)]
    pub consent_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    pub user_id: String,
    pub role: Role,
    #[serde(default)]
    pub age: Option<i32>,
    #[serde(default)]
    pub guardian_consent: Option<bool>,
    #[serde(default)]
    pub third_party_authorized: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    pub id: String,
    pub category: RecipientCategory,
    /// ISO 3166-1 alpha-2 code of where the data lands.
    pub region: String,
    #[serde(default)]
    pub acting_for_merchant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    #[serde(rename = "type")]
    pub order_type: OrderType,
    pub merchant_id: String,
    #[serde(default)]
    pub cash_on_delivery: bool,
    #[serde(default)]
    pub insured: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataItem {
    pub field: String,
    /// The taxonomy id the sender declares; `None` means "classify it".
    #[serde(default)]
    pub category: Option<String>,
    /// The value or a sample of it, for content inspection. Never copied into alerts.
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transport {
    pub encrypted: bool,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegalDocument {
    #[serde(rename = "type")]
    pub doc_type: String,
    pub reference: String,
}

impl Order {
    /// A record to decode into: empty strings, the first order type.
    pub fn empty() -> Order {
        Order {
            id: String::new(),
            order_type: OrderType::ALL[0],
            merchant_id: String::new(),
            cash_on_delivery: false,
            insured: false,
        }
    }
}

impl LegalDocument {
    /// A record to decode into: empty strings.
    pub fn empty() -> LegalDocument {
        LegalDocument {
            doc_type: String::new(),
            reference: String::new(),
        }
    }
}

impl DataSharingEvent {
    /// A record to decode into (`codec::json::decode_event_into`): empty
    /// strings, the first value of each enum. Not a valid event as it stands.
    pub fn empty() -> DataSharingEvent {
        DataSharingEvent {
            event_id: String::new(),
            occurred_at: Timestamp(0),
            source_service: String::new(),
            flow: Flow::ALL[0],
            subject: Subject {
                user_id: String::new(),
                role: Role::ALL[0],
                age: None,
                guardian_consent: None,
                third_party_authorized: None,
            },
            recipient: Recipient {
                id: String::new(),
                category: RecipientCategory::ALL[0],
                region: String::new(),
                acting_for_merchant: None,
            },
            purpose: Purpose::ALL[0],
            legal_basis: LegalBasis::ALL[0],
            order: None,
            data: Vec::new(),
            record_count: 0,
            transport: Transport {
                encrypted: false,
                protocol: None,
            },
            legal_document: None,
            files_encrypted: None,
            agreement_ref: None,
            consent_ref: None,
        }
    }
}

/// Oldest and youngest ages taken as real; outside is an input error.
pub const MAX_AGE: i32 = 150;

impl DataSharingEvent {
    /// Every problem of the record that the type system does not already
    /// rule out, each with its field path. Taxonomy ids are checked by the
    /// engine, which knows the policy's taxonomy.
    pub fn problems(&self) -> Problems {
        let mut p = Problems::default();
        non_empty(&mut p, "event_id", &self.event_id);
        non_empty(&mut p, "source_service", &self.source_service);
        non_empty(&mut p, "subject.user_id", &self.subject.user_id);
        non_empty(&mut p, "recipient.id", &self.recipient.id);
        if !self.occurred_at.is_plausible() {
            p.push(
                "occurred_at",
                format!("{} is outside 2000-01-01..2100-01-01", self.occurred_at),
            );
        }
        if self.record_count < 1 {
            p.push(
                "record_count",
                format!("must be at least 1, got {}", self.record_count),
            );
        }
        if let Some(age) = self.subject.age
            && !(0..=MAX_AGE).contains(&age)
        {
            p.push(
                "subject.age",
                format!("must be between 0 and {MAX_AGE}, got {age}"),
            );
        }
        if !is_region_code(&self.recipient.region) {
            p.push(
                "recipient.region",
                format!(
                    "must be an ISO 3166-1 alpha-2 code such as CN, got `{}`",
                    self.recipient.region.escape_debug()
                ),
            );
        }
        if self.data.is_empty() && self.flow != Flow::SdkCollection {
            p.push("data", "may be empty only when flow is sdk_collection");
        }
        for (i, item) in self.data.iter().enumerate() {
            if item.field.is_empty() {
                p.push(format!("data[{i}].field"), "must not be empty");
            }
        }
        if let Some(order) = &self.order {
            non_empty(&mut p, "order.id", &order.id);
            non_empty(&mut p, "order.merchant_id", &order.merchant_id);
        }
        if let Some(doc) = &self.legal_document {
            non_empty(&mut p, "legal_document.type", &doc.doc_type);
            non_empty(&mut p, "legal_document.reference", &doc.reference);
        }
        p
    }
}

fn non_empty(p: &mut Problems, path: &str, value: &str) {
    // A first byte that is ASCII and not white space settles it (nearly
    // every value); `trim` walks the rest as chars.
    let settled = value
        .as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii() && !b.is_ascii_whitespace() && *b != 0x0b);
    if !settled && value.trim().is_empty() {
        p.push(path, "must not be empty");
    }
}

/// Two upper-case ASCII letters.
pub fn is_region_code(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A value is refused as empty exactly when `trim` leaves nothing.
        #[test]
        fn blank_is_what_trim_says(value in "[ \\t\\n\\x0b\\x0c\\r\\x1c\\x00a\u{85}\u{a0}\u{3000}\u{200b}]{0,4}") {
            let mut p = Problems::default();
            non_empty(&mut p, "x", &value);
            proptest::prop_assert_eq!(p.is_empty(), !value.trim().is_empty(), "{:?}", value);
        }
    }

    #[test]
    fn every_first_byte_is_blank_as_trim_says() {
        for c in (0..=0x7f_u8)
            .map(char::from)
            .chain(['\u{85}', '\u{a0}', '\u{3000}', '好'])
        {
            for value in [c.to_string(), format!("{c}x"), format!("{c} ")] {
                let mut p = Problems::default();
                non_empty(&mut p, "x", &value);
                assert_eq!(p.is_empty(), !value.trim().is_empty(), "{value:?}");
            }
        }
    }
}
