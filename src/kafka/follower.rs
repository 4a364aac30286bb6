//! Following a whole topic from the beginning (no consumer group), the way
//! every instance materializes the subscriptions and dead-letter topics, and
//! knowing when a given write has been read back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaSettings;
use crate::kafka::{client_config, ClientKind};

/// Offsets applied so far per partition, and waiting for one to be reached.
pub(crate) struct Applied {
    offsets: Mutex<HashMap<i32, i64>>,
    /// The followed topic's partitions, known from the first end offsets.
    partitions: std::sync::OnceLock<Vec<i32>>,
    version: watch::Sender<u64>,
    ready: watch::Sender<bool>,
}

impl Default for Applied {
    fn default() -> Self {
        Applied {
            offsets: Mutex::new(HashMap::new()),
            partitions: std::sync::OnceLock::new(),
            version: watch::channel(0).0,
            ready: watch::channel(false).0,
        }
    }
}

impl Applied {
    fn offsets(&self) -> std::sync::MutexGuard<'_, HashMap<i32, i64>> {
        self.offsets.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, partition: i32, offset: i64) {
        {
            let mut offsets = self.offsets();
            let applied = offsets.entry(partition).or_insert(offset);
            *applied = (*applied).max(offset);
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// The highest offset applied on a partition.
    pub(crate) fn offset(&self, partition: i32) -> Option<i64> {
        self.offsets().get(&partition).copied()
    }

    pub fn has(&self, partition: i32, offset: i64) -> bool {
        self.offsets().get(&partition).is_some_and(|o| *o >= offset)
    }

    /// Marks the view ready once it has read up to `ends` (end offsets seen
    /// at start). Returns true when it just became ready.
    pub(crate) fn check_caught_up(&self, ends: &HashMap<i32, i64>) -> bool {
        if self.partitions.get().is_none() {
            let mut partitions: Vec<i32> = ends.keys().copied().collect();
            partitions.sort();
            let _ = self.partitions.set(partitions);
        }
        if *self.ready.borrow() {
            return false;
        }
        let caught_up = ends
            .iter()
            .all(|(p, high)| *high <= 0 || self.has(*p, high - 1));
        if caught_up {
            self.ready.send_replace(true);
        }
        caught_up
    }

    /// The followed topic's partitions (empty before following starts).
    pub(crate) fn partitions(&self) -> &[i32] {
        self.partitions.get().map_or(&[], Vec::as_slice)
    }

    /// The followed topic's end offsets, read now: every write acknowledged
    /// before this call is below them (the first half of a read fence).
    pub(crate) async fn read_ends(
        &self,
        producer: &FutureProducer,
        topic: &str,
    ) -> Result<Vec<(i32, i64)>, KafkaError> {
        let partitions = self.partitions().to_vec();
        let producer = producer.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            partitions
                .iter()
                .map(|p| {
                    producer
                        .client()
                        .fetch_watermarks(&topic, *p, Timeout::After(Duration::from_secs(5)))
                        .map(|(_, high)| (*p, high))
                })
                .collect()
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }

    /// Waits (at most `timeout` a partition) until everything below `ends`
    /// is applied (the second half); false when it was not in time.
    pub(crate) async fn wait_ends(&self, ends: &[(i32, i64)], timeout: Duration) -> bool {
        for (partition, high) in ends {
            if *high > 0 && !self.wait_for(*partition, high - 1, timeout).await {
                return false;
            }
        }
        true
    }

    pub(crate) fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// Waits until `offset` of `partition` is applied; false on timeout.
    pub async fn wait_for(&self, partition: i32, offset: i64, timeout: Duration) -> bool {
        let mut rx = self.version.subscribe();
        let wait = async {
            while !self.has(partition, offset) {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

pub(crate) struct Follower {
    consumer: StreamConsumer,
    pub ends: HashMap<i32, i64>,
}

impl Follower {
    /// Assigns every partition of `topic` from the beginning and notes the
    /// end offsets as of now.
    pub async fn start(
        settings: &KafkaSettings,
        name: &str,
        topic: &str,
    ) -> Result<Follower, KafkaError> {
        let mut config = client_config(settings, ClientKind::Consumer);
        config
            .set("group.id", format!("{}.{name}", settings.group_id))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // A follower reads a whole topic at start: small fetches keep
            // the fetch buffers (librdkafka's, outside the Rust heap and
            // kept by the C allocator once freed) from growing with it.
            // 100,000 subscriptions measured about 5 MiB less RSS, loaded
            // as fast (docs/performance.md).
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.max.bytes", "2097152")
            .set("max.partition.fetch.bytes", "524288");
        let consumer: StreamConsumer = config.create()?;
        let topic = topic.to_string();
        tokio::task::block_in_place(move || {
            let timeout = Timeout::After(Duration::from_secs(30));
            let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
            let mut ends = HashMap::new();
            let mut tpl = TopicPartitionList::new();
            for p in metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            {
                let (_, high) = consumer.fetch_watermarks(&topic, p, timeout)?;
                ends.insert(p, high);
                tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
            }
            consumer.assign(&tpl)?;
            Ok(Follower { consumer, ends })
        })
    }

    /// Feeds every record to `apply` until cancelled.
    pub async fn run(self, cancel: CancellationToken, mut apply: impl FnMut(&BorrowedMessage<'_>)) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                msg = self.consumer.recv() => match msg {
                    Ok(msg) => apply(&msg),
                    Err(e) => {
                        tracing::warn!(error = %e, "Following a topic failed; retrying.");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    }
}
