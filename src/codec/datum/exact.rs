//! The exact path: events written with our own schema, read field after
//! field in the schema's order, with no plan to consult.
//!
//! Nearly every event the daemon reads is written with the schema it reads
//! with. A plan then says "read each field into itself", yet following it
//! costs a dispatch per field (its step, our field, the op) that the
//! bytes do not need: a third of the decoder's instructions. Here the same
//! reads come one after another, with the same `Input` calls, so the same
//! bytes give the same event or the same error (`Bad`) on both paths; a
//! differential test holds them to it (`datum::tests`).
//!
//! The code below is written for one schema, `schemas/DataSharingEvent.avsc`
//! as its fingerprint [`EVENT_SCHEMA`] says. A writer schema takes this
//! path only when it is that schema, field for field (docs, aliases and
//! defaults aside, logical types included); when the schema file changes,
//! nothing takes it until this code and the fingerprint are brought along
//! (a test fails until then).

use super::{Bad, Input, Res, blocks, fresh_item};
use crate::model::*;
use apache_avro::Schema;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// SHA-256 of [`shape`] of the event schema the code below reads.
const EVENT_SCHEMA: &str = "f7970f9bd820aa985a61d9ad5e6da26a3f3e1370666e868a6d76dc6af519b5c2";

/// Whether records written with `writer` can be read on the exact path.
pub(super) fn is_our_event_schema(writer: &Schema) -> bool {
    fingerprint(writer).is_some_and(|f| f == EVENT_SCHEMA)
}

/// The hex SHA-256 of a schema's shape.
pub(super) fn fingerprint(schema: &Schema) -> Option<String> {
    let shape = serde_json::to_vec(&shape(serde_json::to_value(schema).ok()?)).ok()?;
    Some(format!("{:x}", Sha256::digest(&shape)))
}

/// A schema as JSON without what does not change how its records are
/// read (`doc`, `aliases`, `default`), keys sorted (whatever serde_json's
/// map keeps).
fn shape(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut kept: Vec<(String, Value)> = m
                .into_iter()
                .filter(|(k, _)| !matches!(k.as_str(), "doc" | "aliases" | "default"))
                .map(|(k, v)| (k, shape(v)))
                .collect();
            kept.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(kept.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(shape).collect()),
        v => v,
    }
}

/// One of our enum's symbols by its index (our schema lists them in the
/// model's order).
#[inline(always)]
fn symbol<T: Vocabulary>(i: &mut Input<'_>) -> Res<T> {
    let index = i.int()?;
    usize::try_from(index)
        .ok()
        .and_then(|x| T::ALL.get(x))
        .copied()
        .ok_or(Bad::Symbol {
            index: i64::from(index),
            of: T::ALL.len(),
        })
}

#[inline(always)]
fn string(i: &mut Input<'_>, out: &mut String) -> Res<()> {
    let s = i.str()?;
    out.clear();
    out.push_str(s);
    Ok(())
}

/// A `["null", T]` union's branch: whether the value is there.
#[inline(always)]
fn present(i: &mut Input<'_>) -> Res<bool> {
    match i.long()? {
        0 => Ok(false),
        1 => Ok(true),
        index => Err(Bad::Branch { index, of: 2 }),
    }
}

#[inline(always)]
fn nullable_string(i: &mut Input<'_>, out: &mut Option<String>) -> Res<()> {
    if present(i)? {
        string(i, out.get_or_insert_with(String::new))
    } else {
        *out = None;
        Ok(())
    }
}

#[inline(always)]
fn nullable_bool(i: &mut Input<'_>) -> Res<Option<bool>> {
    Ok(if present(i)? { Some(i.bool()?) } else { None })
}

/// An event datum's fields, in our schema's order.
pub(super) fn event(i: &mut Input<'_>, e: &mut DataSharingEvent) -> Res<()> {
    string(i, &mut e.event_id)?;
    e.occurred_at = Timestamp(i.long()?);
    string(i, &mut e.source_service)?;
    e.flow = symbol(i)?;

    let s = &mut e.subject;
    string(i, &mut s.user_id)?;
    s.role = symbol(i)?;
    s.age = if present(i)? { Some(i.int()?) } else { None };
    s.guardian_consent = nullable_bool(i)?;
    s.third_party_authorized = nullable_bool(i)?;

    let r = &mut e.recipient;
    string(i, &mut r.id)?;
    r.category = symbol(i)?;
    string(i, &mut r.region)?;
    nullable_string(i, &mut r.acting_for_merchant)?;

    e.purpose = symbol(i)?;
    e.legal_basis = symbol(i)?;

    if present(i)? {
        let o = e.order.get_or_insert_with(Order::empty);
        string(i, &mut o.id)?;
        o.order_type = symbol(i)?;
        string(i, &mut o.merchant_id)?;
        o.cash_on_delivery = i.bool()?;
        o.insured = i.bool()?;
    } else {
        e.order = None;
    }

    data(i, &mut e.data)?;
    e.record_count = i.long()?;

    e.transport.encrypted = i.bool()?;
    nullable_string(i, &mut e.transport.protocol)?;

    if present(i)? {
        let d = e.legal_document.get_or_insert_with(LegalDocument::empty);
        string(i, &mut d.doc_type)?;
        string(i, &mut d.reference)?;
    } else {
        e.legal_document = None;
    }
    e.files_encrypted = nullable_bool(i)?;
    nullable_string(i, &mut e.agreement_ref)?;
    nullable_string(i, &mut e.consent_ref)
}

/// The data items, into the items already there and fresh ones past
/// them, in blocks as the plan's `array` reads them.
fn data(i: &mut Input<'_>, out: &mut Vec<DataItem>) -> Res<()> {
    blocks(i, out, fresh_item, |i, d| {
        string(i, &mut d.field)?;
        nullable_string(i, &mut d.category)?;
        nullable_string(i, &mut d.value)
    })
}
