//! The fuzz targets: one function per decoder of untrusted bytes, each
//! taking whatever bytes it is given. A target panics only when a property
//! of ours breaks (the JSON fast path disagreeing with serde_json, a dead
//! letter that does not fit); anything else it is fed must end in `Ok` or a
//! clean `Err`. `fuzz/` runs them under AFL++ (`scripts/fuzz.sh`), the
//! tests replay the committed corpus (`fuzz/corpus/<target>/`) and the
//! property tests feed them generated input, so each runs in `cargo test`
//! too. FUZZING.md says what the campaigns ran and found.

use crate::audit::{AuditContext, Engine};
use crate::codec::{avro, json, wire};
use crate::consent::ConsentTable;
use crate::kafka::{Output, Record, escape_name};
use crate::model::{ConsentState, DataSharingEvent, Timestamp};
use std::sync::{Arc, LazyLock};

/// A fuzz target: any bytes in, a panic only when a property breaks.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary and corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("json", json_event),
    ("avro", avro_datum),
    ("wire", wire_framing),
    ("headers", headers),
    ("container", container),
    ("consent", consent),
    ("policy", policy),
    ("detectors", detectors),
];

/// A valid event, decoded first into the record the fuzzed bytes are then
/// decoded into: the fast path reuses what the last record left.
const TEMPLATE: &[u8] = include_bytes!("../../tests/fixtures/event-full.json");

/// Splits `data` at its first `0xff` byte (never part of UTF-8 text): the
/// head (a schema, a field name) and the rest.
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// The JSON fast path (one pass over the bytes into the model) must accept
/// and reject exactly what serde_json does, and build the same event,
/// whether it decodes into a fresh record or into one a valid event filled.
pub fn json_event(data: &[u8]) {
    let reference = json::decode_event_serde(data);
    let fresh = json::decode_event(data);
    let mut reused = json::decode_event(TEMPLATE).expect("the template decodes");
    let into = json::decode_event_into(data, &mut reused).map(|()| reused);
    for (path, got) in [("fresh", &fresh), ("reused", &into)] {
        match (&reference, got) {
            (Ok(want), Ok(got)) => {
                assert_eq!(want, got, "{path}: the fast path built another event")
            }
            (Err(_), Err(_)) => {}
            (want, got) => panic!(
                "{path}: serde_json says {:?}, the fast path {:?}",
                want.as_ref().map(|_| "ok").map_err(|e| e.class()),
                got.as_ref().map(|_| "ok").map_err(|e| e.class())
            ),
        }
    }
    if let Err(e) = fresh {
        let _ = e.to_string();
    }
}

/// An Avro datum with an arbitrary writer schema, as a registry would hand
/// it over (`schema JSON 0xff datum`): the schema is parsed and checked
/// (`usable_writer`, as the registry client does) and, if usable, event
/// and consent are decoded with it; the whole input is also decoded with
/// our own schemas. Wherever the direct decoder has a plan, it must read
/// as apache-avro reads (`same_reading`).
pub fn avro_datum(data: &[u8]) {
    let ours = match avro::schemas() {
        Ok(s) => s,
        Err(_) => return,
    };
    let (schema, datum) = split(data);
    if let Ok(text) = std::str::from_utf8(schema)
        && let Ok(writer) = avro::parse_schema(text)
        && avro::usable_writer(&writer).is_ok()
    {
        let _ = avro::decode_event(datum, Some(&writer));
        let _ = avro::decode_consent(datum, Some(&writer));
        same_reading(datum, &writer);
    }
    let _ = avro::decode_event(data, None);
    let _ = avro::decode_consent(data, None);
    same_reading(data, &ours.event);
    same_reading(data, &ours.consent);
}

/// The direct decoder (`codec::datum`) against apache-avro on one datum:
/// what it accepts, apache-avro accepts with the same value; what
/// apache-avro refuses, it refuses. It may refuse more only where the
/// record ends early (apache-avro reads the end of input as null). With
/// our own event schema, the exact path against the plan, too.
pub fn same_reading(bytes: &[u8], writer: &apache_avro::Schema) {
    use crate::codec::datum::{self, Bad, Plan};
    fn agree<T: PartialEq + std::fmt::Debug>(
        ours: Result<T, Bad>,
        theirs: Result<T, crate::codec::DecodeError>,
    ) {
        match (ours, theirs) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "the direct decoder reads another value"),
            (Ok(_), Err(e)) => panic!("the direct decoder accepts what apache-avro refuses: {e}"),
            (Err(e), Ok(_)) if e != Bad::EndOfInput => {
                panic!("the direct decoder refuses ({e}) what apache-avro accepts")
            }
            _ => {}
        }
    }
    if let Some(plan) = Plan::event(writer) {
        let mut e = DataSharingEvent::empty();
        let exact = plan.is_exact();
        let read = datum::read_event(bytes, &plan, &mut e).map(|()| e);
        if exact {
            // Our own schema: the exact path, and the plan step by step,
            // give the same event or the same error.
            let mut p = DataSharingEvent::empty();
            let planned = plan.step_by_step();
            let by_plan = datum::read_event(bytes, &planned, &mut p).map(|()| p);
            assert_eq!(read, by_plan, "the exact path and the plan disagree");
        }
        agree(read, avro::read_event(bytes, writer));
    }
    if let Some(plan) = Plan::consent(writer) {
        let mut state = ConsentState::empty();
        agree(
            datum::read_consent(bytes, &plan, &mut state).map(|()| state),
            avro::read_consent(bytes, writer),
        );
    }
}

/// Our schemas by id 1 (event) and 2 (consent), and by fingerprint.
static LOCAL: LazyLock<wire::LocalSchemas> = LazyLock::new(|| {
    let mut local = wire::LocalSchemas::ours().expect("our schemas parse");
    let s = avro::schemas().expect("our schemas parse");
    local.add_id(1, Arc::new(s.event.clone()));
    local.add_id(2, Arc::new(s.consent.clone()));
    local
});

/// A record value in any framing (JSON, Confluent, single-object), decoded
/// as an event, as a consent state and as a violation.
pub fn wire_framing(data: &[u8]) {
    let _ = avro::schemas();
    let _ = wire::framing(data);
    let _ = wire::decode_event(data, &*LOCAL);
    let _ = wire::decode_consent(data, &*LOCAL);
    // What `shareaudit report` reads from the violations topic.
    let _ = wire::decode_violation(data);
}

/// A record's headers, key and value as the dead-letter path copies them:
/// names escaped (any bytes), then fitted to a size the input picks. The
/// dead letter must fit whenever our own headers can, and keep its
/// provenance.
pub fn headers(data: &[u8]) {
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.split(|&b| b == 0xff);
    let key = parts.next().map(<[u8]>::to_vec);
    let payload = parts.next().map(<[u8]>::to_vec);
    let headers: Vec<(String, Vec<u8>)> = parts
        .map(|h| {
            let (name, value) = h.split_at(h.len() / 2);
            (escape_name(name), value.to_vec())
        })
        .collect();
    for (name, _) in &headers {
        assert!(!name.contains('\u{fffd}') || name.len() > 2);
    }
    // From 1 KiB to 65 KiB: below the record overhead and well above.
    let max = 1024 + usize::from(size) * 256;
    let rec = Record {
        topic: "privacy.sharing-events".into(),
        partition: 0,
        offset: 7,
        key,
        payload,
        headers,
        timestamp: None,
    };
    let out = Output::dead_letter("dlq", rec, "framing", "m".into(), max);
    let ours: usize = out
        .headers
        .iter()
        .filter(|(k, _)| k.starts_with("shareaudit."))
        .map(|(k, v)| k.len() + v.len() + 8)
        .sum();
    if ours + 1024 + 192 <= max {
        assert!(
            out.size() + 1024 <= max,
            "a dead letter of {} bytes for a limit of {max}",
            out.size()
        );
    }
    assert!(
        out.headers
            .iter()
            .any(|(k, v)| k == "shareaudit.source.offset" && v == b"7")
    );
}

/// An Avro object container file, as `audit --events` reads it: every
/// record of every block, with our event schema as the reader.
pub fn container(data: &[u8]) {
    let _ = avro::schemas();
    let Ok(s) = avro::schemas() else { return };
    if let Ok(values) = avro::container_values(data, &s.event) {
        for v in values.take(10_000).flatten() {
            let _ = avro::event_from_value(&v);
        }
    }
}

/// A consent record (JSON or Avro in any framing, or a tombstone line)
/// upserted into a table, then looked up.
pub fn consent(data: &[u8]) {
    let _ = avro::schemas();
    let mut table = ConsentTable::new(4);
    let _ = json::tombstone_user(data);
    let state: Option<ConsentState> = json::decode_consent(data)
        .ok()
        .or_else(|| wire::decode_consent(data, &*LOCAL).ok());
    if let Some(state) = state {
        let (user, at) = (state.user_id.clone(), state.updated_at);
        table.upsert(state.clone());
        table.upsert(state);
        assert!(
            table.as_of(&user, at).is_some(),
            "a state is found as of its own time"
        );
        table.remove(&user);
        assert!(table.as_of(&user, at).is_none());
    }
}

/// A policy file: loaded (parse, validate with positions, compile); a
/// refusal must say where.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = crate::policy::load(text, "fuzz.yaml", Timestamp(0)) {
        for f in e.errors() {
            let _ = crate::policy::format_finding("fuzz.yaml", f);
        }
    }
}

/// The default policy, compiled once.
static POLICY: LazyLock<Arc<crate::policy::Policy>> = LazyLock::new(|| {
    let loaded = crate::policy::load_default(Timestamp(0)).expect("the default policy loads");
    Arc::new(loaded.policy)
});

/// The content detectors, through the engine: `field name 0xff value`
/// becomes one more data item of a valid event (a free-text value under
/// any name), which is then judged.
pub fn detectors(data: &[u8]) {
    let (field, value) = split(data);
    let (Ok(field), Ok(value)) = (std::str::from_utf8(field), std::str::from_utf8(value)) else {
        return;
    };
    let mut event: DataSharingEvent = json::decode_event(TEMPLATE).expect("the template decodes");
    let mut item = event.data[0].clone();
    item.field = field.to_owned();
    item.value = Some(value.to_owned());
    event.data.push(item);
    // A fresh engine each time: no window state carried from one input to the next.
    let mut engine = Engine::new(Arc::clone(&POLICY), b"fuzz-key-sixteen-bytes");
    let ctx = AuditContext {
        detected_at: Timestamp(0),
        source: None,
    };
    let _ = engine.audit(&event, None, &ctx);
}

#[cfg(test)]
mod tests;
