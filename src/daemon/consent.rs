//! The consent task: the compacted consent topic into the consent table,
//! read to its end before the event stage starts (`loaded`), then kept
//! current. Every `PROBE_EVERY` it asks the broker where each consent
//! partition ends (an end probe, off the runtime); after each record
//! applied and each answer, the reader's `ConsentSync` says how far in log
//! time the table is complete. A record whose writer schema is not known yet waits while the
//! registry is asked (consent records are never skipped for an outage); a
//! record that cannot be decoded is counted and logged without its values.

use super::{Schemas, SharedTable};
use crate::codec::{DecodeError, wire};
use crate::kafka::consent::{ConsentReader, ConsentRecord};
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the broker is asked where the consent partitions end: how
/// long, at most, an event logged just now waits for the table to be
/// known complete up to its time (plus one round trip).
pub const PROBE_EVERY: Duration = Duration::from_millis(5);

pub async fn run(
    mut reader: ConsentReader,
    table: SharedTable,
    schemas: Schemas,
    metrics: Arc<Metrics>,
    loaded: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let started = Instant::now();
    let mut announced = false;
    let mut probes = tokio::time::interval(PROBE_EVERY);
    probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut asking: Option<tokio::task::JoinHandle<_>> = None;
    let mut failures: u64 = 0;
    loop {
        if !announced && reader.caught_up() {
            announced = true;
            let users = table.read().unwrap_or_else(|p| p.into_inner()).users();
            tracing::info!(
                users,
                seconds = started.elapsed().as_secs_f64(),
                "consent table loaded"
            );
            let _ = loaded.send(true);
        }
        let record = tokio::select! {
            _ = stop.cancelled() => return,
            r = reader.next() => r,
            answer = async { asking.as_mut().expect("guarded").await }, if asking.is_some() => {
                asking = None;
                match answer {
                    Ok(Ok(probe)) => {
                        failures = 0;
                        reader.probed(&probe);
                    }
                    Ok(Err(e)) => {
                        failures += 1;
                        if failures.is_power_of_two() {
                            tracing::warn!(error = %e, failures, topic = %reader.topic, "consent topic: end probe failed; events logged since wait (consent_max_wait_ms)");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "consent topic: end probe task failed"),
                }
                continue;
            }
            _ = probes.tick(), if asking.is_none() => {
                asking = Some(tokio::task::spawn_blocking(reader.probe()));
                continue;
            }
        };
        match record {
            Ok(r) => {
                if !apply(&r, &table, &schemas, &metrics, &stop).await {
                    return;
                }
                reader.applied(&r);
            }
            Err(e) => tracing::warn!(error = %e, topic = %reader.topic, "consent topic"),
        }
    }
}

/// Applies one record; false when stopped while it waited for its schema.
async fn apply(
    r: &ConsentRecord,
    table: &SharedTable,
    schemas: &Schemas,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> bool {
    let outcome = match &r.payload {
        None => {
            if let Some(user) = r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()) {
                table
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(user);
            }
            "tombstone"
        }
        Some(bytes) => loop {
            match wire::decode_consent(bytes, schemas.lookup.as_ref()) {
                Ok(state) => {
                    table
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .upsert(state);
                    break "ok";
                }
                Err(DecodeError::Pending(id)) if schemas.registry.is_some() => {
                    let Some(registry) = &schemas.registry else {
                        break "invalid";
                    };
                    let answered = crate::codec::registry::fetch_until_answered(
                        registry,
                        id,
                        stop,
                        |e, tries| {
                            if tries.is_power_of_two() {
                                tracing::warn!(schema_id = id, tries, error = %e, "schema registry unavailable; the consent topic waits");
                            }
                        },
                    )
                    .await;
                    if !answered {
                        return false;
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        class = e.class(),
                        partition = r.partition,
                        offset = r.offset,
                        "consent record skipped: cannot be decoded"
                    );
                    break "invalid";
                }
            }
        },
    };
    metrics.consent_records.with_label_values(&[outcome]).inc();
    metrics
        .consent_users
        .set(table.read().unwrap_or_else(|p| p.into_inner()).users() as i64);
    true
}
