//! Whose data: the user's consent state as of the event, minors, people
//! ordered for.

use super::{Breach, Facts, Rule, run_rules};
use crate::model::{AccountStatus, ConsentState, DataSharingEvent, Date, Purpose, RuleId};
use crate::policy::{Arg, Case, Policy};

pub(super) fn check(f: &Facts<'_>, out: &mut Vec<Breach>) {
    let rules: &[(RuleId, Rule)] = &[
        (RuleId::ConsentWithdrawn, withdrawn),
        (RuleId::AccountCancelled, cancelled),
        (RuleId::PersonalizationOptedOut, opted_out),
        (RuleId::MinorNoGuardianConsent, minor),
        (RuleId::SubjectThirdPartyUnauthorized, third_party),
    ];
    run_rules(f, rules, out);
}

/// The subject's age at the event: `subject.age`, else from `state.birth_date`.
pub(super) fn age(
    event: &DataSharingEvent,
    state: Option<&ConsentState>,
    today: Date,
) -> Option<i32> {
    event
        .subject
        .age
        .or_else(|| state.and_then(|s| s.birth_date).map(|b| b.age_on(today)))
}

pub(super) fn is_minor(
    event: &DataSharingEvent,
    state: Option<&ConsentState>,
    policy: &Policy,
    today: Date,
) -> bool {
    age(event, state, today).is_some_and(|a| a <= policy.settings.minor_max_age)
}

/// 7.3.1: "当您撤回同意后，我们将不再处理您的相关个人信息".
fn withdrawn(f: &Facts<'_>) -> Option<Breach> {
    let s = f.state?;
    let e = f.event;
    if !f.policy.params.withdrawn_bases.contains(e.legal_basis) {
        return None;
    }
    let finding = if s.consent_withdrawn {
        Breach::new(Case::WithdrewAll)
    } else if s.withdrawn_purposes.contains(&e.purpose) {
        Breach::new(Case::WithdrewPurpose).arg(Arg::Purpose, e.purpose)
    } else {
        return None;
    };
    Some(
        finding
            .arg(Arg::LegalBasis, e.legal_basis)
            .with_cats(f.cats),
    )
}

/// 7.4.2: after cancellation "删除或匿名化处理该账号项下您的个人信息，除非法律法规另有规定".
fn cancelled(f: &Facts<'_>) -> Option<Breach> {
    let s = f.state?;
    (s.account_status == AccountStatus::Cancelled
        && !f
            .policy
            .params
            .cancelled_exempt_bases
            .contains(f.event.legal_basis))
    .then(|| {
        Breach::new(Case::Cancelled)
            .arg(Arg::LegalBasis, f.event.legal_basis)
            .with_cats(f.cats)
    })
}

/// 2.3.3, 2.3.4 e, f: the user manages personalised ads and recommendations.
fn opted_out(f: &Facts<'_>) -> Option<Breach> {
    let s = f.state?;
    let case = match f.event.purpose {
        Purpose::Advertising if s.personalized_ads_opt_out => Case::OptedOutAds,
        Purpose::PersonalizedRecommendation if s.personalized_recommendation_opt_out => {
            Case::OptedOutRecommendation
        }
        _ => return None,
    };
    Some(Breach::new(case).with_cats(f.cats))
}

/// 8 (PIPL 31): "若您是14周岁以下的未成年人……应事先取得您的监护人的同意".
/// The age itself is personal: the detail says only which source showed it.
fn minor(f: &Facts<'_>) -> Option<Breach> {
    let e = f.event;
    if !f.minor || f.policy.params.minor_exempt_bases.contains(e.legal_basis) {
        return None;
    }
    let guardian = e.subject.guardian_consent == Some(true)
        || f.state.is_some_and(|s| s.guardian_consent == Some(true));
    if guardian {
        return None;
    }
    let by = if e.subject.age.is_some() {
        Case::MinorByAge
    } else {
        Case::MinorByBirthDate
    };
    Some(
        Breach::new(by)
            .arg(Arg::MaxAge, f.policy.settings.minor_max_age)
            .with_cats(f.cats),
    )
}

/// 2.4.2: "向快手小店提供实际订购人的前述个人信息之前，您需确保您已经取得其授权同意".
fn third_party(f: &Facts<'_>) -> Option<Breach> {
    let s = &f.event.subject;
    (f.policy.params.third_party_roles.contains(s.role) && s.third_party_authorized == Some(false))
        .then(|| Breach::new(Case::ThirdPartyUnauthorized).arg(Arg::Role, s.role))
}
