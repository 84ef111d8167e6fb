//! The closed vocabularies of the event model (`event-model.md`), each spelled
//! once: serde names, Avro enum symbols and policy validation all read `ALL`.

use std::fmt;
use std::str::FromStr;

/// Declares a `snake_case` string enum with `ALL`, `as_str`, `index`,
/// `FromStr`, `Display` and serde support. Indexes are dense from 0, so a
/// set of values fits in a `u64` bit mask (see [`EnumSet`]).
macro_rules! str_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order (the Avro symbol order).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// What the type is called in error messages.
            pub const KIND: &'static str = stringify!($name);

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub const fn index(self) -> usize { self as usize }
        }

        impl Vocabulary for $name {
            const ALL: &'static [$name] = $name::ALL;
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue { kind: Self::KIND, value: s.to_owned(), expected: Self::ALL.iter().map(|v| v.as_str()).collect() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(self.as_str()) }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "one of {}", $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "))
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        s.parse().map_err(|e: UnknownValue| E::custom(e))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

/// A closed vocabulary, generically: its values in declaration order (the
/// Avro symbol order), for code that reads any of them by index.
pub trait Vocabulary: Copy + 'static {
    const ALL: &'static [Self];
}

/// A value outside a closed vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
    pub expected: Vec<&'static str>,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} `{}`, expected one of: {}",
            self.kind,
            self.value,
            self.expected.join(", ")
        )
    }
}

impl std::error::Error for UnknownValue {}

str_enum!(
    /// How the data leaves: section 4.1 share, 4.2 transfer, 4.3 public disclosure, 4.1 i SDK collection.
    Flow { Share = "share", Transfer = "transfer", PublicDisclosure = "public_disclosure", SdkCollection = "sdk_collection" }
);

str_enum!(
    /// Who the data subject is in the order (2.4.2).
    Role { Buyer = "buyer", Consignee = "consignee", ActualOrderer = "actual_orderer", Other = "other" }
);

str_enum!(
    /// The kind of party receiving the data (section 4.1 a–i, 4.2, 4.3).
    RecipientCategory {
        PaymentProcessor = "payment_processor",
        LogisticsCarrier = "logistics_carrier",
        Merchant = "merchant",
        MerchantServiceProvider = "merchant_service_provider",
        Affiliate = "affiliate",
        AuthorizedPartner = "authorized_partner",
        ThirdPartySdk = "third_party_sdk",
        IdentityVerifier = "identity_verifier",
        GovernmentAuthority = "government_authority",
        Guardian = "guardian",
        Public = "public",
        Acquirer = "acquirer",
        Other = "other",
    }
);

str_enum!(
    /// What the sharing is for.
    Purpose {
        OrderFulfilment = "order_fulfilment",
        Payment = "payment",
        AmlCompliance = "aml_compliance",
        Refund = "refund",
        Delivery = "delivery",
        ReturnPickup = "return_pickup",
        AfterSales = "after_sales",
        Installation = "installation",
        CustomerService = "customer_service",
        RealNameVerification = "real_name_verification",
        JointService = "joint_service",
        PersonalizedRecommendation = "personalized_recommendation",
        Advertising = "advertising",
        Analytics = "analytics",
        Security = "security",
        SdkFunctionality = "sdk_functionality",
        LegalRequest = "legal_request",
        Emergency = "emergency",
        GuardianRequest = "guardian_request",
        UserRequestedDisclosure = "user_requested_disclosure",
        CorporateRestructuring = "corporate_restructuring",
        Marketing = "marketing",
    }
);

str_enum!(
    /// The legal basis the sender claims (4.1 a–i, 4.2 a–d, 2.11).
    LegalBasis {
        Consent = "consent",
        SeparateConsent = "separate_consent",
        Contract = "contract",
        LegalObligation = "legal_obligation",
        LegalCompulsion = "legal_compulsion",
        VitalInterest = "vital_interest",
        PublicInterestNews = "public_interest_news",
        PubliclyAvailable = "publicly_available",
        Agreement = "agreement",
        Restructuring = "restructuring",
        GuardianRequest = "guardian_request",
        UserRequest = "user_request",
        None = "none",
    }
);

str_enum!(
    /// The order type; all but `general` are the special types of 2.4.1.
    OrderType {
        General = "general",
        Flight = "flight",
        Train = "train",
        Hotel = "hotel",
        Tour = "tour",
        SimCard = "sim_card",
        ContractPhone = "contract_phone",
        Broadband = "broadband",
        CrossBorder = "cross_border",
    }
);

str_enum!(
    /// Account lifecycle (7.4).
    AccountStatus { Active = "active", CancellationRequested = "cancellation_requested", Cancelled = "cancelled" }
);

str_enum!(
    /// What a separate (单独) consent covers.
    ConsentScope {
        AffiliateSensitive = "affiliate_sensitive",
        Sensitive = "sensitive",
        Partner = "partner",
        PublicDisclosure = "public_disclosure",
        CrossBorder = "cross_border",
    }
);

str_enum!(
    /// How urgent a violation is; ordered low < medium < high < critical.
    Severity { Low = "low", Medium = "medium", High = "high", Critical = "critical" }
);

impl Severity {
    /// One level up ("up" in `rules.md`), saturating at critical.
    pub const fn raised(self) -> Severity {
        match self {
            Severity::Low => Severity::Medium,
            Severity::Medium => Severity::High,
            Severity::High | Severity::Critical => Severity::Critical,
        }
    }
}

str_enum!(
    /// `enforce`: alerts go out; `shadow`: computed, counted and logged only.
    Mode { Enforce = "enforce", Shadow = "shadow" }
);

str_enum!(
    /// The rule ids of `rules.md`. They are an interface (alerts, metrics
    /// labels, exceptions and dashboards use them): never rename one.
    RuleId {
        RecipientUnregistered = "recipient.unregistered",
        RecipientCategoryMismatch = "recipient.category_mismatch",
        RecipientUndeclaredCategory = "recipient.undeclared_category",
        SdkUnlisted = "sdk.unlisted",
        PartnerNoAgreement = "partner.no_agreement",
        LegalBasisInvalid = "legal_basis.invalid",
        PurposeUndeclared = "purpose.undeclared",
        MinimisationProhibited = "minimisation.prohibited",
        MinimisationNotNecessary = "minimisation.not_necessary",
        CredentialsShared = "credentials.shared",
        SensitiveNoSeparateConsent = "sensitive.no_separate_consent",
        AffiliateSensitiveWithoutReconsent = "affiliate.sensitive_without_reconsent",
        MerchantForeignOrder = "merchant.foreign_order",
        ContentUndeclaredPii = "content.undeclared_pii",
        TransportUnencrypted = "transport.unencrypted",
        CrossBorderProhibited = "cross_border.prohibited",
        ConsentWithdrawn = "consent.withdrawn",
        AccountCancelled = "account.cancelled",
        PersonalizationOptedOut = "personalization.opted_out",
        MinorNoGuardianConsent = "minor.no_guardian_consent",
        SubjectThirdPartyUnauthorized = "subject.third_party_unauthorized",
        DisclosureWithoutConsent = "disclosure.without_consent",
        DisclosureLegalWithoutDocument = "disclosure.legal_without_document",
        DisclosureFilesNotEncrypted = "disclosure.files_not_encrypted",
        VolumeBulkTransfer = "volume.bulk_transfer",
        VolumeRecipientRate = "volume.recipient_rate",
    }
);

/// A set of values of one of the enums above, as a bit mask.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct EnumSet(u64);

impl EnumSet {
    pub const EMPTY: EnumSet = EnumSet(0);

    pub fn of<T: Copy + Into<usize>>(items: impl IntoIterator<Item = T>) -> EnumSet {
        let mut set = EnumSet::EMPTY;
        for i in items {
            set.0 |= 1 << i.into();
        }
        set
    }

    pub fn contains<T: Into<usize>>(self, item: T) -> bool {
        self.0 & (1 << item.into()) != 0
    }

    pub fn insert<T: Into<usize>>(&mut self, item: T) {
        self.0 |= 1 << item.into();
    }

    pub fn union(self, other: EnumSet) -> EnumSet {
        EnumSet(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for EnumSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnumSet({:#b})", self.0)
    }
}

macro_rules! into_usize {
    ($($t:ty),*) => { $(impl From<$t> for usize { fn from(v: $t) -> usize { v.index() } })* };
}
into_usize!(
    Flow,
    Role,
    RecipientCategory,
    Purpose,
    LegalBasis,
    OrderType,
    AccountStatus,
    ConsentScope,
    Severity,
    Mode
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_values_say_what_is_expected() {
        for p in Purpose::ALL {
            assert_eq!(p.as_str().parse::<Purpose>().ok(), Some(*p));
        }
        let err = "delivery_fast".parse::<Purpose>().unwrap_err();
        assert!(
            err.to_string().contains("unknown Purpose `delivery_fast`"),
            "{err}"
        );
        assert!(err.to_string().contains("return_pickup"), "{err}");
    }

    #[test]
    fn enum_sets_hold_what_was_put_in() {
        let s = EnumSet::of([Purpose::Payment, Purpose::Marketing]);
        assert!(s.contains(Purpose::Payment) && s.contains(Purpose::Marketing));
        assert!(!s.contains(Purpose::Refund));
        assert!(Purpose::ALL.len() <= 64 && RecipientCategory::ALL.len() <= 64);
    }

    #[test]
    fn severity_goes_up_one_level_and_stops_at_critical() {
        assert_eq!(Severity::Medium.raised(), Severity::High);
        assert_eq!(Severity::Critical.raised(), Severity::Critical);
        assert!(Severity::Low < Severity::Critical);
    }
}
