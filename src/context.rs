//! What every stage shares: settings, topic names, the catalog, the views
//! of the subscriptions, dead letters and attempts, and one producer.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use rdkafka::producer::FutureProducer;

use crate::attempts::AttemptLog;
use crate::config::Settings;
use crate::deadletter::DeadLetters;
use crate::events::Catalog;
use crate::kafka::consumer::StageStatus;
use crate::kafka::Topics;
use crate::metrics::METRICS;
use crate::subscriptions::SubscriptionStore;

/// What every stage shares.
pub struct Shared {
    pub settings: Arc<Settings>,
    pub topics: Topics,
    pub catalog: Catalog,
    pub store: Arc<SubscriptionStore>,
    /// Owners, their scopes, keys and portal sessions.
    pub owners: Arc<crate::owners::OwnerStore>,
    /// The audit trail (written by the API, read by `GET /v1/audit`).
    pub audit: Arc<crate::audit::AuditLog>,
    pub dead_letters: Arc<DeadLetters>,
    pub attempt_log: Arc<AttemptLog>,
    /// The view of the recovery jobs.
    pub recoveries: Arc<crate::recoveries::Recoveries>,
    pub producer: FutureProducer,
    pub kafka_reachable: AtomicBool,
    /// Input topics that do not exist (yet), for `/readyz`.
    pub missing_inputs: Mutex<Vec<String>>,
    /// Partitions that cannot advance, with why (for `/readyz`).
    pub stuck: Mutex<BTreeMap<(String, i32), String>>,
    /// Whether this instance serves the API: its readiness is the API's
    /// (views loaded, Kafka reachable), not its stages'.
    pub serves_api: bool,
    /// The fan-out and delivery stages, for `/readyz`.
    pub fanout_status: Arc<StageStatus>,
    pub deliver_status: Arc<StageStatus>,
}

impl Shared {
    /// Marks a partition stuck: a record it caused can be written nowhere.
    pub(crate) fn mark_stuck(&self, topic: &str, partition: i32, why: String) {
        tracing::error!(topic, partition, reason = %why, "Partition stuck: it stops advancing until this is resolved; nothing is lost.");
        METRICS
            .partition_stuck
            .with_label_values(&[topic, &partition.to_string()])
            .set(1);
        self.stuck
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((topic.to_string(), partition), why);
    }

    /// The stuck partitions, as `/readyz` shows them.
    pub fn stuck_partitions(&self) -> Vec<serde_json::Value> {
        self.stuck
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((topic, partition), why)| {
                serde_json::json!({"topic": topic, "partition": partition, "reason": why})
            })
            .collect()
    }
}
