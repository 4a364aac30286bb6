//! A group consumer whose offsets are stored only when the work a record
//! caused is durable, in order per partition, whatever order work finishes in.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::config::KafkaSettings;
use crate::kafka::offsets::OffsetTracker;
use crate::kafka::{client_config, ClientKind, KafkaSetupError};

/// What `/readyz` says of one consuming stage: whether this instance runs
/// it, whether its loop polls, and whether its consumer has joined the group
/// (had an assignment, possibly empty: a standby beyond the partition count
/// is a member too) and how many partitions it holds.
#[derive(Debug, Default)]
pub struct StageStatus {
    enabled: AtomicBool,
    consuming: AtomicBool,
    joined: AtomicBool,
    partitions: AtomicUsize,
}

impl StageStatus {
    /// This instance runs the stage (its role was asked for).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub(crate) fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Relaxed);
    }

    /// The group gave this consumer `count` partitions more.
    pub(crate) fn assigned(&self, count: usize) {
        self.partitions.fetch_add(count, Ordering::Relaxed);
        self.joined.store(true, Ordering::Relaxed);
    }

    /// The group took `count` partitions away (a rebalance, or lost ones).
    pub(crate) fn revoked(&self, count: usize) {
        let _ = self
            .partitions
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(count))
            });
    }

    /// Polling and a member of its group.
    pub fn is_ready(&self) -> bool {
        self.consuming.load(Ordering::Relaxed) && self.joined.load(Ordering::Relaxed)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "consuming": self.consuming.load(Ordering::Relaxed),
            "joined": self.joined.load(Ordering::Relaxed),
            "partitions": self.partitions.load(Ordering::Relaxed),
        })
    }
}

pub(crate) type SharedTracker = Arc<Mutex<OffsetTracker>>;

fn lock(tracker: &SharedTracker) -> std::sync::MutexGuard<'_, OffsetTracker> {
    tracker.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct TrackingContext {
    tracker: SharedTracker,
    status: Arc<StageStatus>,
}

impl ClientContext for TrackingContext {}

/// Partition assignments seen by this process's tracked consumers (`dev`
/// prints its banner after the first ones, below their log lines).
static ASSIGNMENTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub fn assignments() -> usize {
    ASSIGNMENTS.load(std::sync::atomic::Ordering::Relaxed)
}

impl ConsumerContext for TrackingContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            // Hand over what is done before another instance takes these.
            let commits = lock(&self.tracker).take_commit_list();
            if let Some(list) = commits {
                if let Err(e) = consumer.store_offsets(&list) {
                    tracing::debug!(error = %e, "Storing offsets before revoke failed.");
                }
            }
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, "Commit before revoke failed.");
            }
            let mut tracker = lock(&self.tracker);
            for p in partitions.elements() {
                tracker.revoke(p.topic(), p.partition());
            }
            self.status.revoked(partitions.count());
            tracing::info!(partitions = partitions.count(), "Partitions revoked.");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            self.status.assigned(partitions.count());
            ASSIGNMENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(partitions = partitions.count(), "Partitions assigned.");
        }
    }
}

/// A record in progress, to be marked done in the tracker.
#[derive(Clone)]
pub(crate) struct RecordRef {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    epoch: u64,
    tracker: SharedTracker,
}

impl RecordRef {
    pub(crate) fn complete(&self) {
        lock(&self.tracker).complete(&self.topic, self.partition, self.offset);
    }

    /// Whether this instance still owns the record's partition. Once it was
    /// revoked, the new owner reads the record again from the committed
    /// offset: work for it here must stop writing (no forked retry chains).
    pub(crate) fn is_current(&self) -> bool {
        lock(&self.tracker).is_current(&self.topic, self.partition, self.epoch)
    }
}

/// A stage consumer's configuration: the consumer defaults, its group and
/// assignment strategy, and what rewardhooks sets for latency, unless
/// `[kafka.consumer]` says otherwise.
pub fn stage_config(
    settings: &KafkaSettings,
    group_id: &str,
    assignment_strategy: &str,
) -> ClientConfig {
    let mut config = client_config(settings, ClientKind::Consumer);
    config
        .set("group.id", group_id)
        .set("partition.assignment.strategy", assignment_strategy)
        // Event-to-delivery latency: some brokers (Tansu) answer an idle
        // fetch only when this runs out instead of when data arrives
        // (`kafka.fetch_wait`).
        .set(
            "fetch.wait.max.ms",
            settings.fetch_wait.as_millis().max(1).to_string(),
        )
        // A subscribed topic that appears after start (an upstream team
        // creates it late) is noticed within seconds, not librdkafka's
        // default five minutes.
        .set("topic.metadata.refresh.interval.ms", "5000");
    // An operator's explicit choice wins.
    for key in [
        "partition.assignment.strategy",
        "fetch.wait.max.ms",
        "topic.metadata.refresh.interval.ms",
    ] {
        if let Some(value) = settings.consumer.get(key) {
            config.set(key, value);
        }
    }
    config
}

pub(crate) struct TrackedConsumer {
    consumer: StreamConsumer<TrackingContext>,
    tracker: SharedTracker,
    topics: Vec<Arc<str>>,
    status: Arc<StageStatus>,
}

impl TrackedConsumer {
    pub fn subscribe(
        settings: &KafkaSettings,
        group_id: &str,
        topics: &[String],
        assignment_strategy: &str,
        status: Arc<StageStatus>,
    ) -> Result<Self, KafkaSetupError> {
        let tracker = SharedTracker::default();
        let config = stage_config(settings, group_id, assignment_strategy);
        let consumer: StreamConsumer<TrackingContext> = config
            .create_with_context(TrackingContext {
                tracker: tracker.clone(),
                status: status.clone(),
            })
            .map_err(KafkaSetupError::Client)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(KafkaSetupError::Client)?;
        Ok(TrackedConsumer {
            consumer,
            tracker,
            topics: topics.iter().map(|t| Arc::from(t.as_str())).collect(),
            status,
        })
    }

    /// What `/readyz` says of this consumer's stage.
    pub fn status(&self) -> &StageStatus {
        &self.status
    }

    /// The next record (or a consumer error).
    pub async fn recv(&self) -> Result<BorrowedMessage<'_>, KafkaError> {
        self.consumer.recv().await
    }

    /// Stops fetching a partition and rewinds it to `offset`, to be read
    /// again from there once resumed.
    pub(crate) fn pause_at(&self, topic: &str, partition: i32, offset: i64) {
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition(topic, partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(topic, partition, error = %e, "Pause failed.");
        }
        if let Err(e) = self
            .consumer
            .seek(topic, partition, Offset::Offset(offset), Duration::ZERO)
        {
            tracing::warn!(topic, partition, error = %e, "Seek failed.");
        }
    }

    /// Stops fetching a partition; fetching goes on from the same position
    /// once resumed.
    pub(crate) fn pause(&self, topic: &str, partition: i32) {
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition(topic, partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::debug!(topic, partition, error = %e, "Pause failed (partition moved?).");
        }
    }

    /// The partitions assigned to this consumer now whose topic passes
    /// `keep` (a local call, no broker round trip).
    pub(crate) fn assigned(&self, keep: impl Fn(&str) -> bool) -> Vec<crate::kafka::PartitionKey> {
        let Ok(list) = self.consumer.assignment() else {
            return Vec::new();
        };
        list.elements()
            .iter()
            .filter(|e| keep(e.topic()))
            .map(|e| {
                let topic = self
                    .topics
                    .iter()
                    .find(|t| t.as_ref() == e.topic())
                    .cloned()
                    .unwrap_or_else(|| Arc::from(e.topic()));
                (topic, e.partition())
            })
            .collect()
    }

    pub fn resume(&self, topic: &str, partition: i32) {
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition(topic, partition);
        if let Err(e) = self.consumer.resume(&tpl) {
            tracing::debug!(topic, partition, error = %e, "Resume failed (partition moved?).");
        }
    }

    /// Registers a record as in progress; complete the returned reference
    /// once everything it caused is durable.
    pub(crate) fn begin(&self, msg: &BorrowedMessage<'_>) -> RecordRef {
        let topic = self
            .topics
            .iter()
            .find(|t| t.as_ref() == msg.topic())
            .cloned()
            .unwrap_or_else(|| Arc::from(msg.topic()));
        let epoch = lock(&self.tracker).begin(&topic, msg.partition(), msg.offset());
        RecordRef {
            topic,
            partition: msg.partition(),
            offset: msg.offset(),
            epoch,
            tracker: self.tracker.clone(),
        }
    }

    /// Stores the offsets below which everything is done; the auto-commit
    /// sends them to the broker.
    pub(crate) fn store_done(&self) {
        let commits = lock(&self.tracker).take_commit_list();
        if let Some(list) = commits {
            if let Err(e) = self.consumer.store_offsets(&list) {
                tracing::debug!(error = %e, "Storing offsets failed (partition moved?).");
            }
        }
    }

    pub(crate) fn in_progress(&self) -> usize {
        lock(&self.tracker).in_progress()
    }

    /// Waits up to `timeout` for in-progress work, then commits what is done.
    pub async fn drain_and_commit(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.in_progress() > 0 && tokio::time::Instant::now() < deadline {
            self.store_done();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.in_progress();
        if left > 0 {
            tracing::warn!(
                unfinished = left,
                "Shutdown timeout reached; unfinished records will be redelivered."
            );
        }
        self.store_done();
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "Final commit failed.");
        }
    }
}
