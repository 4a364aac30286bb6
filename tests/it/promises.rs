//! Documented behaviour that had no test (issue 19): each test pins one
//! promise of docs/guarantees.md.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_to_start_without_a_secrets_key() {
    let mut deployment = Deployment::new("nokey");
    deployment.env.push((
        "REWARDHOOKS__SECURITY__SECRETS_KEY".to_string(),
        String::new(),
    ));
    let mut instance = Instance::spawn_roles(&deployment, "fanout,deliver,api");
    let mut status = None;
    eventually("run exits", Duration::from_secs(30), || {
        status = instance.exited();
        status.is_some()
    })
    .await;
    let status = status.unwrap();
    let logs = instance.logs.lock().unwrap().join("\n");
    assert!(!status.success(), "run started without a key: {logs}");
    assert!(
        logs.contains("security.secrets_key: required by `run`"),
        "the refusal names the setting: {logs}"
    );
    assert!(
        instance.announced_addr().is_none(),
        "nothing listened before the refusal"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_reports_each_part_it_checks() {
    let deployment = Deployment::new("readyz");
    let instance = Instance::start(&deployment).await;
    instance.wait_assigned().await;
    let body = readyz_until(&instance, Duration::from_secs(30), |v| {
        v["stages"]["fanout"]["partitions"].as_u64() > Some(0)
            && v["stages"]["deliver"]["partitions"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(body["subscriptions_loaded"], true, "{body}");
    assert_eq!(body["kafka_reachable"], true, "{body}");
    assert_eq!(body["missing_input_topics"], serde_json::json!([]), "{body}");
    assert_eq!(body["stuck_partitions"], serde_json::json!([]), "{body}");
    let stages: BTreeSet<&str> = body["stages"]
        .as_object()
        .expect("stages is an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        stages,
        BTreeSet::from(["deliver", "fanout"]),
        "only the stages it runs: {body}"
    );
    for stage in ["fanout", "deliver"] {
        assert_eq!(body["stages"][stage]["consuming"], true, "{body}");
        assert_eq!(body["stages"][stage]["joined"], true, "{body}");
    }
    // One instance holds every input partition.
    assert_eq!(
        body["stages"]["fanout"]["partitions"],
        deployment.partitions,
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_records_carry_their_source_topic_partition_and_offset() {
    let deployment = Deployment::new("source");
    let instance = Instance::start(&deployment).await;
    instance.wait_assigned().await;
    let producer = producer();
    // The only record on the input topic: offset 0 of its partition.
    produce_raw(&producer, &deployment.input, b"not json at all").await;
    let invalid = read_topic(
        &format!("{}.invalid", deployment.prefix),
        deployment.partitions,
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(invalid.len(), 1, "one invalid record, read to the end");
    let headers = &invalid[0].headers;
    assert_eq!(
        headers.get("rewardhooks-source-topic"),
        Some(&deployment.input),
        "{headers:?}"
    );
    let partition: i32 = headers["rewardhooks-source-partition"]
        .parse()
        .expect("partition is a number");
    assert!((0..deployment.partitions).contains(&partition), "{headers:?}");
    assert_eq!(headers["rewardhooks-source-offset"], "0", "{headers:?}");
    assert_eq!(invalid[0].payload, b"not json at all");
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_per_instance_request_cap_holds_across_subscriptions() {
    // Three slow endpoints, four requests each allowed at once, but at most
    // two requests per instance: never more than two open at any moment.
    let cap = 2;
    let delay = Duration::from_millis(400);
    let deployment = Deployment::new("reqcap")
        .delivery(&format!("max_concurrent_requests = {cap}"))
        .delivery("max_in_flight_per_subscription = 4")
        .delivery(r#"lane_max_wait = "120s""#);
    let instance = Instance::start(&deployment).await;
    let api = instance.api_client(ADMIN_TOKEN);
    let mut receivers = Vec::new();
    for _ in 0..3 {
        let receiver = Receiver::start(200, delay).await;
        let (id, secret) = api
            .subscribe(&receiver.url, &["points.earned"], None)
            .await;
        receiver.expect(&id, &secret);
        receivers.push((receiver, id));
    }
    instance.wait_assigned().await;
    let total = 6;
    produce_many(&deployment, "points.earned", "evt_cap", total).await;
    let want: BTreeSet<String> = (0..total).map(|n| format!("evt_cap{n}")).collect();
    for (receiver, id) in &receivers {
        receiver
            .wait_completed(id, &want, Duration::from_secs(120))
            .await;
    }
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
    // Each request is open from its arrival for at least `delay`: the most
    // arrivals within one `delay` (less a margin for the answer's way back)
    // is the most requests open at once.
    let mut arrivals: Vec<std::time::Instant> = receivers
        .iter()
        .flat_map(|(r, _)| r.received().into_iter().map(|x| x.at))
        .collect();
    arrivals.sort();
    let window = delay - Duration::from_millis(50);
    let peak = (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|t| **t < arrivals[i] + window)
                .count()
        })
        .max()
        .unwrap();
    assert!(peak <= cap, "{peak} requests open at once (cap {cap})");
    assert_eq!(peak, cap, "the cap is reached, not undercut");
    for (receiver, id) in &receivers {
        receiver.assert_delivered(&[(id.as_str(), &want)], 0);
    }
}
