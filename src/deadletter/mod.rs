//! Dead letters: the dead-letter topic, a bounded in-memory index of it that
//! every instance keeps, and replay (fresh deliveries with a new attempt
//! count). Replays are marked in the topic itself (a record with a
//! `rewardhooks-replayed` header and no value), so every instance knows a dead
//! letter was replayed and a plain replay call does not send it twice.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaSettings;
use crate::kafka::follower::{Applied, Follower};
use crate::kafka::{client_config, header_str, ClientKind, OwnedRecord};
use crate::record::DeliveryHeaders;

pub(crate) const REPLAYED_HEADER: &str = "rewardhooks-replayed";
/// A replay's receipt (no value): `<owner> <idempotency key>`, with the
/// request's hash and how many it replayed, so the same replay asked again
/// answers the first result on any instance, after restarts too.
const RECEIPT_HEADER: &str = "rewardhooks-replay-receipt";
const RECEIPT_HASH_HEADER: &str = "rewardhooks-replay-hash";
const RECEIPT_COUNT_HEADER: &str = "rewardhooks-replay-count";
/// How long an `Idempotency-Key` of a replay is remembered.
const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// How many dead letters each instance keeps in its index (oldest go first;
/// they stay in the topic).
const MAX_INDEXED: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot follow the dead-letter topic {topic}: {source}")]
    Follow {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot read dead letter {id} back from Kafka: {message}")]
    Read { id: String, message: String },
    #[error("cannot write to Kafka: {0}")]
    Write(#[source] rdkafka::error::KafkaError),
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub subscription_id: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub last_status: Option<u16>,
    /// Why it was dead-lettered: exhausted, gone, subscription_disabled,
    /// refused, paused_too_long, undeliverable.
    pub reason: Option<String>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub dead_at: Option<DateTime<Utc>>,
    pub replayed_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    partition: i32,
    #[serde(skip)]
    offset: i64,
}

fn dead_letter_id(partition: i32, offset: i64) -> String {
    format!("dlq_{partition}_{offset}")
}

fn parse_id(id: &str) -> Option<(i32, i64)> {
    let rest = id.strip_prefix("dlq_")?;
    let (p, o) = rest.split_once('_')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

fn millis(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
}

#[derive(Default)]
struct Index {
    entries: HashMap<String, DeadLetter>,
    order: VecDeque<String>,
    /// Replay receipts: `<owner> <key>` → (request hash, replayed, at ms).
    receipts: HashMap<String, (String, usize, i64)>,
}

/// What an earlier replay with the same idempotency key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// The same request: it replayed this many.
    Same(usize),
    /// The key was used with another request.
    Reused,
}

pub struct DeadLetters {
    index: RwLock<Index>,
    applied: Applied,
    topic: String,
    deliveries_topic: String,
    producer: FutureProducer,
    settings: KafkaSettings,
}

impl DeadLetters {
    pub fn new(
        settings: &KafkaSettings,
        producer: FutureProducer,
        topic: String,
        deliveries_topic: String,
    ) -> Arc<Self> {
        Arc::new(DeadLetters {
            index: RwLock::new(Index::default()),
            applied: Applied::default(),
            topic,
            deliveries_topic,
            producer,
            settings: settings.clone(),
        })
    }

    pub async fn follow(
        self: &Arc<Self>,
        cancel: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, DeadLetterError> {
        let follower = Follower::start(&self.settings, "dead-letters-view", &self.topic)
            .await
            .map_err(|source| DeadLetterError::Follow {
                topic: self.topic.clone(),
                source,
            })?;
        let ends = follower.ends.clone();
        self.applied.check_caught_up(&ends);
        let this = self.clone();
        Ok(tokio::spawn(follower.run(cancel, move |msg| {
            this.apply(msg);
            this.applied.check_caught_up(&ends);
        })))
    }

    pub async fn wait_ready(&self) {
        self.applied.wait_ready().await
    }

    fn apply(&self, msg: &BorrowedMessage<'_>) {
        let headers = msg.headers();
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        if let Some(receipt) = header_str(headers, RECEIPT_HEADER) {
            let hash = header_str(headers, RECEIPT_HASH_HEADER).unwrap_or_default();
            let count = header_str(headers, RECEIPT_COUNT_HEADER)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let at = msg.timestamp().to_millis().unwrap_or(0);
            index
                .receipts
                .insert(receipt.to_string(), (hash.to_string(), count, at));
        } else if let Some(replayed) = header_str(headers, REPLAYED_HEADER) {
            let at = msg.timestamp().to_millis();
            if let Some(entry) = index.entries.get_mut(replayed) {
                entry.replayed_at = millis(at).or_else(|| Some(Utc::now()));
            }
        } else if let Ok(h) = DeliveryHeaders::from_kafka(headers) {
            let id = dead_letter_id(msg.partition(), msg.offset());
            let subscription_id = h
                .subscription_id
                .clone()
                .or_else(|| {
                    msg.key()
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .map(str::to_string)
                })
                .unwrap_or_default();
            index.entries.insert(
                id.clone(),
                DeadLetter {
                    id: id.clone(),
                    event_id: h.event_id,
                    event_type: h.event_type,
                    subscription_id,
                    attempts: h.attempts,
                    last_error: h.last_error,
                    last_status: h.last_status,
                    reason: h.dead_reason.map(|r| r.as_str().to_string()),
                    first_attempt_at: millis(h.first_attempt_ms),
                    dead_at: millis(h.dead_at_ms),
                    replayed_at: None,
                    partition: msg.partition(),
                    offset: msg.offset(),
                },
            );
            index.order.push_back(id);
            while index.order.len() > MAX_INDEXED {
                if let Some(old) = index.order.pop_front() {
                    index.entries.remove(&old);
                }
            }
        }
        drop(index);
        self.applied.record(msg.partition(), msg.offset());
    }

    /// Dead letters matching `keep`, newest first.
    pub fn list(&self, keep: impl Fn(&DeadLetter) -> bool) -> Vec<DeadLetter> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<DeadLetter> = index
            .entries
            .values()
            .filter(|d| keep(d))
            .cloned()
            .collect();
        out.sort_by(|a, b| b.dead_at.cmp(&a.dead_at).then_with(|| b.id.cmp(&a.id)));
        out
    }

    pub fn get(&self, id: &str) -> Option<DeadLetter> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        index.entries.get(id).cloned()
    }

    /// Returns once this view has read the topic up to end offsets read
    /// now: a receipt written by any instance before this call is seen.
    pub async fn fence(&self) -> Result<(), DeadLetterError> {
        let ends = self
            .applied
            .read_ends(&self.producer, &self.topic)
            .await
            .map_err(DeadLetterError::Write)?;
        self.applied.wait_ends(&ends, Duration::from_secs(10)).await;
        Ok(())
    }

    /// What a replay with this owner's idempotency key did in the last 24 h.
    pub fn receipt(&self, owner: &str, key: &str, hash: &str) -> Option<Receipt> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let (seen_hash, count, at) = index.receipts.get(&format!("{owner} {key}"))?;
        if Utc::now().timestamp_millis() - at > IDEMPOTENCY_WINDOW_MS {
            return None;
        }
        Some(if seen_hash == hash {
            Receipt::Same(*count)
        } else {
            Receipt::Reused
        })
    }

    /// Records a replay's receipt and waits until this view has it.
    pub async fn write_receipt(
        &self,
        owner: &str,
        key: &str,
        hash: &str,
        count: usize,
    ) -> Result<(), DeadLetterError> {
        let receipt = format!("{owner} {key}");
        let count = count.to_string();
        let headers = crate::kafka::headers([
            (RECEIPT_HEADER, receipt.as_str()),
            (RECEIPT_HASH_HEADER, hash),
            (RECEIPT_COUNT_HEADER, count.as_str()),
        ]);
        let record = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .key(owner.as_bytes())
            .headers(headers);
        let delivered = self
            .producer
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .map_err(|(e, _)| DeadLetterError::Write(e))?;
        self.applied
            .wait_for(
                delivered.partition,
                delivered.offset,
                Duration::from_secs(10),
            )
            .await;
        Ok(())
    }

    /// Re-enqueues dead letters as fresh deliveries (attempt count 0) and
    /// marks them replayed; returns how many were replayed.
    pub async fn replay(&self, letters: &[DeadLetter]) -> Result<usize, DeadLetterError> {
        if letters.is_empty() {
            return Ok(0);
        }
        let records = self.fetch(letters).await?;
        let mut last_marker = None;
        for (letter, (payload, headers)) in letters.iter().zip(records) {
            let fresh = DeliveryHeaders {
                event_id: headers.event_id,
                event_type: headers.event_type,
                event_time_ms: headers.event_time_ms,
                source: headers.source,
                ..Default::default()
            };
            OwnedRecord {
                topic: self.deliveries_topic.clone(),
                key: Some(letter.subscription_id.as_bytes().to_vec()),
                payload: Arc::new(payload),
                headers: Arc::new(fresh.to_kafka()),
            }
            .produce_durably(&self.producer)
            .await
            .map_err(DeadLetterError::Write)?;
            let marker_headers = crate::kafka::headers([(REPLAYED_HEADER, letter.id.as_str())]);
            let marker = FutureRecord::<[u8], [u8]>::to(&self.topic)
                .key(letter.subscription_id.as_bytes())
                .headers(marker_headers);
            let delivered = self
                .producer
                .send(marker, Timeout::After(Duration::from_secs(30)))
                .await
                .map_err(|(e, _)| DeadLetterError::Write(e))?;
            last_marker = Some((delivered.partition, delivered.offset));
            tracing::info!(dead_letter = %letter.id, subscription_id = %letter.subscription_id, "Dead letter replayed.");
        }
        // Answer once this instance has seen the markers, so the next call
        // (here) does not replay the same letters again.
        if let Some((p, o)) = last_marker {
            self.applied.wait_for(p, o, Duration::from_secs(10)).await;
        }
        Ok(letters.len())
    }

    /// Reads the dead letters' records back from the topic, in the given order.
    async fn fetch(
        &self,
        letters: &[DeadLetter],
    ) -> Result<Vec<(Vec<u8>, DeliveryHeaders)>, DeadLetterError> {
        let mut config = client_config(&self.settings, ClientKind::Consumer);
        config
            .set(
                "group.id",
                format!("{}.dead-letters-replay", self.settings.group_id),
            )
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer = config.create().map_err(|e| DeadLetterError::Read {
            id: String::new(),
            message: e.to_string(),
        })?;
        let topic = self.topic.clone();
        let wanted: Vec<(String, i32, i64)> = letters
            .iter()
            .map(|l| (l.id.clone(), l.partition, l.offset))
            .collect();
        tokio::task::block_in_place(move || {
            let mut found: HashMap<(i32, i64), (Vec<u8>, DeliveryHeaders)> = HashMap::new();
            for (id, partition, offset) in &wanted {
                if found.contains_key(&(*partition, *offset)) {
                    continue;
                }
                let read_err = |message: String| DeadLetterError::Read {
                    id: id.clone(),
                    message,
                };
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&topic, *partition, Offset::Offset(*offset))
                    .map_err(|e| read_err(e.to_string()))?;
                consumer.assign(&tpl).map_err(|e| read_err(e.to_string()))?;
                let deadline = std::time::Instant::now() + Duration::from_secs(15);
                loop {
                    if std::time::Instant::now() > deadline {
                        return Err(read_err("timed out".into()));
                    }
                    match consumer.poll(Duration::from_millis(200)) {
                        Some(Ok(msg)) if msg.partition() == *partition => {
                            if msg.offset() == *offset {
                                let headers = DeliveryHeaders::from_kafka(msg.headers())
                                    .map_err(|e| read_err(e.to_string()))?;
                                found.insert(
                                    (*partition, *offset),
                                    (msg.payload().unwrap_or_default().to_vec(), headers),
                                );
                                break;
                            }
                            if msg.offset() > *offset {
                                return Err(read_err("record no longer in the topic".into()));
                            }
                        }
                        Some(Err(e)) => return Err(read_err(e.to_string())),
                        _ => {}
                    }
                }
            }
            wanted
                .iter()
                .map(|(id, p, o)| {
                    found
                        .remove(&(*p, *o))
                        .ok_or_else(|| DeadLetterError::Read {
                            id: id.clone(),
                            message: "not found".into(),
                        })
                })
                .collect()
        })
    }

    /// Looks up dead letters by id for a subscription; unknown ids are
    /// returned separately.
    pub(crate) fn by_ids(
        &self,
        subscription_id: &str,
        ids: &[String],
    ) -> (Vec<DeadLetter>, Vec<String>) {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for id in ids {
            match self
                .get(id)
                .filter(|d| d.subscription_id == subscription_id)
            {
                Some(d) if parse_id(id).is_some() => found.push(d),
                _ => missing.push(id.clone()),
            }
        }
        (found, missing)
    }
}

/// `--since`: an RFC 3339 time, or a duration before `now` ("2h").
pub fn parse_since(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.to_utc());
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        anyhow::anyhow!("--since {text:?} is neither an RFC 3339 time nor a duration like 2h")
    })?;
    Ok(now - chrono::Duration::from_std(ago)?)
}

/// The operator's replay (`rewardhooks replay`): reads the dead-letter topic
/// to its end and replays the subscription's dead letters.
pub async fn replay_subscription(
    settings: &crate::config::Settings,
    subscription_id: &str,
    since: Option<DateTime<Utc>>,
    again: bool,
) -> anyhow::Result<usize> {
    let topics = crate::kafka::Topics::new(&settings.kafka.topic_prefix);
    let producer = crate::kafka::producer(&settings.kafka)?;
    let dead_letters = DeadLetters::new(
        &settings.kafka,
        producer.clone(),
        topics.dlq.clone(),
        topics.deliveries.clone(),
    );
    let cancel = CancellationToken::new();
    let follower = dead_letters.follow(cancel.clone()).await?;
    tokio::time::timeout(Duration::from_secs(120), dead_letters.wait_ready())
        .await
        .map_err(|_| anyhow::anyhow!("reading {} to its end took over 2 minutes", topics.dlq))?;
    let letters = dead_letters.list(|d| {
        d.subscription_id == subscription_id
            && (again || d.replayed_at.is_none())
            && since.is_none_or(|s| d.dead_at.is_some_and(|at| at >= s))
    });
    let replayed = dead_letters.replay(&letters).await?;
    cancel.cancel();
    let _ = follower.await;
    tokio::task::block_in_place(|| {
        use rdkafka::producer::Producer;
        producer.flush(Timeout::After(Duration::from_secs(10)))
    })?;
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn since_accepts_times_and_durations() {
        let now = Utc::now();
        assert_eq!(
            parse_since("2h", now).unwrap(),
            now - chrono::Duration::hours(2)
        );
        assert_eq!(
            parse_since("2026-11-27T10:00:00Z", now)
                .unwrap()
                .to_rfc3339(),
            "2026-11-27T10:00:00+00:00"
        );
        assert!(parse_since("yesterday", now).is_err());
    }

    use super::*;

    #[test]
    fn dead_letter_ids_round_trip() {
        assert_eq!(parse_id(&dead_letter_id(3, 42)), Some((3, 42)));
        assert_eq!(parse_id("dlq_x_1"), None);
        assert_eq!(parse_id("sub_1"), None);
    }
}
