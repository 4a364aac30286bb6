//! The subscriptions as the stages use them: compiled for matching and
//! signing, behind an index keyed by event type so matching does not scan
//! every subscription.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderName, HeaderValue};

use crate::events::filter::{type_matches, Filter};
use crate::events::{is_operational, Event};
use crate::signing::SigningKey;
use crate::subscriptions::health::{effective, Health};
use crate::subscriptions::{Status, Subscription};

/// A subscription ready for matching and signing.
#[derive(Debug)]
pub struct LiveSubscription {
    /// The subscription as it applies: the owner's record merged with its
    /// health state.
    pub sub: Subscription,
    /// The owner's record, when health state changed `sub` (what writes
    /// start from; `None` = the same as `sub`).
    owned: Option<Box<Subscription>>,
    /// The offset of the subscriptions-topic record that made this version.
    pub version: i64,
    /// Set when the secret is sealed with a secrets key this instance does
    /// not have: it matches, but cannot sign.
    pub unknown_key: Option<Box<str>>,
    pub filter: Option<Filter>,
    /// What sending needs, made when this version first sends: every
    /// instance holds every subscription, and only those that deliver here
    /// pay for it.
    sending: OnceLock<Box<Sending>>,
}

/// The parts of a subscription an attempt uses, prepared once per version.
#[derive(Debug)]
struct Sending {
    /// The endpoint URL parsed, or why it does not parse.
    url: Result<reqwest::Url, String>,
    /// The current secret's HMAC key, set up for signing.
    key: SigningKey,
    /// The previous secret's, with the end of its grace period.
    previous: Option<(SigningKey, DateTime<Utc>)>,
    /// Custom headers, parsed and marked sensitive (kept out of debug
    /// output).
    headers: Box<[(HeaderName, HeaderValue)]>,
}

impl Sending {
    fn new(sub: &Subscription) -> Self {
        let key = SigningKey::new(&sub.secret.key_bytes().unwrap_or_default());
        let previous = match (&sub.previous_secret, sub.previous_secret_expires_at) {
            (Some(secret), Some(until)) => secret.key_bytes().map(|k| (SigningKey::new(&k), until)),
            _ => None,
        };
        // Validated when written; a header that no longer parses is left out
        // rather than failing every attempt.
        let headers = sub
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
                let mut value = HeaderValue::from_str(value.expose()).ok()?;
                value.set_sensitive(true);
                Some((name, value))
            })
            .collect();
        Sending {
            url: crate::net::parse_url(&sub.url),
            key,
            previous,
            headers,
        }
    }
}

/// The keys that sign one attempt, current first: one, or two during a
/// rotation's grace period.
pub(crate) struct Keys<'a> {
    keys: [&'a SigningKey; 2],
    len: usize,
}

impl<'a> std::ops::Deref for Keys<'a> {
    type Target = [&'a SigningKey];

    fn deref(&self) -> &Self::Target {
        &self.keys[..self.len]
    }
}

impl LiveSubscription {
    /// Compiles a stored subscription; a filter that no longer compiles
    /// matches nothing rather than everything.
    pub fn new(sub: Subscription) -> Self {
        let filter = sub.filter.as_ref().map(|f| {
            serde_json::from_str(f.get())
                .ok()
                .and_then(|f| Filter::compile(&f).ok())
                .unwrap_or_else(Filter::never)
        });
        LiveSubscription {
            sending: OnceLock::new(),
            sub,
            owned: None,
            version: -1,
            unknown_key: None,
            filter,
        }
    }

    /// The owner's record merged with its health state.
    pub fn merged(owned: Subscription, health: Option<&Health>) -> Self {
        // Most subscriptions have no health record: no copy of the owner's.
        let Some(health) = health else {
            return LiveSubscription::new(owned);
        };
        let mut live = LiveSubscription::new(effective(&owned, Some(health)));
        live.owned = Some(Box::new(owned));
        live
    }

    /// The owner's record (writes start from it).
    pub fn owned(&self) -> &Subscription {
        self.owned.as_deref().unwrap_or(&self.sub)
    }

    /// The same, as the version made by the record at `offset`.
    pub(crate) fn at_version(mut self, offset: i64) -> Self {
        self.version = offset;
        self
    }

    fn sending(&self) -> &Sending {
        self.sending
            .get_or_init(|| Box::new(Sending::new(&self.sub)))
    }

    /// The endpoint URL parsed (or why it does not parse), kept for the
    /// next attempts.
    pub(crate) fn url(&self) -> Result<&reqwest::Url, String> {
        self.sending().url.as_ref().map_err(String::clone)
    }

    /// Keys that sign a delivery made at `now`, current first.
    pub(crate) fn signing_keys(&self, now: DateTime<Utc>) -> Keys<'_> {
        let sending = self.sending();
        match &sending.previous {
            Some((previous, until)) if now < *until => Keys {
                keys: [&sending.key, previous],
                len: 2,
            },
            _ => Keys {
                keys: [&sending.key, &sending.key],
                len: 1,
            },
        }
    }

    /// The subscription's custom request headers.
    pub(crate) fn request_headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.sending().headers
    }

    pub fn matches(&self, event: &Event) -> bool {
        let listed = if is_operational(&event.event_type) {
            // Operational events go only to their owner's subscriptions
            // that list the type exactly: never through a wildcard, never
            // about another owner.
            event.operational_owner() == Some(self.sub.owner.as_str())
                && self.sub.event_types.contains(&event.event_type)
        } else {
            self.sub
                .event_types
                .iter()
                .any(|p| type_matches(p, &event.event_type))
        };
        listed && self.filter.as_ref().is_none_or(|f| f.matches(event))
    }

    fn is_wildcard(&self) -> bool {
        self.sub.event_types.iter().any(|p| p.contains('*'))
    }
}

/// A live subscription ordered and found by its id: a set of them is a map
/// by id without a second copy of every id (every instance holds every
/// subscription, in the view and in the index).
#[derive(Clone)]
pub struct ById(pub Arc<LiveSubscription>);

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.sub.id
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.sub.id == other.0.sub.id
    }
}

impl Eq for ById {}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ById {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.sub.id.cmp(&other.0.sub.id)
    }
}

/// Active subscriptions by exact event type, plus those with wildcards.
#[derive(Default)]
pub struct Index {
    exact: HashMap<String, BTreeSet<ById>>,
    wildcard: BTreeSet<ById>,
}

// `ById` orders by the subscription id alone, which never changes; the
// interior mutability clippy sees (the lazily parsed URL) is not part of it.
#[allow(clippy::mutable_key_type)]
impl Index {
    pub fn insert(&mut self, live: &Arc<LiveSubscription>) {
        // Paused subscriptions still match: their deliveries are held in
        // the delivery stage and flow again on resume.
        if live.sub.status == Status::Disabled {
            return;
        }
        if live.is_wildcard() {
            self.wildcard.replace(ById(live.clone()));
        } else {
            for t in &live.sub.event_types {
                let subs = match self.exact.get_mut(t) {
                    Some(subs) => subs,
                    None => self.exact.entry(t.clone()).or_default(),
                };
                subs.replace(ById(live.clone()));
            }
        }
    }

    pub fn remove(&mut self, old: &LiveSubscription) {
        let id = old.sub.id.as_str();
        self.wildcard.remove(id);
        for t in &old.sub.event_types {
            if let Some(subs) = self.exact.get_mut(t) {
                subs.remove(id);
                if subs.is_empty() {
                    self.exact.remove(t);
                }
            }
        }
    }

    /// Subscriptions the event goes to, each once.
    pub fn matching(&self, event: &Event) -> Vec<Arc<LiveSubscription>> {
        let exact = self.exact.get(&event.event_type);
        exact
            .into_iter()
            .flatten()
            .chain(&self.wildcard)
            .filter(|live| live.0.matches(event))
            .map(|live| live.0.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::{json, Value};

    fn event(event_type: &str, data: Value) -> Event {
        Event::new("evt_1".into(), event_type.into(), Utc::now(), data)
    }

    fn sub(id: &str, types: &[&str], filter: Option<Value>) -> Arc<LiveSubscription> {
        let mut sub = Subscription::new(
            "o".into(),
            "https://example.com".into(),
            types.iter().map(|s| s.to_string()).collect(),
        );
        sub.id = id.into();
        sub.filter = filter.as_ref().map(crate::subscriptions::raw_json);
        Arc::new(LiveSubscription::new(sub))
    }

    /// Every instance holds every subscription: one `Arc<LiveSubscription>`
    /// each. At 432 bytes or less its allocation (with the two counts) is
    /// in mimalloc's 448-byte size class, not the 512 one: 6 MiB less per
    /// 100,000 subscriptions (docs/performance.md).
    #[test]
    fn a_live_subscription_stays_in_the_448_byte_size_class() {
        let size = std::mem::size_of::<LiveSubscription>();
        assert!(size <= 432, "LiveSubscription is {size} bytes");
    }

    #[test]
    fn index_returns_each_matching_subscription_once() {
        let mut index = Index::default();
        let a = sub("a", &["tier.changed"], None);
        let b = sub("b", &["tier.*", "tier.changed"], None);
        let c = sub("c", &["*"], Some(json!({"data.new_tier":{"$in":["gold"]}})));
        let d = sub("d", &["points.earned"], None);
        for s in [&a, &b, &c, &d] {
            index.insert(s);
        }
        let ids = |index: &Index, e: &Event| {
            let mut v: Vec<String> = index.matching(e).iter().map(|s| s.sub.id.clone()).collect();
            v.sort();
            v
        };
        assert_eq!(
            ids(&index, &event("tier.changed", json!({"new_tier":"gold"}))),
            vec!["a", "b", "c"]
        );
        assert_eq!(
            ids(&index, &event("tier.changed", json!({"new_tier":"bronze"}))),
            vec!["a", "b"]
        );
        assert_eq!(ids(&index, &event("points.earned", json!({}))), vec!["d"]);
        // Operational events: only the same owner's exact listings.
        let mut ops = |id: &str, owner: &str, types: &[&str]| {
            let mut s = Subscription::new(
                owner.into(),
                "https://example.com".into(),
                types.iter().map(|s| s.to_string()).collect(),
            );
            s.id = id.into();
            let live = Arc::new(LiveSubscription::new(s));
            index.insert(&live);
        };
        ops("e", "o", &["rewardhooks.subscription.disabled"]);
        ops("f", "p", &["rewardhooks.subscription.disabled"]);
        ops("g", "o", &["rewardhooks.*"]);
        let disabled = event(
            "rewardhooks.subscription.disabled",
            json!({"owner":"o","subscription_id":"x","reason":"gone"}),
        );
        assert_eq!(ids(&index, &disabled), vec!["e"]);
        index.remove(&b);
        index.remove(&a);
        assert_eq!(
            ids(&index, &event("tier.changed", json!({"new_tier":"gold"}))),
            vec!["c"]
        );
    }
}
