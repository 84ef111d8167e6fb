//! The policy file as written by people (YAML), before validation.
//!
//! Every struct refuses unknown keys, and `rules` has one key per rule id,
//! so a misspelt key or rule id is an error with its line and column
//! straight from the parser. What the types cannot say (unknown categories,
//! contradictions, expired exceptions) is checked in `compile`.

use crate::model::{Flow, LegalBasis, Mode, OrderType, Purpose, RecipientCategory, Role, Severity};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Must be `shareaudit/v1`.
    pub api_version: String,
    /// The operator's version of this policy, carried in every violation.
    pub version: String,
    /// The privacy policy the rules encode.
    pub document: Document,
    pub settings: Settings,
    /// Category id -> definition.
    pub taxonomy: BTreeMap<String, CategoryDef>,
    pub detectors: Detectors,
    /// Recipient category -> what it may receive and for what.
    pub recipient_categories: BTreeMap<RecipientCategory, CategoryProfile>,
    /// Recipient id -> entry.
    pub registry: BTreeMap<String, RegistryEntry>,
    pub rules: Rules,
    #[serde(default)]
    pub exceptions: Vec<ExceptionDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub title: String,
    pub dated: String,
    /// Where the text lives, for people.
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Minutes east of UTC for calendar dates (ages, exception expiry).
    pub utc_offset_minutes: i32,
    /// Categories that count as sensitive only when shared for a purpose
    /// outside `except_purposes` (`taxonomy.md`, yes-contextual).
    pub contextual_sensitive: ContextualSensitive,
    /// A subject this age or younger is a minor (section 8: 14周岁以下, 14 included);
    /// all their data counts as sensitive.
    pub minor_max_age: i32,
    /// At most this many consent-state versions are kept per user for
    /// as-of look-ups (a bound on memory).
    pub consent_history_per_user: usize,
    /// A version superseded more than this many days before the user's
    /// newest is dropped: only an event older than that could need it.
    #[serde(default = "default_history_days")]
    pub consent_history_days: u32,
}

fn default_history_days() -> u32 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextualSensitive {
    pub categories: Vec<String>,
    pub except_purposes: Vec<Purpose>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryDef {
    pub sensitive: bool,
    #[serde(default)]
    pub fields: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detectors {
    pub id_card: DetectorDef,
    pub mobile: DetectorDef,
    pub bank_card: DetectorDef,
    pub email: DetectorDef,
    pub passport: DetectorDef,
    pub uscc: DetectorDef,
    pub imei: DetectorDef,
    pub mac: DetectorDef,
    pub gps: DetectorDef,
    /// Values never reported: the platform's own hotline and addresses (10.1).
    #[serde(default)]
    pub allow_values: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorDef {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The category a hit counts as.
    pub category: String,
    /// Declared categories that make a hit expected (no `content.undeclared_pii`).
    pub satisfied_by: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryProfile {
    /// Declared purposes (2.10.1).
    #[serde(default)]
    pub purposes: Vec<Purpose>,
    /// Categories necessary for those purposes (5.2). Patterns: `*`, `family.*`, id.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// Categories allowed only when a condition holds.
    #[serde(default)]
    pub conditional: Vec<Conditional>,
    /// Categories the recipient must never receive. `*` means "everything not allowed".
    #[serde(default)]
    pub never: Vec<String>,
    /// Partners and SDKs: the registry entry's purposes and categories are added.
    #[serde(default)]
    pub extend_from_registry: bool,
    /// Registry flags that must be true (else `recipient.category_mismatch`).
    #[serde(default)]
    pub required_flags: Vec<RegistryFlag>,
    /// The recipient category is admitted whole: ids are not listed in the registry.
    #[serde(default)]
    pub open: bool,
    /// `volume.bulk_transfer`: the most records one event may carry.
    #[serde(default)]
    pub bulk_limit: Option<i64>,
    /// `volume.recipient_rate`: distinct subjects per window (registry entries may override).
    #[serde(default)]
    pub max_subjects_per_hour: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditional {
    pub categories: Vec<String>,
    pub when: When,
}

/// All the conditions given must hold (a list means "any of these values").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    #[serde(default)]
    pub purpose: Option<Vec<Purpose>>,
    #[serde(default)]
    pub order_type: Option<Vec<OrderType>>,
    /// Any of these order flags is true.
    #[serde(default)]
    pub order_flag: Option<Vec<OrderFlag>>,
    #[serde(default)]
    pub legal_basis: Option<Vec<LegalBasis>>,
    #[serde(default)]
    pub flow: Option<Vec<Flow>>,
    /// A `legal_document` is (true) or is not (false) present.
    #[serde(default)]
    pub legal_document: Option<bool>,
    /// Minimisation lets the categories through; this rule judges them instead.
    #[serde(default)]
    pub judged_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderFlag {
    CashOnDelivery,
    Insured,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryFlag {
    Licensed,
    GroupMember,
    Authorised,
    PublishedSdkList,
    Agreement,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    pub category: RecipientCategory,
    pub region: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub licensed: Option<bool>,
    #[serde(default)]
    pub group_member: Option<bool>,
    #[serde(default)]
    pub authorised: Option<bool>,
    #[serde(default)]
    pub published_sdk_list: Option<bool>,
    #[serde(default)]
    pub agreement: Option<bool>,
    #[serde(default)]
    pub entrusted_by: Option<String>,
    #[serde(default)]
    pub purposes: Vec<Purpose>,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub max_subjects_per_hour: Option<u64>,
}

/// What every rule has, plus its own parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule<P = NoParams> {
    /// The policy clause, e.g. `4.1(g)`.
    pub clause: String,
    /// The clause's words, quoted from the policy.
    pub quote: String,
    /// One line a person reads in a pager.
    pub title: String,
    /// The title in Chinese; the shipped policy's when left out.
    #[serde(default)]
    pub title_zh: Option<String>,
    /// Detail case -> its templates (`policy::text`); a case or a language
    /// left out takes the shipped policy's.
    #[serde(default)]
    pub detail: BTreeMap<String, DetailText>,
    pub severity: Severity,
    /// "up" in rules.md: one level higher with sensitive data or bulk volume.
    #[serde(default)]
    pub raise: bool,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "enforce")]
    pub mode: Mode,
    /// An example of a violating case, for `policy explain`.
    #[serde(default)]
    pub example: Option<String>,
    #[serde(default)]
    pub params: P,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// One detail case in both languages: `{en: "...", zh: "..."}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailText {
    #[serde(default)]
    pub en: Option<String>,
    #[serde(default)]
    pub zh: Option<String>,
}

fn yes() -> bool {
    true
}

fn enforce() -> Mode {
    Mode::Enforce
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalBasisParams {
    pub flows: Vec<Flow>,
    pub transfer_bases: Vec<LegalBasis>,
    pub contract_recipients: Vec<RecipientCategory>,
    pub transfer_only_bases: Vec<LegalBasis>,
    pub guardian_request_recipients: Vec<RecipientCategory>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoriesParams {
    pub categories: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientsParams {
    pub recipients: Vec<RecipientCategory>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentParams {
    /// The bases that rely on consent.
    pub bases: Vec<LegalBasis>,
    /// Recipient categories the rule leaves to another rule.
    #[serde(default)]
    pub except_recipients: Vec<RecipientCategory>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExemptParams {
    /// Bases under which the rule does not apply (the law compels the sharing).
    pub exempt_bases: Vec<LegalBasis>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiParams {
    /// Severity by detected category, over the rule's default.
    #[serde(default)]
    pub severity_by_category: BTreeMap<String, Severity>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossBorderParams {
    /// Regions that are not "abroad" (6.2: 中华人民共和国境内; HK, MO, TW are outside).
    pub home_regions: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesParams {
    pub roles: Vec<Role>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasesParams {
    pub bases: Vec<LegalBasis>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalDocParams {
    pub bases: Vec<LegalBasis>,
    pub recipients: Vec<RecipientCategory>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkParams {
    /// Critical from this many records.
    pub critical_from: i64,
    /// Critical from `count` records when the event carries any of `categories`.
    pub critical_from_with: CriticalWith,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriticalWith {
    pub count: i64,
    pub categories: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateParams {
    pub window_seconds: i64,
}

/// One key per rule id of `rules.md`. A rule left out does not run (and
/// `policy check` warns); an unknown id is refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(rename = "recipient.unregistered")]
    pub recipient_unregistered: Option<Rule>,
    #[serde(rename = "recipient.category_mismatch")]
    pub recipient_category_mismatch: Option<Rule>,
    #[serde(rename = "recipient.undeclared_category")]
    pub recipient_undeclared_category: Option<Rule>,
    #[serde(rename = "sdk.unlisted")]
    pub sdk_unlisted: Option<Rule>,
    #[serde(rename = "partner.no_agreement")]
    pub partner_no_agreement: Option<Rule<RecipientsParams>>,
    #[serde(rename = "legal_basis.invalid")]
    pub legal_basis_invalid: Option<Rule<LegalBasisParams>>,
    #[serde(rename = "purpose.undeclared")]
    pub purpose_undeclared: Option<Rule>,
    #[serde(rename = "minimisation.prohibited")]
    pub minimisation_prohibited: Option<Rule>,
    #[serde(rename = "minimisation.not_necessary")]
    pub minimisation_not_necessary: Option<Rule>,
    #[serde(rename = "credentials.shared")]
    pub credentials_shared: Option<Rule<CategoriesParams>>,
    #[serde(rename = "sensitive.no_separate_consent")]
    pub sensitive_no_separate_consent: Option<Rule<ConsentParams>>,
    #[serde(rename = "affiliate.sensitive_without_reconsent")]
    pub affiliate_sensitive_without_reconsent: Option<Rule<RecipientsParams>>,
    #[serde(rename = "merchant.foreign_order")]
    pub merchant_foreign_order: Option<Rule>,
    #[serde(rename = "content.undeclared_pii")]
    pub content_undeclared_pii: Option<Rule<PiiParams>>,
    #[serde(rename = "transport.unencrypted")]
    pub transport_unencrypted: Option<Rule>,
    #[serde(rename = "cross_border.prohibited")]
    pub cross_border_prohibited: Option<Rule<CrossBorderParams>>,
    #[serde(rename = "consent.withdrawn")]
    pub consent_withdrawn: Option<Rule<BasesParams>>,
    #[serde(rename = "account.cancelled")]
    pub account_cancelled: Option<Rule<ExemptParams>>,
    #[serde(rename = "personalization.opted_out")]
    pub personalization_opted_out: Option<Rule>,
    #[serde(rename = "minor.no_guardian_consent")]
    pub minor_no_guardian_consent: Option<Rule<ExemptParams>>,
    #[serde(rename = "subject.third_party_unauthorized")]
    pub subject_third_party_unauthorized: Option<Rule<RolesParams>>,
    #[serde(rename = "disclosure.without_consent")]
    pub disclosure_without_consent: Option<Rule<BasesParams>>,
    #[serde(rename = "disclosure.legal_without_document")]
    pub disclosure_legal_without_document: Option<Rule<LegalDocParams>>,
    #[serde(rename = "disclosure.files_not_encrypted")]
    pub disclosure_files_not_encrypted: Option<Rule<BasesParams>>,
    #[serde(rename = "volume.bulk_transfer")]
    pub volume_bulk_transfer: Option<Rule<BulkParams>>,
    #[serde(rename = "volume.recipient_rate")]
    pub volume_recipient_rate: Option<Rule<RateParams>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionDef {
    pub rule: String,
    #[serde(rename = "match", default)]
    pub matches: ExceptionMatch,
    pub owner: String,
    pub reason: String,
    /// `YYYY-MM-DD` (valid through that day, local time) or an RFC 3339 instant.
    pub expires: String,
    /// `shadow`: on trial; matching violations are not suppressed, only counted as "would suppress".
    #[serde(default = "enforce")]
    pub mode: Mode,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionMatch {
    #[serde(default)]
    pub recipient_id: Option<String>,
    #[serde(default)]
    pub purpose: Option<Purpose>,
    /// The violation's categories must all fall within these (patterns allowed).
    #[serde(default)]
    pub categories: Option<Vec<String>>,
}
