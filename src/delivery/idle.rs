//! Retry tiers are mostly empty, yet the delivery consumer fetches every
//! tier partition with the deliveries topic. On a broker that answers an
//! idle fetch only when `kafka.fetch_wait` runs out (Tansu), each of those
//! fetches costs it CPU while nothing happens. A tier partition that showed
//! no record for a short window is paused, and resumed every
//! `delivery.tier_recheck` for another window: a record written to an idle
//! tier is read within about that long (tiers wait seconds or more anyway).
//! Partitions the due-time [`Pauser`](crate::retry::Pauser) holds are left
//! to it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::kafka::PartitionKey;

/// How long a resumed (or newly assigned) tier partition is fetched before
/// it counts as idle: several fetches at any sensible fetch wait.
pub(super) const WINDOW: Duration = Duration::from_millis(200);

/// Idle state of the tier partitions: when each last showed a record (or
/// was resumed), and which are paused for being idle, until when.
#[derive(Debug, Default)]
pub(super) struct TierIdle {
    seen: HashMap<PartitionKey, Instant>,
    paused: HashMap<PartitionKey, Instant>,
}

/// What to do with tier partitions on a check.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Actions {
    pub pause: Vec<PartitionKey>,
    pub resume: Vec<PartitionKey>,
}

impl TierIdle {
    /// A tier partition showed a record.
    pub fn seen(&mut self, key: &PartitionKey, now: Instant) {
        match self.seen.get_mut(key) {
            Some(at) => *at = now,
            None => {
                self.seen.insert(key.clone(), now);
            }
        }
    }

    /// One check: idle pauses that ran `recheck` are resumed for a new
    /// window; assigned tier partitions (not held by the due-time pauser)
    /// quiet for a window are paused until `now + recheck`.
    pub fn check(
        &mut self,
        assigned: &[PartitionKey],
        held: impl Fn(&PartitionKey) -> bool,
        recheck: Duration,
        now: Instant,
    ) -> Actions {
        let mut actions = Actions::default();
        // Partitions no longer assigned are forgotten (a rebalance).
        self.seen.retain(|k, _| assigned.contains(k));
        self.paused.retain(|k, _| assigned.contains(k));
        let due: Vec<PartitionKey> = self
            .paused
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.paused.remove(&key);
            self.seen.insert(key.clone(), now);
            actions.resume.push(key);
        }
        for key in assigned {
            if self.paused.contains_key(key) || held(key) {
                continue;
            }
            let last = *self.seen.entry(key.clone()).or_insert(now);
            if now.duration_since(last) >= WINDOW {
                self.paused.insert(key.clone(), now + recheck);
                actions.pause.push(key.clone());
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn key(p: i32) -> PartitionKey {
        (Arc::from("webhooks.retry.5s"), p)
    }

    #[test]
    fn quiet_tier_partitions_pause_and_come_back_for_a_window_every_recheck() {
        let recheck = Duration::from_secs(1);
        let t0 = Instant::now();
        let assigned = [key(0), key(1)];
        let mut idle = TierIdle::default();
        // Newly assigned: fetched for a window first.
        assert_eq!(
            idle.check(&assigned, |_| false, recheck, t0),
            Actions::default()
        );
        // Partition 1 shows a record; partition 0 stays quiet a window.
        idle.seen(&key(1), t0 + Duration::from_millis(150));
        let a = idle.check(&assigned, |_| false, recheck, t0 + WINDOW);
        assert_eq!(a.pause, vec![key(0)]);
        assert!(a.resume.is_empty());
        // Still paused before the recheck; partition 1 quiet now too.
        let a = idle.check(
            &assigned,
            |_| false,
            recheck,
            t0 + Duration::from_millis(500),
        );
        assert_eq!(a.pause, vec![key(1)]);
        // After the recheck partition 0 comes back for a window.
        let a = idle.check(&assigned, |_| false, recheck, t0 + WINDOW + recheck);
        assert_eq!(a.resume, vec![key(0)]);
        assert!(a.pause.is_empty());
    }

    #[test]
    fn partitions_held_by_the_due_time_pauser_or_revoked_are_left_alone() {
        let recheck = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut idle = TierIdle::default();
        idle.check(&[key(0), key(1)], |_| false, recheck, t0);
        let a = idle.check(&[key(0), key(1)], |k| k.1 == 0, recheck, t0 + WINDOW);
        assert_eq!(a.pause, vec![key(1)]);
        // Partition 1 is revoked while idle-paused: never resumed here.
        let a = idle.check(&[key(0)], |_| true, recheck, t0 + WINDOW + recheck);
        assert_eq!(a, Actions::default());
    }
}
