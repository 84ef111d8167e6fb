//! The daemon's settings, in two stages: `RawSettings` (what a file, the
//! environment and flags say; every field optional) merged in that order,
//! then validated into `Settings` (every field decided).

use crate::model::Timestamp;
use crate::policy::{self, Loaded, PolicyError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    pub brokers: Option<String>,
    pub group_id: Option<String>,
    #[serde(default)]
    pub topics: RawTopics,
    /// `json` or `avro` for the violations written.
    pub output_format: Option<String>,
    /// With `output_format: avro`: frame violations in the Confluent format
    /// with this schema id (else Avro single-object encoding).
    pub violation_schema_id: Option<u32>,
    pub schema_registry_url: Option<String>,
    /// A PEM file of CA certificates for an `https` registry (else the system's roots).
    pub schema_registry_ca_file: Option<PathBuf>,
    /// Basic auth for the registry (settings file, or
    /// `SHAREAUDIT_SCHEMA_REGISTRY_USERNAME`/`_PASSWORD`; never a flag).
    pub schema_registry_username: Option<String>,
    pub schema_registry_password: Option<String>,
    /// A bearer token for the registry (settings file, or `SHAREAUDIT_SCHEMA_REGISTRY_TOKEN`).
    pub schema_registry_token: Option<String>,
    pub schema_registry_timeout_ms: Option<u64>,
    /// How long an id the registry does not know is answered "unknown"
    /// before it is asked again.
    pub schema_registry_unknown_ttl_ms: Option<u64>,
    /// Confluent schema id -> `.avsc` file, for producers' ids known without a registry.
    #[serde(default)]
    pub schema_ids: BTreeMap<u32, PathBuf>,
    pub policy: Option<PathBuf>,
    pub hmac_key_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub max_in_flight: Option<usize>,
    /// How far past the time it is judged an event may be dated (clock
    /// skew); later, it is a dead letter (`future_event_time`).
    pub max_future_skew_ms: Option<u64>,
    /// How long an event may wait for the consent reader to catch up to its
    /// time; after that it is judged with the consent view as it is (stale).
    pub consent_max_wait_ms: Option<u64>,
    pub commit_interval_ms: Option<u64>,
    pub drain_timeout_ms: Option<u64>,
    pub policy_poll_ms: Option<u64>,
    /// librdkafka properties passed through as they are (`-X key=value`),
    /// TLS and SASL included (`security.protocol`, `ssl.ca.location`, `sasl.mechanisms`, ...).
    #[serde(default)]
    pub librdkafka: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopics {
    pub events: Option<String>,
    pub consent: Option<String>,
    pub violations: Option<String>,
    pub dead_letters: Option<String>,
    /// The internal topic of the cluster-wide recipient-rate stage.
    pub recipient_rate: Option<String>,
}

impl RawSettings {
    /// `over` wins where it says something; maps are merged key by key.
    pub fn merge(mut self, over: RawSettings) -> RawSettings {
        macro_rules! take {
            ($($f:ident).+) => { if over.$($f).+.is_some() { self.$($f).+ = over.$($f).+.clone(); } };
        }
        take!(brokers);
        take!(group_id);
        take!(topics.events);
        take!(topics.consent);
        take!(topics.violations);
        take!(topics.dead_letters);
        take!(topics.recipient_rate);
        take!(output_format);
        take!(violation_schema_id);
        take!(schema_registry_url);
        take!(schema_registry_ca_file);
        take!(schema_registry_username);
        take!(schema_registry_password);
        take!(schema_registry_token);
        take!(schema_registry_timeout_ms);
        take!(schema_registry_unknown_ttl_ms);
        take!(policy);
        take!(hmac_key_file);
        take!(listen);
        take!(max_in_flight);
        take!(max_future_skew_ms);
        take!(consent_max_wait_ms);
        take!(commit_interval_ms);
        take!(drain_timeout_ms);
        take!(policy_poll_ms);
        self.schema_ids.extend(over.schema_ids);
        self.librdkafka.extend(over.librdkafka);
        self
    }

    /// The registry's credentials from the environment (secrets are never
    /// flags: argv is visible to every process on the host).
    pub fn secrets_from_env() -> RawSettings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        RawSettings {
            schema_registry_username: var("SHAREAUDIT_SCHEMA_REGISTRY_USERNAME"),
            schema_registry_password: var("SHAREAUDIT_SCHEMA_REGISTRY_PASSWORD"),
            schema_registry_token: var("SHAREAUDIT_SCHEMA_REGISTRY_TOKEN"),
            ..RawSettings::default()
        }
    }

    /// Parses a settings file (YAML).
    pub fn from_yaml(text: &str, file: &str) -> Result<RawSettings, ConfigError> {
        serde_norway::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            ConfigError(format!(
                "{file}:{line}:{column}: {}",
                e.to_string().split(" at line ").next().unwrap_or_default()
            ))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputFormat {
    Json,
    /// Avro: Confluent-framed with this id, or single-object encoded.
    Avro {
        schema_id: Option<u32>,
    },
}

#[derive(Debug, Clone)]
pub struct Topics {
    pub events: String,
    pub consent: String,
    pub violations: String,
    pub dead_letters: String,
    pub recipient_rate: String,
}

/// Five minutes: an event dated later than this past the time it is
/// judged is a dead letter.
pub const DEFAULT_FUTURE_SKEW_MS: u64 = 300_000;

/// How to ask the schema registry.
#[derive(Clone)]
pub struct RegistrySettings {
    /// The base URL, without credentials (those given in it moved to `auth`).
    pub url: String,
    pub ca_file: Option<PathBuf>,
    pub auth: Option<RegistryAuth>,
    pub timeout: Duration,
    pub unknown_id_ttl: Duration,
}

#[derive(Clone)]
pub enum RegistryAuth {
    Basic { username: String, password: String },
    Bearer(String),
}

impl RegistrySettings {
    /// The URL as logs and errors may show it (it holds no credentials).
    pub fn display_url(&self) -> &str {
        &self.url
    }

    fn from_raw(raw: &RawSettings) -> Result<Option<RegistrySettings>, ConfigError> {
        let Some(url) = raw.schema_registry_url.as_deref().map(str::trim) else {
            return Ok(None);
        };
        let bad = |m: &str| ConfigError(format!("schema_registry_url: {m}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected http://host:port or https://host:port"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("expected an http or https URL"));
        }
        // Credentials in the URL (`https://user:secret@host`) move to basic auth.
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let mut auth = match (&raw.schema_registry_username, &raw.schema_registry_password) {
            (Some(u), Some(p)) => Some(RegistryAuth::Basic {
                username: u.clone(),
                password: p.clone(),
            }),
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError(
                    "schema registry basic auth needs both a username and a password".into(),
                ));
            }
            (None, None) => None,
        };
        if let Some(u) = userinfo {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            auth = Some(RegistryAuth::Basic {
                username: user.to_owned(),
                password: pass.to_owned(),
            });
        }
        if let Some(t) = &raw.schema_registry_token {
            if auth.is_some() {
                return Err(ConfigError(
                    "schema registry: give basic auth or a bearer token, not both".into(),
                ));
            }
            auth = Some(RegistryAuth::Bearer(t.clone()));
        }
        let timeout = Duration::from_millis(raw.schema_registry_timeout_ms.unwrap_or(5_000));
        if timeout.is_zero() {
            return Err(bad("schema_registry_timeout_ms must be at least 1"));
        }
        Ok(Some(RegistrySettings {
            url: format!("{scheme}://{host}{path}"),
            ca_file: raw.schema_registry_ca_file.clone(),
            auth,
            timeout,
            unknown_id_ttl: Duration::from_millis(
                raw.schema_registry_unknown_ttl_ms.unwrap_or(60_000),
            ),
        }))
    }
}

impl std::fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySettings")
            .field("url", &self.url)
            .field("ca_file", &self.ca_file)
            .field(
                "auth",
                &match self.auth {
                    Some(RegistryAuth::Basic { .. }) => "basic (redacted)",
                    Some(RegistryAuth::Bearer(_)) => "bearer (redacted)",
                    None => "none",
                },
            )
            .field("timeout", &self.timeout)
            .field("unknown_id_ttl", &self.unknown_id_ttl)
            .finish()
    }
}

/// Settings the daemon runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub brokers: String,
    pub group_id: String,
    pub topics: Topics,
    pub output: OutputFormat,
    pub schema_registry: Option<RegistrySettings>,
    pub schema_ids: BTreeMap<u32, PathBuf>,
    pub policy: Option<PathBuf>,
    pub hmac_key_file: Option<PathBuf>,
    pub listen: String,
    pub max_in_flight: usize,
    pub max_future_skew: Duration,
    pub consent_max_wait: Duration,
    /// The producers' `message.max.bytes` (librdkafka's default unless
    /// passed through): dead letters are cut to fit it.
    pub max_message_bytes: usize,
    pub commit_interval: Duration,
    pub drain_timeout: Duration,
    pub policy_poll: Duration,
    pub librdkafka: BTreeMap<String, String>,
}

impl Settings {
    /// The consumer group of the recipient-rate stage (its own: it reads
    /// another topic, and its partitions move independently).
    pub fn rate_group_id(&self) -> String {
        format!("{}.recipient-rate", self.group_id)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// `key=value` of a `-X` flag.
pub fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

impl Settings {
    pub fn from_raw(raw: RawSettings) -> Result<Settings, ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        let schema_registry = RegistrySettings::from_raw(&raw)?;
        let Some(brokers) = raw.brokers.filter(|b| !b.trim().is_empty()) else {
            return err(
                "no brokers: give --brokers, SHAREAUDIT_BROKERS or `brokers:` in the settings file"
                    .into(),
            );
        };
        let output = match raw.output_format.as_deref().unwrap_or("json") {
            "json" => OutputFormat::Json,
            "avro" => OutputFormat::Avro {
                schema_id: raw.violation_schema_id,
            },
            other => return err(format!("output_format `{other}`: expected json or avro")),
        };
        let max_in_flight = raw.max_in_flight.unwrap_or(10_000);
        if max_in_flight == 0 {
            return err("max_in_flight must be at least 1".into());
        }
        // Our own producer and consumer settings are not for the passthrough to undo.
        for key in [
            "enable.auto.commit",
            "enable.auto.offset.store",
            "acks",
            "group.id",
            "bootstrap.servers",
        ] {
            if raw.librdkafka.contains_key(key) {
                return err(format!(
                    "librdkafka property `{key}` is set by shareaudit itself and cannot be overridden"
                ));
            }
        }
        let drain_timeout = Duration::from_millis(raw.drain_timeout_ms.unwrap_or(8_000));
        let max_message_bytes = match raw
            .librdkafka
            .get("producer.message.max.bytes")
            .or_else(|| raw.librdkafka.get("message.max.bytes"))
        {
            None => 1_000_000,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n >= 4096 => n,
                _ => {
                    return err(format!(
                        "message.max.bytes `{v}`: expected a number of bytes, at least 4096"
                    ));
                }
            },
        };
        let t = raw.topics;
        Ok(Settings {
            brokers,
            group_id: raw.group_id.unwrap_or_else(|| "shareaudit".into()),
            topics: Topics {
                events: t.events.unwrap_or_else(|| "privacy.sharing-events".into()),
                consent: t.consent.unwrap_or_else(|| "privacy.consent-state".into()),
                violations: t.violations.unwrap_or_else(|| "privacy.violations".into()),
                dead_letters: t
                    .dead_letters
                    .unwrap_or_else(|| "privacy.sharing-events.dlq".into()),
                recipient_rate: t
                    .recipient_rate
                    .unwrap_or_else(|| "shareaudit.recipient-rate".into()),
            },
            output,
            schema_registry,
            schema_ids: raw.schema_ids,
            policy: raw.policy,
            hmac_key_file: raw.hmac_key_file,
            listen: raw.listen.unwrap_or_else(|| "0.0.0.0:9464".into()),
            max_in_flight,
            max_message_bytes,
            max_future_skew: Duration::from_millis(
                raw.max_future_skew_ms.unwrap_or(DEFAULT_FUTURE_SKEW_MS),
            ),
            consent_max_wait: Duration::from_millis(raw.consent_max_wait_ms.unwrap_or(10_000)),
            commit_interval: Duration::from_millis(raw.commit_interval_ms.unwrap_or(500)),
            drain_timeout,
            policy_poll: Duration::from_millis(raw.policy_poll_ms.unwrap_or(2_000)),
            librdkafka: raw.librdkafka,
        })
    }
}

/// The shortest `subject_ref` key accepted: a shorter one can be guessed,
/// and every user's ref with it.
pub const MIN_HMAC_KEY_BYTES: usize = 16;

/// A `subject_ref` key as given, checked: at least `MIN_HMAC_KEY_BYTES`.
/// `origin` names where it came from, for the error.
pub fn hmac_key(key: Vec<u8>, origin: &str) -> Result<Vec<u8>, ConfigError> {
    if key.len() < MIN_HMAC_KEY_BYTES {
        return Err(ConfigError(format!(
            "the HMAC key from {origin} is {} bytes; at least {MIN_HMAC_KEY_BYTES} are needed (e.g. head -c 32 /dev/urandom > hmac.key)",
            key.len()
        )));
    }
    Ok(key)
}

/// A `subject_ref` key from a file, read the same way by the daemon and by
/// `audit`, so that one file gives one `subject_ref`: the bytes as they
/// are, less one trailing line end (`\n` or `\r\n`, as an editor or `echo`
/// leaves), at least `MIN_HMAC_KEY_BYTES`.
pub fn read_hmac_key(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let mut key = std::fs::read(path)
        .map_err(|e| ConfigError(format!("cannot read HMAC key file {}: {e}", path.display())))?;
    if key.last() == Some(&b'\n') {
        key.pop();
        if key.last() == Some(&b'\r') {
            key.pop();
        }
    }
    hmac_key(key, &format!("file {}", path.display()))
}

/// A policy as read: compiled, its text, and the name its findings cite.
pub struct PolicySource {
    pub loaded: Loaded,
    pub text: String,
    pub name: String,
}

/// Reads, validates and compiles the policy file at `path`, or the
/// embedded default. The one place a policy is loaded, at start and on
/// every reload.
pub fn load_policy(path: Option<&Path>, now: Timestamp) -> Result<PolicySource, PolicyError> {
    let (text, name) = match path {
        None => (
            policy::DEFAULT_POLICY.to_owned(),
            policy::DEFAULT_POLICY_NAME.to_owned(),
        ),
        Some(p) => {
            let name = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| PolicyError {
                file: name.clone(),
                findings: vec![policy::Finding {
                    level: policy::Level::Error,
                    line: 1,
                    column: 1,
                    path: String::new(),
                    message: format!("cannot read: {e}"),
                }],
            })?;
            (text, name)
        }
    };
    let loaded = policy::load(&text, &name, now)?;
    let v = &loaded.policy.version;
    tracing::info!(policy = %name, version = %v.version, hash = %v.hash, warnings = loaded.warnings.len(), "policy loaded");
    Ok(PolicySource { loaded, text, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_environment_which_wins_over_the_file() {
        let file = RawSettings::from_yaml("brokers: file:9092\ngroup_id: g-file\nlibrdkafka: {security.protocol: ssl, linger.ms: '5'}\n", "s.yaml").unwrap();
        let flags = RawSettings {
            brokers: Some("flag:9092".into()),
            librdkafka: [("linger.ms".to_owned(), "1".to_owned())].into(),
            ..RawSettings::default()
        };
        let s = Settings::from_raw(file.merge(flags)).unwrap();
        assert_eq!(s.brokers, "flag:9092");
        assert_eq!(s.group_id, "g-file");
        assert_eq!(s.librdkafka["linger.ms"], "1");
        assert_eq!(s.librdkafka["security.protocol"], "ssl");
        assert_eq!(s.topics.events, "privacy.sharing-events");
    }

    #[test]
    fn bad_settings_say_what_and_where() {
        let e = RawSettings::from_yaml("brokers: x\nbrokerz: y\n", "s.yaml").unwrap_err();
        assert!(
            e.0.starts_with("s.yaml:2:1: unknown field `brokerz`"),
            "{e}"
        );
        assert!(
            Settings::from_raw(RawSettings::default())
                .unwrap_err()
                .0
                .contains("no brokers")
        );
        let raw = RawSettings {
            brokers: Some("b".into()),
            librdkafka: [("enable.auto.commit".to_owned(), "true".to_owned())].into(),
            ..RawSettings::default()
        };
        assert!(
            Settings::from_raw(raw)
                .unwrap_err()
                .0
                .contains("cannot be overridden")
        );
        assert_eq!(
            parse_property("ssl.ca.location=/etc/ca.pem"),
            Ok(("ssl.ca.location".into(), "/etc/ca.pem".into()))
        );
        assert!(parse_property("novalue").is_err());
    }

    #[test]
    fn one_key_file_gives_one_key_and_short_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = b"0123456789abcdef \t";
        for ending in [&b""[..], b"\n", b"\r\n"] {
            std::fs::write(&path, [&key[..], ending].concat()).unwrap();
            assert_eq!(
                read_hmac_key(&path).unwrap(),
                key,
                "trailing spaces are key bytes"
            );
        }
        std::fs::write(&path, b"short\n").unwrap();
        let e = read_hmac_key(&path).unwrap_err().to_string();
        assert!(e.contains("5 bytes; at least 16"), "{e}");
        assert!(hmac_key(b"x".to_vec(), "--hmac-key").is_err());
    }
}
