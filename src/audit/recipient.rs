//! Who receives the data: registry, category, agreements, region.

use super::{Breach, Facts, Rule, run_rules};
use crate::model::{RecipientCategory, RuleId};
use crate::policy::{Arg, Case, flag_name};

pub(super) fn check(f: &Facts<'_>, out: &mut Vec<Breach>) {
    let rules: &[(RuleId, Rule)] = &[
        (RuleId::RecipientUnregistered, unregistered),
        (RuleId::RecipientCategoryMismatch, category_mismatch),
        (RuleId::RecipientUndeclaredCategory, undeclared_category),
        (RuleId::SdkUnlisted, sdk_unlisted),
        (RuleId::PartnerNoAgreement, no_agreement),
        (RuleId::MerchantForeignOrder, foreign_order),
        (RuleId::CrossBorderProhibited, cross_border),
    ];
    run_rules(f, rules, out);
}

/// 4.1: "除以下情况外，我们不会向其他任何、组织、个人共享您的个人信息" — only
/// to parties the registry names (merchants, guardians, the public are
/// admitted as whole categories).
fn unregistered(f: &Facts<'_>) -> Option<Breach> {
    let r = &f.event.recipient;
    (f.entry.is_none() && !f.policy.is_open(r.category)).then(|| {
        Breach::new(Case::Unregistered)
            .arg(Arg::RecipientCategory, r.category)
            .arg(Arg::Recipient, &r.id)
    })
}

/// 4.1: the registry says who a recipient is; an event that calls it
/// something else, or a recipient lacking the licence or status its kind
/// requires (`licensed`, `group_member`, `authorised`), is not who the policy promised.
fn category_mismatch(f: &Facts<'_>) -> Option<Breach> {
    let entry = f.entry?;
    let r = &f.event.recipient;
    if entry.category != r.category {
        return Some(
            Breach::new(Case::RegisteredAsOther)
                .arg(Arg::Recipient, &r.id)
                .arg(Arg::RegisteredCategory, entry.category)
                .arg(Arg::RecipientCategory, r.category),
        );
    }
    let missing: Vec<&str> = f
        .policy
        .profile(entry.category)
        .required_flags
        .iter()
        .filter(|fl| entry.flag(**fl) != Some(true))
        .map(|fl| flag_name(*fl))
        .collect();
    (!missing.is_empty()).then(|| {
        Breach::new(Case::LacksStatus)
            .arg(Arg::RecipientCategory, entry.category)
            .arg(Arg::Recipient, &r.id)
            .arg(Arg::Missing, missing.join(", "))
    })
}

/// 4.1, 9.2 c: a kind of recipient the policy does not declare is a change
/// of "个人信息共享、转让或公开披露的主要对象".
fn undeclared_category(f: &Facts<'_>) -> Option<Breach> {
    (f.event.recipient.category == RecipientCategory::Other)
        .then(|| Breach::new(Case::OtherCategory).arg(Arg::Recipient, &f.event.recipient.id))
}

/// 4.1 i: third-party SDKs are those of the published SDK list.
fn sdk_unlisted(f: &Facts<'_>) -> Option<Breach> {
    let entry = f.entry?;
    (entry.category == RecipientCategory::ThirdPartySdk && entry.published_sdk_list != Some(true))
        .then(|| Breach::new(Case::SdkUnlisted).arg(Arg::Recipient, &f.event.recipient.id))
}

/// 4.1 h, 4.1 e: partners and merchants' providers are bound by a data
/// protection agreement: in the registry, or named on the event.
fn no_agreement(f: &Facts<'_>) -> Option<Breach> {
    let r = &f.event.recipient;
    if !f
        .policy
        .params
        .partner_agreement_recipients
        .contains(r.category)
    {
        return None;
    }
    let registered = f.entry.is_some_and(|e| e.agreement == Some(true));
    let on_event = f
        .event
        .agreement_ref
        .as_deref()
        .is_some_and(|a| !a.trim().is_empty());
    (!registered && !on_event).then(|| {
        Breach::new(Case::NoAgreement)
            .arg(Arg::RecipientCategory, r.category)
            .arg(Arg::Recipient, &r.id)
    })
}

/// 4.1 f: "我们必须与商户或其委托的第三方等服务商共享" — the order's own merchant,
/// or a provider that merchant entrusted.
fn foreign_order(f: &Facts<'_>) -> Option<Breach> {
    let r = &f.event.recipient;
    let order_merchant = f.event.order.as_ref().map(|o| o.merchant_id.as_str());
    let breach = |case| Breach::new(case).arg(Arg::Recipient, &r.id);
    match r.category {
        RecipientCategory::Merchant => match order_merchant {
            None => Some(breach(Case::MerchantNoOrder)),
            Some(m) if m != r.id => Some(breach(Case::MerchantOther).arg(Arg::Merchant, m)),
            Some(_) => None,
        },
        RecipientCategory::MerchantServiceProvider => {
            let Some(m) = order_merchant else {
                return Some(breach(Case::ProviderNoOrder));
            };
            let acting = r.acting_for_merchant.as_deref();
            let entrusted = f.entry.and_then(|e| e.entrusted_by.as_deref());
            let finding = if acting != Some(m) {
                match acting {
                    Some(other) => breach(Case::ProviderActsForOther).arg(Arg::ActingFor, other),
                    None => breach(Case::ProviderActsForNone),
                }
            } else if f.entry.is_some() && entrusted != Some(m) {
                match entrusted {
                    Some(other) => {
                        breach(Case::ProviderEntrustedByOther).arg(Arg::EntrustedBy, other)
                    }
                    None => breach(Case::ProviderEntrustedByNone),
                }
            } else {
                return None;
            };
            Some(finding.arg(Arg::Merchant, m))
        }
        _ => None,
    }
}

/// 6.2, 6.3: "您的个人信息将全部被存储于中华人民共和国境内。目前我们不存在向境外提供个人信息的场景".
/// HK, MO and TW are outside. The event's region and the registry's both count.
fn cross_border(f: &Facts<'_>) -> Option<Breach> {
    let home = &f.policy.params.home_regions;
    let r = &f.event.recipient;
    let abroad = |region: &str| !home.iter().any(|h| h == region);
    if abroad(&r.region) {
        return Some(
            Breach::new(Case::AbroadRegion)
                .arg(Arg::Region, &r.region)
                .arg(Arg::Recipient, &r.id)
                .with_cats(f.cats),
        );
    }
    let entry = f.entry?;
    abroad(&entry.region).then(|| {
        Breach::new(Case::AbroadRegistered)
            .arg(Arg::Recipient, &r.id)
            .arg(Arg::RegisteredRegion, &entry.region)
            .arg(Arg::Region, &r.region)
            .with_cats(f.cats)
    })
}
