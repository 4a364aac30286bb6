//! Every Prometheus metric rewardhooks exports, in one place. Names are part of
//! the contract (docs/architecture.md, docs/metrics.md). No label carries a URL
//! or customer id; only the opt-in `deliveries_by_subscription_total`
//! (`metrics.per_subscription_labels`) carries a subscription id.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub(crate) struct Metrics {
    pub registry: Registry,
    pub events_consumed: IntCounterVec,
    pub events_invalid: IntCounterVec,
    pub deliveries: IntCounterVec,
    pub delivery_attempt_duration: Histogram,
    pub event_to_delivery: Histogram,
    pub dead_letters: IntCounter,
    pub retries_scheduled: IntCounterVec,
    pub deliveries_deferred: IntCounter,
    pub deliveries_dropped: IntCounterVec,
    pub deliveries_by_subscription: IntCounterVec,
    pub subscriptions: IntGaugeVec,
    pub consumer_lag: IntGaugeVec,
    pub in_flight_deliveries: IntGauge,
    pub rate_limited: IntCounter,
    pub circuit_open: IntGauge,
    pub build_info: IntGaugeVec,
    pub partition_stuck: IntGaugeVec,
    pub consumer_lag_measured: IntGaugeVec,
    pub first_attempt_duration: Histogram,
    pub unknown_key_subscriptions: IntGauge,
    pub operational_events: IntCounterVec,
}

pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help).namespace("rewardhooks"), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    register(registry, metric)
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    // Registration fails only for duplicate or malformed names, which are
    // programming errors in this file, caught by the unit test below.
    if let Err(e) = registry.register(Box::new(metric.clone())) {
        panic!("metric registration failed: {e}");
    }
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let metric = Histogram::with_opts(
        HistogramOpts::new(name, help)
            .namespace("rewardhooks")
            .buckets(buckets),
    )
    .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    register(registry, metric)
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let events_consumed = counter_vec(
            &registry,
            "events_consumed_total",
            "Input records read, by topic.",
            &["topic"],
        );
        let events_invalid = counter_vec(
            &registry,
            "events_invalid_total",
            "Input records sent to the invalid topic, by reason.",
            &["reason"],
        );
        let deliveries = counter_vec(
            &registry,
            "deliveries_total",
            "Delivery attempts by event type and outcome (success, retry, dead_letter).",
            &["event_type", "outcome"],
        );
        let delivery_attempt_duration = histogram(
            &registry,
            "delivery_attempt_duration_seconds",
            "Duration of one webhook HTTP attempt.",
            vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
            ],
        );
        let event_to_delivery = histogram(
            &registry,
            "event_to_delivery_seconds",
            "Time from the event's time to a 2xx answer from the subscriber.",
            vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
                7200.0, 21600.0, 86400.0, 259200.0,
            ],
        );
        let dead_letters = register(
            &registry,
            IntCounter::with_opts(
                Opts::new(
                    "dead_letters_total",
                    "Deliveries parked in the dead-letter topic.",
                )
                .namespace("rewardhooks"),
            )
            .unwrap_or_else(|e| panic!("metric dead_letters_total is malformed: {e}")),
        );
        let retries_scheduled = counter_vec(
            &registry,
            "retries_scheduled_total",
            "Failed deliveries written to a retry tier, by tier delay.",
            &["delay"],
        );
        let deliveries_deferred = register(
            &registry,
            IntCounter::with_opts(
                Opts::new(
                    "deliveries_deferred_total",
                    "Deliveries moved to the first retry tier without an attempt because their lane was full.",
                )
                .namespace("rewardhooks"),
            )
            .unwrap_or_else(|e| panic!("metric deliveries_deferred_total is malformed: {e}")),
        );
        let deliveries_dropped = counter_vec(
            &registry,
            "deliveries_dropped_total",
            "Deliveries not attempted, by reason (subscription_deleted, subscription_disabled, malformed).",
            &["reason"],
        );
        let deliveries_by_subscription = counter_vec(
            &registry,
            "deliveries_by_subscription_total",
            "Attempts by subscription and outcome; only with metrics.per_subscription_labels (small deployments).",
            &["subscription_id", "outcome"],
        );
        let subscriptions = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("subscriptions", "Subscriptions in the view, by status.")
                    .namespace("rewardhooks"),
                &["status"],
            )
            .unwrap_or_else(|e| panic!("metric subscriptions is malformed: {e}")),
        );
        let consumer_lag = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "consumer_lag",
                    "Records not yet committed by a rewardhooks consumer group, per partition (whole group, measured by every api instance; aggregate with max by partition).",
                )
                .namespace("rewardhooks"),
                &["group", "topic", "partition"],
            )
            .unwrap_or_else(|e| panic!("metric consumer_lag is malformed: {e}")),
        );
        let in_flight_deliveries = register(
            &registry,
            IntGauge::with_opts(
                Opts::new(
                    "in_flight_deliveries",
                    "Deliveries taken from Kafka and not yet finished on this instance.",
                )
                .namespace("rewardhooks"),
            )
            .unwrap_or_else(|e| panic!("metric in_flight_deliveries is malformed: {e}")),
        );
        let rate_limited = register(
            &registry,
            IntCounter::with_opts(
                Opts::new(
                    "rate_limited_total",
                    "Times a delivery waited for its subscription's rate limit.",
                )
                .namespace("rewardhooks"),
            )
            .unwrap_or_else(|e| panic!("metric rate_limited_total is malformed: {e}")),
        );
        let circuit_open = register(
            &registry,
            IntGauge::with_opts(
                Opts::new(
                    "circuit_open",
                    "Subscriptions on this instance whose circuit breaker is open.",
                )
                .namespace("rewardhooks"),
            )
            .unwrap_or_else(|e| panic!("metric circuit_open is malformed: {e}")),
        );
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "build_info",
                    "Always 1; the version label says which build runs.",
                )
                .namespace("rewardhooks"),
                &["version"],
            )
            .unwrap_or_else(|e| panic!("metric build_info is malformed: {e}")),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let partition_stuck = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "partition_stuck",
                    "1 while a consumed partition cannot advance: a record it caused can be written nowhere, not even to the dead-letter or invalid topic (nothing is lost; /readyz says why).",
                )
                .namespace("rewardhooks"),
                &["topic", "partition"],
            )
            .unwrap_or_else(|e| panic!("metric partition_stuck is malformed: {e}")),
        );
        let consumer_lag_measured = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "consumer_lag_last_success_timestamp_seconds",
                    "Unix time of the last complete lag measurement of a group (a stale value means consumer_lag is frozen).",
                )
                .namespace("rewardhooks"),
                &["group"],
            )
            .unwrap_or_else(|e| panic!("metric consumer_lag_last_success_timestamp_seconds is malformed: {e}")),
        );
        let first_attempt_duration = histogram(
            &registry,
            "first_attempt_duration_seconds",
            "From the event's time to the end of its first delivery attempt, any outcome (retries are not counted): the service's own latency.",
            vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
        );
        let unknown_key_subscriptions = register(
            &registry,
            IntGauge::with_opts(
                Opts::new(
                    "subscriptions_unknown_secrets_key",
                    "Subscriptions whose secret is sealed with a secrets key this instance does not have (a key rollout in progress): their deliveries wait here.",
                )
                .namespace("rewardhooks"),
            )
            .unwrap_or_else(|e| panic!("metric subscriptions_unknown_secrets_key is malformed: {e}")),
        );
        let operational_events = counter_vec(
            &registry,
            "operational_events_total",
            "Operational events (rewardhooks.*) by type and outcome: emitted (written to the operational topic), failed (could not be written; logged), coalesced (a dead letter counted into the next dead_letter.created notice).",
            &["event_type", "outcome"],
        );
        Metrics {
            registry,
            events_consumed,
            events_invalid,
            deliveries,
            delivery_attempt_duration,
            event_to_delivery,
            dead_letters,
            retries_scheduled,
            deliveries_deferred,
            deliveries_dropped,
            deliveries_by_subscription,
            subscriptions,
            consumer_lag,
            in_flight_deliveries,
            rate_limited,
            circuit_open,
            build_info,
            partition_stuck,
            consumer_lag_measured,
            first_attempt_duration,
            unknown_key_subscriptions,
            operational_events,
        }
    }

    /// Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "Metrics encoding failed.");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_metrics_register_and_render_with_prefix() {
        METRICS.events_consumed.with_label_values(&["t"]).inc();
        let text = METRICS.render();
        assert!(text.contains("rewardhooks_events_consumed_total{topic=\"t\"}"));
        assert!(text.contains("rewardhooks_build_info"));
    }
}
