//! The delivery record: key = subscription id, value = the exact outbound
//! body, headers = what delivery needs without parsing the body. The same
//! shape serves `deliveries`, retry tiers and the dead-letter topic.

use rdkafka::message::{Headers, OwnedHeaders};

use crate::events::Event;
use crate::kafka::header_str;

pub(crate) const EVENT_ID: &str = "rewardhooks-event-id";
pub(crate) const EVENT_TYPE: &str = "rewardhooks-event-type";
pub(crate) const EVENT_TIME: &str = "rewardhooks-event-time";
pub(crate) const ATTEMPT: &str = "rewardhooks-attempt";
pub(crate) const FIRST_ATTEMPT: &str = "rewardhooks-first-attempt";
pub(crate) const LAST_ERROR: &str = "rewardhooks-last-error";
pub(crate) const LAST_STATUS: &str = "rewardhooks-last-status";
pub(crate) const DUE: &str = "rewardhooks-due";
pub(crate) const SUBSCRIPTION_ID: &str = "rewardhooks-subscription-id";
pub(crate) const DEAD_AT: &str = "rewardhooks-dead-at";
pub(crate) const DEAD_REASON: &str = "rewardhooks-dead-reason";
/// Times the delivery was parked in a tier without an attempt since its last
/// attempt (held deliveries of a paused subscription go one tier further
/// each time).
pub(crate) const PARKED: &str = "rewardhooks-parked";
/// The subscriptions-topic positions fan-out's view had applied when it
/// matched the event (`<partition>:<offset>,…`): a delivery stage whose view
/// is behind that waits before it calls the subscription deleted.
pub(crate) const VIEW: &str = "rewardhooks-view";
/// Where the event was read: `<topic>:<partition>:<offset>` of the input
/// record, so an attempt can name it and `resend` can read it again.
pub(crate) const SOURCE: &str = "rewardhooks-source";
/// The recovery job that wrote this delivery (absent on fan-out's).
pub(crate) const RECOVERY: &str = "rewardhooks-recovery";

/// Why a delivery ended in the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// The retry schedule is used up.
    Exhausted,
    /// The endpoint answered 410 Gone (the subscription is disabled too).
    Gone,
    /// The subscription was disabled when the delivery came up.
    SubscriptionDisabled,
    /// The destination is refused by the address or scheme rules.
    Refused,
    /// Paused longer than `delivery.pause_hold`.
    PausedTooLong,
    /// The delivery can never be written where it should go.
    Undeliverable,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Exhausted => "exhausted",
            DeadReason::Gone => "gone",
            DeadReason::SubscriptionDisabled => "subscription_disabled",
            DeadReason::Refused => "refused",
            DeadReason::PausedTooLong => "paused_too_long",
            DeadReason::Undeliverable => "undeliverable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            DeadReason::Exhausted,
            DeadReason::Gone,
            DeadReason::SubscriptionDisabled,
            DeadReason::Refused,
            DeadReason::PausedTooLong,
            DeadReason::Undeliverable,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeliveryHeaders {
    pub event_id: String,
    pub event_type: String,
    /// Event time, unix milliseconds.
    pub event_time_ms: i64,
    /// Attempts already made.
    pub attempts: u32,
    pub first_attempt_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_status: Option<u16>,
    /// When a retry falls due, unix milliseconds.
    pub due_ms: Option<i64>,
    /// Set on dead letters, whose key is not enough once replayed elsewhere.
    pub subscription_id: Option<String>,
    pub dead_at_ms: Option<i64>,
    pub dead_reason: Option<DeadReason>,
    /// Parked without an attempt this many times since the last attempt.
    pub parked: u32,
    /// Subscriptions-topic positions applied at fan-out.
    pub view: Option<String>,
    /// The input record the event came from.
    pub source: Option<SourcePosition>,
    /// The recovery job that wrote this delivery.
    pub recovery: Option<String>,
}

/// Where an input record is: topic, partition, offset.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct SourcePosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl SourcePosition {
    pub(crate) fn header_value(&self) -> String {
        format!("{}:{}:{}", self.topic, self.partition, self.offset)
    }

    /// Parses `<topic>:<partition>:<offset>` (a topic may contain no `:`,
    /// Kafka refuses it in names).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let mut parts = s.rsplitn(3, ':');
        let offset = parts.next()?.parse().ok()?;
        let partition = parts.next()?.parse().ok()?;
        let topic = parts.next()?.to_string();
        Some(SourcePosition {
            topic,
            partition,
            offset,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("malformed delivery record: {0}")]
pub(crate) struct MalformedRecord(pub &'static str);

impl DeliveryHeaders {
    pub fn fresh(event: &Event) -> Self {
        DeliveryHeaders {
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            event_time_ms: event.time_ms,
            ..Default::default()
        }
    }

    pub(crate) fn to_kafka(&self) -> OwnedHeaders {
        let time = self.event_time_ms.to_string();
        let attempts = self.attempts.to_string();
        let mut pairs: Vec<(&str, String)> = vec![];
        if let Some(v) = self.first_attempt_ms {
            pairs.push((FIRST_ATTEMPT, v.to_string()));
        }
        if let Some(v) = &self.last_error {
            pairs.push((LAST_ERROR, truncate(v, 1024).to_string()));
        }
        if let Some(v) = self.last_status {
            pairs.push((LAST_STATUS, v.to_string()));
        }
        if let Some(v) = self.due_ms {
            pairs.push((DUE, v.to_string()));
        }
        if let Some(v) = &self.subscription_id {
            pairs.push((SUBSCRIPTION_ID, v.clone()));
        }
        if let Some(v) = self.dead_at_ms {
            pairs.push((DEAD_AT, v.to_string()));
        }
        if let Some(v) = self.dead_reason {
            pairs.push((DEAD_REASON, v.as_str().to_string()));
        }
        if self.parked > 0 {
            pairs.push((PARKED, self.parked.to_string()));
        }
        if let Some(v) = &self.view {
            pairs.push((VIEW, v.clone()));
        }
        if let Some(v) = &self.source {
            pairs.push((SOURCE, v.header_value()));
        }
        if let Some(v) = &self.recovery {
            pairs.push((RECOVERY, v.clone()));
        }
        crate::kafka::headers(
            [
                (EVENT_ID, self.event_id.as_str()),
                (EVENT_TYPE, self.event_type.as_str()),
                (EVENT_TIME, time.as_str()),
                (ATTEMPT, attempts.as_str()),
            ]
            .into_iter()
            .chain(pairs.iter().map(|(k, v)| (*k, v.as_str()))),
        )
    }

    pub(crate) fn from_kafka<H: Headers>(headers: Option<&H>) -> Result<Self, MalformedRecord> {
        let get = |name| header_str(headers, name);
        let num = |name| get(name).and_then(|v| v.parse::<i64>().ok());
        Ok(DeliveryHeaders {
            event_id: get(EVENT_ID)
                .ok_or(MalformedRecord("no event id header"))?
                .to_string(),
            event_type: get(EVENT_TYPE)
                .ok_or(MalformedRecord("no event type header"))?
                .to_string(),
            event_time_ms: num(EVENT_TIME).unwrap_or(0),
            attempts: get(ATTEMPT).and_then(|v| v.parse().ok()).unwrap_or(0),
            first_attempt_ms: num(FIRST_ATTEMPT),
            last_error: get(LAST_ERROR).map(str::to_string),
            last_status: get(LAST_STATUS).and_then(|v| v.parse().ok()),
            due_ms: num(DUE),
            subscription_id: get(SUBSCRIPTION_ID).map(str::to_string),
            dead_at_ms: num(DEAD_AT),
            dead_reason: get(DEAD_REASON).and_then(DeadReason::parse),
            parked: get(PARKED).and_then(|v| v.parse().ok()).unwrap_or(0),
            view: get(VIEW).map(str::to_string),
            source: get(SOURCE).and_then(SourcePosition::parse),
            recovery: get(RECOVERY).map(str::to_string),
        })
    }
}

/// Cuts a string to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let h = DeliveryHeaders {
            event_id: "evt_1".into(),
            event_type: "tier.changed".into(),
            event_time_ms: 1234,
            attempts: 3,
            first_attempt_ms: Some(1000),
            last_error: Some("HTTP 500".into()),
            last_status: Some(500),
            due_ms: Some(9999),
            subscription_id: Some("sub_1".into()),
            dead_at_ms: Some(5000),
            dead_reason: Some(DeadReason::Gone),
            parked: 2,
            view: Some("0:41".into()),
            source: Some(SourcePosition {
                topic: "rewards.events".into(),
                partition: 3,
                offset: 77,
            }),
            recovery: Some("rec_1".into()),
        };
        let back = DeliveryHeaders::from_kafka(Some(&h.to_kafka())).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn missing_event_id_is_malformed() {
        let headers = crate::kafka::headers([(EVENT_TYPE, "x")]);
        assert!(DeliveryHeaders::from_kafka(Some(&headers)).is_err());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
