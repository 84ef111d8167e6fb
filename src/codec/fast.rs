//! The fast path of JSON decoding: simd-json's tape, walked straight into
//! the model, without serde's visitors.
//!
//! Each decoder fills a record the caller owns, reusing the allocations of
//! the record decoded before (a stream decodes into one record over and
//! over: its strings and items keep their capacity). It takes the fields it
//! knows and ignores the rest, as the serde form does, and resets what the
//! new record leaves out. It answers `None` at the first doubt (a missing
//! required field, a wrong type, an unknown enum value, a duplicate key, a
//! null where a value is required), leaving the record half written; the
//! caller then hands the bytes to serde_json, which decides and explains.
//! So this path may only ever *accept less* than serde_json, never more or
//! differently; `tests::agrees_with_serde` checks that over generated
//! traffic decoded into one record, the fixtures and their mutations.

use crate::model::*;
use simd_json::prelude::*;
use simd_json::tape::Value as V;
use std::str::FromStr;

/// The fields of one object seen so far, a bit each: a second key of the
/// same name is a doubt, and so is a required field never seen.
#[derive(Default)]
struct Seen(u32);

impl Seen {
    /// Runs `fill` for field `bit` the first time it comes.
    fn first(&mut self, bit: u32, fill: impl FnOnce() -> Option<()>) -> Option<()> {
        if self.has(bit) {
            return None;
        }
        self.0 |= 1 << bit;
        fill()
    }

    fn has(&self, bit: u32) -> bool {
        self.0 & (1 << bit) != 0
    }

    /// Fields `0..n` (the required ones come first) were all seen.
    fn first_n(&self, n: u32) -> Option<()> {
        let all = (1 << n) - 1;
        (self.0 & all == all).then_some(())
    }
}

/// A string into `slot`, in its old allocation.
fn text(slot: &mut String, v: V<'_, '_>) -> Option<()> {
    let s = v.as_str()?;
    slot.clear();
    slot.push_str(s);
    Some(())
}

/// A nullable string into `slot`, in its old allocation if it had one.
fn nullable_text(slot: &mut Option<String>, v: V<'_, '_>) -> Option<()> {
    if v.is_null() {
        *slot = None;
        return Some(());
    }
    text(slot.get_or_insert_with(String::new), v)
}

/// A nullable value: null is `None`; a wrong type is a doubt.
fn nullable<T>(
    slot: &mut Option<T>,
    v: V<'_, '_>,
    f: impl FnOnce(V<'_, '_>) -> Option<T>,
) -> Option<()> {
    *slot = if v.is_null() { None } else { Some(f(v)?) };
    Some(())
}

/// A nullable object into `slot`, in its old allocations if it had one.
fn nullable_object<T>(
    slot: &mut Option<T>,
    v: V<'_, '_>,
    blank: fn() -> T,
    fill: fn(V<'_, '_>, &mut T) -> Option<()>,
) -> Option<()> {
    if v.is_null() {
        *slot = None;
        return Some(());
    }
    fill(v, slot.get_or_insert_with(blank))
}

fn parse<T: FromStr>(slot: &mut T, v: V<'_, '_>) -> Option<()> {
    *slot = v.as_str()?.parse().ok()?;
    Some(())
}

/// An integer. Zero is a doubt: the tape cannot tell `0` from `-0`, which
/// serde_json reads as the float -0.0 and refuses for an integer field
/// (found by the `json` fuzz target).
fn int<T: TryFrom<i64>>(v: V<'_, '_>) -> Option<T> {
    v.as_i64()
        .filter(|&i| i != 0)
        .and_then(|i| T::try_from(i).ok())
}

fn put<T>(slot: &mut T, value: Option<T>) -> Option<()> {
    *slot = value?;
    Some(())
}

pub(super) fn event(v: V<'_, '_>, e: &mut DataSharingEvent) -> Option<()> {
    let mut seen = Seen::default();
    for (k, v) in v.as_object()?.iter() {
        match k {
            // Required: bits 0 to 10.
            "event_id" => seen.first(0, || text(&mut e.event_id, v))?,
            "occurred_at" => seen.first(1, || {
                put(
                    &mut e.occurred_at,
                    Timestamp::parse_rfc3339(v.as_str()?).ok(),
                )
            })?,
            "source_service" => seen.first(2, || text(&mut e.source_service, v))?,
            "flow" => seen.first(3, || parse(&mut e.flow, v))?,
            "subject" => seen.first(4, || subject(v, &mut e.subject))?,
            "recipient" => seen.first(5, || recipient(v, &mut e.recipient))?,
            "purpose" => seen.first(6, || parse(&mut e.purpose, v))?,
            "legal_basis" => seen.first(7, || parse(&mut e.legal_basis, v))?,
            "data" => seen.first(8, || items(v, &mut e.data))?,
            "record_count" => seen.first(9, || put(&mut e.record_count, int(v)))?,
            "transport" => seen.first(10, || transport(v, &mut e.transport))?,
            // Optional: bits 11 to 15.
            "order" => seen.first(11, || nullable_object(&mut e.order, v, Order::empty, order))?,
            "legal_document" => seen.first(12, || {
                nullable_object(
                    &mut e.legal_document,
                    v,
                    LegalDocument::empty,
                    legal_document,
                )
            })?,
            "files_encrypted" => {
                seen.first(13, || nullable(&mut e.files_encrypted, v, |v| v.as_bool()))?
            }
            "agreement_ref" => seen.first(14, || nullable_text(&mut e.agreement_ref, v))?,
            "consent_ref" => seen.first(15, || nullable_text(&mut e.consent_ref, v))?,
            _ => {}
        }
    }
    seen.first_n(11)?;
    if !seen.has(11) {
        e.order = None;
    }
    if !seen.has(12) {
        e.legal_document = None;
    }
    if !seen.has(13) {
        e.files_encrypted = None;
    }
    if !seen.has(14) {
        e.agreement_ref = None;
    }
    if !seen.has(15) {
        e.consent_ref = None;
    }
    Some(())
}

fn subject(v: V<'_, '_>, s: &mut Subject) -> Option<()> {
    let mut seen = Seen::default();
    for (k, v) in v.as_object()?.iter() {
        match k {
            "user_id" => seen.first(0, || text(&mut s.user_id, v))?,
            "role" => seen.first(1, || parse(&mut s.role, v))?,
            "age" => seen.first(2, || nullable(&mut s.age, v, int))?,
            "guardian_consent" => {
                seen.first(3, || nullable(&mut s.guardian_consent, v, |v| v.as_bool()))?
            }
            "third_party_authorized" => seen.first(4, || {
                nullable(&mut s.third_party_authorized, v, |v| v.as_bool())
            })?,
            _ => {}
        }
    }
    seen.first_n(2)?;
    if !seen.has(2) {
        s.age = None;
    }
    if !seen.has(3) {
        s.guardian_consent = None;
    }
    if !seen.has(4) {
        s.third_party_authorized = None;
    }
    Some(())
}

fn recipient(v: V<'_, '_>, r: &mut Recipient) -> Option<()> {
    let mut seen = Seen::default();
    for (k, v) in v.as_object()?.iter() {
        match k {
            "id" => seen.first(0, || text(&mut r.id, v))?,
            "category" => seen.first(1, || parse(&mut r.category, v))?,
            "region" => seen.first(2, || text(&mut r.region, v))?,
            "acting_for_merchant" => {
                seen.first(3, || nullable_text(&mut r.acting_for_merchant, v))?
            }
            _ => {}
        }
    }
    seen.first_n(3)?;
    if !seen.has(3) {
        r.acting_for_merchant = None;
    }
    Some(())
}

fn order(v: V<'_, '_>, o: &mut Order) -> Option<()> {
    let mut seen = Seen::default();
    for (k, v) in v.as_object()?.iter() {
        match k {
            "id" => seen.first(0, || text(&mut o.id, v))?,
            "type" => seen.first(1, || parse(&mut o.order_type, v))?,
            "merchant_id" => seen.first(2, || text(&mut o.merchant_id, v))?,
            "cash_on_delivery" => seen.first(3, || put(&mut o.cash_on_delivery, v.as_bool()))?,
            "insured" => seen.first(4, || put(&mut o.insured, v.as_bool()))?,
            _ => {}
        }
    }
    seen.first_n(3)?;
    if !seen.has(3) {
        o.cash_on_delivery = false;
    }
    if !seen.has(4) {
        o.insured = false;
    }
    Some(())
}

/// The data items, each in the place (and allocations) of the item there before.
fn items(v: V<'_, '_>, data: &mut Vec<DataItem>) -> Option<()> {
    let array = v.as_array()?;
    data.truncate(array.len());
    for (i, v) in array.iter().enumerate() {
        if i == data.len() {
            data.push(DataItem {
                field: String::new(),
                category: None,
                value: None,
            });
        }
        item(v, &mut data[i])?;
    }
    Some(())
}

fn item(v: V<'_, '_>, d: &mut DataItem) -> Option<()> {
    let mut seen = Seen::default();
    for (k, v) in v.as_object()?.iter() {
        match k {
            "field" => seen.first(0, || text(&mut d.field, v))?,
            "category" => seen.first(1, || nullable_text(&mut d.category, v))?,
            "value" => seen.first(2, || nullable_text(&mut d.value, v))?,
            _ => {}
        }
    }
    seen.first_n(1)?;
    if !seen.has(1) {
        d.category = None;
    }
    if !seen.has(2) {
        d.value = None;
    }
    Some(())
}

fn transport(v: V<'_, '_>, t: &mut Transport) -> Option<()> {
    let mut seen = Seen::default();
    for (k, v) in v.as_object()?.iter() {
        match k {
            "encrypted" => seen.first(0, || put(&mut t.encrypted, v.as_bool()))?,
            "protocol" => seen.first(1, || nullable_text(&mut t.protocol, v))?,
            _ => {}
        }
    }
    seen.first_n(1)?;
    if !seen.has(1) {
        t.protocol = None;
    }
    Some(())
}

fn legal_document(v: V<'_, '_>, d: &mut LegalDocument) -> Option<()> {
    let mut seen = Seen::default();
    for (k, v) in v.as_object()?.iter() {
        match k {
            "type" => seen.first(0, || text(&mut d.doc_type, v))?,
            "reference" => seen.first(1, || text(&mut d.reference, v))?,
            _ => {}
        }
    }
    seen.first_n(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::generate;

    fn fast(bytes: &[u8]) -> Option<DataSharingEvent> {
        let mut e = DataSharingEvent::empty();
        fast_into(bytes, &mut e).map(|()| e)
    }

    fn fast_into(bytes: &[u8], e: &mut DataSharingEvent) -> Option<()> {
        let mut buf = bytes.to_vec();
        let tape = simd_json::to_tape(&mut buf).ok()?;
        event(tape.as_value(), e)
    }

    fn serde(bytes: &[u8]) -> Option<DataSharingEvent> {
        serde_json::from_slice(bytes).ok()
    }

    /// The fast path accepts only what serde_json accepts, and reads it the
    /// same, into a fresh event and into one that held the full fixture
    /// (every optional field set, three items).
    fn agree(bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        if let Some(f) = fast(bytes) {
            assert_eq!(Some(f), serde(bytes), "{text}");
        }
        let mut full = fast(FULL.as_bytes()).expect("the fixture decodes");
        if fast_into(bytes, &mut full).is_some() {
            assert_eq!(
                Some(full),
                serde(bytes),
                "decoded into the full fixture: {text}"
            );
        }
    }

    const FULL: &str = include_str!("../../tests/fixtures/event-full.json");

    #[test]
    fn agrees_with_serde() {
        let mut lines: Vec<String> = generate::events(&generate::Options::default(), 2000)
            .iter()
            .map(|g| serde_json::to_string(&g.event).unwrap())
            .collect();
        lines.push(FULL.to_owned());
        // One event decoded into, over and over, as a stream does: nothing of
        // a record may stay behind in the next (the traffic mixes orders,
        // legal documents, consent refs, ages and values present and absent).
        let mut reused = DataSharingEvent::empty();
        for line in &lines {
            let f = fast(line.as_bytes());
            assert!(f.is_some(), "a valid event takes the fast path: {line}");
            assert_eq!(f, serde(line.as_bytes()), "{line}");
            assert!(fast_into(line.as_bytes(), &mut reused).is_some());
            assert_eq!(
                Some(&reused),
                f.as_ref(),
                "decoded into the last event: {line}"
            );
        }
        // Mutations: each must either be refused by the fast path or read as serde reads it.
        let base = &lines[lines.len() - 1];
        let compact: serde_json::Value = serde_json::from_str(base).unwrap();
        let base = compact.to_string();
        let mutations = [
            (r#""record_count":1"#, r#""record_count":1.0"#),
            (r#""record_count":1"#, r#""record_count":-7"#),
            (
                r#""record_count":1"#,
                r#""record_count":99999999999999999999"#,
            ),
            (r#""record_count":1"#, r#""record_count":"1""#),
            (r#""age":34"#, r#""age":9999999999"#),
            (r#""age":34"#, r#""age":null"#),
            (r#""age":34"#, r#""age":34.5"#),
            (r#""flow":"share""#, r#""flow":"Share""#),
            (r#""flow":"share""#, r#""flow":null"#),
            (r#""event_id":"#, r#""event_id":"dup","event_id":"#),
            (r#""order":{"#, r#""order":null,"x":{"#),
            (r#""cash_on_delivery":true"#, r#""cash_on_delivery":null"#),
            (r#","insured":false"#, ""),
            (r#""encrypted":true"#, r#""encrypted":"yes""#),
            (r#""data":["#, r#""data":[null,"#),
            (r#""files_encrypted":true"#, r#""files_encrypted":1"#),
            (
                r#""occurred_at":"2026-11-20T10:15:30.123+08:00""#,
                r#""occurred_at":"2026-11-20 02:15:30""#,
            ),
            (r#""region":"CN""#, r#""region":"C\u004e""#),
            (
                r#""legal_document":{"reference":"L-1","type":"subpoena"}"#,
                r#""legal_document":{"type":"subpoena"}"#,
            ),
            (r#""source_service":"order-fulfilment","#, ""),
            (r#""consent_ref":"c-9""#, r#""consent_ref":{"a":1}"#),
        ];
        for (from, to) in mutations {
            assert!(base.contains(from), "{from} not in {base}");
            agree(base.replacen(from, to, 1).as_bytes());
        }
        // Optional fields left out (renamed away), fewer items, nulls: the fast
        // path takes each, and reads it as serde does into an event that held
        // them all.
        let absent = [
            (r#""age":"#, r#""age_":"#),
            (r#""guardian_consent":"#, r#""guardian_consent_":"#),
            (
                r#""third_party_authorized":"#,
                r#""third_party_authorized_":"#,
            ),
            (r#""acting_for_merchant":"#, r#""acting_for_merchant_":"#),
            (r#""order":"#, r#""order_":"#),
            (r#""cash_on_delivery":"#, r#""cash_on_delivery_":"#),
            (r#""category":"contact"#, r#""category_":"contact"#),
            (r#""value":"张三""#, r#""value_":"张三""#),
            (r#""protocol":"#, r#""protocol_":"#),
            (r#""legal_document":"#, r#""legal_document_":"#),
            (r#""files_encrypted":"#, r#""files_encrypted_":"#),
            (r#""agreement_ref":"#, r#""agreement_ref_":"#),
            (r#""consent_ref":"#, r#""consent_ref_":"#),
            (
                r#",{"category":null,"field":"buyer_memo","value":null}"#,
                "",
            ),
            (r#""order":{"#, r#""order":null,"order_":{"#),
            (
                r#""agreement_ref":"dpa-2026-01""#,
                r#""agreement_ref":null"#,
            ),
        ];
        for (from, to) in absent {
            assert!(base.contains(from), "{from} not in {base}");
            let mutated = base.replacen(from, to, 1);
            assert!(fast(mutated.as_bytes()).is_some(), "{mutated}");
            agree(mutated.as_bytes());
        }
        // An escaped string is read as serde reads it.
        let escaped = base.replacen(r#""region":"CN""#, r#""region":"C\u004e""#, 1);
        assert_eq!(
            fast(escaped.as_bytes()).map(|e| e.recipient.region),
            Some("CN".to_owned())
        );
        assert!(fast(b"[1,2]").is_none() && fast(b"{}").is_none() && fast(b"null").is_none());
    }
}
