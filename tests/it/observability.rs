//! Metrics that answer operators' questions, and consumer lag.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_exactly_what_a_run_did() {
    let deployment = Deployment::new("metrics").delivery("retry_schedule = [\"1s\"]");
    let instance = Instance::start(&deployment).await;
    let ok = Receiver::start(200, Duration::ZERO).await;
    let failing = Receiver::start(500, Duration::ZERO).await;
    let api = instance.api_client("alice-token");
    api.subscribe(&ok.url, &["points.earned"], None).await;
    api.subscribe(&failing.url, &["points.*"], None).await;
    instance.wait_assigned().await;
    let producer = producer();
    produce_many(&deployment, "points.earned", "evt_m", 3).await;
    produce_raw(&producer, &deployment.input, b"garbage").await;
    produce_raw(
        &producer,
        &deployment.input,
        b"{\"id\":\"x\",\"type\":\"nope\",\"data\":{}}",
    )
    .await;

    let input = deployment.input.as_str();
    let mut samples = Vec::new();
    for _ in 0..300 {
        samples = metrics(&instance).await;
        // The dead letter is counted before the attempt leaves the in-flight
        // gauge: wait for both.
        if sample(&samples, "rewardhooks_dead_letters_total", &[]) >= 3.0
            && sample(&samples, "rewardhooks_in_flight_deliveries", &[]) == 0.0
            && sample(&samples, "rewardhooks_event_to_delivery_seconds_count", &[]) >= 3.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expect = [
        (
            "rewardhooks_events_consumed_total",
            vec![("topic", input)],
            5.0,
        ),
        (
            "rewardhooks_events_invalid_total",
            vec![("reason", "not_json")],
            1.0,
        ),
        (
            "rewardhooks_events_invalid_total",
            vec![("reason", "unknown_type")],
            1.0,
        ),
        (
            "rewardhooks_deliveries_total",
            vec![("event_type", "points.earned"), ("outcome", "success")],
            3.0,
        ),
        (
            "rewardhooks_deliveries_total",
            vec![("event_type", "points.earned"), ("outcome", "retry")],
            3.0,
        ),
        (
            "rewardhooks_deliveries_total",
            vec![("event_type", "points.earned"), ("outcome", "dead_letter")],
            3.0,
        ),
        (
            "rewardhooks_retries_scheduled_total",
            vec![("delay", "1s")],
            3.0,
        ),
        ("rewardhooks_dead_letters_total", vec![], 3.0),
        ("rewardhooks_subscriptions", vec![("status", "active")], 2.0),
        (
            "rewardhooks_delivery_attempt_duration_seconds_count",
            vec![],
            9.0,
        ),
        ("rewardhooks_event_to_delivery_seconds_count", vec![], 3.0),
        ("rewardhooks_in_flight_deliveries", vec![], 0.0),
        (
            "rewardhooks_build_info",
            vec![("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        ),
    ];
    for (name, labels, value) in expect {
        assert_eq!(sample(&samples, name, &labels), value, "{name} {labels:?}");
    }
    // No label carries a URL or an id.
    for (_, labels, _) in &samples {
        for v in labels.values() {
            assert!(
                !v.contains("http") && !v.starts_with("sub_") && !v.starts_with("cus_"),
                "{v}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lag_grows_while_fan_out_is_stopped_and_returns_to_zero_after_it_catches_up() {
    let deployment = Deployment::new("lag");
    let watcher = Instance::start_roles(&deployment, "api,deliver").await;
    let group = format!("{}.fanout", deployment.group);
    let input = deployment.input.clone();
    let lag = |samples: &[(String, std::collections::BTreeMap<String, String>, f64)]| {
        sample_sum(
            samples,
            "rewardhooks_consumer_lag",
            &[("group", group.as_str()), ("topic", input.as_str())],
        )
    };
    produce_many(&deployment, "points.earned", "evt_l", 20).await;
    let mut seen = 0.0;
    for _ in 0..300 {
        seen = lag(&metrics(&watcher).await);
        if seen >= 20.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 20.0, "lag while no fan-out runs");

    let fanout = Instance::start_roles(&deployment, "api,fanout").await;
    for _ in 0..600 {
        seen = lag(&metrics(&watcher).await);
        if seen == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 0.0, "lag after fan-out caught up");
    drop(fanout);
}
