//! Settling a delivery: after an attempt (delivered, retried, dead-lettered)
//! or instead of one (parked in a tier, dead-lettered because the
//! subscription is disabled). Each path marks the record done only once its
//! outcome is durable.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::deliverer::{Deliverer, Job, Park};
use super::sender::{AttemptResult, Outcome};
use crate::attempts::AttemptRecord;
use crate::kafka::OwnedRecord;
use crate::metrics::METRICS;
use crate::operational;
use crate::record::{truncate, DeadReason, DeliveryHeaders};
use crate::subscriptions::health::{Health, SystemDisable};
use crate::subscriptions::live::LiveSubscription;
use crate::subscriptions::Status;
use rdkafka::error::KafkaError;

/// How long a held delivery of a paused subscription waits, at most,
/// before it looks again whether the subscription was resumed.
const PAUSED_RECHECK: Duration = Duration::from_secs(300);

impl Deliverer {
    /// Settles an attempt: logs it, and delivered, retried or dead-lettered,
    /// marks the record done once all of that is durable.
    pub(super) async fn settle(
        &self,
        live: &LiveSubscription,
        job: Job,
        result: AttemptResult,
        attempt: AttemptRecord,
    ) {
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
        // Revoked meanwhile: the new owner attempts the record again, so
        // nothing is written here (a retry chain never forks).
        let current = job.record.is_current();
        let outcome = async {
            let mut durable = true;
            if !current && result.outcome != Outcome::Delivered {
                return false;
            }
            match &result.outcome {
                Outcome::Delivered => {
                    METRICS
                        .deliveries
                        .with_label_values(&[&job.headers.event_type, "success"])
                        .inc();
                    let lag_ms = (Utc::now().timestamp_millis() - job.headers.event_time_ms).max(0);
                    METRICS.event_to_delivery.observe(lag_ms as f64 / 1000.0);
                    if self.shared.settings.log.deliveries {
                        tracing::info!(
                            event_type = %job.headers.event_type,
                            subscription_id = %live.sub.id,
                            event_id = %job.headers.event_id,
                            status = result.status.unwrap_or_default(),
                            latency_ms = result.duration.as_millis() as u64,
                            "Delivered."
                        );
                    } else {
                        tracing::debug!(subscription_id = %live.sub.id, event_id = %job.headers.event_id, "Delivered.");
                    }
                }
                Outcome::Gone => {
                    self.disable(live, "endpoint answered 410 Gone").await;
                    durable = self
                        .dead_letter(&live.sub.id, &job, DeadReason::Gone, Some(&result))
                        .await;
                }
                Outcome::Refused { .. } => {
                    durable = self
                        .dead_letter(&live.sub.id, &job, DeadReason::Refused, Some(&result))
                        .await;
                }
                Outcome::Retry { retry_after } => {
                    let attempts = job.headers.attempts + 1;
                    durable = match self.schedule.next_delay(attempts, *retry_after) {
                        Some(delay) => self.schedule_retry(live, &job, &result, delay).await,
                        None => {
                            self.dead_letter(
                                &live.sub.id,
                                &job,
                                DeadReason::Exhausted,
                                Some(&result),
                            )
                            .await
                        }
                    }
                }
            }
            durable
        };
        let (_, durable) = tokio::join!(self.log_attempt(attempt), outcome);
        if durable {
            job.record.complete();
        }
    }

    /// Headers after a failed attempt.
    fn failed_headers(job: &Job, result: &AttemptResult, now_ms: i64) -> DeliveryHeaders {
        DeliveryHeaders {
            attempts: job.headers.attempts + 1,
            first_attempt_ms: job.headers.first_attempt_ms.or(Some(now_ms)),
            last_error: Some(result.describe()),
            last_status: result.status,
            parked: 0,
            ..job.headers.clone()
        }
    }

    async fn schedule_retry(
        &self,
        live: &LiveSubscription,
        job: &Job,
        result: &AttemptResult,
        delay: Duration,
    ) -> bool {
        let now = Utc::now().timestamp_millis();
        let headers = DeliveryHeaders {
            due_ms: Some(now + delay.as_millis() as i64),
            ..Self::failed_headers(job, result, now)
        };
        if self
            .write_to_tier(&job.subscription_id, &job.body, &headers, delay)
            .await
            .is_err()
        {
            return self
                .dead_letter(&live.sub.id, job, DeadReason::Undeliverable, Some(result))
                .await;
        }
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
        true
    }

    async fn write_to_tier(
        &self,
        subscription_id: &str,
        body: &[u8],
        headers: &DeliveryHeaders,
        delay: Duration,
    ) -> Result<(), KafkaError> {
        let record = OwnedRecord {
            topic: self.schedule.topic_for(delay).to_string(),
            key: Some(subscription_id.as_bytes().to_vec()),
            payload: Arc::new(body.to_vec()),
            headers: Arc::new(headers.to_kafka()),
        };
        record.produce_durably(&self.shared.producer).await
    }

    /// Parks a job in a retry tier without spending an attempt. Waiting
    /// costs writes only when time passes a tier: an open circuit parks for
    /// the smallest tier covering the rest of its cool-down; a busy lane
    /// parks for the time its backlog needs to drain; a paused subscription's
    /// deliveries one tier further each time, up to a few minutes.
    pub(super) async fn park(&self, job: Job, why: Park) {
        if !job.record.is_current() {
            return;
        }
        let delay = match why {
            Park::CircuitOpen(left) => self.schedule.covering(left),
            // The smallest tier covering the lane's backlog, so a lane that
            // drains gets its deliveries back soon and one that does not is
            // not rewritten every first-tier delay.
            Park::LaneBusy(backlog) => self.schedule.covering(backlog),
            // Held deliveries come back at most every few minutes, so they
            // flow again soon after the owner resumes the subscription.
            Park::Paused => self
                .schedule
                .tier_at(job.headers.parked as usize)
                .min(self.schedule.covering(PAUSED_RECHECK)),
        };
        let headers = DeliveryHeaders {
            due_ms: Some(Utc::now().timestamp_millis() + delay.as_millis() as i64),
            parked: job.headers.parked.saturating_add(1),
            ..job.headers.clone()
        };
        if self
            .write_to_tier(&job.subscription_id, &job.body, &headers, delay)
            .await
            .is_err()
        {
            self.dead_letter_unattempted(job, DeadReason::Undeliverable)
                .await;
            return;
        }
        METRICS.deliveries_deferred.inc();
        job.record.complete();
    }

    /// Dead-letters a job that is not attempted: its subscription is
    /// disabled. Replayable once the owner re-enables it.
    pub(super) async fn dead_letter_unattempted(&self, job: Job, reason: DeadReason) {
        if !job.record.is_current() {
            return;
        }
        if self
            .dead_letter(&job.subscription_id.clone(), &job, reason, None)
            .await
        {
            job.record.complete();
        }
    }

    async fn dead_letter(
        &self,
        subscription_id: &str,
        job: &Job,
        reason: DeadReason,
        last: Option<&AttemptResult>,
    ) -> bool {
        let now = Utc::now().timestamp_millis();
        let base = match last {
            Some(result) => Self::failed_headers(job, result, now),
            None => job.headers.clone(),
        };
        let headers = DeliveryHeaders {
            subscription_id: Some(subscription_id.to_string()),
            dead_at_ms: Some(now),
            dead_reason: Some(reason),
            due_ms: None,
            ..base
        };
        let record = OwnedRecord {
            topic: self.shared.topics.dlq.clone(),
            key: Some(subscription_id.as_bytes().to_vec()),
            payload: Arc::new(job.body.to_vec()),
            headers: Arc::new(headers.to_kafka()),
        };
        if let Err(e) = record.produce_durably(&self.shared.producer).await {
            // Not even the DLQ takes it: the partition stops here.
            self.shared.mark_stuck(
                &job.record.topic,
                job.record.partition,
                format!("cannot dead-letter event {}: {e}", job.headers.event_id),
            );
            return false;
        }
        METRICS
            .deliveries
            .with_label_values(&[&job.headers.event_type, "dead_letter"])
            .inc();
        METRICS.dead_letters.inc();
        if let Some(live) = self.shared.store.get(subscription_id) {
            self.notices.note(
                &self.shared,
                operational::DeadLetter {
                    owner: live.sub.owner.clone(),
                    subscription_id: subscription_id.to_string(),
                    event_id: job.headers.event_id.clone(),
                    event_type: job.headers.event_type.clone(),
                    reason: reason.as_str(),
                },
            );
        }
        tracing::warn!(
            subscription_id,
            event_id = %job.headers.event_id,
            reason = reason.as_str(),
            error = %truncate(headers.last_error.as_deref().unwrap_or(""), 200),
            "Delivery dead-lettered."
        );
        true
    }

    /// Records circuit state in the subscription's health record, so every
    /// instance (and the API) sees it and a new owner of the partition starts
    /// from it. This instance owns the partition: the only writer.
    pub(super) async fn save_circuit(
        &self,
        id: &str,
        open_until: Option<chrono::DateTime<Utc>>,
        failing_since: Option<chrono::DateTime<Utc>>,
    ) {
        let store = &self.shared.store;
        if store.get(id).is_none() {
            return;
        }
        let health = Health {
            circuit_open_until: open_until,
            failing_since,
            at: Utc::now(),
            ..store.health(id).unwrap_or_default()
        };
        if let Err(e) = store.put_health(id, &health).await {
            tracing::warn!(subscription_id = %id, error = %e, "Cannot record circuit state.");
        }
    }

    /// Disables a subscription (its health record); the owner re-enables it
    /// with `PATCH {"status":"active"}`. A deleted one stays deleted.
    pub(super) async fn disable(&self, live: &LiveSubscription, reason: &str) {
        let store = &self.shared.store;
        let id = &live.sub.id;
        let Some(current) = store.get(id) else {
            return;
        };
        if current.sub.status == Status::Disabled {
            return;
        }
        // Concurrent failures of one subscription disable it once.
        if !self
            .disabling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone())
        {
            return;
        }
        let now = Utc::now();
        let health = Health {
            disabled: Some(SystemDisable {
                reason: reason.to_string(),
                at: now,
            }),
            at: now,
            ..store.health(id).unwrap_or_default()
        };
        match store.put_health(id, &health).await {
            Ok(()) => {
                tracing::warn!(subscription_id = %id, %reason, "Subscription disabled.");
                // Wait until the view shows it disabled before another
                // failure may ask again, so the owner hears of it once.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while store
                    .get(id)
                    .is_some_and(|l| l.sub.status != Status::Disabled)
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                operational::subscription_disabled(
                    &self.shared,
                    &current.sub.owner,
                    id,
                    reason,
                    now,
                )
                .await;
            }
            Err(e) => {
                tracing::error!(subscription_id = %id, error = %e, "Cannot disable subscription.")
            }
        }
        self.disabling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}
