//! What every stage shares: settings, topic names, the catalog, the views
//! of the subscriptions, dead letters and attempts, and one producer.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rdkafka::producer::FutureProducer;

use crate::attempts::AttemptLog;
use crate::config::Settings;
use crate::deadletter::DeadLetters;
use crate::events::Catalog;
use crate::kafka::Topics;
use crate::subscriptions::SubscriptionStore;

/// What every stage shares.
pub struct Shared {
    pub settings: Arc<Settings>,
    pub topics: Topics,
    pub catalog: Catalog,
    pub store: Arc<SubscriptionStore>,
    pub dead_letters: Arc<DeadLetters>,
    pub attempt_log: Arc<AttemptLog>,
    pub producer: FutureProducer,
    pub kafka_reachable: AtomicBool,
}
