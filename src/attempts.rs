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
    /// The input record of the event (topic, partition, offset), so the
    /// event can be read again (`resend`). Absent on records written
    /// before it was kept, and on test webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::record::SourcePosition>,
}

/// The attempts in one record of the attempts topic: a JSON array (a
/// batch of one instance's writer), or one attempt object (records written
/// before batching, one per attempt).
pub fn decode(payload: &[u8]) -> Result<Vec<AttemptRecord>, serde_json::Error> {
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        serde_json::from_slice(payload)
    } else {
        serde_json::from_slice(payload).map(|one| vec![one])
    }
}

pub struct AttemptLog {
    per_subscription: RwLock<View>,
    keep: usize,
}

#[derive(Default)]
struct View {
    lists: HashMap<String, VecDeque<AttemptRecord>>,
    /// Attempts added locally ([`AttemptLog::add_local`]) that the follower
    /// has not read back yet: skipped once when it does.
    pending: Vec<AttemptRecord>,
}

impl AttemptLog {
    pub fn new(keep: usize) -> Arc<Self> {
        Arc::new(AttemptLog {
            per_subscription: RwLock::new(View::default()),
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
        Ok(tokio::spawn(follower.run(
            cancel,
            move |msg| match msg.payload().map(decode) {
                Some(Ok(attempts)) => log.add(attempts),
                Some(Err(e)) => tracing::debug!(error = %e, "Skipping unreadable attempt record."),
                None => {}
            },
        )))
    }

    /// Attempts read from the attempts topic: one record's (a batch),
    /// under one lock.
    pub(crate) fn add(&self, attempts: impl IntoIterator<Item = AttemptRecord>) {
        let mut view = self
            .per_subscription
            .write()
            .unwrap_or_else(|e| e.into_inner());
        for attempt in attempts {
            if let Some(i) = view.pending.iter().position(|p| *p == attempt) {
                view.pending.swap_remove(i);
                continue;
            }
            self.push(&mut view, attempt);
        }
    }

    /// An attempt this instance has just written durably to the attempts
    /// topic, shown at once (read your own writes: the test webhook answers
    /// after its attempt is in this view); the follower's copy is skipped.
    pub fn add_local(&self, attempt: AttemptRecord) {
        let mut view = self
            .per_subscription
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let seen = view
            .lists
            .get(&attempt.subscription_id)
            .is_some_and(|list| list.contains(&attempt));
        if seen {
            return;
        }
        // Bounded: a record that never comes back cannot pile up.
        if view.pending.len() >= 1024 {
            view.pending.remove(0);
        }
        view.pending.push(attempt.clone());
        self.push(&mut view, attempt);
    }

    fn push(&self, view: &mut View, attempt: AttemptRecord) {
        let list = match view.lists.get_mut(&attempt.subscription_id) {
            Some(list) => list,
            None => view
                .lists
                .entry(attempt.subscription_id.clone())
                .or_default(),
        };
        // Oldest first by time: batches of two instances (a partition
        // that moved) may be read in either order.
        let at = list
            .iter()
            .rposition(|a| a.at <= attempt.at)
            .map_or(0, |i| i + 1);
        list.insert(at, attempt);
        while list.len() > self.keep {
            list.pop_front();
        }
    }

    /// The newest attempt of `event_id` for a subscription that names its
    /// input record: where `resend` reads the event again.
    pub(crate) fn source_of(
        &self,
        subscription_id: &str,
        event_id: &str,
    ) -> Option<Option<crate::record::SourcePosition>> {
        let view = self
            .per_subscription
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let list = view.lists.get(subscription_id)?;
        let mut found = list
            .iter()
            .rev()
            .filter(|a| a.event_id == event_id)
            .peekable();
        found.peek()?;
        Some(found.find_map(|a| a.source.clone()))
    }

    /// Newest first, at most `limit`, only attempts strictly before `before`.
    pub(crate) fn recent(
        &self,
        subscription_id: &str,
        before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Vec<AttemptRecord> {
        let view = self
            .per_subscription
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let Some(list) = view.lists.get(subscription_id) else {
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

/// A successful attempt of `sub` for event `evt_<n>`, `n` seconds after a
/// fixed time (for tests).
#[cfg(test)]
pub(crate) fn sample(sub: &str, n: u32) -> AttemptRecord {
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
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(sub: &str, n: u32) -> AttemptRecord {
        sample(sub, n)
    }

    /// The event ids of a subscription's attempts, newest first.
    fn event_ids(
        log: &AttemptLog,
        sub: &str,
        before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Vec<String> {
        log.recent(sub, before, limit)
            .into_iter()
            .map(|a| a.event_id)
            .collect()
    }

    #[test]
    fn keeps_the_newest_per_subscription_newest_first() {
        let log = AttemptLog::new(3);
        for n in 0..5 {
            log.add([attempt("a", n)]);
        }
        log.add([attempt("b", 9)]);
        let ids = event_ids(&log, "a", None, 10);
        assert_eq!(ids, vec!["evt_4", "evt_3", "evt_2"]);
        let before = attempt("a", 4).at;
        let ids = event_ids(&log, "a", Some(before), 1);
        assert_eq!(ids, vec!["evt_3"]);
        assert!(log.recent("c", None, 10).is_empty());
    }

    #[test]
    fn batches_and_single_records_both_read_and_order_by_time() {
        let batch = serde_json::to_vec(&vec![attempt("a", 3), attempt("a", 4)]).unwrap();
        assert_eq!(
            decode(&batch).unwrap(),
            vec![attempt("a", 3), attempt("a", 4)]
        );
        // A record of a version that wrote one attempt per record.
        let single = serde_json::to_vec(&attempt("a", 1)).unwrap();
        assert_eq!(decode(&single).unwrap(), vec![attempt("a", 1)]);
        assert!(decode(b"not json").is_err());
        // Read out of order (two instances' batches): kept by time, and the
        // oldest is what the bound drops.
        let log = AttemptLog::new(3);
        log.add(decode(&batch).unwrap());
        log.add([attempt("a", 1)]);
        log.add([attempt("a", 2)]);
        let ids = event_ids(&log, "a", None, 10);
        assert_eq!(ids, vec!["evt_4", "evt_3", "evt_2"]);
        assert_eq!(log.source_of("a", "evt_1"), None);
    }

    #[test]
    fn a_local_attempt_shows_at_once_and_once() {
        let log = AttemptLog::new(10);
        // Written here, read back later by the follower.
        log.add_local(attempt("a", 1));
        assert_eq!(log.recent("a", None, 10).len(), 1);
        log.add([attempt("a", 1)]);
        assert_eq!(log.recent("a", None, 10).len(), 1);
        // Read back before the local insert: still once.
        log.add([attempt("a", 2)]);
        log.add_local(attempt("a", 2));
        assert_eq!(log.recent("a", None, 10).len(), 2);
        log.add([attempt("a", 3)]);
        assert_eq!(log.recent("a", None, 10).len(), 3);
    }
}
