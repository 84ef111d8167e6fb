//! `shareaudit generate`: synthetic traffic to files.

use super::OK;
use crate::cli::GenerateArgs;
use anyhow::{Context, Result};
use shareaudit::generate::{self, Options};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

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
    let mut events = create(&args.events)?;
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
