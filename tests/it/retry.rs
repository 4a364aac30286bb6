//! Retries through delay topics, dead letters and replay.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

fn schedule(delays: &[&str]) -> String {
    let quoted: Vec<String> = delays.iter().map(|d| format!("\"{d}\"")).collect();
    format!("retry_schedule = [{}]", quoted.join(", "))
}

async fn start_with_schedule(name: &str, delays: &[&str]) -> (Deployment, Instance) {
    let deployment = Deployment::new(name).delivery(&schedule(delays));
    let instance = Instance::start(&deployment).await;
    (deployment, instance)
}

async fn send_one(deployment: &Deployment, id: &str) {
    let e = event("points.earned", id, sample_data("points.earned", 1));
    produce_structured(&producer(), &deployment.input, &e).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_endpoint_gets_the_event_again_on_the_schedule() {
    let (deployment, instance) = start_with_schedule("sched", &["1s", "2s", "4s"]).await;
    let receiver = Receiver::scripted(&[(500, None), (503, None)], 200, Duration::ZERO).await;
    let (_, secret) = instance
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    instance.wait_assigned().await;
    send_one(&deployment, "evt_r1").await;
    eventually("third try", Duration::from_secs(60), || {
        receiver.count() >= 3
    })
    .await;
    let got = receiver.received();
    assert!(
        got.iter().all(|r| r.event_id() == "evt_r1"),
        "same webhook-id every time"
    );
    for r in &got {
        r.verify(&secret).unwrap();
    }
    let gap1 = got[1].at - got[0].at;
    let gap2 = got[2].at - got[1].at;
    assert!(
        gap1 >= Duration::from_millis(900) && gap1 < Duration::from_secs(6),
        "{gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(1900) && gap2 < Duration::from_secs(7),
        "{gap2:?}"
    );
    // Succeeded on the third try: nothing is left in any tier, and no fourth.
    wait_committed_to_end(&deployment, Duration::from_secs(30)).await;
    assert_eq!(receiver.count(), 3);
    assert_eq!(receiver.delivered().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_always_failing_endpoint_is_dead_lettered_and_replay_delivers_it() {
    let (deployment, instance) = start_with_schedule("dlq", &["1s", "1s", "2s"]).await;
    let receiver = Receiver::start(500, Duration::ZERO).await;
    let api = instance.api_client("alice-token");
    let (sub_id, _) = api.subscribe(&receiver.url, &["points.earned"], None).await;
    instance.wait_assigned().await;
    send_one(&deployment, "evt_dead").await;

    let path = format!("/v1/dead-letters?subscription_id={sub_id}");
    let listed = api
        .get_until(&path, Duration::from_secs(30), |v| {
            v["data"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
    let letter = &listed["data"][0];
    assert_eq!(letter["event_id"], "evt_dead", "{listed}");
    assert_eq!(letter["attempts"], 4, "1 + 3 tries: {listed}");
    assert_eq!(letter["subscription_id"], sub_id.as_str());
    assert!(letter["last_error"].as_str().unwrap().contains("500"));
    assert!(letter["dead_at"].is_string() && letter["first_attempt_at"].is_string());
    assert_eq!(receiver.count(), 4);

    let dlq = read_topic(
        &format!("{}.dlq", deployment.prefix),
        deployment.partitions,
        1,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].headers["rewardhooks-attempt"], "4");
    assert_eq!(dlq[0].headers["rewardhooks-last-status"], "500");
    let body: serde_json::Value = serde_json::from_slice(&dlq[0].payload).unwrap();
    assert_eq!(
        body["id"], "evt_dead",
        "the dead letter keeps the outbound body"
    );

    // Another owner cannot see or replay it.
    let bob = instance.api_client("bob-token");
    assert_eq!(bob.call("GET", &path, None).await.0, 404);
    let (status, _) = bob
        .call(
            "POST",
            "/v1/dead-letters/replay",
            Some(json!({"subscription_id": sub_id})),
        )
        .await;
    assert_eq!(status, 404);

    receiver.set_status(200);
    let (status, v) = api
        .call(
            "POST",
            "/v1/dead-letters/replay",
            Some(json!({"subscription_id": sub_id})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["replayed"], 1);
    eventually("replayed delivery arrives", Duration::from_secs(30), || {
        receiver.count() >= 5
    })
    .await;
    assert_eq!(receiver.received()[4].event_id(), "evt_dead");
    // The replay wrote a fresh delivery (attempt 0, same event) to the
    // deliveries topic and a marker (`rewardhooks-replayed`, no value) to
    // the DLQ. Both topics read to their ends.
    let dlq = read_topic(
        &format!("{}.dlq", deployment.prefix),
        deployment.partitions,
        2,
        Duration::from_secs(20),
    )
    .await;
    let markers: Vec<_> = dlq
        .iter()
        .filter(|r| r.headers.contains_key("rewardhooks-replayed"))
        .collect();
    assert_eq!(markers.len(), 1, "one replay marker: {dlq:?}");
    assert!(markers[0].payload.is_empty(), "a marker has no value");
    let deliveries: Vec<_> = read_topic(
        &format!("{}.deliveries", deployment.prefix),
        deployment.partitions,
        2,
        Duration::from_secs(20),
    )
    .await
    .into_iter()
    .filter(|r| r.headers.get("rewardhooks-event-id").map(String::as_str) == Some("evt_dead"))
    .collect();
    assert_eq!(deliveries.len(), 2, "fanned out once, replayed once");
    for d in &deliveries {
        assert_eq!(
            d.headers
                .get("rewardhooks-attempt")
                .map_or("0", String::as_str),
            "0",
            "a replay starts over at attempt 0: {:?}",
            d.headers
        );
        let body: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
        assert_eq!(body["id"], "evt_dead", "the same event and body");
    }

    // Not replayed twice unless asked for explicitly.
    let (_, v) = api
        .call(
            "POST",
            "/v1/dead-letters/replay",
            Some(json!({"subscription_id": sub_id})),
        )
        .await;
    assert_eq!(v["replayed"], 0, "{v}");
    let id = letter["id"].as_str().unwrap();
    let (_, v) = api
        .call(
            "POST",
            "/v1/dead-letters/replay",
            Some(json!({"subscription_id": sub_id, "ids": [id]})),
        )
        .await;
    assert_eq!(v["replayed"], 1, "{v}");
    eventually("explicit replay arrives", Duration::from_secs(30), || {
        receiver.count() >= 6
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gone_endpoint_is_tried_once_then_disabled() {
    let (deployment, instance) = start_with_schedule("gone", &["1s", "2s"]).await;
    let receiver = Receiver::start(410, Duration::ZERO).await;
    let api = instance.api_client("alice-token");
    let (sub_id, _) = api.subscribe(&receiver.url, &["points.earned"], None).await;
    instance.wait_assigned().await;
    send_one(&deployment, "evt_gone").await;
    let sub = api
        .get_until(
            &format!("/v1/subscriptions/{sub_id}"),
            Duration::from_secs(30),
            |v| v["status"] == "disabled",
        )
        .await;
    assert_eq!(sub["status"], "disabled");
    assert!(sub["disabled_reason"].as_str().unwrap().contains("410"));
    let dlq = read_topic(
        &format!("{}.dlq", deployment.prefix),
        deployment.partitions,
        1,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(dlq.len(), 1);
    send_one(&deployment, "evt_gone_2").await;
    // A disabled subscription matches no new event: once both groups
    // committed to the ends, nothing for it is pending anywhere.
    wait_committed_to_end(&deployment, Duration::from_secs(30)).await;
    assert_eq!(
        receiver.count(),
        1,
        "tried once, no retries, nothing after disabling"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_on_429_is_honoured() {
    let (deployment, instance) = start_with_schedule("ra", &["1s", "2s", "4s"]).await;
    let receiver = Receiver::scripted(&[(429, Some("3"))], 200, Duration::ZERO).await;
    instance
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    instance.wait_assigned().await;
    send_one(&deployment, "evt_ra").await;
    eventually("second try", Duration::from_secs(60), || {
        receiver.count() >= 2
    })
    .await;
    let got = receiver.received();
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_secs(3), "waited {gap:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_retry_survives_sigkill_and_a_rebalance() {
    let deployment = Deployment::new("survive").delivery(&schedule(&["8s"]));
    let mut first = Instance::start(&deployment).await;
    let receiver = Receiver::scripted(&[(500, None)], 200, Duration::ZERO).await;
    first
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    first.wait_assigned().await;
    send_one(&deployment, "evt_survive").await;
    eventually("first try", Duration::from_secs(60), || {
        receiver.count() >= 1
    })
    .await;
    let tier = read_topic(
        &format!("{}.retry.8s", deployment.prefix),
        deployment.partitions,
        1,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(tier.len(), 1, "the retry waits in its tier");
    assert_eq!(tier[0].headers["rewardhooks-attempt"], "1");
    assert!(tier[0].headers.contains_key("rewardhooks-due"));

    let second = Instance::start(&deployment).await;
    first.kill();
    eventually(
        "retry delivered by the second instance",
        Duration::from_secs(90),
        || receiver.count() >= 2,
    )
    .await;
    let got = receiver.received();
    assert_eq!(got[1].event_id(), "evt_survive");
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(7900),
        "not before its due time"
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread")]
async fn records_in_a_later_tier_do_not_block_earlier_tiers_or_fresh_deliveries() {
    // One partition per topic: everything shares the same partitions.
    let mut deployment = Deployment::new("tiers").delivery(&schedule(&["1s", "60s"]));
    deployment.partitions = 1;
    let instance = Instance::start(&deployment).await;
    let api = instance.api_client(ADMIN_TOKEN);
    let stuck = Receiver::start(500, Duration::ZERO).await;
    let flaky = Receiver::scripted(&[(500, None)], 200, Duration::ZERO).await;
    let healthy = Receiver::start(200, Duration::ZERO).await;
    api.subscribe(&stuck.url, &["points.earned"], None).await;
    api.subscribe(&flaky.url, &["tier.changed"], None).await;
    api.subscribe(&healthy.url, &["profile.updated"], None)
        .await;
    instance.wait_assigned().await;
    let producer = producer();
    send_one(&deployment, "evt_stuck").await;
    eventually(
        "stuck endpoint tried twice (now waiting 60s)",
        Duration::from_secs(60),
        || stuck.count() >= 2,
    )
    .await;
    let e = event("tier.changed", "evt_flaky", sample_data("tier.changed", 1));
    produce_structured(&producer, &deployment.input, &e).await;
    let e = event(
        "profile.updated",
        "evt_fresh",
        sample_data("profile.updated", 1),
    );
    produce_structured(&producer, &deployment.input, &e).await;
    eventually(
        "first-tier retry and fresh delivery both done",
        Duration::from_secs(30),
        || flaky.count() >= 2 && healthy.count() >= 1,
    )
    .await;
    assert_eq!(stuck.count(), 2, "the 60s tier record is still waiting");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_replay_command_re_enqueues_a_subscriptions_dead_letters() {
    let (deployment, instance) = start_with_schedule("cli", &["1s"]).await;
    let receiver = Receiver::start(503, Duration::ZERO).await;
    let (sub_id, _) = instance
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    instance.wait_assigned().await;
    send_one(&deployment, "evt_cli").await;
    let dlq = read_topic(
        &format!("{}.dlq", deployment.prefix),
        deployment.partitions,
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(receiver.count(), 2);
    receiver.set_status(200);
    let output =
        tokio::task::block_in_place(|| instance.command(&["replay", "--subscription", &sub_id]));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("replayed 1 dead letters"), "{stdout}");
    eventually("replayed delivery arrives", Duration::from_secs(30), || {
        receiver.count() >= 3
    })
    .await;
    assert_eq!(receiver.received()[2].event_id(), "evt_cli");
    let replay = |args: &[&str]| {
        let mut all = vec!["replay", "--subscription", sub_id.as_str()];
        all.extend_from_slice(args);
        let output = tokio::task::block_in_place(|| instance.command(&all));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // Replayed once: a plain replay leaves it (the marker says so)...
    let stdout = replay(&[]);
    assert!(stdout.contains("replayed 0 dead letters"), "{stdout}");
    // ...`--since` a later time selects nothing, even with `--again`...
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let stdout = replay(&["--since", &later, "--again"]);
    assert!(stdout.contains("replayed 0 dead letters"), "{stdout}");
    // ...and `--since 1h --again` sends it once more.
    let stdout = replay(&["--since", "1h", "--again"]);
    assert!(stdout.contains("replayed 1 dead letters"), "{stdout}");
    eventually("replayed again", Duration::from_secs(30), || {
        receiver.count() >= 4
    })
    .await;
    assert_eq!(receiver.received()[3].event_id(), "evt_cli");
}
