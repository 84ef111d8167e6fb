//! What is sent: minimisation, credentials, undeclared PII, sensitive data
//! and its consents, transport.

use super::{Breach, Facts, Rule, run_rules};
use crate::model::{ConsentScope, RuleId, Severity};
use crate::policy::{Arg, Case, CatId, CatSet, When};

pub(super) fn check(f: &Facts<'_>, out: &mut Vec<Breach>) {
    let on = |id| f.policy.rule(id).is_some();
    if on(RuleId::CredentialsShared)
        && let Some(x) = credentials(f)
    {
        out.push(x);
    }
    let (prohibited, not_necessary) = minimisation(f);
    if on(RuleId::MinimisationProhibited)
        && let Some(x) = prohibited
    {
        out.push(x);
    }
    if on(RuleId::MinimisationNotNecessary)
        && let Some(x) = not_necessary
    {
        out.push(x);
    }
    let rules: &[(RuleId, Rule)] = &[
        (RuleId::ContentUndeclaredPii, undeclared_pii),
        (
            RuleId::SensitiveNoSeparateConsent,
            sensitive_without_consent,
        ),
        (
            RuleId::AffiliateSensitiveWithoutReconsent,
            affiliate_sensitive,
        ),
        (RuleId::TransportUnencrypted, unencrypted),
    ];
    run_rules(f, rules, out);
}

/// 2.2.1, 5.1 b: passwords, tokens and payment credentials never leave.
/// This rule takes them; they do not also count under minimisation.
fn credentials(f: &Facts<'_>) -> Option<Breach> {
    let found = f.cats.intersect(f.policy.params.credentials);
    (!found.is_empty()).then(|| {
        Breach::new(Case::CredentialsShared)
            .arg(Arg::Categories, f.names(found))
            .arg(Arg::RecipientCategory, f.event.recipient.category)
            .arg(Arg::Recipient, &f.event.recipient.id)
            .with_cats(found)
    })
}

/// Whether a conditional allowance's condition holds for the event.
fn holds(w: &When, f: &Facts<'_>) -> bool {
    let e = f.event;
    if w.judged_by.is_some() {
        return true; // another rule judges these categories
    }
    let order = e.order.as_ref();
    w.purpose.is_none_or(|s| s.contains(e.purpose))
        && w.order_type
            .is_none_or(|s| order.is_some_and(|o| s.contains(o.order_type)))
        && w.order_flag.as_ref().is_none_or(|flags| {
            order.is_some_and(|o| {
                flags.iter().any(|fl| match fl {
                    crate::policy::file::OrderFlag::CashOnDelivery => o.cash_on_delivery,
                    crate::policy::file::OrderFlag::Insured => o.insured,
                })
            })
        })
        && w.legal_basis.is_none_or(|s| s.contains(e.legal_basis))
        && w.flow.is_none_or(|s| s.contains(e.flow))
        && w.legal_document
            .is_none_or(|want| e.legal_document.is_some() == want)
}

/// The categories the recipient may receive for this event: allowed,
/// registry-declared (partners, SDKs) and conditionally allowed with the
/// condition holding.
pub(super) fn permitted(f: &Facts<'_>) -> CatSet {
    let mut ok = f.profile.allowed;
    if f.profile.extend_from_registry
        && let Some(entry) = f.entry
    {
        ok = ok.union(entry.categories);
    }
    for c in &f.profile.conditional {
        if holds(&c.when, f) {
            ok = ok.union(c.categories);
        }
    }
    ok
}

/// 2.5.1, 2.6.1, 4.1 f–i, 5.2: "我们只会共享必要的个人信息". A category in the
/// recipient's never-list is prohibited; one neither permitted nor never is
/// not necessary. Each counts once, under the first that applies.
fn minimisation(f: &Facts<'_>) -> (Option<Breach>, Option<Breach>) {
    let sent = f.cats.minus(f.policy.params.credentials);
    let never = sent.intersect(f.profile.never);
    let unnecessary = sent.minus(f.profile.never).minus(permitted(f));
    let r = &f.event.recipient;
    let prohibited = (!never.is_empty()).then(|| {
        Breach::new(Case::NeverReceive)
            .arg(Arg::RecipientCategory, r.category)
            .arg(Arg::Recipient, &r.id)
            .arg(Arg::Categories, f.names(never))
            .with_cats(never)
    });
    let not_necessary = (!unnecessary.is_empty()).then(|| {
        let conditional = unnecessary.intersect(
            f.profile
                .conditional
                .iter()
                .fold(CatSet::EMPTY, |a, c| a.union(c.categories)),
        );
        let finding = if conditional.is_empty() {
            Breach::new(Case::NotNecessary)
        } else {
            Breach::new(Case::NotNecessaryConditional).arg(Arg::Conditional, f.names(conditional))
        };
        finding
            .arg(Arg::Categories, f.names(unnecessary))
            .arg(Arg::Purpose, f.event.purpose)
            .arg(Arg::RecipientCategory, r.category)
            .arg(Arg::Recipient, &r.id)
            .with_cats(unnecessary)
    });
    (prohibited, not_necessary)
}

/// 5.2, 2.8.2: personal information inside a value whose field was not
/// declared as that kind of data. The find counts in `cats(e)` for the
/// other rules too.
fn undeclared_pii(f: &Facts<'_>) -> Option<Breach> {
    let found = f
        .items
        .iter()
        .fold(CatSet::EMPTY, |a, i| a.union(i.undeclared));
    if found.is_empty() {
        return None;
    }
    let severity = f
        .policy
        .params
        .pii_severity
        .iter()
        .filter(|(c, _)| found.contains(*c))
        .map(|(_, s)| *s)
        .max();
    let fields: Vec<&str> = f
        .items
        .iter()
        .zip(&f.event.data)
        .filter(|(i, _)| !i.undeclared.is_empty())
        .map(|(_, d)| d.field.as_str())
        .collect();
    let mut finding = Breach::new(Case::UndeclaredPii)
        .arg(Arg::Categories, f.names(found))
        .arg(Arg::Fields, fields.join(", "))
        .with_cats(found);
    finding.severity = severity.map(|s| {
        s.max(
            f.policy
                .rule(RuleId::ContentUndeclaredPii)
                .map_or(Severity::Low, |m| m.severity),
        )
    });
    Some(finding)
}

/// Whether a valid separate consent of `scope` naming the recipient covers
/// category `c` (and, when it names a purpose, the event's purpose).
fn covered(f: &Facts<'_>, scope: ConsentScope, c: CatId) -> bool {
    let name = f.policy.taxonomy.name(c);
    f.consents(Some(scope))
        .any(|s| s.purpose.is_none_or(|p| p == f.event.purpose) && s.covers_category(name))
}

/// The categories of `cats` that no valid separate consent of `scope` covers.
fn uncovered(f: &Facts<'_>, scope: ConsentScope, cats: CatSet) -> CatSet {
    let mut missing = CatSet::EMPTY;
    for c in cats.iter().filter(|c| !covered(f, scope, *c)) {
        missing.insert(c);
    }
    missing
}

/// The sensitive categories of the event that a rule about consent looks at:
/// not credentials (their own rule) and not never-listed (prohibited anyway).
fn sensitive_sent(f: &Facts<'_>) -> CatSet {
    f.cats
        .intersect(f.sensitive)
        .minus(f.policy.params.credentials)
        .minus(f.profile.never)
}

/// 2.2.2 (PIPL 29): "您的身份证信息属于个人敏感信息" — sensitive data shared on
/// consent needs a separate consent naming the recipient and covering it.
fn sensitive_without_consent(f: &Facts<'_>) -> Option<Breach> {
    let p = &f.policy.params;
    let e = f.event;
    if !p.sensitive_consent_bases.contains(e.legal_basis)
        || p.sensitive_except_recipients.contains(e.recipient.category)
    {
        return None;
    }
    let missing = uncovered(
        f,
        ConsentScope::Sensitive,
        sensitive_sent(f).intersect(permitted(f)),
    );
    (!missing.is_empty()).then(|| {
        Breach::new(Case::NoSeparateConsent)
            .arg(Arg::Recipient, &e.recipient.id)
            .arg(Arg::Categories, f.names(missing))
            .with_cats(missing)
    })
}

/// 4.1 g: "如果我们共享您的个人敏感信息……我们将再次征求您的授权同意" —
/// whatever the basis.
fn affiliate_sensitive(f: &Facts<'_>) -> Option<Breach> {
    if !f
        .policy
        .params
        .affiliate_recipients
        .contains(f.event.recipient.category)
    {
        return None;
    }
    let missing = uncovered(f, ConsentScope::AffiliateSensitive, sensitive_sent(f));
    (!missing.is_empty()).then(|| {
        Breach::new(Case::NoAffiliateReconsent)
            .arg(Arg::Recipient, &f.event.recipient.id)
            .arg(Arg::Categories, f.names(missing))
            .with_cats(missing)
    })
}

/// 5.1 a: "我们会使用加密技术确保数据的保密性".
fn unencrypted(f: &Facts<'_>) -> Option<Breach> {
    let t = &f.event.transport;
    (!t.encrypted).then(|| {
        // The protocol is a sender's free string: named only when it looks like one.
        let looks_like_protocol = |p: &&str| {
            p.len() <= 16
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"./-".contains(&b))
        };
        let finding = match t.protocol.as_deref().filter(looks_like_protocol) {
            Some(p) => Breach::new(Case::UnencryptedOver).arg(Arg::Protocol, p),
            None => Breach::new(Case::Unencrypted),
        };
        finding
            .arg(Arg::Recipient, &f.event.recipient.id)
            .with_cats(f.cats)
    })
}
