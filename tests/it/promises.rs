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
    assert_eq!(
        body["missing_input_topics"],
        serde_json::json!([]),
        "{body}"
    );
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
    // One instance holds every input partition (and those of the other
    // topics fan-out reads).
    assert!(
        body["stages"]["fanout"]["partitions"].as_u64() >= Some(deployment.partitions as u64),
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
    assert!(
        (0..deployment.partitions).contains(&partition),
        "{headers:?}"
    );
    assert_eq!(headers["rewardhooks-source-offset"], "0", "{headers:?}");
    assert_eq!(invalid[0].payload, b"not json at all");
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_per_instance_request_cap_holds_across_subscriptions() {
    // Three slow endpoints of one owner, four requests each allowed at
    // once (twelve), but at most four per instance: never more than four
    // open at any moment. (The fair permits keep one of the four free while
    // a single owner holds them all, src/delivery/permits.rs, so the peak
    // seen is three; more than one shows requests do run concurrently.)
    let cap = 4;
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
        let (id, secret) = api.subscribe(&receiver.url, &["points.earned"], None).await;
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
    assert!(peak >= 2, "requests ran one at a time ({peak})");
    for (receiver, id) in &receivers {
        receiver.assert_delivered(&[(id.as_str(), &want)], 0);
    }
}

/// A loopback endpoint answering every request with `status`, `headers`
/// and `body`; returns its URL and the count of requests it got.
async fn canned_endpoint(
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    canned_endpoint_at("127.0.0.1:0", status, headers, body).await
}

/// [`canned_endpoint`] listening on `bind`.
async fn canned_endpoint_at(
    bind: &str,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let handler = move || {
        let headers = headers.clone();
        let body = body.clone();
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut response = axum::response::Response::new(axum::body::Body::from(body));
            *response.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
            for (name, value) in headers {
                response
                    .headers_mut()
                    .insert(name, axum::http::HeaderValue::from_str(&value).unwrap());
            }
            response
        }
    };
    let router = axum::Router::new().route("/hook", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_not_followed_and_response_bodies_are_kept_up_to_the_limit() {
    use std::sync::atomic::Ordering;
    let limit = 100;
    let deployment = Deployment::new("redirect").delivery(&format!("max_response_bytes = {limit}"));
    let instance = Instance::start(&deployment).await;
    let api = instance.api_client(ADMIN_TOKEN);
    let target = Receiver::start(200, Duration::ZERO).await;
    let (redirecting, redirect_hits) =
        canned_endpoint(307, vec![("location", target.url.clone())], String::new()).await;
    let (id, _) = api.subscribe(&redirecting, &["tier.changed"], None).await;
    let (status, attempt) = api
        .call(
            "POST",
            &format!("/v1/subscriptions/{id}/test"),
            Some(serde_json::json!({"event_type": "tier.changed"})),
        )
        .await;
    assert_eq!(status, 200, "{attempt}");
    assert_eq!(attempt["status_code"], 307, "{attempt}");
    assert_eq!(
        attempt["success"], false,
        "a redirect is a failure: {attempt}"
    );
    assert_eq!(redirect_hits.load(Ordering::SeqCst), 1);
    assert_eq!(target.count(), 0, "the redirect was not followed");

    let long = "x".repeat(10_000);
    let (chatty, _) = canned_endpoint(200, Vec::new(), long).await;
    let (id, _) = api.subscribe(&chatty, &["tier.changed"], None).await;
    let (status, attempt) = api
        .call(
            "POST",
            &format!("/v1/subscriptions/{id}/test"),
            Some(serde_json::json!({"event_type": "tier.changed"})),
        )
        .await;
    assert_eq!(status, 200, "{attempt}");
    assert_eq!(attempt["success"], true, "{attempt}");
    let kept = attempt["response_body"].as_str().unwrap_or_default();
    assert!(
        !kept.is_empty() && kept.len() <= limit,
        "{} bytes of the response body kept (limit {limit})",
        kept.len()
    );
    assert!(kept.chars().all(|c| c == 'x'), "{kept}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_and_tls_errors_are_retried() {
    let deployment = Deployment::new("neterr")
        .delivery(r#"retry_schedule = ["1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]"#);
    let instance = Instance::start(&deployment).await;
    let api = instance.api_client(ADMIN_TOKEN);
    // A port nobody listens on (bound, then released)...
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (refused, _) = api
        .subscribe(
            &format!("http://127.0.0.1:{port}/hook"),
            &["tier.changed"],
            None,
        )
        .await;
    // ...and TLS spoken to a plain HTTP endpoint.
    let plain = Receiver::start(200, Duration::ZERO).await;
    let (tls, _) = api
        .subscribe(
            &plain.url.replace("http://", "https://"),
            &["tier.changed"],
            None,
        )
        .await;
    instance.wait_assigned().await;
    produce_many(&deployment, "tier.changed", "evt_net", 1).await;
    let failed_twice = |v: &serde_json::Value| {
        v["data"].as_array().is_some_and(|a| {
            a.len() >= 2
                && a.iter()
                    .all(|x| x["success"] == false && x["error"].is_string())
        })
    };
    for (id, what) in [(&refused, "connection refused"), (&tls, "TLS error")] {
        let attempts = api
            .get_until(
                &format!("/v1/subscriptions/{id}/attempts"),
                Duration::from_secs(60),
                failed_twice,
            )
            .await;
        assert!(failed_twice(&attempts), "{what} retried: {attempts}");
    }
    // The endpoint comes up on that port: the next retry delivers.
    let (_, hits) =
        canned_endpoint_at(&format!("127.0.0.1:{port}"), 200, Vec::new(), String::new()).await;
    let attempts = api
        .get_until(
            &format!("/v1/subscriptions/{refused}/attempts"),
            Duration::from_secs(60),
            |v| v["data"][0]["success"] == true,
        )
        .await;
    assert_eq!(attempts["data"][0]["success"], true, "{attempts}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        plain.count(),
        0,
        "no HTTP request got through the TLS failure"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn source_address_binds_outgoing_connections() {
    // 127.0.0.2 is a loopback address of its own on Linux: a connection
    // bound to it arrives from it, where an unbound one comes from 127.0.0.1.
    let deployment = Deployment::new("srcaddr").delivery(r#"source_address = "127.0.0.2""#);
    let instance = Instance::start(&deployment).await;
    let peers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = peers.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                std::net::SocketAddr,
            >| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(peer.ip());
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let api = instance.api_client(ADMIN_TOKEN);
    let (id, _) = api.subscribe(&url, &["tier.changed"], None).await;
    let (status, attempt) = api
        .call(
            "POST",
            &format!("/v1/subscriptions/{id}/test"),
            Some(serde_json::json!({"event_type": "tier.changed"})),
        )
        .await;
    assert_eq!(status, 200, "{attempt}");
    assert_eq!(attempt["success"], true, "{attempt}");
    // And a delivery from the pipeline, not only the test send.
    instance.wait_assigned().await;
    produce_many(&deployment, "tier.changed", "evt_src", 1).await;
    eventually("the delivery arrived", Duration::from_secs(60), || {
        peers.lock().unwrap().len() >= 2
    })
    .await;
    let peers = peers.lock().unwrap().clone();
    let bound: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    assert!(peers.iter().all(|p| *p == bound), "{peers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deferred_dropped_and_per_subscription_metrics_count_what_happened() {
    let mut deployment = Deployment::new("metricsdd")
        .delivery("lane_capacity = 2")
        .delivery("max_in_flight_per_subscription = 1")
        .delivery(r#"retry_schedule = ["1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]"#);
    deployment.env.push((
        "REWARDHOOKS__METRICS__PER_SUBSCRIPTION_LABELS".to_string(),
        "true".to_string(),
    ));
    let instance = Instance::start(&deployment).await;
    let api = instance.api_client(ADMIN_TOKEN);
    // A slow endpoint with a lane of two: a burst of ten overflows it, and
    // the overflow is deferred (parked in a tier) without an attempt.
    let slow = Receiver::start(200, Duration::from_millis(300)).await;
    let (busy, secret) = api.subscribe(&slow.url, &["tier.changed"], None).await;
    slow.expect(&busy, &secret);
    // A paused subscription holds its deliveries in a tier; deleted while
    // they wait, they are dropped when they come back.
    let never = Receiver::start(200, Duration::ZERO).await;
    let (gone, _) = api.subscribe(&never.url, &["points.redeemed"], None).await;
    let path = format!("/v1/subscriptions/{gone}");
    let (status, v) = api
        .call(
            "PATCH",
            &path,
            Some(serde_json::json!({"status": "paused"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    instance.wait_assigned().await;
    let total = 10;
    produce_many(&deployment, "tier.changed", "evt_md", total).await;
    produce_many(&deployment, "points.redeemed", "evt_mg", 3).await;
    let want: BTreeSet<String> = (0..total).map(|n| format!("evt_md{n}")).collect();
    slow.wait_completed(&busy, &want, Duration::from_secs(120))
        .await;
    let (status, _) = api.call("DELETE", &path, None).await;
    assert!(status == 200 || status == 204, "delete: {status}");
    let mut dropped = 0.0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while dropped < 3.0 && std::time::Instant::now() < deadline {
        dropped = counter_sum_or_zero(
            &metrics(&instance).await,
            "rewardhooks_deliveries_dropped_total",
            &[("reason", "subscription_deleted")],
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dropped, 3.0, "the deleted subscription's three deliveries");
    assert_eq!(
        never.count(),
        0,
        "nothing sent to the paused, then deleted one"
    );
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
    slow.assert_delivered(&[(busy.as_str(), &want)], 0);
    // Deferral spends no attempt: one request per event.
    assert_eq!(slow.count(), total, "requests to the slow endpoint");
    let samples = metrics(&instance).await;
    assert!(
        sample(&samples, "rewardhooks_deliveries_deferred_total", &[]) >= 1.0,
        "the overflow was deferred"
    );
    assert_eq!(
        sample_sum(
            &samples,
            "rewardhooks_deliveries_by_subscription_total",
            &[("subscription_id", busy.as_str()), ("outcome", "success")]
        ),
        total as f64
    );
}
