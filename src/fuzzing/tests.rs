//! The fuzz targets in `cargo test`: the committed corpus replayed, and
//! generated input (proptest) for each.

use super::*;
use proptest::collection::vec;
use proptest::prelude::*;
use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn every_target_takes_its_whole_committed_corpus() {
    for (name, target) in TARGETS {
        let inputs = corpus(name);
        assert!(!inputs.is_empty(), "fuzz/corpus/{name} is empty");
        for (path, data) in inputs {
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "target {name} failed on {path}");
        }
    }
}

/// The template with one byte replaced, inserted or removed: near-valid
/// events, where the fast path and serde_json are most likely to part.
fn mutated(at: usize, byte: u8, how: u8) -> Vec<u8> {
    let mut v = TEMPLATE.to_vec();
    let at = at % v.len();
    match how % 3 {
        0 => v[at] = byte,
        1 => v.insert(at, byte),
        _ => {
            v.remove(at);
        }
    }
    v
}

/// Bytes from the characters JSON is made of, so that generated input gets
/// past the first byte more often than random bytes do.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![
            Just(b'{'),
            Just(b'}'),
            Just(b'['),
            Just(b']'),
            Just(b'"'),
            Just(b':'),
            Just(b','),
            Just(b'0'),
            Just(b'-'),
            Just(b'e'),
            Just(b'\\'),
            any::<u8>(),
        ],
        0..256,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_json_fast_path_agrees_with_serde_on_near_valid_events(at in 0usize..4096, byte in any::<u8>(), how in any::<u8>()) {
        json_event(&mutated(at, byte, how));
    }

    #[test]
    fn the_json_fast_path_agrees_with_serde_on_json_like_bytes(data in jsonish()) {
        json_event(&data);
    }

    #[test]
    fn every_target_takes_any_bytes(data in vec(any::<u8>(), 0..512)) {
        for (_, target) in TARGETS {
            target(&data);
        }
    }
}

/// Writes the seed inputs of every target into `fuzz/corpus/<target>/`
/// (`cargo test --lib write_seeds -- --ignored`): valid records of each
/// kind, so that the campaigns start from the shapes real input has.
#[test]
#[ignore]
fn write_seeds() {
    use crate::codec::avro::{CONSENT_AVSC, EVENT_AVSC};
    use crate::demo::generate::{self, Options};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    };
    let with = |head: &str, body: &[u8]| [head.as_bytes(), &[0xff], body].concat();
    let generated = generate::events(
        &Options {
            seed: 11,
            violation_share: 0.5,
            ..Options::default()
        },
        6,
    );
    let s = avro::schemas().unwrap();
    for (i, g) in generated.iter().enumerate() {
        let json = serde_json::to_vec(&g.event).unwrap();
        let datum = avro::encode_event(&g.event).unwrap();
        write("json", &format!("event-{i}"), &json);
        write("avro", &format!("event-{i}"), &with(EVENT_AVSC, &datum));
        write(
            "wire",
            &format!("confluent-{i}"),
            &wire::confluent(1, &datum),
        );
        write(
            "wire",
            &format!("single-object-{i}"),
            &wire::single_object(&s.event, &datum),
        );
        write("wire", &format!("json-{i}"), &json);
        for item in &g.event.data {
            if let Some(v) = &item.value {
                write(
                    "detectors",
                    &format!("{i}-{}", item.field),
                    &with(&item.field, v.as_bytes()),
                );
            }
        }
    }
    write("json", "fixture", TEMPLATE);
    write("avro", "foreign", &with(r#"{"type":"string"}"#, b"\x06abc"));
    write(
        "avro",
        "recursive",
        &with(
            r#"{"type":"record","name":"N","fields":[{"name":"next","type":["null","N"]}]}"#,
            b"\x02\x02\x00",
        ),
    );
    let consent = include_bytes!("../../tests/fixtures/consent-full.json");
    let state = json::decode_consent(consent).unwrap();
    let datum = avro::encode_consent(&state).unwrap();
    write("consent", "json", consent);
    write("consent", "confluent", &wire::confluent(2, &datum));
    write(
        "consent",
        "tombstone",
        br#"{"user_id": "u-1", "tombstone": true}"#,
    );
    write("avro", "consent", &with(CONSENT_AVSC, &datum));
    let values: Vec<_> = generated
        .iter()
        .map(|g| avro::event_to_value(&g.event))
        .collect();
    let mut w = apache_avro::Writer::with_codec(
        &s.event,
        Vec::new(),
        apache_avro::Codec::Deflate(Default::default()),
    );
    for v in values.iter().take(3) {
        w.append(v.clone()).unwrap();
    }
    write("container", "deflate", &w.into_inner().unwrap());
    write(
        "container",
        "null",
        &avro::write_container(&s.event, values).unwrap(),
    );
    write(
        "headers",
        "plain",
        b"\x10key\xffpayload\xfftrace-idabcdef\xffname\xfe\x80value",
    );
    write(
        "headers",
        "large",
        &[
            &[0u8][..],
            &[b'k'; 3000],
            &[0xff],
            &[b'p'; 5000],
            &[0xff],
            &[b'h'; 4000],
        ]
        .concat(),
    );
    write(
        "policy",
        "default",
        crate::policy::DEFAULT_POLICY.as_bytes(),
    );
    for (field, value) in [
        ("remark", "身份证 11010519491231002X 电话 13800138000"),
        ("note", "card 6222 0212 3456 7890 128, mail a.b@example.com"),
        (
            "device",
            "IMEI 490154203237518 MAC 00:1A:2B:3C:4D:5E at 39.9042,116.4074",
        ),
        ("memo", "护照 E12345678 统一社会信用代码 91350100M000100Y43"),
    ] {
        write("detectors", field, &with(field, value.as_bytes()));
    }
}
