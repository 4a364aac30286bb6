//! Delivery: consume delivery records (fresh ones and due retries), queue
//! each in its subscription's lane ([`lane`]), sign and POST it
//! ([`sender`]), record the attempt, and settle the outcome ([`settle`]).
//! A record's offset is stored only when it was delivered (2xx) or its next
//! home (a retry tier or the dead-letter topic) has acknowledged it.

mod attempt_log;
mod deliverer;
pub mod flow;
mod idle;
mod lane;
mod oauth;
mod permits;
pub mod sender;
mod settle;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use rdkafka::message::{BorrowedMessage, Message};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::context::Shared;
use crate::kafka::consumer::TrackedConsumer;
use crate::kafka::stage::{self, Stage};
use crate::kafka::PartitionKey;
use crate::metrics::METRICS;
use crate::record::DeliveryHeaders;
use crate::retry::Pauser;
pub use deliverer::Deliverer;
use deliverer::Job;
use idle::TierIdle;
use lane::dispatch;

/// The delivery stage: routes each record to its subscription's lane.
struct Deliver {
    deliverer: Arc<Deliverer>,
    pauser: Pauser,
    lanes: HashMap<String, mpsc::Sender<Job>>,
    /// Quiet retry-tier partitions, paused between rechecks.
    idle: TierIdle,
    idle_tick: tokio::time::Interval,
    /// `delivery.tier_recheck`; zero fetches every tier all the time.
    tier_recheck: std::time::Duration,
}

/// Why the delivery stage woke besides a record.
enum Wake {
    /// A retry tier's head record fell due.
    Due(PartitionKey),
    /// Time to pause quiet tier partitions and resume rechecked ones.
    TierCheck,
}

impl Stage for Deliver {
    type Wake = Wake;

    async fn woken(&mut self) -> Option<Wake> {
        if self.tier_recheck.is_zero() {
            return self.pauser.woken().await.map(Wake::Due);
        }
        tokio::select! {
            key = self.pauser.woken() => key.map(Wake::Due),
            _ = self.idle_tick.tick() => Some(Wake::TierCheck),
        }
    }

    fn on_wake(&mut self, consumer: &TrackedConsumer, wake: Wake) {
        match wake {
            Wake::Due(key) => {
                // Fetched for a window from now, so its due record is read.
                self.idle.seen(&key, Instant::now());
                self.pauser.wake(consumer, key);
            }
            Wake::TierCheck => {
                let schedule = &self.deliverer.schedule;
                let assigned = consumer.assigned(|topic| schedule.is_tier(topic));
                let pauser = &self.pauser;
                let actions = self.idle.check(
                    &assigned,
                    |key| pauser.holds(key),
                    self.tier_recheck,
                    Instant::now(),
                );
                for (topic, partition) in actions.resume {
                    consumer.resume(&topic, partition);
                }
                for (topic, partition) in actions.pause {
                    consumer.pause(&topic, partition);
                }
            }
        }
    }

    fn on_tick(&mut self) {
        self.lanes.retain(|_, lane| !lane.is_closed());
    }

    async fn handle(
        &mut self,
        consumer: &TrackedConsumer,
        msg: BorrowedMessage<'_>,
        permit: OwnedSemaphorePermit,
    ) {
        let headers = DeliveryHeaders::from_kafka(msg.headers());
        if self.deliverer.schedule.is_tier(msg.topic()) {
            if !self.tier_recheck.is_zero() {
                self.idle
                    .seen(&(Arc::from(msg.topic()), msg.partition()), Instant::now());
            }
            let due = headers.as_ref().ok().and_then(|h| h.due_ms);
            if !self
                .pauser
                .admit(consumer, &msg, due, Utc::now().timestamp_millis())
            {
                return;
            }
        }
        let record = consumer.begin(&msg);
        let key = msg.key().and_then(|k| std::str::from_utf8(k).ok());
        let (Some(subscription_id), Ok(headers)) = (key, headers) else {
            METRICS
                .deliveries_dropped
                .with_label_values(&["malformed"])
                .inc();
            tracing::warn!(
                partition = msg.partition(),
                offset = msg.offset(),
                "Skipping a delivery record without subscription key or event headers."
            );
            record.complete();
            return;
        };
        METRICS.in_flight_deliveries.inc();
        let job = Job {
            subscription_id: subscription_id.to_string(),
            headers,
            body: bytes::Bytes::copy_from_slice(msg.payload().unwrap_or_default()),
            record,
            queued_at: Instant::now(),
            _permit: permit,
        };
        dispatch(&mut self.lanes, &self.deliverer, job);
    }
}

pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> anyhow::Result<()> {
    shared.store.wait_ready().await;
    let settings = shared.settings.clone();
    let group = crate::kafka::deliver_group(&settings.kafka);
    let deliverer = Arc::new(Deliverer::new(shared.clone())?);
    let topics = deliverer.schedule.consumed_topics(&shared.topics);
    // Range assignment gives one instance the same partition number of every
    // topic: a subscription's fresh deliveries and its retries share a lane,
    // so its rate limit and circuit are exact.
    let consumer = TrackedConsumer::subscribe(
        &settings.kafka,
        &group,
        &topics,
        crate::kafka::DELIVER_ASSIGNMENT,
        shared.deliver_status.clone(),
    )?;
    tracing::info!(%group, tiers = ?deliverer.schedule.topics(), "Delivery started.");
    // Every tier's counter exists from the start, so its first increase shows.
    for delay in settings.delivery.retry_schedule.iter() {
        METRICS
            .retries_scheduled
            .with_label_values(&[&crate::config::format_duration(*delay)]);
    }
    let mut idle_tick = tokio::time::interval(idle::WINDOW);
    idle_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut deliver = Deliver {
        deliverer,
        pauser: Pauser::default(),
        lanes: HashMap::new(),
        idle: TierIdle::default(),
        idle_tick,
        tier_recheck: settings.delivery.tier_recheck,
    };
    stage::run(
        "deliver",
        consumer,
        &mut deliver,
        settings.delivery.max_in_flight,
        settings.delivery.shutdown_timeout,
        cancel,
    )
    .await;
    Ok(())
}
