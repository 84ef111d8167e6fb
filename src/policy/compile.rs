//! Validation and compilation of a parsed policy file.

use super::file::{self, OrderFlag, PolicyFile, RegistryFlag};
use super::positions::Positions;
use super::taxonomy::{CatId, CatSet, Taxonomy};
use super::text::{Case, Lang, Template, Texts};
use super::{Finding, Level, Loaded, PolicyError};
use crate::model::event::is_region_code;
use crate::model::{
    EnumSet, Mode, PolicyVersion, Purpose, RecipientCategory, RuleId, Severity, Timestamp,
};
use chrono::NaiveDate;
use rustc_hash::{FxHashMap, FxHashSet};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// A compiled policy: everything the engine needs, in the form it needs it.
#[derive(Debug)]
pub struct Policy {
    pub version: PolicyVersion,
    pub document_title: String,
    pub document_dated: String,
    pub taxonomy: Taxonomy,
    pub settings: Settings,
    pub detectors: Detectors,
    /// Indexed by `RecipientCategory::index()`.
    pub profiles: Vec<Profile>,
    pub registry: FxHashMap<String, Entry>,
    /// Indexed by `RuleId::index()`; `None`: not configured, does not run.
    pub rules: Vec<Option<RuleMeta>>,
    pub params: Params,
    pub exceptions: Vec<Exception>,
    /// Every detail case's templates, in English and Chinese.
    pub texts: Texts,
}

#[derive(Debug)]
pub struct Settings {
    pub utc_offset_minutes: i32,
    pub contextual_sensitive: CatSet,
    pub contextual_except_purposes: EnumSet,
    pub minor_max_age: i32,
    pub consent_history_per_user: usize,
    pub consent_history_days: u32,
}

/// The content detectors, by family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DetectorKind {
    IdCard,
    Mobile,
    BankCard,
    Email,
    Passport,
    Uscc,
    Imei,
    Mac,
    Gps,
}

impl DetectorKind {
    pub const ALL: [DetectorKind; 9] = [
        DetectorKind::IdCard,
        DetectorKind::Mobile,
        DetectorKind::BankCard,
        DetectorKind::Email,
        DetectorKind::Passport,
        DetectorKind::Uscc,
        DetectorKind::Imei,
        DetectorKind::Mac,
        DetectorKind::Gps,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DetectorKind::IdCard => "id_card",
            DetectorKind::Mobile => "mobile",
            DetectorKind::BankCard => "bank_card",
            DetectorKind::Email => "email",
            DetectorKind::Passport => "passport",
            DetectorKind::Uscc => "uscc",
            DetectorKind::Imei => "imei",
            DetectorKind::Mac => "mac",
            DetectorKind::Gps => "gps",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct DetectorRule {
    pub enabled: bool,
    pub category: CatId,
    pub satisfied_by: CatSet,
}

#[derive(Debug)]
pub struct Detectors {
    /// Indexed like `DetectorKind::ALL`.
    pub by_kind: Vec<DetectorRule>,
    pub allow_values: FxHashSet<String>,
}

impl Detectors {
    pub fn get(&self, k: DetectorKind) -> Option<&DetectorRule> {
        self.by_kind.get(k as usize).filter(|d| d.enabled)
    }
}

/// What one recipient category may receive, and for what.
#[derive(Debug, Default, Clone)]
pub struct Profile {
    pub defined: bool,
    pub purposes: EnumSet,
    pub allowed: CatSet,
    pub conditional: Vec<Conditional>,
    pub never: CatSet,
    pub extend_from_registry: bool,
    pub required_flags: Vec<RegistryFlag>,
    pub open: bool,
    pub bulk_limit: Option<i64>,
    pub max_subjects_per_hour: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Conditional {
    pub categories: CatSet,
    pub when: When,
}

/// All present conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct When {
    pub purpose: Option<EnumSet>,
    pub order_type: Option<EnumSet>,
    pub order_flag: Option<Vec<OrderFlag>>,
    pub legal_basis: Option<EnumSet>,
    pub flow: Option<EnumSet>,
    pub legal_document: Option<bool>,
    pub judged_by: Option<RuleId>,
}

/// A registry entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub category: RecipientCategory,
    pub region: String,
    pub licensed: Option<bool>,
    pub group_member: Option<bool>,
    pub authorised: Option<bool>,
    pub published_sdk_list: Option<bool>,
    pub agreement: Option<bool>,
    pub entrusted_by: Option<String>,
    pub purposes: EnumSet,
    pub categories: CatSet,
    pub max_subjects_per_hour: Option<u64>,
}

impl Entry {
    pub fn flag(&self, f: RegistryFlag) -> Option<bool> {
        match f {
            RegistryFlag::Licensed => self.licensed,
            RegistryFlag::GroupMember => self.group_member,
            RegistryFlag::Authorised => self.authorised,
            RegistryFlag::PublishedSdkList => self.published_sdk_list,
            RegistryFlag::Agreement => self.agreement,
        }
    }
}

pub fn flag_name(f: RegistryFlag) -> &'static str {
    match f {
        RegistryFlag::Licensed => "licensed",
        RegistryFlag::GroupMember => "group_member",
        RegistryFlag::Authorised => "authorised",
        RegistryFlag::PublishedSdkList => "published_sdk_list",
        RegistryFlag::Agreement => "agreement",
    }
}

/// What every rule carries into its violations.
#[derive(Debug, Clone)]
pub struct RuleMeta {
    pub clause: String,
    pub quote: String,
    pub title: String,
    pub title_zh: String,
    pub severity: Severity,
    pub raise: bool,
    pub enabled: bool,
    pub mode: Mode,
    pub example: Option<String>,
}

/// Rule parameters, compiled.
#[derive(Debug, Default)]
pub struct Params {
    pub partner_agreement_recipients: EnumSet,
    pub legal_flows: EnumSet,
    pub transfer_bases: EnumSet,
    pub contract_recipients: EnumSet,
    pub transfer_only_bases: EnumSet,
    pub guardian_request_recipients: EnumSet,
    pub credentials: CatSet,
    pub sensitive_consent_bases: EnumSet,
    pub sensitive_except_recipients: EnumSet,
    pub affiliate_recipients: EnumSet,
    pub pii_severity: Vec<(CatId, Severity)>,
    pub home_regions: Vec<String>,
    pub withdrawn_bases: EnumSet,
    pub cancelled_exempt_bases: EnumSet,
    pub minor_exempt_bases: EnumSet,
    pub third_party_roles: EnumSet,
    pub disclosure_bases: EnumSet,
    pub legal_doc_bases: EnumSet,
    pub legal_doc_recipients: EnumSet,
    pub files_bases: EnumSet,
    pub bulk_critical_from: i64,
    pub bulk_critical_with_count: i64,
    pub bulk_critical_with: CatSet,
    pub rate_window_millis: i64,
}

/// A suppression of one rule's matching violations until `expires`.
#[derive(Debug, Clone)]
pub struct Exception {
    pub rule: RuleId,
    pub recipient_id: Option<String>,
    pub purpose: Option<Purpose>,
    pub categories: Option<CatSet>,
    pub owner: String,
    pub reason: String,
    pub expires: Timestamp,
    pub mode: Mode,
}

impl Policy {
    pub fn rule(&self, id: RuleId) -> Option<&RuleMeta> {
        self.rules
            .get(id.index())
            .and_then(Option::as_ref)
            .filter(|r| r.enabled)
    }

    pub fn profile(&self, c: RecipientCategory) -> &Profile {
        &self.profiles[c.index()]
    }

    /// Whether a recipient category is admitted whole by the registry.
    pub fn is_open(&self, c: RecipientCategory) -> bool {
        self.profile(c).open
    }
}

/// Collects findings with positions. The text's positions are read (a
/// second parse of the YAML) at the first finding: a policy without one,
/// the common case at every start and reload, does without.
struct Check<'a> {
    text: &'a str,
    positions: std::cell::OnceCell<Positions>,
    findings: Vec<Finding>,
}

impl Check<'_> {
    fn add(&mut self, level: Level, path: &str, message: impl Into<String>) {
        let pos = self
            .positions
            .get_or_init(|| Positions::of(self.text))
            .find(path);
        self.findings.push(Finding {
            level,
            line: pos.line,
            column: pos.column,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.add(Level::Error, path, message);
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.add(Level::Warning, path, message);
    }

    /// Compiles a list of category patterns; an unknown one is an error at its item.
    fn cats(&mut self, tax: &Taxonomy, path: &str, patterns: &[String]) -> CatSet {
        let mut set = CatSet::EMPTY;
        for (i, p) in patterns.iter().enumerate() {
            match tax.pattern(p) {
                Some(s) => set = set.union(s),
                None => self.error(
                    &format!("{path}/{i}"),
                    format!("unknown category `{p}` (not in the taxonomy)"),
                ),
            }
        }
        set
    }

    fn names(&self, tax: &Taxonomy, set: CatSet) -> String {
        set.iter()
            .map(|c| tax.name(c))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(super) fn load(text: &str, file: &str, now: Timestamp) -> Result<Loaded, PolicyError> {
    let raw: PolicyFile = match serde_norway::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let message = e.to_string();
            // serde_norway appends " at line L column C"; the finding carries those.
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_owned();
            return Err(PolicyError {
                file: file.to_owned(),
                findings: vec![Finding {
                    level: Level::Error,
                    line,
                    column,
                    path: String::new(),
                    message,
                }],
            });
        }
    };
    let mut ck = Check {
        text,
        positions: std::cell::OnceCell::new(),
        findings: Vec::new(),
    };
    let policy = compile(&raw, text, now, &mut ck);
    if ck.findings.iter().any(|f| f.level == Level::Error) {
        ck.findings.sort_by_key(|f| (f.line, f.column));
        return Err(PolicyError {
            file: file.to_owned(),
            findings: ck.findings,
        });
    }
    Ok(Loaded {
        policy,
        warnings: ck.findings,
    })
}

fn enums<T: Copy + Into<usize>>(items: &[T]) -> EnumSet {
    EnumSet::of(items.iter().copied())
}

fn compile(raw: &PolicyFile, text: &str, now: Timestamp, ck: &mut Check<'_>) -> Policy {
    if raw.api_version != "shareaudit/v1" {
        ck.error(
            "/api_version",
            format!(
                "unsupported api_version `{}`; this shareaudit reads `shareaudit/v1`",
                raw.api_version
            ),
        );
    }
    if raw.version.trim().is_empty() {
        ck.error("/version", "must not be empty");
    }
    let hash = crate::model::hex(&Sha256::digest(text.as_bytes()));
    let version = PolicyVersion {
        version: raw.version.clone(),
        hash: format!("sha256:{}", &hash[..16]),
    };

    // Taxonomy first: everything else names categories.
    let mut tax = Taxonomy::default();
    for (id, def) in &raw.taxonomy {
        let path = format!("/taxonomy/{id}");
        match tax.add(id, def.sensitive) {
            Ok(c) => {
                for (i, f) in def.fields.iter().enumerate() {
                    if let Err(e) = tax.add_field(f, c) {
                        ck.error(&format!("{path}/fields/{i}"), e);
                    }
                }
            }
            Err(e) => ck.error(&path, e),
        }
    }

    let s = &raw.settings;
    if !(-720..=840).contains(&s.utc_offset_minutes) {
        ck.error(
            "/settings/utc_offset_minutes",
            "must be between -720 and 840",
        );
    }
    if !(0..=18).contains(&s.minor_max_age) {
        ck.error("/settings/minor_max_age", "must be between 0 and 18");
    }
    if s.consent_history_per_user == 0 {
        ck.error("/settings/consent_history_per_user", "must be at least 1");
    }
    if !(1..=3650).contains(&s.consent_history_days) {
        ck.error(
            "/settings/consent_history_days",
            "must be between 1 and 3650",
        );
    }
    let settings = Settings {
        utc_offset_minutes: s.utc_offset_minutes,
        contextual_sensitive: ck.cats(
            &tax,
            "/settings/contextual_sensitive/categories",
            &s.contextual_sensitive.categories,
        ),
        contextual_except_purposes: enums(&s.contextual_sensitive.except_purposes),
        minor_max_age: s.minor_max_age,
        consent_history_per_user: s.consent_history_per_user,
        consent_history_days: s.consent_history_days,
    };

    let d = &raw.detectors;
    let defs = [
        &d.id_card,
        &d.mobile,
        &d.bank_card,
        &d.email,
        &d.passport,
        &d.uscc,
        &d.imei,
        &d.mac,
        &d.gps,
    ];
    let mut by_kind = Vec::new();
    for (kind, def) in DetectorKind::ALL.iter().zip(defs) {
        let path = format!("/detectors/{}", kind.name());
        let category = match tax.get(&def.category) {
            Some(c) => c,
            None => {
                ck.error(
                    &format!("{path}/category"),
                    format!("unknown category `{}`", def.category),
                );
                CatId(0)
            }
        };
        let mut satisfied_by = ck.cats(&tax, &format!("{path}/satisfied_by"), &def.satisfied_by);
        if tax.get(&def.category).is_some() {
            satisfied_by.insert(category);
        }
        by_kind.push(DetectorRule {
            enabled: def.enabled,
            category,
            satisfied_by,
        });
    }
    let detectors = Detectors {
        by_kind,
        allow_values: d.allow_values.iter().cloned().collect(),
    };

    let mut profiles = vec![Profile::default(); RecipientCategory::ALL.len()];
    for (cat, p) in &raw.recipient_categories {
        let path = format!("/recipient_categories/{cat}");
        let allowed = ck.cats(&tax, &format!("{path}/allowed"), &p.allowed);
        let everything_else = p.never.iter().any(|n| n == "*");
        let explicit_never: Vec<String> = p.never.iter().filter(|n| *n != "*").cloned().collect();
        let mut never = ck.cats(&tax, &format!("{path}/never"), &explicit_never);
        let both = allowed.intersect(never);
        if !both.is_empty() {
            ck.error(
                &format!("{path}/never"),
                format!(
                    "contradiction: {} both allowed and never",
                    ck.names(&tax, both)
                ),
            );
        }
        let mut conditional = Vec::new();
        let mut conditional_cats = CatSet::EMPTY;
        for (i, c) in p.conditional.iter().enumerate() {
            let cpath = format!("{path}/conditional/{i}");
            let cats = ck.cats(&tax, &format!("{cpath}/categories"), &c.categories);
            conditional_cats = conditional_cats.union(cats);
            let w = &c.when;
            let judged_by = w
                .judged_by
                .as_ref()
                .and_then(|r| match r.parse::<RuleId>() {
                    Ok(id) => Some(id),
                    Err(e) => {
                        ck.error(&format!("{cpath}/when/judged_by"), e.to_string());
                        None
                    }
                });
            let when = When {
                purpose: w.purpose.as_deref().map(enums),
                order_type: w.order_type.as_deref().map(enums),
                order_flag: w.order_flag.clone(),
                legal_basis: w.legal_basis.as_deref().map(enums),
                flow: w.flow.as_deref().map(enums),
                legal_document: w.legal_document,
                judged_by,
            };
            conditional.push(Conditional {
                categories: cats,
                when,
            });
        }
        if everything_else {
            never = never.union(
                CatSet::all(tax.len())
                    .minus(allowed)
                    .minus(conditional_cats),
            );
        }
        if let Some(limit) = p.bulk_limit
            && limit < 1
        {
            ck.error(
                &format!("{path}/bulk_limit"),
                "must be at least 1 (leave it out for no limit)",
            );
        }
        if p.max_subjects_per_hour == Some(0) {
            ck.error(
                &format!("{path}/max_subjects_per_hour"),
                "must be at least 1 (leave it out for no limit)",
            );
        }
        profiles[cat.index()] = Profile {
            defined: true,
            purposes: enums(&p.purposes),
            allowed,
            conditional,
            never,
            extend_from_registry: p.extend_from_registry,
            required_flags: p.required_flags.clone(),
            open: p.open,
            bulk_limit: p.bulk_limit,
            max_subjects_per_hour: p.max_subjects_per_hour,
        };
    }
    for c in RecipientCategory::ALL {
        if !profiles[c.index()].defined && *c != RecipientCategory::Other {
            ck.warn(
                "/recipient_categories",
                format!("no profile for `{c}`: every category sent to it counts as not necessary"),
            );
        }
    }

    let mut registry = FxHashMap::default();
    for (id, e) in &raw.registry {
        let path = format!("/registry/{id}");
        if !is_region_code(&e.region) {
            ck.error(
                &format!("{path}/region"),
                format!("`{}` is not an ISO 3166-1 alpha-2 code", e.region),
            );
        }
        let profile = &profiles[e.category.index()];
        for flag in &profile.required_flags {
            let value = match flag {
                RegistryFlag::Licensed => e.licensed,
                RegistryFlag::GroupMember => e.group_member,
                RegistryFlag::Authorised => e.authorised,
                RegistryFlag::PublishedSdkList => e.published_sdk_list,
                RegistryFlag::Agreement => e.agreement,
            };
            if value.is_none() {
                ck.warn(
                    &path,
                    format!(
                        "a {} needs `{}`; without it recipient.category_mismatch fires for `{id}`",
                        e.category,
                        flag_name(*flag)
                    ),
                );
            }
        }
        if matches!(&e.entrusted_by, Some(m) if m.trim().is_empty()) {
            ck.error(&format!("{path}/entrusted_by"), "must not be empty");
        }
        if e.max_subjects_per_hour == Some(0) {
            ck.error(
                &format!("{path}/max_subjects_per_hour"),
                "must be at least 1",
            );
        }
        let categories = ck.cats(&tax, &format!("{path}/categories"), &e.categories);
        let clash = categories.intersect(profile.never);
        if !clash.is_empty() && profile.extend_from_registry {
            ck.error(
                &format!("{path}/categories"),
                format!(
                    "contradiction: {} declared for `{id}` but never allowed to a {}",
                    ck.names(&tax, clash),
                    e.category
                ),
            );
        }
        registry.insert(
            id.clone(),
            Entry {
                category: e.category,
                region: e.region.clone(),
                licensed: e.licensed,
                group_member: e.group_member,
                authorised: e.authorised,
                published_sdk_list: e.published_sdk_list,
                agreement: e.agreement,
                entrusted_by: e.entrusted_by.clone(),
                purposes: enums(&e.purposes),
                categories,
                max_subjects_per_hour: e.max_subjects_per_hour,
            },
        );
    }

    let (mut rules, params) = compile_rules(&raw.rules, &tax, ck);
    let texts = compile_texts(&raw.rules, &mut rules, ck);
    let exceptions =
        compile_exceptions(&raw.exceptions, &tax, settings.utc_offset_minutes, now, ck);

    Policy {
        version,
        document_title: raw.document.title.clone(),
        document_dated: raw.document.dated.clone(),
        taxonomy: tax,
        settings,
        detectors,
        profiles,
        registry,
        rules,
        params,
        exceptions,
        texts,
    }
}

fn meta<P>(r: &file::Rule<P>) -> RuleMeta {
    RuleMeta {
        clause: r.clause.clone(),
        quote: r.quote.clone(),
        title: r.title.clone(),
        // Filled by `compile_texts`.
        title_zh: String::new(),
        severity: r.severity,
        raise: r.raise,
        enabled: r.enabled,
        mode: r.mode,
        example: r.example.clone(),
    }
}

/// A rule's words as its policy file writes them.
struct Words<'a> {
    title: &'a str,
    title_zh: Option<&'a str>,
    detail: &'a BTreeMap<String, file::DetailText>,
}

/// The words of every rule the file configures, indexed by `RuleId::index()`.
fn words(r: &file::Rules) -> Vec<Option<Words<'_>>> {
    let mut out: Vec<Option<Words<'_>>> = (0..RuleId::ALL.len()).map(|_| None).collect();
    macro_rules! take {
        ($($field:ident => $id:ident),+ $(,)?) => {
            $(if let Some(rule) = &r.$field {
                out[RuleId::$id.index()] = Some(Words {
                    title: &rule.title,
                    title_zh: rule.title_zh.as_deref(),
                    detail: &rule.detail,
                });
            })+
        };
    }
    take! {
        recipient_unregistered => RecipientUnregistered,
        recipient_category_mismatch => RecipientCategoryMismatch,
        recipient_undeclared_category => RecipientUndeclaredCategory,
        sdk_unlisted => SdkUnlisted,
        partner_no_agreement => PartnerNoAgreement,
        legal_basis_invalid => LegalBasisInvalid,
        purpose_undeclared => PurposeUndeclared,
        minimisation_prohibited => MinimisationProhibited,
        minimisation_not_necessary => MinimisationNotNecessary,
        credentials_shared => CredentialsShared,
        sensitive_no_separate_consent => SensitiveNoSeparateConsent,
        affiliate_sensitive_without_reconsent => AffiliateSensitiveWithoutReconsent,
        merchant_foreign_order => MerchantForeignOrder,
        content_undeclared_pii => ContentUndeclaredPii,
        transport_unencrypted => TransportUnencrypted,
        cross_border_prohibited => CrossBorderProhibited,
        consent_withdrawn => ConsentWithdrawn,
        account_cancelled => AccountCancelled,
        personalization_opted_out => PersonalizationOptedOut,
        minor_no_guardian_consent => MinorNoGuardianConsent,
        subject_third_party_unauthorized => SubjectThirdPartyUnauthorized,
        disclosure_without_consent => DisclosureWithoutConsent,
        disclosure_legal_without_document => DisclosureLegalWithoutDocument,
        disclosure_files_not_encrypted => DisclosureFilesNotEncrypted,
        volume_bulk_transfer => VolumeBulkTransfer,
        volume_recipient_rate => VolumeRecipientRate,
    }
    out
}

/// The shipped policy's words, which a policy file's missing ones default to.
struct Shipped {
    /// By `RuleId::index()`.
    title_zh: Vec<String>,
    /// By `Case`, then `Lang`.
    detail: Vec<[String; 2]>,
}

fn shipped() -> &'static Shipped {
    static SHIPPED: OnceLock<Shipped> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        // A test loads the shipped policy with no finding: it parses, and
        // has every title and template.
        let raw: PolicyFile =
            serde_norway::from_str(super::DEFAULT_POLICY).expect("the shipped policy parses");
        let words = words(&raw.rules);
        let of = |id: RuleId| words[id.index()].as_ref();
        Shipped {
            title_zh: RuleId::ALL
                .iter()
                .map(|id| {
                    of(*id)
                        .and_then(|w| w.title_zh.or(Some(w.title)))
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect(),
            detail: Case::ALL
                .iter()
                .map(|case| {
                    Lang::ALL.map(|lang| {
                        of(case.rule())
                            .and_then(|w| w.detail.get(case.name()))
                            .and_then(|t| lang_text(t, lang))
                            .unwrap_or_default()
                            .to_owned()
                    })
                })
                .collect(),
        }
    })
}

fn lang_text(t: &file::DetailText, lang: Lang) -> Option<&str> {
    match lang {
        Lang::En => t.en.as_deref(),
        Lang::Zh => t.zh.as_deref(),
    }
}

/// Each rule's Chinese title and every case's templates: the file's where it
/// writes them, else the shipped policy's. A case the rule does not have,
/// or a template naming a value its case does not supply, is an error.
fn compile_texts(r: &file::Rules, rules: &mut [Option<RuleMeta>], ck: &mut Check<'_>) -> Texts {
    let words = words(r);
    let shipped = shipped();
    for id in RuleId::ALL {
        let Some(w) = &words[id.index()] else {
            continue;
        };
        if let Some(meta) = &mut rules[id.index()] {
            meta.title_zh = w
                .title_zh
                .map_or_else(|| shipped.title_zh[id.index()].clone(), str::to_owned);
        }
        for name in w.detail.keys() {
            if !Case::of(*id).any(|c| c.name() == name) {
                let cases: Vec<&str> = Case::of(*id).map(Case::name).collect();
                ck.error(
                    &format!("/rules/{id}/detail/{name}"),
                    format!(
                        "`{id}` has no detail case `{name}`; its cases are {}",
                        cases.join(", ")
                    ),
                );
            }
        }
    }
    let details = Case::ALL
        .iter()
        .map(|case| {
            let written = words[case.rule().index()]
                .as_ref()
                .and_then(|w| w.detail.get(case.name()));
            Lang::ALL.map(|lang| {
                let own = written.and_then(|t| lang_text(t, lang));
                let text = own.unwrap_or(&shipped.detail[*case as usize][lang as usize]);
                Template::parse(text, *case).unwrap_or_else(|e| {
                    let path = if own.is_some() {
                        format!(
                            "/rules/{}/detail/{}/{}",
                            case.rule(),
                            case.name(),
                            lang.key()
                        )
                    } else {
                        String::new()
                    };
                    ck.error(&path, format!("detail template: {e}"));
                    Template::parse("?", *case).expect("a plain template")
                })
            })
        })
        .collect();
    Texts::new(details)
}

fn compile_rules(
    r: &file::Rules,
    tax: &Taxonomy,
    ck: &mut Check<'_>,
) -> (Vec<Option<RuleMeta>>, Params) {
    let mut rules: Vec<Option<RuleMeta>> = vec![None; RuleId::ALL.len()];
    let mut p = Params::default();
    let path = |id: RuleId| format!("/rules/{id}/params");
    macro_rules! set {
        ($field:ident, $id:expr) => {
            if let Some(rule) = &r.$field {
                rules[$id.index()] = Some(meta(rule));
            }
        };
    }
    set!(recipient_unregistered, RuleId::RecipientUnregistered);
    set!(
        recipient_category_mismatch,
        RuleId::RecipientCategoryMismatch
    );
    set!(
        recipient_undeclared_category,
        RuleId::RecipientUndeclaredCategory
    );
    set!(sdk_unlisted, RuleId::SdkUnlisted);
    set!(partner_no_agreement, RuleId::PartnerNoAgreement);
    set!(legal_basis_invalid, RuleId::LegalBasisInvalid);
    set!(purpose_undeclared, RuleId::PurposeUndeclared);
    set!(minimisation_prohibited, RuleId::MinimisationProhibited);
    set!(minimisation_not_necessary, RuleId::MinimisationNotNecessary);
    set!(credentials_shared, RuleId::CredentialsShared);
    set!(
        sensitive_no_separate_consent,
        RuleId::SensitiveNoSeparateConsent
    );
    set!(
        affiliate_sensitive_without_reconsent,
        RuleId::AffiliateSensitiveWithoutReconsent
    );
    set!(merchant_foreign_order, RuleId::MerchantForeignOrder);
    set!(content_undeclared_pii, RuleId::ContentUndeclaredPii);
    set!(transport_unencrypted, RuleId::TransportUnencrypted);
    set!(cross_border_prohibited, RuleId::CrossBorderProhibited);
    set!(consent_withdrawn, RuleId::ConsentWithdrawn);
    set!(account_cancelled, RuleId::AccountCancelled);
    set!(personalization_opted_out, RuleId::PersonalizationOptedOut);
    set!(minor_no_guardian_consent, RuleId::MinorNoGuardianConsent);
    set!(
        subject_third_party_unauthorized,
        RuleId::SubjectThirdPartyUnauthorized
    );
    set!(disclosure_without_consent, RuleId::DisclosureWithoutConsent);
    set!(
        disclosure_legal_without_document,
        RuleId::DisclosureLegalWithoutDocument
    );
    set!(
        disclosure_files_not_encrypted,
        RuleId::DisclosureFilesNotEncrypted
    );
    set!(volume_bulk_transfer, RuleId::VolumeBulkTransfer);
    set!(volume_recipient_rate, RuleId::VolumeRecipientRate);

    if let Some(x) = &r.partner_no_agreement {
        p.partner_agreement_recipients = enums(&x.params.recipients);
    }
    if let Some(x) = &r.legal_basis_invalid {
        let q = &x.params;
        p.legal_flows = enums(&q.flows);
        p.transfer_bases = enums(&q.transfer_bases);
        p.contract_recipients = enums(&q.contract_recipients);
        p.transfer_only_bases = enums(&q.transfer_only_bases);
        p.guardian_request_recipients = enums(&q.guardian_request_recipients);
    }
    if let Some(x) = &r.credentials_shared {
        p.credentials = ck.cats(
            tax,
            &format!("{}/categories", path(RuleId::CredentialsShared)),
            &x.params.categories,
        );
    }
    if let Some(x) = &r.sensitive_no_separate_consent {
        p.sensitive_consent_bases = enums(&x.params.bases);
        p.sensitive_except_recipients = enums(&x.params.except_recipients);
    }
    if let Some(x) = &r.affiliate_sensitive_without_reconsent {
        p.affiliate_recipients = enums(&x.params.recipients);
    }
    if let Some(x) = &r.content_undeclared_pii {
        for (cat, sev) in &x.params.severity_by_category {
            match tax.get(cat) {
                Some(c) => p.pii_severity.push((c, *sev)),
                None => ck.error(
                    &format!(
                        "{}/severity_by_category/{cat}",
                        path(RuleId::ContentUndeclaredPii)
                    ),
                    format!("unknown category `{cat}`"),
                ),
            }
        }
    }
    if let Some(x) = &r.cross_border_prohibited {
        for (i, region) in x.params.home_regions.iter().enumerate() {
            if !is_region_code(region) {
                ck.error(
                    &format!("{}/home_regions/{i}", path(RuleId::CrossBorderProhibited)),
                    format!("`{region}` is not an ISO 3166-1 alpha-2 code"),
                );
            }
        }
        if x.params.home_regions.is_empty() {
            ck.error(
                &format!("{}/home_regions", path(RuleId::CrossBorderProhibited)),
                "must name at least one region",
            );
        }
        p.home_regions = x.params.home_regions.clone();
    }
    if let Some(x) = &r.consent_withdrawn {
        p.withdrawn_bases = enums(&x.params.bases);
    }
    if let Some(x) = &r.account_cancelled {
        p.cancelled_exempt_bases = enums(&x.params.exempt_bases);
    }
    if let Some(x) = &r.minor_no_guardian_consent {
        p.minor_exempt_bases = enums(&x.params.exempt_bases);
    }
    if let Some(x) = &r.subject_third_party_unauthorized {
        p.third_party_roles = enums(&x.params.roles);
    }
    if let Some(x) = &r.disclosure_without_consent {
        p.disclosure_bases = enums(&x.params.bases);
    }
    if let Some(x) = &r.disclosure_legal_without_document {
        p.legal_doc_bases = enums(&x.params.bases);
        p.legal_doc_recipients = enums(&x.params.recipients);
    }
    if let Some(x) = &r.disclosure_files_not_encrypted {
        p.files_bases = enums(&x.params.bases);
    }
    if let Some(x) = &r.volume_bulk_transfer {
        let q = &x.params;
        let bp = path(RuleId::VolumeBulkTransfer);
        if q.critical_from < 1 {
            ck.error(&format!("{bp}/critical_from"), "must be at least 1");
        }
        if q.critical_from_with.count < 1 {
            ck.error(
                &format!("{bp}/critical_from_with/count"),
                "must be at least 1",
            );
        }
        p.bulk_critical_from = q.critical_from;
        p.bulk_critical_with_count = q.critical_from_with.count;
        p.bulk_critical_with = ck.cats(
            tax,
            &format!("{bp}/critical_from_with/categories"),
            &q.critical_from_with.categories,
        );
    }
    if let Some(x) = &r.volume_recipient_rate {
        if x.params.window_seconds < 1 {
            ck.error(
                &format!("{}/window_seconds", path(RuleId::VolumeRecipientRate)),
                "must be at least 1",
            );
        }
        p.rate_window_millis = x.params.window_seconds.saturating_mul(1000);
    }
    for id in RuleId::ALL {
        if rules[id.index()].is_none() {
            ck.warn("/rules", format!("rule `{id}` is not configured: it will not run (add it, or set `enabled: false` to say so)"));
        }
    }
    (rules, p)
}

/// `YYYY-MM-DD` means through the end of that local day; else RFC 3339.
fn parse_expiry(s: &str, utc_offset_minutes: i32) -> Option<Timestamp> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let next = d
            .succ_opt()?
            .and_hms_opt(0, 0, 0)?
            .and_utc()
            .timestamp_millis();
        return Some(Timestamp(next - i64::from(utc_offset_minutes) * 60_000));
    }
    Timestamp::parse_rfc3339(s).ok()
}

fn compile_exceptions(
    raw: &[file::ExceptionDef],
    tax: &Taxonomy,
    offset: i32,
    now: Timestamp,
    ck: &mut Check<'_>,
) -> Vec<Exception> {
    let mut out = Vec::new();
    for (i, x) in raw.iter().enumerate() {
        let path = format!("/exceptions/{i}");
        let rule = match x.rule.parse::<RuleId>() {
            Ok(r) => r,
            Err(e) => {
                ck.error(&format!("{path}/rule"), e.to_string());
                continue;
            }
        };
        if x.owner.trim().is_empty() {
            ck.error(&format!("{path}/owner"), "an exception needs an owner");
        }
        if x.reason.trim().is_empty() {
            ck.error(&format!("{path}/reason"), "an exception needs a reason");
        }
        let Some(expires) = parse_expiry(&x.expires, offset) else {
            ck.error(
                &format!("{path}/expires"),
                format!(
                    "`{}` is neither a date YYYY-MM-DD nor an RFC 3339 instant",
                    x.expires
                ),
            );
            continue;
        };
        if expires <= now {
            ck.warn(
                &format!("{path}/expires"),
                format!(
                    "exception for `{rule}` (owner {}) expired on {}: it no longer applies",
                    x.owner, x.expires
                ),
            );
        }
        let categories = x
            .matches
            .categories
            .as_ref()
            .map(|c| ck.cats(tax, &format!("{path}/match/categories"), c));
        out.push(Exception {
            rule,
            recipient_id: x.matches.recipient_id.clone(),
            purpose: x.matches.purpose,
            categories,
            owner: x.owner.clone(),
            reason: x.reason.clone(),
            expires,
            mode: x.mode,
        });
    }
    out
}
