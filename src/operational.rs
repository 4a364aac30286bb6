//! Operational events: what an owner should know about its own
//! subscriptions (disabled, circuit opened, dead letters, a recovery that
//! ended), emitted as CloudEvents to the internal operational topic. Fan-out
//! consumes that topic beside the input topics, so these events are matched,
//! signed and delivered like any other; matching sends them only to the
//! same owner's subscriptions that list the type exactly
//! (`LiveSubscription::matches`), and fan-out refuses the types on input
//! topics, so nobody else can forge them.
//!
//! Each is emitted by the instance that caused it: the disabled, circuit and
//! dead-letter events by the owner of the subscription's delivery partition,
//! the recovery event by the instance that ran the job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::context::Shared;
use crate::events::is_operational;
use crate::kafka::OwnedRecord;
use crate::metrics::METRICS;

pub const SUBSCRIPTION_DISABLED: &str = "rewardhooks.subscription.disabled";
pub const CIRCUIT_OPENED: &str = "rewardhooks.subscription.circuit_opened";
pub const DEAD_LETTER_CREATED: &str = "rewardhooks.dead_letter.created";
pub const RECOVERY_FINISHED: &str = "rewardhooks.recovery.finished";

/// At most one `dead_letter.created` per subscription per this long.
const DEAD_LETTER_WINDOW: Duration = Duration::from_secs(60);
/// Dead-letter windows tracked before quiet ones are forgotten.
const MAX_WINDOWS: usize = 10_000;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Writes one operational event to the operational topic (key = owner, so
/// an owner's events keep their order). A failure is logged and counted:
/// the notice is lost, never the delivery it is about.
async fn emit(shared: &Shared, event_type: &'static str, owner: &str, mut data: Value) {
    data["owner"] = Value::String(owner.to_string());
    let subject = data
        .get("subscription_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let id = format!("evt_op_{}", &crate::subscriptions::new_id()[4..]);
    let event = json!({
        "specversion": "1.0",
        "id": id,
        "type": event_type,
        "source": "/rewardhooks",
        "time": rfc3339(Utc::now()),
        "subject": subject,
        "data": data,
    });
    if let Some(t) = shared.catalog.get(event_type) {
        if let Err(e) = t.validate(&event["data"]) {
            tracing::error!(event_type, error = %e, "Operational event does not match its schema; not emitted.");
            METRICS
                .operational_events
                .with_label_values(&[event_type, "failed"])
                .inc();
            return;
        }
    }
    let record = OwnedRecord {
        topic: shared.topics.operational.clone(),
        key: Some(owner.as_bytes().to_vec()),
        payload: Arc::new(serde_json::to_vec(&event).unwrap_or_default()),
        headers: Arc::default(),
    };
    match record.produce_durably(&shared.producer).await {
        Ok(()) => {
            METRICS
                .operational_events
                .with_label_values(&[event_type, "emitted"])
                .inc();
            tracing::info!(event_type, subscription_id = %subject, event_id = %id, "Operational event emitted.");
        }
        Err(e) => {
            METRICS
                .operational_events
                .with_label_values(&[event_type, "failed"])
                .inc();
            tracing::warn!(event_type, subscription_id = %subject, error = %e, "Cannot emit an operational event; the owner is not notified of this.");
        }
    }
}

/// A subscription was disabled by the system.
pub(crate) async fn subscription_disabled(
    shared: &Shared,
    owner: &str,
    subscription_id: &str,
    reason: &str,
    at: DateTime<Utc>,
) {
    let data = json!({
        "subscription_id": subscription_id,
        "reason": reason,
        "disabled_at": rfc3339(at),
    });
    emit(shared, SUBSCRIPTION_DISABLED, owner, data).await;
}

/// A subscription's circuit breaker opened.
pub(crate) async fn circuit_opened(
    shared: &Shared,
    owner: &str,
    subscription_id: &str,
    open_until: Option<DateTime<Utc>>,
    failing_since: Option<DateTime<Utc>>,
) {
    let mut data = json!({
        "subscription_id": subscription_id,
        "open_until": rfc3339(open_until.unwrap_or_else(Utc::now)),
    });
    if let Some(since) = failing_since {
        data["failing_since"] = Value::String(rfc3339(since));
    }
    emit(shared, CIRCUIT_OPENED, owner, data).await;
}

/// How a recovery job ended, for `rewardhooks.recovery.finished`.
#[derive(Debug, Clone)]
pub(crate) struct RecoverySummary {
    pub recovery_id: String,
    pub subscription_id: String,
    pub owner: String,
    /// `finished`, `failed` or `cancelled`.
    pub status: String,
    pub scanned: u64,
    pub matched: u64,
    pub written: u64,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub error: Option<String>,
}

/// A recovery job ended: called once by the instance that ran it.
pub(crate) async fn recovery_finished(shared: &Shared, summary: &RecoverySummary) {
    let mut data = json!({
        "subscription_id": summary.subscription_id,
        "recovery_id": summary.recovery_id,
        "status": summary.status,
        "scanned": summary.scanned,
        "matched": summary.matched,
        "written": summary.written,
        "since": rfc3339(summary.since),
        "until": rfc3339(summary.until),
    });
    if let Some(error) = &summary.error {
        data["error"] = Value::String(error.chars().take(500).collect());
    }
    emit(shared, RECOVERY_FINISHED, &summary.owner, data).await;
}

/// One dead letter, as its notice describes it.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    pub owner: String,
    pub subscription_id: String,
    pub event_id: String,
    pub event_type: String,
    pub reason: &'static str,
}

/// A subscription's dead letters since its last notice.
struct Window {
    /// When the last notice went out (or the window began).
    opened: Instant,
    /// Dead letters not notified yet, the latest, and when the first was.
    pending: u64,
    latest: Option<DeadLetter>,
    first_at: Option<DateTime<Utc>>,
    /// A notice for the pending ones is due at the end of the window.
    flush_scheduled: bool,
}

/// What noting a dead letter asks for.
#[derive(Debug, PartialEq)]
enum Noted {
    /// Notify this one now (count 1).
    Now,
    /// Counted for the window's notice; flush the window at this time
    /// (`None`: a flush is already scheduled).
    Counted { flush_at: Option<Instant> },
}

/// The windows of every subscription with recent dead letters. Pure state,
/// with time passed in, so the rule is testable without waiting a minute.
#[derive(Default)]
struct Windows(HashMap<String, Window>);

impl Windows {
    fn note(&mut self, dead: DeadLetter, now: Instant, wall: DateTime<Utc>) -> Noted {
        if self.0.len() >= MAX_WINDOWS && !self.0.contains_key(&dead.subscription_id) {
            self.0
                .retain(|_, w| w.flush_scheduled || now - w.opened < DEAD_LETTER_WINDOW);
        }
        match self.0.get_mut(&dead.subscription_id) {
            Some(w) if now - w.opened < DEAD_LETTER_WINDOW || w.flush_scheduled => {
                w.pending += 1;
                w.first_at.get_or_insert(wall);
                w.latest = Some(dead);
                let flush_at = (!w.flush_scheduled).then(|| {
                    w.flush_scheduled = true;
                    w.opened + DEAD_LETTER_WINDOW
                });
                Noted::Counted { flush_at }
            }
            _ => {
                self.0.insert(
                    dead.subscription_id.clone(),
                    Window {
                        opened: now,
                        pending: 0,
                        latest: None,
                        first_at: None,
                        flush_scheduled: false,
                    },
                );
                Noted::Now
            }
        }
    }

    /// Ends a window: what it counted (the latest, how many, the first's
    /// time); the next window starts `now`.
    fn flush(&mut self, id: &str, now: Instant) -> Option<(DeadLetter, u64, DateTime<Utc>)> {
        let w = self.0.get_mut(id)?;
        w.flush_scheduled = false;
        w.opened = now;
        let count = std::mem::take(&mut w.pending);
        let first_at = w.first_at.take();
        let latest = w.latest.take()?;
        Some((latest, count, first_at.unwrap_or_else(Utc::now)))
    }
}

/// Rate-limits `dead_letter.created`: the first dead letter of a quiet
/// subscription is notified at once; those within the next minute are
/// counted and notified together when the minute ends, so a subscription
/// gets at most one notice per minute and every dead letter is counted in
/// one.
#[derive(Default)]
pub(crate) struct DeadLetterNotices {
    windows: Mutex<Windows>,
}

impl DeadLetterNotices {
    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a dead letter; emits now or schedules the window's notice.
    /// Dead letters of operational events are not notified (a notice about
    /// a notice could loop).
    pub(crate) fn note(self: &Arc<Self>, shared: &Arc<Shared>, dead: DeadLetter) {
        if is_operational(&dead.event_type) {
            return;
        }
        let id = dead.subscription_id.clone();
        let noted = self.lock().note(dead.clone(), Instant::now(), Utc::now());
        let shared = shared.clone();
        match noted {
            Noted::Now => {
                tokio::spawn(async move { notify(&shared, &dead, 1, Utc::now()).await });
            }
            Noted::Counted { flush_at } => {
                METRICS
                    .operational_events
                    .with_label_values(&[DEAD_LETTER_CREATED, "coalesced"])
                    .inc();
                if let Some(due) = flush_at {
                    let notices = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(due.into()).await;
                        let taken = notices.lock().flush(&id, Instant::now());
                        if let Some((dead, count, first_at)) = taken {
                            notify(&shared, &dead, count, first_at).await;
                        }
                    });
                }
            }
        }
    }
}

async fn notify(shared: &Shared, dead: &DeadLetter, count: u64, first_at: DateTime<Utc>) {
    let data = json!({
        "subscription_id": dead.subscription_id,
        "event_id": dead.event_id,
        "event_type": dead.event_type,
        "reason": dead.reason,
        "count": count,
        "first_at": rfc3339(first_at),
    });
    emit(shared, DEAD_LETTER_CREATED, &dead.owner, data).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Catalog;

    fn dead(sub: &str, event: &str) -> DeadLetter {
        DeadLetter {
            owner: "o".into(),
            subscription_id: sub.into(),
            event_id: event.into(),
            event_type: "points.earned".into(),
            reason: "exhausted",
        }
    }

    #[test]
    fn dead_letter_notices_come_at_most_once_a_minute_and_count_every_dead_letter() {
        let mut w = Windows::default();
        let t0 = Instant::now();
        let wall = Utc::now();
        let s = Duration::from_secs;
        assert_eq!(w.note(dead("a", "e1"), t0, wall), Noted::Now);
        // Another subscription has its own window.
        assert_eq!(w.note(dead("b", "e1"), t0, wall), Noted::Now);
        assert_eq!(
            w.note(dead("a", "e2"), t0 + s(5), wall),
            Noted::Counted {
                flush_at: Some(t0 + s(60))
            }
        );
        assert_eq!(
            w.note(dead("a", "e3"), t0 + s(30), wall),
            Noted::Counted { flush_at: None }
        );
        let (latest, count, _) = w.flush("a", t0 + s(60)).unwrap();
        assert_eq!((latest.event_id.as_str(), count), ("e3", 2));
        // The flush was a notice: the next minute counts again.
        assert_eq!(
            w.note(dead("a", "e4"), t0 + s(70), wall),
            Noted::Counted {
                flush_at: Some(t0 + s(120))
            }
        );
        let (latest, count, _) = w.flush("a", t0 + s(120)).unwrap();
        assert_eq!((latest.event_id.as_str(), count), ("e4", 1));
        // A window that ends with nothing counted sends nothing; a dead
        // letter after a quiet minute is notified at once.
        assert!(w.flush("a", t0 + s(180)).is_none());
        assert_eq!(w.note(dead("a", "e5"), t0 + s(241), wall), Noted::Now);
    }

    #[test]
    fn operational_types_are_in_the_catalog_with_an_owner() {
        let catalog = Catalog::built_in().unwrap();
        for name in [
            super::SUBSCRIPTION_DISABLED,
            super::CIRCUIT_OPENED,
            super::DEAD_LETTER_CREATED,
            super::RECOVERY_FINISHED,
        ] {
            let t = catalog.get(name).unwrap_or_else(|| panic!("{name}"));
            let required = t.schema["required"].as_array().unwrap();
            assert!(required.iter().any(|r| r == "owner"), "{name}");
            assert!(required.iter().any(|r| r == "subscription_id"), "{name}");
        }
    }
}
