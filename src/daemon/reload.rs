//! The policy in force, and its reloads: the policy file is read again on
//! SIGHUP and whenever its modification time changes (a ConfigMap update
//! swaps a symlink; metadata follows it). A valid policy is published to
//! the stages; a bad one is refused, logged with its line and column, and
//! counted, and the running policy stays.

use crate::config::load_policy;
use crate::model::Timestamp;
use crate::policy::{Policy, format_finding};
use crate::telemetry::Metrics;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Watches `path` every `poll` and on `hup`, publishing each valid policy
/// on `policy`, until `stop`.
pub async fn run(
    path: Option<PathBuf>,
    poll: Duration,
    policy: watch::Sender<Arc<Policy>>,
    metrics: Arc<Metrics>,
    hup: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut seen = path.as_deref().and_then(modified);
    let mut tick = tokio::time::interval(poll.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let asked = tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup.notified() => true,
            _ = tick.tick() => false,
        };
        let Some(p) = &path else {
            if asked {
                tracing::info!("reload asked; the embedded default policy has nothing to reload");
            }
            continue;
        };
        let now = modified(p);
        if !asked && now == seen {
            continue;
        }
        seen = now;
        reload(p, &policy, &metrics);
    }
}

fn reload(path: &std::path::Path, policy: &watch::Sender<Arc<Policy>>, metrics: &Metrics) {
    match load_policy(Some(path), Timestamp::now()) {
        Ok(loaded) => {
            for w in &loaded.loaded.warnings {
                tracing::warn!(finding = %format_finding(&loaded.name, w), "policy warning");
            }
            metrics.set_policy(&loaded.loaded.policy);
            metrics.policy_reloads.with_label_values(&["ok"]).inc();
            tracing::info!(version = %loaded.loaded.policy.version.version, hash = %loaded.loaded.policy.version.hash, "policy reloaded");
            policy.send_replace(Arc::new(loaded.loaded.policy));
        }
        Err(e) => {
            metrics.policy_reloads.with_label_values(&["error"]).inc();
            tracing::error!(error = %e, "policy reload refused; the running policy stays");
        }
    }
}
