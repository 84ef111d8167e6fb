//! How a Kafka record's bytes are framed, told from its first bytes:
//!
//! - Confluent wire format: magic byte `0`, a 4-byte big-endian schema id,
//!   then an Avro datum written with that schema (resolved through a schema
//!   registry, or a local table of ids);
//! - Avro single-object encoding: `C3 01`, the writer schema's 8-byte
//!   CRC-64-AVRO (Rabin) fingerprint, then the datum;
//! - JSON: the first non-blank byte is `{`.
//!
//! The writer's schema is resolved against ours, so a producer on an older
//! or newer schema within Avro's compatibility rules still decodes.

use super::{DecodeError, avro, datum, json};
use crate::model::{ConsentState, DataSharingEvent, Violation};
use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// A record's framing, and the bytes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Confluent { schema_id: u32 },
    SingleObject { fingerprint: [u8; 8] },
    Json,
}

/// A violation as the daemon wrote it to the alert topic: JSON, or Avro
/// single-object encoded or Confluent-framed with our schema or its first
/// version (no registry is asked: a Confluent id is taken to be one of them).
pub fn decode_violation(bytes: &[u8]) -> Result<Violation, DecodeError> {
    static V1: std::sync::OnceLock<Option<Schema>> = std::sync::OnceLock::new();
    let v1 = V1
        .get_or_init(|| Schema::parse_str(avro::VIOLATION_V1_AVSC).ok())
        .as_ref();
    let ours = &avro::schemas()?.violation;
    match framing(bytes)? {
        (Framing::Json, body) => serde_json::from_slice(body).map_err(|e| DecodeError::Syntax {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        }),
        (Framing::SingleObject { fingerprint: fp }, body) => {
            if fp == fingerprint(ours) {
                avro::decode_violation(body, None)
            } else if let Some(v1) = v1.filter(|v1| fp == fingerprint(v1)) {
                avro::decode_violation(body, Some(v1))
            } else {
                Err(DecodeError::Framing(
                    "a violation written with a schema this shareaudit does not know".into(),
                ))
            }
        }
        (Framing::Confluent { .. }, body) => avro::decode_violation(body, None)
            .or_else(|e| v1.map_or(Err(e), |v1| avro::decode_violation(body, Some(v1)))),
    }
}

/// Tells the framing of `bytes` and returns the body after the header.
pub fn framing(bytes: &[u8]) -> Result<(Framing, &[u8]), DecodeError> {
    match bytes {
        [0, a, b, c, d, body @ ..] => Ok((
            Framing::Confluent {
                schema_id: u32::from_be_bytes([*a, *b, *c, *d]),
            },
            body,
        )),
        [0xC3, 0x01, f @ ..] if f.len() >= 8 => {
            let mut fp = [0u8; 8];
            fp.copy_from_slice(&f[..8]);
            Ok((Framing::SingleObject { fingerprint: fp }, &f[8..]))
        }
        _ if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => {
            Ok((Framing::Json, bytes))
        }
        [] => Err(DecodeError::Framing("empty record".into())),
        [first, ..] => Err(DecodeError::Framing(format!(
            "unknown framing: first byte {first:#04x} is neither the Confluent magic byte 0, the single-object marker C3 01, nor `{{`"
        ))),
    }
}

/// A writer schema and its records' decoding plans, compiled once when the
/// schema becomes known (`datum::Plan`): `None` where only apache-avro can
/// read it as ours.
pub struct Writer {
    pub schema: Schema,
    event: Option<datum::Plan>,
    consent: Option<datum::Plan>,
}

impl Writer {
    pub fn new(schema: Schema) -> Writer {
        Writer {
            event: datum::Plan::event(&schema),
            consent: datum::Plan::consent(&schema),
            schema,
        }
    }

    /// Whether the direct decoder reads this writer's events.
    pub fn direct_events(&self) -> bool {
        self.event.is_some()
    }

    /// Decodes an event datum written with this schema into `event`.
    pub fn decode_event_into(
        &self,
        datum: &[u8],
        event: &mut DataSharingEvent,
    ) -> Result<(), DecodeError> {
        match &self.event {
            Some(plan) => datum::decode_event_into(datum, plan, event),
            None => avro::decode_event(datum, Some(&self.schema)).map(|e| *event = e),
        }
    }

    /// Decodes a consent datum written with this schema.
    pub fn decode_consent(&self, datum: &[u8]) -> Result<ConsentState, DecodeError> {
        match &self.consent {
            Some(plan) => datum::decode_consent(datum, plan),
            None => avro::decode_consent(datum, Some(&self.schema)),
        }
    }
}

/// Where writer schemas are found: by Confluent schema id, by fingerprint.
pub trait SchemaLookup {
    /// `Ok(None)`: no such id. `Err`: the lookup itself failed (registry down):
    /// the record is not a dead letter, the pipeline must retry.
    fn by_id(&self, id: u32) -> Result<Option<Arc<Writer>>, DecodeError>;
    fn by_fingerprint(&self, fingerprint: &[u8; 8]) -> Option<Arc<Writer>>;
}

/// Schemas known without a registry: ours, by fingerprint, and any ids an
/// operator maps to schema files.
#[derive(Default)]
pub struct LocalSchemas {
    ids: FxHashMap<u32, Arc<Writer>>,
    fingerprints: FxHashMap<[u8; 8], Arc<Writer>>,
}

/// The Rabin fingerprint of a schema, as single-object headers carry it.
pub fn fingerprint(schema: &Schema) -> [u8; 8] {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    let mut fp = [0u8; 8];
    for (d, s) in fp.iter_mut().zip(bytes) {
        *d = s;
    }
    fp
}

impl LocalSchemas {
    /// Our event and consent schemas, known by their fingerprints.
    pub fn ours() -> Result<LocalSchemas, DecodeError> {
        let mut s = LocalSchemas::default();
        s.add_fingerprint(Arc::new(avro::schemas()?.event.clone()));
        s.add_fingerprint(Arc::new(avro::schemas()?.consent.clone()));
        Ok(s)
    }

    pub fn add_fingerprint(&mut self, schema: Arc<Schema>) {
        let writer = Arc::new(Writer::new(Schema::clone(&schema)));
        self.fingerprints.insert(fingerprint(&schema), writer);
    }

    /// Maps a Confluent schema id to a schema (and knows its fingerprint too).
    pub fn add_id(&mut self, id: u32, schema: Arc<Schema>) {
        let writer = Arc::new(Writer::new(Schema::clone(&schema)));
        self.fingerprints
            .insert(fingerprint(&schema), Arc::clone(&writer));
        self.ids.insert(id, writer);
    }
}

impl SchemaLookup for LocalSchemas {
    fn by_id(&self, id: u32) -> Result<Option<Arc<Writer>>, DecodeError> {
        Ok(self.ids.get(&id).cloned())
    }

    fn by_fingerprint(&self, fingerprint: &[u8; 8]) -> Option<Arc<Writer>> {
        self.fingerprints.get(fingerprint).cloned()
    }
}

/// Decodes an event in whichever framing it comes.
pub fn decode_event(
    bytes: &[u8],
    schemas: &dyn SchemaLookup,
) -> Result<DataSharingEvent, DecodeError> {
    let mut event = DataSharingEvent::empty();
    decode_event_into(bytes, schemas, &mut event).map(|()| event)
}

/// Decodes an event in whichever framing it comes into `event`, reusing its
/// allocations (JSON's fast path, and Avro's direct decoder where the
/// writer has a plan). On an error, `event` holds no meaningful record.
pub fn decode_event_into(
    bytes: &[u8],
    schemas: &dyn SchemaLookup,
    event: &mut DataSharingEvent,
) -> Result<(), DecodeError> {
    match framing(bytes)? {
        (Framing::Json, body) => json::decode_event_into(body, event),
        (Framing::Confluent { schema_id }, body) => match schemas.by_id(schema_id)? {
            Some(writer) => writer.decode_event_into(body, event),
            None => Err(DecodeError::UnknownSchema(format!("schema id {schema_id}"))),
        },
        (Framing::SingleObject { fingerprint }, body) => match schemas.by_fingerprint(&fingerprint)
        {
            Some(writer) => writer.decode_event_into(body, event),
            None => Err(DecodeError::UnknownSchema(format!(
                "fingerprint {}",
                crate::model::hex(&fingerprint)
            ))),
        },
    }
}

/// Decodes a consent state in whichever framing it comes (a tombstone, a
/// null value, is the caller's to handle: it has no bytes).
pub fn decode_consent(
    bytes: &[u8],
    schemas: &dyn SchemaLookup,
) -> Result<crate::model::ConsentState, DecodeError> {
    match framing(bytes)? {
        (Framing::Json, body) => json::decode_consent(body),
        (Framing::Confluent { schema_id }, body) => match schemas.by_id(schema_id)? {
            Some(writer) => writer.decode_consent(body),
            None => Err(DecodeError::UnknownSchema(format!("schema id {schema_id}"))),
        },
        (Framing::SingleObject { fingerprint }, body) => match schemas.by_fingerprint(&fingerprint)
        {
            Some(writer) => writer.decode_consent(body),
            None => Err(DecodeError::UnknownSchema(format!(
                "fingerprint {}",
                crate::model::hex(&fingerprint)
            ))),
        },
    }
}

/// Frames an Avro datum in the Confluent wire format.
pub fn confluent(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Frames an Avro datum in the single-object encoding.
pub fn single_object(schema: &Schema, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + datum.len());
    out.extend_from_slice(&[0xC3, 0x01]);
    out.extend_from_slice(&fingerprint(schema));
    out.extend_from_slice(datum);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::generate;

    fn event() -> DataSharingEvent {
        generate::events(&generate::Options::default(), 1)
            .remove(0)
            .event
    }

    /// `shareaudit report` reads what any replica wrote: JSON, Avro of this
    /// schema or of the first one, single-object or Confluent-framed.
    #[test]
    fn violations_are_read_back_in_every_form_a_replica_writes() {
        use crate::config::OutputFormat;
        let full: Violation =
            serde_json::from_str(include_str!("../../tests/fixtures/violation-full.json")).unwrap();
        for format in [
            OutputFormat::Json,
            OutputFormat::Avro { schema_id: None },
            OutputFormat::Avro { schema_id: Some(7) },
        ] {
            let bytes = super::super::encode_violation(&format, &full);
            assert_eq!(decode_violation(&bytes).unwrap(), full, "{format:?}");
        }
        // Written by a replica of the first schema.
        let v1 = Schema::parse_str(avro::VIOLATION_V1_AVSC).unwrap();
        let apache_avro::types::Value::Record(mut fields) = avro::violation_to_value(&full) else {
            panic!()
        };
        fields.retain(|(k, _)| !k.ends_with("_zh"));
        let datum =
            apache_avro::to_avro_datum(&v1, apache_avro::types::Value::Record(fields)).unwrap();
        let mut old = full.clone();
        old.title_zh.clear();
        old.detail_zh.clear();
        assert_eq!(decode_violation(&single_object(&v1, &datum)).unwrap(), old);
        assert_eq!(decode_violation(&confluent(3, &datum)).unwrap(), old);
        assert!(decode_violation(b"\xC3\x01\x01\x02\x03\x04\x05\x06\x07\x08xx").is_err());
        assert!(decode_violation(b"{\"alert_id\": 1}").is_err());
    }

    /// The daemon decodes every record into one event: nothing of a record
    /// may stay behind in the next, whatever the framings, and an error in
    /// between changes nothing for the record after it.
    #[test]
    fn records_decoded_into_one_event_equal_each_decoded_alone() {
        let mut local = LocalSchemas::ours().unwrap();
        local.add_id(7, Arc::new(avro::schemas().unwrap().event.clone()));
        let generated = generate::events(&generate::Options::default(), 400);
        let mut reused = DataSharingEvent::empty();
        let mut shapes = std::collections::BTreeSet::new();
        for (i, g) in generated.iter().enumerate() {
            let bytes = match i % 3 {
                0 => serde_json::to_vec(&g.event).unwrap(),
                1 => confluent(7, &avro::encode_event(&g.event).unwrap()),
                _ => b"{\"event_id\": 1}".to_vec(),
            };
            match (
                decode_event_into(&bytes, &local, &mut reused),
                decode_event(&bytes, &local),
            ) {
                (Ok(()), Ok(alone)) => {
                    assert_eq!(reused, alone, "record {i}");
                    assert_eq!(alone, g.event, "record {i}");
                    shapes.insert((
                        g.event.data.len(),
                        g.event.order.is_some(),
                        g.event.consent_ref.is_some(),
                    ));
                }
                (Err(a), Err(b)) => assert_eq!(a.class(), b.class(), "record {i}"),
                (a, b) => panic!("record {i}: into {a:?}, alone {:?}", b.map(|_| ())),
            }
        }
        // Records of different shapes followed each other: longer and
        // shorter data lists, with and without an order and a consent_ref.
        assert!(shapes.len() > 4, "{shapes:?}");
    }

    #[test]
    fn each_framing_is_told_from_the_first_bytes_and_decodes() {
        let e = event();
        let ours = &avro::schemas().unwrap().event;
        let datum = avro::encode_event(&e).unwrap();
        let mut local = LocalSchemas::ours().unwrap();
        local.add_id(7, Arc::new(ours.clone()));

        let c = confluent(7, &datum);
        assert_eq!(framing(&c).unwrap().0, Framing::Confluent { schema_id: 7 });
        assert_eq!(decode_event(&c, &local).unwrap(), e);

        let s = single_object(ours, &datum);
        assert_eq!(decode_event(&s, &local).unwrap(), e);

        let j = serde_json::to_vec(&e).unwrap();
        assert_eq!(framing(&j).unwrap().0, Framing::Json);
        assert_eq!(decode_event(&j, &local).unwrap(), e);
        let padded = [b"  \n".as_slice(), &j].concat();
        assert_eq!(decode_event(&padded, &local).unwrap(), e);
    }

    #[test]
    fn single_object_matches_apache_avro_s_own_writer() {
        let e = event();
        let ours = &avro::schemas().unwrap().event;
        let mut w = apache_avro::GenericSingleObjectWriter::new_with_capacity(ours, 1024).unwrap();
        let mut theirs = Vec::new();
        w.write_value(avro::event_to_value(&e), &mut theirs)
            .unwrap();
        assert_eq!(
            theirs,
            single_object(ours, &avro::encode_event(&e).unwrap())
        );
    }

    #[test]
    fn poison_is_classified_not_panicked_on() {
        let local = LocalSchemas::ours().unwrap();
        let e = event();
        let datum = avro::encode_event(&e).unwrap();
        let class = |b: &[u8]| decode_event(b, &local).unwrap_err().class();
        assert_eq!(class(b""), "framing");
        assert_eq!(class(&[0x17, 0x99, 0x01]), "framing", "random bytes");
        assert_eq!(class(&confluent(99, &datum)), "unknown_schema");
        assert_eq!(
            class(&[0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0]),
            "unknown_schema"
        );
        assert_eq!(class(&[0, 0, 0]), "framing", "too short for a schema id");
        let mut bad = e.clone();
        bad.record_count = 0;
        let mut local7 = LocalSchemas::ours().unwrap();
        local7.add_id(7, Arc::new(avro::schemas().unwrap().event.clone()));
        assert_eq!(
            decode_event(&confluent(7, &avro::encode_event(&bad).unwrap()), &local7)
                .unwrap_err()
                .class(),
            "invalid"
        );
        assert_eq!(
            decode_event(&confluent(7, &datum[..datum.len() / 2]), &local7)
                .unwrap_err()
                .class(),
            "avro"
        );
    }
}
