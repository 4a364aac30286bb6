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
    let (points_id, points_secret) = api.subscribe(&points.url, &["points.*"], None).await;
    let (tp_id, tp_secret) = api
        .subscribe(
            &tier_and_profile.url,
            &["tier.changed", "profile.updated"],
            None,
        )
        .await;
    let (premium_id, premium_secret) = api
        .subscribe(
            &premium_tiers.url,
            &["*"],
            Some(json!({"type": "tier.changed", "data.new_tier": {"$in": ["gold", "platinum"]}})),
        )
        .await;
    points.expect(&points_id, &points_secret);
    tier_and_profile.expect(&tp_id, &tp_secret);
    premium_tiers.expect(&premium_id, &premium_secret);
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

    let expected = [
        (&points, points_id.as_str(), &want_points),
        (&tier_and_profile, tp_id.as_str(), &want_tp),
        (&premium_tiers, premium_id.as_str(), &want_premium),
    ];
    for (receiver, sub, want) in expected {
        receiver
            .wait_completed(sub, want, Duration::from_secs(90))
            .await;
    }
    // Once both groups committed to the topic ends nothing more can come:
    // a calm run delivers each (event, subscription) exactly once.
    wait_committed_to_end(&deployment, Duration::from_secs(30)).await;
    for (receiver, sub, want) in expected {
        receiver.assert_delivered(&[(sub, want)], 0);
        assert_eq!(receiver.cut_off(), 0);
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
    let (sub, secret) = instance
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["*"], None)
        .await;
    receiver.expect(&sub, &secret);
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

    let mut want: BTreeSet<String> = (0..5).map(|i| format!("evt_good_{i}")).collect();
    want.insert("evt_good_last".into());
    receiver
        .wait_completed(&sub, &want, Duration::from_secs(60))
        .await;
    wait_committed_to_end(&deployment, Duration::from_secs(30)).await;
    receiver.assert_delivered(&[(&sub, &want)], 0);

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
    // Each reason counted exactly once.
    let samples = parse_metrics(&metrics);
    for (_, reason) in &garbage {
        assert_eq!(
            sample_sum(
                &samples,
                "rewardhooks_events_invalid_total",
                &[("reason", reason)]
            ),
            1.0,
            "{reason}: {metrics}"
        );
    }
}

/// The lag gauge of one group and topic, summed over partitions; `None`
/// while the series does not exist.
fn lag(instance_metrics: &Samples, group: &str, topic: &str) -> Option<f64> {
    sample_sum_if_present(
        instance_metrics,
        "rewardhooks_consumer_lag",
        &[("group", group), ("topic", topic)],
    )
}

type Samples = [(String, std::collections::BTreeMap<String, String>, f64)];

#[tokio::test(flavor = "multi_thread")]
async fn every_event_is_delivered_after_a_sigkill_and_restart() {
    // What a kill can repeat is bounded by the configuration: a delivery's
    // offset is stored at most STORE_EVERY (200 ms) after it completes and
    // committed by the auto-commit (1 s), so at most the deliveries of one
    // store-and-commit window, plus those in flight, are sent again. At most
    // `per_sub` requests run at once and each takes at least `delay`.
    let per_sub = 2;
    let delay = Duration::from_millis(30);
    let window = Duration::from_millis(200 + 1000 + 800); // + scheduling slack on 2 cores
    let bound = per_sub * (window.as_millis() / delay.as_millis()) as usize + per_sub;
    // The backlog waits in its lane (not parked in a tier after 2 s), so
    // the kill finds deliveries in flight and queued in the lane.
    let deployment = Deployment::new("kill")
        .delivery(&format!("max_in_flight_per_subscription = {per_sub}"))
        .delivery(r#"lane_max_wait = "300s""#)
        .delivery(r#"retry_schedule = ["1s", "1s", "1s"]"#);
    let mut first = Instance::start(&deployment).await;
    // Slow enough that the kill lands mid-stream.
    let receiver = Receiver::start(200, delay).await;
    let (sub, secret) = first
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["*"], None)
        .await;
    receiver.expect(&sub, &secret);
    first.wait_assigned().await;
    let producer = producer();
    let total = 900;
    for n in 0..total {
        let t = TYPES[n % 4];
        let e = event(t, &format!("evt_k{n}"), sample_data(t, n));
        produce_structured(&producer, &deployment.input, &e).await;
    }
    // Kill once half was delivered, more than the bounds allow to be
    // repeated, so a delivery stage that stored no offsets would exceed them.
    eventually(
        "enough deliveries before the kill",
        Duration::from_secs(60),
        || receiver.delivered().len() >= total / 2,
    )
    .await;
    // Retries pending too: the endpoint fails for a moment, so the kill
    // finds failed deliveries waiting in the first retry tier (1 s).
    receiver.set_status(500);
    let failed = |r: &Receiver| r.completed().iter().filter(|x| x.status == 500).count();
    eventually("failures before the kill", Duration::from_secs(30), || {
        failed(&receiver) >= 5
    })
    .await;
    first.kill();
    receiver.set_status(200);
    let before = receiver.completed_ids(&sub).len();
    // Fan-out repeats what it had not committed at the kill (nothing commits
    // after it): those input records are fanned out again, on top of what
    // the delivery stage repeats (the configured bound above).
    let fanout = format!("{}.fanout", deployment.group);
    let refanned: i64 = group_positions(&deployment)
        .await
        .iter()
        .filter(|p| p.group == fanout)
        .map(|p| p.end - p.committed.unwrap_or(0))
        .sum();
    let bound = bound + refanned as usize;
    assert!(
        before < total,
        "the kill must land mid-stream ({before} delivered)"
    );

    let second = Instance::start(&deployment).await;
    let want: BTreeSet<String> = (0..total).map(|n| format!("evt_k{n}")).collect();
    receiver
        .wait_completed(&sub, &want, Duration::from_secs(120))
        .await;
    wait_committed_to_end(&deployment, Duration::from_secs(30)).await;
    receiver.assert_delivered(&[(&sub, &want)], bound);
    println!(
        "kill -9 after {before} of {total}: {} duplicates (bound {bound}), {} cut off",
        receiver.duplicates(),
        receiver.cut_off()
    );
    // The lag both groups report returns to zero.
    let deliveries = format!("{}.deliveries", deployment.prefix);
    let deliver = format!("{}.deliver", deployment.group);
    let mut seen = (None, None);
    for _ in 0..100 {
        let m = metrics(&second).await;
        seen = (
            lag(&m, &fanout, &deployment.input),
            lag(&m, &deliver, &deliveries),
        );
        if seen == (Some(0.0), Some(0.0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        seen,
        (Some(0.0), Some(0.0)),
        "lag of the fan-out and deliver groups"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_subscriber_does_not_delay_a_fast_one() {
    let deployment = Deployment::new("slow");
    let instance = Instance::start(&deployment).await;
    let api = instance.api_client("bob-token");
    let slow = Receiver::start(200, Duration::from_secs(5)).await;
    let fast = Receiver::start(200, Duration::ZERO).await;
    let (slow_id, slow_secret) = api.subscribe(&slow.url, &["tier.changed"], None).await;
    let (fast_id, fast_secret) = api.subscribe(&fast.url, &["tier.changed"], None).await;
    slow.expect(&slow_id, &slow_secret);
    fast.expect(&fast_id, &fast_secret);
    instance.wait_assigned().await;
    produce_many(&deployment, "tier.changed", "evt_s", 20).await;
    let want: BTreeSet<String> = (0..20).map(|n| format!("evt_s{n}")).collect();
    fast.wait_completed(&fast_id, &want, Duration::from_secs(60))
        .await;
    assert_eq!(
        slow.answered(),
        0,
        "the fast subscriber got everything before the slow one answered once"
    );
    slow.wait_completed(&slow_id, &want, Duration::from_secs(60))
        .await;
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
    fast.assert_delivered(&[(&fast_id, &want)], 0);
    slow.assert_delivered(&[(&slow_id, &want)], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_cleanly() {
    let deployment = Deployment::new("term");
    let mut instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::from_millis(200)).await;
    let (sub, secret) = instance
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    receiver.expect(&sub, &secret);
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
    assert!(
        !logs.contains("Stages did not stop in time"),
        "the drain hit its bound: {logs}"
    );
    // Draining means every request that left was answered, not cut off.
    assert_eq!(receiver.cut_off(), 0, "requests cut off by the shutdown");
    assert_eq!(receiver.completed().len(), receiver.count());
    // ...and committed: a restart sends the rest, nothing twice.
    let _second = Instance::start(&deployment).await;
    let want: BTreeSet<String> = (0..5).map(|n| format!("evt_t{n}")).collect();
    receiver
        .wait_completed(&sub, &want, Duration::from_secs(60))
        .await;
    wait_committed_to_end(&deployment, Duration::from_secs(30)).await;
    receiver.assert_delivered(&[(&sub, &want)], 0);
}
