//! The command line (clap derive). `main.rs` only runs it and maps errors
//! to exit codes.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "shareaudit",
    version,
    about = "Audits every outbound personal-data sharing event against the 快手小店 privacy policy"
)]
pub struct Cli {
    /// Log level filter (tracing `EnvFilter` syntax), e.g. `info`, `shareaudit=debug`.
    #[arg(long, global = true, env = "SHAREAUDIT_LOG", default_value = "warn")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Audit events from files (JSON lines or Avro container files) offline.
    Audit(AuditArgs),
    /// Check, test or explain a policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Write synthetic traffic (events, consent states, expectations) to files.
    Generate(GenerateArgs),
    /// Print an Avro schema: event, consent or violation.
    Schema {
        #[arg(value_parser = ["event", "consent", "violation"])]
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Events: JSON lines, or an Avro object container file; `-` for stdin.
    #[arg(long)]
    pub events: PathBuf,
    /// Consent states (history, any order): JSON lines or Avro container file.
    /// A line `{"user_id": "...", "tombstone": true}` removes a user.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// The policy file; the embedded default when not given.
    #[arg(long, env = "SHAREAUDIT_POLICY")]
    pub policy: Option<PathBuf>,
    /// Write violations here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Key for `subject_ref` (HMAC-SHA-256 of the user id). Without it (or
    /// --hmac-key-file) a random key is used and subject_refs join only within this run.
    #[arg(long, env = "SHAREAUDIT_HMAC_KEY", hide_env_values = true)]
    pub hmac_key: Option<String>,
    /// Read the HMAC key from a file (its bytes, trailing newline removed).
    #[arg(long, conflicts_with = "hmac_key")]
    pub hmac_key_file: Option<PathBuf>,
    /// Judge as of this instant (RFC 3339): `detected_at`, and whether exceptions
    /// have expired. Default: now.
    #[arg(long)]
    pub detected_at: Option<String>,
    /// Input format; `auto` takes Avro when the file starts with the container magic `Obj\x01`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "json", "avro"])]
    pub format: String,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file: errors and warnings with line and column.
    Check {
        /// The policy file; the embedded default when not given.
        file: Option<PathBuf>,
    },
    /// Run policy test cases (YAML) like `opa test`.
    Test {
        /// A directory of case files (`*.yaml`) or one file.
        #[arg(default_value = "deploy/policy/tests")]
        dir: PathBuf,
        /// The policy under test; the embedded default when not given.
        #[arg(long, env = "SHAREAUDIT_POLICY")]
        policy: Option<PathBuf>,
        /// Print every case, not only failures.
        #[arg(long, short)]
        verbose: bool,
        /// Fail unless every rule has a violating and a compliant case.
        #[arg(long)]
        coverage: bool,
    },
    /// Explain a rule: its clause quoted from the policy, parameters, an example.
    Explain {
        /// A rule id, e.g. `minimisation.prohibited`; `all` lists every rule.
        rule: String,
        #[arg(long, env = "SHAREAUDIT_POLICY")]
        policy: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// How many events.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Users in the pool (every 50th has a special consent state).
    #[arg(long, default_value_t = 2000)]
    pub users: usize,
    /// Share of violating events, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.15)]
    pub violation_share: f64,
    /// Events as JSON lines.
    #[arg(long)]
    pub events: std::path::PathBuf,
    /// Consent states of the pool as JSON lines.
    #[arg(long)]
    pub state: Option<std::path::PathBuf>,
    /// Per event, the rule ids the default policy must fire: `{"event_id": ..., "expected": [...]}`.
    #[arg(long)]
    pub expected: Option<std::path::PathBuf>,
}
