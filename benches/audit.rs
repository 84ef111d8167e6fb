//! Throughput of the engine on a realistic mix: 10,000 generated events
//! (seed 42, ~15% violating, free-text memos and addresses), against the
//! consent states of the generator's 2,000 users.
//!
//! (a) parse the JSON lines alone (typed decode + validation), into one
//!     reused event as a stream does
//! (b) parse + audit
//! (c) decode Avro datums + audit
//! (d) audit alone, on events already parsed (where the time goes)
//! (e) simd-json's tape alone (structural index and strings, no struct):
//!     the floor of any JSON decoding on this machine
//!
//! `cargo bench --bench audit`; figures in BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shareaudit::audit::{AuditContext, Engine};
use shareaudit::codec::{avro, json};
use shareaudit::consent::ConsentTable;
use shareaudit::demo::generate::{self, Options};
use shareaudit::model::{DataSharingEvent, Timestamp};
use std::hint::black_box;
use std::sync::Arc;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let o = Options::default();
    let stream = generate::events(&o, 10_000);
    let lines: Vec<Vec<u8>> = stream
        .iter()
        .map(|g| serde_json::to_vec(&g.event).unwrap())
        .collect();
    let datums: Vec<Vec<u8>> = stream
        .iter()
        .map(|g| avro::encode_event(&g.event).unwrap())
        .collect();
    let violating = stream.iter().filter(|g| !g.expected.is_empty()).count();
    let bytes: usize = lines.iter().map(Vec::len).sum();
    eprintln!(
        "mix: {} events, {violating} violating, {} bytes of JSON (mean {} bytes)",
        lines.len(),
        bytes,
        bytes / lines.len()
    );

    let policy = Arc::new(
        shareaudit::policy::load_default(Timestamp(0))
            .unwrap()
            .policy,
    );
    let mut table = ConsentTable::for_policy(&policy.settings);
    for s in generate::consent_states(&o) {
        table.upsert(s);
    }
    let mut engine = Engine::new(policy, b"bench-key");
    let ctx = AuditContext {
        detected_at: Timestamp(1_800_000_000_000),
        source: None,
    };

    let mut g = c.benchmark_group("audit");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.sample_size(20);
    // (a) and (b) decode as a stream does (`shareaudit audit` too): into one
    // event, whose strings and items keep their allocations from record to record.
    let mut event = DataSharingEvent::empty();
    g.bench_function("a_parse_json", |b| {
        b.iter(|| {
            for l in &lines {
                json::decode_event_into(l, &mut event).unwrap();
                black_box(&event);
            }
        })
    });
    g.bench_function("b_parse_json_and_audit", |b| {
        b.iter(|| {
            let mut n = 0;
            for l in &lines {
                json::decode_event_into(l, &mut event).unwrap();
                let e = &event;
                let v = engine
                    .audit(e, table.as_of(&e.subject.user_id, e.occurred_at), &ctx)
                    .unwrap();
                n += v.violations.len();
            }
            black_box(n)
        })
    });
    let parsed: Vec<_> = lines
        .iter()
        .map(|l| json::decode_event(l).unwrap())
        .collect();
    g.bench_function("d_audit_only", |b| {
        b.iter(|| {
            let mut n = 0;
            for e in &parsed {
                let v = engine
                    .audit(e, table.as_of(&e.subject.user_id, e.occurred_at), &ctx)
                    .unwrap();
                n += v.violations.len();
            }
            black_box(n)
        })
    });
    let mut buf = Vec::new();
    let mut buffers = simd_json::Buffers::new(4096);
    g.bench_function("e_json_tape_floor", |b| {
        b.iter(|| {
            let mut n = 0;
            for l in &lines {
                buf.clear();
                buf.extend_from_slice(l);
                n += simd_json::to_tape_with_buffers(&mut buf, &mut buffers)
                    .unwrap()
                    .0
                    .len();
            }
            black_box(n)
        })
    });
    g.bench_function("c_decode_avro_and_audit", |b| {
        b.iter(|| {
            let mut n = 0;
            for d in &datums {
                let e = avro::decode_event(d, None).unwrap();
                let v = engine
                    .audit(&e, table.as_of(&e.subject.user_id, e.occurred_at), &ctx)
                    .unwrap();
                n += v.violations.len();
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
