//! Kafka plumbing shared by every stage: client configuration, internal topic
//! names and creation, record headers, and in-order offset tracking.

pub mod consumer;
pub mod follower;
pub mod lag;
pub mod offsets;
pub mod stage;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use std::sync::Arc;

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext};

use crate::config::{format_duration, KafkaSettings};

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("cannot create Kafka client: {0}")]
    Client(#[source] rdkafka::error::KafkaError),
    /// Why, with what librdkafka last reported (e.g. a failed TLS handshake).
    #[error("cannot reach Kafka at {brokers}: {why}")]
    Unreachable { brokers: String, why: String },
    #[error("cannot create topic {topic}: {source}")]
    CreateTopic {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot create topic {topic}: {code}")]
    CreateTopicCode {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// A topic partition, as stages key their per-partition state.
pub(crate) type PartitionKey = (Arc<str>, i32);

/// The fan-out group's assignment strategy: moves as few partitions as it can.
pub const FANOUT_ASSIGNMENT: &str = "cooperative-sticky";
/// The delivery group's: range gives one instance the same partition number
/// of every tier, so a subscription's lane sees all its deliveries.
pub const DELIVER_ASSIGNMENT: &str = "range";

/// The fan-out stage's consumer group.
pub(crate) fn fanout_group(settings: &KafkaSettings) -> String {
    format!("{}.fanout", settings.group_id)
}

/// The delivery stage's consumer group.
pub(crate) fn deliver_group(settings: &KafkaSettings) -> String {
    format!("{}.deliver", settings.group_id)
}

/// Names of the internal topics, all `<prefix>.<name>`.
#[derive(Debug, Clone)]
pub struct Topics {
    pub prefix: String,
    pub deliveries: String,
    pub invalid: String,
    pub subscriptions: String,
    pub health: String,
    pub attempts: String,
    pub dlq: String,
    /// Operational events rewardhooks emits; fan-out consumes it beside
    /// the input topics.
    pub operational: String,
    /// Owners, their keys and portal sessions (compacted).
    pub owners: String,
    /// The audit trail of changes made through the API.
    pub audit: String,
    /// Recovery jobs (compacted, key = job id).
    pub recoveries: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Topics {
            prefix: prefix.to_string(),
            deliveries: format!("{prefix}.deliveries"),
            invalid: format!("{prefix}.invalid"),
            subscriptions: format!("{prefix}.subscriptions"),
            health: format!("{prefix}.health"),
            attempts: format!("{prefix}.attempts"),
            dlq: format!("{prefix}.dlq"),
            operational: format!("{prefix}.operational"),
            owners: format!("{prefix}.owners"),
            audit: format!("{prefix}.audit"),
            recoveries: format!("{prefix}.recoveries"),
        }
    }

    pub fn retry(&self, delay: Duration) -> String {
        format!("{}.retry.{}", self.prefix, format_duration(delay))
    }
}

/// librdkafka configuration: brokers, then `[kafka.client]`, then the
/// per-kind table.
pub(crate) fn client_config(settings: &KafkaSettings, kind: ClientKind) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers);
    config.set("client.id", format!("rewardhooks-{}", kind.name()));
    match kind {
        ClientKind::Producer => {
            config
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5");
        }
        ClientKind::Consumer => {
            config
                .set("enable.auto.commit", "true")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("auto.commit.interval.ms", "1000")
                .set("fetch.wait.max.ms", "100")
                // librdkafka's default prefetch (64 MiB per consumer) is far
                // more than a consumer that keeps up needs.
                .set("queued.max.messages.kbytes", "16384");
        }
        ClientKind::Admin => {}
    }
    for (k, v) in &settings.client {
        config.set(k, v);
    }
    let specific = match kind {
        ClientKind::Producer => &settings.producer,
        ClientKind::Consumer => &settings.consumer,
        ClientKind::Admin => return config,
    };
    for (k, v) in specific {
        config.set(k, v);
    }
    config
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum ClientKind {
    Producer,
    Consumer,
    Admin,
}

impl ClientKind {
    fn name(self) -> &'static str {
        match self {
            ClientKind::Producer => "producer",
            ClientKind::Consumer => "consumer",
            ClientKind::Admin => "admin",
        }
    }
}

pub fn producer(settings: &KafkaSettings) -> Result<FutureProducer, KafkaSetupError> {
    client_config(settings, ClientKind::Producer)
        .create()
        .map_err(KafkaSetupError::Client)
}

/// A librdkafka property that cannot work, named by the table it is in.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ClientCheckError {
    /// e.g. `kafka.client."security.protocol"`.
    pub key: String,
    pub message: String,
}

/// Creates every client rewardhooks makes (producer, admin, both stages'
/// consumers) and drops it before it has done anything, so what librdkafka
/// refuses fails here, naming the key: an unknown property, an unsupported
/// value (a `security.protocol` or `sasl.mechanism` this build lacks), a CA
/// file that cannot be read, SASL without credentials. Whether the brokers
/// answer, or accept the credentials, only connecting tells.
pub fn check_clients(settings: &KafkaSettings) -> Result<(), ClientCheckError> {
    use rdkafka::consumer::BaseConsumer;
    let client = ("kafka.client", &settings.client);
    let producer_tables = vec![("kafka.producer", &settings.producer), client];
    let consumer_tables = vec![("kafka.consumer", &settings.consumer), client];
    let checks = [
        (
            "producer",
            client_config(settings, ClientKind::Producer),
            producer_tables,
            false,
        ),
        (
            "admin client",
            client_config(settings, ClientKind::Admin),
            vec![client],
            false,
        ),
        (
            "fan-out consumer",
            consumer::stage_config(settings, &fanout_group(settings), FANOUT_ASSIGNMENT),
            consumer_tables.clone(),
            true,
        ),
        (
            "delivery consumer",
            consumer::stage_config(settings, &deliver_group(settings), DELIVER_ASSIGNMENT),
            consumer_tables,
            true,
        ),
    ];
    for (what, mut config, tables, is_consumer) in checks {
        // Without brokers the client never connects: nothing to wait for,
        // nothing logged about hosts this machine may not reach.
        config
            .remove("bootstrap.servers")
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Error);
        let created = if is_consumer {
            config.create::<BaseConsumer>().map(drop)
        } else {
            config.create::<BaseProducer>().map(drop)
        };
        created.map_err(|e| client_check_error(what, &tables, e))?;
    }
    Ok(())
}

/// Names the key librdkafka refused by the table it came from (the first
/// table holding it wins, as it does when the client is configured).
fn client_check_error(
    what: &str,
    tables: &[(&str, &std::collections::BTreeMap<String, String>)],
    error: KafkaError,
) -> ClientCheckError {
    let name = |key: &str| {
        tables
            .iter()
            .find(|(_, map)| map.contains_key(key))
            .map_or_else(
                || format!("kafka ({key:?}, set by rewardhooks)"),
                |(table, _)| format!("{table}.{key:?}"),
            )
    };
    match error {
        KafkaError::ClientConfig(_, description, key, value) => ClientCheckError {
            key: name(&key),
            message: if crate::config::is_secret_key(&key) && description.contains(&value) {
                format!("librdkafka refuses the value (not shown) for the {what}")
            } else {
                format!("{description} (librdkafka, for the {what})")
            },
        },
        KafkaError::ClientCreation(message) => {
            // When librdkafka's message names one property ("ssl.ca.location
            // failed: …") and it is configured, that is the key; when it
            // names several ("sasl.username and sasl.password must be set"),
            // the table is.
            let mut mentioned: Vec<&str> = message
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                .map(|word| word.trim_matches('.'))
                .filter(|word| word.contains('.'))
                .collect();
            mentioned.dedup();
            let configured = |key: &str| tables.iter().any(|(_, map)| map.contains_key(key));
            let key = match mentioned.as_slice() {
                [one] if configured(one) => name(one),
                _ => tables
                    .last()
                    .map_or("kafka.client", |(table, _)| table)
                    .to_string(),
            };
            ClientCheckError {
                key,
                message: format!("librdkafka cannot create the {what}: {message}"),
            }
        }
        other => ClientCheckError {
            key: "kafka.client".to_string(),
            message: format!("librdkafka cannot create the {what}: {other}"),
        },
    }
}

/// A topic rewardhooks makes sure exists at start.
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub compact: bool,
    /// `retention.ms`, when not the broker's default.
    pub retention: Option<Duration>,
}

/// A topic spec with its settings as the admin API takes them.
struct SpecText<'a> {
    name: &'a str,
    partitions: i32,
    compact: bool,
    retention_ms: Option<String>,
}

/// Creates the topics that do not exist yet; existing ones are left alone.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    specs: &[TopicSpec],
) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = client_config(settings, ClientKind::Admin)
        .create()
        .map_err(KafkaSetupError::Client)?;
    let existing = existing_topics(settings).await?;
    let present: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| existing.contains(&s.name))
        .collect();
    warn_if_weaker(&admin, &present, settings.replication_factor).await;
    let specs: Vec<SpecText<'_>> = specs
        .iter()
        .filter(|s| !existing.contains(&s.name))
        .map(|s| SpecText {
            name: &s.name,
            partitions: s.partitions,
            compact: s.compact,
            retention_ms: s.retention.map(|d| d.as_millis().to_string()),
        })
        .collect();
    if specs.is_empty() {
        return Ok(());
    }
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|spec| {
            let replication = TopicReplication::Fixed(settings.replication_factor);
            let mut topic = NewTopic::new(spec.name, spec.partitions, replication);
            if spec.compact {
                topic = topic.set("cleanup.policy", "compact");
            }
            if let Some(ms) = &spec.retention_ms {
                topic = topic.set("retention.ms", ms);
            }
            // An acknowledged write survives the loss of one replica.
            if settings.replication_factor >= 3 {
                topic = topic.set("min.insync.replicas", "2");
            }
            topic
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(new_topics.iter(), &options)
        .await
        .map_err(|source| KafkaSetupError::CreateTopic {
            topic: specs.iter().map(|s| s.name).collect::<Vec<_>>().join(","),
            source,
        })?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, "Created topic."),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaSetupError::CreateTopicCode { topic, code }),
        }
    }
    Ok(())
}

/// Warns when a topic that exists already has weaker settings than
/// rewardhooks would create it with (a shorter DLQ retention, no compaction
/// for a view topic, `min.insync.replicas` below 2 at replication 3+).
async fn warn_if_weaker(
    admin: &AdminClient<DefaultClientContext>,
    specs: &[&TopicSpec],
    replication_factor: i32,
) {
    if specs.is_empty() {
        return;
    }
    let resources: Vec<ResourceSpecifier<'_>> = specs
        .iter()
        .map(|s| ResourceSpecifier::Topic(&s.name))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described = match admin.describe_configs(&resources, &options).await {
        Ok(described) => described,
        Err(e) => {
            tracing::debug!(error = %e, "Cannot describe topic settings; not compared.");
            return;
        }
    };
    for (spec, result) in specs.iter().zip(described) {
        let Ok(resource) = result else { continue };
        let value = |name: &str| resource.get(name).and_then(|e| e.value.clone());
        for problem in weaker(spec, value, replication_factor) {
            tracing::warn!(topic = %spec.name, problem = %problem, "Existing topic is weaker than configured.");
        }
    }
}

/// What is weaker about an existing topic's settings (`value` reads one).
pub(crate) fn weaker(
    spec: &TopicSpec,
    value: impl Fn(&str) -> Option<String>,
    replication_factor: i32,
) -> Vec<String> {
    let mut problems = Vec::new();
    if spec.compact
        && !value("cleanup.policy").is_some_and(|p| p.split(',').any(|p| p.trim() == "compact"))
    {
        problems.push("cleanup.policy is not compact: the view loses records to retention".into());
    }
    if let Some(wanted) = spec.retention {
        let have = value("retention.ms").and_then(|v| v.parse::<i64>().ok());
        if let Some(have) = have.filter(|h| *h >= 0 && (*h as u128) < wanted.as_millis()) {
            problems.push(format!(
                "retention.ms is {have}, shorter than the configured {} ms",
                wanted.as_millis()
            ));
        }
    }
    if replication_factor >= 3 {
        let isr = value("min.insync.replicas").and_then(|v| v.parse::<i32>().ok());
        if isr.is_some_and(|isr| isr < 2) {
            problems.push(
                "min.insync.replicas is below 2: an acknowledged write can be lost with one broker"
                    .into(),
            );
        }
    }
    problems
}

/// A client context that keeps librdkafka's last error, so a failure at
/// start can say why (a TLS handshake, authentication, DNS).
#[derive(Default)]
struct ProbeContext {
    last_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for ProbeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // "1/1 brokers are down" follows every failure; the reason before it
        // is the one worth reporting.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            return;
        }
        // librdkafka's own log line (at ERROR) already tells the operator.
        tracing::debug!(error = %error, reason, "Kafka client error.");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
    }
}

impl rdkafka::producer::ProducerContext for ProbeContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// The topics that exist. The admin client never serves librdkafka's log and
/// error events, so the metadata comes from a client whose events are polled
/// here: why the brokers cannot be reached is logged and returned.
async fn existing_topics(settings: &KafkaSettings) -> Result<Vec<String>, KafkaSetupError> {
    let probe: BaseProducer<ProbeContext> = client_config(settings, ClientKind::Admin)
        .create_with_context(ProbeContext::default())
        .map_err(KafkaSetupError::Client)?;
    let metadata = tokio::task::block_in_place(|| {
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    probe.poll(Duration::from_millis(100));
                }
            });
            let metadata = probe
                .client()
                .fetch_metadata(None, Timeout::After(Duration::from_secs(30)));
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            metadata
        })
    })
    .map_err(|e| {
        let last = probe
            .context()
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        KafkaSetupError::Unreachable {
            brokers: settings.brokers.clone(),
            why: match last {
                Some(last) => format!("{e} (last broker error: {last})"),
                None => e.to_string(),
            },
        }
    })?;
    Ok(metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .collect())
}

/// Reads a UTF-8 header value by name (last one wins).
pub(crate) fn header_str<'a, H: Headers>(headers: Option<&'a H>, name: &str) -> Option<&'a str> {
    let headers = headers?;
    headers
        .iter()
        .filter(|h| h.key == name)
        .last()
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Builds headers from name/value pairs.
pub fn headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> OwnedHeaders {
    pairs
        .into_iter()
        .fold(OwnedHeaders::new(), |acc, (key, value)| {
            acc.insert(Header {
                key,
                value: Some(value),
            })
        })
}

/// A record kept whole, so it can be produced again until the broker takes it.
pub(crate) struct OwnedRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Arc<Vec<u8>>,
    /// Shared by the records of one event (fan-out) and copied only into
    /// the produce call: librdkafka copies every header with its own
    /// allocation, which the profile showed at about 4% of a delivery.
    pub headers: Arc<OwnedHeaders>,
}

impl OwnedRecord {
    fn borrowed(&self) -> FutureRecord<'_, [u8], [u8]> {
        let mut r = FutureRecord::to(&self.topic)
            .payload(self.payload.as_slice())
            .headers(OwnedHeaders::clone(&self.headers));
        if let Some(key) = &self.key {
            r = r.key(key.as_slice());
        }
        r
    }

    /// Hands the record to the producer now, waiting while its queue is full
    /// and retrying transient errors in place; the future resolves with the
    /// broker's acknowledgement. A permanent error (the record can never be
    /// written, e.g. too large) comes back at once.
    pub async fn enqueue(&self, producer: &FutureProducer) -> Result<DeliveryFuture, KafkaError> {
        loop {
            match producer.send_result(self.borrowed()) {
                Ok(ack) => return Ok(ack),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) if is_permanent(&e) => return Err(e),
                Err((e, _)) => {
                    tracing::warn!(topic = %self.topic, error = %e, "Cannot enqueue record; retrying.");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Produces until the broker acknowledges, backing off between transient
    /// failures; a permanent one comes back.
    pub async fn produce_durably(&self, producer: &FutureProducer) -> Result<(), KafkaError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match producer.send(self.borrowed(), Timeout::Never).await {
                Ok(_) => return Ok(()),
                Err((e, _)) if is_permanent(&e) => return Err(e),
                Err((e, _)) => {
                    tracing::warn!(topic = %self.topic, error = %e, "Produce failed; retrying.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Like [`OwnedRecord::produce_durably`], answering where the record
    /// landed (partition, offset).
    pub async fn produce_durably_at(
        &self,
        producer: &FutureProducer,
    ) -> Result<(i32, i64), KafkaError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match producer.send(self.borrowed(), Timeout::Never).await {
                Ok(at) => return Ok((at.partition, at.offset)),
                Err((e, _)) if is_permanent(&e) => return Err(e),
                Err((e, _)) => {
                    tracing::warn!(topic = %self.topic, error = %e, "Produce failed; retrying.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// The same destination, key and headers (for a replacement payload).
    pub(crate) fn clone_headers(&self) -> OwnedRecord {
        OwnedRecord {
            topic: self.topic.clone(),
            key: self.key.clone(),
            payload: Arc::new(Vec::new()),
            headers: self.headers.clone(),
        }
    }

    /// The record's size as the producer counts it, roughly: key, value and
    /// headers.
    pub fn size(&self) -> usize {
        self.payload.len() + self.key.as_ref().map_or(0, Vec::len)
    }
}

/// Whether a produce error means the record can never be written as it is
/// (retrying would wedge the partition), as opposed to a transient one
/// (broker down, leader moving, timeouts), which is retried in place.
pub(crate) fn is_permanent(e: &KafkaError) -> bool {
    let code = match e {
        KafkaError::MessageProduction(code) => *code,
        _ => return false,
    };
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidTopic
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn kafka(client: &[(&str, &str)], consumer: &[(&str, &str)]) -> KafkaSettings {
        let mut kafka = Settings::load_with_env(None, [])
            .expect("defaults load")
            .kafka;
        kafka.brokers = "b-1.example.kafka.com:9096".to_string();
        for (k, v) in client {
            kafka.client.insert(k.to_string(), v.to_string());
        }
        for (k, v) in consumer {
            kafka.consumer.insert(k.to_string(), v.to_string());
        }
        kafka
    }

    #[test]
    fn stage_consumers_wait_kafka_fetch_wait_unless_the_consumer_table_says_otherwise() {
        let mut settings = kafka(&[], &[]);
        settings.fetch_wait = Duration::from_millis(250);
        let config = consumer::stage_config(&settings, "g", DELIVER_ASSIGNMENT);
        assert_eq!(config.get("fetch.wait.max.ms"), Some("250"));
        let settings = kafka(&[], &[("fetch.wait.max.ms", "7")]);
        let config = consumer::stage_config(&settings, "g", DELIVER_ASSIGNMENT);
        assert_eq!(config.get("fetch.wait.max.ms"), Some("7"));
    }

    /// Every record rewardhooks writes (deliveries, retries, dead letters,
    /// attempt batches) goes through this producer.
    #[test]
    fn the_producer_is_idempotent_with_acks_all_and_a_short_linger() {
        let config = client_config(&kafka(&[], &[]), ClientKind::Producer);
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("linger.ms"), Some("5"));
    }

    #[test]
    fn managed_kafka_settings_create_every_client() {
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            let settings = kafka(
                &[
                    ("security.protocol", "SASL_SSL"),
                    ("sasl.mechanism", mechanism),
                    ("sasl.username", "rewardhooks"),
                    ("sasl.password", "s3cret"),
                ],
                &[],
            );
            check_clients(&settings).unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        }
        check_clients(&kafka(&[("security.protocol", "SSL")], &[])).expect("SSL");
    }

    #[test]
    fn a_property_librdkafka_refuses_fails_naming_its_key() {
        let err = check_clients(&kafka(&[("security.protocol", "SASL_TLS")], &[])).unwrap_err();
        assert_eq!(err.key, r#"kafka.client."security.protocol""#, "{err}");
        assert!(err.message.contains("SASL_TLS"), "{err}");

        let err = check_clients(&kafka(
            &[
                ("security.protocol", "SSL"),
                ("ssl.ca.location", "/nonexistent/ca.pem"),
            ],
            &[],
        ))
        .unwrap_err();
        assert_eq!(err.key, r#"kafka.client."ssl.ca.location""#, "{err}");

        // SASL without a mechanism means GSSAPI, which this build lacks.
        let err = check_clients(&kafka(&[("security.protocol", "SASL_SSL")], &[])).unwrap_err();
        assert!(err.message.contains("GSSAPI"), "{err}");

        let err = check_clients(&kafka(
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "PLAIN"),
            ],
            &[],
        ))
        .unwrap_err();
        assert!(err.message.contains("sasl.username"), "{err}");

        // A consumer-only table is named as such, and checked for consumers.
        let err = check_clients(&kafka(
            &[],
            &[(
                "partition.assignment.strategy",
                "roundrobin,cooperative-sticky",
            )],
        ))
        .unwrap_err();
        assert_eq!(
            err.key, r#"kafka.consumer."partition.assignment.strategy""#,
            "{err}"
        );
        assert!(err.message.contains("fan-out consumer"), "{err}");
    }

    #[test]
    fn a_refused_secret_property_is_named_but_its_value_never_shown() {
        // OIDC needs libcurl, which this build of librdkafka lacks.
        let err = check_clients(&kafka(
            &[("sasl.oauthbearer.client.secret", "hunter2")],
            &[],
        ))
        .unwrap_err();
        assert_eq!(
            err.key, r#"kafka.client."sasl.oauthbearer.client.secret""#,
            "{err}"
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
        // A value librdkafka would echo in its description is left out.
        let err = client_check_error(
            "producer",
            &[],
            KafkaError::ClientConfig(
                rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
                r#"Invalid value "hunter2" for configuration property "ssl.key.password""#.into(),
                "ssl.key.password".into(),
                "hunter2".into(),
            ),
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn weaker_existing_topics_are_named() {
        let dlq = TopicSpec {
            name: "w.dlq".into(),
            partitions: 3,
            compact: false,
            retention: Some(Duration::from_secs(30 * 86400)),
        };
        let settings = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let seven_days = &[("retention.ms", "604800000"), ("min.insync.replicas", "1")];
        assert_eq!(weaker(&dlq, settings(seven_days), 3).len(), 2);
        assert_eq!(weaker(&dlq, settings(seven_days), 1).len(), 1);
        let forever = &[("retention.ms", "-1"), ("min.insync.replicas", "2")];
        assert!(weaker(&dlq, settings(forever), 3).is_empty());
        let view = TopicSpec {
            name: "w.subscriptions".into(),
            partitions: 1,
            compact: true,
            retention: None,
        };
        assert_eq!(
            weaker(&view, settings(&[("cleanup.policy", "delete")]), 1).len(),
            1
        );
        assert!(weaker(&view, settings(&[("cleanup.policy", "compact,delete")]), 1).is_empty());
    }
}
