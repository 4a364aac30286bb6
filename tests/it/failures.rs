//! Failure paths: nothing lost, one bad record or endpoint never hurts
//! anyone else, and waiting costs writes only when time passes a tier.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;
use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn oversized_input_records_go_to_the_invalid_topic_as_references_and_fan_out_goes_on() {
    let deployment = Deployment::new("oversized");
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, std::time::Duration::ZERO).await;
    instance
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    instance.wait_assigned().await;
    // A producer that takes records over librdkafka's default 1 MB limit,
    // as a Java producer with a raised max.request.size would.
    let big_producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    for _ in 0..4 {
        let mut event = event("points.earned", "evt_big", sample_data("points.earned", 0));
        event["data"]["padding"] = json!("x".repeat(1_040_000 - 200));
        let mut bytes = serde_json::to_vec(&event).unwrap();
        bytes.resize(1_040_000, b' ');
        produce_raw(&big_producer, &deployment.input, &bytes).await;
    }
    produce_many(&deployment, "points.earned", "evt_after_big", 40).await;
    eventually(
        "the 40 events behind the oversized records delivered",
        Duration::from_secs(30),
        || receiver.distinct_ids().len() >= 40,
    )
    .await;
    let invalid = read_topic(
        &format!("{}.invalid", deployment.prefix),
        deployment.partitions,
        4,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(invalid.len(), 4, "each oversized record accounted for");
    for record in &invalid {
        assert!(
            record.headers["rewardhooks-error"].contains("too_large"),
            "{:?}",
            record.headers
        );
        let reference: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
        assert_eq!(reference["size"], 1_040_000, "{reference}");
        assert_eq!(reference["reason"], "too_large");
        assert_eq!(reference["source"]["topic"], deployment.input.as_str());
        assert!(reference["head"].as_str().unwrap().len() <= 1024);
        assert!(record.payload.len() < 4096, "a reference, not a copy");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gone_endpoint_dead_letters_every_pending_delivery_and_they_replay_after_re_enabling() {
    // No circuit breaker here: an open circuit would rightly hold the
    // replayed deliveries for its cool-down, which is not what this pins.
    let deployment = Deployment::new("gone")
        .delivery(r#"retry_schedule = ["2s", "2s", "2s"]"#)
        .delivery("circuit_breaker_threshold = 0");
    let instance = Instance::start(&deployment).await;
    let script = [(500, None); 8];
    let receiver = Receiver::scripted(&script, 410, Duration::ZERO).await;
    let api = instance.api_client("alice-token");
    let (sub_id, _) = api.subscribe(&receiver.url, &["points.earned"], None).await;
    instance.wait_assigned().await;
    produce_many(&deployment, "points.earned", "evt_gone", 8).await;
    let path = format!("/v1/dead-letters?subscription_id={sub_id}");
    let listed = api
        .get_until(&path, Duration::from_secs(60), |v| {
            v["data"].as_array().is_some_and(|d| d.len() >= 8)
        })
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 8, "{listed}");
    let dlq = read_topic(
        &format!("{}.dlq", deployment.prefix),
        deployment.partitions,
        8,
        Duration::from_secs(30),
    )
    .await;
    let reasons: Vec<&str> = dlq
        .iter()
        .map(|r| r.headers["rewardhooks-dead-reason"].as_str())
        .collect();
    assert!(reasons.contains(&"gone"), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| *r == "gone" || *r == "subscription_disabled"),
        "{reasons:?}"
    );
    let (_, sub) = api
        .call("GET", &format!("/v1/subscriptions/{sub_id}"), None)
        .await;
    assert_eq!(sub["status"], "disabled", "{sub}");

    // The owner fixes the endpoint, re-enables, and replays: all 8 arrive.
    receiver.set_status(200);
    let (status, v) = api
        .call(
            "PATCH",
            &format!("/v1/subscriptions/{sub_id}"),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let before = receiver.count();
    let (status, v) = api
        .call(
            "POST",
            "/v1/dead-letters/replay",
            Some(json!({"subscription_id": sub_id})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["replayed"], 8, "{v}");
    eventually("8 replayed deliveries", Duration::from_secs(30), || {
        receiver.received()[before..]
            .iter()
            .filter(|r| r.event_id().starts_with("evt_gone"))
            .map(|r| r.event_id())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == 8
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_circuit_parks_its_backlog_once_instead_of_rewriting_it() {
    let deployment = Deployment::new("churn")
        .delivery(r#"retry_schedule = ["1s", "1m", "10m"]"#)
        .delivery("circuit_breaker_threshold = 5")
        .delivery(r#"circuit_breaker_cooldown = "1m""#);
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(500, Duration::ZERO).await;
    instance
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    instance.wait_assigned().await;
    let pending = 100.0;
    produce_many(&deployment, "points.earned", "evt_churn", 100).await;
    let writes = |samples: &[(String, std::collections::BTreeMap<String, String>, f64)]| {
        sample_sum(samples, "rewardhooks_retries_scheduled_total", &[])
            + sample_sum(samples, "rewardhooks_deliveries_deferred_total", &[])
    };
    // Every pending delivery was written to a tier at least once...
    let mut seen = 0.0;
    for _ in 0..300 {
        seen = writes(&metrics(&instance).await);
        if seen >= pending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen >= pending,
        "{seen} tier writes for {pending} deliveries"
    );
    // ...and 20 s of a down endpoint later (twenty first-tier delays; a
    // bound over time, so a fixed wait), each
    // has been written at most 3 times: parked for the cool-down, not
    // rewritten every second.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let seen = writes(&metrics(&instance).await);
    assert!(
        seen <= 3.0 * pending,
        "{seen} tier writes for {pending} pending deliveries in 20 s"
    );
    // Parking spends no attempts: the endpoint saw the threshold's failures
    // and their first retries, not one request per write.
    assert!(receiver.count() <= 20, "{} attempts", receiver.count());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_input_topic_created_after_start_is_read_within_seconds() {
    let mut deployment = Deployment::new("late");
    deployment.create_input = false;
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    instance
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    let names_input = |body: &serde_json::Value| {
        body["missing_input_topics"]
            .as_array()
            .is_some_and(|m| m.iter().any(|t| t == deployment.input.as_str()))
    };
    let body = readyz_until(&instance, Duration::from_secs(20), names_input).await;
    assert!(
        names_input(&body),
        "/readyz names the missing input topic: {body}"
    );
    create_topic(&deployment.input, deployment.partitions).await;
    produce_many(&deployment, "points.earned", "evt_late", 20).await;
    eventually(
        "events of a late input topic delivered",
        Duration::from_secs(30),
        || receiver.distinct_ids().len() >= 20,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_subscription_holds_its_deliveries_and_they_flow_on_resume() {
    let deployment = Deployment::new("pause").delivery(r#"retry_schedule = ["1s", "2s"]"#);
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let api = instance.api_client(ADMIN_TOKEN);
    let (sub_id, secret) = api.subscribe(&receiver.url, &["points.earned"], None).await;
    instance.wait_assigned().await;
    let path = format!("/v1/subscriptions/{sub_id}");
    let (status, v) = api
        .call("PATCH", &path, Some(json!({"status": "paused"})))
        .await;
    assert_eq!(status, 200, "{v}");
    produce_many(&deployment, "points.earned", "evt_held", 5).await;
    // Held: parked, not attempted, not dropped. (This proves an absence, so
    // it waits a fixed time: several first-tier delays.)
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(receiver.count(), 0, "nothing is sent while paused");
    // A counter with no series yet has counted nothing.
    let dropped = counter_sum_or_zero(
        &metrics(&instance).await,
        "rewardhooks_deliveries_dropped_total",
        &[],
    );
    assert_eq!(dropped, 0.0, "held, not dropped");
    let (status, v) = api
        .call("PATCH", &path, Some(json!({"status": "active"})))
        .await;
    assert_eq!(status, 200, "{v}");
    eventually(
        "held deliveries flow on resume",
        Duration::from_secs(30),
        || receiver.distinct_ids().len() == 5,
    )
    .await;
    for r in receiver.received() {
        r.verify(&secret).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_variables_in_the_environment_are_ignored() {
    // A "proxy" that records every connection made to it.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = proxy.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    let mut deployment = Deployment::new("proxyenv");
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        deployment.env.push((var.to_string(), proxy_url.clone()));
    }
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    instance
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    instance.wait_assigned().await;
    produce_many(&deployment, "points.earned", "evt_direct", 3).await;
    eventually("delivered directly", Duration::from_secs(30), || {
        receiver.distinct_ids().len() == 3
    })
    .await;
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the proxy from the environment was used"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_owners_slow_endpoints_leave_another_owner_fast() {
    // Few permits, so the slow owner could take them all.
    let deployment = Deployment::new("fair")
        .delivery("max_concurrent_requests = 8")
        .delivery(r#"timeout = "30s""#);
    let instance = Instance::start(&deployment).await;
    let slow = Receiver::start(200, Duration::from_secs(3)).await;
    let fast = Receiver::start(200, Duration::ZERO).await;
    let alice = instance.api_client("alice-token");
    for _ in 0..16 {
        alice.subscribe(&slow.url, &["points.earned"], None).await;
    }
    instance
        .api_client("bob-token")
        .subscribe(&fast.url, &["tier.changed"], None)
        .await;
    instance.wait_assigned().await;
    // 16 subscriptions x 10 events = 160 slow requests want the 8 permits.
    produce_many(&deployment, "points.earned", "evt_slow", 10).await;
    // Alice's slow requests hold the permits before Bob's events come.
    eventually("the slow endpoint busy", Duration::from_secs(30), || {
        slow.count() >= 4
    })
    .await;
    let producer = producer();
    let mut sent = Vec::new();
    for n in 0..10 {
        let id = format!("evt_fast{n}");
        let e = event("tier.changed", &id, sample_data("tier.changed", n));
        sent.push((id, std::time::Instant::now()));
        produce_structured(&producer, &deployment.input, &e).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually("bob's webhooks arrive", Duration::from_secs(30), || {
        fast.distinct_ids().len() == 10
    })
    .await;
    let got = fast.received();
    let mut latencies: Vec<Duration> = sent
        .iter()
        .map(|(id, at)| {
            got.iter()
                .find(|r| &r.event_id() == id)
                .map(|r| r.at.saturating_duration_since(*at))
                .unwrap()
        })
        .collect();
    latencies.sort();
    assert!(
        latencies[latencies.len() - 1] < Duration::from_secs(1),
        "bob's slowest webhook took {:?} behind alice's slow endpoints",
        latencies.last()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_can_be_written_nowhere_stops_its_partition_and_readyz_says_why() {
    // A producer limit so small that an event's delivery record, and even
    // the reference that would go to the dead-letter topic instead, are
    // refused: the input partition must stop, not skip the event.
    let mut deployment = Deployment::new("stuck");
    deployment.env.push((
        "REWARDHOOKS__KAFKA__PRODUCER__MESSAGE__MAX__BYTES".into(),
        "1000".into(),
    ));
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    instance
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    instance.wait_assigned().await;
    let mut data = sample_data("points.earned", 0);
    data["note"] = json!("x".repeat(3000));
    let e = event("points.earned", "evt_nowhere", data);
    produce_structured(&producer(), &deployment.input, &e).await;
    let body = readyz_until(&instance, Duration::from_secs(30), |body| {
        body["stuck_partitions"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    })
    .await;
    let stuck = &body["stuck_partitions"][0];
    assert_eq!(stuck["topic"], deployment.input.as_str(), "{body}");
    assert!(
        stuck["reason"]
            .as_str()
            .unwrap_or("")
            .contains("cannot write"),
        "{body}"
    );
    let gauge = sample_sum(
        &metrics(&instance).await,
        "rewardhooks_partition_stuck",
        &[("topic", deployment.input.as_str())],
    );
    assert_eq!(gauge, 1.0);
    assert_eq!(receiver.count(), 0, "nothing skipped past it");
}
