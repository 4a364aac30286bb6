//! The subscription store: the compacted subscriptions topic (key =
//! subscription id, value = JSON, tombstone = deleted), followed from the
//! beginning by every instance into an in-memory view.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaSettings;
use crate::events::Event;
use crate::kafka::follower::{Applied, Follower};
use crate::metrics::METRICS;
use crate::secrets::{CipherError, SecretCipher};
use crate::subscriptions::live::{Index, LiveSubscription};
use crate::subscriptions::{Secret, Subscription};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot write subscription {id} to Kafka: {source}")]
    Write {
        id: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("subscription {id} was written but not read back within {timeout:?}")]
    ReadBackTimeout { id: String, timeout: Duration },
    #[error("cannot follow the subscriptions topic {topic}: {source}")]
    Follow {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

#[derive(Default)]
struct View {
    by_id: BTreeMap<String, Arc<LiveSubscription>>,
    index: Index,
}

pub struct SubscriptionStore {
    view: RwLock<View>,
    /// Encrypts secrets on the way to Kafka and decrypts them on the way back.
    cipher: Option<SecretCipher>,
    applied: Applied,
    producer: FutureProducer,
    topic: String,
    write_timeout: Duration,
}

impl SubscriptionStore {
    pub fn new(
        producer: FutureProducer,
        topic: String,
        write_timeout: Duration,
        cipher: Option<SecretCipher>,
    ) -> Arc<Self> {
        Arc::new(SubscriptionStore {
            view: RwLock::new(View::default()),
            cipher,
            applied: Applied::default(),
            producer,
            topic,
            write_timeout,
        })
    }

    /// Starts following the topic. The store turns ready once it has read
    /// up to the end offsets seen here.
    pub async fn follow(
        self: &Arc<Self>,
        settings: &KafkaSettings,
        cancel: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, StoreError> {
        let follower = Follower::start(settings, "subscriptions-view", &self.topic)
            .await
            .map_err(|source| StoreError::Follow {
                topic: self.topic.clone(),
                source,
            })?;
        let ends = follower.ends.clone();
        let store = self.clone();
        store.check_caught_up(&ends);
        Ok(tokio::spawn(follower.run(cancel, move |msg| {
            let key = msg.key().and_then(|k| std::str::from_utf8(k).ok());
            store.apply(key, msg.payload(), msg.partition(), msg.offset());
            store.check_caught_up(&ends);
        })))
    }

    fn check_caught_up(&self, ends: &HashMap<i32, i64>) {
        if self.applied.check_caught_up(ends) {
            let count = self.read().by_id.len();
            tracing::info!(subscriptions = count, "Subscription view caught up.");
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one record of the subscriptions topic.
    pub fn apply(&self, key: Option<&str>, payload: Option<&[u8]>, partition: i32, offset: i64) {
        let parsed = match payload {
            None => None,
            Some(bytes) => match serde_json::from_slice::<Subscription>(bytes)
                .map_err(|e| e.to_string())
                .and_then(|sub| self.open_secrets(sub).map_err(|e| e.to_string()))
            {
                Ok(sub) => Some(sub),
                Err(e) => {
                    // Not applied: a subscription without its secret cannot sign.
                    tracing::error!(partition, offset, error = %e, "Skipping unreadable subscription record.");
                    self.applied.record(partition, offset);
                    return;
                }
            },
        };
        {
            let mut view = self.write();
            let id = parsed
                .as_ref()
                .map(|s| s.id.clone())
                .or_else(|| key.map(str::to_string));
            if let Some(id) = id {
                if let Some(old) = view.by_id.remove(&id) {
                    view.index.remove(&old);
                    METRICS
                        .subscriptions
                        .with_label_values(&[old.sub.status.as_str()])
                        .dec();
                }
                if let Some(sub) = parsed {
                    METRICS
                        .subscriptions
                        .with_label_values(&[sub.status.as_str()])
                        .inc();
                    let live = Arc::new(LiveSubscription::new(sub));
                    view.index.insert(&live);
                    view.by_id.insert(id, live);
                }
            }
        }
        self.applied.record(partition, offset);
    }

    pub fn is_ready(&self) -> bool {
        self.applied.is_ready()
    }

    /// Waits until the view has caught up with the topic.
    pub async fn wait_ready(&self) {
        self.applied.wait_ready().await
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveSubscription>> {
        self.read().by_id.get(id).cloned()
    }

    pub fn matching(&self, event: &Event) -> Vec<Arc<LiveSubscription>> {
        self.read().index.matching(event)
    }

    /// Up to `limit` subscriptions after `cursor`, ordered by id, optionally
    /// only one owner's, and whether more follow.
    pub fn list(
        &self,
        owner: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<LiveSubscription>>, bool) {
        let view = self.read();
        let range = match cursor {
            Some(c) => view
                .by_id
                .range::<str, _>((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded)),
            None => view.by_id.range::<str, _>(..),
        };
        let mut items: Vec<_> = range
            .map(|(_, live)| live)
            .filter(|live| owner.is_none_or(|o| live.sub.owner == o))
            .take(limit + 1)
            .cloned()
            .collect();
        let more = items.len() > limit;
        items.truncate(limit);
        (items, more)
    }

    pub fn count_owned(&self, owner: &str) -> usize {
        self.read()
            .by_id
            .values()
            .filter(|l| l.sub.owner == owner)
            .count()
    }

    fn open_secrets(&self, mut sub: Subscription) -> Result<Subscription, CipherError> {
        if let Some(cipher) = &self.cipher {
            sub.secret = Secret::from_string(cipher.decrypt(sub.secret.expose())?);
            if let Some(previous) = &sub.previous_secret {
                sub.previous_secret = Some(Secret::from_string(cipher.decrypt(previous.expose())?));
            }
        }
        Ok(sub)
    }

    fn seal_secrets(&self, sub: &Subscription) -> Subscription {
        let mut sealed = sub.clone();
        if let Some(cipher) = &self.cipher {
            sealed.secret = Secret::from_string(cipher.encrypt(sub.secret.expose()));
            sealed.previous_secret = sub
                .previous_secret
                .as_ref()
                .map(|p| Secret::from_string(cipher.encrypt(p.expose())));
        }
        sealed
    }

    /// Writes a subscription and returns once this instance has read it back.
    pub async fn put(&self, sub: &Subscription) -> Result<(), StoreError> {
        let value = serde_json::to_vec(&self.seal_secrets(sub)).unwrap_or_default();
        self.produce_and_wait(&sub.id, Some(&value)).await
    }

    /// Deletes a subscription (tombstone) and waits to read it back.
    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.produce_and_wait(id, None).await
    }

    async fn produce_and_wait(&self, id: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic).key(id);
        if let Some(value) = value {
            record = record.payload(value);
        }
        let (partition, offset) = self
            .producer
            .send(record, Timeout::After(self.write_timeout))
            .await
            .map(|delivery| (delivery.partition, delivery.offset))
            .map_err(|(source, _)| StoreError::Write {
                id: id.to_string(),
                source,
            })?;
        if self
            .applied
            .wait_for(partition, offset, self.write_timeout)
            .await
        {
            Ok(())
        } else {
            Err(StoreError::ReadBackTimeout {
                id: id.to_string(),
                timeout: self.write_timeout,
            })
        }
    }
}
