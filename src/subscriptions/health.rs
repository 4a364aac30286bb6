//! Health state of a subscription: its circuit, failure streak and a
//! disable by the system (410 Gone, failing for `delivery.disable_after`).
//! It lives in the compacted `<prefix>.health` topic (key = subscription id),
//! written only by the instance that owns the subscription's delivery
//! partition, apart from the owner's edits in the subscriptions topic, so
//! neither can overwrite the other.
//!
//! The rule that merges them, the same on every instance: health state
//! written after the owner's last re-enable applies; an owner's
//! `PATCH {"status":"active"}` re-enables (it records the time, and older
//! health state no longer applies); a deleted subscription stays deleted
//! whatever its health record says.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Status, Subscription};

/// A disable by the system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemDisable {
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// One subscription's health record.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Health {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_open_until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<SystemDisable>,
    /// When it was written.
    pub at: DateTime<Utc>,
}

/// The subscription as the stages and the API see it: the owner's record
/// with the health state that applies to it.
pub fn effective(owned: &Subscription, health: Option<&Health>) -> Subscription {
    let mut sub = owned.clone();
    let Some(health) = health else {
        return sub;
    };
    let reenabled = owned.reenabled_at;
    if reenabled.is_some_and(|r| health.at <= r) {
        return sub;
    }
    sub.circuit_open_until = health.circuit_open_until;
    sub.failing_since = health.failing_since;
    if let Some(disabled) = &health.disabled {
        if reenabled.is_none_or(|r| disabled.at > r) {
            sub.status = Status::Disabled;
            sub.disabled_reason = Some(disabled.reason.clone());
            sub.disabled_at = Some(disabled.at);
        }
    }
    sub
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_applies_until_the_owner_re_enables() {
        let owned = Subscription::new("o".into(), "https://e.com/h".into(), vec!["*".into()]);
        let t0 = Utc::now();
        let health = Health {
            circuit_open_until: Some(t0 + chrono::Duration::minutes(1)),
            failing_since: Some(t0),
            disabled: Some(SystemDisable {
                reason: "endpoint answered 410 Gone".into(),
                at: t0,
            }),
            at: t0,
        };
        let merged = effective(&owned, Some(&health));
        assert_eq!(merged.status, Status::Disabled);
        assert!(merged.circuit_open_until.is_some());
        // The owner re-enables after the disable: active, clean slate.
        let mut reenabled = owned.clone();
        reenabled.reenabled_at = Some(t0 + chrono::Duration::seconds(1));
        let merged = effective(&reenabled, Some(&health));
        assert_eq!(merged.status, Status::Active);
        assert!(merged.circuit_open_until.is_none());
        // A later disable wins over the earlier re-enable.
        let later = Health {
            disabled: Some(SystemDisable {
                reason: "again".into(),
                at: t0 + chrono::Duration::seconds(5),
            }),
            at: t0 + chrono::Duration::seconds(5),
            ..health.clone()
        };
        assert_eq!(effective(&reenabled, Some(&later)).status, Status::Disabled);
        assert_eq!(effective(&owned, None).status, Status::Active);
    }
}
