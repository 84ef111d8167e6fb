//! `shareaudit report`: the compliance report of a period from what the
//! daemon wrote. The violations topic gives every violation (a copy after a
//! crash counts once); the event topic's records of the period are decoded
//! again (writer schemas as `run` finds them) to count what each recipient
//! received; the dead-letter and consent topics give how many records they
//! logged. The period is by log time: a violation's `detected_at` is its
//! event's log time.

use super::{INPUT_ERROR, OK, policy_for};
use crate::cli::ReportArgs;
use anyhow::{Context, Result};
use rdkafka::message::Message;
use shareaudit::audit::{Engine, too_far_ahead};
use shareaudit::codec::{DecodeError, wire};
use shareaudit::config::{RawSettings, Settings};
use shareaudit::daemon::Schemas;
use shareaudit::kafka::scan::scan;
use shareaudit::model::DataSharingEvent;
use shareaudit::model::Timestamp;
use shareaudit::report::{self, Tally};
use std::sync::Arc;
use std::time::Duration;

pub fn run(args: &ReportArgs) -> Result<i32> {
    let time = |what: &str, s: &str| {
        Timestamp::parse_rfc3339(s).map_err(|e| anyhow::anyhow!("--{what} {s:?}: {e}"))
    };
    let from = time("from", &args.from)?;
    let to = match &args.to {
        Some(t) => time("to", t)?,
        None => Timestamp::now(),
    };
    if to <= from {
        eprintln!("shareaudit report: --to ({to}) must be after --from ({from})");
        return Ok(INPUT_ERROR);
    }
    let Some(policy) = policy_for(args.policy.as_deref(), to) else {
        return Ok(INPUT_ERROR);
    };
    let policy = Arc::new(policy);
    let settings = Settings::from_raw(RawSettings::secrets_from_env().merge(RawSettings {
        brokers: Some(args.brokers.clone()),
        librdkafka: args.librdkafka.iter().cloned().collect(),
        schema_registry_url: args.schemas.schema_registry_url.clone(),
        schema_ids: args.schemas.schema_ids.iter().cloned().collect(),
        ..RawSettings::default()
    }))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let schemas = super::run::schemas(&settings)?;
    // The registry client is async: a runtime of one thread to ask it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let timeout = Duration::from_secs(args.timeout_seconds);
    let within = |t: Option<i64>| t.is_some_and(|t| t >= from.millis() && t < to.millis());

    let mut tally = Tally::over(
        from,
        to,
        format!(
            "topics {} (violations), {} (events), {} (dead letters), {} (consent)",
            args.violations_topic, args.events_topic, args.dead_letter_topic, args.consent_topic
        ),
    );
    // Violations: by detected_at, which is the event record's log time; the
    // violation record itself is logged later, so its log time starts the read.
    let mut unreadable = 0u64;
    scan(
        &settings,
        &args.violations_topic,
        from.millis(),
        timeout,
        |m| match m.payload().map(wire::decode_violation) {
            Some(Ok(v)) if within(Some(v.detected_at.millis())) => {
                tally.written(&v);
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => unreadable += 1,
        },
    )
    .with_context(|| format!("reading {}", args.violations_topic))?;
    // What the daemon refuses after decoding it made a dead letter, not a
    // judged event: the engine's check (`Engine::check`: the key is not
    // used) and the future-time check against the record's log time, with
    // the daemon's default skew.
    let mut engine = Engine::new(Arc::clone(&policy), b"report: refusals only");
    let skew = settings.max_future_skew.as_millis() as i64;
    let mut event = DataSharingEvent::empty();
    scan(&settings, &args.events_topic, from.millis(), timeout, |m| {
        let (t, payload) = (m.timestamp().to_millis(), m.payload());
        if !within(t) {
            return;
        }
        let decoded = payload.is_some_and(|p| {
            decode(p, &schemas, &runtime, &mut event).is_ok()
                && event.problems().into_result().is_ok()
        });
        let logged = Timestamp(t.unwrap_or_default());
        let refused = decoded
            && (too_far_ahead(&event, logged, skew).is_some() || engine.check(&event).is_err());
        if refused {
            tally.refused_event();
        } else if decoded {
            tally.logged_event(&policy, logged.millis(), &event);
        } else {
            tally.undecoded_event();
        }
    })
    .with_context(|| format!("reading {}", args.events_topic))?;
    // Records of the period; a dead letter written again after a crash (the
    // same source topic, partition and offset in its headers) counts once.
    let count = |topic: &str, once: bool| -> Result<u64> {
        let mut n = 0;
        let mut seen = std::collections::HashSet::new();
        scan(&settings, topic, from.millis(), timeout, |m| {
            if !within(m.timestamp().to_millis()) {
                return;
            }
            let source = once.then(|| dead_letter_source(m)).flatten();
            if source.is_none_or(|s| seen.insert(s)) {
                n += 1;
            }
        })
        .with_context(|| format!("reading {topic}"))?;
        Ok(n)
    };
    let dead = count(&args.dead_letter_topic, true)?;
    let consent = count(&args.consent_topic, false)?;
    tally.inputs(dead, consent);

    let figures = tally.summary(&policy);
    let undecoded = figures.undecoded_event_records.unwrap_or(0);
    let refused = figures.refused_event_records.unwrap_or(0);
    if let Some(path) = &args.summary_json {
        std::fs::write(path, serde_json::to_vec_pretty(&figures)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.report {
        std::fs::write(path, report::html(&figures))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "shareaudit report: {from} to {to}: {} events ({undecoded} records that do not decode, {refused} refused), {} with violations, {} dead letters, {} consent records; {} violations read ({} copies dropped, {unreadable} records of {} unreadable)",
        figures.inputs.events_judged,
        figures.inputs.events_with_violations,
        dead,
        consent,
        figures.clauses.iter().map(|c| c.violations).sum::<u64>()
            + figures.shadow.values().sum::<u64>(),
        figures.duplicates_dropped.unwrap_or(0),
        args.violations_topic,
    );
    Ok(OK)
}

/// Where a dead letter came from (its source headers: topic, partition,
/// offset), to tell a copy written again after a crash; `None` without them.
fn dead_letter_source(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<Vec<u8>> {
    use rdkafka::message::{Headers, Message};
    let headers = m.headers()?;
    let mut key = Vec::new();
    for name in [
        "shareaudit.source.topic",
        "shareaudit.source.partition",
        "shareaudit.source.offset",
    ] {
        let h = headers.iter().find(|h| h.key == name)?;
        key.extend_from_slice(h.value?);
        key.push(0);
    }
    Some(key)
}

/// An event record decoded as the daemon decodes it; a writer schema the
/// registry has not given yet is asked for (a few times) first.
fn decode(
    bytes: &[u8],
    schemas: &Schemas,
    runtime: &tokio::runtime::Runtime,
    event: &mut DataSharingEvent,
) -> Result<(), DecodeError> {
    for _ in 0..3 {
        match wire::decode_event_into(bytes, &*schemas.lookup, event) {
            Err(DecodeError::Pending(id)) => {
                if let Some(registry) = &schemas.registry {
                    let _ = runtime.block_on(registry.fetch(id));
                }
            }
            other => return other,
        }
    }
    Err(DecodeError::UnknownSchema(
        "the schema registry did not answer".into(),
    ))
}
