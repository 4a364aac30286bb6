//! In-order offset tracking for out-of-order completion.
//!
//! Records of one partition finish in any order (a fast subscriber's delivery
//! before a slow one's). The offset that may be committed is the lowest offset
//! still in progress, or one past the highest seen when nothing is pending:
//! everything below it is durable.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rdkafka::{Offset, TopicPartitionList};

#[derive(Debug, Default)]
struct PartitionState {
    /// Which ownership of the partition this is: a partition revoked and
    /// assigned again starts a new epoch, so work of the old one is known.
    epoch: u64,
    pending: BTreeSet<i64>,
    highest_seen: Option<i64>,
    last_stored: Option<i64>,
}

impl PartitionState {
    fn commit_point(&self) -> Option<i64> {
        match self.pending.first() {
            Some(&lowest) => Some(lowest),
            None => self.highest_seen.map(|h| h + 1),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    partitions: HashMap<(Arc<str>, i32), PartitionState>,
    epochs: u64,
}

impl OffsetTracker {
    /// A record was taken from Kafka and its work begins; returns the
    /// partition's current epoch.
    pub(crate) fn begin(&mut self, topic: &Arc<str>, partition: i32, offset: i64) -> u64 {
        let epochs = &mut self.epochs;
        let state = self
            .partitions
            .entry((topic.clone(), partition))
            .or_insert_with(|| {
                *epochs += 1;
                PartitionState {
                    epoch: *epochs,
                    ..Default::default()
                }
            });
        state.pending.insert(offset);
        state.highest_seen = Some(state.highest_seen.map_or(offset, |h| h.max(offset)));
        state.epoch
    }

    /// Whether this instance still owns the partition in the given epoch
    /// (false once it was revoked, even if it came back since).
    pub(crate) fn is_current(&self, topic: &Arc<str>, partition: i32, epoch: u64) -> bool {
        self.partitions
            .get(&(topic.clone(), partition))
            .is_some_and(|s| s.epoch == epoch)
    }

    /// Everything the record caused is durable.
    pub(crate) fn complete(&mut self, topic: &Arc<str>, partition: i32, offset: i64) {
        if let Some(state) = self.partitions.get_mut(&(topic.clone(), partition)) {
            state.pending.remove(&offset);
        }
    }

    /// Records in progress across all partitions.
    pub(crate) fn in_progress(&self) -> usize {
        self.partitions.values().map(|s| s.pending.len()).sum()
    }

    /// Offsets (next offset to read) that advanced since the last call.
    pub(crate) fn take_commits(&mut self) -> Vec<(Arc<str>, i32, i64)> {
        let mut out = Vec::new();
        for ((topic, partition), state) in &mut self.partitions {
            if let Some(point) = state.commit_point() {
                if state.last_stored != Some(point) {
                    state.last_stored = Some(point);
                    out.push((topic.clone(), *partition, point));
                }
            }
        }
        out
    }

    /// Forgets partitions this instance no longer owns.
    pub(crate) fn revoke(&mut self, topic: &str, partition: i32) {
        self.partitions
            .retain(|(t, p), _| !(t.as_ref() == topic && *p == partition));
    }

    /// Same as `take_commits`, as a list for `store_offsets`.
    pub(crate) fn take_commit_list(&mut self) -> Option<TopicPartitionList> {
        let commits = self.take_commits();
        if commits.is_empty() {
            return None;
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in commits {
            // Adding to a fresh list cannot fail for a non-negative offset.
            let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(offset));
        }
        Some(tpl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_of_a_revoked_partition_is_no_longer_current() {
        let mut t = OffsetTracker::default();
        let topic: Arc<str> = Arc::from("d");
        let first = t.begin(&topic, 0, 5);
        assert!(t.is_current(&topic, 0, first));
        t.revoke("d", 0);
        assert!(!t.is_current(&topic, 0, first));
        let second = t.begin(&topic, 0, 5);
        assert_ne!(first, second, "assigned again: a new epoch");
        assert!(!t.is_current(&topic, 0, first));
        assert!(t.is_current(&topic, 0, second));
    }

    fn t() -> Arc<str> {
        Arc::from("topic")
    }

    #[test]
    fn commits_only_the_contiguous_completed_prefix() {
        let mut tracker = OffsetTracker::default();
        for o in 10..15 {
            tracker.begin(&t(), 0, o);
        }
        assert_eq!(tracker.take_commits(), vec![(t(), 0, 10)]);
        tracker.complete(&t(), 0, 12);
        tracker.complete(&t(), 0, 11);
        assert!(tracker.take_commits().is_empty(), "10 is still pending");
        tracker.complete(&t(), 0, 10);
        assert_eq!(tracker.take_commits(), vec![(t(), 0, 13)]);
        tracker.complete(&t(), 0, 14);
        tracker.complete(&t(), 0, 13);
        assert_eq!(tracker.take_commits(), vec![(t(), 0, 15)]);
        assert_eq!(tracker.in_progress(), 0);
    }

    #[test]
    fn gaps_in_offsets_do_not_block_commits() {
        let mut tracker = OffsetTracker::default();
        tracker.begin(&t(), 1, 3);
        tracker.begin(&t(), 1, 7);
        tracker.complete(&t(), 1, 3);
        tracker.complete(&t(), 1, 7);
        assert_eq!(tracker.take_commits(), vec![(t(), 1, 8)]);
    }

    #[test]
    fn partitions_are_tracked_independently_and_revocable() {
        let mut tracker = OffsetTracker::default();
        tracker.begin(&t(), 0, 5);
        tracker.begin(&t(), 1, 9);
        tracker.complete(&t(), 1, 9);
        let mut commits = tracker.take_commits();
        commits.sort();
        assert_eq!(commits, vec![(t(), 0, 5), (t(), 1, 10)]);
        tracker.revoke("topic", 0);
        assert_eq!(tracker.in_progress(), 0);
        tracker.complete(&t(), 0, 5);
        assert!(tracker.take_commits().is_empty());
    }
}
