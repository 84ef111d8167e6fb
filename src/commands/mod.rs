//! The commands behind the CLI. They do the I/O (files, stdin, stdout) and
//! call the pure layers. Each returns the process exit code.

pub mod audit;
pub mod demo;
pub mod generate;
pub mod policy;
pub mod report;
pub mod run;

use shareaudit::model::Timestamp;
use shareaudit::policy::{Loaded, PolicyError};
use std::path::Path;

/// Exit codes shared by the commands.
pub const OK: i32 = 0;
/// Findings: violations (audit), errors (policy check), failures (policy test).
pub const FOUND: i32 = 1;
/// Usage or input error.
pub const INPUT_ERROR: i32 = 2;

/// The policy an offline command judges or reports with: its warnings
/// printed; `None` when it is refused, its errors printed (the command
/// then exits `INPUT_ERROR`).
pub fn policy_for(path: Option<&Path>, now: Timestamp) -> Option<shareaudit::policy::Policy> {
    match load_policy(path, now) {
        Ok((loaded, _, name)) => {
            for w in &loaded.warnings {
                eprintln!("{}", shareaudit::policy::format_finding(&name, w));
            }
            Some(loaded.policy)
        }
        Err(e) => {
            eprint!("{e}");
            None
        }
    }
}

/// Loads a policy file, or the embedded default.
pub fn load_policy(
    path: Option<&Path>,
    now: Timestamp,
) -> Result<(Loaded, String, String), PolicyError> {
    let s = shareaudit::config::load_policy(path, now)?;
    Ok((s.loaded, s.text, s.name))
}
