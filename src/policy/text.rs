//! What a violation says, in English and in Chinese: each rule's title and
//! the template of each way it can be broken (its detail cases), written in
//! the policy file beside the rule so that an operator edits them together.
//!
//! A rule's code names the [`Case`] it found and the values the detail may
//! quote ([`Arg`]); the policy's templates say it in words. A template
//! writes a value as `{name}` (`{{` and `}}` are literal braces) and may name
//! only the values its case supplies, so `policy check` refuses a template
//! that would quote something the code never gives it, with line and
//! column. A rule that leaves out `title_zh`, a case or a language takes the
//! shipped policy's text (`deploy/policy/default.yaml`), which has them all.
//!
//! Values are identifiers (recipient ids, category names, enum values such
//! as `consent`): the same in both languages, so a reader can search the
//! event for them. None of them is personal: the rules never pass a data
//! value, a user id or an age.

use crate::model::RuleId;
use std::fmt::Write;

macro_rules! args {
    ($($variant:ident = $text:literal),+ $(,)?) => {
        /// A value a detail template may quote, written `{name}`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
        pub enum Arg { $($variant),+ }

        impl Arg {
            pub const ALL: &'static [Arg] = &[$(Arg::$variant),+];

            pub const fn name(self) -> &'static str {
                match self { $(Arg::$variant => $text),+ }
            }
        }
    };
}

args! {
    Recipient = "recipient",
    RecipientCategory = "recipient_category",
    RegisteredCategory = "registered_category",
    Region = "region",
    RegisteredRegion = "registered_region",
    Purpose = "purpose",
    LegalBasis = "legal_basis",
    Flow = "flow",
    Categories = "categories",
    Conditional = "conditional",
    Fields = "fields",
    Missing = "missing",
    Merchant = "merchant",
    ActingFor = "acting_for",
    EntrustedBy = "entrusted_by",
    Role = "role",
    MaxAge = "max_age",
    Protocol = "protocol",
    Count = "count",
    Limit = "limit",
    WindowSeconds = "window_seconds",
}

macro_rules! cases {
    ($($variant:ident = $rule:ident $name:literal [$($arg:ident),*]),+ $(,)?) => {
        /// One way a rule can be broken: the key of its detail template
        /// under `rules.<id>.detail` in the policy file.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Case { $($variant),+ }

        impl Case {
            pub const ALL: &'static [Case] = &[$(Case::$variant),+];

            pub const fn rule(self) -> RuleId {
                match self { $(Case::$variant => RuleId::$rule),+ }
            }

            pub const fn name(self) -> &'static str {
                match self { $(Case::$variant => $name),+ }
            }

            /// The values the rule supplies for this case, and a template may quote.
            pub const fn args(self) -> &'static [Arg] {
                match self { $(Case::$variant => &[$(Arg::$arg),*]),+ }
            }
        }
    };
}

cases! {
    Unregistered = RecipientUnregistered "unregistered" [RecipientCategory, Recipient],
    RegisteredAsOther = RecipientCategoryMismatch "registered_as_other" [Recipient, RegisteredCategory, RecipientCategory],
    LacksStatus = RecipientCategoryMismatch "lacks_status" [RecipientCategory, Recipient, Missing],
    OtherCategory = RecipientUndeclaredCategory "other_category" [Recipient],
    SdkUnlisted = SdkUnlisted "unlisted" [Recipient],
    NoAgreement = PartnerNoAgreement "no_agreement" [RecipientCategory, Recipient],
    NoBasis = LegalBasisInvalid "no_basis" [Flow],
    TransferBasis = LegalBasisInvalid "transfer_basis" [LegalBasis],
    ContractRecipient = LegalBasisInvalid "contract_recipient" [RecipientCategory],
    ContractNoOrder = LegalBasisInvalid "contract_no_order" [],
    TransferOnly = LegalBasisInvalid "transfer_only" [LegalBasis, Flow],
    GuardianRequest = LegalBasisInvalid "guardian_request" [RecipientCategory],
    PurposeUndeclared = PurposeUndeclared "undeclared" [Purpose, RecipientCategory, Recipient],
    NeverReceive = MinimisationProhibited "never" [RecipientCategory, Recipient, Categories],
    NotNecessary = MinimisationNotNecessary "not_necessary" [Categories, Purpose, RecipientCategory, Recipient],
    NotNecessaryConditional = MinimisationNotNecessary "not_necessary_conditional" [Categories, Purpose, RecipientCategory, Recipient, Conditional],
    CredentialsShared = CredentialsShared "shared" [Categories, RecipientCategory, Recipient],
    NoSeparateConsent = SensitiveNoSeparateConsent "missing" [Recipient, Categories],
    NoAffiliateReconsent = AffiliateSensitiveWithoutReconsent "missing" [Recipient, Categories],
    MerchantNoOrder = MerchantForeignOrder "merchant_no_order" [Recipient],
    MerchantOther = MerchantForeignOrder "merchant_other" [Recipient, Merchant],
    ProviderNoOrder = MerchantForeignOrder "provider_no_order" [Recipient],
    ProviderActsForOther = MerchantForeignOrder "provider_acts_for_other" [Recipient, ActingFor, Merchant],
    ProviderActsForNone = MerchantForeignOrder "provider_acts_for_none" [Recipient, Merchant],
    ProviderEntrustedByOther = MerchantForeignOrder "provider_entrusted_by_other" [Recipient, EntrustedBy, Merchant],
    ProviderEntrustedByNone = MerchantForeignOrder "provider_entrusted_by_none" [Recipient, Merchant],
    UndeclaredPii = ContentUndeclaredPii "found" [Categories, Fields],
    Unencrypted = TransportUnencrypted "unencrypted" [Recipient],
    UnencryptedOver = TransportUnencrypted "unencrypted_over" [Recipient, Protocol],
    AbroadRegion = CrossBorderProhibited "region" [Region, Recipient],
    AbroadRegistered = CrossBorderProhibited "registered_region" [Recipient, RegisteredRegion, Region],
    WithdrewAll = ConsentWithdrawn "all" [LegalBasis],
    WithdrewPurpose = ConsentWithdrawn "purpose" [Purpose, LegalBasis],
    Cancelled = AccountCancelled "cancelled" [LegalBasis],
    OptedOutAds = PersonalizationOptedOut "advertising" [],
    OptedOutRecommendation = PersonalizationOptedOut "recommendation" [],
    MinorByAge = MinorNoGuardianConsent "by_age" [MaxAge],
    MinorByBirthDate = MinorNoGuardianConsent "by_birth_date" [MaxAge],
    ThirdPartyUnauthorized = SubjectThirdPartyUnauthorized "unauthorized" [Role],
    PublicDisclosure = DisclosureWithoutConsent "public" [LegalBasis],
    NoLegalDocument = DisclosureLegalWithoutDocument "no_document" [LegalBasis, RecipientCategory, Recipient],
    FilesNotEncrypted = DisclosureFilesNotEncrypted "files" [LegalBasis],
    BulkOverLimit = VolumeBulkTransfer "over_limit" [Count, RecipientCategory, Recipient, Limit],
    RateOverLimit = VolumeRecipientRate "over_limit" [Count, RecipientCategory, Recipient, WindowSeconds, Limit],
}

impl Case {
    /// The cases of one rule, in declaration order.
    pub fn of(rule: RuleId) -> impl Iterator<Item = Case> {
        Case::ALL.iter().copied().filter(move |c| c.rule() == rule)
    }
}

/// The two languages of every title and detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Zh];

    pub const fn key(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }
}

/// What a rule found: the case, and the values its detail may quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub case: Case,
    args: Vec<(Arg, String)>,
}

impl Detail {
    pub fn new(case: Case) -> Detail {
        Detail {
            case,
            args: Vec::with_capacity(case.args().len()),
        }
    }

    /// Supplies `{arg}`. Each argument of the case is supplied once.
    pub fn arg(mut self, arg: Arg, value: impl std::fmt::Display) -> Detail {
        debug_assert!(
            self.case.args().contains(&arg) && self.get(arg).is_none(),
            "{:?} does not take {arg:?} (or has it already)",
            self.case
        );
        self.args.push((arg, value.to_string()));
        self
    }

    fn get(&self, arg: Arg) -> Option<&str> {
        self.args
            .iter()
            .find(|(a, _)| *a == arg)
            .map(|(_, v)| v.as_str())
    }
}

/// One piece of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Arg(Arg),
}

/// A detail template, compiled once when the policy loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Compiles `text` for `case`: every `{name}` must be a value the case
    /// supplies. The error says which and what it could have been.
    pub fn parse(text: &str, case: Case) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(after) = tail.strip_prefix("{{") {
                lit.push('{');
                rest = after;
            } else if let Some(after) = tail.strip_prefix("}}") {
                lit.push('}');
                rest = after;
            } else if tail.starts_with('}') {
                return Err("a lone `}` (write `}}` for a brace)".to_owned());
            } else {
                let Some(end) = tail.find('}') else {
                    return Err("a `{` is never closed (write `{{` for a brace)".to_owned());
                };
                let name = &tail[1..end];
                let supplied = case.args();
                let Some(arg) = supplied.iter().copied().find(|a| a.name() == name) else {
                    let names: Vec<String> = supplied
                        .iter()
                        .map(|a| format!("{{{}}}", a.name()))
                        .collect();
                    return Err(format!(
                        "`{{{name}}}` is not a value of the case `{}` of {}; it has {}",
                        case.name(),
                        case.rule(),
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ));
                };
                if !lit.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Arg(arg));
                rest = &tail[end + 1..];
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        if pieces.is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(Template(pieces))
    }

    /// The values it quotes, sorted, once each.
    pub fn args(&self) -> Vec<Arg> {
        let mut args: Vec<Arg> = self
            .0
            .iter()
            .filter_map(|p| match p {
                Piece::Arg(a) => Some(*a),
                Piece::Text(_) => None,
            })
            .collect();
        args.sort_unstable();
        args.dedup();
        args
    }

    /// The length of the text `render_into` writes for `d` (a missing
    /// value counted as nothing).
    fn len(&self, d: &Detail) -> usize {
        self.0
            .iter()
            .map(|piece| match piece {
                Piece::Text(t) => t.len(),
                Piece::Arg(a) => d.get(*a).map_or(0, str::len),
            })
            .sum()
    }

    fn render_into(&self, d: &Detail, out: &mut String) {
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Arg(a) => match d.get(*a) {
                    Some(v) => out.push_str(v),
                    // Unreachable when the rules supply what their cases declare
                    // (debug builds check it); says so rather than panic.
                    None => {
                        let _ = write!(out, "{{{}}}", a.name());
                    }
                },
            }
        }
    }
}

/// Every case's templates, in both languages, indexed by [`Case`].
#[derive(Debug, Clone, Default)]
pub struct Texts {
    details: Vec<[Template; 2]>,
}

impl Texts {
    pub(super) fn new(details: Vec<[Template; 2]>) -> Texts {
        debug_assert_eq!(details.len(), Case::ALL.len());
        Texts { details }
    }

    /// The detail in one language.
    pub fn render(&self, d: &Detail, lang: Lang) -> String {
        debug_assert!(
            d.case.args().iter().all(|a| d.get(*a).is_some()),
            "{:?} lacks a value it declares",
            d.case
        );
        let t = &self.details[d.case as usize][lang as usize];
        // Sized once: pushed piece by piece, a detail grew three or four times.
        let mut out = String::with_capacity(t.len(d));
        t.render_into(d, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_a_case_and_case_names_are_unique_within_a_rule() {
        for rule in RuleId::ALL {
            let names: Vec<&str> = Case::of(*rule).map(Case::name).collect();
            assert!(!names.is_empty(), "{rule} has no detail case");
            let mut unique = names.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), names.len(), "{rule}: {names:?}");
        }
    }

    #[test]
    fn a_template_quotes_the_values_of_its_case_and_nothing_else() {
        let t =
            Template::parse("`{recipient}` {{x}} lands in {region}", Case::AbroadRegion).unwrap();
        let d = Detail::new(Case::AbroadRegion)
            .arg(Arg::Region, "US")
            .arg(Arg::Recipient, "ov-1");
        let mut out = String::new();
        t.render_into(&d, &mut out);
        assert_eq!(out, "`ov-1` {x} lands in US");
        assert_eq!(t.len(&d), out.len(), "the capacity `render` reserves");
        let zh = Template::parse("`{recipient}` 位于 {region}", Case::AbroadRegion).unwrap();
        let mut out = String::new();
        zh.render_into(&d, &mut out);
        assert_eq!(zh.len(&d), out.len());

        let e = Template::parse("数据流向 {purpose}", Case::AbroadRegion).unwrap_err();
        assert!(
            e.contains("`{purpose}`") && e.contains("{region}, {recipient}"),
            "{e}"
        );
        assert!(Template::parse("a {region", Case::AbroadRegion).is_err());
        assert!(Template::parse("a } b", Case::AbroadRegion).is_err());
        assert!(Template::parse("", Case::AbroadRegion).is_err());
        let e = Template::parse("{count}", Case::ContractNoOrder).unwrap_err();
        assert!(e.contains("it has none"), "{e}");
    }
}
