//! The subscription store: the compacted subscriptions topic (key =
//! subscription id, value = JSON, tombstone = deleted), followed from the
//! beginning by every instance into an in-memory view.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaSettings;
use crate::events::Event;
use crate::fanout::matcher::{Index, LiveSubscription};
use crate::kafka::{client_config, ClientKind};
use crate::metrics::METRICS;
use crate::subscriptions::{Status, Subscription};

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
    #[error("subscription view setup failed: {0}")]
    Setup(String),
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
    /// Highest offset applied per partition.
    applied: HashMap<i32, i64>,
}

pub struct SubscriptionStore {
    view: RwLock<View>,
    version: watch::Sender<u64>,
    ready: watch::Sender<bool>,
    producer: FutureProducer,
    topic: String,
    write_timeout: Duration,
}

impl SubscriptionStore {
    pub fn new(producer: FutureProducer, topic: String, write_timeout: Duration) -> Arc<Self> {
        Arc::new(SubscriptionStore {
            view: RwLock::new(View::default()),
            version: watch::channel(0).0,
            ready: watch::channel(false).0,
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
        let follow_err = |source| StoreError::Follow {
            topic: self.topic.clone(),
            source,
        };
        let mut config = client_config(settings, ClientKind::Consumer);
        config
            .set(
                "group.id",
                format!("{}.subscriptions-view", settings.group_id),
            )
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        let consumer: StreamConsumer = config.create().map_err(follow_err)?;
        let topic = self.topic.clone();
        let (consumer, ends) = tokio::task::spawn_blocking(move || {
            let metadata =
                consumer.fetch_metadata(Some(&topic), Timeout::After(Duration::from_secs(30)))?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            let mut ends = HashMap::new();
            let mut tpl = TopicPartitionList::new();
            for p in partitions {
                let (_, high) = consumer.fetch_watermarks(
                    &topic,
                    p,
                    Timeout::After(Duration::from_secs(30)),
                )?;
                ends.insert(p, high);
                tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
            }
            consumer.assign(&tpl)?;
            Ok::<_, rdkafka::error::KafkaError>((consumer, ends))
        })
        .await
        .map_err(|e| StoreError::Setup(e.to_string()))?
        .map_err(follow_err)?;

        let store = self.clone();
        store.check_caught_up(&ends);
        Ok(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    msg = consumer.recv() => match msg {
                        Ok(msg) => {
                            let key = msg.key().and_then(|k| std::str::from_utf8(k).ok());
                            store.apply(key, msg.payload(), msg.partition(), msg.offset());
                            store.check_caught_up(&ends);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "Reading the subscriptions topic failed; retrying.");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            }
        }))
    }

    fn check_caught_up(&self, ends: &HashMap<i32, i64>) {
        if *self.ready.borrow() {
            return;
        }
        let caught_up = {
            let view = self.read();
            ends.iter()
                .all(|(p, high)| *high <= 0 || view.applied.get(p).is_some_and(|o| o + 1 >= *high))
        };
        if caught_up {
            let count = self.read().by_id.len();
            tracing::info!(subscriptions = count, "Subscription view caught up.");
            self.ready.send_replace(true);
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
            Some(bytes) => match serde_json::from_slice::<Subscription>(bytes) {
                Ok(sub) => Some(sub),
                Err(e) => {
                    tracing::warn!(partition, offset, error = %e, "Skipping unreadable subscription record.");
                    None
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
            let applied = view.applied.entry(partition).or_insert(offset);
            *applied = (*applied).max(offset);
        }
        self.version.send_modify(|v| *v += 1);
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the view has caught up with the topic.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|ready| *ready).await;
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

    pub fn count_by_status(&self, status: Status) -> usize {
        self.read()
            .by_id
            .values()
            .filter(|l| l.sub.status == status)
            .count()
    }

    /// Writes a subscription and returns once this instance has read it back.
    pub async fn put(&self, sub: &Subscription) -> Result<(), StoreError> {
        let value = serde_json::to_vec(sub).unwrap_or_default();
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
        let mut rx = self.version.subscribe();
        let applied = |store: &Self| {
            store
                .read()
                .applied
                .get(&partition)
                .is_some_and(|o| *o >= offset)
        };
        let wait = async {
            while !applied(self) {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::time::timeout(self.write_timeout, wait)
            .await
            .map_err(|_| StoreError::ReadBackTimeout {
                id: id.to_string(),
                timeout: self.write_timeout,
            })
    }
}
