//! What every attempt needs, shared by all lanes (the HTTP client, the retry
//! schedule, the instance's request cap), and the job a lane runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::OwnedSemaphorePermit;

use super::attempt_log::AttemptWriter;
use super::oauth::Tokens;
use super::permits::{FairPermits, Permit};
use super::sender::{AttemptResult, Outbound, Sender};
use crate::attempts::AttemptRecord;
use crate::context::Shared;
use crate::kafka::consumer::RecordRef;
use crate::metrics::METRICS;
use crate::operational::DeadLetterNotices;
use crate::record::{DeadReason, DeliveryHeaders};
use crate::retry::Schedule;
use crate::signing::SigningKey;
use crate::subscriptions::live::LiveSubscription;
use crate::subscriptions::Status;

/// A delivery taken from Kafka, waiting in or running from a lane.
pub(super) struct Job {
    pub subscription_id: String,
    pub headers: DeliveryHeaders,
    /// Shared with every attempt's request (no copy per attempt).
    pub body: bytes::Bytes,
    pub record: RecordRef,
    /// When it entered its lane: a job waiting longer than
    /// `delivery.lane_max_wait` is parked in a retry tier instead.
    pub queued_at: Instant,
    pub _permit: OwnedSemaphorePermit,
}

impl Drop for Job {
    fn drop(&mut self) {
        METRICS.in_flight_deliveries.dec();
    }
}

/// Why a job is parked instead of attempted now.
#[derive(Debug, Clone, Copy)]
pub(super) enum Park {
    /// The circuit is open for this long still.
    CircuitOpen(Duration),
    /// The lane is full, or the job waited longer than `lane_max_wait`:
    /// its backlog needs about this long to drain.
    LaneBusy(Duration),
    /// The subscription is paused: held until it is resumed.
    Paused,
}

/// Everything an attempt needs, shared by all lanes.
pub struct Deliverer {
    pub(super) shared: Arc<Shared>,
    sender: Sender,
    pub(super) schedule: Schedule,
    /// HTTP requests in flight on this instance, all subscriptions
    /// together, shared fairly among owners.
    pub(super) requests: Arc<FairPermits>,
    /// OAuth2 tokens of the subscriptions that use them.
    tokens: Tokens,
    /// Rate-limits `dead_letter.created` notices.
    pub(super) notices: Arc<DeadLetterNotices>,
    /// Subscriptions being disabled right now, so concurrent failures
    /// disable (and notify) once.
    pub(super) disabling: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The attempt log's writer: one batch record at a time, what arrives
    /// meanwhile is the next batch.
    attempt_log: AttemptWriter,
}

impl Deliverer {
    pub fn new(shared: Arc<Shared>) -> anyhow::Result<Self> {
        let d = &shared.settings.delivery;
        let policy = shared.settings.security.destination_policy();
        let proxy = (!d.proxy.is_empty()).then_some(d.proxy.as_str());
        let sender = Sender::new(
            d.timeout,
            d.max_response_bytes,
            policy,
            d.source_address,
            proxy,
            d.max_concurrent_requests,
        )?;
        let schedule = Schedule::new(&d.retry_schedule, &shared.topics);
        let requests = Arc::new(FairPermits::new(d.max_concurrent_requests));
        // Keyed by this instance: its batches stay in order in one partition.
        let attempt_log = AttemptWriter::start(
            shared.producer.clone(),
            shared.topics.attempts.clone(),
            crate::owners::new_id("attempts_"),
            d.attempt_log_linger,
        );
        Ok(Deliverer {
            shared,
            sender,
            schedule,
            requests,
            tokens: Tokens::default(),
            notices: Arc::default(),
            disabling: Default::default(),
            attempt_log,
        })
    }

    /// Sends a signed request to a subscription's endpoint and records the
    /// attempt in the attempts topic (the API's test webhooks). Once written,
    /// the attempt is in this instance's delivery log before this returns.
    pub async fn attempt(
        &self,
        live: &LiveSubscription,
        headers: &DeliveryHeaders,
        body: &bytes::Bytes,
    ) -> (AttemptResult, AttemptRecord) {
        let permit = self.requests.acquire(&live.sub.owner).await;
        let (result, attempt) = self.send(permit, live, headers, body, true).await;
        if self.log_attempt(attempt.clone()).await {
            self.shared.attempt_log.add_local(attempt.clone());
        }
        (result, attempt)
    }

    /// The HTTP part of an attempt, holding one of the instance's request
    /// permits: sign, POST, classify. `show_headers` keeps the headers that
    /// went out in the result (the test webhook's answer).
    pub(super) async fn send(
        &self,
        permit: Permit,
        live: &LiveSubscription,
        headers: &DeliveryHeaders,
        body: &bytes::Bytes,
        show_headers: bool,
    ) -> (AttemptResult, AttemptRecord) {
        let now = Utc::now();
        let keys = live.signing_keys(now);
        let result = self
            .send_authorized(live, headers, body, &keys, show_headers)
            .await;
        drop(permit);
        METRICS
            .delivery_attempt_duration
            .observe(result.duration.as_secs_f64());
        if headers.attempts == 0 && headers.event_time_ms > 0 {
            let since_event = (Utc::now().timestamp_millis() - headers.event_time_ms).max(0);
            METRICS
                .first_attempt_duration
                .observe(since_event as f64 / 1000.0);
        }
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
            source: headers.source.clone(),
        };
        (result, attempt)
    }

    /// Sends with the subscription's credentials: its custom headers, and
    /// its OAuth2 token if it has one. A 401 with a token fetches a new one
    /// and tries once more before the attempt counts as failed; a token
    /// that cannot be fetched fails the attempt as retryable.
    async fn send_authorized(
        &self,
        live: &LiveSubscription,
        headers: &DeliveryHeaders,
        body: &bytes::Bytes,
        keys: &[&SigningKey],
        show_headers: bool,
    ) -> AttemptResult {
        let outbound = |bearer| Outbound {
            url: &live.sub.url,
            parsed: Some(live.url()),
            show_headers,
            event_id: &headers.event_id,
            body,
            keys,
            extra: live.request_headers(),
            bearer,
        };
        let Some(auth) = &live.sub.auth else {
            return self.sender.send(outbound(None)).await;
        };
        let started = Instant::now();
        let id = &live.sub.id;
        let token_failed = |e: super::oauth::TokenError| {
            tracing::info!(subscription_id = %id, error = %e, "Cannot get an OAuth2 token for the endpoint.");
            AttemptResult::retry_without_answer(format!("oauth2: {e}"), started)
        };
        let token = match self.tokens.token(&self.sender, id, auth, None).await {
            Ok(token) => token,
            Err(e) => return token_failed(e),
        };
        let first = self.sender.send(outbound(Some(&token))).await;
        if first.status != Some(401) {
            return first;
        }
        let token = match self
            .tokens
            .token(&self.sender, id, auth, Some(&token))
            .await
        {
            Ok(token) => token,
            Err(e) => return token_failed(e),
        };
        let mut second = self.sender.send(outbound(Some(&token))).await;
        second.duration = started.elapsed();
        second
    }

    /// Writes the attempt to the attempts topic (in its writer's next
    /// batch); true once durable, false when it never can be.
    pub(super) async fn log_attempt(&self, attempt: AttemptRecord) -> bool {
        self.attempt_log.write(attempt).await
    }

    /// The subscription a job is for, or `None` when the job was settled
    /// without an attempt: held (paused subscription or suspended owner: parked until resumed,
    /// dead-lettered after `delivery.pause_hold`), dead-lettered (disabled
    /// subscription, replayable once re-enabled) or dropped and counted
    /// (deleted by its owner).
    pub(super) fn live_for(self: &Arc<Self>, job: Job) -> Option<(Job, Arc<LiveSubscription>)> {
        match self.shared.store.get(&job.subscription_id) {
            // Its secret is sealed with a key this instance lacks: held
            // until the key arrives (or another instance delivers).
            Some(live) if live.unknown_key.is_some() => {
                let deliverer = self.clone();
                tokio::spawn(async move { deliverer.park(job, Park::Paused).await });
                drop(live);
                None
            }
            Some(live)
                if live.sub.status == Status::Active
                    && !self.shared.owners.is_suspended(&live.sub.owner) =>
            {
                Some((job, live))
            }
            // Paused, or active but its owner is suspended: held alike.
            Some(live) if live.sub.status != Status::Disabled => {
                let held_ms = Utc::now().timestamp_millis() - job.headers.event_time_ms;
                let too_long =
                    held_ms > self.shared.settings.delivery.pause_hold.as_millis() as i64;
                let deliverer = self.clone();
                tokio::spawn(async move {
                    if too_long {
                        deliverer
                            .dead_letter_unattempted(job, DeadReason::PausedTooLong)
                            .await
                    } else {
                        deliverer.park(job, Park::Paused).await
                    }
                });
                drop(live);
                None
            }
            Some(_) => {
                let deliverer = self.clone();
                tokio::spawn(async move {
                    deliverer
                        .dead_letter_unattempted(job, DeadReason::SubscriptionDisabled)
                        .await
                });
                None
            }
            None => {
                METRICS
                    .deliveries_dropped
                    .with_label_values(&["subscription_deleted"])
                    .inc();
                job.record.complete();
                None
            }
        }
    }
}
