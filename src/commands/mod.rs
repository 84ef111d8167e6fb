//! The commands behind the CLI. They do the I/O (files, stdin, stdout) and
//! call the pure layers. Each returns the process exit code.

pub mod audit;
pub mod demo;
pub mod generate;
pub mod policy;
pub mod run;

use shareaudit::model::Timestamp;
use shareaudit::policy::{self as pol, Loaded, PolicyError};
use std::path::Path;

/// Exit codes shared by the commands.
pub const OK: i32 = 0;
/// Findings: violations (audit), errors (policy check), failures (policy test).
pub const FOUND: i32 = 1;
/// Usage or input error.
pub const INPUT_ERROR: i32 = 2;

/// Loads a policy file, or the embedded default; warnings go to stderr.
pub fn load_policy(
    path: Option<&Path>,
    now: Timestamp,
) -> Result<(Loaded, String, String), PolicyError> {
    let (text, name) = match path {
        None => (
            pol::DEFAULT_POLICY.to_owned(),
            pol::DEFAULT_POLICY_NAME.to_owned(),
        ),
        Some(p) => {
            let name = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| PolicyError {
                file: name.clone(),
                findings: vec![pol::Finding {
                    level: pol::Level::Error,
                    line: 1,
                    column: 1,
                    path: String::new(),
                    message: format!("cannot read: {e}"),
                }],
            })?;
            (text, name)
        }
    };
    let loaded = pol::load(&text, &name, now)?;
    let v = &loaded.policy.version;
    tracing::info!(policy = %name, version = %v.version, hash = %v.hash, warnings = loaded.warnings.len(), "policy loaded");
    Ok((loaded, text, name))
}
