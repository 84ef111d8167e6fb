//! Why and on what basis: legal basis, declared purposes, public disclosure.

use super::{Breach, Facts, Rule, run_rules};
use crate::model::{ConsentScope, Flow, LegalBasis, RuleId};
use crate::policy::{Arg, Case};

pub(super) fn check(f: &Facts<'_>, out: &mut Vec<Breach>) {
    let rules: &[(RuleId, Rule)] = &[
        (RuleId::LegalBasisInvalid, legal_basis),
        (RuleId::PurposeUndeclared, purpose),
        (RuleId::DisclosureWithoutConsent, disclosure_without_consent),
        (
            RuleId::DisclosureLegalWithoutDocument,
            legal_without_document,
        ),
        (RuleId::DisclosureFilesNotEncrypted, files_not_encrypted),
    ];
    run_rules(f, rules, out);
}

/// 4.1 a–i, 4.2 a–d, 2.11: sharing and transfer only on the grounds the
/// policy lists, each where it fits: transfers on consent, law or
/// agreement; `contract` for the parties that perform an order, with one;
/// `agreement`/`restructuring` for transfers; `guardian_request` to guardians.
fn legal_basis(f: &Facts<'_>) -> Option<Breach> {
    let e = f.event;
    let p = &f.policy.params;
    if !p.legal_flows.contains(e.flow) {
        return None;
    }
    let why = if e.legal_basis == LegalBasis::None {
        Breach::new(Case::NoBasis).arg(Arg::Flow, e.flow)
    } else if e.flow == Flow::Transfer && !p.transfer_bases.contains(e.legal_basis) {
        Breach::new(Case::TransferBasis).arg(Arg::LegalBasis, e.legal_basis)
    } else if e.legal_basis == LegalBasis::Contract
        && !p.contract_recipients.contains(e.recipient.category)
    {
        Breach::new(Case::ContractRecipient).arg(Arg::RecipientCategory, e.recipient.category)
    } else if e.legal_basis == LegalBasis::Contract && e.order.is_none() {
        Breach::new(Case::ContractNoOrder)
    } else if p.transfer_only_bases.contains(e.legal_basis) && e.flow != Flow::Transfer {
        Breach::new(Case::TransferOnly)
            .arg(Arg::LegalBasis, e.legal_basis)
            .arg(Arg::Flow, e.flow)
    } else if e.legal_basis == LegalBasis::GuardianRequest
        && !p.guardian_request_recipients.contains(e.recipient.category)
    {
        Breach::new(Case::GuardianRequest).arg(Arg::RecipientCategory, e.recipient.category)
    } else {
        return None;
    };
    Some(why)
}

/// 2.10.1: "如我们将信息用于本政策未载明的其他用途……均会事先获得您的同意" — the
/// purpose must be declared for the recipient category (or its registry
/// entry), unless a valid separate consent names the recipient and purpose.
fn purpose(f: &Facts<'_>) -> Option<Breach> {
    let e = f.event;
    let mut declared = f.profile.purposes;
    if f.profile.extend_from_registry
        && let Some(entry) = f.entry
    {
        declared = declared.union(entry.purposes);
    }
    if declared.contains(e.purpose) || f.consents(None).any(|c| c.purpose == Some(e.purpose)) {
        return None;
    }
    Some(
        Breach::new(Case::PurposeUndeclared)
            .arg(Arg::Purpose, e.purpose)
            .arg(Arg::RecipientCategory, e.recipient.category)
            .arg(Arg::Recipient, &e.recipient.id),
    )
}

/// 4.3 a: public disclosure only "在您明确同意的披露方式下", on request or by law.
fn disclosure_without_consent(f: &Facts<'_>) -> Option<Breach> {
    let e = f.event;
    if e.flow != Flow::PublicDisclosure || f.policy.params.disclosure_bases.contains(e.legal_basis)
    {
        return None;
    }
    // A separate consent for public disclosure naming the recipient also counts
    // when the sender labelled the basis plain consent.
    if e.legal_basis == LegalBasis::Consent
        && f.consents(Some(ConsentScope::PublicDisclosure))
            .next()
            .is_some()
    {
        return None;
    }
    Some(
        Breach::new(Case::PublicDisclosure)
            .arg(Arg::LegalBasis, e.legal_basis)
            .with_cats(f.cats),
    )
}

/// 4.3 b, 4.1 b: "我们会依法要求请求方出具相关法律文件，如传票或调查函等".
fn legal_without_document(f: &Facts<'_>) -> Option<Breach> {
    let e = f.event;
    let p = &f.policy.params;
    let legal = p.legal_doc_bases.contains(e.legal_basis);
    let applies =
        e.flow == Flow::PublicDisclosure || p.legal_doc_recipients.contains(e.recipient.category);
    (legal && applies && e.legal_document.is_none()).then(|| {
        Breach::new(Case::NoLegalDocument)
            .arg(Arg::LegalBasis, e.legal_basis)
            .arg(Arg::RecipientCategory, e.recipient.category)
            .arg(Arg::Recipient, &e.recipient.id)
    })
}

/// 4.3 b: "我们会对包含披露信息的文件进行加密保护".
fn files_not_encrypted(f: &Facts<'_>) -> Option<Breach> {
    let e = f.event;
    (e.flow == Flow::PublicDisclosure
        && f.policy.params.files_bases.contains(e.legal_basis)
        && e.files_encrypted != Some(true))
    .then(|| Breach::new(Case::FilesNotEncrypted).arg(Arg::LegalBasis, e.legal_basis))
}
