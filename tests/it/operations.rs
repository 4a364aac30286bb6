//! Operations at scale: several instances under faults, broker outages,
//! shutdown with hanging receivers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "over a minute: run by make test-slow"]
async fn three_instances_deliver_everything_while_one_dies_and_another_joins() {
    let deployment = Deployment::new("scale").delivery("max_in_flight_per_subscription = 4");
    let mut a = Instance::start(&deployment).await;
    let b = Instance::start(&deployment).await;
    let c = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::from_millis(2)).await;
    a.api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["*"], None)
        .await;
    for i in [&a, &b, &c] {
        i.wait_assigned().await;
    }
    let total = 5000;
    let producer = producer();
    let types = [
        "points.earned",
        "points.redeemed",
        "tier.changed",
        "profile.updated",
    ];
    for n in 0..total {
        let t = types[n % 4];
        let e = event(t, &format!("evt_s{n}"), sample_data(t, n));
        produce_structured(&producer, &deployment.input, &e).await;
        if n == total / 3 {
            a.kill();
        }
    }
    let d = Instance::start(&deployment).await;
    eventually(
        "every event delivered at least once",
        Duration::from_secs(300),
        || receiver.distinct_ids().len() >= total,
    )
    .await;
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in receiver.received() {
        *per_id.entry(r.event_id()).or_default() += 1;
    }
    let duplicates: usize = per_id.values().map(|n| n - 1).sum();
    println!("5000 events over a kill and a join: {duplicates} duplicates");
    assert!(duplicates < total / 2, "{duplicates} duplicates");
    drop((b, c, d));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_hanging_receiver_exits_within_the_drain_bound_and_redelivers_later() {
    let deployment = Deployment::new("hang").delivery("timeout = \"60s\"");
    let mut first = Instance::start(&deployment).await;
    let hanging = Receiver::start(200, Duration::from_secs(3600)).await;
    let (id, _) = first
        .api_client(ADMIN_TOKEN)
        .subscribe(&hanging.url, &["points.earned"], None)
        .await;
    first.wait_assigned().await;
    let e = event("points.earned", "evt_hang", sample_data("points.earned", 1));
    produce_structured(&producer(), &deployment.input, &e).await;
    eventually("the request is hanging", Duration::from_secs(60), || {
        hanging.count() >= 1
    })
    .await;

    let started = Instant::now();
    let status = first.terminate();
    let took = started.elapsed();
    assert!(status.success(), "{status}");
    // shutdown_timeout is 5 s in tests; the process adds at most a few seconds.
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");

    // The receiver recovers (its owner points the subscription at a healthy
    // endpoint through an API-only instance); the unfinished delivery comes again.
    let healthy = Receiver::start(200, Duration::ZERO).await;
    let api_only = Instance::start_roles(&deployment, "api").await;
    let (status, _) = api_only
        .api_client(ADMIN_TOKEN)
        .call(
            "PATCH",
            &format!("/v1/subscriptions/{id}"),
            Some(serde_json::json!({"url": healthy.url})),
        )
        .await;
    assert_eq!(status, 200);
    let _second = Instance::start(&deployment).await;
    eventually("redelivered after restart", Duration::from_secs(60), || {
        healthy.distinct_ids().contains("evt_hang")
    })
    .await;
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("GET");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Polls `/readyz` until 200; returns whether a 503 came first that had
/// everything but the stage (Kafka, view) ready: readiness waited for it.
async fn ready_waited_for_stage(instance: &Instance, stage: &str) -> bool {
    let url = format!("{}/readyz", instance.api);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut waited = false;
    loop {
        let (status, body) = get(&url).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if status == 200 {
            assert_eq!(v["stages"][stage]["consuming"], true, "{v}");
            assert_eq!(v["stages"][stage]["joined"], true, "{v}");
            return waited;
        }
        if v["subscriptions_loaded"] == true
            && v["kafka_reachable"] == true
            && v["stages"][stage]["joined"] == false
        {
            waited = true;
        }
        assert!(Instant::now() < deadline, "never ready: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fan_out_only_and_deliver_only_instances_are_probed_and_scraped_on_the_ops_port() {
    let deployment = Deployment::new("split-roles");
    let mut stages = Vec::new();
    for stage in ["fanout", "deliver"] {
        let mut instance = Instance::spawn_roles(&deployment, stage);
        instance.wait_listening().await;
        // Ready only once its consumer has joined the group, not as soon
        // as Kafka answers and the view is loaded.
        assert!(
            ready_waited_for_stage(&instance, stage).await,
            "{stage}: /readyz was never 503 waiting for the group"
        );
        stages.push((stage, instance));
    }
    for (stage, instance) in &stages {
        let (status, body) = get(&format!("{}/healthz", instance.api)).await;
        assert_eq!((status, body.as_str()), (200, "ok\n"), "{stage} /healthz");
        let (status, body) = get(&format!("{}/readyz", instance.api)).await;
        assert_eq!(status, 200, "{stage} /readyz: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        // Only its own stage is reported, with the partitions it holds.
        let reported: Vec<&String> = v["stages"].as_object().unwrap().keys().collect();
        assert_eq!(reported, [stage], "{v}");
        assert!(v["stages"][stage]["partitions"].as_u64() > Some(0), "{v}");
        let (status, body) = get(&format!("{}/metrics", instance.api)).await;
        assert_eq!(status, 200, "{stage} /metrics");
        assert_eq!(
            sample_sum(&parse_metrics(&body), "rewardhooks_build_info", &[]),
            1.0,
            "{stage}: {body}"
        );
        // The ops port is not the API.
        let (status, _) = get(&format!("{}/v1/subscriptions", instance.api)).await;
        assert_eq!(status, 404, "{stage}: the ops port serves the API");
    }

    // The split roles deliver together, and the deliver-only instance's
    // /metrics counts what it delivered.
    let api = Instance::start_roles(&deployment, "api").await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    api.api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    // No wait: a subscription acknowledged before an event is produced
    // gets it (the read fence), on split roles too.
    produce_many(&deployment, "points.earned", "evt_split", 3).await;
    eventually("delivered by split roles", Duration::from_secs(60), || {
        receiver.distinct_ids().len() >= 3
    })
    .await;
    let deliver = &stages[1].1;
    let samples = metrics(deliver).await;
    assert!(
        sample_sum(
            &samples,
            "rewardhooks_deliveries_total",
            &[("outcome", "success")]
        ) >= 3.0,
        "deliver-only /metrics"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_beyond_the_partition_count_is_ready_with_no_partitions() {
    let mut deployment = Deployment::new("standby");
    deployment.partitions = 1;
    // Alone, the first instance holds every partition fan-out reads (the
    // input topic's and the operational topic's).
    let first = Instance::start_roles(&deployment, "fanout").await;
    let held = |body: &str| {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["stages"]["fanout"]["partitions"].as_u64().unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let total = loop {
        let n = held(&get(&format!("{}/readyz", first.api)).await.1);
        if n > 0 {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "the first instance got no partitions"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // One member more than partitions: at least one is a standby, and every
    // member is ready.
    let mut instances = vec![first];
    for _ in 0..total {
        instances.push(Instance::start_roles(&deployment, "fanout").await);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut bodies = Vec::new();
        for i in &instances {
            let (status, body) = get(&format!("{}/readyz", i.api)).await;
            assert_eq!(status, 200, "{body}");
            bodies.push(body);
        }
        let holds: Vec<u64> = bodies.iter().map(|b| held(b)).collect();
        if holds.iter().sum::<u64>() == total && holds.contains(&0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no standby with every partition held once: {bodies:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_joining_while_a_slow_endpoint_holds_a_backlog_duplicates_at_most_what_was_in_flight(
) {
    let per_subscription = 4;
    let deployment = Deployment::new("rebalance")
        .delivery(&format!(
            "max_in_flight_per_subscription = {per_subscription}"
        ))
        .delivery(r#"lane_max_wait = "120s""#);
    let a = Instance::start(&deployment).await;
    let b = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::from_millis(200)).await;
    let (sub, secret) = a
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    receiver.expect(&sub, &secret);
    for i in [&a, &b] {
        i.wait_assigned().await;
    }
    let total = 200;
    produce_many(&deployment, "points.earned", "evt_rb", total).await;
    let want: std::collections::BTreeSet<String> =
        (0..total).map(|n| format!("evt_rb{n}")).collect();
    // The backlog is in the lane (200 x 200 ms at 4 at a time: ~10 s)...
    eventually("deliveries flowing", Duration::from_secs(60), || {
        receiver.completed().len() >= 20
    })
    .await;
    // ...when a third instance joins and the partitions move.
    let c = Instance::start(&deployment).await;
    receiver
        .wait_completed(&sub, &want, Duration::from_secs(120))
        .await;
    // At the revoke, jobs already sending finish on the old owner and the
    // new owner reads from the committed offset, the oldest one in flight:
    // at most the in-flight attempts, and those that finished above the
    // oldest (fewer than the in-flight cap), are delivered twice. Jobs
    // still queued are dropped by the old owner (its partition is no
    // longer current), not sent twice.
    let bound = 2 * per_subscription;
    receiver.assert_delivered(&[(sub.as_str(), &want)], bound);
    println!(
        "{total} deliveries over a join: {} duplicates (bound {bound})",
        receiver.duplicates()
    );
    drop((a, b, c));
}
