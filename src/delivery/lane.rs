//! A subscription's lane: its queue, circuit breaker, rate limit and
//! concurrency cap, applied in that order. One lane per subscription with
//! work on this instance; an idle lane ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, Semaphore};

use super::deliverer::{Deliverer, Job, Park};
use super::flow::{Admit, Circuit, TokenBucket, Transition};
use crate::metrics::METRICS;
use crate::subscriptions::RateLimit;

/// How long a lane waits for its view to catch up with fan-out's before it
/// calls a subscription it does not know deleted.
const VIEW_WAIT: Duration = Duration::from_secs(30);

/// How long a lane waits for work before it ends.
const IDLE: Duration = Duration::from_secs(60);

/// Puts a job in its subscription's lane, starting the lane if needed.
pub(super) fn dispatch(
    lanes: &mut HashMap<String, mpsc::Sender<Job>>,
    deliverer: &Arc<Deliverer>,
    mut job: Job,
) {
    let capacity = deliverer.shared.settings.delivery.lane_capacity;
    loop {
        // A running lane is looked up without copying the id (the common
        // case: one lookup per delivery); only a new lane needs its own.
        let lane = match lanes.get_mut(&job.subscription_id) {
            Some(lane) => lane,
            None => lanes.entry(job.subscription_id.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(capacity);
                tokio::spawn(run_lane(deliverer.clone(), rx, job.subscription_id.clone()));
                tx
            }),
        };
        match lane.try_send(job) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(j)) => {
                // Neither memory nor the partition's other subscriptions wait
                // behind a full lane: the delivery is parked in a tier.
                let deliverer = deliverer.clone();
                tokio::spawn(
                    async move { deliverer.park(j, Park::LaneBusy(Duration::ZERO)).await },
                );
                return;
            }
            Err(mpsc::error::TrySendError::Closed(j)) => job = j,
        }
        // The lane ended while idle; start a fresh one.
        lanes.remove(&job.subscription_id);
    }
}

async fn run_lane(deliverer: Arc<Deliverer>, mut rx: mpsc::Receiver<Job>, subscription_id: String) {
    let settings = &deliverer.shared.settings.delivery;
    let max_in_flight = settings.max_in_flight_per_subscription;
    let lane_max_wait = settings.lane_max_wait;
    let default_limit = (settings.rate_limit_per_second > 0).then_some(RateLimit {
        per_second: settings.rate_limit_per_second,
        burst: settings.rate_limit_burst,
    });
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let circuit = Arc::new(Mutex::new(Circuit::new(
        settings.circuit_breaker_threshold,
        settings.circuit_breaker_cooldown,
        settings.disable_after,
    )));
    if let Some(live) = deliverer.shared.store.get(&subscription_id) {
        let mut c = lock(&circuit);
        c.restore(live.sub.circuit_open_until, live.sub.failing_since);
        if c.is_open() {
            METRICS.circuit_open.inc();
        }
    }
    let mut bucket: Option<TokenBucket> = None;
    // How long attempts of this endpoint take lately (a moving average), to
    // estimate how long the lane's backlog needs to drain.
    let attempt_ms = Arc::new(AtomicU64::new(0));
    // When the lane last made progress (an attempt finished, or one started
    // with none running), in ms since `epoch`: a lane with attempts running
    // and no progress for lane_max_wait is stalled.
    let epoch = Instant::now();
    let progress_ms = Arc::new(AtomicU64::new(0));
    // Parking puts a job back no sooner than the first retry tier: a job the
    // lane would reach before then is better off waiting in it.
    let first_tier = deliverer.schedule.tier_at(0);
    loop {
        let job = match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some(job)) => job,
            Ok(None) => break,
            Err(_idle) => {
                // Exit only when idle and nothing is running or queued, so a
                // new lane never runs beside an old one.
                let all = slots.clone().acquire_many_owned(max_in_flight as u32).await;
                if !rx.is_empty() {
                    continue;
                }
                // Close first: the dispatcher then starts a fresh lane. A job
                // that slipped in between the check and the close is parked,
                // never dropped (its offset would never be stored).
                rx.close();
                while let Ok(job) = rx.try_recv() {
                    let deliverer = deliverer.clone();
                    tokio::spawn(async move {
                        deliverer.park(job, Park::LaneBusy(Duration::ZERO)).await
                    });
                }
                drop(all);
                break;
            }
        };
        // A partition revoked in a rebalance is read again by its new
        // owner: its jobs here stop, so a retry chain never forks.
        if !job.record.is_current() {
            tracing::debug!(subscription_id = %job.subscription_id, event_id = %job.headers.event_id, "Partition revoked; its new owner delivers this.");
            continue;
        }
        // A view that is behind the one fan-out matched with waits (this
        // lane only) before it calls the subscription deleted.
        if deliverer.shared.store.get(&job.subscription_id).is_none() {
            if let Some(view) = &job.headers.view {
                let store = &deliverer.shared.store;
                if !store.wait_positions(view, VIEW_WAIT).await {
                    tracing::warn!(subscription_id = %job.subscription_id, "The subscription view stayed behind fan-out's; treating the subscription as deleted.");
                }
            }
        }
        let Some((job, live)) = deliverer.live_for(job) else {
            continue;
        };
        // A lane that drains keeps its jobs however long the burst; one that
        // does not (a slow, hanging or rate-limited endpoint) parks what
        // waited too long, so it holds neither memory nor Kafka offsets.
        // Draining: attempts finish, and what is queued would be sent
        // before the first retry tier could bring a parked job back.
        let limit = live.sub.rate_limit.as_ref().or(default_limit.as_ref());
        let aged = job.queued_at.elapsed() > lane_max_wait;
        if aged {
            let running = max_in_flight - slots.available_permits();
            let since_progress = epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(progress_ms.load(Ordering::Relaxed)));
            let stalled = running > 0 && since_progress > lane_max_wait;
            let backlog = backlog(&rx, &attempt_ms, max_in_flight, limit);
            if stalled || backlog > first_tier {
                let deliverer = deliverer.clone();
                tokio::spawn(async move { deliverer.park(job, Park::LaneBusy(backlog)).await });
                continue;
            }
        }
        // Ask the breaker only once a slot is free: the attempts before this
        // one have finished and told it how they went.
        if slots.available_permits() == max_in_flight {
            progress_ms.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let now = Utc::now();
        if lock(&circuit).admit(now) == Admit::Defer {
            drop(slot);
            let left = lock(&circuit)
                .open_until
                .and_then(|until| (until - now).to_std().ok())
                .unwrap_or_default();
            let deliverer = deliverer.clone();
            tokio::spawn(async move { deliverer.park(job, Park::CircuitOpen(left)).await });
            continue;
        }
        if let Some(limit) = limit {
            let bucket =
                bucket.get_or_insert_with(|| TokenBucket::new(limit.clone(), Instant::now()));
            bucket.set_limit(limit);
            while let Err(wait) = bucket.take(Instant::now()) {
                METRICS.rate_limited.inc();
                tokio::time::sleep(wait).await;
            }
        }
        // The wait for one of the instance's request permits counts toward
        // lane_max_wait too: a job that cannot get one in time is parked (a
        // job of a draining lane kept past lane_max_wait gets it afresh).
        let left = if aged {
            lane_max_wait
        } else {
            lane_max_wait.saturating_sub(job.queued_at.elapsed())
        };
        let permit =
            match tokio::time::timeout(left, deliverer.requests.acquire(&live.sub.owner)).await {
                Ok(permit) => permit,
                Err(_) => {
                    drop(slot);
                    let deliverer = deliverer.clone();
                    let backlog = backlog(&rx, &attempt_ms, max_in_flight, limit);
                    tokio::spawn(async move { deliverer.park(job, Park::LaneBusy(backlog)).await });
                    continue;
                }
            };
        let deliverer = deliverer.clone();
        let circuit = circuit.clone();
        let attempt_ms = attempt_ms.clone();
        let progress_ms = progress_ms.clone();
        tokio::spawn(async move {
            let (result, attempt) = deliverer
                .send(permit, &live, &job.headers, &job.body, false)
                .await;
            let took = result.duration.as_millis() as u64;
            let _ = attempt_ms.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |avg| {
                Some(if avg == 0 { took } else { (avg * 7 + took) / 8 })
            });
            progress_ms.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
            // The breaker learns the outcome before the slot frees, so the
            // next admission already knows; waiting for Kafka to take the
            // attempt log and the retry does not hold the endpoint's slot.
            let transition = lock(&circuit).record(result.success(), Utc::now());
            drop(slot);
            deliverer.settle(&live, job, result, attempt).await;
            let id = &live.sub.id;
            match transition {
                Some(Transition::Opened) => {
                    METRICS.circuit_open.inc();
                    tracing::warn!(subscription_id = %id, "Circuit opened: deliveries wait for the cool-down.");
                }
                Some(Transition::Closed) => {
                    METRICS.circuit_open.dec();
                    tracing::info!(subscription_id = %id, "Circuit closed: the endpoint answers again.");
                }
                Some(Transition::Exhausted) => {
                    let reason = format!(
                        "failing continuously for {}",
                        crate::config::format_duration(
                            deliverer.shared.settings.delivery.disable_after
                        )
                    );
                    deliverer.disable(&live, &reason).await;
                    return;
                }
                None => return,
            }
            let (open_until, failing_since) = {
                let c = lock(&circuit);
                (c.open_until, c.failing_since)
            };
            deliverer.save_circuit(id, open_until, failing_since).await;
            if matches!(transition, Some(Transition::Opened)) {
                crate::operational::circuit_opened(
                    &deliverer.shared,
                    &live.sub.owner,
                    id,
                    open_until,
                    failing_since,
                )
                .await;
            }
        });
    }
    if lock(&circuit).is_open() {
        METRICS.circuit_open.dec();
    }
}

/// About how long the jobs queued in a lane need to drain, from how long
/// its attempts take lately and how many run at once, and its rate limit.
fn backlog<T>(
    rx: &mpsc::Receiver<T>,
    attempt_ms: &AtomicU64,
    max_in_flight: usize,
    limit: Option<&RateLimit>,
) -> Duration {
    drain_time(
        rx.len() + 1,
        attempt_ms.load(Ordering::Relaxed),
        max_in_flight,
        limit.map(|l| l.per_second),
    )
}

/// How long `queued` jobs take at `max_in_flight` attempts of `per_attempt_ms`
/// each, and no faster than `per_second` when rate-limited.
fn drain_time(
    queued: usize,
    per_attempt_ms: u64,
    max_in_flight: usize,
    per_second: Option<u32>,
) -> Duration {
    let sending =
        Duration::from_millis(per_attempt_ms * queued as u64 / max_in_flight.max(1) as u64);
    let limited = per_second
        .filter(|r| *r > 0)
        .map(|r| Duration::from_secs_f64(queued as f64 / f64::from(r)))
        .unwrap_or_default();
    sending.max(limited)
}

fn lock(circuit: &Mutex<Circuit>) -> std::sync::MutexGuard<'_, Circuit> {
    circuit.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_time_counts_concurrency_and_the_rate_limit() {
        // 10,000 jobs of 3 ms at 16 at once: under 2 s.
        assert_eq!(drain_time(10_000, 3, 16, None), Duration::from_millis(1875));
        // The same at 10 requests a second: 1,000 s.
        assert_eq!(
            drain_time(10_000, 3, 16, Some(10)),
            Duration::from_secs(1000)
        );
        // A hanging endpoint (30 s attempts): 98 jobs at 2 at once.
        assert_eq!(drain_time(98, 30_000, 2, None), Duration::from_secs(1470));
        // Nothing measured yet: no estimate beyond the rate limit.
        assert_eq!(drain_time(50, 0, 16, None), Duration::ZERO);
    }
}
