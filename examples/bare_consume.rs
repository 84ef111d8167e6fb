//! The baseline of the end-to-end benchmark (scripts/bench-e2e.py): the
//! daemon's own consumer (`kafka::source::Source`, same client settings,
//! records copied out as the pipeline gets them) in a loop that does
//! nothing else, until `--count` records are read. Prints events per second.
//!
//! cargo run --release --example bare_consume -- BROKERS TOPIC GROUP COUNT

use shareaudit::config::{RawSettings, Settings};
use shareaudit::kafka::Progress;
use shareaudit::kafka::source::Source;
use shareaudit::telemetry::Metrics;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, topic, group, count] = args.as_slice() else {
        return Err("usage: bare_consume BROKERS TOPIC GROUP COUNT".into());
    };
    let count: u64 = count.parse()?;
    let settings = Settings::from_raw(RawSettings {
        brokers: Some(brokers.clone()),
        ..RawSettings::default()
    })?;
    // The daemon's consumer, awaited on a runtime as the daemon awaits it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _inside = runtime.enter();
    let progress = Arc::new(Progress::new(Arc::new(Metrics::new()?), topic));
    let source = Source::new(&settings, topic, group, progress)?;
    let (mut n, mut bytes, mut first) = (0u64, 0usize, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    runtime.block_on(async {
        while n < count && Instant::now() < deadline {
            if let Ok(Ok(rec)) =
                tokio::time::timeout(Duration::from_millis(100), source.recv()).await
            {
                first.get_or_insert_with(Instant::now);
                bytes += rec.payload.map_or(0, |p| p.len());
                n += 1;
            }
        }
    });
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    println!(
        "{{\"events\": {n}, \"bytes\": {bytes}, \"seconds\": {secs:.3}, \"events_per_second\": {:.0}}}",
        n as f64 / secs.max(1e-9)
    );
    Ok(())
}
