//! Flow control: rate limits, circuit breaking, auto-disable, bounded memory.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// Most requests that arrived within any 1-second window.
fn busiest_second(times: &[Instant]) -> usize {
    let mut times = times.to_vec();
    times.sort();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t - times[i] < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn rate_limited_run(instances: usize) {
    let deployment = Deployment::new("rate");
    let mut running = Vec::new();
    for _ in 0..instances {
        running.push(Instance::start(&deployment).await);
    }
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let api = running[0].api_client("alice-token");
    let (id, _) = api.subscribe(&receiver.url, &["points.earned"], None).await;
    let (status, v) = api
        .call(
            "PATCH",
            &format!("/v1/subscriptions/{id}"),
            Some(json!({"rate_limit": {"per_second": 20, "burst": 5}})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    for i in &running {
        i.wait_assigned().await;
    }
    if instances > 1 {
        // Both instances share the partitions once the groups settle
        // (Tansu answers neither ListGroups nor DescribeGroups: each
        // instance's /readyz says what it holds).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut held = Vec::new();
            for i in &running {
                let body = readyz_until(i, Duration::ZERO, |_| true).await;
                for stage in ["fanout", "deliver"] {
                    held.push(body["stages"][stage]["partitions"].as_u64().unwrap_or(0));
                }
            }
            // Each holds partitions of both groups: both joined both.
            if held.iter().all(|n| *n > 0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the group never settled: {held:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    produce_many(&deployment, "points.earned", "evt_rl", 100).await;
    eventually("all 100 delivered", Duration::from_secs(90), || {
        receiver.distinct_ids().len() >= 100
    })
    .await;
    let times: Vec<Instant> = receiver.received().iter().map(|r| r.at).collect();
    let span = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    assert!(
        span >= Duration::from_millis(4000),
        "100 at 20/s with burst 5 took only {span:?}"
    );
    let busiest = busiest_second(&times);
    assert!(
        busiest <= 25,
        "{busiest} requests within one second (limit 20/s + burst 5)"
    );
    // The waits were counted (on whichever instances delivered), not just
    // exported as a name.
    let mut waits = 0.0;
    for instance in &running {
        waits += sample_sum(
            &metrics(instance).await,
            "rewardhooks_rate_limited_total",
            &[],
        );
    }
    assert!(waits > 0.0, "rate_limited_total counted no waits");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_spreads_a_burst_over_time() {
    rate_limited_run(1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_holds_with_two_instances() {
    rate_limited_run(2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timing_out_subscriber_opens_its_circuit_and_costs_the_healthy_one_nothing() {
    let deployment = Deployment::new("circuit")
        .delivery("timeout = \"1s\"")
        .delivery(
            "retry_schedule = [\"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]",
        )
        .delivery("max_in_flight_per_subscription = 1")
        .delivery("circuit_breaker_threshold = 3")
        .delivery("circuit_breaker_cooldown = \"6s\"");
    let instance = Instance::start(&deployment).await;
    let bad = Receiver::start(200, Duration::from_secs(10)).await;
    let healthy = Receiver::start(200, Duration::ZERO).await;
    let api = instance.api_client("alice-token");
    let (bad_id, _) = api.subscribe(&bad.url, &["tier.changed"], None).await;
    api.subscribe(&healthy.url, &["tier.changed"], None).await;
    instance.wait_assigned().await;
    produce_many(&deployment, "tier.changed", "evt_c", 20).await;
    eventually(
        "healthy subscriber got all 20",
        Duration::from_secs(30),
        || healthy.distinct_ids().len() >= 20,
    )
    .await;
    assert!(
        bad.count() <= 2,
        "the healthy one finished before the bad one's third timeout"
    );

    // Three timeouts open the circuit.
    let sub = api
        .get_until(
            &format!("/v1/subscriptions/{bad_id}"),
            Duration::from_secs(30),
            |v| v["circuit"] == "open",
        )
        .await;
    assert_eq!(sub["circuit"], "open", "{sub}");
    assert!(sub["failing_since"].is_string());
    let opened = Instant::now();
    let attempts_when_opened = bad.count();
    assert_eq!(attempts_when_opened, 3);
    let metrics = reqwest::get(format!("{}/metrics", instance.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample(&parse_metrics(&metrics), "rewardhooks_circuit_open", &[]),
        1.0,
        "{metrics}"
    );
    // No attempts during the cool-down, then a single probe.
    while opened.elapsed() < Duration::from_secs(4) {
        assert_eq!(
            bad.count(),
            attempts_when_opened,
            "no attempts while the circuit is open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually(
        "a probe after the cool-down",
        Duration::from_secs(30),
        || bad.count() > attempts_when_opened,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bad.count(), attempts_when_opened + 1, "one probe at a time");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_breaker_lets_one_probe_out_at_a_time_and_a_successful_probe_closes_it() {
    // Eight requests may run at once, so one probe at a time is the
    // breaker's doing, not the concurrency limit's. Every request takes
    // `delay` and fails (500) until the endpoint recovers.
    let delay = Duration::from_secs(2);
    let deployment = Deployment::new("probe")
        .delivery("timeout = \"10s\"")
        .delivery(
            "retry_schedule = [\"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]",
        )
        .delivery("max_in_flight_per_subscription = 8")
        .delivery(r#"lane_max_wait = "120s""#)
        .delivery("circuit_breaker_threshold = 3")
        .delivery("circuit_breaker_cooldown = \"4s\"");
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(500, delay).await;
    let api = instance.api_client("alice-token");
    let (id, secret) = api.subscribe(&receiver.url, &["tier.changed"], None).await;
    receiver.expect(&id, &secret);
    instance.wait_assigned().await;
    let total = 20;
    produce_many(&deployment, "tier.changed", "evt_pr", total).await;
    let sub = api
        .get_until(
            &format!("/v1/subscriptions/{id}"),
            Duration::from_secs(60),
            |v| v["circuit"] == "open",
        )
        .await;
    assert_eq!(sub["circuit"], "open", "{sub}");
    assert_eq!(
        sample(&metrics(&instance).await, "rewardhooks_circuit_open", &[]),
        1.0
    );
    // The failures that opened it have all been answered.
    eventually(
        "the opening failures answered",
        Duration::from_secs(30),
        || receiver.completed().len() == receiver.count(),
    )
    .await;
    let opened_with = receiver.count();
    assert!(
        opened_with >= 3,
        "the threshold's failures ran concurrently ({opened_with})"
    );
    // The first probe: once it is answered, nothing else arrived while it
    // was out, although seven more requests were allowed and a backlog
    // waited.
    eventually("a probe was answered", Duration::from_secs(60), || {
        receiver.completed().len() > opened_with
    })
    .await;
    let arrived = receiver.received();
    let probe = &arrived[opened_with];
    let during_probe = arrived[opened_with + 1..]
        .iter()
        .filter(|r| r.at < probe.at + delay)
        .count();
    assert_eq!(during_probe, 0, "one probe at a time");
    // The endpoint recovers: the next probe succeeds and closes the circuit,
    // and the backlog flows.
    receiver.set_status(200);
    let want: std::collections::BTreeSet<String> =
        (0..total).map(|n| format!("evt_pr{n}")).collect();
    receiver
        .wait_completed(&id, &want, Duration::from_secs(120))
        .await;
    let sub = api
        .get_until(
            &format!("/v1/subscriptions/{id}"),
            Duration::from_secs(30),
            |v| v["circuit"] == "closed",
        )
        .await;
    assert_eq!(sub["circuit"], "closed", "{sub}");
    assert_eq!(
        sample(&metrics(&instance).await, "rewardhooks_circuit_open", &[]),
        0.0
    );
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
    receiver.assert_delivered(&[(id.as_str(), &want)], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_failing_for_disable_after_is_disabled_and_can_be_re_enabled() {
    let deployment = Deployment::new("autodisable")
        .delivery(
            "retry_schedule = [\"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\", \"1s\"]",
        )
        .delivery("circuit_breaker_threshold = 0")
        .delivery("disable_after = \"3s\"");
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(500, Duration::ZERO).await;
    let api = instance.api_client("alice-token");
    let (id, _) = api.subscribe(&receiver.url, &["points.earned"], None).await;
    instance.wait_assigned().await;
    let e = event("points.earned", "evt_ad", sample_data("points.earned", 1));
    produce_structured(&producer(), &deployment.input, &e).await;
    let sub = api
        .get_until(
            &format!("/v1/subscriptions/{id}"),
            Duration::from_secs(30),
            |v| v["status"] == "disabled",
        )
        .await;
    assert_eq!(sub["status"], "disabled", "{sub}");
    assert!(
        sub["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("failing continuously"),
        "{sub}"
    );
    assert!(sub["disabled_at"].is_string());
    let (status, v) = api
        .call(
            "PATCH",
            &format!("/v1/subscriptions/{id}"),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["status"], "active");
    assert!(
        v.get("disabled_reason").is_none() && v.get("failing_since").is_none(),
        "{v}"
    );
    // Re-enabled, with the endpoint healthy again: deliveries resume.
    receiver.set_status(200);
    let e = event("points.earned", "evt_ad2", sample_data("points.earned", 2));
    produce_structured(&producer(), &deployment.input, &e).await;
    eventually(
        "a delivery after re-enabling",
        Duration::from_secs(60),
        || {
            receiver
                .delivered()
                .iter()
                .any(|r| r.event_id() == "evt_ad2")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "over a minute: run by make test-slow"]
async fn a_burst_of_50000_events_to_a_slow_receiver_keeps_memory_flat_and_loses_nothing() {
    let deployment = Deployment::new("burst")
        .delivery("retry_schedule = [\"1s\"]")
        .delivery("max_in_flight = 2000");
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::from_millis(2)).await;
    instance
        .api_client("alice-token")
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    instance.wait_assigned().await;
    let total = 50_000;
    let producer = producer();
    let mut pending = Vec::new();
    for n in 0..total {
        let e = event(
            "points.earned",
            &format!("evt_b{n}"),
            sample_data("points.earned", n),
        );
        let payload = serde_json::to_vec(&e).unwrap();
        let topic = deployment.input.clone();
        let p = producer.clone();
        pending.push(tokio::spawn(async move {
            p.send(
                rdkafka::producer::FutureRecord::<str, [u8]>::to(&topic).payload(&payload),
                rdkafka::util::Timeout::After(Duration::from_secs(60)),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
        }));
        if pending.len() >= 2000 {
            for p in pending.drain(..) {
                p.await.unwrap().expect("produce");
            }
        }
    }
    for p in pending.drain(..) {
        p.await.unwrap().expect("produce");
    }
    let mut peak = 0;
    eventually("all 50,000 delivered", Duration::from_secs(600), || {
        peak = peak.max(instance.peak_rss());
        receiver.distinct_ids().len() >= total
    })
    .await;
    let peak = peak.max(instance.peak_rss());
    let bound = 256 * 1024 * 1024;
    assert!(
        peak < bound,
        "peak RSS {} MiB over the 256 MiB bound",
        peak / (1024 * 1024)
    );
    println!("burst of {total}: peak RSS {} MiB", peak / (1024 * 1024));
}

/// Deliveries deferred (parked in a tier without an attempt) so far.
async fn deferred(instance: &Instance) -> f64 {
    counter_sum_or_zero(
        &metrics(instance).await,
        "rewardhooks_deliveries_deferred_total",
        &[],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lane_that_drains_keeps_a_burst_however_long_it_waits() {
    // 20 ms per request, two at once: 300 events drain in about 3 s, so
    // the tail of the burst waits far longer than lane_max_wait (the old
    // rule, age alone, parked most of it), yet well within the first tier.
    let deployment = Deployment::new("drains")
        .delivery(r#"lane_max_wait = "100ms""#)
        .delivery(r#"retry_schedule = ["30s"]"#)
        .delivery("max_in_flight_per_subscription = 2");
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::from_millis(20)).await;
    let (sub, secret) = instance
        .api_client("alice-token")
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    receiver.expect(&sub, &secret);
    instance.wait_assigned().await;
    let total = 300;
    produce_many(&deployment, "points.earned", "evt_dr", total).await;
    let want: std::collections::BTreeSet<String> =
        (0..total).map(|n| format!("evt_dr{n}")).collect();
    // Before the first retry tier could bring a parked one back.
    receiver
        .wait_completed(&sub, &want, Duration::from_secs(25))
        .await;
    assert_eq!(
        deferred(&instance).await,
        0.0,
        "a draining lane parked jobs"
    );
    assert_eq!(receiver.duplicates(), 0);
    assert!(receiver.bad_signatures().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_lane_parks_what_waited_too_long_and_delivers_it_later() {
    // One second per request, two at once: 40 events need 20 s, far more
    // than lane_max_wait and the first tier.
    let deployment = Deployment::new("slowlane")
        .delivery(r#"lane_max_wait = "1s""#)
        .delivery(r#"retry_schedule = ["1s", "2s"]"#)
        .delivery("max_in_flight_per_subscription = 2");
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::from_secs(1)).await;
    let (sub, secret) = instance
        .api_client("alice-token")
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    receiver.expect(&sub, &secret);
    instance.wait_assigned().await;
    produce_many(&deployment, "points.earned", "evt_sl", 40).await;
    let started = Instant::now();
    let mut parked = 0.0;
    while parked == 0.0 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        parked = deferred(&instance).await;
    }
    assert!(parked > 0.0, "nothing parked from a slow lane");
    let want: std::collections::BTreeSet<String> = (0..40).map(|n| format!("evt_sl{n}")).collect();
    receiver
        .wait_completed(&sub, &want, Duration::from_secs(180))
        .await;
    // Parked without an attempt: each event was attempted once, and succeeded.
    assert_eq!(receiver.count(), 40, "a parked job was attempted");
    assert!(receiver.bad_signatures().is_empty());
}
