//! `shareaudit generate`: synthetic traffic to files.

use super::OK;
use crate::cli::GenerateArgs;
use anyhow::{Context, Result};
use shareaudit::config::{RawSettings, Settings};
use shareaudit::demo::generate::Generated;
use shareaudit::demo::generate::{self, Options};
use shareaudit::demo::traffic::{self, Framing, Traffic};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn create(path: &Path) -> Result<BufWriter<File>> {
    Ok(BufWriter::new(File::create(path).with_context(|| {
        format!("cannot create {}", path.display())
    })?))
}

pub fn run(args: &GenerateArgs) -> Result<i32> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.violation_share),
        "--violation-share must be between 0 and 1"
    );
    anyhow::ensure!(
        args.users >= 50,
        "--users must be at least 50 (every 50th user has a special consent state)"
    );
    let o = Options {
        seed: args.seed,
        users: args.users,
        violation_share: args.violation_share,
        ..Options::default()
    };
    let stream = generate::events(&o, args.count);
    if let Some(brokers) = &args.brokers {
        return to_brokers(args, brokers, &o, &stream);
    }
    let Some(events_path) = &args.events else {
        anyhow::bail!("give --events FILE, or --brokers");
    };
    let mut events = create(events_path)?;
    for g in &stream {
        serde_json::to_writer(&mut events, &g.event)?;
        events.write_all(b"\n")?;
    }
    events.flush()?;
    if let Some(path) = &args.state {
        let mut w = create(path)?;
        for s in generate::consent_states(&o) {
            serde_json::to_writer(&mut w, &s)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    if let Some(path) = &args.expected {
        let mut w = create(path)?;
        for g in &stream {
            serde_json::to_writer(
                &mut w,
                &serde_json::json!({"event_id": g.event.event_id, "expected": g.expected}),
            )?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    let violating = stream.iter().filter(|g| !g.expected.is_empty()).count();
    eprintln!(
        "shareaudit generate: {} events ({violating} violating), seed {}",
        stream.len(),
        args.seed
    );
    Ok(OK)
}

/// Produces consent states, then events (and poison) to a cluster. With
/// `--expected`, writes per event the rules it must trip and per poison
/// record the dead-letter class it must get.
fn to_brokers(
    args: &GenerateArgs,
    brokers: &str,
    o: &Options,
    stream: &[Generated],
) -> Result<i32> {
    let raw = RawSettings {
        brokers: Some(brokers.to_owned()),
        librdkafka: args.librdkafka.iter().cloned().collect(),
        ..RawSettings::default()
    };
    let settings = Settings::from_raw(raw).map_err(|e| anyhow::anyhow!("{e}"))?;
    let framing = match args.framing.as_str() {
        "json" => Framing::Json,
        "single-object" => Framing::SingleObject,
        _ => Framing::Confluent(1),
    };
    let poison = traffic::poison(args.poison, args.seed, framing);
    let t = Traffic::new(&settings)?;
    t.consent_states(&args.consent_topic, o)?;
    t.flush(Duration::from_secs(30))?;
    let sent = t.events(
        &args.events_topic,
        stream,
        &poison,
        framing,
        args.rate,
        &AtomicBool::new(false),
    )?;
    t.flush(Duration::from_secs(60))?;
    if let Some(path) = &args.expected {
        let mut w = create(path)?;
        for g in stream {
            serde_json::to_writer(
                &mut w,
                &serde_json::json!({"event_id": g.event.event_id, "expected": g.expected}),
            )?;
            w.write_all(b"\n")?;
        }
        for p in &poison {
            serde_json::to_writer(
                &mut w,
                &serde_json::json!({"key": p.key, "dead_letter": p.class}),
            )?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    eprintln!(
        "shareaudit generate: {sent} events and {} poison records to {brokers}, {} consent states",
        poison.len(),
        o.users
    );
    Ok(OK)
}
