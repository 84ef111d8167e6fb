//! The direct decoder against apache-avro: our records, writer schemas
//! evolved at random from ours, random values, damaged bytes.

use super::*;
use crate::codec::avro;
use apache_avro::types::Value;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value as J, json};

/// Our records' fields by position, as the hand-written readers match them.
const FIELDS: &[(&str, &[&str])] = &[
    (
        "DataSharingEvent",
        &[
            "event_id",
            "occurred_at",
            "source_service",
            "flow",
            "subject",
            "recipient",
            "purpose",
            "legal_basis",
            "order",
            "data",
            "record_count",
            "transport",
            "legal_document",
            "files_encrypted",
            "agreement_ref",
            "consent_ref",
        ],
    ),
    (
        "Subject",
        &[
            "user_id",
            "role",
            "age",
            "guardian_consent",
            "third_party_authorized",
        ],
    ),
    (
        "Recipient",
        &["id", "category", "region", "acting_for_merchant"],
    ),
    (
        "Order",
        &["id", "type", "merchant_id", "cash_on_delivery", "insured"],
    ),
    ("DataItem", &["field", "category", "value"]),
    ("Transport", &["encrypted", "protocol"]),
    ("LegalDocument", &["type", "reference"]),
    (
        "ConsentState",
        &[
            "user_id",
            "updated_at",
            "account_status",
            "consent_withdrawn",
            "withdrawn_purposes",
            "personalized_ads_opt_out",
            "personalized_recommendation_opt_out",
            "separate_consents",
            "birth_date",
            "guardian_consent",
        ],
    ),
    (
        "SeparateConsent",
        &[
            "scope",
            "recipient_id",
            "purpose",
            "categories",
            "granted_at",
            "withdrawn_at",
        ],
    ),
];

fn records(s: &Schema, out: &mut Vec<(String, Vec<String>)>) {
    match s {
        Schema::Record(r) => {
            out.push((
                r.name.name.clone(),
                r.fields.iter().map(|f| f.name.clone()).collect(),
            ));
            for f in &r.fields {
                records(&f.schema, out);
            }
        }
        Schema::Array(a) => records(&a.items, out),
        Schema::Union(u) => u.variants().iter().for_each(|v| records(v, out)),
        _ => {}
    }
}

#[test]
fn the_readers_match_our_schemas_fields_by_position() {
    let s = avro::schemas().unwrap();
    let mut found = Vec::new();
    records(&s.event, &mut found);
    records(&s.consent, &mut found);
    let want: Vec<(String, Vec<String>)> = FIELDS
        .iter()
        .map(|(n, f)| (n.to_string(), f.iter().map(|x| x.to_string()).collect()))
        .collect();
    assert_eq!(found, want);
}

#[test]
fn our_own_schemas_get_plans_and_foreign_pairs_do_not() {
    let s = avro::schemas().unwrap();
    assert!(Plan::event(&s.event).is_some());
    assert!(Plan::consent(&s.consent).is_some());
    assert!(Plan::event(&s.consent).is_none(), "required fields missing");
    assert!(Plan::consent(&s.event).is_none());
    assert!(Plan::event(&s.violation).is_none());
}

/// Every event and consent state of the generator, read into one reused
/// value each, equals apache-avro's reading, validation included.
#[test]
fn our_records_read_as_apache_avro_reads_them() {
    use crate::demo::generate::{self, Options};
    let s = avro::schemas().unwrap();
    let (ep, cp) = (
        Plan::event(&s.event).unwrap(),
        Plan::consent(&s.consent).unwrap(),
    );
    let o = Options::default();
    let mut event = DataSharingEvent::empty();
    let stream = generate::events(&o, 2_000);
    assert!(stream.iter().any(|g| g.event.order.is_some()));
    for g in &stream {
        let datum = avro::encode_event(&g.event).unwrap();
        let theirs = avro::decode_event(&datum, None);
        let ours = decode_event_into(&datum, &ep, &mut event).map(|()| event.clone());
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("ours {ours:?}, apache-avro's {theirs:?}"),
        }
    }
    let states = generate::consent_states(&o);
    assert!(states.iter().any(|c| !c.separate_consents.is_empty()));
    for c in &states {
        let datum = avro::encode_consent(c).unwrap();
        assert_eq!(
            decode_consent(&datum, &cp).unwrap(),
            avro::decode_consent(&datum, None).unwrap()
        );
    }
}

// --- Writer schemas evolved from ours -------------------------------------

fn chance(rng: &mut StdRng, p: f64) -> bool {
    rng.random_bool(p)
}

/// A type a producer might add that we do not have.
fn extra_type(rng: &mut StdRng, n: &mut u32) -> J {
    *n += 1;
    match rng.random_range(0..15) {
        0 => json!("string"),
        1 => json!("long"),
        2 => json!("int"),
        3 => json!("double"),
        4 => json!("float"),
        5 => json!("boolean"),
        6 => json!("bytes"),
        7 => json!({"type": "fixed", "name": format!("F{n}"), "size": 3}),
        8 => json!({"type": "map", "values": ["null", "long"]}),
        9 => json!({"type": "array", "items": "string"}),
        10 => json!(["null", "string", "long"]),
        11 => json!({"type": "enum", "name": format!("E{n}"), "symbols": ["a", "b", "c"]}),
        12 => json!({"type": "record", "name": format!("R{n}"), "fields": [
            {"name": "x", "type": "int"}, {"name": "y", "type": {"type": "array", "items": "double"}}]}),
        13 => json!({"type": "long", "logicalType": "timestamp-micros"}),
        _ => json!({"type": "int", "logicalType": "date"}),
    }
}

fn evolve_record(v: &mut J, rng: &mut StdRng, n: &mut u32) {
    let Some(J::Array(fields)) = v.get_mut("fields") else {
        return;
    };
    let mut out = Vec::new();
    for mut f in std::mem::take(fields) {
        if chance(rng, 0.12) {
            *n += 1;
            out.push(json!({"name": format!("extra_{n}"), "type": extra_type(rng, n)}));
        }
        if f.get("default").is_some() && chance(rng, 0.12) {
            continue;
        }
        if let Some(t) = f.get_mut("type") {
            evolve_type(t, rng, n, false);
            let null_first = t.get(0) == Some(&json!("null"));
            if f.get("default") == Some(&J::Null) && !null_first {
                f.as_object_mut().unwrap().remove("default");
            }
        }
        out.push(f);
    }
    if chance(rng, 0.2) {
        use rand::seq::SliceRandom;
        out.shuffle(rng);
    }
    *fields = out;
}

fn evolve_type(t: &mut J, rng: &mut StdRng, n: &mut u32, in_union: bool) {
    match t {
        J::String(s) if s == "string" => {
            if in_union {
                if chance(rng, 0.15) {
                    *t = json!("bytes");
                }
            } else if chance(rng, 0.15) {
                *t = json!("bytes");
            } else if chance(rng, 0.1) {
                *t = json!(["null", "string"]);
            } else if chance(rng, 0.05) {
                *t = json!(["string", "null", "long"]);
            }
        }
        J::String(s) if s == "long" && chance(rng, 0.2) => *t = json!("int"),
        J::String(s) if s == "boolean" && !in_union && chance(rng, 0.05) => {
            *t = json!(["null", "boolean"])
        }
        J::Array(branches) => {
            for b in branches.iter_mut() {
                evolve_type(b, rng, n, true);
            }
            if branches.len() == 2 && chance(rng, 0.1) {
                *t = branches[1].clone();
            } else if branches.len() == 2 && chance(rng, 0.05) {
                branches.swap(0, 1);
            } else if branches.len() == 2 && branches[1] != json!("double") && chance(rng, 0.05) {
                branches.push(json!("double"));
            }
        }
        J::Object(o) => match (
            o.get("type").and_then(J::as_str),
            o.get("logicalType").and_then(J::as_str),
        ) {
            (Some("long"), Some("timestamp-millis")) if chance(rng, 0.2) => *t = json!("long"),
            (Some("long"), Some("timestamp-millis")) if chance(rng, 0.05) => *t = json!("int"),
            (Some("int"), Some("date")) if chance(rng, 0.2) => *t = json!("int"),
            (Some("enum"), _) => {
                if let Some(J::Array(symbols)) = o.get_mut("symbols") {
                    if chance(rng, 0.2) {
                        use rand::seq::SliceRandom;
                        symbols.shuffle(rng);
                    }
                    if chance(rng, 0.15) {
                        symbols.push(json!("zz_new"));
                    }
                }
            }
            (Some("record"), _) => evolve_record(t, rng, n),
            (Some("array"), _) => {
                if let Some(items) = o.get_mut("items") {
                    evolve_type(items, rng, n, false);
                }
            }
            _ => {}
        },
        _ => {}
    }
}

fn evolved(ours: &str, rng: &mut StdRng) -> Option<Schema> {
    let mut v: J = serde_json::from_str(ours).unwrap();
    let mut n = 0;
    evolve_record(&mut v, rng, &mut n);
    match Schema::parse(&v) {
        Ok(s) => Some(s),
        Err(e) => {
            if std::env::var_os("DATUM_DEBUG").is_some() {
                eprintln!("{e}");
            }
            None
        }
    }
}

// --- Random values of a writer schema -------------------------------------

fn lookup<'a>(names: &HashMap<Name, &'a Schema>, name: &Name) -> &'a Schema {
    names
        .iter()
        .find(|(n, _)| n.name == name.name)
        .map(|(_, s)| *s)
        .expect("a known name")
}

const STRINGS: &[&str] = &[
    "",
    "u-1",
    "CN",
    "contact.phone",
    "identity.id_card",
    "phone",
    "13800138000",
    "中文地址",
    "sf-express",
    "payment.bank_card",
];

fn value(s: &Schema, names: &HashMap<Name, &Schema>, rng: &mut StdRng, depth: usize) -> Value {
    let ts = || 1_780_000_000_000i64;
    match s {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(rng.random()),
        Schema::Int => Value::Int(match rng.random_range(0..4) {
            0 => rng.random_range(-3..40),
            1 => rng.random(),
            _ => rng.random_range(0..200),
        }),
        Schema::Long => Value::Long(match rng.random_range(0..4) {
            0 => rng.random(),
            1 => ts() + rng.random_range(-1_000_000..1_000_000),
            _ => rng.random_range(-2..1000),
        }),
        Schema::Float => Value::Float(rng.random()),
        Schema::Double => Value::Double(rng.random()),
        Schema::Bytes => Value::Bytes(if chance(rng, 0.1) {
            vec![0xff, 0xfe]
        } else {
            STRINGS[rng.random_range(0..STRINGS.len())]
                .as_bytes()
                .to_vec()
        }),
        Schema::String => Value::String(STRINGS[rng.random_range(0..STRINGS.len())].to_owned()),
        Schema::Fixed(f) => Value::Fixed(f.size, vec![7; f.size]),
        Schema::Enum(e) => {
            let i = rng.random_range(0..e.symbols.len());
            Value::Enum(i as u32, e.symbols[i].clone())
        }
        Schema::Array(a) if depth < 6 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| value(&a.items, names, rng, depth + 1))
                .collect(),
        ),
        Schema::Array(_) => Value::Array(vec![]),
        Schema::Map(m) => Value::Map(
            (0..rng.random_range(0..3))
                .map(|i| (format!("k{i}"), value(&m.types, names, rng, depth + 1)))
                .collect(),
        ),
        Schema::Union(u) => {
            let i = rng.random_range(0..u.variants().len());
            Value::Union(
                i as u32,
                Box::new(value(&u.variants()[i], names, rng, depth + 1)),
            )
        }
        Schema::Record(r) => Value::Record(
            r.fields
                .iter()
                .map(|f| (f.name.clone(), value(&f.schema, names, rng, depth + 1)))
                .collect(),
        ),
        Schema::Date => Value::Date(rng.random_range(-1000..30000)),
        Schema::TimestampMillis => {
            Value::TimestampMillis(ts() + rng.random_range(-1_000_000..1_000_000))
        }
        Schema::TimestampMicros => Value::TimestampMicros(rng.random()),
        Schema::Ref { name } => value(lookup(names, name), names, rng, depth),
        other => panic!("no generator for {other:?}"),
    }
}

/// The decoders' answers agree: what we accept, apache-avro accepts with
/// the same value; what it refuses, we refuse. Where we refuse and it
/// accepts, the record ended early (its end-of-input-is-null reading).
fn agree<T: PartialEq + fmt::Debug>(ours: Result<T, Bad>, theirs: Result<T, DecodeError>) -> bool {
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            return true;
        }
        (Ok(_), Err(_)) => {
            panic!("we accept what apache-avro refuses: ours {ours:?}, theirs {theirs:?}")
        }
        (Err(Bad::EndOfInput), _) | (Err(_), Err(_)) => {}
        (Err(e), Ok(_)) => panic!("we refuse ({e}) what apache-avro accepts: {theirs:?}"),
    }
    false
}

fn damaged(datum: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut d = datum.to_vec();
    match rng.random_range(0..4) {
        0 if !d.is_empty() => d.truncate(rng.random_range(0..d.len())),
        1 if !d.is_empty() => {
            let i = rng.random_range(0..d.len());
            d[i] = rng.random();
        }
        2 => d.push(rng.random()),
        _ if !d.is_empty() => {
            let i = rng.random_range(0..d.len());
            d[i] ^= 0x80;
        }
        _ => {}
    }
    d
}

/// One writer schema evolved from ours, and records of it: whether it
/// parsed, whether it has a plan, and how many records both read.
fn differential(seed: u64) -> (bool, bool, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let consent = chance(&mut rng, 0.3);
    let text = if consent {
        avro::CONSENT_AVSC
    } else {
        avro::EVENT_AVSC
    };
    let Some(writer) = evolved(text, &mut rng) else {
        return (false, false, 0);
    };
    let plan = if consent {
        Plan::consent(&writer)
    } else {
        Plan::event(&writer)
    };
    let Some(plan) = plan else {
        return (true, false, 0);
    };
    let rs = apache_avro::schema::ResolvedSchema::try_from(&writer).unwrap();
    let mut event = DataSharingEvent::empty();
    let mut read = 0;
    let mut state = ConsentState::empty();
    for _ in 0..24 {
        let v = value(&writer, rs.get_names(), &mut rng, 0);
        let Ok(datum) = apache_avro::to_avro_datum(&writer, v) else {
            continue;
        };
        for bytes in [
            datum.clone(),
            damaged(&datum, &mut rng),
            damaged(&datum, &mut rng),
        ] {
            read += usize::from(if consent {
                agree(
                    read_consent(&bytes, &plan, &mut state).map(|()| state.clone()),
                    avro::read_consent(&bytes, &writer),
                )
            } else {
                agree(
                    read_event(&bytes, &plan, &mut event).map(|()| event.clone()),
                    avro::read_event(&bytes, &writer),
                )
            });
        }
    }
    (true, true, read)
}

#[test]
fn evolved_writers_read_as_apache_avro_reads_them() {
    let (mut parsed, mut planned, mut read) = (0, 0, 0);
    for seed in 0..400 {
        let (p, q, r) = differential(seed);
        parsed += usize::from(p);
        planned += usize::from(q);
        read += r;
    }
    eprintln!("{parsed} evolved schemas parse, {planned} get a plan, {read} records read by both");
    // Most evolutions parse and most of those get a plan: the test is not vacuous.
    assert!(parsed > 300, "{parsed} of 400 evolved schemas parse");
    assert!(planned > parsed * 3 / 4, "{planned} of {parsed} get a plan");
    assert!(read > 2_000, "{read} records read by both decoders");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn any_evolution_reads_as_apache_avro_reads_it(seed in any::<u64>()) {
        differential(seed);
    }
}

// --- Bounds ----------------------------------------------------------------

fn zigzag(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z > 0x7f {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[test]
fn lengths_and_counts_are_bounded_before_anything_is_reserved() {
    let s = avro::schemas().unwrap();
    let plan = Plan::event(&s.event).unwrap();
    let mut e = DataSharingEvent::empty();
    // event_id claims 2 MiB.
    let mut d = Vec::new();
    zigzag(2 << 20, &mut d);
    assert!(matches!(read_event(&d, &plan, &mut e), Err(Bad::Length(_))));
    // A negative length.
    let mut d = Vec::new();
    zigzag(-5, &mut d);
    assert_eq!(
        read_event(&d, &plan, &mut e).unwrap_err().to_string(),
        "a negative length"
    );
    // A valid event whose data array claims a million items in a few bytes:
    // refused for want of bytes, with nothing reserved for them.
    let g = crate::demo::generate::events(&Default::default(), 1);
    let mut ev = g[0].event.clone();
    ev.data.clear();
    let full = avro::encode_event(&ev).unwrap();
    // Replace the empty array (a single 0 after record_count's position) by
    // re-encoding with one item and patching its count.
    ev.data.push(DataItem {
        field: "f".into(),
        category: None,
        value: None,
    });
    let one = avro::encode_event(&ev).unwrap();
    let at = full.iter().zip(&one).position(|(a, b)| a != b).unwrap();
    let mut bomb = one[..at].to_vec();
    zigzag(1 << 20, &mut bomb);
    bomb.extend_from_slice(&one[at + 1..]);
    let (read, largest) = crate::testalloc::largest_allocation(|| read_event(&bomb, &plan, &mut e));
    assert!(read.is_err(), "{read:?}");
    assert!(largest < 64 * 1024, "{largest} bytes asked for at once");
    let mut over = one[..at].to_vec();
    zigzag((1 << 20) + 1, &mut over);
    assert!(matches!(
        read_event(&over, &plan, &mut e),
        Err(Bad::Length(_))
    ));
}

#[test]
fn deep_or_weightless_writers_get_no_plan() {
    // Our event with an extra field nested 40 records deep.
    let mut deep = json!("int");
    for i in 0..40 {
        deep = json!({"type": "record", "name": format!("D{i}"), "fields": [{"name": "d", "type": deep}]});
    }
    let mut v: J = serde_json::from_str(avro::EVENT_AVSC).unwrap();
    v["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "deep", "type": deep}));
    assert!(Plan::event(&Schema::parse(&v).unwrap()).is_none());
    let mut v: J = serde_json::from_str(avro::EVENT_AVSC).unwrap();
    v["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "nothing", "type": {"type": "array", "items": "null"}}));
    assert!(Plan::event(&Schema::parse(&v).unwrap()).is_none());
}

#[test]
fn a_record_cut_short_is_refused_where_apache_avro_reads_nulls() {
    let s = avro::schemas().unwrap();
    let plan = Plan::event(&s.event).unwrap();
    let mut ev = crate::demo::generate::events(&Default::default(), 1)[0]
        .event
        .clone();
    ev.legal_document = None;
    ev.files_encrypted = None;
    ev.agreement_ref = None;
    ev.consent_ref = None;
    let datum = avro::encode_event(&ev).unwrap();
    // The last four union indexes (all null) cut off.
    let cut = &datum[..datum.len() - 4];
    assert_eq!(
        avro::decode_event(cut, None).unwrap(),
        ev,
        "apache-avro reads the end as nulls"
    );
    let mut e = DataSharingEvent::empty();
    assert_eq!(read_event(cut, &plan, &mut e), Err(Bad::EndOfInput));
    assert_eq!(
        decode_event_into(cut, &plan, &mut e).unwrap_err().class(),
        "avro"
    );
}

/// Short strings are checked by simdutf8's AVX2 validator directly: it
/// must say what std says, at every length up to and past its block.
#[test]
fn short_text_is_utf8_exactly_when_std_says_so() {
    let mut cases: Vec<Vec<u8>> = Vec::new();
    // Every sequence of one to three bytes from the bytes that matter.
    let bytes = [
        0x00, 0x41, 0x7f, 0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe4, 0xed, 0xef, 0xf0, 0xf4,
        0xf5, 0xff, 0x9f, 0xa0,
    ];
    for &a in &bytes {
        cases.push(vec![a]);
        for &b in &bytes {
            cases.push(vec![a, b]);
            for &c in &bytes {
                cases.push(vec![a, b, c]);
                cases.push(vec![b'x', a, b, c]);
            }
        }
    }
    // Valid and broken text at every length around the block of 64.
    for n in 0..70 {
        let s: String = "刘洋收货地址😀é".chars().cycle().take(n).collect();
        let b = s.as_bytes().to_vec();
        for cut in [
            b.len(),
            b.len().saturating_sub(1),
            b.len().saturating_sub(2),
        ] {
            cases.push(b[..cut].to_vec());
        }
        let mut surrogate = b.clone();
        surrogate.extend_from_slice(&[0xed, 0xa0, 0x80]);
        cases.push(surrogate);
    }
    for b in cases {
        assert_eq!(text(&b), std::str::from_utf8(&b).ok(), "{b:02x?}");
    }
}

/// The word-at-a-time ASCII test against std's, for a high byte at every
/// position of every length to 40 (the overlapping loads' edges).
#[test]
fn ascii_is_what_std_says_at_every_length_and_position() {
    for n in 0..40 {
        let clean = vec![b'a'; n];
        assert!(ascii(&clean), "{n}");
        for at in 0..n {
            for high in [0x80, 0xc3, 0xff] {
                let mut b = clean.clone();
                b[at] = high;
                assert!(!ascii(&b), "{n} {at}");
            }
        }
    }
}

proptest! {
    #[test]
    fn ascii_says_what_is_ascii_says(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        prop_assert_eq!(ascii(&b), b.is_ascii());
        let clean: Vec<u8> = b.iter().map(|c| c & 0x7f).collect();
        prop_assert!(ascii(&clean));
    }

    #[test]
    fn any_short_bytes_are_text_exactly_when_std_says_so(
        b in proptest::collection::vec(any::<u8>(), 0..80),
        chars in "[a-z刘洋é😀]{0,30}",
        flip in any::<(usize, u8)>(),
    ) {
        prop_assert_eq!(text(&b), std::str::from_utf8(&b).ok());
        let mut t = chars.into_bytes();
        prop_assert_eq!(text(&t), std::str::from_utf8(&t).ok());
        if !t.is_empty() {
            let at = flip.0 % t.len();
            t[at] ^= flip.1;
            prop_assert_eq!(text(&t), std::str::from_utf8(&t).ok());
        }
    }
}

// --- The exact path (our own schema, no plan consulted) ---------------------

/// Our event schema's plan, followed step by step instead of the exact path.
fn planned() -> Plan {
    Plan::event(&avro::schemas().unwrap().event)
        .unwrap()
        .step_by_step()
}

#[test]
fn our_event_schema_reads_on_the_exact_path_and_no_other_does() {
    let s = avro::schemas().unwrap();
    assert!(
        Plan::event(&s.event).unwrap().is_exact(),
        "schemas/DataSharingEvent.avsc is not the schema codec/datum/exact.rs reads \
         (fingerprint {:?}): bring exact.rs along, then EVENT_SCHEMA",
        exact::fingerprint(&s.event)
    );
    let mut v: J = serde_json::from_str(avro::EVENT_AVSC).unwrap();
    v["doc"] = json!("another doc");
    v["fields"][0]["aliases"] = json!(["id"]);
    let same = Schema::parse(&v).unwrap();
    assert!(
        Plan::event(&same).unwrap().is_exact(),
        "docs and aliases do not matter"
    );
    let mut v: J = serde_json::from_str(avro::EVENT_AVSC).unwrap();
    v["fields"][1]["type"] = json!("long");
    let plain_long = Schema::parse(&v).unwrap();
    assert!(
        !Plan::event(&plain_long).unwrap().is_exact(),
        "a logical type does"
    );
    let mut v: J = serde_json::from_str(avro::EVENT_AVSC).unwrap();
    v["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "extra", "type": "string", "default": ""}));
    let longer = Schema::parse(&v).unwrap();
    assert!(!Plan::event(&longer).unwrap().is_exact());
    assert!(Plan::consent(&s.consent).is_some_and(|p| !p.is_exact()));
}

/// The same bytes read on both paths: the same event, or the same error.
fn both_paths(
    datum: &[u8],
    ex: &Plan,
    pl: &Plan,
    a: &mut DataSharingEvent,
    b: &mut DataSharingEvent,
) -> bool {
    let x = read_event(datum, ex, a);
    let y = read_event(datum, pl, b);
    assert_eq!(x, y, "{datum:02x?}");
    if x.is_ok() {
        assert_eq!(a, b, "{datum:02x?}");
    }
    x.is_ok()
}

/// Generated events, random records of our schema (nulls, enums at every
/// symbol, empty and long arrays), and each damaged (cut, a byte changed,
/// a byte added), read into one reused event per path.
#[test]
fn the_exact_path_reads_what_the_plan_reads() {
    use crate::demo::generate::{self, Options};
    let s = avro::schemas().unwrap();
    let (ex, pl) = (Plan::event(&s.event).unwrap(), planned());
    assert!(ex.is_exact() && !pl.is_exact());
    let (mut a, mut b) = (DataSharingEvent::empty(), DataSharingEvent::empty());
    let mut rng = StdRng::seed_from_u64(15);
    let (mut ok, mut refused) = (0, 0);
    let mut datums: Vec<Vec<u8>> = generate::events(&Options::default(), 1_000)
        .iter()
        .map(|g| avro::encode_event(&g.event).unwrap())
        .collect();
    let rs = apache_avro::schema::ResolvedSchema::try_from(&s.event).unwrap();
    for _ in 0..1_000 {
        let v = value(&s.event, rs.get_names(), &mut rng, 0);
        if let Ok(d) = apache_avro::to_avro_datum(&s.event, v) {
            datums.push(d);
        }
    }
    for datum in &datums {
        for bytes in [
            datum.clone(),
            damaged(datum, &mut rng),
            damaged(datum, &mut rng),
            damaged(&damaged(datum, &mut rng), &mut rng),
        ] {
            if both_paths(&bytes, &ex, &pl, &mut a, &mut b) {
                ok += 1;
            } else {
                refused += 1;
            }
        }
    }
    // Both kinds were seen, many times.
    assert!(
        ok > 2_000 && refused > 1_000,
        "{ok} read, {refused} refused"
    );
}

/// Every prefix of a record and every single-byte change of its first
/// bytes (lengths, union branches, enum indexes).
#[test]
fn the_exact_path_refuses_what_the_plan_refuses_byte_for_byte() {
    use crate::demo::generate::{self, Options};
    let s = avro::schemas().unwrap();
    let (ex, pl) = (Plan::event(&s.event).unwrap(), planned());
    let (mut a, mut b) = (DataSharingEvent::empty(), DataSharingEvent::empty());
    for g in generate::events(&Options::default(), 40) {
        let datum = avro::encode_event(&g.event).unwrap();
        for cut in 0..datum.len() {
            assert!(!both_paths(&datum[..cut], &ex, &pl, &mut a, &mut b));
        }
        for at in 0..datum.len().min(96) {
            for x in [0x00, 0x01, 0x02, 0x03, 0x0e, 0x7f, 0x80, 0xff] {
                let mut d = datum.clone();
                d[at] = x;
                both_paths(&d, &ex, &pl, &mut a, &mut b);
            }
        }
    }
}
