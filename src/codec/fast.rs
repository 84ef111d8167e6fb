//! The fast path of JSON decoding: simd-json's tape, walked straight into
//! the model, without serde's visitors.
//!
//! Each decoder takes the fields it knows and ignores the rest, as the serde
//! form does. It answers `None` at the first doubt (a missing required field,
//! a wrong type, an unknown enum value, a duplicate key, a null where a value
//! is required), and the caller then hands the record to serde_json, which
//! decides and explains. So this path may only ever *accept less* than
//! serde_json, never more or differently; `tests::agrees_with_serde`
//! checks that over generated traffic, the fixtures and their mutations.

use crate::model::*;
use simd_json::prelude::*;
use simd_json::tape::Value as V;
use std::str::FromStr;

/// Stores `value` in an empty `slot`; a second key of the same name is a doubt.
fn set<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value?);
    Some(())
}

fn string(v: V<'_, '_>) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn parse<T: FromStr>(v: V<'_, '_>) -> Option<T> {
    v.as_str()?.parse().ok()
}

fn int<T: TryFrom<i64>>(v: V<'_, '_>) -> Option<T> {
    v.as_i64().and_then(|i| T::try_from(i).ok())
}

fn timestamp(v: V<'_, '_>) -> Option<Timestamp> {
    Timestamp::parse_rfc3339(v.as_str()?).ok()
}

/// A nullable field: null is `Some(None)`, a value `Some(Some(x))`, a wrong type `None`.
fn nullable<T>(v: V<'_, '_>, f: impl FnOnce(V<'_, '_>) -> Option<T>) -> Option<Option<T>> {
    if v.is_null() {
        Some(None)
    } else {
        f(v).map(Some)
    }
}

pub(super) fn event(v: V<'_, '_>) -> Option<DataSharingEvent> {
    let (mut event_id, mut occurred_at, mut source_service, mut flow, mut subject, mut recipient) =
        (None, None, None, None, None, None);
    let (mut purpose, mut legal_basis, mut order, mut data, mut record_count, mut transport) =
        (None, None, None, None, None, None);
    let (mut legal_document, mut files_encrypted, mut agreement_ref, mut consent_ref) =
        (None, None, None, None);
    for (k, v) in v.as_object()?.iter() {
        match k {
            "event_id" => set(&mut event_id, string(v))?,
            "occurred_at" => set(&mut occurred_at, timestamp(v))?,
            "source_service" => set(&mut source_service, string(v))?,
            "flow" => set(&mut flow, parse(v))?,
            "subject" => set(&mut subject, self::subject(v))?,
            "recipient" => set(&mut recipient, self::recipient(v))?,
            "purpose" => set(&mut purpose, parse(v))?,
            "legal_basis" => set(&mut legal_basis, parse(v))?,
            "order" => set(&mut order, nullable(v, self::order))?,
            "data" => set(
                &mut data,
                v.as_array()?.iter().map(item).collect::<Option<Vec<_>>>(),
            )?,
            "record_count" => set(&mut record_count, int(v))?,
            "transport" => set(&mut transport, self::transport(v))?,
            "legal_document" => set(&mut legal_document, nullable(v, self::legal_document))?,
            "files_encrypted" => set(&mut files_encrypted, nullable(v, |v| v.as_bool()))?,
            "agreement_ref" => set(&mut agreement_ref, nullable(v, string))?,
            "consent_ref" => set(&mut consent_ref, nullable(v, string))?,
            _ => {}
        }
    }
    Some(DataSharingEvent {
        event_id: event_id?,
        occurred_at: occurred_at?,
        source_service: source_service?,
        flow: flow?,
        subject: subject?,
        recipient: recipient?,
        purpose: purpose?,
        legal_basis: legal_basis?,
        order: order.flatten(),
        data: data?,
        record_count: record_count?,
        transport: transport?,
        legal_document: legal_document.flatten(),
        files_encrypted: files_encrypted.flatten(),
        agreement_ref: agreement_ref.flatten(),
        consent_ref: consent_ref.flatten(),
    })
}

fn subject(v: V<'_, '_>) -> Option<Subject> {
    let (mut user_id, mut role, mut age, mut guardian, mut authorized) =
        (None, None, None, None, None);
    for (k, v) in v.as_object()?.iter() {
        match k {
            "user_id" => set(&mut user_id, string(v))?,
            "role" => set(&mut role, parse(v))?,
            "age" => set(&mut age, nullable(v, int))?,
            "guardian_consent" => set(&mut guardian, nullable(v, |v| v.as_bool()))?,
            "third_party_authorized" => set(&mut authorized, nullable(v, |v| v.as_bool()))?,
            _ => {}
        }
    }
    Some(Subject {
        user_id: user_id?,
        role: role?,
        age: age.flatten(),
        guardian_consent: guardian.flatten(),
        third_party_authorized: authorized.flatten(),
    })
}

fn recipient(v: V<'_, '_>) -> Option<Recipient> {
    let (mut id, mut category, mut region, mut acting) = (None, None, None, None);
    for (k, v) in v.as_object()?.iter() {
        match k {
            "id" => set(&mut id, string(v))?,
            "category" => set(&mut category, parse(v))?,
            "region" => set(&mut region, string(v))?,
            "acting_for_merchant" => set(&mut acting, nullable(v, string))?,
            _ => {}
        }
    }
    Some(Recipient {
        id: id?,
        category: category?,
        region: region?,
        acting_for_merchant: acting.flatten(),
    })
}

fn order(v: V<'_, '_>) -> Option<Order> {
    let (mut id, mut order_type, mut merchant_id, mut cod, mut insured) =
        (None, None, None, None, None);
    for (k, v) in v.as_object()?.iter() {
        match k {
            "id" => set(&mut id, string(v))?,
            "type" => set(&mut order_type, parse(v))?,
            "merchant_id" => set(&mut merchant_id, string(v))?,
            "cash_on_delivery" => set(&mut cod, v.as_bool())?,
            "insured" => set(&mut insured, v.as_bool())?,
            _ => {}
        }
    }
    Some(Order {
        id: id?,
        order_type: order_type?,
        merchant_id: merchant_id?,
        cash_on_delivery: cod.unwrap_or(false),
        insured: insured.unwrap_or(false),
    })
}

fn item(v: V<'_, '_>) -> Option<DataItem> {
    let (mut field, mut category, mut value) = (None, None, None);
    for (k, v) in v.as_object()?.iter() {
        match k {
            "field" => set(&mut field, string(v))?,
            "category" => set(&mut category, nullable(v, string))?,
            "value" => set(&mut value, nullable(v, string))?,
            _ => {}
        }
    }
    Some(DataItem {
        field: field?,
        category: category.flatten(),
        value: value.flatten(),
    })
}

fn transport(v: V<'_, '_>) -> Option<Transport> {
    let (mut encrypted, mut protocol) = (None, None);
    for (k, v) in v.as_object()?.iter() {
        match k {
            "encrypted" => set(&mut encrypted, v.as_bool())?,
            "protocol" => set(&mut protocol, nullable(v, string))?,
            _ => {}
        }
    }
    Some(Transport {
        encrypted: encrypted?,
        protocol: protocol.flatten(),
    })
}

fn legal_document(v: V<'_, '_>) -> Option<LegalDocument> {
    let (mut doc_type, mut reference) = (None, None);
    for (k, v) in v.as_object()?.iter() {
        match k {
            "type" => set(&mut doc_type, string(v))?,
            "reference" => set(&mut reference, string(v))?,
            _ => {}
        }
    }
    Some(LegalDocument {
        doc_type: doc_type?,
        reference: reference?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate;

    fn fast(bytes: &[u8]) -> Option<DataSharingEvent> {
        let mut buf = bytes.to_vec();
        let tape = simd_json::to_tape(&mut buf).ok()?;
        event(tape.as_value())
    }

    fn serde(bytes: &[u8]) -> Option<DataSharingEvent> {
        serde_json::from_slice(bytes).ok()
    }

    /// The fast path accepts only what serde_json accepts, and reads it the same.
    fn agree(bytes: &[u8]) {
        if let Some(f) = fast(bytes) {
            assert_eq!(Some(f), serde(bytes), "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn agrees_with_serde() {
        let mut lines: Vec<String> = generate::events(&generate::Options::default(), 2000)
            .iter()
            .map(|g| serde_json::to_string(&g.event).unwrap())
            .collect();
        lines.push(include_str!("../../tests/fixtures/event-full.json").to_owned());
        for line in &lines {
            let f = fast(line.as_bytes());
            assert!(f.is_some(), "a valid event takes the fast path: {line}");
            assert_eq!(f, serde(line.as_bytes()), "{line}");
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
        // An escaped string is read as serde reads it.
        let escaped = base.replacen(r#""region":"CN""#, r#""region":"C\u004e""#, 1);
        assert_eq!(
            fast(escaped.as_bytes()).map(|e| e.recipient.region),
            Some("CN".to_owned())
        );
        assert!(fast(b"[1,2]").is_none() && fast(b"{}").is_none() && fast(b"null").is_none());
    }
}
