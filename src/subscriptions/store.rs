//! The subscription store: the compacted subscriptions topic (key =
//! subscription id, value = JSON, tombstone = deleted), followed from the
//! beginning by every instance into an in-memory view.
//!
//! Writes are decided in log order. Every write names what it is based on
//! (header `rewardhooks-write`: `create`, `update:<version>`, `delete` or
//! `delete:<version>`), and every instance applies the records of the
//! one-partition topic in the same order with the same rule, so all agree
//! without a lock service:
//! - a create applies when the id is new, the owner is under
//!   `api.max_subscriptions_per_owner`, and its idempotency key is unused;
//! - an update applies when it is based on the current version (a version is
//!   the offset of the record that made it); an update of an id this view has
//!   never seen is a survivor of compaction and applies;
//! - a delete applies unless pinned to a stale version, and is final: nothing
//!   written later for that id applies.
//!
//! The writer learns from its own view whether it won. A losing record would
//! be the key's last record, which compaction keeps: the writer follows it
//! with a repair (the winning state again, or a tombstone), so a view rebuilt
//! from the compacted topic agrees too.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaSettings;
use crate::events::Event;
use crate::kafka::follower::{Applied, Follower};
use crate::kafka::header_str;
use crate::metrics::METRICS;
use crate::secrets::{CipherError, SecretCipher};
use crate::subscriptions::health::Health;
use crate::subscriptions::live::{ById, Index, LiveSubscription};
use crate::subscriptions::{EndpointAuth, Secret, Subscription};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot write subscription {id} to Kafka: {source}")]
    Write {
        id: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error(
        "subscription {id} is sealed with secrets key {key_id}, which this instance does not have"
    )]
    UnknownKey { id: String, key_id: String },
    #[error("subscription {id} was written but not read back within {timeout:?}")]
    ReadBackTimeout { id: String, timeout: Duration },
    #[error("cannot follow the subscriptions topic {topic}: {source}")]
    Follow {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

/// Header naming what a write is based on.
pub(crate) const WRITE_HEADER: &str = "rewardhooks-write";
/// Header with the writer's id for the write, to learn its decision.
pub(crate) const WRITE_ID_HEADER: &str = "rewardhooks-write-id";
/// How long an `Idempotency-Key` is remembered.
const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// Tries of an update that keeps losing races before giving up with 409.
const UPDATE_TRIES: usize = 8;

/// What a write is based on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Create,
    Update { base: i64 },
    Delete { base: Option<i64> },
}

impl WriteKind {
    fn header(self) -> String {
        match self {
            WriteKind::Create => "create".into(),
            WriteKind::Update { base } => format!("update:{base}"),
            WriteKind::Delete { base: None } => "delete".into(),
            WriteKind::Delete { base: Some(b) } => format!("delete:{b}"),
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.split_once(':') {
            None if s == "create" => Some(WriteKind::Create),
            None if s == "delete" => Some(WriteKind::Delete { base: None }),
            Some(("update", b)) => b.parse().ok().map(|base| WriteKind::Update { base }),
            Some(("delete", b)) => b.parse().ok().map(|b| WriteKind::Delete { base: Some(b) }),
            _ => None,
        }
    }
}

/// Why a write did not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Based on a version that is no longer current.
    Stale { current: i64 },
    /// The subscription is deleted (or never existed).
    Gone,
    /// A create for an id that exists.
    Exists,
    /// The owner has `cap` subscriptions already.
    CapReached { cap: usize },
    /// The owner used this idempotency key within 24 h: for `id`, with the
    /// same request body or not.
    Duplicate { id: String, same_body: bool },
}

/// An owner's idempotency key for a create, kept in the record so it
/// survives compaction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdempotencyKey {
    pub key: String,
    /// sha256 of the request body, hex.
    pub body_hash: String,
    /// When the create was written, unix milliseconds.
    pub at_ms: i64,
}

#[derive(Default)]
struct View {
    by_id: BTreeSet<ById>,
    index: Index,
    /// Ids deleted since this view started: final.
    deleted: HashSet<String>,
    /// Subscriptions per owner.
    owned: HashMap<String, usize>,
    /// (owner, idempotency key) → (subscription id, body hash, at).
    idempotency: HashMap<(String, String), (String, String, i64)>,
    /// Health records by subscription id (the health topic).
    health: HashMap<String, Health>,
}

impl View {
    fn remove(&mut self, id: &str) {
        if let Some(ById(old)) = self.by_id.take(id) {
            self.index.remove(&old);
            if let Some(n) = self.owned.get_mut(&old.sub.owner) {
                *n = n.saturating_sub(1);
            }
            if let Some(idem) = &old.sub.idempotency {
                self.idempotency
                    .remove(&(old.sub.owner.clone(), idem.key.clone()));
            }
            METRICS
                .subscriptions
                .with_label_values(&[old.sub.status.as_str()])
                .dec();
            if old.unknown_key.is_some() {
                METRICS.unknown_key_subscriptions.dec();
            }
        }
    }

    fn insert(&mut self, live: Arc<LiveSubscription>) {
        let sub = &live.sub;
        METRICS
            .subscriptions
            .with_label_values(&[sub.status.as_str()])
            .inc();
        *self.owned.entry(sub.owner.clone()).or_default() += 1;
        if live.unknown_key.is_some() {
            METRICS.unknown_key_subscriptions.inc();
        }
        if let Some(idem) = &sub.idempotency {
            self.idempotency.insert(
                (sub.owner.clone(), idem.key.clone()),
                (sub.id.clone(), idem.body_hash.clone(), idem.at_ms),
            );
        }
        self.index.insert(&live);
        self.by_id.replace(ById(live));
    }

    /// The rule every instance applies, in log order.
    fn decide(
        &self,
        id: &str,
        kind: WriteKind,
        sub: Option<&Subscription>,
        cap: usize,
        at_ms: i64,
    ) -> Result<(), Rejection> {
        let current = self.by_id.get(id).map(|b| &b.0);
        match kind {
            WriteKind::Create => {
                if self.deleted.contains(id) {
                    return Err(Rejection::Gone);
                }
                if current.is_some() {
                    return Err(Rejection::Exists);
                }
                let Some(sub) = sub else {
                    return Err(Rejection::Gone);
                };
                if let Some(idem) = &sub.idempotency {
                    if let Some((first, hash, when)) =
                        self.idempotency.get(&(sub.owner.clone(), idem.key.clone()))
                    {
                        if at_ms - when < IDEMPOTENCY_WINDOW_MS {
                            return Err(Rejection::Duplicate {
                                id: first.clone(),
                                same_body: *hash == idem.body_hash,
                            });
                        }
                    }
                }
                if self.owned.get(&sub.owner).copied().unwrap_or(0) >= cap {
                    return Err(Rejection::CapReached { cap });
                }
                Ok(())
            }
            WriteKind::Update { base } => {
                if self.deleted.contains(id) {
                    return Err(Rejection::Gone);
                }
                match current {
                    Some(cur) if cur.version != base => Err(Rejection::Stale {
                        current: cur.version,
                    }),
                    // Current, or a survivor of compaction this view never
                    // saw the history of.
                    _ => Ok(()),
                }
            }
            WriteKind::Delete { base } => match (current, base) {
                (Some(cur), Some(b)) if cur.version != b => Err(Rejection::Stale {
                    current: cur.version,
                }),
                _ => Ok(()),
            },
        }
    }
}

pub struct SubscriptionStore {
    view: RwLock<View>,
    /// `api.max_subscriptions_per_owner`, part of the create rule.
    max_per_owner: usize,
    /// The health topic, its applied offsets, and where its view caught up.
    health_topic: String,
    health_applied: Applied,
    /// This instance's writes awaiting their decision, by write id.
    pending: Mutex<HashMap<String, Option<Result<(), Rejection>>>>,
    /// Encrypts secrets on the way to Kafka and decrypts them on the way back.
    cipher: Option<SecretCipher>,
    applied: Applied,
    producer: FutureProducer,
    topic: String,
    write_timeout: Duration,
}

impl SubscriptionStore {
    pub fn new(
        producer: FutureProducer,
        topic: String,
        write_timeout: Duration,
        cipher: Option<SecretCipher>,
        max_per_owner: usize,
        health_topic: String,
    ) -> Arc<Self> {
        Arc::new(SubscriptionStore {
            view: RwLock::new(View::default()),
            health_topic,
            health_applied: Applied::default(),
            max_per_owner,
            pending: Mutex::new(HashMap::new()),
            cipher,
            applied: Applied::default(),
            producer,
            topic,
            write_timeout,
        })
    }

    /// Starts following the topic. The store turns ready once it has read
    /// up to the end offsets seen here.
    pub async fn follow(
        self: &Arc<Self>,
        settings: &KafkaSettings,
        cancel: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, StoreError> {
        let follower = Follower::start(settings, "subscriptions-view", &self.topic)
            .await
            .map_err(|source| StoreError::Follow {
                topic: self.topic.clone(),
                source,
            })?;
        let ends = follower.ends.clone();
        let health = Follower::start(settings, "health-view", &self.health_topic)
            .await
            .map_err(|source| StoreError::Follow {
                topic: self.health_topic.clone(),
                source,
            })?;
        let health_ends = health.ends.clone();
        self.health_applied.check_caught_up(&health_ends);
        let store = self.clone();
        tokio::spawn(health.run(cancel.clone(), move |msg| {
            let key = msg.key().and_then(|k| std::str::from_utf8(k).ok());
            store.apply_health(key, msg.payload());
            store.health_applied.record(msg.partition(), msg.offset());
            store.health_applied.check_caught_up(&health_ends);
        }));
        let store = self.clone();
        store.check_caught_up(&ends);
        // Test only: hold back this view (records read after it caught up)
        // to show that a view that is behind waits instead of dropping.
        let lag = std::env::var("REWARDHOOKS_TEST_VIEW_LAG_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        // Test only: slow the initial load (records read before it caught
        // up), to show that fan-out waits for the full view.
        let load_lag = std::env::var("REWARDHOOKS_TEST_VIEW_LOAD_LAG_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        Ok(tokio::spawn(follower.run(cancel, move |msg| {
            if let Some(lag) = lag.filter(|_| store.applied.is_ready()) {
                tokio::task::block_in_place(|| std::thread::sleep(lag));
            }
            if let Some(lag) = load_lag.filter(|_| !store.applied.is_ready()) {
                tokio::task::block_in_place(|| std::thread::sleep(lag));
            }
            let key = msg.key().and_then(|k| std::str::from_utf8(k).ok());
            let write = Written {
                kind: header_str(msg.headers(), WRITE_HEADER).and_then(WriteKind::parse),
                write_id: header_str(msg.headers(), WRITE_ID_HEADER),
                at_ms: msg.timestamp().to_millis().unwrap_or(0),
            };
            store.apply(key, msg.payload(), &write, msg.partition(), msg.offset());
            store.check_caught_up(&ends);
        })))
    }

    fn check_caught_up(&self, ends: &HashMap<i32, i64>) {
        if self.applied.check_caught_up(ends) {
            let count = self.read().by_id.len();
            tracing::info!(subscriptions = count, "Subscription view caught up.");
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    fn view_mut(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one record of the subscriptions topic, by the rule above.
    pub(crate) fn apply(
        &self,
        key: Option<&str>,
        payload: Option<&[u8]>,
        write: &Written<'_>,
        partition: i32,
        offset: i64,
    ) {
        let mut unknown_key = None;
        let parsed = match payload {
            None => None,
            Some(bytes) => match serde_json::from_slice::<Subscription>(bytes) {
                Ok(sub) => match self.open_secrets(sub.clone()) {
                    Ok(sub) => Some(sub),
                    // Written with a secrets key this instance does not have
                    // (yet: a key rollout). Its types and filter are plain,
                    // so it still matches; its deliveries are parked here
                    // until the key arrives, never dropped.
                    Err(CipherError::UnknownKey(kid)) => {
                        tracing::error!(subscription_id = %sub.id, key_id = %kid, "Subscription secret sealed with an unknown secrets key; its deliveries wait on this instance.");
                        unknown_key = Some(kid);
                        Some(sub)
                    }
                    Err(e) => {
                        tracing::error!(partition, offset, error = %e, "Skipping unreadable subscription record.");
                        self.decided(write.write_id, Err(Rejection::Gone));
                        self.applied.record(partition, offset);
                        return;
                    }
                },
                Err(e) => {
                    tracing::error!(partition, offset, error = %e, "Skipping unreadable subscription record.");
                    self.decided(write.write_id, Err(Rejection::Gone));
                    self.applied.record(partition, offset);
                    return;
                }
            },
        };
        let id = parsed
            .as_ref()
            .map(|s| s.id.clone())
            .or_else(|| key.map(str::to_string));
        let Some(id) = id else {
            self.applied.record(partition, offset);
            return;
        };
        let decision = {
            let mut view = self.view_mut();
            // Records written before writes were versioned apply as they are.
            let decision = match write.kind {
                Some(kind) => {
                    view.decide(&id, kind, parsed.as_ref(), self.max_per_owner, write.at_ms)
                }
                None => Ok(()),
            };
            if decision.is_ok() {
                view.remove(&id);
                match parsed {
                    Some(sub) => {
                        let health = view.health.get(&id);
                        let mut live = LiveSubscription::merged(sub, health).at_version(offset);
                        live.unknown_key = unknown_key.map(Into::into);
                        view.insert(Arc::new(live));
                    }
                    None => {
                        view.deleted.insert(id);
                    }
                }
            }
            decision
        };
        self.decided(write.write_id, decision);
        self.applied.record(partition, offset);
    }

    /// Notes the decision on one of this instance's writes.
    fn decided(&self, write_id: Option<&str>, decision: Result<(), Rejection>) {
        let Some(write_id) = write_id else { return };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = pending.get_mut(write_id) {
            *slot = Some(decision);
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.applied.is_ready() && self.health_applied.is_ready()
    }

    /// Applies one record of the health topic: the subscription's merged
    /// state changes; its version (the owner's record) does not.
    pub(crate) fn apply_health(&self, key: Option<&str>, payload: Option<&[u8]>) {
        let Some(id) = key else { return };
        let health = match payload.map(serde_json::from_slice::<Health>) {
            None => None,
            Some(Ok(h)) => Some(h),
            Some(Err(e)) => {
                tracing::error!(subscription_id = id, error = %e, "Skipping unreadable health record.");
                return;
            }
        };
        let mut view = self.view_mut();
        match &health {
            Some(h) => view.health.insert(id.to_string(), h.clone()),
            None => view.health.remove(id),
        };
        if let Some(ById(current)) = view.by_id.get(id).cloned() {
            let mut live = LiveSubscription::merged(current.owned().clone(), health.as_ref())
                .at_version(current.version);
            live.unknown_key = current.unknown_key.clone();
            view.remove(id);
            view.insert(Arc::new(live));
        }
    }

    /// The health record of a subscription, as this view has it.
    pub(crate) fn health(&self, id: &str) -> Option<Health> {
        self.read().health.get(id).cloned()
    }

    /// Writes a subscription's health record (by the instance owning its
    /// delivery partition, the only writer). Not waited for: the owner of the
    /// partition keeps the state in memory; others follow the topic.
    pub(crate) async fn put_health(&self, id: &str, health: &Health) -> Result<(), StoreError> {
        let value = serde_json::to_vec(health).unwrap_or_default();
        let record = FutureRecord::<str, [u8]>::to(&self.health_topic)
            .key(id)
            .payload(&value);
        self.producer
            .send(record, Timeout::After(self.write_timeout))
            .await
            .map(|_| ())
            .map_err(|(source, _)| StoreError::Write {
                id: id.to_string(),
                source,
            })
    }

    /// The read fence: returns once the view has applied the topic up to end
    /// offsets read now, so every write acknowledged before this call is in
    /// the view. One end-offset lookup; retried while the broker is away.
    pub async fn fence(&self) {
        let ends = loop {
            match self.applied.read_ends(&self.producer, &self.topic).await {
                Ok(ends) => break ends,
                Err(e) => {
                    tracing::warn!(error = %e, "Read fence: cannot read the subscriptions topic's end; retrying.");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        while !self.applied.wait_ends(&ends, Duration::from_secs(10)).await {
            tracing::warn!("The subscription view is behind the topic; waiting.");
        }
    }

    /// The positions this view has applied, as a delivery record carries
    /// them (`<partition>:<offset>,…`).
    pub(crate) fn positions(&self) -> String {
        self.applied
            .partitions()
            .iter()
            .filter_map(|p| self.applied.offset(*p).map(|o| format!("{p}:{o}")))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits (at most `timeout`) until this view has applied `positions`
    /// (from [`positions`](Self::positions) of another instance); false when
    /// it did not in time.
    pub async fn wait_positions(&self, positions: &str, timeout: Duration) -> bool {
        let wanted: Vec<(i32, i64)> = positions
            .split(',')
            .filter_map(|pair| {
                let (p, o) = pair.split_once(':')?;
                Some((p.parse().ok()?, o.parse().ok()?))
            })
            .collect();
        let deadline = tokio::time::Instant::now() + timeout;
        for (partition, offset) in wanted {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !self.applied.wait_for(partition, offset, left).await {
                return false;
            }
        }
        true
    }

    /// Waits until the view has caught up with both topics.
    pub async fn wait_ready(&self) {
        self.applied.wait_ready().await;
        self.health_applied.wait_ready().await;
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveSubscription>> {
        self.read().by_id.get(id).map(|b| b.0.clone())
    }

    pub fn matching(&self, event: &Event) -> Vec<Arc<LiveSubscription>> {
        self.read().index.matching(event)
    }

    /// Up to `limit` subscriptions after `cursor`, ordered by id, optionally
    /// only one owner's, and whether more follow.
    pub fn list(
        &self,
        owner: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<LiveSubscription>>, bool) {
        let view = self.read();
        let range = match cursor {
            Some(c) => view
                .by_id
                .range::<str, _>((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded)),
            None => view.by_id.range::<str, _>(..),
        };
        let mut items: Vec<_> = range
            .map(|live| &live.0)
            .filter(|live| owner.is_none_or(|o| live.sub.owner == o))
            .take(limit + 1)
            .cloned()
            .collect();
        let more = items.len() > limit;
        items.truncate(limit);
        (items, more)
    }

    /// Secrets key ids subscriptions are sealed with that this instance
    /// does not have, with how many subscriptions each.
    pub(crate) fn unknown_keys(&self) -> BTreeMap<String, usize> {
        let mut keys = BTreeMap::new();
        for ById(live) in self.read().by_id.iter() {
            if let Some(kid) = &live.unknown_key {
                *keys.entry(kid.to_string()).or_default() += 1;
            }
        }
        keys
    }

    pub(crate) fn count_owned(&self, owner: &str) -> usize {
        self.read().owned.get(owner).copied().unwrap_or(0)
    }

    fn open_secrets(&self, mut sub: Subscription) -> Result<Subscription, CipherError> {
        if let Some(cipher) = &self.cipher {
            sub.secret = Secret::from_string(cipher.decrypt(sub.secret.expose())?);
            if let Some(previous) = &sub.previous_secret {
                sub.previous_secret = Some(Secret::from_string(cipher.decrypt(previous.expose())?));
            }
            for value in sub.headers.values_mut() {
                *value = Secret::from_string(cipher.decrypt(value.expose())?);
            }
            if let Some(EndpointAuth::Oauth2ClientCredentials { client_secret, .. }) =
                sub.auth.as_deref_mut()
            {
                *client_secret = Secret::from_string(cipher.decrypt(client_secret.expose())?);
            }
        }
        Ok(sub)
    }

    fn seal_secrets(&self, sub: &Subscription) -> Subscription {
        let mut sealed = sub.clone();
        if let Some(cipher) = &self.cipher {
            sealed.secret = Secret::from_string(cipher.encrypt(sub.secret.expose()));
            sealed.previous_secret = sub
                .previous_secret
                .as_ref()
                .map(|p| Secret::from_string(cipher.encrypt(p.expose())));
            for value in sealed.headers.values_mut() {
                *value = Secret::from_string(cipher.encrypt(value.expose()));
            }
            if let Some(EndpointAuth::Oauth2ClientCredentials { client_secret, .. }) =
                sealed.auth.as_deref_mut()
            {
                *client_secret = Secret::from_string(cipher.encrypt(client_secret.expose()));
            }
        }
        sealed
    }

    /// Writes a record and returns, once this instance has read it back,
    /// whether it applied. A losing record is followed by a repair.
    pub async fn write(
        &self,
        id: &str,
        sub: Option<&Subscription>,
        kind: WriteKind,
    ) -> Result<Result<(), Rejection>, StoreError> {
        let decision = self.write_once(id, sub, kind).await?;
        if decision.is_err() {
            self.repair(id).await;
        }
        Ok(decision)
    }

    async fn write_once(
        &self,
        id: &str,
        sub: Option<&Subscription>,
        kind: WriteKind,
    ) -> Result<Result<(), Rejection>, StoreError> {
        let value = sub.map(|sub| serde_json::to_vec(&self.seal_secrets(sub)).unwrap_or_default());
        let write_id = crate::subscriptions::new_id();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(write_id.clone(), None);
        let result = self
            .produce_and_wait(id, value.as_deref(), &kind.header(), &write_id)
            .await;
        let decision = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&write_id)
            .flatten();
        result?;
        Ok(decision.unwrap_or(Err(Rejection::Gone)))
    }

    /// After a lost write, makes the key's last record the winning state
    /// again (or a tombstone), so compaction keeps what every view holds.
    async fn repair(&self, id: &str) {
        for _ in 0..3 {
            let current = self.get(id);
            if current.as_ref().is_some_and(|l| l.unknown_key.is_some()) {
                // Its sealed secret cannot be written back from here.
                return;
            }
            let outcome = match &current {
                Some(live) => {
                    self.write_once(
                        id,
                        Some(live.owned()),
                        WriteKind::Update { base: live.version },
                    )
                    .await
                }
                None => {
                    self.write_once(id, None, WriteKind::Delete { base: None })
                        .await
                }
            };
            match outcome {
                Ok(Ok(())) => return,
                Ok(Err(_)) => continue,
                Err(e) => {
                    tracing::warn!(subscription_id = id, error = %e, "Cannot repair after a lost write.");
                    return;
                }
            }
        }
    }

    /// Creates a subscription; decided in log order against the owner cap
    /// and idempotency keys, the same on every instance.
    pub async fn create(
        &self,
        sub: &Subscription,
    ) -> Result<Result<Arc<LiveSubscription>, Rejection>, StoreError> {
        let decision = self.write(&sub.id, Some(sub), WriteKind::Create).await?;
        Ok(decision.map(|()| self.get(&sub.id).expect("applied create is in the view")))
    }

    /// Changes a subscription: `change` is applied to the latest version and
    /// written based on it. When another write won meanwhile, the change is
    /// merged onto the newer version and tried again, unless `if_match`
    /// pins the version (then the answer is the rejection). `change`
    /// returning false writes nothing.
    pub async fn update(
        &self,
        id: &str,
        if_match: Option<i64>,
        mut change: impl FnMut(&mut Subscription) -> bool,
    ) -> Result<Result<Arc<LiveSubscription>, Rejection>, StoreError> {
        let mut last = Rejection::Gone;
        for _ in 0..UPDATE_TRIES {
            let Some(live) = self.get(id) else {
                return Ok(Err(Rejection::Gone));
            };
            if let Some(expected) = if_match {
                if expected != live.version {
                    return Ok(Err(Rejection::Stale {
                        current: live.version,
                    }));
                }
            }
            if let Some(kid) = &live.unknown_key {
                return Err(StoreError::UnknownKey {
                    id: id.to_string(),
                    key_id: kid.to_string(),
                });
            }
            let mut sub = live.owned().clone();
            if !change(&mut sub) {
                return Ok(Ok(live));
            }
            let kind = WriteKind::Update { base: live.version };
            match self.write(id, Some(&sub), kind).await? {
                Ok(()) => {
                    return Ok(self.get(id).ok_or(Rejection::Gone));
                }
                Err(Rejection::Stale { current }) if if_match.is_none() => {
                    last = Rejection::Stale { current };
                }
                Err(rejection) => return Ok(Err(rejection)),
            }
        }
        Ok(Err(last))
    }

    /// Deletes a subscription (tombstone), optionally only at a version.
    pub async fn delete(
        &self,
        id: &str,
        if_match: Option<i64>,
    ) -> Result<Result<(), Rejection>, StoreError> {
        self.write(id, None, WriteKind::Delete { base: if_match })
            .await
    }

    async fn produce_and_wait(
        &self,
        id: &str,
        value: Option<&[u8]>,
        kind: &str,
        write_id: &str,
    ) -> Result<(), StoreError> {
        let headers = crate::kafka::headers([(WRITE_HEADER, kind), (WRITE_ID_HEADER, write_id)]);
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic)
            .key(id)
            .headers(headers);
        if let Some(value) = value {
            record = record.payload(value);
        }
        let (partition, offset) = self
            .producer
            .send(record, Timeout::After(self.write_timeout))
            .await
            .map(|delivery| (delivery.partition, delivery.offset))
            .map_err(|(source, _)| StoreError::Write {
                id: id.to_string(),
                source,
            })?;
        if self
            .applied
            .wait_for(partition, offset, self.write_timeout)
            .await
        {
            Ok(())
        } else {
            Err(StoreError::ReadBackTimeout {
                id: id.to_string(),
                timeout: self.write_timeout,
            })
        }
    }
}

/// What the record's headers say about a write.
pub(crate) struct Written<'a> {
    pub kind: Option<WriteKind>,
    pub write_id: Option<&'a str>,
    /// The record's timestamp, unix milliseconds.
    pub at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: &str, owner: &str) -> Subscription {
        let mut s = Subscription::new(
            owner.into(),
            "https://example.com/h".into(),
            vec!["*".into()],
        );
        s.id = id.into();
        s
    }

    fn apply(
        view: &mut View,
        id: &str,
        kind: WriteKind,
        s: Option<Subscription>,
        at: i64,
        offset: i64,
    ) -> Result<(), Rejection> {
        let decision = view.decide(id, kind, s.as_ref(), 2, at);
        if decision.is_ok() {
            view.remove(id);
            match s {
                Some(s) => view.insert(Arc::new(LiveSubscription::new(s).at_version(offset))),
                None => {
                    view.deleted.insert(id.to_string());
                }
            }
        }
        decision
    }

    #[test]
    fn writes_based_on_a_stale_version_or_a_deleted_subscription_do_not_apply() {
        let mut v = View::default();
        assert_eq!(
            apply(&mut v, "a", WriteKind::Create, Some(sub("a", "o")), 0, 1),
            Ok(())
        );
        assert_eq!(
            apply(&mut v, "a", WriteKind::Create, Some(sub("a", "o")), 0, 2),
            Err(Rejection::Exists)
        );
        assert_eq!(
            apply(
                &mut v,
                "a",
                WriteKind::Update { base: 1 },
                Some(sub("a", "o")),
                0,
                3
            ),
            Ok(())
        );
        assert_eq!(
            apply(
                &mut v,
                "a",
                WriteKind::Update { base: 1 },
                Some(sub("a", "o")),
                0,
                4
            ),
            Err(Rejection::Stale { current: 3 })
        );
        assert_eq!(
            apply(&mut v, "a", WriteKind::Delete { base: Some(1) }, None, 0, 5),
            Err(Rejection::Stale { current: 3 })
        );
        assert_eq!(
            apply(&mut v, "a", WriteKind::Delete { base: None }, None, 0, 6),
            Ok(())
        );
        // A delete is final.
        assert_eq!(
            apply(
                &mut v,
                "a",
                WriteKind::Update { base: 3 },
                Some(sub("a", "o")),
                0,
                7
            ),
            Err(Rejection::Gone)
        );
        assert_eq!(
            apply(&mut v, "a", WriteKind::Create, Some(sub("a", "o")), 0, 8),
            Err(Rejection::Gone)
        );
        assert!(v.by_id.is_empty());
        // An update of an id never seen is a compaction survivor.
        assert_eq!(
            apply(
                &mut v,
                "b",
                WriteKind::Update { base: 40 },
                Some(sub("b", "o")),
                0,
                9
            ),
            Ok(())
        );
    }

    #[test]
    fn the_owner_cap_and_idempotency_keys_are_decided_in_log_order() {
        let mut v = View::default();
        assert_eq!(
            apply(&mut v, "a", WriteKind::Create, Some(sub("a", "o")), 0, 1),
            Ok(())
        );
        assert_eq!(
            apply(&mut v, "b", WriteKind::Create, Some(sub("b", "o")), 0, 2),
            Ok(())
        );
        assert_eq!(
            apply(&mut v, "c", WriteKind::Create, Some(sub("c", "o")), 0, 3),
            Err(Rejection::CapReached { cap: 2 })
        );
        assert_eq!(
            apply(&mut v, "d", WriteKind::Create, Some(sub("d", "p")), 0, 4),
            Ok(())
        );
        let keyed = |id: &str, hash: &str| {
            let mut s = sub(id, "q");
            s.idempotency = Some(Box::new(IdempotencyKey {
                key: "k1".into(),
                body_hash: hash.into(),
                at_ms: 0,
            }));
            s
        };
        assert_eq!(
            apply(
                &mut v,
                "e",
                WriteKind::Create,
                Some(keyed("e", "h")),
                1000,
                5
            ),
            Ok(())
        );
        assert_eq!(
            apply(
                &mut v,
                "f",
                WriteKind::Create,
                Some(keyed("f", "h")),
                2000,
                6
            ),
            Err(Rejection::Duplicate {
                id: "e".into(),
                same_body: true
            })
        );
        assert_eq!(
            apply(
                &mut v,
                "g",
                WriteKind::Create,
                Some(keyed("g", "other")),
                3000,
                7
            ),
            Err(Rejection::Duplicate {
                id: "e".into(),
                same_body: false
            })
        );
        // After 24 h the key may be used again.
        assert_eq!(
            apply(
                &mut v,
                "h",
                WriteKind::Create,
                Some(keyed("h", "h")),
                1000 + IDEMPOTENCY_WINDOW_MS + 1,
                8
            ),
            Ok(())
        );
    }

    #[test]
    fn write_kinds_round_trip_through_their_header() {
        for kind in [
            WriteKind::Create,
            WriteKind::Update { base: 17 },
            WriteKind::Delete { base: None },
            WriteKind::Delete { base: Some(4) },
        ] {
            assert_eq!(WriteKind::parse(&kind.header()), Some(kind));
        }
        assert_eq!(WriteKind::parse("update:x"), None);
    }
}
