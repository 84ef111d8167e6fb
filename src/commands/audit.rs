//! `shareaudit audit`: the engine over files.

use super::{FOUND, INPUT_ERROR, OK};
use crate::cli::AuditArgs;
use anyhow::{Context, Result};
use shareaudit::audit::volume::RateWindows;
use shareaudit::audit::{AuditContext, Engine, Verdict, finish_rate, too_far_ahead};
use shareaudit::codec::{DecodeError, avro, json};
use shareaudit::config;
use shareaudit::consent::ConsentTable;
use shareaudit::model::{DataSharingEvent, Mode, Severity, Timestamp, redact};
use shareaudit::policy::Policy;
use shareaudit::report;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

mod mapped;
mod parallel;

const AVRO_MAGIC: &[u8] = b"Obj\x01";

/// What the run saw, printed to stderr at the end.
#[derive(Default)]
struct Summary {
    events: u64,
    clean: u64,
    with_violations: u64,
    invalid: u64,
    states: u64,
    invalid_states: u64,
    by_rule: BTreeMap<String, u64>,
    by_severity: BTreeMap<Severity, u64>,
    shadow: u64,
    suppressed: u64,
}

fn open(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    if path == Path::new("-") {
        return Ok(Box::new(BufReader::new(io::stdin())));
    }
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Box::new(BufReader::with_capacity(1 << 16, f)))
}

/// `path` mapped whole, if it is a regular file (not `-`, not empty).
fn mapped(path: &Path) -> Result<Option<mapped::Mapped>> {
    if path == Path::new("-") {
        return Ok(None);
    }
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    mapped::Mapped::of(&f).with_context(|| format!("cannot map {}", path.display()))
}

/// Whether the input is an Avro container (peeks without consuming).
fn is_avro(r: &mut Box<dyn BufRead + Send>, format: &str) -> Result<bool> {
    Ok(match format {
        "avro" => true,
        "json" => false,
        _ => r.fill_buf()?.starts_with(AVRO_MAGIC),
    })
}

/// One record of an input file, not decoded yet: the caller decodes it
/// (events into one reused event, so a long file allocates little).
enum Raw<'a> {
    Json(&'a [u8]),
    Avro(apache_avro::types::Value),
}

/// Where a record is, for messages: `FILE:LINE`, or `FILE: record N` in an
/// Avro container.
struct At<'a> {
    name: &'a str,
    n: u64,
    avro: bool,
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.avro {
            write!(f, "{}: record {}", self.name, self.n)
        } else {
            write!(f, "{}:{}", self.name, self.n)
        }
    }
}

/// The reader schema of an Avro file's records: parsed when one is read.
#[derive(Clone, Copy)]
enum Reader {
    Event,
    Consent,
}

impl Reader {
    fn schema(self) -> Result<&'static apache_avro::Schema, DecodeError> {
        let schemas = avro::schemas()?;
        Ok(match self {
            Reader::Event => &schemas.event,
            Reader::Consent => &schemas.consent,
        })
    }
}

/// Every record of a file, JSON lines or Avro, with where it is; an Avro
/// record the container cannot read comes as its error.
fn records(
    path: &Path,
    format: &str,
    reader: Reader,
    mut each: impl FnMut(At<'_>, Result<Raw<'_>, DecodeError>) -> Result<()>,
) -> Result<()> {
    let name = path.display().to_string();
    let mut r = open(path)?;
    if is_avro(&mut r, format)? {
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes)?;
        let values = avro::container_values(&bytes[..], reader.schema()?)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        for (i, v) in values.enumerate() {
            let at = At {
                name: &name,
                n: i as u64 + 1,
                avro: true,
            };
            each(at, v.map(Raw::Avro))?;
        }
        return Ok(());
    }
    let mut line = Vec::new();
    let mut n = 0u64;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)
            .with_context(|| format!("reading {name}"))?
            == 0
        {
            break;
        }
        n += 1;
        let text = line.trim_ascii();
        if text.is_empty() || text.starts_with(b"#") {
            continue;
        }
        let at = At {
            name: &name,
            n,
            avro: false,
        };
        each(at, Ok(Raw::Json(text)))?;
    }
    Ok(())
}

/// The half of judging that needs no other event: the checks, every rule
/// but the windowed one, the violations serialised. Any thread runs it (one
/// `Worker` each); [`Judge`] does the rest in input order.
struct Worker<'a> {
    /// With `volume.recipient_rate` deferred to the judge.
    engine: Engine,
    table: &'a ConsentTable,
    detected_at: Option<Timestamp>,
    skew: i64,
}

/// One record, judged as far as a [`Worker`] can; reused record after record.
#[derive(Default)]
struct Judged {
    /// Why the record is not judged (printed, in input order, by the judge).
    refused: Option<String>,
    verdict: Verdict,
    /// The verdict's violations as JSON lines.
    json: Vec<u8>,
}

impl Worker<'_> {
    fn judge(&mut self, decoded: Result<&DataSharingEvent, &DecodeError>, j: &mut Judged) {
        j.refused = None;
        j.json.clear();
        j.verdict = Verdict::default();
        let event = match decoded {
            Ok(e) => e,
            Err(e) => {
                j.refused = Some(e.to_string());
                return;
            }
        };
        let judged_at = self.detected_at.unwrap_or_else(Timestamp::now);
        let skew = self.skew;
        if let Some(ahead) = too_far_ahead(event, judged_at, skew) {
            j.refused = Some(format!(
                "future event time: occurred_at is {ahead} ms after the instant it is judged; at most {skew} ms allowed"
            ));
            return;
        }
        let ctx = AuditContext {
            detected_at: judged_at,
            source: None,
        };
        let state = self.table.as_of(&event.subject.user_id, event.occurred_at);
        match self.engine.audit(event, state, &ctx) {
            Ok(v) => j.verdict = v,
            Err(problems) => {
                j.refused = Some(format!("invalid record: {}", redact(&problems.to_string())));
                return;
            }
        }
        write_json_lines(&mut j.json, &j.verdict.violations);
    }
}

fn write_json_lines(out: &mut Vec<u8>, violations: &[shareaudit::model::Violation]) {
    for v in violations {
        json::write_violation(out, v);
        out.push(b'\n');
    }
}

/// Violations are written through a buffer of this size.
const WRITE_BUFFER: usize = 1 << 20;

/// The in-order half of judging: the windowed rule (`volume.recipient_rate`)
/// over the records as one reader of the file sees them, the counts, the
/// report's tally, the output. The violations are those of one engine
/// judging alone, byte for byte: the windowed rule's comes last, as it
/// does there, and is decided as the daemon's rate stage decides it.
struct Judge<'a> {
    windows: RateWindows,
    /// Written by whichever thread finishes (`audit --threads`).
    out: Box<dyn Write + Send + 'a>,
    summary: &'a mut Summary,
    /// For `--report` and `--summary-json`.
    tally: Option<report::Tally>,
    policy: &'a Policy,
}

impl Judge<'_> {
    /// One record at `at`: its event (when it decoded) and what a worker made of it.
    fn finish(
        &mut self,
        at: &dyn std::fmt::Display,
        event: &DataSharingEvent,
        j: &mut Judged,
    ) -> Result<()> {
        let summary = &mut *self.summary;
        if let Some(why) = &j.refused {
            summary.invalid += 1;
            eprintln!("{at}: {why}");
            return Ok(());
        }
        let before = j.verdict.violations.len();
        finish_rate(
            self.policy,
            &mut self.windows,
            &event.subject.user_id,
            &mut j.verdict,
        );
        write_json_lines(&mut j.json, &j.verdict.violations[before..]);
        let verdict = &j.verdict;
        if let Some(t) = &mut self.tally {
            t.event(self.policy, event, verdict);
        }
        summary.events += 1;
        summary.suppressed += verdict
            .suppressed
            .iter()
            .filter(|s| s.exception_mode == Mode::Enforce)
            .count() as u64;
        if verdict.enforced().next().is_none() {
            summary.clean += 1;
        } else {
            summary.with_violations += 1;
        }
        for v in &verdict.violations {
            if v.mode == Mode::Shadow {
                summary.shadow += 1;
            } else {
                match summary.by_rule.get_mut(&v.rule_id) {
                    Some(n) => *n += 1,
                    None => {
                        summary.by_rule.insert(v.rule_id.clone(), 1);
                    }
                }
                *summary.by_severity.entry(v.severity).or_default() += 1;
            }
        }
        self.out.write_all(&j.json)?;
        Ok(())
    }
}

fn hmac_key(args: &AuditArgs) -> Result<Vec<u8>> {
    if let Some(k) = &args.hmac_key {
        return Ok(config::hmac_key(k.as_bytes().to_vec(), "--hmac-key")?);
    }
    if let Some(path) = &args.hmac_key_file {
        return Ok(config::read_hmac_key(path)?);
    }
    eprintln!(
        "shareaudit: warning: no --hmac-key given: subject_ref uses a random key and joins only within this run"
    );
    Ok(rand::random::<[u8; 32]>().to_vec())
}

pub fn run(args: &AuditArgs) -> Result<i32> {
    let detected_at = match &args.detected_at {
        Some(s) => {
            Some(Timestamp::parse_rfc3339(s).map_err(|e| anyhow::anyhow!("--detected-at: {e}"))?)
        }
        None => None,
    };
    let Some(policy) = super::policy_for(
        args.policy.as_deref(),
        detected_at.unwrap_or_else(Timestamp::now),
    ) else {
        return Ok(INPUT_ERROR);
    };
    let policy = Arc::new(policy);
    let mut summary = Summary::default();

    let mut table = ConsentTable::for_policy(&policy.settings);
    if let Some(path) = &args.state {
        // A tombstone line is not a ConsentState; look for it first.
        records(path, &args.format, Reader::Consent, |at, raw| {
            let rec = raw.and_then(|raw| match raw {
                Raw::Json(bytes) => match json::tombstone_user(bytes) {
                    Some(user) => Ok(Err(user)),
                    None => json::decode_consent(bytes).map(Ok),
                },
                Raw::Avro(v) => avro::consent_from_value(&v).map(Ok),
            });
            match rec {
                Ok(Ok(state)) => {
                    summary.states += 1;
                    table.upsert(state);
                }
                Ok(Err(user)) => {
                    table.remove(&user);
                }
                Err(e) => {
                    summary.invalid_states += 1;
                    eprintln!("{at}: {e}");
                }
            }
            Ok(())
        })?;
    }

    let key = hmac_key(args)?;
    let out: Box<dyn Write + Send> = match &args.output {
        Some(p) => Box::new(BufWriter::with_capacity(
            WRITE_BUFFER,
            File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(BufWriter::with_capacity(WRITE_BUFFER, io::stdout())),
    };
    let mut judge = Judge {
        windows: RateWindows::default(),
        out,
        summary: &mut summary,
        tally: (args.report.is_some() || args.summary_json.is_some()).then(report::Tally::default),
        policy: &policy,
    };
    let worker = || Worker {
        engine: Engine::new(Arc::clone(&policy), &key).defer_rate(),
        table: &table,
        detected_at,
        skew: args.max_future_skew_ms as i64,
    };
    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let mut r = open(&args.events)?;
    if threads > 1 && !is_avro(&mut r, &args.format)? {
        let workers = (0..threads).map(|_| worker()).collect();
        let input = match mapped(&args.events)? {
            Some(m) => parallel::Input::Mapped(m),
            None => parallel::Input::Stream(r),
        };
        parallel::judge_json_lines(
            input,
            &args.events.display().to_string(),
            workers,
            &mut judge,
        )?;
    } else {
        drop(r);
        let mut worker = worker();
        let mut event = DataSharingEvent::empty();
        let mut judged = Judged::default();
        records(&args.events, &args.format, Reader::Event, |at, raw| {
            let decoded = raw.and_then(|raw| match raw {
                Raw::Json(bytes) => json::decode_event_into(bytes, &mut event),
                Raw::Avro(v) => avro::event_from_value(&v).map(|e| event = e),
            });
            worker.judge(decoded.as_ref().map(|()| &event), &mut judged);
            judge.finish(&at, &event, &mut judged)
        })?;
    }
    judge.out.flush()?;
    let tally = judge.tally.take();
    drop(judge);
    if let Some(mut tally) = tally {
        tally.inputs(summary.invalid, summary.states);
        let figures = tally.summary(&policy);
        if let Some(path) = &args.summary_json {
            let json = serde_json::to_vec_pretty(&figures)?;
            std::fs::write(path, json)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if let Some(path) = &args.report {
            std::fs::write(path, report::html(&figures))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }

    let total: u64 = summary.by_rule.values().sum();
    eprintln!(
        "shareaudit audit: {} events ({} clean, {} with violations), {} invalid records; {} consent states ({} invalid); policy {} {}",
        summary.events,
        summary.clean,
        summary.with_violations,
        summary.invalid,
        summary.states,
        summary.invalid_states,
        policy.version.version,
        policy.version.hash
    );
    let sev: Vec<String> = summary
        .by_severity
        .iter()
        .rev()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    eprintln!(
        "violations: {total} ({}); shadow {}; suppressed by exceptions {}",
        sev.join(", "),
        summary.shadow,
        summary.suppressed
    );
    for (rule, n) in &summary.by_rule {
        eprintln!("  {n:>7}  {rule}");
    }
    Ok(if summary.invalid > 0 || summary.invalid_states > 0 {
        INPUT_ERROR
    } else if total > 0 {
        FOUND
    } else {
        OK
    })
}
