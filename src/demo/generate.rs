//! Synthetic data-sharing traffic: a seeded, realistic mix of the platform's
//! flows (delivery, payment, merchants, installers, affiliates, SDKs,
//! partners, verification, authorities, the public) with a share of
//! violations, and the consent states of its users.
//!
//! Each event comes with the rule ids the default policy must fire for it,
//! taken from the scenario that made it, not from the engine, so comparing
//! the two tests the engine. Pure: the caller writes the records wherever.

use crate::model::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One generated event and what the default policy must say about it.
#[derive(Debug, Clone)]
pub struct Generated {
    pub event: DataSharingEvent,
    /// Rule ids expected to fire (sorted); empty for a compliant event.
    pub expected: Vec<&'static str>,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// Users in the pool; every 50th of them has a special consent state.
    pub users: usize,
    /// Share of events that violate the policy, 0.0..=1.0.
    pub violation_share: f64,
    /// First event time and the spacing between events, in milliseconds.
    pub start: Timestamp,
    pub spacing_millis: i64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            seed: 42,
            users: 2000,
            violation_share: 0.15,
            start: Timestamp(1_763_604_000_000), // 2025-11-20T02:00:00Z
            spacing_millis: 50,
        }
    }
}

/// What kind of user a pool index is: most are ordinary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ordinary,
    Cancelled,
    Withdrawn,
    Minor,
    OptedOut,
    Verified,
}

fn kind(i: usize) -> Kind {
    match i % 50 {
        0 => Kind::Cancelled,
        1 => Kind::Withdrawn,
        2 => Kind::Minor,
        3 => Kind::OptedOut,
        4 => Kind::Verified,
        _ => Kind::Ordinary,
    }
}

fn user_id(i: usize) -> String {
    format!("u-{i:06}")
}

/// The consent states of the pool (one per user, valid well before the traffic).
pub fn consent_states(o: &Options) -> Vec<ConsentState> {
    let at = Timestamp(o.start.0 - 30 * 86_400_000);
    (0..o.users)
        .map(|i| {
            let k = kind(i);
            ConsentState {
                user_id: user_id(i),
                updated_at: at,
                account_status: if k == Kind::Cancelled {
                    AccountStatus::Cancelled
                } else {
                    AccountStatus::Active
                },
                consent_withdrawn: k == Kind::Withdrawn,
                withdrawn_purposes: vec![],
                personalized_ads_opt_out: k == Kind::OptedOut,
                personalized_recommendation_opt_out: k == Kind::OptedOut,
                separate_consents: if k == Kind::Verified {
                    vec![SeparateConsent {
                        scope: ConsentScope::Sensitive,
                        recipient_id: "nciic".into(),
                        purpose: Some(Purpose::RealNameVerification),
                        categories: vec![
                            "identity.id_card_number".into(),
                            "biometric.face_image".into(),
                        ],
                        granted_at: at,
                        withdrawn_at: None,
                    }]
                } else {
                    vec![]
                },
                birth_date: if k == Kind::Minor {
                    Date::ymd(2014, 6, 1)
                } else {
                    Date::ymd(
                        1980 + (i % 25) as i32,
                        1 + (i % 12) as u32,
                        1 + (i % 28) as u32,
                    )
                },
                guardian_consent: if k == Kind::Minor { Some(false) } else { None },
            }
        })
        .collect()
}

const NAMES: &[&str] = &[
    "张三",
    "李四",
    "王五",
    "赵六",
    "陈晓明",
    "刘洋",
    "周杰",
    "吴敏",
];
const ADDRESSES: &[&str] = &[
    "北京市朝阳区建国路88号",
    "上海市浦东新区世纪大道100号",
    "广州市天河区体育西路1号",
    "成都市武侯区天府大道北段1700号",
];
const MEMOS: &[&str] = &[
    "放门卫，谢谢",
    "工作日白天送货",
    "请尽快发货，2024-06-01 前收到",
    "不要放快递柜",
    "送货前请电话联系",
    "订单 1712345678901 合并发货",
    "礼物，请不要放发票",
    "",
];
const ITEMS: &[&str] = &[
    "连衣裙 M码",
    "蓝牙耳机",
    "婴儿奶粉 2段",
    "手机壳",
    "运动鞋 42码",
    "洗发水 500ml",
];

struct G<'a> {
    rng: StdRng,
    o: &'a Options,
    n: u64,
}

fn item(field: &str, category: Option<&str>, value: impl Into<String>) -> DataItem {
    DataItem {
        field: field.into(),
        category: category.map(Into::into),
        value: Some(value.into()),
    }
}

impl G<'_> {
    fn pick<'b>(&mut self, xs: &'b [&'b str]) -> &'b str {
        xs[self.rng.random_range(0..xs.len())]
    }

    /// A user of the given kind from the pool.
    fn user(&mut self, k: Kind) -> String {
        loop {
            let i = self.rng.random_range(0..self.o.users.max(50));
            if kind(i) == k && i < self.o.users {
                return user_id(i);
            }
        }
    }

    fn phone(&mut self) -> String {
        format!(
            "1{}{:08}",
            self.pick(&["38", "39", "58", "86", "99"]),
            self.rng.random_range(0..100_000_000u32)
        )
    }

    fn base(
        &mut self,
        recipient: &str,
        category: RecipientCategory,
        purpose: Purpose,
        basis: LegalBasis,
        user: String,
    ) -> DataSharingEvent {
        self.n += 1;
        let merchant = format!("m-{}", 300 + self.rng.random_range(0..5));
        DataSharingEvent {
            event_id: format!("g{}-{:08}", self.o.seed, self.n),
            occurred_at: Timestamp(self.o.start.0 + self.n as i64 * self.o.spacing_millis),
            source_service: self
                .pick(&[
                    "order-fulfilment",
                    "payment-gateway",
                    "growth-platform",
                    "risk-control",
                    "egress-gateway",
                ])
                .into(),
            flow: Flow::Share,
            subject: Subject {
                user_id: user,
                role: Role::Buyer,
                age: None,
                guardian_consent: None,
                third_party_authorized: None,
            },
            recipient: Recipient {
                id: recipient.into(),
                category,
                region: "CN".into(),
                acting_for_merchant: None,
            },
            purpose,
            legal_basis: basis,
            order: Some(Order {
                id: format!("o-{}", 880_000 + self.n),
                order_type: OrderType::General,
                merchant_id: merchant,
                cash_on_delivery: false,
                insured: false,
            }),
            data: vec![],
            record_count: 1,
            transport: Transport {
                encrypted: true,
                protocol: Some("TLS1.3".into()),
            },
            legal_document: None,
            files_encrypted: None,
            agreement_ref: None,
            consent_ref: None,
        }
    }

    /// An event outside any order (affiliates, SDKs, partners, authorities).
    fn direct(
        &mut self,
        to: (&str, RecipientCategory),
        purpose: Purpose,
        basis: LegalBasis,
        user: String,
        data: Vec<DataItem>,
    ) -> DataSharingEvent {
        let mut e = self.base(to.0, to.1, purpose, basis, user);
        e.order = None;
        e.data = data;
        e
    }

    fn delivery(&mut self, user: String) -> DataSharingEvent {
        let carrier = self.pick(&["sf-express", "zto-express"]);
        let mut e = self.base(
            carrier,
            RecipientCategory::LogisticsCarrier,
            Purpose::Delivery,
            LegalBasis::Contract,
            user,
        );
        let (name, addr, memo, goods) = (
            self.pick(NAMES),
            self.pick(ADDRESSES),
            self.pick(MEMOS),
            self.pick(ITEMS),
        );
        let phone = self.phone();
        e.data = vec![
            item("receiver_name", Some("contact.recipient_name"), name),
            item("receiver_phone", Some("contact.recipient_phone"), phone),
            item("receiver_address", Some("location.shipping_address"), addr),
            item("item_title", None, goods),
            item("buyer_memo", None, memo),
        ];
        e
    }

    fn compliant(&mut self) -> DataSharingEvent {
        let user = self.user(Kind::Ordinary);
        match self.rng.random_range(0..100) {
            0..=39 => self.delivery(user),
            40..=59 => {
                let psp = self.pick(&["alipay", "wechat-pay"]);
                let mut e = self.base(
                    psp,
                    RecipientCategory::PaymentProcessor,
                    Purpose::Payment,
                    LegalBasis::Contract,
                    user,
                );
                let amount = format!(
                    "{}.{:02}",
                    self.rng.random_range(1..2000),
                    self.rng.random_range(0..100)
                );
                let order = e.order.as_ref().map(|o| o.id.clone()).unwrap_or_default();
                e.data = vec![
                    item("order_id", Some("order.id"), order),
                    item("pay_amount", Some("order.amount"), amount),
                    item("nickname", None, "小店用户"),
                ];
                e
            }
            60..=71 => {
                let mut e = self.delivery(user);
                let m = e
                    .order
                    .as_ref()
                    .map(|o| o.merchant_id.clone())
                    .unwrap_or_default();
                e.recipient = Recipient {
                    id: m,
                    category: RecipientCategory::Merchant,
                    region: "CN".into(),
                    acting_for_merchant: None,
                };
                e.purpose = Purpose::OrderFulfilment;
                e
            }
            72..=75 => {
                let mut e = self.base(
                    "m-301-install",
                    RecipientCategory::MerchantServiceProvider,
                    Purpose::Installation,
                    LegalBasis::Contract,
                    user,
                );
                e.recipient.acting_for_merchant = Some("m-301".into());
                if let Some(o) = e.order.as_mut() {
                    o.merchant_id = "m-301".into();
                    o.order_type = OrderType::Broadband;
                }
                let (name, addr) = (self.pick(NAMES), self.pick(ADDRESSES));
                e.data = vec![
                    item("receiver_name", Some("contact.recipient_name"), name),
                    item("install_address", None, addr),
                ];
                e
            }
            76..=85 => self.direct(
                ("ks-tech", RecipientCategory::Affiliate),
                Purpose::PersonalizedRecommendation,
                LegalBasis::Consent,
                user.clone(),
                vec![
                    item("uid", Some("account.user_id"), user),
                    item("interest_labels", None, "[美妆, 运动, 母婴]"),
                    item("device_model", None, "Mi 13"),
                ],
            ),
            86..=91 => {
                let mut e = self.direct(
                    ("getui-sdk", RecipientCategory::ThirdPartySdk),
                    Purpose::SdkFunctionality,
                    LegalBasis::Consent,
                    user,
                    vec![
                        item("device_model", None, "Mi 13"),
                        item("os_version", None, "Android 14"),
                        item("network_type", None, "wifi"),
                    ],
                );
                e.flow = Flow::SdkCollection;
                e
            }
            92..=95 => {
                let mut e = self.base(
                    "partner-crm",
                    RecipientCategory::AuthorizedPartner,
                    Purpose::CustomerService,
                    LegalBasis::Consent,
                    user.clone(),
                );
                let phone = self.phone();
                e.data = vec![
                    item("uid", Some("account.user_id"), user),
                    item("mobile", None, phone),
                    item("order_status", None, "已发货"),
                ];
                e
            }
            _ => {
                let verified = self.user(Kind::Verified);
                let name = self.pick(NAMES);

                self.direct(
                    ("nciic", RecipientCategory::IdentityVerifier),
                    Purpose::RealNameVerification,
                    LegalBasis::Consent,
                    verified,
                    vec![
                        item("real_name", None, name),
                        item("id_no", None, "440306199001011236"),
                    ],
                )
            }
        }
    }

    fn violating(&mut self) -> (DataSharingEvent, Vec<&'static str>) {
        let user = self.user(Kind::Ordinary);
        match self.rng.random_range(0..18) {
            0 => {
                let mut e = self.delivery(user);
                e.data
                    .push(item("device_lat", None, "39.908722,116.397499"));
                (e, vec!["minimisation.prohibited"])
            }
            1 => {
                let mut e = self.delivery(user);
                e.data[4] = item("buyer_memo", None, "发票需要身份证 11010519491231002X");
                (e, vec!["content.undeclared_pii", "minimisation.prohibited"])
            }
            2 => {
                let mut e = self.delivery(user);
                e.transport = Transport {
                    encrypted: false,
                    protocol: Some("HTTP".into()),
                };
                (e, vec!["transport.unencrypted"])
            }
            3 => {
                let mut e = self.direct(
                    ("overseas-analytics", RecipientCategory::AuthorizedPartner),
                    Purpose::Analytics,
                    LegalBasis::Consent,
                    user.clone(),
                    vec![
                        item("uid", Some("account.user_id"), user),
                        item("search_query", None, "蓝牙耳机"),
                    ],
                );
                e.recipient.region = "US".into();
                (e, vec!["cross_border.prohibited"])
            }
            4 => {
                let withdrawn = self.user(Kind::Withdrawn);
                let mut e = self.base(
                    "partner-crm",
                    RecipientCategory::AuthorizedPartner,
                    Purpose::CustomerService,
                    LegalBasis::Consent,
                    withdrawn.clone(),
                );
                e.data = vec![item("uid", Some("account.user_id"), withdrawn)];
                (e, vec!["consent.withdrawn"])
            }
            5 => {
                let cancelled = self.user(Kind::Cancelled);
                (self.delivery(cancelled), vec!["account.cancelled"])
            }
            6 => {
                let minor = self.user(Kind::Minor);
                (self.delivery(minor), vec!["minor.no_guardian_consent"])
            }
            7 => {
                let mut e = self.delivery(user);
                e.record_count = 800;
                (e, vec!["volume.bulk_transfer"])
            }
            8 => {
                let mut e = self.base(
                    "quickpay-unlicensed",
                    RecipientCategory::PaymentProcessor,
                    Purpose::Payment,
                    LegalBasis::Contract,
                    user,
                );
                e.data = vec![item("pay_amount", Some("order.amount"), "88.00")];
                (e, vec!["recipient.category_mismatch"])
            }
            9 => {
                let mut e = self.delivery(user);
                e.recipient.id = "fast-courier-unknown".into();
                (e, vec!["recipient.unregistered"])
            }
            10 => {
                let mut e = self.direct(
                    ("shady-sdk", RecipientCategory::ThirdPartySdk),
                    Purpose::SdkFunctionality,
                    LegalBasis::Consent,
                    user,
                    vec![item("device_model", None, "Mi 13")],
                );
                e.flow = Flow::SdkCollection;
                (e, vec!["sdk.unlisted"])
            }
            11 => {
                let e = self.direct(
                    ("partner-insights", RecipientCategory::AuthorizedPartner),
                    Purpose::Analytics,
                    LegalBasis::Consent,
                    user.clone(),
                    vec![
                        item("uid", Some("account.user_id"), user),
                        item("cart_items", None, "[sku-1]"),
                    ],
                );
                (e, vec!["partner.no_agreement"])
            }
            12 => {
                let mut e = self.delivery(user);
                e.data
                    .push(item("access_token", None, "eyJhbGciOiJIUzI1NiJ9.e30"));
                (e, vec!["credentials.shared"])
            }
            13 => {
                let mut e = self.delivery(user);
                e.purpose = Purpose::Marketing;
                (e, vec!["purpose.undeclared"])
            }
            14 => {
                let e = self.direct(
                    ("ks-tech", RecipientCategory::Affiliate),
                    Purpose::PersonalizedRecommendation,
                    LegalBasis::Consent,
                    user.clone(),
                    vec![
                        item("uid", Some("account.user_id"), user),
                        item("watch_history", None, "[v-1, v-2, v-3]"),
                    ],
                );
                (e, vec!["affiliate.sensitive_without_reconsent"])
            }
            15 => {
                let mut e = self.delivery(user);
                e.recipient = Recipient {
                    id: "m-999".into(),
                    category: RecipientCategory::Merchant,
                    region: "CN".into(),
                    acting_for_merchant: None,
                };
                e.purpose = Purpose::OrderFulfilment;
                (e, vec!["merchant.foreign_order"])
            }
            16 => {
                let mut e = self.direct(
                    ("public", RecipientCategory::Public),
                    Purpose::UserRequestedDisclosure,
                    LegalBasis::Consent,
                    user,
                    vec![item("review_text", None, "质量很好，物流很快")],
                );
                e.flow = Flow::PublicDisclosure;
                (
                    e,
                    vec!["disclosure.without_consent", "minimisation.not_necessary"],
                )
            }
            _ => {
                let name = self.pick(NAMES);
                let e = self.direct(
                    (
                        "public-security-bureau",
                        RecipientCategory::GovernmentAuthority,
                    ),
                    Purpose::LegalRequest,
                    LegalBasis::LegalCompulsion,
                    user,
                    vec![item("receiver_name", Some("contact.recipient_name"), name)],
                );
                (
                    e,
                    vec![
                        "disclosure.legal_without_document",
                        "minimisation.not_necessary",
                    ],
                )
            }
        }
    }
}

/// A stream of `count` events with their expectations.
pub fn events(o: &Options, count: usize) -> Vec<Generated> {
    let mut g = G {
        rng: StdRng::seed_from_u64(o.seed),
        o,
        n: 0,
    };
    (0..count)
        .map(|_| {
            if g.rng.random_bool(o.violation_share.clamp(0.0, 1.0)) {
                let (event, mut expected) = g.violating();
                expected.sort_unstable();
                Generated { event, expected }
            } else {
                Generated {
                    event: g.compliant(),
                    expected: vec![],
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditContext, Engine};
    use crate::consent::ConsentTable;
    use std::sync::Arc;

    #[test]
    fn the_engine_finds_exactly_what_the_generator_planted() {
        let o = Options::default();
        let policy = Arc::new(crate::policy::load_default(Timestamp(0)).unwrap().policy);
        let mut table = ConsentTable::new(4);
        for s in consent_states(&o) {
            table.upsert(s);
        }
        let mut engine = Engine::new(policy, b"k");
        let stream = events(&o, 5000);
        let mut violating = 0;
        for g in &stream {
            let ctx = AuditContext {
                detected_at: g.event.occurred_at,
                source: None,
            };
            let v = engine
                .audit(
                    &g.event,
                    table.as_of(&g.event.subject.user_id, g.event.occurred_at),
                    &ctx,
                )
                .unwrap();
            let mut got: Vec<&str> = v.violations.iter().map(|v| v.rule_id.as_str()).collect();
            got.sort_unstable();
            assert_eq!(
                got,
                g.expected,
                "{}",
                serde_json::to_string(&g.event).unwrap()
            );
            violating += usize::from(!g.expected.is_empty());
        }
        let share = violating as f64 / stream.len() as f64;
        assert!((0.12..0.18).contains(&share), "{share}");
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let o = Options::default();
        let a: Vec<_> = events(&o, 50).into_iter().map(|g| g.event).collect();
        let b: Vec<_> = events(&o, 50).into_iter().map(|g| g.event).collect();
        assert_eq!(a, b);
    }
}
