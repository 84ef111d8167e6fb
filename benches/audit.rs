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
//!     the JSON path (a) took before its one-pass reader, with no struct built
//! (f) decode the Avro datums alone (the direct decoder, `codec::datum`,
//!     into one reused event, validation included), beside (a)
//! (g) the same through apache-avro (`Value`, resolution, serde): the path
//!     (f) replaced, and still the fallback for writers without a plan
//! (h) the same through serde_avro_fast (writer schema only, serde, a
//!     fresh event per record, then the same validation)
//! (i) the rate stage's read of the mix's `volume.recipient_rate`
//!     candidates, as whole violations (serde_json: what it did until
//!     2026-12-08), and (j) as their keys (`Candidate::read`: what it does);
//!     each record copied out first, as the consumer hands it over
//!
//! `cargo bench --bench audit`; figures in BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group};
use shareaudit::audit::{AuditContext, Engine};
use shareaudit::codec::{self, avro, datum, json};
use shareaudit::consent::ConsentTable;
use shareaudit::daemon::Candidate;
use shareaudit::demo::generate::{self, Options};
use shareaudit::model::{DataSharingEvent, Timestamp, Violation};
use std::hint::black_box;
use std::sync::Arc;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The inputs and the engine every workload shares.
struct Fixture {
    lines: Records,
    datums: Records,
    parsed: Vec<DataSharingEvent>,
    engine: Engine,
    table: ConsentTable,
    ctx: AuditContext,
    event: DataSharingEvent,
    buf: Vec<u8>,
    buffers: simd_json::Buffers,
    plan: datum::Plan,
    fast_schema: serde_avro_fast::Schema,
    candidates: Records,
}

fn fixture() -> Fixture {
    let o = Options::default();
    let stream = generate::events(&o, 10_000);
    let lines = Records::new(stream.iter().map(|g| serde_json::to_vec(&g.event).unwrap()));
    let datums = Records::new(stream.iter().map(|g| avro::encode_event(&g.event).unwrap()));
    let violating = stream.iter().filter(|g| !g.expected.is_empty()).count();
    let bytes = lines.bytes.len();
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
    let parsed: Vec<DataSharingEvent> = lines
        .iter()
        .map(|l| json::decode_event(l).unwrap())
        .collect();
    let ctx = AuditContext {
        detected_at: Timestamp(1_800_000_000_000),
        source: None,
    };
    let mut deferring = Engine::new(Arc::clone(&policy), b"bench-key").defer_rate();
    let candidates = Records::new(parsed.iter().filter_map(|e| {
        let state = table.as_of(&e.subject.user_id, e.occurred_at);
        let verdict = deferring.audit(e, state, &ctx).unwrap();
        verdict.rate_candidate.map(|c| codec::encode_candidate(&c))
    }));
    eprintln!("{} recipient-rate candidates", candidates.len());
    Fixture {
        lines,
        datums,
        parsed,
        engine: Engine::new(policy, b"bench-key"),
        table,
        ctx,
        event: DataSharingEvent::empty(),
        buf: Vec::new(),
        buffers: simd_json::Buffers::new(4096),
        plan: datum::Plan::event(&avro::schemas().unwrap().event).unwrap(),
        fast_schema: avro::EVENT_AVSC.parse().unwrap(),
        candidates,
    }
}

/// Records back to back in one buffer, as a consumer gets them: a fetch
/// response's record batch (librdkafka's messages point into it), or the
/// offline audit's read buffer. One allocation per record would scatter
/// them over the heap, where every record starts with a cache miss that
/// neither path pays.
struct Records {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Records {
    fn new(records: impl Iterator<Item = Vec<u8>>) -> Records {
        let mut r = Records {
            bytes: Vec::new(),
            ends: Vec::new(),
        };
        for x in records {
            r.bytes.extend_from_slice(&x);
            r.ends.push(r.bytes.len());
        }
        r
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(a, &b)| &self.bytes[a..b])
    }
}

/// One pass of a workload over the 10,000 events; what it returns keeps
/// the work from being optimised away.
#[inline(never)]
fn workload(name: &str, f: &mut Fixture) -> usize {
    let Fixture {
        lines,
        datums,
        parsed,
        engine,
        table,
        ctx,
        event,
        buf,
        buffers,
        plan,
        fast_schema,
        candidates,
    } = f;
    let mut n = 0;
    match name {
        "a_parse_json" => {
            for l in lines.iter() {
                json::decode_event_into(l, event).unwrap();
                n += black_box(&*event).data.len();
            }
        }
        "b_parse_json_and_audit" => {
            for l in lines.iter() {
                json::decode_event_into(l, event).unwrap();
                let e = &*event;
                let v = engine
                    .audit(e, table.as_of(&e.subject.user_id, e.occurred_at), ctx)
                    .unwrap();
                n += v.violations.len();
            }
        }
        "c_decode_avro_and_audit" => {
            for d in datums.iter() {
                datum::decode_event_into(d, plan, event).unwrap();
                let e = &*event;
                let v = engine
                    .audit(e, table.as_of(&e.subject.user_id, e.occurred_at), ctx)
                    .unwrap();
                n += v.violations.len();
            }
        }
        "f_decode_avro" => {
            for d in datums.iter() {
                datum::decode_event_into(d, plan, event).unwrap();
                n += black_box(&*event).data.len();
            }
        }
        "h_decode_avro_serde_avro_fast" => {
            for d in datums.iter() {
                let e: DataSharingEvent =
                    serde_avro_fast::from_datum_slice(d, fast_schema).unwrap();
                e.problems().into_result().unwrap();
                n += black_box(e).data.len();
            }
        }
        "g_decode_avro_apache" => {
            for d in datums.iter() {
                n += black_box(avro::decode_event(d, None).unwrap()).data.len();
            }
        }
        "d_audit_only" => {
            for e in parsed.iter() {
                let v = engine
                    .audit(e, table.as_of(&e.subject.user_id, e.occurred_at), ctx)
                    .unwrap();
                n += v.violations.len();
            }
        }
        "e_json_tape_floor" => {
            for l in lines.iter() {
                buf.clear();
                buf.extend_from_slice(l);
                n += simd_json::to_tape_with_buffers(buf, buffers)
                    .unwrap()
                    .0
                    .len();
            }
        }
        "i_rate_candidates_whole" => {
            for c in candidates.iter() {
                let record = c.to_vec();
                let v: Violation = serde_json::from_slice(&record).unwrap();
                n += black_box(v).subject_ref.len();
            }
        }
        "j_rate_candidates_keys" => {
            for c in candidates.iter() {
                let candidate = Candidate::read(c.to_vec()).unwrap();
                n += black_box(candidate).event_id.len();
            }
        }
        other => panic!("no workload {other}"),
    }
    black_box(n)
}

const WORKLOADS: [&str; 10] = [
    "a_parse_json",
    "b_parse_json_and_audit",
    "d_audit_only",
    "e_json_tape_floor",
    "c_decode_avro_and_audit",
    "f_decode_avro",
    "g_decode_avro_apache",
    "h_decode_avro_serde_avro_fast",
    "i_rate_candidates_whole",
    "j_rate_candidates_keys",
];

fn bench(c: &mut Criterion) {
    let mut f = fixture();
    let mut g = c.benchmark_group("audit");
    g.sample_size(20);
    for name in WORKLOADS {
        // Per event; the rate stage's workloads per candidate.
        let elements = if name.starts_with("i_") || name.starts_with("j_") {
            f.candidates.len()
        } else {
            f.lines.len()
        };
        g.throughput(Throughput::Elements(elements as u64));
        g.bench_function(name, |b| b.iter(|| workload(name, &mut f)));
    }
    g.finish();
}

criterion_group!(benches, bench);

/// `SHAREAUDIT_BENCH_ONCE=NAME`: one pass of one workload and nothing
/// else, for an instruction count that a loaded machine cannot blur
/// (`scripts/bench-instructions.sh` runs it under callgrind, collecting
/// inside `workload` only). Otherwise criterion, as usual.
fn main() {
    if let Ok(name) = std::env::var("SHAREAUDIT_BENCH_ONCE") {
        let mut f = fixture();
        workload(&name, &mut f);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
