//! Subscriptions: the model, its secrets, and the store that keeps them in the
//! compacted subscriptions topic and materializes them in memory.

pub mod credentials;
pub mod health;
pub mod live;
pub mod store;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::signing::Secret;
pub use credentials::EndpointAuth;
pub use store::SubscriptionStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Paused,
    Disabled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// The stored form of a subscription (value of the subscriptions topic).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub owner: String,
    pub url: String,
    pub event_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<RawJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RawJson>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<DateTime<Utc>>,
    /// Set while the circuit breaker holds deliveries back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_open_until: Option<DateTime<Utc>>,
    /// First failure since the last success, kept when the circuit opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<DateTime<Utc>>,
    pub secret: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When its owner last re-enabled it: health state written before no
    /// longer applies (see `health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reenabled_at: Option<DateTime<Utc>>,
    /// The create's `Idempotency-Key`, kept so it survives compaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Box<store::IdempotencyKey>>,
    /// Custom request headers sent on every attempt (name → value). The
    /// values are credentials: sealed at rest like the secret, never shown
    /// or logged in full.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
    /// How rewardhooks authenticates to the endpoint besides signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Box<EndpointAuth>>,
}

/// A JSON value (a filter, metadata) kept as its compact text: every
/// instance holds every subscription, and a one-condition filter costs about
/// 30 bytes as text against about 900 as a `Value` (a map node and its
/// strings). Parsed again where it is used: compiled once per version for
/// matching, and on API reads.
pub type RawJson = Box<serde_json::value::RawValue>;

/// `value` as [`RawJson`].
pub fn raw_json(value: &Value) -> RawJson {
    serde_json::value::to_raw_value(value).expect("a JSON value always serializes")
}

/// [`RawJson`] as a `Value` again (`Null` if it somehow does not parse).
pub fn json_value(raw: &RawJson) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

impl Subscription {
    /// A new active subscription with a fresh id and secret; optional fields
    /// empty.
    pub fn new(owner: String, url: String, event_types: Vec<String>) -> Self {
        let now = Utc::now();
        Subscription {
            id: new_id(),
            owner,
            url,
            event_types,
            description: None,
            filter: None,
            rate_limit: None,
            metadata: None,
            status: Status::Active,
            disabled_reason: None,
            disabled_at: None,
            circuit_open_until: None,
            failing_since: None,
            secret: Secret::generate(),
            previous_secret: None,
            previous_secret_expires_at: None,
            created_at: now,
            updated_at: now,
            reenabled_at: None,
            idempotency: None,
            headers: BTreeMap::new(),
            auth: None,
        }
    }
}

/// A new id: `sub_` + creation time and randomness, so ids sort by age.
pub(crate) fn new_id() -> String {
    let mut random = [0u8; 6];
    rand::rng().fill_bytes(&mut random);
    let millis = Utc::now().timestamp_millis().max(0) as u64;
    let mut out = format!("sub_{millis:012x}");
    for b in random {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_32_random_bytes_and_never_debug_printed() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(a, b);
        assert!(a.expose().starts_with("whsec_"));
        assert_eq!(a.key_bytes().unwrap().len(), 32);
        assert_eq!(format!("{a:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn ids_sort_by_creation() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id();
        assert!(a < b, "{a} {b}");
        assert_eq!(a.len(), "sub_".len() + 12 + 12);
    }
}
