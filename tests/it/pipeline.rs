//! The core pipeline end to end: real broker, real rewardhooks process, real
//! HTTP receivers, signatures checked with the standardwebhooks crate.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

const TYPES: [&str; 4] = [
    "points.earned",
    "points.redeemed",
    "tier.changed",
    "profile.updated",
];

#[tokio::test(flavor = "multi_thread")]
async fn events_reach_exactly_the_matching_subscribers_with_verified_signatures() {
    let deployment = Deployment::new("fanout");
    let instance = Instance::start(&deployment).await;
    let api = instance.api_client("alice-token");
    let points = Receiver::start(200, Duration::ZERO).await;
    let tier_and_profile = Receiver::start(204, Duration::ZERO).await;
    let premium_tiers = Receiver::start(202, Duration::ZERO).await;
    let (_, points_secret) = api.subscribe(&points.url, &["points.*"], None).await;
    let (_, tp_secret) = api
        .subscribe(
            &tier_and_profile.url,
            &["tier.changed", "profile.updated"],
            None,
        )
        .await;
    let (_, premium_secret) = api
        .subscribe(
            &premium_tiers.url,
            &["*"],
            Some(json!({"type": "tier.changed", "data.new_tier": {"$in": ["gold", "platinum"]}})),
        )
        .await;
    instance.wait_assigned().await;

    let producer = producer();
    let mut want_points = BTreeSet::new();
    let mut want_tp = BTreeSet::new();
    let mut want_premium = BTreeSet::new();
    for n in 0..1000 {
        let t = TYPES[n % 4];
        let id = format!("evt_{n}");
        let data = sample_data(t, n / 4);
        let e = event(t, &id, data.clone());
        if t.starts_with("points.") {
            want_points.insert(id.clone());
        } else {
            want_tp.insert(id.clone());
        }
        if t == "tier.changed" && ["gold", "platinum"].contains(&data["new_tier"].as_str().unwrap())
        {
            want_premium.insert(id.clone());
        }
        if n % 2 == 0 {
            produce_structured(&producer, &deployment.input, &e).await;
        } else {
            produce_binary(&producer, &deployment.input, &e).await;
        }
    }
    assert_eq!(want_points.len(), 500);
    assert!(!want_premium.is_empty() && want_premium.len() < want_tp.len());

    for (receiver, want) in [
        (&points, &want_points),
        (&tier_and_profile, &want_tp),
        (&premium_tiers, &want_premium),
    ] {
        eventually(
            "every matching event delivered",
            Duration::from_secs(90),
            || receiver.distinct_ids().len() >= want.len(),
        )
        .await;
        assert_eq!(
            &receiver.distinct_ids(),
            want,
            "exactly the matching events"
        );
    }
    for (receiver, secret) in [
        (&points, &points_secret),
        (&tier_and_profile, &tp_secret),
        (&premium_tiers, &premium_secret),
    ] {
        for r in receiver.received() {
            r.verify(secret)
                .unwrap_or_else(|e| panic!("signature of {} does not verify: {e}", r.event_id()));
            let body = r.json();
            assert_eq!(body["id"].as_str().unwrap(), r.event_id());
            assert!(body["timestamp"].is_string() && body["data"].is_object());
            assert_eq!(
                r.headers["content-type"], "application/json",
                "content type"
            );
            assert!(r.headers["user-agent"]
                .to_str()
                .unwrap()
                .starts_with("rewardhooks/"));
        }
    }
    // The payload filter saw the body: only premium tiers reached it.
    for r in premium_tiers.received() {
        let tier = r.json()["data"]["new_tier"].as_str().unwrap().to_string();
        assert!(tier == "gold" || tier == "platinum", "{tier}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_records_go_to_the_invalid_topic_and_valid_events_still_flow() {
    let deployment = Deployment::new("invalid");
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    instance
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["*"], None)
        .await;
    instance.wait_assigned().await;
    let producer = producer();
    let oversized = json!({"id":"evt_big","type":"points.earned","data":{"customer_id":"c","points":1,"reason":"x".repeat(300_000),"balance":1}});
    let garbage: Vec<(Vec<u8>, &str)> = vec![
        (b"this is not json".to_vec(), "not_json"),
        (br#"{"type":"points.earned","data":{}}"#.to_vec(), "missing_field"),
        (
            br#"{"id":"evt_bad","type":"points.earned","data":{"customer_id":"c","points":-5,"reason":"r","balance":1}}"#.to_vec(),
            "schema_violation",
        ),
        (br#"{"id":"evt_u","type":"coupon.issued","data":{}}"#.to_vec(), "unknown_type"),
        (serde_json::to_vec(&oversized).unwrap(), "too_large"),
    ];
    for (i, (payload, _)) in garbage.iter().enumerate() {
        let good = event(
            "points.earned",
            &format!("evt_good_{i}"),
            sample_data("points.earned", i),
        );
        produce_structured(&producer, &deployment.input, &good).await;
        produce_raw(&producer, &deployment.input, payload).await;
    }
    let last = event(
        "tier.changed",
        "evt_good_last",
        sample_data("tier.changed", 2),
    );
    produce_structured(&producer, &deployment.input, &last).await;

    eventually("valid events delivered", Duration::from_secs(60), || {
        receiver.distinct_ids().len() >= 6
    })
    .await;
    let mut want: BTreeSet<String> = (0..5).map(|i| format!("evt_good_{i}")).collect();
    want.insert("evt_good_last".into());
    assert_eq!(receiver.distinct_ids(), want);

    let invalid = read_topic(
        &format!("{}.invalid", deployment.prefix),
        deployment.partitions,
        garbage.len(),
        Duration::from_secs(30),
    )
    .await;
    let mut reasons: Vec<String> = invalid
        .iter()
        .map(|r| {
            r.headers["rewardhooks-error"]
                .split(':')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    reasons.sort();
    let mut expected: Vec<String> = garbage.iter().map(|(_, r)| r.to_string()).collect();
    expected.sort();
    assert_eq!(reasons, expected);
    // The original record is kept whole for inspection.
    assert!(invalid.iter().any(|r| r.payload == b"this is not json"));

    let metrics = reqwest::get(format!("{}/metrics", instance.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rewardhooks_events_invalid_total{reason=\"not_json\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_is_delivered_after_a_sigkill_and_restart() {
    let deployment = Deployment::new("kill").delivery("max_in_flight_per_subscription = 2");
    let mut first = Instance::start(&deployment).await;
    // Slow enough that the kill lands mid-stream.
    let receiver = Receiver::start(200, Duration::from_millis(30)).await;
    first
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["*"], None)
        .await;
    first.wait_assigned().await;
    let producer = producer();
    let total = 300;
    for n in 0..total {
        let t = TYPES[n % 4];
        let e = event(t, &format!("evt_k{n}"), sample_data(t, n));
        produce_structured(&producer, &deployment.input, &e).await;
    }
    eventually(
        "some deliveries before the kill",
        Duration::from_secs(60),
        || receiver.count() >= 40,
    )
    .await;
    first.kill();
    let before = receiver.distinct_ids().len();
    assert!(
        before < total,
        "the kill must land mid-stream ({before} delivered)"
    );

    let second = Instance::start(&deployment).await;
    eventually(
        "every event delivered at least once",
        Duration::from_secs(120),
        || receiver.distinct_ids().len() >= total,
    )
    .await;
    let want: BTreeSet<String> = (0..total).map(|n| format!("evt_k{n}")).collect();
    assert_eq!(receiver.distinct_ids(), want);
    drop(second);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_subscriber_does_not_delay_a_fast_one() {
    let deployment = Deployment::new("slow");
    let instance = Instance::start(&deployment).await;
    let api = instance.api_client("bob-token");
    let slow = Receiver::start(200, Duration::from_secs(5)).await;
    let fast = Receiver::start(200, Duration::ZERO).await;
    api.subscribe(&slow.url, &["tier.changed"], None).await;
    api.subscribe(&fast.url, &["tier.changed"], None).await;
    instance.wait_assigned().await;
    produce_many(&deployment, "tier.changed", "evt_s", 20).await;
    eventually(
        "fast subscriber got all 20",
        Duration::from_secs(60),
        || fast.distinct_ids().len() >= 20,
    )
    .await;
    assert_eq!(
        slow.answered(),
        0,
        "the fast subscriber got everything before the slow one answered once"
    );
    eventually(
        "slow subscriber got all 20 too",
        Duration::from_secs(60),
        || slow.distinct_ids().len() >= 20,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_cleanly() {
    let deployment = Deployment::new("term");
    let mut instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::from_millis(200)).await;
    instance
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    instance.wait_assigned().await;
    produce_many(&deployment, "points.earned", "evt_t", 5).await;
    eventually("first delivery in flight", Duration::from_secs(60), || {
        receiver.count() >= 1
    })
    .await;
    let status = instance.terminate();
    assert!(status.success(), "exit status {status}");
    let logs = instance.logs.lock().unwrap().join("\n");
    assert!(logs.contains("Stopped."), "{logs}");
}
