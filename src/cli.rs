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
    /// The daemon: a consumer-group member that audits every event of the topic.
    Run(Box<RunArgs>),
    /// Everything on one machine, no Kafka installed: an embedded cluster,
    /// generated traffic, the daemon, its metrics, a live summary.
    Demo(DemoArgs),
    /// Audit events from files (JSON lines or Avro container files) offline.
    Audit(AuditArgs),
    /// Check, test or explain a policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The compliance report of a period from what the daemon wrote: the
    /// violations topic, and the records logged on the event, dead-letter and
    /// consent topics.
    Report(ReportArgs),
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
    /// An event dated more than this after the instant it is judged is refused
    /// (future event time), as the daemon refuses it.
    #[arg(long, default_value_t = shareaudit::config::DEFAULT_FUTURE_SKEW_MS)]
    pub max_future_skew_ms: u64,
    /// Input format; `auto` takes Avro when the file starts with the container magic `Obj\x01`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "json", "avro"])]
    pub format: String,
    /// Threads reading, decoding and judging JSON lines (finished in input
    /// order by one at a time, so the output is the same for any count).
    /// Default: the machine's cores.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
    /// Write the compliance report of the run here: one self-contained HTML
    /// page (Chinese and English), for the privacy officer.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the report's figures here as JSON.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
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

#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// A settings file (YAML); flags and environment variables override it.
    /// Repeatable: later files override earlier ones key by key, so that
    /// credentials can live in a file of their own (a Kubernetes Secret).
    #[arg(long, env = "SHAREAUDIT_CONFIG", value_delimiter = ',')]
    pub config: Vec<PathBuf>,
    /// Check the settings, the policy, the HMAC key, the schema files and the
    /// librdkafka properties, print what would run, and exit (0 or 2) without
    /// connecting to anything.
    #[arg(long)]
    pub check: bool,
    #[arg(long, env = "SHAREAUDIT_BROKERS")]
    pub brokers: Option<String>,
    #[arg(long, env = "SHAREAUDIT_GROUP_ID")]
    pub group_id: Option<String>,
    #[arg(long, env = "SHAREAUDIT_EVENTS_TOPIC")]
    pub events_topic: Option<String>,
    #[arg(long, env = "SHAREAUDIT_CONSENT_TOPIC")]
    pub consent_topic: Option<String>,
    #[arg(long, env = "SHAREAUDIT_VIOLATIONS_TOPIC")]
    pub violations_topic: Option<String>,
    #[arg(long, env = "SHAREAUDIT_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// The internal topic of the cluster-wide volume.recipient_rate stage
    /// (created when missing, like a Kafka Streams repartition topic).
    #[arg(long, env = "SHAREAUDIT_RECIPIENT_RATE_TOPIC")]
    pub recipient_rate_topic: Option<String>,
    /// json or avro, for the violations written.
    #[arg(long, env = "SHAREAUDIT_OUTPUT_FORMAT")]
    pub output_format: Option<String>,
    /// Frame Avro violations in the Confluent format with this schema id.
    #[arg(long)]
    pub violation_schema_id: Option<u32>,
    #[command(flatten)]
    pub schemas: SchemaArgs,
    /// The policy file (watched, and reloaded on SIGHUP); the embedded default when not given.
    #[arg(long, env = "SHAREAUDIT_POLICY")]
    pub policy: Option<PathBuf>,
    /// The key of subject_ref: a file holding it (or SHAREAUDIT_HMAC_KEY holding the key itself).
    #[arg(long, env = "SHAREAUDIT_HMAC_KEY_FILE")]
    pub hmac_key_file: Option<PathBuf>,
    /// Address of /metrics, /healthz, /readyz.
    #[arg(long, env = "SHAREAUDIT_LISTEN")]
    pub listen: Option<String>,
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// How far past the time it is judged an event may be dated; later, it is a dead letter (future_event_time).
    #[arg(long)]
    pub max_future_skew_ms: Option<u64>,
    /// How long an event may wait for the consent reader to catch up to its time (default 10000); then it is judged, marked stale.
    #[arg(long)]
    pub consent_max_wait_ms: Option<u64>,
    #[arg(long)]
    pub drain_timeout_ms: Option<u64>,
    #[arg(long)]
    pub commit_interval_ms: Option<u64>,
    /// A librdkafka property, passed through (repeatable): -X security.protocol=SASL_SSL
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = shareaudit::config::parse_property)]
    pub librdkafka: Vec<(String, String)>,
}

impl RunArgs {
    pub fn to_raw(&self) -> shareaudit::config::RawSettings {
        shareaudit::config::RawSettings {
            brokers: self.brokers.clone(),
            group_id: self.group_id.clone(),
            topics: shareaudit::config::RawTopics {
                events: self.events_topic.clone(),
                consent: self.consent_topic.clone(),
                violations: self.violations_topic.clone(),
                dead_letters: self.dead_letter_topic.clone(),
                recipient_rate: self.recipient_rate_topic.clone(),
            },
            output_format: self.output_format.clone(),
            violation_schema_id: self.violation_schema_id,
            schema_registry_url: self.schemas.schema_registry_url.clone(),
            schema_ids: self.schemas.schema_ids.iter().cloned().collect(),
            policy: self.policy.clone(),
            hmac_key_file: self.hmac_key_file.clone(),
            listen: self.listen.clone(),
            max_in_flight: self.max_in_flight,
            max_future_skew_ms: self.max_future_skew_ms,
            consent_max_wait_ms: self.consent_max_wait_ms,
            drain_timeout_ms: self.drain_timeout_ms,
            commit_interval_ms: self.commit_interval_ms,
            librdkafka: self.librdkafka.iter().cloned().collect(),
            ..Default::default()
        }
    }
}

/// Where the writer schemas of Confluent-framed records come from: `run`
/// and `report` read the same topics the same way.
#[derive(Debug, Args, Default)]
pub struct SchemaArgs {
    /// A Confluent schema registry, asked for writer schemas by id.
    #[arg(long, env = "SHAREAUDIT_SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
    /// A Confluent schema id known without a registry (repeatable): --schema-id 1=schemas/DataSharingEvent.avsc
    #[arg(long = "schema-id", value_name = "ID=FILE", value_parser = parse_schema_id)]
    pub schema_ids: Vec<(u32, PathBuf)>,
}

fn parse_schema_id(s: &str) -> Result<(u32, PathBuf), String> {
    let (id, path) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not ID=FILE"))?;
    let id = id
        .trim()
        .parse::<u32>()
        .map_err(|e| format!("`{id}` is not a schema id: {e}"))?;
    Ok((id, PathBuf::from(path)))
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Events per second the generator produces.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Address of /metrics, /healthz, /readyz.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: String,
    /// A policy file to audit with (watched and reloaded); the embedded default otherwise.
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[arg(long, env = "SHAREAUDIT_BROKERS")]
    pub brokers: String,
    /// Start of the period, included (RFC 3339, e.g. 2026-12-01T00:00:00+08:00).
    #[arg(long)]
    pub from: String,
    /// End of the period, excluded (RFC 3339); now when not given.
    #[arg(long)]
    pub to: Option<String>,
    /// Write the report here: one self-contained HTML file.
    #[arg(long, required_unless_present = "summary_json")]
    pub report: Option<PathBuf>,
    /// Write the report's figures here as JSON.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// The policy whose clauses, titles and exceptions the report shows; the
    /// embedded default when not given.
    #[arg(long, env = "SHAREAUDIT_POLICY")]
    pub policy: Option<PathBuf>,
    #[arg(long, default_value = "privacy.violations")]
    pub violations_topic: String,
    #[arg(long, default_value = "privacy.sharing-events")]
    pub events_topic: String,
    #[arg(long, default_value = "privacy.sharing-events.dlq")]
    pub dead_letter_topic: String,
    #[arg(long, default_value = "privacy.consent-state")]
    pub consent_topic: String,
    /// Give up reading a topic after this long.
    #[arg(long, default_value_t = 3600)]
    pub timeout_seconds: u64,
    #[command(flatten)]
    pub schemas: SchemaArgs,
    /// librdkafka properties for the consumers (repeatable): TLS, SASL.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = shareaudit::config::parse_property)]
    pub librdkafka: Vec<(String, String)>,
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
    /// Events as JSON lines (offline); or, with --brokers, nothing.
    #[arg(long, required_unless_present = "brokers")]
    pub events: Option<std::path::PathBuf>,
    /// Produce to a cluster instead of files: consent states, then events.
    #[arg(long)]
    pub brokers: Option<String>,
    /// With --brokers: events per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// With --brokers: poison records mixed in (random bytes, wrong magic, unknown schema id, invalid).
    #[arg(long, default_value_t = 0)]
    pub poison: usize,
    /// With --brokers: confluent (schema id 1), single-object or json.
    #[arg(long, default_value = "confluent", value_parser = ["confluent", "single-object", "json"])]
    pub framing: String,
    #[arg(long, default_value = "privacy.sharing-events")]
    pub events_topic: String,
    #[arg(long, default_value = "privacy.consent-state")]
    pub consent_topic: String,
    /// librdkafka properties for the producer (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = shareaudit::config::parse_property)]
    pub librdkafka: Vec<(String, String)>,
    /// Consent states of the pool as JSON lines.
    #[arg(long)]
    pub state: Option<std::path::PathBuf>,
    /// Per event, the rule ids the default policy must fire: `{"event_id": ..., "expected": [...]}`.
    #[arg(long)]
    pub expected: Option<std::path::PathBuf>,
}
