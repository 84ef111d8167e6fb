//! The one stage loop and the one drain, shared by the event stage and the
//! rate stage. A stage is a consumer-group member whose records become
//! outputs; the loop owns its consumer and producer and runs, on one task:
//!
//! - acknowledgements first: delivery reports update the watermarks as
//!   they come (on the producer's thread); what a stage waits on besides
//!   records (a writer schema) is handled before new records are read;
//! - retries of failed outputs (with backoff), commits of the acknowledged
//!   prefix, lag, the stage's periodic work;
//! - records, in batches, while fewer than `max_in_flight` are
//!   unacknowledged; past that, fetching pauses and the loop goes on
//!   serving heartbeats and rebalances;
//! - on cancellation: stop fetching, wait for every output (within the
//!   drain deadline, retrying), commit, leave the group.

use crate::config::Settings;
use crate::kafka::sink::Sink;
use crate::kafka::source::Source;
use crate::kafka::{Marks, Output, Progress, Record, Ticket};
use crate::telemetry::Metrics;
use futures::FutureExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

/// Records handled in one go before the loop looks at its timers again.
const BATCH: usize = 256;

/// What a stage works with: its topic's consumer and watermarks, its producer.
pub struct StageIo {
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub progress: Arc<Progress>,
    pub source: Source,
    pub sink: Sink,
}

impl StageIo {
    /// Sends the outputs of the record at `offset` of `partition`; the
    /// record is done when the broker acknowledged them all.
    pub fn deliver(&self, partition: i32, offset: i64, outputs: Vec<(Output, Option<i64>)>) {
        for (output, occurred_at_ms) in outputs {
            self.sink.deliver(
                output,
                Ticket {
                    partition,
                    offset,
                    occurred_at_ms,
                },
            );
        }
        self.progress.notify();
    }
}

/// A stage: what it does with a record, with a rebalance, now and then.
pub trait Stage {
    /// A record of the stage's topic, in offset order per partition.
    fn record(&mut self, io: &mut StageIo, rec: Record);

    /// Partitions assigned (true) or revoked (false) since the last call.
    fn rebalanced(
        &mut self,
        io: &mut StageIo,
        changes: Vec<(i32, bool)>,
    ) -> impl std::future::Future<Output = ()>;

    /// After each batch of records and every tick: work that became due.
    fn tick(&mut self, io: &mut StageIo);

    /// After each commit interval's commit.
    fn committed(&mut self, _io: &mut StageIo) {}

    /// Something the stage waited for arrived (a writer schema's id).
    fn woken(&mut self, _io: &mut StageIo, _id: u32) {}

    /// Whether fetching is paused for backpressure now.
    fn backpressure(&self, marks: &Marks, settings: &Settings, paused: bool) -> bool {
        let in_flight = marks.in_flight();
        if paused {
            in_flight >= settings.max_in_flight / 2
        } else {
            in_flight >= settings.max_in_flight
        }
    }

    /// The drain is starting: the stage is no longer ready.
    fn stopping(&mut self, _io: &mut StageIo) {}

    /// The drain is over (committed, left the group).
    fn stopped(&mut self, _io: &mut StageIo) {}
}

/// Runs `stage` until `stop` is cancelled, then drains, commits and leaves.
/// `wakes` carries what the stage's own tasks finished (schema fetches).
pub async fn run<S: Stage>(
    mut io: StageIo,
    mut stage: S,
    mut wakes: mpsc::UnboundedReceiver<u32>,
    stop: CancellationToken,
) {
    // One timer for the periodic work, each part on its own schedule, so
    // that no part can starve another however long it takes.
    let mut timer = ticker(Duration::from_millis(50));
    let mut due = Due::new(&io.settings);
    loop {
        let changes = io.progress.take_rebalances();
        if !changes.is_empty() {
            stage.rebalanced(&mut io, changes).await;
        }
        let pause = stage.backpressure(&io.progress.lock(), &io.settings, io.source.is_paused());
        io.source.set_paused(pause);

        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(id) = wakes.recv() => stage.woken(&mut io, id),
            _ = timer.tick() => {
                let now = Instant::now();
                if due.retry.take(now) {
                    io.sink.retry();
                }
                if due.commit.take(now) {
                    io.source.commit_watermarks(&io.progress, false);
                    stage.committed(&mut io);
                }
                if due.lag.take(now) {
                    io.source.update_lag(&io.progress);
                }
                stage.tick(&mut io);
            }
            r = io.source.recv() => {
                // More records already fetched are taken without going round the timers.
                let mut next = Some(r);
                let mut n = 0;
                while let Some(r) = next.take() {
                    // An assignment made inside `recv` is the stage's to see before its records.
                    let changes = io.progress.take_rebalances();
                    if !changes.is_empty() {
                        stage.rebalanced(&mut io, changes).await;
                    }
                    match r {
                        Ok(rec) => stage.record(&mut io, rec),
                        Err(e) => tracing::warn!(topic = %io.progress.topic, error = %e, "consumer"),
                    }
                    n += 1;
                    if n < BATCH && io.progress.lock().in_flight() < io.settings.max_in_flight {
                        next = io.source.recv().now_or_never();
                    }
                }
                stage.tick(&mut io);
            }
        }
    }
    drain(&mut io, &mut stage).await;
}

/// When each part of the periodic work is next due.
struct Due {
    retry: Every,
    commit: Every,
    lag: Every,
}

impl Due {
    fn new(settings: &Settings) -> Due {
        Due {
            retry: Every::new(Duration::from_millis(200)),
            commit: Every::new(settings.commit_interval),
            lag: Every::new(Duration::from_secs(5)),
        }
    }
}

struct Every {
    period: Duration,
    next: Instant,
}

impl Every {
    fn new(period: Duration) -> Every {
        Every {
            period,
            next: Instant::now() + period,
        }
    }

    /// Whether it is due at `now`; if so, the next time is a period on.
    fn take(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.period;
        true
    }
}

fn ticker(every: Duration) -> tokio::time::Interval {
    let mut t = interval(every.max(Duration::from_millis(1)));
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// Stop fetching, wait for every output sent to be acknowledged (sending
/// retries), commit, leave the group. Records read now are left for the
/// next owner: the commit stops before them.
async fn drain<S: Stage>(io: &mut StageIo, stage: &mut S) {
    stage.stopping(io);
    io.source.set_paused(true);
    let deadline = Instant::now() + io.settings.drain_timeout;
    loop {
        io.sink.retry();
        // Serves rebalance callbacks; a record read now is not begun.
        let _ = tokio::time::timeout(Duration::from_millis(5), io.source.recv()).await;
        let step = (Instant::now() + Duration::from_millis(100)).min(deadline);
        if io.progress.settled(step, Marks::drained).await {
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                topic = %io.progress.topic,
                in_flight = io.progress.lock().in_flight(),
                "drain deadline reached; committing the acknowledged prefix only"
            );
            break;
        }
    }
    io.source.commit_watermarks(&io.progress, true);
    io.source.close();
    tokio::task::block_in_place(|| io.sink.flush(Duration::from_secs(1)));
    stage.stopped(io);
    tracing::info!(topic = %io.progress.topic, "drained and committed; leaving");
}
