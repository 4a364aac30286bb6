//! Configuration: built-in defaults (`config/default.toml`), then a file, then
//! `REWARDHOOKS__SECTION__KEY` environment variables. Validated once at start.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::net::{Cidr, DestinationPolicy};
use crate::secrets::SecretCipher;

pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub events: EventSettings,
    pub delivery: DeliverySettings,
    pub security: SecuritySettings,
    pub api: ApiSettings,
    pub ops: OpsSettings,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
    pub recovery: RecoverySettings,
}

/// Recovery jobs (`POST /v1/subscriptions/{id}/recover`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverySettings {
    /// Input records a recovery job reads per second, at most (each job).
    pub max_events_per_second: u32,
}

/// The operations listener of instances without the api role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsSettings {
    #[serde(with = "parsed")]
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
    /// One info line per successful delivery (on in `rewardhooks dev`).
    pub deliveries: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    #[serde(with = "duration")]
    pub lag_interval: Duration,
    /// Adds `deliveries_by_subscription_total{subscription_id,outcome}`.
    pub per_subscription_labels: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub input_topics: Vec<String>,
    pub topic_prefix: String,
    pub group_id: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub create_input_topics: bool,
    #[serde(with = "duration")]
    pub dlq_retention: Duration,
    /// `fetch.wait.max.ms` of the stage consumers: how long a fetch may
    /// wait for data (see config/default.toml for what it costs per broker).
    #[serde(with = "duration")]
    pub fetch_wait: Duration,
    #[serde(default, with = "dotted")]
    pub client: BTreeMap<String, String>,
    #[serde(default, with = "dotted")]
    pub consumer: BTreeMap<String, String>,
    #[serde(default, with = "dotted")]
    pub producer: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// Replaces every `file:<path>` value of the librdkafka tables by the
    /// file's contents (trailing newline trimmed), so secrets come from a
    /// mounted Secret instead of the configuration.
    fn read_file_values(&mut self) -> Result<(), ConfigError> {
        for (table, map) in [
            ("kafka.client", &mut self.client),
            ("kafka.consumer", &mut self.consumer),
            ("kafka.producer", &mut self.producer),
        ] {
            for (key, value) in map.iter_mut() {
                if let Some(path) = value.strip_prefix("file:") {
                    let text = std::fs::read_to_string(path.trim())
                        .map_err(|e| invalid(table, format!("{key:?}: cannot read {path}: {e}")))?;
                    *value = text.trim_end_matches(['\r', '\n']).to_string();
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    pub max_bytes: usize,
    pub catalog_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    #[serde(with = "duration")]
    pub timeout: Duration,
    #[serde(with = "durations")]
    pub retry_schedule: Vec<Duration>,
    pub max_in_flight_per_subscription: usize,
    /// How often a quiet retry-tier partition is fetched again; zero
    /// fetches every tier partition all the time.
    #[serde(with = "duration")]
    pub tier_recheck: Duration,
    /// `linger.ms` of the attempt log's own producer.
    #[serde(with = "duration")]
    pub attempt_log_linger: Duration,
    pub lane_capacity: usize,
    #[serde(with = "duration")]
    pub lane_max_wait: Duration,
    pub max_in_flight: usize,
    pub max_concurrent_requests: usize,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub circuit_breaker_threshold: u32,
    #[serde(with = "duration")]
    pub circuit_breaker_cooldown: Duration,
    #[serde(with = "duration")]
    pub disable_after: Duration,
    #[serde(with = "duration")]
    pub rotation_grace: Duration,
    #[serde(with = "duration")]
    pub pause_hold: Duration,
    /// Explicit outbound proxy URL ("" = none).
    pub proxy: String,
    pub max_response_bytes: usize,
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// Local address outgoing webhook connections are bound to ("" = any).
    #[serde(with = "optional_ip")]
    pub source_address: Option<IpAddr>,
    /// Public addresses webhooks leave from, shown at GET /v1/egress-ips.
    pub egress_ips: Vec<String>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    pub allow_insecure_http: bool,
    pub allow_private_networks: bool,
    /// Address blocks allowed even though they are not public.
    pub allowed_networks: Vec<Cidr>,
    pub secrets_key: String,
    /// Keys that still decrypt secrets written before a key rotation.
    pub previous_secrets_keys: Vec<String>,
}

impl std::fmt::Debug for SecuritySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecuritySettings")
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("allow_private_networks", &self.allow_private_networks)
            .field("allowed_networks", &self.allowed_networks)
            .field("secrets_key", &redact(&self.secrets_key))
            .field("previous_secrets_keys", &self.previous_secrets_keys.len())
            .finish()
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    #[serde(with = "parsed")]
    pub listen: SocketAddr,
    pub admin_token: String,
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    pub max_subscriptions_per_owner: usize,
    pub attempts_per_subscription: usize,
    /// The API's address as browsers reach it (`https://hooks.example.com`),
    /// for portal session URLs; empty = the request's `Host`.
    #[serde(default)]
    pub public_url: String,
    /// Origins that may show `/portal` in a frame (CSP `frame-ancestors`);
    /// empty: none.
    #[serde(default)]
    pub portal_frame_ancestors: Vec<String>,
    #[serde(default)]
    pub tokens: BTreeMap<String, String>,
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("listen", &self.listen)
            .field("admin_token", &redact(&self.admin_token))
            .field("tokens", &self.tokens.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn redact(value: &str) -> &'static str {
    if value.is_empty() {
        ""
    } else {
        "<redacted>"
    }
}

/// Whether `source` may stand in `frame-ancestors`: `'self'`, or an origin
/// (`https://host[:port]`, a `*.` wildcard host allowed) with nothing that
/// could end the directive or add another.
pub fn is_frame_source(source: &str) -> bool {
    if source == "'self'" {
        return true;
    }
    let Some(rest) = source
        .strip_prefix("https://")
        .or_else(|| source.strip_prefix("http://"))
    else {
        return false;
    };
    let host = rest.strip_prefix("*.").unwrap_or(rest);
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
}

/// Keys whose values never leave the process (logs, `check-config`).
pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "key"]
        .iter()
        .any(|word| key.contains(word))
}

impl SecuritySettings {
    /// Where webhooks may go, as the sender and the API check it.
    pub(crate) fn destination_policy(&self) -> DestinationPolicy {
        DestinationPolicy::new(
            self.allow_insecure_http,
            self.allow_private_networks,
            self.allowed_networks.clone(),
        )
    }
}

impl Settings {
    /// Loads defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("REWARDHOOKS__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("REWARDHOOKS")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("kafka.input_topics")
                .with_list_parse_key("delivery.retry_schedule")
                .with_list_parse_key("delivery.egress_ips")
                .with_list_parse_key("security.allowed_networks")
                .with_list_parse_key("security.previous_secrets_keys")
                .try_parsing(true)
                .source(Some(env)),
        );
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.kafka.read_file_values()?;
        settings.validate()?;
        Ok(settings)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must name at least one broker"));
        }
        if k.input_topics.is_empty() || k.input_topics.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid(
                "kafka.input_topics",
                "must list at least one non-empty topic",
            ));
        }
        if !valid_topic_part(&k.topic_prefix) {
            return Err(invalid(
                "kafka.topic_prefix",
                "must be non-empty and use only letters, digits, '.', '_' and '-'",
            ));
        }
        let public_url = &self.api.public_url;
        if !(public_url.is_empty()
            || public_url.starts_with("https://")
            || public_url.starts_with("http://"))
        {
            return Err(invalid(
                "api.public_url",
                "must be empty or an http(s) URL such as \"https://hooks.example.com\"",
            ));
        }
        if k.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        if !(1..=10_000).contains(&k.partitions) {
            return Err(invalid("kafka.partitions", "must be between 1 and 10000"));
        }
        // librdkafka's range for fetch.wait.max.ms and linger.ms.
        if k.fetch_wait.is_zero() || k.fetch_wait > Duration::from_secs(300) {
            return Err(invalid("kafka.fetch_wait", "must be between 1ms and 5m"));
        }
        if self.delivery.tier_recheck > Duration::from_secs(60) {
            return Err(invalid(
                "delivery.tier_recheck",
                "must be at most 1m (0s fetches tiers all the time)",
            ));
        }
        if self.delivery.attempt_log_linger > Duration::from_secs(300) {
            return Err(invalid("delivery.attempt_log_linger", "must be at most 5m"));
        }
        if k.replication_factor == 0 || k.replication_factor < -1 {
            return Err(invalid(
                "kafka.replication_factor",
                "must be -1 (broker default) or at least 1",
            ));
        }
        if self.events.max_bytes < 1024 {
            return Err(invalid("events.max_bytes", "must be at least 1024"));
        }
        let d = &self.delivery;
        if d.timeout.is_zero() {
            return Err(invalid("delivery.timeout", "must be greater than zero"));
        }
        if d.retry_schedule.is_empty() {
            return Err(invalid(
                "delivery.retry_schedule",
                "must list at least one delay",
            ));
        }
        if d.retry_schedule.iter().any(|x| x.as_millis() < 1) {
            return Err(invalid(
                "delivery.retry_schedule",
                "every delay must be at least 1ms",
            ));
        }
        if d.retry_schedule.windows(2).any(|w| w[0] > w[1]) {
            return Err(invalid(
                "delivery.retry_schedule",
                "delays must not decrease",
            ));
        }
        if d.max_in_flight_per_subscription == 0 {
            return Err(invalid(
                "delivery.max_in_flight_per_subscription",
                "must be at least 1",
            ));
        }
        if d.lane_capacity == 0 {
            return Err(invalid("delivery.lane_capacity", "must be at least 1"));
        }
        if d.max_in_flight == 0 {
            return Err(invalid("delivery.max_in_flight", "must be at least 1"));
        }
        if d.max_concurrent_requests == 0 {
            return Err(invalid(
                "delivery.max_concurrent_requests",
                "must be at least 1",
            ));
        }
        if (d.rate_limit_per_second == 0) != (d.rate_limit_burst == 0) {
            return Err(invalid(
                "delivery.rate_limit_burst",
                "set both rate_limit_per_second and rate_limit_burst, or neither",
            ));
        }
        for (name, token) in std::iter::once(("api.admin_token", &self.api.admin_token))
            .chain(self.api.tokens.values().map(|t| ("api.tokens", t)))
        {
            if let Some(hex) = token.strip_prefix("sha256:") {
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    let key = if name == "api.admin_token" {
                        "api.admin_token"
                    } else {
                        "api.tokens"
                    };
                    return Err(invalid(key, "sha256: must be followed by 64 hex digits"));
                }
            }
        }
        if !self.security.secrets_key.is_empty() {
            SecretCipher::new(
                &self.security.secrets_key,
                &self.security.previous_secrets_keys,
            )
            .map_err(|e| invalid("security.secrets_key", e.to_string()))?;
        }
        if !self.delivery.proxy.is_empty() && reqwest::Proxy::all(&self.delivery.proxy).is_err() {
            return Err(invalid(
                "delivery.proxy",
                format!("{:?} is not a proxy URL", self.delivery.proxy),
            ));
        }
        if self.recovery.max_events_per_second == 0 {
            return Err(invalid(
                "recovery.max_events_per_second",
                "must be at least 1",
            ));
        }
        if self.metrics.lag_interval < Duration::from_millis(100) {
            return Err(invalid("metrics.lag_interval", "must be at least 100ms"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!(
                    "{:?} is not a level or filter like \"info\"",
                    self.log.level
                ),
            ));
        }
        if self.api.attempts_per_subscription == 0 || self.api.attempts_per_subscription > 10_000 {
            return Err(invalid(
                "api.attempts_per_subscription",
                "must be between 1 and 10000",
            ));
        }
        if self.api.tokens.values().any(|t| t.is_empty()) {
            return Err(invalid("api.tokens", "a token must not be empty"));
        }
        if let Some(bad) = self
            .api
            .portal_frame_ancestors
            .iter()
            .find(|s| !is_frame_source(s))
        {
            return Err(invalid(
                "api.portal_frame_ancestors",
                format!("{bad:?} is not an origin like \"https://platform.example.com\" or 'self'"),
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML with every secret replaced.
    pub fn redacted_toml(&self) -> String {
        let mut copy = self.clone();
        copy.security.secrets_key = redact(&copy.security.secrets_key).to_string();
        for key in copy.security.previous_secrets_keys.iter_mut() {
            *key = "<redacted>".to_string();
        }
        copy.api.admin_token = redact(&copy.api.admin_token).to_string();
        for token in copy.api.tokens.values_mut() {
            *token = "<redacted>".to_string();
        }
        for map in [
            &mut copy.kafka.client,
            &mut copy.kafka.consumer,
            &mut copy.kafka.producer,
        ] {
            for (key, value) in map.iter_mut() {
                if is_secret_key(key) {
                    *value = "<redacted>".to_string();
                }
            }
        }
        toml::to_string_pretty(&copy).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn valid_topic_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Formats a duration the way the configuration spells it ("5s", "30m").
pub(crate) fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A value written as text in the configuration (an address), parsed at load
/// so a bad one is a configuration error naming its key.
mod parsed {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub(crate) fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(crate) fn deserialize<'de, T: FromStr, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let text = String::deserialize(d)?;
        text.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("{text:?} is not an address like 0.0.0.0:8080"))
        })
    }
}

/// A librdkafka property table. Keys are dotted ("sasl.password"); from the
/// environment (`REWARDHOOKS__KAFKA__CLIENT__SASL__PASSWORD`) they arrive as
/// nested tables, which are joined back with dots.
mod dotted {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Node {
        Text(String),
        Bool(bool),
        Int(i64),
        Float(f64),
        Table(BTreeMap<String, Node>),
    }

    fn flatten(prefix: &str, node: Node, out: &mut BTreeMap<String, String>) {
        let key = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match node {
            Node::Text(v) => {
                out.insert(prefix.to_string(), v);
            }
            Node::Bool(v) => {
                out.insert(prefix.to_string(), v.to_string());
            }
            Node::Int(v) => {
                out.insert(prefix.to_string(), v.to_string());
            }
            Node::Float(v) => {
                out.insert(prefix.to_string(), v.to_string());
            }
            Node::Table(t) => {
                for (k, v) in t {
                    flatten(&key(&k.to_lowercase()), v, out);
                }
            }
        }
    }

    pub(crate) fn serialize<S: Serializer>(
        v: &BTreeMap<String, String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        let table = BTreeMap::<String, Node>::deserialize(d)?;
        let mut out = BTreeMap::new();
        flatten("", Node::Table(table), &mut out);
        Ok(out)
    }
}

/// An optional IP address; "" means none.
mod optional_ip {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::IpAddr;

    pub(crate) fn serialize<S: Serializer>(v: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(ip) => s.collect_str(ip),
            None => s.serialize_str(""),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an IP address")))
    }
}

mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
    }
}

mod durations {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(d.iter().map(|d| super::format_duration(*d)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|text| {
                humantime::parse_duration(text.trim()).map_err(|e| {
                    serde::de::Error::custom(format!("{text:?} is not a duration: {e}"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_validate() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(s.kafka.topic_prefix, "webhooks");
        assert_eq!(s.delivery.retry_schedule.len(), 9);
        assert_eq!(s.delivery.retry_schedule[1], Duration::from_secs(300));
        assert_eq!(s.delivery.timeout, Duration::from_secs(15));
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[kafka]\nbrokers = \"file:9092\"\ngroup_id = \"from-file\"\n[delivery]\ntimeout = \"2s\""
        )
        .unwrap();
        let s = Settings::load_with_env(
            Some(f.path()),
            env(&[
                ("REWARDHOOKS__KAFKA__BROKERS", "env:9092"),
                ("REWARDHOOKS__KAFKA__INPUT_TOPICS", "a,b"),
            ]),
        )
        .unwrap();
        assert_eq!(s.kafka.brokers, "env:9092");
        assert_eq!(s.kafka.group_id, "from-file");
        assert_eq!(s.kafka.input_topics, vec!["a", "b"]);
        assert_eq!(s.delivery.timeout, Duration::from_secs(2));
    }

    #[test]
    fn librdkafka_secrets_come_from_the_environment_or_a_file() {
        let mut secret = tempfile::NamedTempFile::new().unwrap();
        writeln!(secret, "s3cret-from-file").unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[kafka.client]\n\"security.protocol\" = \"SASL_SSL\"\n[kafka.producer]\n\"sasl.password\" = \"file:{}\"",
            secret.path().display()
        )
        .unwrap();
        let s = Settings::load_with_env(
            Some(f.path()),
            env(&[
                ("REWARDHOOKS__KAFKA__CLIENT__SASL__PASSWORD", "from-env"),
                ("REWARDHOOKS__KAFKA__CLIENT__SASL__USERNAME", "svc"),
            ]),
        )
        .unwrap();
        assert_eq!(s.kafka.client["sasl.password"], "from-env");
        assert_eq!(s.kafka.client["sasl.username"], "svc");
        assert_eq!(s.kafka.client["security.protocol"], "SASL_SSL");
        assert_eq!(s.kafka.producer["sasl.password"], "s3cret-from-file");
        let mut missing = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            missing,
            "[kafka.client]\n\"sasl.password\" = \"file:/nonexistent/secret\""
        )
        .unwrap();
        let err = Settings::load_with_env(Some(missing.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kafka.client") && err.contains("/nonexistent/secret"),
            "{err}"
        );
    }

    #[test]
    fn bad_duration_names_the_key() {
        let err = Settings::load_with_env(None, env(&[("REWARDHOOKS__DELIVERY__TIMEOUT", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("delivery.timeout"), "{err}");
        assert!(err.contains("soon"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[delivery]\ntimout = \"2s\"").unwrap();
        let err = Settings::load_with_env(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("timout"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases = [
            ("REWARDHOOKS__KAFKA__PARTITIONS", "0", "kafka.partitions"),
            ("REWARDHOOKS__API__LISTEN", "nowhere", "api.listen"),
            (
                "REWARDHOOKS__DELIVERY__RETRY_SCHEDULE",
                "5m,5s",
                "delivery.retry_schedule",
            ),
            (
                "REWARDHOOKS__KAFKA__TOPIC_PREFIX",
                "a b",
                "kafka.topic_prefix",
            ),
            (
                "REWARDHOOKS__API__ADMIN_TOKEN",
                "sha256:xyz",
                "api.admin_token",
            ),
        ];
        for (var, value, key) in cases {
            let err = Settings::load_with_env(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
    }

    #[test]
    fn redacted_output_hides_secrets() {
        let s = Settings::load_with_env(
            None,
            env(&[
                ("REWARDHOOKS__API__ADMIN_TOKEN", "supersecret-admin"),
                (
                    "REWARDHOOKS__SECURITY__SECRETS_KEY",
                    "cmV3YXJkaG9va3MtaW50ZWdyYXRpb24tdGVzdC1rZXk=",
                ),
            ]),
        )
        .unwrap();
        let out = s.redacted_toml();
        assert!(!out.contains("supersecret-admin"));
        assert!(!out.contains("cmV3YXJkaG9va3MtaW50ZWdyYXRpb24tdGVzdC1rZXk="));
        assert!(out.contains("retry_schedule"));
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("supersecret-admin"));
    }
}
