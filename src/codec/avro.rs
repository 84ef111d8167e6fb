//! The Avro wire form of the model (`schemas/*.avsc`).
//!
//! Model -> Avro is written out by hand (one function per record): explicit,
//! fast, and independent of serde's human-readable switch. Avro -> model
//! resolves the writer's schema against ours (so an older or newer producer
//! within the compatibility rules still decodes), then deserializes the
//! resolved value with serde, then validates it like a JSON record.

use super::DecodeError;
use crate::model::*;
use apache_avro::types::Value;
use apache_avro::{Schema, from_avro_datum, from_value, to_avro_datum};
use std::sync::OnceLock;

pub const EVENT_AVSC: &str = include_str!("../../schemas/DataSharingEvent.avsc");
pub const CONSENT_AVSC: &str = include_str!("../../schemas/ConsentState.avsc");
pub const VIOLATION_AVSC: &str = include_str!("../../schemas/Violation.avsc");
/// The violation's first schema (before `title_zh` and `detail_zh`): what
/// older replicas wrote, read back by `shareaudit report`.
pub const VIOLATION_V1_AVSC: &str = include_str!("../../schemas/history/Violation-v1.avsc");

/// The three schemas shareaudit reads and writes with, parsed once.
pub struct Schemas {
    pub event: Schema,
    pub consent: Schema,
    pub violation: Schema,
}

/// apache-avro's bound on one length read from input: the bytes of a string
/// (or `bytes`, `fixed`), and the item count of an array or map block,
/// which it reserves up front, at the size of a `Value` (about 50 bytes)
/// each. 1 MiB: an event is a few KB, and a record past Kafka's default
/// `message.max.bytes` (1 MB) cannot come anyway. At 64 MiB a 342-byte
/// record claiming an array of 72 million items made the decoder reserve
/// 3.4 GB (found by the `wire` fuzz target). Container blocks have their
/// own bound (`container::MAX_BLOCK`).
pub const MAX_ALLOCATION: usize = 1024 * 1024;

/// The schemas compiled into the binary. They are tested to parse, so a
/// failure here is a build defect, reported as an error all the same.
/// Every Avro decode goes through here first, which also sets apache-avro's
/// allocation bound (`MAX_ALLOCATION`).
pub fn schemas() -> Result<&'static Schemas, DecodeError> {
    static SCHEMAS: OnceLock<Result<Schemas, String>> = OnceLock::new();
    SCHEMAS
        .get_or_init(|| {
            apache_avro::util::max_allocation_bytes(MAX_ALLOCATION);
            let parse = |name: &str, text: &str| {
                Schema::parse_str(text).map_err(|e| format!("{name}: {e}"))
            };
            Ok(Schemas {
                event: parse("DataSharingEvent.avsc", EVENT_AVSC)?,
                consent: parse("ConsentState.avsc", CONSENT_AVSC)?,
                violation: parse("Violation.avsc", VIOLATION_AVSC)?,
            })
        })
        .as_ref()
        .map_err(|e| DecodeError::Schema(e.clone()))
}

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn enum_value<T: Copy + Into<usize> + std::fmt::Display>(v: T) -> Value {
    // Avro symbol order is the enum's declaration order (tested).
    Value::Enum(u32::try_from(v.into()).unwrap_or(u32::MAX), v.to_string())
}

fn nullable<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(f(x))),
    }
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn strings<S: AsRef<str>>(items: &[S]) -> Value {
    Value::Array(items.iter().map(|s| string(s.as_ref())).collect())
}

pub fn event_to_value(e: &DataSharingEvent) -> Value {
    record(vec![
        ("event_id", string(&e.event_id)),
        (
            "occurred_at",
            Value::TimestampMillis(e.occurred_at.millis()),
        ),
        ("source_service", string(&e.source_service)),
        ("flow", enum_value(e.flow)),
        (
            "subject",
            record(vec![
                ("user_id", string(&e.subject.user_id)),
                ("role", enum_value(e.subject.role)),
                ("age", nullable(e.subject.age, Value::Int)),
                (
                    "guardian_consent",
                    nullable(e.subject.guardian_consent, Value::Boolean),
                ),
                (
                    "third_party_authorized",
                    nullable(e.subject.third_party_authorized, Value::Boolean),
                ),
            ]),
        ),
        (
            "recipient",
            record(vec![
                ("id", string(&e.recipient.id)),
                ("category", enum_value(e.recipient.category)),
                ("region", string(&e.recipient.region)),
                (
                    "acting_for_merchant",
                    nullable(e.recipient.acting_for_merchant.as_deref(), string),
                ),
            ]),
        ),
        ("purpose", enum_value(e.purpose)),
        ("legal_basis", enum_value(e.legal_basis)),
        (
            "order",
            nullable(e.order.as_ref(), |o| {
                record(vec![
                    ("id", string(&o.id)),
                    ("type", enum_value(o.order_type)),
                    ("merchant_id", string(&o.merchant_id)),
                    ("cash_on_delivery", Value::Boolean(o.cash_on_delivery)),
                    ("insured", Value::Boolean(o.insured)),
                ])
            }),
        ),
        (
            "data",
            Value::Array(
                e.data
                    .iter()
                    .map(|d| {
                        record(vec![
                            ("field", string(&d.field)),
                            ("category", nullable(d.category.as_deref(), string)),
                            ("value", nullable(d.value.as_deref(), string)),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("record_count", Value::Long(e.record_count)),
        (
            "transport",
            record(vec![
                ("encrypted", Value::Boolean(e.transport.encrypted)),
                (
                    "protocol",
                    nullable(e.transport.protocol.as_deref(), string),
                ),
            ]),
        ),
        (
            "legal_document",
            nullable(e.legal_document.as_ref(), |d| {
                record(vec![
                    ("type", string(&d.doc_type)),
                    ("reference", string(&d.reference)),
                ])
            }),
        ),
        (
            "files_encrypted",
            nullable(e.files_encrypted, Value::Boolean),
        ),
        (
            "agreement_ref",
            nullable(e.agreement_ref.as_deref(), string),
        ),
        ("consent_ref", nullable(e.consent_ref.as_deref(), string)),
    ])
}

pub fn consent_to_value(c: &ConsentState) -> Value {
    record(vec![
        ("user_id", string(&c.user_id)),
        ("updated_at", Value::TimestampMillis(c.updated_at.millis())),
        ("account_status", enum_value(c.account_status)),
        ("consent_withdrawn", Value::Boolean(c.consent_withdrawn)),
        (
            "withdrawn_purposes",
            Value::Array(
                c.withdrawn_purposes
                    .iter()
                    .map(|p| enum_value(*p))
                    .collect(),
            ),
        ),
        (
            "personalized_ads_opt_out",
            Value::Boolean(c.personalized_ads_opt_out),
        ),
        (
            "personalized_recommendation_opt_out",
            Value::Boolean(c.personalized_recommendation_opt_out),
        ),
        (
            "separate_consents",
            Value::Array(
                c.separate_consents
                    .iter()
                    .map(|s| {
                        record(vec![
                            ("scope", enum_value(s.scope)),
                            ("recipient_id", string(&s.recipient_id)),
                            ("purpose", nullable(s.purpose, enum_value)),
                            ("categories", strings(&s.categories)),
                            ("granted_at", Value::TimestampMillis(s.granted_at.millis())),
                            (
                                "withdrawn_at",
                                nullable(s.withdrawn_at, |t| Value::TimestampMillis(t.millis())),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "birth_date",
            nullable(c.birth_date, |d| Value::Date(d.days_since_epoch())),
        ),
        (
            "guardian_consent",
            nullable(c.guardian_consent, Value::Boolean),
        ),
    ])
}

pub fn violation_to_value(v: &Violation) -> Value {
    record(vec![
        ("alert_id", string(&v.alert_id)),
        ("rule_id", string(&v.rule_id)),
        ("clause", string(&v.clause)),
        ("severity", enum_value(v.severity)),
        ("title", string(&v.title)),
        ("title_zh", string(&v.title_zh)),
        ("detail", string(&v.detail)),
        ("detail_zh", string(&v.detail_zh)),
        ("event_id", string(&v.event_id)),
        (
            "occurred_at",
            Value::TimestampMillis(v.occurred_at.millis()),
        ),
        (
            "detected_at",
            Value::TimestampMillis(v.detected_at.millis()),
        ),
        ("recipient_id", string(&v.recipient_id)),
        ("recipient_category", enum_value(v.recipient_category)),
        ("recipient_region", string(&v.recipient_region)),
        ("purpose", enum_value(v.purpose)),
        ("legal_basis", enum_value(v.legal_basis)),
        ("flow", enum_value(v.flow)),
        ("categories", strings(&v.categories)),
        ("fields", strings(&v.fields)),
        ("subject_ref", string(&v.subject_ref)),
        ("record_count", Value::Long(v.record_count)),
        ("mode", enum_value(v.mode)),
        (
            "policy_version",
            record(vec![
                ("version", string(&v.policy_version.version)),
                ("hash", string(&v.policy_version.hash)),
            ]),
        ),
        (
            "source",
            nullable(v.source.as_ref(), |s| {
                record(vec![
                    ("topic", string(&s.topic)),
                    ("partition", Value::Int(s.partition)),
                    ("offset", Value::Long(s.offset)),
                ])
            }),
        ),
    ])
}

fn encode(schema: &Schema, value: Value) -> Result<Vec<u8>, DecodeError> {
    to_avro_datum(schema, value).map_err(|e| DecodeError::Avro(e.to_string()))
}

pub fn encode_event(e: &DataSharingEvent) -> Result<Vec<u8>, DecodeError> {
    encode(&schemas()?.event, event_to_value(e))
}

pub fn encode_consent(c: &ConsentState) -> Result<Vec<u8>, DecodeError> {
    encode(&schemas()?.consent, consent_to_value(c))
}

pub fn encode_violation(v: &Violation) -> Result<Vec<u8>, DecodeError> {
    encode(&schemas()?.violation, violation_to_value(v))
}

/// Reads one datum written with `writer`, resolved to `reader`.
///
/// Resolution is skipped when the writer's schema is the reader's: apache-avro
/// rebuilds the resolved schema on every call, which costs more than the decode.
fn decode_value(mut bytes: &[u8], writer: &Schema, reader: &Schema) -> Result<Value, DecodeError> {
    let reader = (!std::ptr::eq(writer, reader) && writer != reader).then_some(reader);
    let value = from_avro_datum(writer, &mut bytes, reader)
        .map_err(|e| DecodeError::Avro(e.to_string()))?;
    if !bytes.is_empty() {
        return Err(DecodeError::Avro(format!(
            "{} bytes left over after the record",
            bytes.len()
        )));
    }
    Ok(value)
}

/// Decodes an event datum written with `writer` (ours when `None`) and validates it.
pub fn decode_event(
    bytes: &[u8],
    writer: Option<&Schema>,
) -> Result<DataSharingEvent, DecodeError> {
    let s = schemas()?;
    event_from_value(&decode_value(bytes, writer.unwrap_or(&s.event), &s.event)?)
}

pub fn decode_consent(bytes: &[u8], writer: Option<&Schema>) -> Result<ConsentState, DecodeError> {
    let s = schemas()?;
    consent_from_value(&decode_value(
        bytes,
        writer.unwrap_or(&s.consent),
        &s.consent,
    )?)
}

pub fn decode_violation(bytes: &[u8], writer: Option<&Schema>) -> Result<Violation, DecodeError> {
    let s = schemas()?;
    from_value(&decode_value(
        bytes,
        writer.unwrap_or(&s.violation),
        &s.violation,
    )?)
    .map_err(|e| DecodeError::Avro(e.to_string()))
}

/// An event from an Avro value already resolved to our schema.
pub fn event_from_value(v: &Value) -> Result<DataSharingEvent, DecodeError> {
    let e: DataSharingEvent = from_value(v).map_err(|e| DecodeError::Avro(e.to_string()))?;
    e.problems().into_result().map_err(DecodeError::Invalid)?;
    Ok(e)
}

pub fn consent_from_value(v: &Value) -> Result<ConsentState, DecodeError> {
    let c: ConsentState = from_value(v).map_err(|e| DecodeError::Avro(e.to_string()))?;
    c.problems().into_result().map_err(DecodeError::Invalid)?;
    Ok(c)
}

/// An event datum as apache-avro reads it, not validated: the reference
/// the direct decoder (`datum`) is held to.
pub fn read_event(bytes: &[u8], writer: &Schema) -> Result<DataSharingEvent, DecodeError> {
    let v = decode_value(bytes, writer, &schemas()?.event)?;
    from_value(&v).map_err(|e| DecodeError::Avro(e.to_string()))
}

/// A consent datum as apache-avro reads it, not validated.
pub fn read_consent(bytes: &[u8], writer: &Schema) -> Result<ConsentState, DecodeError> {
    let v = decode_value(bytes, writer, &schemas()?.consent)?;
    from_value(&v).map_err(|e| DecodeError::Avro(e.to_string()))
}

/// Parses a writer schema from outside (a registry's answer, a container
/// file's header, a schema file). apache-avro 0.21 panics on a named type
/// whose name is not an Avro name (`Name::parse` unwraps; found by the
/// `avro` fuzz target): names are checked first, and a panic that still
/// comes out of the parser is caught and is an error like any other.
pub fn parse_schema(text: &str) -> Result<Schema, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    bad_name(&value).map_or(Ok(()), |name| {
        Err(format!(
            "invalid schema name {:?}: it must be an Avro name (letters, digits and _, dot-separated)",
            crate::model::redact(name)
        ))
    })?;
    std::panic::catch_unwind(|| Schema::parse(&value))
        .map_err(|_| "apache-avro failed on this schema".to_owned())?
        .map_err(|e| e.to_string())
}

/// The first name of a named type (record, enum, fixed) that is not an
/// Avro name, anywhere in `v`.
fn bad_name(v: &serde_json::Value) -> Option<&str> {
    use serde_json::Value as J;
    fn avro_name(s: &str) -> bool {
        s.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    }
    match v {
        J::Object(o) => {
            let named = matches!(
                o.get("type").and_then(J::as_str),
                Some("record" | "error" | "enum" | "fixed")
            );
            if named
                && let Some(J::String(name)) = o.get("name")
                && !avro_name(name)
            {
                return Some(name);
            }
            o.values().find_map(bad_name)
        }
        J::Array(a) => a.iter().find_map(bad_name),
        _ => None,
    }
}

/// Whether a writer schema may be used: it contains no type that contains
/// itself, and our event or consent reader schema can read what it writes
/// (Avro's resolution rules). The registry decides it once per id; a
/// container file, once per file.
pub fn usable_writer(writer: &Schema) -> Result<(), &'static str> {
    if recursive(writer, &mut Vec::new()) {
        return Err("recursive: a named type contains itself");
    }
    if weightless_items(writer) {
        return Err("unbounded: an array of items written in zero bytes");
    }
    let ours = schemas().map_err(|_| "our schemas do not parse")?;
    use apache_avro::schema_compatibility::SchemaCompatibility;
    let readable = SchemaCompatibility::can_read(writer, &ours.event).is_ok()
        || SchemaCompatibility::can_read(writer, &ours.consent).is_ok();
    if readable {
        Ok(())
    } else {
        Err("foreign: neither our event nor our consent schema can read it")
    }
}

/// Whether `s` holds an array whose items take no bytes (null, a fixed of
/// size 0, a record of such fields): a few bytes could then claim, and
/// make the decoder build, millions of items. Every other item takes at
/// least a byte, so the items decoded are bounded by the record's size.
fn weightless_items(s: &Schema) -> bool {
    fn weightless(s: &Schema) -> bool {
        match s {
            Schema::Null => true,
            Schema::Fixed(f) => f.size == 0,
            Schema::Record(r) => r.fields.iter().all(|f| weightless(&f.schema)),
            _ => false,
        }
    }
    match s {
        Schema::Array(a) => weightless(&a.items) || weightless_items(&a.items),
        Schema::Map(m) => weightless_items(&m.types),
        Schema::Record(r) => r.fields.iter().any(|f| weightless_items(&f.schema)),
        Schema::Union(u) => u.variants().iter().any(weightless_items),
        _ => false,
    }
}

/// Whether `s` refers to a record it is nested in (`within`: the names of
/// the records around it).
fn recursive(s: &Schema, within: &mut Vec<apache_avro::schema::Name>) -> bool {
    match s {
        Schema::Ref { name } => within.contains(name),
        Schema::Record(r) => {
            within.push(r.name.clone());
            let found = r.fields.iter().any(|f| recursive(&f.schema, within));
            within.pop();
            found
        }
        Schema::Array(a) => recursive(&a.items, within),
        Schema::Map(m) => recursive(&m.types, within),
        Schema::Union(u) => u.variants().iter().any(|v| recursive(v, within)),
        _ => false,
    }
}

/// The records of an Avro object container file, each resolved to `reader`
/// (`container.rs`: every size bounded). A record that cannot be read is an
/// `Err` item; reading goes on. A file whose writer schema is not usable
/// (`usable_writer`) is refused whole.
pub fn container_values<'a>(
    bytes: &'a [u8],
    reader: &'a Schema,
) -> Result<impl Iterator<Item = Result<Value, DecodeError>> + 'a, DecodeError> {
    schemas()?;
    let records = super::container::records(bytes, reader)?;
    usable_writer(records.writer()).map_err(|why| {
        DecodeError::Schema(format!("the file's writer schema is refused: {why}"))
    })?;
    Ok(records)
}

/// Writes values into an Avro object container file (for examples and tests).
pub fn write_container(
    schema: &Schema,
    values: impl IntoIterator<Item = Value>,
) -> Result<Vec<u8>, DecodeError> {
    let mut w = apache_avro::Writer::new(schema, Vec::new());
    for v in values {
        w.append(v).map_err(|e| DecodeError::Avro(e.to_string()))?;
    }
    w.into_inner().map_err(|e| DecodeError::Avro(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::json;

    const EVENT: &str = include_str!("../../tests/fixtures/event-full.json");
    const CONSENT: &str = include_str!("../../tests/fixtures/consent-full.json");
    const VIOLATION: &str = include_str!("../../tests/fixtures/violation-full.json");

    fn symbols(schema: &serde_json::Value, name: &str) -> Vec<String> {
        // Finds the named enum anywhere in a schema's JSON.
        fn find<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
            match v {
                serde_json::Value::Object(o) => {
                    if o.get("type").and_then(|t| t.as_str()) == Some("enum")
                        && o.get("name").and_then(|n| n.as_str()) == Some(name)
                    {
                        return o.get("symbols");
                    }
                    o.values().find_map(|x| find(x, name))
                }
                serde_json::Value::Array(a) => a.iter().find_map(|x| find(x, name)),
                _ => None,
            }
        }
        find(schema, name)
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default()
    }

    #[test]
    fn schemas_parse_and_their_enums_match_the_model() {
        schemas().unwrap();
        let ev: serde_json::Value = serde_json::from_str(EVENT_AVSC).unwrap();
        let names = |all: &[&str]| all.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            symbols(&ev, "Flow"),
            names(&Flow::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>())
        );
        assert_eq!(
            symbols(&ev, "Purpose"),
            names(&Purpose::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>())
        );
        assert_eq!(
            symbols(&ev, "LegalBasis"),
            names(
                &LegalBasis::ALL
                    .iter()
                    .map(|v| v.as_str())
                    .collect::<Vec<_>>()
            )
        );
        assert_eq!(
            symbols(&ev, "RecipientCategory"),
            names(
                &RecipientCategory::ALL
                    .iter()
                    .map(|v| v.as_str())
                    .collect::<Vec<_>>()
            )
        );
        assert_eq!(
            symbols(&ev, "OrderType"),
            names(
                &OrderType::ALL
                    .iter()
                    .map(|v| v.as_str())
                    .collect::<Vec<_>>()
            )
        );
        assert_eq!(
            symbols(&ev, "Role"),
            names(&Role::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>())
        );
        let c: serde_json::Value = serde_json::from_str(CONSENT_AVSC).unwrap();
        assert_eq!(
            symbols(&c, "ConsentScope"),
            names(
                &ConsentScope::ALL
                    .iter()
                    .map(|v| v.as_str())
                    .collect::<Vec<_>>()
            )
        );
        let v: serde_json::Value = serde_json::from_str(VIOLATION_AVSC).unwrap();
        assert_eq!(
            symbols(&v, "Severity"),
            names(&Severity::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>())
        );
        assert_eq!(
            symbols(&v, "Mode"),
            names(&Mode::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>())
        );
    }

    #[test]
    fn an_event_survives_json_model_avro_model() {
        let from_json = json::decode_event(EVENT.as_bytes()).unwrap();
        let bytes = encode_event(&from_json).unwrap();
        assert_eq!(decode_event(&bytes, None).unwrap(), from_json);
        // And one with every nullable field null.
        let mut bare = from_json.clone();
        bare.order = None;
        bare.legal_document = None;
        bare.subject.age = None;
        bare.data[0].category = None;
        bare.data[0].value = None;
        assert_eq!(
            decode_event(&encode_event(&bare).unwrap(), None).unwrap(),
            bare
        );
    }

    #[test]
    fn a_consent_state_survives_json_model_avro_model() {
        let from_json = json::decode_consent(CONSENT.as_bytes()).unwrap();
        assert!(from_json.birth_date.is_some() && !from_json.separate_consents.is_empty());
        let bytes = encode_consent(&from_json).unwrap();
        assert_eq!(decode_consent(&bytes, None).unwrap(), from_json);
    }

    #[test]
    fn a_violation_survives_json_model_avro_model() {
        let from_json: Violation = serde_json::from_str(VIOLATION).unwrap();
        let bytes = encode_violation(&from_json).unwrap();
        assert_eq!(decode_violation(&bytes, None).unwrap(), from_json);
        let mut offline = from_json.clone();
        offline.source = None;
        assert_eq!(
            decode_violation(&encode_violation(&offline).unwrap(), None).unwrap(),
            offline
        );
    }

    #[test]
    fn violations_in_both_languages_and_readers_of_the_first_schema_understand_each_other() {
        let v1 = Schema::parse_str(VIOLATION_V1_AVSC).unwrap();
        let ours = &schemas().unwrap().violation;
        let full: Violation = serde_json::from_str(VIOLATION).unwrap();
        assert!(!full.title_zh.is_empty() && !full.detail_zh.is_empty());
        // An old reader of a new violation: both Chinese fields skipped.
        let new_bytes = encode_violation(&full).unwrap();
        let old_read = from_avro_datum(ours, &mut &new_bytes[..], Some(&v1)).unwrap();
        let Value::Record(fields) = &old_read else {
            panic!("{old_read:?}")
        };
        assert!(fields.iter().all(|(k, _)| !k.ends_with("_zh")));
        assert!(fields.contains(&("title".to_owned(), Value::String(full.title.clone()))));
        // A new reader of an old violation: the Chinese fields empty.
        let Value::Record(mut old_fields) = violation_to_value(&full) else {
            panic!()
        };
        old_fields.retain(|(k, _)| !k.ends_with("_zh"));
        let old_bytes = to_avro_datum(&v1, Value::Record(old_fields)).unwrap();
        let read = decode_violation(&old_bytes, Some(&v1)).unwrap();
        let mut expected = full.clone();
        expected.title_zh.clear();
        expected.detail_zh.clear();
        assert_eq!(read, expected);
        // And JSON of the first version: the same.
        let mut old_json: serde_json::Value = serde_json::from_str(VIOLATION).unwrap();
        let obj = old_json.as_object_mut().unwrap();
        obj.remove("title_zh");
        obj.remove("detail_zh");
        assert_eq!(
            serde_json::from_value::<Violation>(old_json).unwrap(),
            expected
        );
    }

    #[test]
    fn an_older_producer_schema_still_decodes() {
        // A producer that predates `consent_ref` and `files_encrypted`: the
        // reader's defaults (null) fill them in.
        let mut old: serde_json::Value = serde_json::from_str(EVENT_AVSC).unwrap();
        let fields = old["fields"].as_array_mut().unwrap();
        fields.retain(|f| f["name"] != "consent_ref" && f["name"] != "files_encrypted");
        let old_schema = Schema::parse_str(&old.to_string()).unwrap();
        let mut e = json::decode_event(EVENT.as_bytes()).unwrap();
        let Value::Record(mut fields) = event_to_value(&e) else {
            panic!()
        };
        fields.retain(|(k, _)| k != "consent_ref" && k != "files_encrypted");
        let bytes = to_avro_datum(&old_schema, Value::Record(fields)).unwrap();
        e.consent_ref = None;
        e.files_encrypted = None;
        assert_eq!(decode_event(&bytes, Some(&old_schema)).unwrap(), e);
    }

    #[test]
    fn garbage_and_invalid_records_are_errors_not_panics() {
        assert!(decode_event(&[0xff, 0x01, 0x02], None).is_err());
        assert!(decode_event(&[], None).is_err());
        let mut e = json::decode_event(EVENT.as_bytes()).unwrap();
        e.record_count = -3;
        let err = decode_event(&encode_event(&e).unwrap(), None).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid(_)), "{err}");
    }

    #[test]
    fn container_files_round_trip() {
        let e = json::decode_event(EVENT.as_bytes()).unwrap();
        let s = schemas().unwrap();
        let file = write_container(&s.event, [event_to_value(&e), event_to_value(&e)]).unwrap();
        let back: Vec<_> = container_values(&file[..], &s.event)
            .unwrap()
            .map(|v| event_from_value(&v.unwrap()).unwrap())
            .collect();
        assert_eq!(back, vec![e.clone(), e]);
    }

    /// A container file's header, then a block that claims `claimed` bytes.
    fn claiming(schema: &Schema, value: Value, claimed: i64) -> Vec<u8> {
        let file = write_container(schema, [value]).unwrap();
        let sync = &file[file.len() - 16..];
        let header_end = file.windows(16).position(|w| w == sync).unwrap() + 16;
        let mut out = file[..header_end].to_vec();
        let zigzag = |n: i64, out: &mut Vec<u8>| {
            let mut z = ((n << 1) ^ (n >> 63)) as u64;
            loop {
                let b = (z & 0x7f) as u8;
                z >>= 7;
                if z == 0 {
                    out.push(b);
                    break;
                }
                out.push(b | 0x80);
            }
        };
        zigzag(1, &mut out);
        zigzag(claimed, &mut out);
        out.extend([0u8; 100]);
        out
    }

    #[test]
    fn a_container_block_claiming_500_mb_is_refused_not_allocated() {
        let s = schemas().unwrap();
        let e = crate::demo::generate::events(&crate::demo::generate::Options::default(), 1)
            .remove(0)
            .event;
        let bytes = claiming(&s.event, event_to_value(&e), 500_000_000);
        let mut values = container_values(&bytes[..], &s.event).unwrap();
        let err = values.next().unwrap().unwrap_err().to_string();
        assert!(
            err.contains("size at byte") && err.contains("is not between 0 and"),
            "{err}"
        );
    }

    #[test]
    fn a_record_claiming_millions_of_items_never_asks_for_more_than_a_bound() {
        // 342 bytes the `wire` fuzz target made: an array block claiming 72
        // million items, which apache-avro reserved up front (3.4 GB).
        let crash = include_bytes!("../../fuzz/corpus/wire/crash-array-count-8804a364");
        schemas().unwrap();
        let (decoded, largest) = crate::testalloc::largest_allocation(|| {
            crate::codec::wire::decode_event(
                crash,
                &crate::codec::wire::LocalSchemas::ours().unwrap(),
            )
        });
        assert!(decoded.is_err());
        assert!(largest < 64 << 20, "asked for {largest} bytes at once");
        // The same claim by hand: an array block of 2^30 strings in 5 bytes.
        let array = Schema::parse_str(r#"{"type":"array","items":"string"}"#).unwrap();
        let claim = [0x80, 0x80, 0x80, 0x80, 0x08];
        let (decoded, largest) =
            crate::testalloc::largest_allocation(|| decode_value(&claim, &array, &array));
        assert!(decoded.is_err());
        assert!(largest < 64 << 20, "asked for {largest} bytes at once");
    }

    #[test]
    fn a_writer_schema_with_an_array_of_weightless_items_is_refused() {
        for items in [
            r#""null""#,
            r#"{"type":"fixed","name":"Z","size":0}"#,
            r#"{"type":"record","name":"E","fields":[{"name":"n","type":"null"}]}"#,
            r#"{"type":"array","items":"null"}"#,
        ] {
            let text = EVENT_AVSC.replacen(
                r#""fields": ["#,
                &format!(
                    r#""fields": [{{"name":"extra","type":{{"type":"array","items":{items}}}}},"#
                ),
                1,
            );
            let writer = parse_schema(&text).unwrap();
            assert_eq!(
                usable_writer(&writer),
                Err("unbounded: an array of items written in zero bytes"),
                "{items}"
            );
        }
        // Items that take a byte or more are fine, and so is our own schema.
        let text = EVENT_AVSC.replacen(
            r#""fields": ["#,
            r#""fields": [{"name":"extra","type":{"type":"array","items":["null","int"]},"default":[]},"#,
            1,
        );
        assert_eq!(usable_writer(&parse_schema(&text).unwrap()), Ok(()));
    }

    #[test]
    fn a_schema_with_a_name_that_is_not_an_avro_name_is_an_error_not_a_panic() {
        // apache-avro 0.21 panicked on these (found by the `avro` fuzz target).
        for text in [
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"enum","name":"Or~er","symbols":["A"]}}]}"#,
            r#"{"type":"record","name":"7","fields":[]}"#,
            r#"{"type":"record","name":"a..b","fields":[]}"#,
            r#"{"type":"array","items":{"type":"fixed","name":"C?s","size":2}}"#,
        ] {
            let e = parse_schema(text).unwrap_err();
            assert!(e.contains("invalid schema name"), "{e}");
        }
        // A default apache-avro cannot put in canonical form: it panicked
        // inside the parser (found by the `avro` target); caught, an error.
        let input = include_bytes!("../../fuzz/corpus/avro/crash-default-canonical-939b0ec7");
        let schema = input.split(|&b| b == 0xff).next().unwrap();
        let text = std::str::from_utf8(schema).unwrap();
        assert!(
            std::panic::catch_unwind(|| Schema::parse_str(text)).is_err(),
            "apache-avro panics"
        );
        assert!(parse_schema(text).is_err());
        assert!(parse_schema(EVENT_AVSC).is_ok());
        assert!(parse_schema(r#"{"type":"record","name":"ns.R_1","fields":[]}"#).is_ok());
    }

    #[test]
    fn a_container_file_with_a_recursive_writer_schema_is_refused() {
        let nested = Schema::parse_str(
            r#"{"type":"record","name":"N","fields":[{"name":"next","type":["null","N"]}]}"#,
        )
        .unwrap();
        let value = Value::Record(vec![(
            "next".into(),
            Value::Union(0, Box::new(Value::Null)),
        )]);
        let file = write_container(&nested, [value]).unwrap();
        let s = schemas().unwrap();
        let err = container_values(&file[..], &s.event)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("recursive"), "{err}");
    }
}
