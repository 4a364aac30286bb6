//! The audit trail: one record per change made through the API, appended to
//! the audit topic (one partition, so it is in order), and a bounded
//! in-memory view of it for `GET /v1/audit` on every API instance.
//!
//! A record names who (owner id or `admin`, and the key or session), what
//! (action and target), when, the request id and source address. It never
//! carries a secret or a token: handlers pass ids, never bodies.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaSettings;
use crate::kafka::follower::Follower;

/// Records the view keeps (the newest); older ones stay in the topic.
const VIEW_CAPACITY: usize = 50_000;

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Actor {
    /// The owner id, or `admin`.
    pub owner: String,
    /// The API key (`key_…`) or portal session (`ses_…`) it used, when not
    /// a configured token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// One audit record (value in the audit topic).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// `aud_…`, sorts by time.
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    /// e.g. `subscription.create`, `owner.key.revoke`.
    pub action: String,
    /// The id of what changed (`sub_…`, an owner id, `key_…`).
    pub target: String,
    /// The owner the target belongs to, for `GET /v1/audit?owner=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The newest records of the audit topic, oldest first.
pub struct AuditLog {
    records: Mutex<VecDeque<AuditRecord>>,
    producer: FutureProducer,
    topic: String,
}

impl AuditLog {
    pub fn new(producer: FutureProducer, topic: String) -> Arc<Self> {
        Arc::new(AuditLog {
            records: Mutex::new(VecDeque::new()),
            producer,
            topic,
        })
    }

    /// Appends a record; waits for the broker's acknowledgement.
    pub async fn append(&self, record: &AuditRecord) -> Result<(), rdkafka::error::KafkaError> {
        let value = serde_json::to_vec(record).unwrap_or_default();
        let key = record.owner.clone().unwrap_or_default();
        self.producer
            .send(
                FutureRecord::to(&self.topic).key(&key).payload(&value),
                Timeout::After(Duration::from_secs(10)),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// Follows the topic from the beginning into the view.
    pub async fn follow(
        self: &Arc<Self>,
        settings: &KafkaSettings,
        cancel: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, rdkafka::error::KafkaError> {
        let follower = Follower::start(settings, "audit-view", &self.topic).await?;
        let log = self.clone();
        Ok(tokio::spawn(follower.run(cancel, move |msg| {
            let Some(record) = msg
                .payload()
                .and_then(|p| serde_json::from_slice::<AuditRecord>(p).ok())
            else {
                return;
            };
            let mut records = log.records.lock().unwrap_or_else(|e| e.into_inner());
            if records.len() >= VIEW_CAPACITY {
                records.pop_front();
            }
            records.push_back(record);
        })))
    }

    /// Newest first: records of `owner` (all when `None`) at or after
    /// `since`, older than the record `cursor` names; and whether more follow.
    pub fn page(
        &self,
        owner: Option<&str>,
        since: Option<DateTime<Utc>>,
        cursor: Option<&str>,
        limit: usize,
    ) -> (Vec<AuditRecord>, bool) {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        page_of(&records, owner, since, cursor, limit)
    }
}

/// A page of `records` (oldest first), as [`AuditLog::page`] describes.
fn page_of(
    records: &VecDeque<AuditRecord>,
    owner: Option<&str>,
    since: Option<DateTime<Utc>>,
    cursor: Option<&str>,
    limit: usize,
) -> (Vec<AuditRecord>, bool) {
    // The cursor is the last record of the previous page: resume after
    // it in log order (ids from instances with skewed clocks need not
    // sort like the log).
    let mut newest_first = records.iter().rev();
    if let Some(c) = cursor {
        for r in newest_first.by_ref() {
            if r.id == c {
                break;
            }
        }
    }
    let mut matching = newest_first
        .filter(|r| owner.is_none_or(|o| r.owner.as_deref() == Some(o)))
        .take_while(|r| since.is_none_or(|s| r.at >= s));
    let page: Vec<AuditRecord> = matching.by_ref().take(limit).cloned().collect();
    let more = matching.next().is_some();
    (page, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i64, owner: &str) -> AuditRecord {
        AuditRecord {
            id: format!("aud_{n:03}"),
            at: DateTime::from_timestamp(1_800_000_000 + n, 0).unwrap(),
            actor: Actor {
                owner: "admin".into(),
                key_id: None,
            },
            action: "subscription.update".into(),
            target: format!("sub_{n}"),
            owner: Some(owner.into()),
            request_id: None,
            source: None,
        }
    }

    #[test]
    fn pages_run_newest_first_by_owner_and_since_and_resume_after_the_cursor() {
        let records: VecDeque<AuditRecord> = (0..10)
            .map(|n| record(n, if n % 2 == 0 { "even" } else { "odd" }))
            .collect();
        let ids = |page: &[AuditRecord]| page.iter().map(|r| r.target.clone()).collect::<Vec<_>>();
        let (page, more) = page_of(&records, Some("even"), None, None, 2);
        assert_eq!(ids(&page), ["sub_8", "sub_6"]);
        assert!(more);
        let (page, more) = page_of(&records, Some("even"), None, Some("aud_006"), 2);
        assert_eq!(ids(&page), ["sub_4", "sub_2"]);
        assert!(more);
        let since = DateTime::from_timestamp(1_800_000_000 + 5, 0);
        let (page, more) = page_of(&records, None, since, None, 50);
        assert_eq!(ids(&page), ["sub_9", "sub_8", "sub_7", "sub_6", "sub_5"]);
        assert!(!more);
    }
}
