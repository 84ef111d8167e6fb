//! `shareaudit run`: the daemon.

use super::{INPUT_ERROR, OK};
use crate::cli::RunArgs;
use anyhow::{Context, Result};
use shareaudit::audit::Engine;
use shareaudit::codec::registry::Registry;
use shareaudit::codec::wire::LocalSchemas;
use shareaudit::config::{RawSettings, Settings};
use shareaudit::daemon::{self, Daemon, Schemas};
use shareaudit::model::{PolicyVersion, Timestamp};
use shareaudit::policy::format_finding;
use shareaudit::telemetry::{Metrics, http};
use std::sync::Arc;

/// The HMAC key: SHAREAUDIT_HMAC_KEY, or the file the settings name.
pub fn hmac_key(settings: &Settings) -> Result<Vec<u8>> {
    if let Ok(k) = std::env::var("SHAREAUDIT_HMAC_KEY")
        && !k.is_empty()
    {
        return Ok(shareaudit::config::hmac_key(
            k.into_bytes(),
            "SHAREAUDIT_HMAC_KEY",
        )?);
    }
    let Some(path) = &settings.hmac_key_file else {
        anyhow::bail!(
            "no HMAC key for subject_ref: set SHAREAUDIT_HMAC_KEY or --hmac-key-file (a Kubernetes Secret)"
        );
    };
    Ok(shareaudit::config::read_hmac_key(path)?)
}

/// `run --check`: everything `run` reads before it connects, read and
/// validated; librdkafka itself judges its properties (a consumer and a
/// producer are created, which opens no connection).
fn check(settings: &Settings, policy: &str, version: &PolicyVersion) -> Result<i32> {
    if let Err(e) = schemas(settings) {
        eprintln!("shareaudit run --check: {e:#}");
        return Ok(INPUT_ERROR);
    }
    let clients = shareaudit::kafka::check_properties(settings);
    if let Err(e) = clients {
        eprintln!("shareaudit run --check: librdkafka properties: {e}");
        return Ok(INPUT_ERROR);
    }
    println!(
        "ok: brokers {}, group {}, topics {} -> {} (dead letters {}, consent {}), policy {policy} version {} ({}), metrics on {}",
        settings.brokers,
        settings.group_id,
        settings.topics.events,
        settings.topics.violations,
        settings.topics.dead_letters,
        settings.topics.consent,
        version.version,
        version.hash,
        settings.listen,
    );
    Ok(OK)
}

/// Our schemas, ids mapped to schema files, and the registry if configured.
pub fn schemas(settings: &Settings) -> Result<Schemas> {
    let mut local = LocalSchemas::ours()?;
    for (id, path) in &settings.schema_ids {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("schema id {id}: cannot read {}", path.display()))?;
        let schema = shareaudit::codec::avro::parse_schema(&text)
            .map_err(|e| anyhow::anyhow!("schema id {id}: {}: {e}", path.display()))?;
        local.add_id(*id, Arc::new(schema));
    }
    Ok(match &settings.schema_registry {
        Some(r) => Schemas::registry(Registry::new(r.clone(), local).map_err(anyhow::Error::msg)?),
        None => Schemas::local(local),
    })
}

pub fn run(args: &RunArgs) -> Result<i32> {
    let mut file = RawSettings::default();
    for p in &args.config {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("cannot read settings {}", p.display()))?;
        file = file.merge(RawSettings::from_yaml(&text, &p.display().to_string())?);
    }
    let raw = file
        .merge(RawSettings::secrets_from_env())
        .merge(args.to_raw());
    let settings = match Settings::from_raw(raw) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shareaudit run: {e}");
            return Ok(INPUT_ERROR);
        }
    };
    let (loaded, _, name) = match super::load_policy(settings.policy.as_deref(), Timestamp::now()) {
        Ok(x) => x,
        Err(e) => {
            eprint!("{e}");
            return Ok(INPUT_ERROR);
        }
    };
    for w in &loaded.warnings {
        tracing::warn!(finding = %format_finding(&name, w), "policy warning");
    }
    let key = hmac_key(&settings)?;
    if args.check {
        return check(&settings, &name, &loaded.policy.version);
    }
    let metrics = Arc::new(Metrics::new()?);
    let listener = http::bind(&settings.listen)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    tracing::info!(listen = %listener.local_addr()?, brokers = %settings.brokers, group = %settings.group_id, "shareaudit running");
    let engine = Engine::new(Arc::new(loaded.policy), &key);
    let schemas = schemas(&settings)?;
    let daemon = Daemon::new(settings, engine, schemas, metrics)
        .with_http(listener)
        .with_signals();
    daemon::runtime()?.block_on(daemon.run(tokio_util::sync::CancellationToken::new()))?;
    Ok(OK)
}
