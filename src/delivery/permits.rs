//! The instance's outbound request permits (`delivery.max_concurrent_requests`),
//! shared fairly among owners: while several owners want requests, each may
//! hold at most an equal share, so one owner's many slow endpoints cannot
//! starve everyone else. An owner holding more than it would with one more
//! owner around leaves the last eighth free (the headroom), so a newcomer
//! starts at once instead of waiting for a slow request to end. (Among one
//! owner's subscriptions, each lane's `max_in_flight_per_subscription` cap
//! spreads the owner's share.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
struct State {
    in_use: usize,
    /// Per owner: (held, waiting).
    owners: HashMap<Arc<str>, (usize, usize)>,
}

pub(super) struct FairPermits {
    total: usize,
    state: Mutex<State>,
    released: Notify,
}

/// One request permit; returned on drop.
pub(super) struct Permit {
    permits: Arc<FairPermits>,
    owner: Arc<str>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        {
            let mut state = self.permits.lock();
            state.in_use -= 1;
            if let Some(entry) = state.owners.get_mut(&self.owner) {
                entry.0 -= 1;
                if *entry == (0, 0) {
                    state.owners.remove(&self.owner);
                }
            }
        }
        self.permits.released.notify_waiters();
    }
}

impl FairPermits {
    pub(super) fn new(total: usize) -> Self {
        FairPermits {
            total: total.max(1),
            state: Mutex::new(State::default()),
            released: Notify::new(),
        }
    }

    /// Permits an owner past its share-with-one-more-owner leaves free.
    fn headroom(&self) -> usize {
        if self.total >= 2 {
            (self.total / 8).max(1)
        } else {
            0
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a permit within the owner's fair share.
    pub(super) async fn acquire(self: &Arc<Self>, owner: &str) -> Permit {
        let owner: Arc<str> = Arc::from(owner);
        let mut waiting = false;
        loop {
            // Register interest before checking, so a release between the
            // check and the wait is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut state = self.lock();
                let active =
                    (state.owners.len() + usize::from(!state.owners.contains_key(&owner))).max(1);
                let share = (self.total / active).max(1);
                let held = state.owners.get(&owner).map_or(0, |e| e.0);
                let heavy = held >= self.total / (active + 1);
                let headroom = if heavy { self.headroom() } else { 0 };
                if state.in_use + headroom < self.total && held < share {
                    state.in_use += 1;
                    let entry = state.owners.entry(owner.clone()).or_default();
                    entry.0 += 1;
                    if waiting {
                        entry.1 -= 1;
                    }
                    return Permit {
                        permits: self.clone(),
                        owner,
                    };
                }
                if !waiting {
                    waiting = true;
                    state.owners.entry(owner.clone()).or_default().1 += 1;
                }
            }
            released.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_busy_owner_leaves_a_share_for_another() {
        let permits = Arc::new(FairPermits::new(4));
        // Owner a alone takes all but the headroom.
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(permits.acquire("a").await);
        }
        let fourth = {
            let permits = permits.clone();
            tokio::spawn(async move { std::mem::forget(permits.acquire("a").await) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!fourth.is_finished(), "the headroom stays free");
        fourth.abort();
        // b arrives and starts at once, in the headroom.
        let first_b = tokio::time::timeout(Duration::from_millis(100), permits.acquire("b"))
            .await
            .expect("a newcomer starts at once");
        drop(first_b);
        // a wants more, b wants one: when permits free up, b gets its share
        // before a gets more than half.
        let waiting_a = {
            let permits = permits.clone();
            tokio::spawn(async move {
                let p1 = permits.acquire("a").await;
                let p2 = permits.acquire("a").await;
                std::mem::forget((p1, p2));
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b = {
            let permits = permits.clone();
            tokio::spawn(async move {
                let p = permits.acquire("b").await;
                std::mem::forget(p);
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Of a's three, one returns: b is under its share (2) and a is not.
        held.truncate(2);
        tokio::time::timeout(Duration::from_secs(1), b)
            .await
            .expect("b got a permit")
            .unwrap();
        assert!(!waiting_a.is_finished(), "a holds its share already");
        waiting_a.abort();
        drop(held);
    }
}
