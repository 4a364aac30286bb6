//! Recovery jobs as data: their model, and the view every instance keeps of
//! the compacted `<prefix>.recoveries` topic (`Recoveries`). Planning and
//! running jobs is `recovery/`, which needs the instance context; this part
//! needs none, so the context holds the view without a module circle.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaSettings;
use crate::events::filter::type_matches;
use crate::events::Event;
use crate::kafka::follower::{Applied, Follower};
use crate::kafka::OwnedRecord;
use crate::subscriptions::live::LiveSubscription;

/// Kafka calls made while planning or reading one record wait this long.
pub(crate) const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryStatus {
    Running,
    Finished,
    Failed,
    Cancelled,
}

impl RecoveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryStatus::Running => "running",
            RecoveryStatus::Finished => "finished",
            RecoveryStatus::Failed => "failed",
            RecoveryStatus::Cancelled => "cancelled",
        }
    }

    pub(crate) fn is_terminal(self) -> bool {
        self != RecoveryStatus::Running
    }
}

/// One input partition of a job: read from `next` up to (not including) `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRange {
    pub topic: String,
    pub partition: i32,
    pub next: i64,
    pub end: i64,
}

/// The `Idempotency-Key` a job was created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyStamp {
    /// The caller's owner (`admin` for the admin token).
    pub caller: String,
    pub key: String,
    pub hash: String,
}

/// A recovery job as stored in the recoveries topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    pub id: String,
    pub owner: String,
    pub subscription_id: String,
    pub status: RecoveryStatus,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<String>>,
    pub scanned: u64,
    pub matched: u64,
    pub written: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub partitions: Vec<PartitionRange>,
    /// Deliveries-topic partition → the offset from which writes made after
    /// the last checkpoint can be: where a takeover looks for them.
    #[serde(default)]
    pub deliveries_from: BTreeMap<i32, i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<IdempotencyStamp>,
}

impl Recovery {
    pub(crate) fn done(&self) -> bool {
        self.partitions.iter().all(|p| p.next >= p.end)
    }
}

/// Whether a recovery job sends `event` to the subscription: the
/// subscription as it is now (its types and filter), narrowed by the job's
/// `event_types`. The one place a job matches; an owner's scope, where
/// owners have one, is checked here too.
pub(crate) fn job_matches(live: &LiveSubscription, job: &Recovery, event: &Event) -> bool {
    live.matches(event)
        && job
            .event_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| type_matches(t, &event.event_type)))
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("the window starts before the earliest event still held ({earliest})")]
    OutsideRetention { earliest: DateTime<Utc> },
    #[error("the event's record is past retention")]
    Expired,
    #[error("the event's record is not in the topic")]
    NotFound,
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Other(String),
}

/// Every instance's view of the recoveries topic.
pub struct Recoveries {
    jobs: RwLock<HashMap<String, Recovery>>,
    applied: Applied,
    producer: rdkafka::producer::FutureProducer,
    topic: String,
}

impl Recoveries {
    pub fn new(producer: rdkafka::producer::FutureProducer, topic: String) -> Arc<Self> {
        Arc::new(Recoveries {
            jobs: RwLock::new(HashMap::new()),
            applied: Applied::default(),
            producer,
            topic,
        })
    }

    pub async fn follow(
        self: &Arc<Self>,
        settings: &KafkaSettings,
        cancel: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, KafkaError> {
        let follower = Follower::start(settings, "recoveries-view", &self.topic).await?;
        let ends = follower.ends.clone();
        self.applied.check_caught_up(&ends);
        let view = self.clone();
        Ok(tokio::spawn(follower.run(cancel, move |msg| {
            view.apply_message(msg);
            view.applied.record(msg.partition(), msg.offset());
            view.applied.check_caught_up(&ends);
        })))
    }

    fn apply_message(&self, msg: &BorrowedMessage<'_>) {
        match msg.payload().map(serde_json::from_slice::<Recovery>) {
            Some(Ok(job)) => self.apply(job),
            Some(Err(e)) => tracing::warn!(error = %e, "Skipping an unreadable recovery record."),
            None => {}
        }
    }

    /// A job ended stays ended (a checkpoint racing a cancel never revives
    /// it), and an older state never replaces a newer one.
    fn apply(&self, job: Recovery) {
        let mut jobs = self.jobs.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = jobs.get(&job.id) {
            if old.status.is_terminal() && !job.status.is_terminal() {
                return;
            }
            if old.updated_at > job.updated_at && old.status == job.status {
                return;
            }
        }
        jobs.insert(job.id.clone(), job);
    }

    /// Writes a job's state and shows it here at once.
    pub(crate) async fn write(&self, job: &Recovery) -> Result<(), KafkaError> {
        let record = OwnedRecord {
            topic: self.topic.clone(),
            key: Some(job.id.as_bytes().to_vec()),
            payload: Arc::new(serde_json::to_vec(job).unwrap_or_default()),
            headers: Arc::default(),
        };
        record.produce_durably(&self.producer).await?;
        self.apply(job.clone());
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<Recovery> {
        self.jobs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub(crate) fn running(&self) -> Vec<Recovery> {
        self.jobs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|j| j.status == RecoveryStatus::Running)
            .cloned()
            .collect()
    }

    /// The job created within the last 24 h with this caller's key.
    pub(crate) fn by_idempotency_key(&self, caller: &str, key: &str) -> Option<Recovery> {
        let day_ago = Utc::now() - chrono::Duration::hours(24);
        self.jobs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|j| j.created_at > day_ago)
            .find(|j| {
                j.idempotency
                    .as_ref()
                    .is_some_and(|s| s.caller == caller && s.key == key)
            })
            .cloned()
    }

    /// Reads the recoveries topic to its end as of now.
    pub async fn fence(&self) -> Result<(), KafkaError> {
        self.applied.wait_ready().await;
        let ends = self.applied.read_ends(&self.producer, &self.topic).await?;
        if !self.applied.wait_ends(&ends, KAFKA_TIMEOUT).await {
            return Err(KafkaError::Canceled);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: RecoveryStatus, at: i64) -> Recovery {
        Recovery {
            id: "rec_1".into(),
            owner: "o".into(),
            subscription_id: "sub_1".into(),
            status,
            since: DateTime::from_timestamp(0, 0).unwrap(),
            until: DateTime::from_timestamp(10, 0).unwrap(),
            event_types: None,
            scanned: at as u64,
            matched: 0,
            written: 0,
            created_at: DateTime::from_timestamp(0, 0).unwrap(),
            updated_at: DateTime::from_timestamp(at, 0).unwrap(),
            finished_at: None,
            error: None,
            partitions: vec![],
            deliveries_from: BTreeMap::new(),
            idempotency: None,
        }
    }

    #[test]
    fn an_ended_job_stays_ended_and_older_states_never_win() {
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create()
            .unwrap();
        let view = Recoveries::new(producer, "t".into());
        view.apply(job(RecoveryStatus::Running, 5));
        view.apply(job(RecoveryStatus::Running, 3));
        assert_eq!(view.get("rec_1").unwrap().scanned, 5);
        view.apply(job(RecoveryStatus::Cancelled, 4));
        view.apply(job(RecoveryStatus::Running, 9));
        assert_eq!(view.get("rec_1").unwrap().status, RecoveryStatus::Cancelled);
    }
}
