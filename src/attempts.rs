//! The delivery log: a bounded in-memory view of the attempts topic that
//! every instance keeps (the newest attempts per subscription), so any
//! instance answers `GET /v1/subscriptions/{id}/attempts` for any
//! subscription.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaSettings;
use crate::kafka::follower::Follower;
use serde::{Deserialize, Serialize};

/// One attempt as written to the attempts topic and served by the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AttemptRecord {
    pub subscription_id: String,
    pub event_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub status_code: Option<u16>,
    pub success: bool,
    pub duration_ms: u64,
    pub error: Option<String>,
    pub response_body: String,
    pub at: chrono::DateTime<Utc>,
}

pub struct AttemptLog {
    per_subscription: RwLock<HashMap<String, VecDeque<AttemptRecord>>>,
    keep: usize,
}

impl AttemptLog {
    pub fn new(keep: usize) -> Arc<Self> {
        Arc::new(AttemptLog {
            per_subscription: RwLock::new(HashMap::new()),
            keep,
        })
    }

    pub async fn follow(
        self: &Arc<Self>,
        settings: &KafkaSettings,
        topic: &str,
        cancel: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, rdkafka::error::KafkaError> {
        let follower = Follower::start(settings, "attempts-view", topic).await?;
        let log = self.clone();
        Ok(tokio::spawn(follower.run(cancel, move |msg| {
            match msg.payload().map(serde_json::from_slice::<AttemptRecord>) {
                Some(Ok(attempt)) => log.add(attempt),
                Some(Err(e)) => tracing::debug!(error = %e, "Skipping unreadable attempt record."),
                None => {}
            }
        })))
    }

    pub(crate) fn add(&self, attempt: AttemptRecord) {
        let mut map = self
            .per_subscription
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let list = map.entry(attempt.subscription_id.clone()).or_default();
        list.push_back(attempt);
        while list.len() > self.keep {
            list.pop_front();
        }
    }

    /// Newest first, at most `limit`, only attempts strictly before `before`.
    pub(crate) fn recent(
        &self,
        subscription_id: &str,
        before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Vec<AttemptRecord> {
        let map = self
            .per_subscription
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let Some(list) = map.get(subscription_id) else {
            return Vec::new();
        };
        let mut out: Vec<AttemptRecord> = list
            .iter()
            .filter(|a| before.is_none_or(|b| a.at < b))
            .cloned()
            .collect();
        out.sort_by_key(|a| std::cmp::Reverse(a.at));
        out.truncate(limit);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(sub: &str, n: u32) -> AttemptRecord {
        AttemptRecord {
            subscription_id: sub.into(),
            event_id: format!("evt_{n}"),
            event_type: "points.earned".into(),
            attempt: 1,
            status_code: Some(200),
            success: true,
            duration_ms: 3,
            error: None,
            response_body: String::new(),
            at: DateTime::<Utc>::from_timestamp(1_800_000_000 + n as i64, 0).unwrap(),
        }
    }

    #[test]
    fn keeps_the_newest_per_subscription_newest_first() {
        let log = AttemptLog::new(3);
        for n in 0..5 {
            log.add(attempt("a", n));
        }
        log.add(attempt("b", 9));
        let ids: Vec<_> = log
            .recent("a", None, 10)
            .into_iter()
            .map(|a| a.event_id)
            .collect();
        assert_eq!(ids, vec!["evt_4", "evt_3", "evt_2"]);
        let before = attempt("a", 4).at;
        let ids: Vec<_> = log
            .recent("a", Some(before), 1)
            .into_iter()
            .map(|a| a.event_id)
            .collect();
        assert_eq!(ids, vec!["evt_3"]);
        assert!(log.recent("c", None, 10).is_empty());
    }
}
