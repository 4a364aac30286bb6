//! Owners (tenants) as data: each owner's name, status, scope, limits, API
//! keys and portal sessions live in the compacted owners topic, followed
//! from the beginning by every instance into an in-memory view, the way the
//! subscriptions are. A change made through the API applies on every
//! instance as soon as its view has read it: no restart, no config edit.
//!
//! One record per thing, so writes about different things never overwrite
//! each other (a key's "last used" note cannot undo a revoke):
//! - `owner:<id>`: the owner ([`Owner`]);
//! - `key:<key_id>`: an API key, only the sha256 of its token ([`ApiKey`]);
//! - `session:<session_id>`: a portal session, likewise ([`Session`]);
//! - `used:<key_id>`: when the key was last used, written at most once a
//!   minute per key and instance.
//!
//! A tombstone deletes. Owners configured in `[api.tokens]` are bootstrap
//! owners: with no `owner:` record they have an unrestricted scope.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaSettings;
use crate::events::filter::{type_matches, Filter};
use crate::events::{is_operational, Event};
use crate::kafka::follower::{Applied, Follower};

/// Prefix of API key tokens.
pub const KEY_PREFIX: &str = "rhk_";
/// Prefix of portal session tokens.
pub const SESSION_PREFIX: &str = "rhs_";
/// How stale a key's `last_used_at` may get.
const USAGE_RESOLUTION: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

#[derive(Debug, thiserror::Error)]
pub enum OwnerStoreError {
    #[error("cannot write {key} to the owners topic: {source}")]
    Write {
        key: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("{key} was written but not read back within {timeout:?}")]
    ReadBackTimeout { key: String, timeout: Duration },
    #[error("cannot follow the owners topic {topic}: {source}")]
    Follow {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OwnerStatus {
    Active,
    Suspended,
}

/// What an owner may receive: event types (exact or wildcards) and a
/// filter, both ANDed into every subscription it owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Scope {
    pub event_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
}

/// An owner (value of an `owner:<id>` record).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Owner {
    pub id: String,
    pub name: String,
    pub status: OwnerStatus,
    /// `None` = unrestricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// `None` = `api.max_subscriptions_per_owner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_subscriptions: Option<usize>,
    /// The highest `rate_limit.per_second` its subscriptions may set, and
    /// the rate of those that set none. `None` = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An API key (value of a `key:<id>` record): never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// sha256 of the token, hex.
    pub token_sha256: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A portal session (value of a `session:<id>` record).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub owner: String,
    /// sha256 of the token, hex.
    pub token_sha256: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Usage {
    at: DateTime<Utc>,
}

/// An owner ready for matching: its scope filter compiled once.
#[derive(Debug)]
pub struct LiveOwner {
    pub owner: Owner,
    filter: Option<Filter>,
}

impl LiveOwner {
    fn new(owner: Owner) -> Self {
        // Validated when written; one that no longer compiles lets nothing
        // through rather than everything.
        let filter = owner
            .scope
            .as_ref()
            .and_then(|s| s.filter.as_ref())
            .map(|f| Filter::compile(f).unwrap_or_else(|_| Filter::never()));
        LiveOwner { owner, filter }
    }

    /// Whether the owner's scope lets `event` through. Operational events
    /// are about the owner's own subscriptions: no scope stops them.
    pub fn allows(&self, event: &Event) -> bool {
        if is_operational(&event.event_type) {
            return true;
        }
        let Some(scope) = &self.owner.scope else {
            return true;
        };
        scope
            .event_types
            .iter()
            .any(|p| type_matches(p, &event.event_type))
            && self.filter.as_ref().is_none_or(|f| f.matches(event))
    }

    pub fn is_suspended(&self) -> bool {
        self.owner.status == OwnerStatus::Suspended
    }
}

/// Who a presented token is, when it is an owner's key or session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Key { owner: String, key_id: String },
    Session { owner: String, session_id: String },
}

impl Credential {
    pub fn owner(&self) -> &str {
        match self {
            Credential::Key { owner, .. } | Credential::Session { owner, .. } => owner,
        }
    }

    /// The key or session id, as the audit trail names it.
    pub fn id(&self) -> &str {
        match self {
            Credential::Key { key_id, .. } => key_id,
            Credential::Session { session_id, .. } => session_id,
        }
    }
}

#[derive(Default)]
struct View {
    owners: BTreeMap<String, Arc<LiveOwner>>,
    keys: BTreeMap<String, ApiKey>,
    sessions: BTreeMap<String, Session>,
    used: HashMap<String, DateTime<Utc>>,
    /// sha256 of a token → the key or session id.
    by_hash: HashMap<String, String>,
}

pub struct OwnerStore {
    producer: FutureProducer,
    topic: String,
    write_timeout: Duration,
    view: RwLock<View>,
    applied: Applied,
    /// Keys whose use this instance noted, and when (throttles the notes).
    noted: Mutex<HashMap<String, DateTime<Utc>>>,
}

/// The sha256 of a token, hex.
pub fn token_digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new token: `prefix` + base64url of 32 random bytes.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A new id with a prefix (`key_`, `ses_`): sorts by creation.
pub fn new_id(prefix: &str) -> String {
    let mut random = [0u8; 6];
    rand::rng().fill_bytes(&mut random);
    let millis = Utc::now().timestamp_millis().max(0) as u64;
    let mut out = format!("{prefix}{millis:012x}");
    for b in random {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether an owner id is acceptable: 1 to 64 of `a-z 0-9 _ -`, not `admin`.
pub fn valid_owner_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id != "admin"
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether a subscription's `event_types` entry can match any of `known`
/// types that the scope also lets through.
pub fn within_scope<'a>(
    scope: &Scope,
    pattern: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> bool {
    if is_operational(pattern) {
        return true;
    }
    known
        .into_iter()
        .any(|t| type_matches(pattern, t) && scope.event_types.iter().any(|s| type_matches(s, t)))
}

impl OwnerStore {
    pub fn new(producer: FutureProducer, topic: String, write_timeout: Duration) -> Arc<Self> {
        Arc::new(OwnerStore {
            producer,
            topic,
            write_timeout,
            view: RwLock::new(View::default()),
            applied: Applied::default(),
            noted: Mutex::new(HashMap::new()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts following the topic; ready once it has read up to the end
    /// offsets seen here.
    pub async fn follow(
        self: &Arc<Self>,
        settings: &KafkaSettings,
        cancel: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, OwnerStoreError> {
        let follower = Follower::start(settings, "owners-view", &self.topic)
            .await
            .map_err(|source| OwnerStoreError::Follow {
                topic: self.topic.clone(),
                source,
            })?;
        let ends = follower.ends.clone();
        self.applied.check_caught_up(&ends);
        let store = self.clone();
        Ok(tokio::spawn(follower.run(cancel, move |msg| {
            let key = msg.key().and_then(|k| std::str::from_utf8(k).ok());
            if let Some(key) = key {
                store.apply(key, msg.payload());
            }
            store.applied.record(msg.partition(), msg.offset());
            if store.applied.check_caught_up(&ends) {
                tracing::info!(owners = store.read().owners.len(), "Owner view caught up.");
            }
        })))
    }

    pub async fn wait_ready(&self) {
        self.applied.wait_ready().await;
    }

    pub fn is_ready(&self) -> bool {
        self.applied.is_ready()
    }

    /// The read fence, as for subscriptions: returns once the view has
    /// applied the topic up to end offsets read now, so a scope change that
    /// answered before an event was fetched applies to that event on every
    /// instance.
    pub async fn fence(&self) {
        let ends = loop {
            match self.applied.read_ends(&self.producer, &self.topic).await {
                Ok(ends) => break ends,
                Err(e) => {
                    tracing::warn!(error = %e, "Read fence: cannot read the owners topic's end; retrying.");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        while !self.applied.wait_ends(&ends, Duration::from_secs(10)).await {
            tracing::warn!("The owner view is behind the topic; waiting.");
        }
    }

    /// Applies one record; a record that does not parse is skipped (it
    /// could only have been written by something else).
    fn apply(&self, key: &str, payload: Option<&[u8]>) {
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        let Some((kind, id)) = key.split_once(':') else {
            return;
        };
        match kind {
            "owner" => match payload.and_then(|p| serde_json::from_slice::<Owner>(p).ok()) {
                Some(owner) => {
                    view.owners
                        .insert(id.to_string(), Arc::new(LiveOwner::new(owner)));
                }
                None => {
                    view.owners.remove(id);
                }
            },
            "key" => {
                if let Some(old) = view.keys.remove(id) {
                    view.by_hash.remove(&old.token_sha256);
                }
                if let Some(k) = payload.and_then(|p| serde_json::from_slice::<ApiKey>(p).ok()) {
                    view.by_hash.insert(k.token_sha256.clone(), key.to_string());
                    view.keys.insert(id.to_string(), k);
                } else {
                    view.used.remove(id);
                }
            }
            "session" => {
                if let Some(old) = view.sessions.remove(id) {
                    view.by_hash.remove(&old.token_sha256);
                }
                if let Some(s) = payload.and_then(|p| serde_json::from_slice::<Session>(p).ok()) {
                    view.by_hash.insert(s.token_sha256.clone(), key.to_string());
                    view.sessions.insert(id.to_string(), s);
                }
            }
            "used" => match payload.and_then(|p| serde_json::from_slice::<Usage>(p).ok()) {
                Some(u) => {
                    view.used.insert(id.to_string(), u.at);
                }
                None => {
                    view.used.remove(id);
                }
            },
            _ => {}
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveOwner>> {
        self.read().owners.get(id).cloned()
    }

    pub fn list(&self, cursor: Option<&str>, limit: usize) -> (Vec<Owner>, bool) {
        let view = self.read();
        let mut items = view
            .owners
            .values()
            .filter(|o| cursor.is_none_or(|c| o.owner.id.as_str() > c))
            .map(|o| o.owner.clone());
        let page: Vec<Owner> = items.by_ref().take(limit).collect();
        let more = items.next().is_some();
        (page, more)
    }

    /// Whether the owner's scope lets the event through (no record: a
    /// bootstrap or admin-named owner, unrestricted).
    pub fn allows(&self, owner: &str, event: &Event) -> bool {
        self.read()
            .owners
            .get(owner)
            .is_none_or(|o| o.allows(event))
    }

    pub fn is_suspended(&self, owner: &str) -> bool {
        self.read()
            .owners
            .get(owner)
            .is_some_and(|o| o.is_suspended())
    }

    /// The key or live session a token belongs to, if any (expired ones
    /// and those of deleted owners are nobody's).
    pub fn authenticate(&self, token: &str) -> Option<Credential> {
        if !token.starts_with(KEY_PREFIX) && !token.starts_with(SESSION_PREFIX) {
            return None;
        }
        let now = Utc::now();
        let view = self.read();
        let record = view.by_hash.get(&token_digest(token))?;
        let (kind, id) = record.split_once(':')?;
        let credential = match kind {
            "key" => {
                let key = view.keys.get(id)?;
                if key.expires_at.is_some_and(|e| e <= now) {
                    return None;
                }
                Credential::Key {
                    owner: key.owner.clone(),
                    key_id: key.id.clone(),
                }
            }
            "session" => {
                let session = view.sessions.get(id)?;
                if session.expires_at <= now {
                    return None;
                }
                Credential::Session {
                    owner: session.owner.clone(),
                    session_id: session.id.clone(),
                }
            }
            _ => return None,
        };
        view.owners
            .contains_key(credential.owner())
            .then_some(credential)
    }

    pub fn keys(&self, owner: &str) -> Vec<(ApiKey, Option<DateTime<Utc>>)> {
        let view = self.read();
        view.keys
            .values()
            .filter(|k| k.owner == owner)
            .map(|k| (k.clone(), view.used.get(&k.id).copied()))
            .collect()
    }

    pub fn key(&self, key_id: &str) -> Option<ApiKey> {
        self.read().keys.get(key_id).cloned()
    }

    pub fn sessions(&self, owner: &str) -> Vec<Session> {
        self.read()
            .sessions
            .values()
            .filter(|s| s.owner == owner)
            .cloned()
            .collect()
    }

    /// Notes that a key was used, at most once a minute per key: the note
    /// is written in the background, so authentication never waits on it.
    pub fn note_used(self: &Arc<Self>, key_id: &str) {
        let now = Utc::now();
        if self
            .read()
            .used
            .get(key_id)
            .is_some_and(|at| now - *at < USAGE_RESOLUTION)
        {
            return;
        }
        {
            let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
            if noted
                .get(key_id)
                .is_some_and(|at| now - *at < USAGE_RESOLUTION)
            {
                return;
            }
            noted.insert(key_id.to_string(), now);
        }
        let store = self.clone();
        let key = format!("used:{key_id}");
        tokio::spawn(async move {
            let value = serde_json::to_vec(&Usage { at: now }).unwrap_or_default();
            if let Err(e) = store.put(&key, Some(&value)).await {
                tracing::warn!(error = %e, "Could not note a key's use.");
            }
        });
    }

    pub async fn put_owner(&self, owner: &Owner) -> Result<(), OwnerStoreError> {
        let value = serde_json::to_vec(owner).unwrap_or_default();
        self.put(&format!("owner:{}", owner.id), Some(&value)).await
    }

    pub async fn put_key(&self, key: &ApiKey) -> Result<(), OwnerStoreError> {
        let value = serde_json::to_vec(key).unwrap_or_default();
        self.put(&format!("key:{}", key.id), Some(&value)).await
    }

    /// Writes a new session, and tombstones the owner's expired ones so
    /// the compacted topic does not keep them forever.
    pub async fn put_session(&self, session: &Session) -> Result<(), OwnerStoreError> {
        let now = Utc::now();
        for expired in self
            .sessions(&session.owner)
            .iter()
            .filter(|s| s.expires_at <= now)
        {
            self.put(&format!("session:{}", expired.id), None).await?;
        }
        let value = serde_json::to_vec(session).unwrap_or_default();
        self.put(&format!("session:{}", session.id), Some(&value))
            .await
    }

    pub async fn revoke_key(&self, key_id: &str) -> Result<(), OwnerStoreError> {
        self.put(&format!("key:{key_id}"), None).await?;
        self.put(&format!("used:{key_id}"), None).await
    }

    /// Revokes every portal session of the owner; how many there were.
    pub async fn revoke_sessions(&self, owner: &str) -> Result<usize, OwnerStoreError> {
        let sessions = self.sessions(owner);
        for s in &sessions {
            self.put(&format!("session:{}", s.id), None).await?;
        }
        Ok(sessions.len())
    }

    /// Deletes the owner with its keys and sessions.
    pub async fn delete_owner(&self, owner: &str) -> Result<(), OwnerStoreError> {
        for (key, _) in self.keys(owner) {
            self.revoke_key(&key.id).await?;
        }
        self.revoke_sessions(owner).await?;
        self.put(&format!("owner:{owner}"), None).await
    }

    /// Writes a record (`None` = tombstone) and waits until this instance's
    /// view has read it back, so the caller's next read sees it.
    async fn put(&self, key: &str, value: Option<&[u8]>) -> Result<(), OwnerStoreError> {
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic).key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        let (partition, offset) = self
            .producer
            .send(record, Timeout::After(self.write_timeout))
            .await
            .map(|delivery| (delivery.partition, delivery.offset))
            .map_err(|(source, _)| OwnerStoreError::Write {
                key: key.to_string(),
                source,
            })?;
        if self
            .applied
            .wait_for(partition, offset, self.write_timeout)
            .await
        {
            Ok(())
        } else {
            Err(OwnerStoreError::ReadBackTimeout {
                key: key.to_string(),
                timeout: self.write_timeout,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_32_random_bytes_in_base64url() {
        let a = new_token(KEY_PREFIX);
        let b = new_token(KEY_PREFIX);
        assert_ne!(a, b);
        let raw = a.strip_prefix("rhk_").unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(token_digest("abc").len(), 64);
    }

    #[test]
    fn a_pattern_is_within_scope_when_some_known_type_matches_both() {
        let scope = Scope {
            event_types: vec!["points.redeemed".into()],
            filter: None,
        };
        let known = ["points.earned", "points.redeemed", "profile.updated"];
        assert!(within_scope(&scope, "*", known));
        assert!(within_scope(&scope, "points.*", known));
        assert!(within_scope(&scope, "points.redeemed", known));
        assert!(!within_scope(&scope, "profile.updated", known));
        assert!(!within_scope(&scope, "points.earned", known));
    }

    #[test]
    fn owner_ids_are_short_lowercase_words() {
        assert!(valid_owner_id("giftco"));
        assert!(valid_owner_id("crm-2_b"));
        assert!(!valid_owner_id(""));
        assert!(!valid_owner_id("admin"));
        assert!(!valid_owner_id("Gift Co"));
        assert!(!valid_owner_id(&"a".repeat(65)));
    }
}
