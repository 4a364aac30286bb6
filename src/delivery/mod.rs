//! Delivery: consume delivery records (fresh ones and due retries), queue
//! each in its subscription's lane, sign and POST it, record the attempt, and
//! settle the outcome. A record's offset is stored only when it was delivered
//! (2xx) or its next home (a retry tier or the dead-letter topic) has
//! acknowledged it.

pub mod flow;
pub mod log;
pub mod record;
pub mod sender;
pub mod signing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::app::Shared;
use crate::fanout::matcher::LiveSubscription;
use crate::kafka::consumer::{RecordRef, TrackedConsumer};
use crate::kafka::OwnedRecord;
use crate::metrics::METRICS;
use crate::retry::{Pauser, Schedule};
use crate::subscriptions::{RateLimit, Status};
use flow::{Admit, Circuit, TokenBucket, Transition};
use record::{truncate, DeliveryHeaders};
use sender::{AttemptResult, Outbound, Sender};

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

/// A delivery taken from Kafka, waiting in or running from a lane.
struct Job {
    subscription_id: String,
    headers: DeliveryHeaders,
    body: Vec<u8>,
    record: RecordRef,
    /// When it entered its lane: a job waiting longer than
    /// `delivery.lane_max_wait` goes to the first retry tier instead.
    queued_at: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Job {
    fn drop(&mut self) {
        METRICS.in_flight_deliveries.dec();
    }
}

/// Everything an attempt needs, shared by all lanes.
pub struct Deliverer {
    shared: Arc<Shared>,
    sender: Sender,
    schedule: Schedule,
    /// HTTP requests in flight on this instance, all subscriptions together.
    requests: Semaphore,
}

impl Deliverer {
    pub fn new(shared: Arc<Shared>) -> anyhow::Result<Self> {
        let d = &shared.settings.delivery;
        let source = (!d.source_address.is_empty())
            .then(|| d.source_address.parse().ok())
            .flatten();
        let policy = crate::security::DestinationPolicy::new(&shared.settings.security);
        let sender = Sender::new(d.timeout, d.max_response_bytes, policy, source)?;
        let schedule = Schedule::new(&d.retry_schedule, &shared.topics);
        let requests = Semaphore::new(d.max_concurrent_requests);
        Ok(Deliverer {
            shared,
            sender,
            schedule,
            requests,
        })
    }

    /// Sends a signed request to a subscription's endpoint and records the
    /// attempt in the attempts topic (the API's test webhooks).
    pub async fn attempt(
        &self,
        live: &LiveSubscription,
        headers: &DeliveryHeaders,
        body: &[u8],
    ) -> (AttemptResult, AttemptRecord) {
        let (result, attempt) = self.send(live, headers, body).await;
        self.log_attempt(&attempt).await;
        (result, attempt)
    }

    /// The HTTP part of an attempt: sign, POST, classify.
    async fn send(
        &self,
        live: &LiveSubscription,
        headers: &DeliveryHeaders,
        body: &[u8],
    ) -> (AttemptResult, AttemptRecord) {
        let permit = self.requests.acquire().await;
        let now = Utc::now();
        let keys = live.signing_keys(now);
        let result = self
            .sender
            .send(Outbound {
                url: &live.sub.url,
                event_id: &headers.event_id,
                body,
                keys: &keys,
            })
            .await;
        drop(permit);
        METRICS
            .delivery_attempt_duration
            .observe(result.duration.as_secs_f64());
        let attempt = AttemptRecord {
            subscription_id: live.sub.id.clone(),
            event_id: headers.event_id.clone(),
            event_type: headers.event_type.clone(),
            attempt: headers.attempts + 1,
            status_code: result.status,
            success: result.success(),
            duration_ms: result.duration.as_millis() as u64,
            error: (!result.success()).then(|| result.describe()),
            response_body: result.response_body.clone(),
            at: now,
        };
        (result, attempt)
    }

    async fn log_attempt(&self, attempt: &AttemptRecord) {
        let record = OwnedRecord {
            topic: self.shared.topics.attempts.clone(),
            key: Some(attempt.subscription_id.as_bytes().to_vec()),
            payload: Arc::new(serde_json::to_vec(attempt).unwrap_or_default()),
            headers: rdkafka::message::OwnedHeaders::new(),
        };
        record.produce_durably(&self.shared.producer).await;
    }

    /// The subscription a job is for, or `None` (job settled and counted)
    /// when it was deleted or disabled.
    fn live_for(&self, job: &Job) -> Option<Arc<LiveSubscription>> {
        let reason = match self.shared.store.get(&job.subscription_id) {
            Some(live) if live.sub.status != Status::Disabled => return Some(live),
            Some(_) => "subscription_disabled",
            None => "subscription_deleted",
        };
        METRICS
            .deliveries_dropped
            .with_label_values(&[reason])
            .inc();
        job.record.complete();
        None
    }

    /// Settles an attempt: logs it, and delivered, retried or dead-lettered,
    /// marks the record done once all of that is durable.
    async fn settle(
        &self,
        live: &LiveSubscription,
        job: Job,
        result: AttemptResult,
        attempt: AttemptRecord,
    ) {
        let event_type = job.headers.event_type.as_str();
        if self.shared.settings.metrics.per_subscription_labels {
            let outcome = if result.success() {
                "success"
            } else {
                "failure"
            };
            METRICS
                .deliveries_by_subscription
                .with_label_values(&[live.sub.id.as_str(), outcome])
                .inc();
        }
        let outcome = async {
            if result.success() {
                METRICS
                    .deliveries
                    .with_label_values(&[event_type, "success"])
                    .inc();
                let lag_ms = (Utc::now().timestamp_millis() - job.headers.event_time_ms).max(0);
                METRICS.event_to_delivery.observe(lag_ms as f64 / 1000.0);
                tracing::debug!(subscription_id = %live.sub.id, event_id = %job.headers.event_id, "Delivered.");
            } else if result.status == Some(410) {
                self.disable(live, "endpoint answered 410 Gone").await;
                self.dead_letter(live, &job, &result).await;
            } else {
                let attempts = job.headers.attempts + 1;
                match self.schedule.next_delay(attempts, result.retry_after) {
                    Some(delay) => self.schedule_retry(live, &job, &result, delay).await,
                    None => self.dead_letter(live, &job, &result).await,
                }
            }
        };
        tokio::join!(self.log_attempt(&attempt), outcome);
        job.record.complete();
    }

    /// Headers after a failed attempt.
    fn failed_headers(job: &Job, result: &AttemptResult, now_ms: i64) -> DeliveryHeaders {
        DeliveryHeaders {
            attempts: job.headers.attempts + 1,
            first_attempt_ms: job.headers.first_attempt_ms.or(Some(now_ms)),
            last_error: Some(result.describe()),
            last_status: result.status,
            ..job.headers.clone()
        }
    }

    async fn schedule_retry(
        &self,
        live: &LiveSubscription,
        job: &Job,
        result: &AttemptResult,
        delay: Duration,
    ) {
        let now = Utc::now().timestamp_millis();
        let headers = DeliveryHeaders {
            due_ms: Some(now + delay.as_millis() as i64),
            ..Self::failed_headers(job, result, now)
        };
        let record = OwnedRecord {
            topic: self.schedule.topic_for(delay).to_string(),
            key: Some(live.sub.id.as_bytes().to_vec()),
            payload: Arc::new(job.body.clone()),
            headers: headers.to_kafka(),
        };
        record.produce_durably(&self.shared.producer).await;
        let label = crate::config::format_duration(delay);
        METRICS.retries_scheduled.with_label_values(&[&label]).inc();
        METRICS
            .deliveries
            .with_label_values(&[&job.headers.event_type, "retry"])
            .inc();
        tracing::info!(
            subscription_id = %live.sub.id,
            event_id = %job.headers.event_id,
            attempt = headers.attempts,
            delay = %label,
            error = %truncate(&result.describe(), 200),
            "Delivery failed; retry scheduled."
        );
    }

    /// Moves a job to the first retry tier without spending an attempt.
    async fn defer(&self, job: Job) {
        let delay = self.schedule.first();
        let headers = DeliveryHeaders {
            due_ms: Some(Utc::now().timestamp_millis() + delay.as_millis() as i64),
            ..job.headers.clone()
        };
        let record = OwnedRecord {
            topic: self.schedule.topic_for(delay).to_string(),
            key: Some(job.subscription_id.as_bytes().to_vec()),
            payload: Arc::new(job.body.clone()),
            headers: headers.to_kafka(),
        };
        record.produce_durably(&self.shared.producer).await;
        METRICS.deliveries_deferred.inc();
        job.record.complete();
    }

    async fn dead_letter(&self, live: &LiveSubscription, job: &Job, result: &AttemptResult) {
        let now = Utc::now().timestamp_millis();
        let headers = DeliveryHeaders {
            subscription_id: Some(live.sub.id.clone()),
            dead_at_ms: Some(now),
            due_ms: None,
            ..Self::failed_headers(job, result, now)
        };
        let record = OwnedRecord {
            topic: self.shared.topics.dlq.clone(),
            key: Some(live.sub.id.as_bytes().to_vec()),
            payload: Arc::new(job.body.clone()),
            headers: headers.to_kafka(),
        };
        record.produce_durably(&self.shared.producer).await;
        METRICS
            .deliveries
            .with_label_values(&[&job.headers.event_type, "dead_letter"])
            .inc();
        METRICS.dead_letters.inc();
        tracing::warn!(
            subscription_id = %live.sub.id,
            event_id = %job.headers.event_id,
            error = %truncate(&result.describe(), 200),
            "Delivery dead-lettered."
        );
    }

    /// Records circuit state in the subscription, so every instance (and
    /// the API) sees it and a new owner of the partition starts from it.
    async fn save_circuit(
        &self,
        id: &str,
        open_until: Option<chrono::DateTime<Utc>>,
        failing_since: Option<chrono::DateTime<Utc>>,
    ) {
        let Some(live) = self.shared.store.get(id) else {
            return;
        };
        let mut sub = live.sub.clone();
        sub.circuit_open_until = open_until;
        sub.failing_since = failing_since;
        sub.updated_at = Utc::now();
        if let Err(e) = self.shared.store.put(&sub).await {
            tracing::warn!(subscription_id = %id, error = %e, "Cannot record circuit state.");
        }
    }

    async fn disable(&self, live: &LiveSubscription, reason: &str) {
        // Start from the newest version: a circuit write may have come first.
        let mut sub = self
            .shared
            .store
            .get(&live.sub.id)
            .map_or_else(|| live.sub.clone(), |l| l.sub.clone());
        if sub.status == Status::Disabled {
            return;
        }
        sub.status = Status::Disabled;
        sub.disabled_reason = Some(reason.to_string());
        sub.disabled_at = Some(Utc::now());
        sub.updated_at = Utc::now();
        match self.shared.store.put(&sub).await {
            Ok(()) => tracing::warn!(subscription_id = %sub.id, %reason, "Subscription disabled."),
            Err(e) => {
                tracing::error!(subscription_id = %sub.id, error = %e, "Cannot disable subscription.")
            }
        }
    }
}

/// A subscription's queue: its circuit breaker, rate limit and
/// concurrency cap, applied in that order.
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
    loop {
        let job = match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(job)) => job,
            Ok(None) => break,
            Err(_idle) => {
                // Exit only when idle and nothing is running or queued, so a
                // new lane never runs beside an old one.
                let all = slots.clone().acquire_many_owned(max_in_flight as u32).await;
                if rx.is_empty() {
                    drop(all);
                    break;
                }
                continue;
            }
        };
        let Some(live) = deliverer.live_for(&job) else {
            continue;
        };
        // A lane that drains keeps its jobs however long the burst; one that
        // does not (slow or failing endpoint) sends what waited too long to
        // the first tier, so it holds neither memory nor Kafka offsets.
        if job.queued_at.elapsed() > lane_max_wait {
            let deliverer = deliverer.clone();
            tokio::spawn(async move { deliverer.defer(job).await });
            continue;
        }
        // Ask the breaker only once a slot is free: the attempts before this
        // one have finished and told it how they went.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        if lock(&circuit).admit(Utc::now()) == Admit::Defer {
            drop(slot);
            let deliverer = deliverer.clone();
            tokio::spawn(async move { deliverer.defer(job).await });
            continue;
        }
        if let Some(limit) = live.sub.rate_limit.as_ref().or(default_limit.as_ref()) {
            let bucket =
                bucket.get_or_insert_with(|| TokenBucket::new(limit.clone(), Instant::now()));
            bucket.set_limit(limit);
            while let Err(wait) = bucket.take(Instant::now()) {
                METRICS.rate_limited.inc();
                tokio::time::sleep(wait).await;
            }
        }
        let deliverer = deliverer.clone();
        let circuit = circuit.clone();
        tokio::spawn(async move {
            let (result, attempt) = deliverer.send(&live, &job.headers, &job.body).await;
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
        });
    }
    if lock(&circuit).is_open() {
        METRICS.circuit_open.dec();
    }
}

fn lock(circuit: &Mutex<Circuit>) -> std::sync::MutexGuard<'_, Circuit> {
    circuit.lock().unwrap_or_else(|e| e.into_inner())
}

pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> anyhow::Result<()> {
    shared.store.wait_ready().await;
    let settings = shared.settings.clone();
    let group = format!("{}.deliver", settings.kafka.group_id);
    let deliverer = Arc::new(Deliverer::new(shared.clone())?);
    let mut topics = vec![shared.topics.deliveries.clone()];
    topics.extend(deliverer.schedule.topics());
    // Range assignment gives one instance the same partition number of every
    // topic: a subscription's fresh deliveries and its retries share a lane,
    // so its rate limit and circuit are exact.
    let consumer = TrackedConsumer::subscribe(&settings.kafka, &group, &topics, "range")?;
    tracing::info!(%group, tiers = ?deliverer.schedule.topics(), "Delivery started.");
    let mut pauser = Pauser::default();
    let in_flight = Arc::new(Semaphore::new(settings.delivery.max_in_flight));
    let mut lanes: HashMap<String, mpsc::Sender<Job>> = HashMap::new();
    let mut store_tick = tokio::time::interval(Duration::from_millis(200));
    'poll: loop {
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(key) = pauser.wake_rx.recv() => { pauser.wake(&consumer, key); continue }
            _ = store_tick.tick() => {
                consumer.store_done();
                lanes.retain(|_, lane| !lane.is_closed());
                continue
            }
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let msg = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break 'poll,
                Some(key) = pauser.wake_rx.recv() => pauser.wake(&consumer, key),
                _ = store_tick.tick() => consumer.store_done(),
                msg = consumer.consumer.recv() => break msg,
            }
        };
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(error = %e, "Consuming deliveries failed; retrying.");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let headers = DeliveryHeaders::from_kafka(msg.headers());
        if deliverer.schedule.is_tier(msg.topic()) {
            let due = headers.as_ref().ok().and_then(|h| h.due_ms);
            if !pauser.admit(&consumer, &msg, due, Utc::now().timestamp_millis()) {
                continue;
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
            continue;
        };
        METRICS.in_flight_deliveries.inc();
        let job = Job {
            subscription_id: subscription_id.to_string(),
            headers,
            body: msg.payload().unwrap_or_default().to_vec(),
            record,
            queued_at: Instant::now(),
            _permit: permit,
        };
        dispatch(&mut lanes, &deliverer, &settings.delivery, job);
    }
    consumer
        .drain_and_commit(settings.delivery.shutdown_timeout)
        .await;
    tracing::info!("Delivery stopped.");
    Ok(())
}

/// Puts a job in its subscription's lane, starting the lane if needed.
fn dispatch(
    lanes: &mut HashMap<String, mpsc::Sender<Job>>,
    deliverer: &Arc<Deliverer>,
    settings: &crate::config::DeliverySettings,
    mut job: Job,
) {
    loop {
        let lane = lanes.entry(job.subscription_id.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(settings.lane_capacity);
            tokio::spawn(run_lane(deliverer.clone(), rx, job.subscription_id.clone()));
            tx
        });
        match lane.try_send(job) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(j)) => {
                // Neither memory nor the partition's other subscriptions wait
                // behind a full lane: the delivery goes to the first tier.
                let deliverer = deliverer.clone();
                tokio::spawn(async move { deliverer.defer(j).await });
                return;
            }
            Err(mpsc::error::TrySendError::Closed(j)) => job = j,
        }
        // The lane ended while idle; start a fresh one.
        lanes.remove(&job.subscription_id);
    }
}
