//! Slow fault tests, in a test binary of their own (`test = false` in
//! Cargo.toml, so `make test` leaves them out; `make test-slow` and
//! `.ci/run` run them). Each puts work at risk and ends with the same
//! accounting: every event delivered to every matching subscription, both
//! consumer groups committed to the topic ends, duplicates within a bound
//! computed from the configuration.

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

/// Produces `points.earned` events `<prefix>0`, `<prefix>1`, … every
/// `every` until `stop` is set; `produced` counts the ones acknowledged.
fn steady_load(
    deployment: &Deployment,
    prefix: &'static str,
    every: Duration,
    stop: Arc<AtomicBool>,
    produced: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    let topic = deployment.input.clone();
    tokio::spawn(async move {
        let producer = producer();
        let mut tick = tokio::time::interval(every);
        while !stop.load(Ordering::SeqCst) {
            tick.tick().await;
            let n = produced.load(Ordering::SeqCst);
            let e = event(
                "points.earned",
                &format!("{prefix}{n}"),
                sample_data("points.earned", n),
            );
            produce_structured(&producer, &topic, &e).await;
            produced.fetch_add(1, Ordering::SeqCst);
        }
    })
}

/// SIGTERM must drain: exit 0, and never after "Stages did not stop in
/// time." (which would mean work was cut off rather than finished).
fn assert_drained(instance: &mut Instance) {
    let status = instance.terminate();
    let logs = instance.logs.lock().unwrap().join("\n");
    assert!(status.success(), "exit status {status}: {logs}");
    assert!(
        !logs.contains("Stages did not stop in time"),
        "the drain hit its bound: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_of_three_instances_under_steady_load_loses_nothing() {
    // What a rebalance can repeat, per rebalance: the deliveries in flight
    // on the partitions that move (at most `per_sub` sending plus fewer
    // than `per_sub` finished above the oldest one, as in
    // tests/it/operations.rs) and the input records fan-out had read but not
    // yet acknowledged (at most one second of the load: a fan-out batch is
    // acknowledged well within a second on an idle broker). A rolling
    // restart of three instances is six rebalances: each leaves, then its
    // replacement joins.
    let per_sub = 4;
    let every = Duration::from_millis(50);
    let rebalances = 6;
    let fanout_in_flight = (1000 / every.as_millis()) as usize;
    let bound = rebalances * (2 * per_sub + fanout_in_flight);
    let deployment = Deployment::new("rolling")
        .delivery(&format!("max_in_flight_per_subscription = {per_sub}"))
        .delivery(r#"lane_max_wait = "120s""#);
    let mut instances = vec![
        Instance::start(&deployment).await,
        Instance::start(&deployment).await,
        Instance::start(&deployment).await,
    ];
    let receiver = Receiver::start(200, Duration::from_millis(20)).await;
    let (sub, secret) = instances[0]
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    receiver.expect(&sub, &secret);
    for i in &instances {
        i.wait_assigned().await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicUsize::new(0));
    let load = steady_load(&deployment, "evt_rr", every, stop.clone(), produced.clone());
    eventually("deliveries flowing", Duration::from_secs(60), || {
        receiver.delivered().len() >= 20
    })
    .await;
    for instance in &mut instances {
        // Under load: deliveries go on between restarts.
        let before = receiver.delivered().len();
        assert_drained(instance);
        *instance = Instance::start(&deployment).await;
        instance.wait_assigned().await;
        eventually(
            "deliveries flowing after a restart",
            Duration::from_secs(60),
            || receiver.delivered().len() >= before + 20,
        )
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    let total = produced.load(Ordering::SeqCst);
    let want: BTreeSet<String> = (0..total).map(|n| format!("evt_rr{n}")).collect();
    receiver
        .wait_completed(&sub, &want, Duration::from_secs(120))
        .await;
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
    receiver.assert_delivered(&[(sub.as_str(), &want)], bound);
    println!(
        "rolling restart: {total} events, {} duplicates (bound {bound}), {} cut off",
        receiver.duplicates(),
        receiver.cut_off()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_before_the_subscription_view_caught_up_still_delivers_to_every_subscription() {
    // Many subscriptions (a subscriptions topic of 450 records), then a
    // restart with the events already waiting on the input topic:
    // fan-out must not match them against a partial view. No waiting for
    // /readyz: the events are produced before the process even starts.
    let subscriptions = 150;
    let deployment = Deployment::new("viewlag");
    let mut first = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let api = first.api_client(ADMIN_TOKEN);
    let mut subs = Vec::new();
    for chunk in 0..subscriptions / 10 {
        let created = futures::future::join_all(
            (0..10).map(|_| api.subscribe(&receiver.url, &["points.earned"], None)),
        )
        .await;
        for (id, secret) in created {
            receiver.expect(&id, &secret);
            subs.push(id);
        }
        assert_eq!(subs.len(), (chunk + 1) * 10);
    }
    // Churn, so the topic holds more records than subscriptions: every
    // subscription is updated twice (its last state is the one that counts).
    for id in &subs {
        for description in ["one", "two"] {
            let (status, v) = api
                .call(
                    "PATCH",
                    &format!("/v1/subscriptions/{id}"),
                    Some(serde_json::json!({"description": description})),
                )
                .await;
            assert_eq!(status, 200, "{v}");
        }
    }
    assert_drained(&mut first);
    let total = 5;
    produce_many(&deployment, "points.earned", "evt_vl", total).await;
    // The restarted view loads slowly (20 ms a record: 9 s), far longer
    // than fan-out needs to join its group, so a fan-out that did not wait
    // would match the waiting events against a partial view. (Checked: with
    // fan-out's wait and fence removed, this test fails; without the slow
    // load the view is complete before fan-out consumes and it would not.)
    let mut slow_view = deployment.clone();
    slow_view.env.push((
        "REWARDHOOKS_TEST_VIEW_LOAD_LAG_MS".to_string(),
        "20".to_string(),
    ));
    let mut second = Instance::spawn_roles(&slow_view, "fanout,deliver,api");
    let want: BTreeSet<String> = (0..total).map(|n| format!("evt_vl{n}")).collect();
    eventually(
        "every subscription got every event",
        Duration::from_secs(120),
        || subs.iter().all(|s| receiver.completed_ids(s) == want),
    )
    .await;
    second.wait_listening().await;
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
    let expected: Vec<(&str, &BTreeSet<String>)> =
        subs.iter().map(|s| (s.as_str(), &want)).collect();
    receiver.assert_delivered(&expected, 0);
    assert_eq!(receiver.delivered().len(), subscriptions * total);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebalance_while_a_slow_endpoint_holds_a_backlog_one_joins_one_leaves_loses_nothing() {
    // Two rebalances while the lanes hold work: a third instance joins, then
    // one of the first two leaves (SIGTERM). At a rebalance every member
    // gives its partitions up, and each member's lane for the subscription
    // can repeat the attempts it had in flight and those finished above the
    // oldest one in flight: fewer than 2 x `per_sub` per member. Two members
    // at the join; at the leave, the two that stay (the leaver drains and
    // commits). Fan-out committed every input record before the first
    // rebalance (waited for below), so it repeats nothing.
    let per_sub = 4;
    let members_giving_up = [2, 2];
    let bound: usize = members_giving_up.iter().map(|m| m * 2 * per_sub).sum();
    let deployment = Deployment::new("joinleave")
        .delivery(&format!("max_in_flight_per_subscription = {per_sub}"))
        .delivery(r#"lane_max_wait = "300s""#);
    let mut a = Instance::start(&deployment).await;
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
    // 500 x 200 ms at 4 at a time: ~25 s of backlog, well beyond the time
    // a third instance needs to start and join.
    let total = 500;
    produce_many(&deployment, "points.earned", "evt_jl", total).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let input = fanout_positions(&deployment).await;
        if !input.is_empty() && input.iter().all(|p| p.at_end()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fan-out never committed: {input:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let c = Instance::start(&deployment).await;
    c.wait_assigned().await;
    let after_join = receiver.delivered().len();
    assert!(after_join < total, "the join found a backlog");
    eventually(
        "deliveries flowing after the join",
        Duration::from_secs(60),
        || receiver.delivered().len() >= after_join + 20,
    )
    .await;
    assert_drained(&mut a);
    let at_leave = receiver.delivered().len();
    assert!(
        at_leave < total,
        "the leave found a backlog ({at_leave} of {total})"
    );
    let want: BTreeSet<String> = (0..total).map(|n| format!("evt_jl{n}")).collect();
    receiver
        .wait_completed(&sub, &want, Duration::from_secs(180))
        .await;
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
    receiver.assert_delivered(&[(sub.as_str(), &want)], bound);
    println!(
        "join at {after_join}, leave at {at_leave} of {total}: {} duplicates (bound {bound})",
        receiver.duplicates()
    );
    drop((b, c));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_api_request_runs_longer_than_60_seconds() {
    // A test send waits for its webhook up to `delivery.timeout` (here
    // 120 s) and the endpoint hangs for 90 s: the API answers at 60 s with
    // 503 `timeout` instead.
    let deployment = Deployment::new("apitimeout").delivery(r#"timeout = "120s""#);
    let instance = Instance::start(&deployment).await;
    let hanging = Receiver::start(200, Duration::from_secs(90)).await;
    let api = instance.api_client(ADMIN_TOKEN);
    let (id, _) = api.subscribe(&hanging.url, &["tier.changed"], None).await;
    let started = std::time::Instant::now();
    let (status, body) = api
        .call(
            "POST",
            &format!("/v1/subscriptions/{id}/test"),
            Some(serde_json::json!({"event_type": "tier.changed"})),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    assert!(
        took >= Duration::from_secs(59) && took < Duration::from_secs(85),
        "answered after {took:?}"
    );
    assert_eq!(hanging.count(), 1, "the webhook was sent");
}
