//! Retries through Kafka delay topics: one topic per distinct delay of
//! `delivery.retry_schedule`. Every record of a tier has the same delay, so
//! records fall due in offset order and a partition can simply wait (paused)
//! until its head record is due.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{BorrowedMessage, Message};
use tokio::sync::mpsc;

use crate::kafka::consumer::TrackedConsumer;
use crate::kafka::Topics;

/// The retry schedule and its tier topics.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    delays: Vec<Duration>,
    /// Distinct delays, ascending, with their topics.
    tiers: Vec<(Duration, String)>,
}

impl Schedule {
    pub fn new(delays: &[Duration], topics: &Topics) -> Self {
        let mut distinct: Vec<Duration> = delays.to_vec();
        distinct.sort();
        distinct.dedup();
        Schedule {
            delays: delays.to_vec(),
            tiers: distinct.into_iter().map(|d| (d, topics.retry(d))).collect(),
        }
    }

    pub(crate) fn topics(&self) -> Vec<String> {
        self.tiers.iter().map(|(_, t)| t.clone()).collect()
    }

    pub(crate) fn is_tier(&self, topic: &str) -> bool {
        self.tiers.iter().any(|(_, t)| t == topic)
    }

    pub(crate) fn topic_for(&self, delay: Duration) -> &str {
        self.tiers
            .iter()
            .find(|(d, _)| *d == delay)
            .or(self.tiers.last())
            .map(|(_, t)| t.as_str())
            .unwrap_or_default()
    }

    /// What the delivery stage consumes: fresh deliveries and every tier.
    pub(crate) fn consumed_topics(&self, topics: &Topics) -> Vec<String> {
        std::iter::once(topics.deliveries.clone())
            .chain(self.topics())
            .collect()
    }

    /// The smallest tier at least `wait` long (the last tier when none is).
    pub(crate) fn covering(&self, wait: Duration) -> Duration {
        self.tiers
            .iter()
            .map(|(d, _)| *d)
            .find(|d| *d >= wait)
            .or_else(|| self.tiers.last().map(|(d, _)| *d))
            .unwrap_or_default()
    }

    /// The `index`th tier, or the last one.
    pub(crate) fn tier_at(&self, index: usize) -> Duration {
        self.tiers
            .get(index)
            .or(self.tiers.last())
            .map(|(d, _)| *d)
            .unwrap_or_default()
    }

    /// The delay before the next try after `attempts` failed attempts, or
    /// `None` when the schedule is used up. A `Retry-After` moves the retry
    /// to the first tier at least that long (capped by the last tier), never
    /// sooner than the schedule.
    pub(crate) fn next_delay(
        &self,
        attempts: u32,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let base = *self.delays.get((attempts as usize).checked_sub(1)?)?;
        let Some(wanted) = retry_after else {
            return Some(base);
        };
        let tier = self
            .tiers
            .iter()
            .map(|(d, _)| *d)
            .find(|d| *d >= wanted)
            .or_else(|| self.tiers.last().map(|(d, _)| *d))
            .unwrap_or(base);
        Some(base.max(tier))
    }
}

use crate::kafka::PartitionKey;

/// Pauses tier partitions whose head record is not yet due, and resumes them
/// when it is. Nothing sleeps in the poll loop: a timer task sends the
/// partition back through a channel.
pub(crate) struct Pauser {
    paused: HashMap<PartitionKey, ()>,
    wake_tx: mpsc::UnboundedSender<PartitionKey>,
    wake_rx: mpsc::UnboundedReceiver<PartitionKey>,
}

impl Default for Pauser {
    fn default() -> Self {
        let (wake_tx, wake_rx) = mpsc::unbounded_channel();
        Pauser {
            paused: HashMap::new(),
            wake_tx,
            wake_rx,
        }
    }
}

impl Pauser {
    /// Whether a tier record may be delivered now. If not, its partition is
    /// paused and rewound to it, to be read again once due.
    pub(crate) fn admit(
        &mut self,
        consumer: &TrackedConsumer,
        msg: &BorrowedMessage<'_>,
        due_ms: Option<i64>,
        now_ms: i64,
    ) -> bool {
        let key: PartitionKey = (Arc::from(msg.topic()), msg.partition());
        let waiting = self.paused.contains_key(&key);
        let due = due_ms.unwrap_or(0);
        if !waiting && due <= now_ms {
            return true;
        }
        // Rewind to this record: it (and what follows) is read again on resume.
        consumer.pause_at(msg.topic(), msg.partition(), msg.offset());
        if !waiting {
            self.paused.insert(key.clone(), ());
            let wait = Duration::from_millis((due - now_ms).max(0) as u64);
            let tx = self.wake_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = tx.send(key);
            });
        }
        false
    }

    /// Whether a partition waits here for its head record to fall due.
    pub(crate) fn holds(&self, key: &PartitionKey) -> bool {
        self.paused.contains_key(key)
    }

    /// The next partition whose head record fell due.
    pub async fn woken(&mut self) -> Option<PartitionKey> {
        self.wake_rx.recv().await
    }

    /// A partition's head record is due: resume it.
    pub(crate) fn wake(&mut self, consumer: &TrackedConsumer, key: PartitionKey) {
        if self.paused.remove(&key).is_none() {
            return;
        }
        consumer.resume(&key.0, key.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(secs: &[u64]) -> Schedule {
        let delays: Vec<Duration> = secs.iter().map(|s| Duration::from_secs(*s)).collect();
        Schedule::new(&delays, &Topics::new("webhooks"))
    }

    #[test]
    fn tiers_are_one_topic_per_distinct_delay() {
        let s = schedule(&[5, 300, 300, 1800]);
        assert_eq!(
            s.topics(),
            vec![
                "webhooks.retry.5s",
                "webhooks.retry.5m",
                "webhooks.retry.30m"
            ]
        );
        assert!(s.is_tier("webhooks.retry.5m"));
        assert!(!s.is_tier("webhooks.deliveries"));
    }

    #[test]
    fn each_failure_moves_to_the_next_delay_until_the_schedule_ends() {
        let s = schedule(&[1, 2, 4]);
        assert_eq!(s.next_delay(1, None), Some(Duration::from_secs(1)));
        assert_eq!(s.next_delay(2, None), Some(Duration::from_secs(2)));
        assert_eq!(s.next_delay(3, None), Some(Duration::from_secs(4)));
        assert_eq!(s.next_delay(4, None), None);
        assert_eq!(s.next_delay(0, None), None);
    }

    #[test]
    fn retry_after_picks_the_first_tier_at_least_that_long() {
        let s = schedule(&[1, 2, 4]);
        let ra = |secs| Some(Duration::from_secs(secs));
        assert_eq!(s.next_delay(1, ra(3)), Some(Duration::from_secs(4)));
        assert_eq!(s.next_delay(1, ra(2)), Some(Duration::from_secs(2)));
        assert_eq!(s.next_delay(1, ra(3600)), Some(Duration::from_secs(4)));
        assert_eq!(s.next_delay(3, ra(0)), Some(Duration::from_secs(4)));
    }
}
