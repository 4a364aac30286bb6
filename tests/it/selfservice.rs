//! The self-service API: tenancy, secrets and rotation, test webhooks, the
//! delivery log, the catalog and the OpenAPI document.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_cannot_touch_another_owners_subscription_but_the_admin_can() {
    let deployment = Deployment::new("tenancy");
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let alice = instance.api_client("alice-token");
    let bob = instance.api_client("bob-token");
    let admin = instance.api_client(ADMIN_TOKEN);
    let (id, _) = bob.subscribe(&receiver.url, &["tier.*"], None).await;
    let calls: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/v1/subscriptions/{id}"), None),
        (
            "PATCH",
            format!("/v1/subscriptions/{id}"),
            Some(json!({"description": "mine now"})),
        ),
        ("GET", format!("/v1/subscriptions/{id}/secret"), None),
        (
            "POST",
            format!("/v1/subscriptions/{id}/secret/rotate"),
            None,
        ),
        (
            "POST",
            format!("/v1/subscriptions/{id}/test"),
            Some(json!({"event_type": "tier.changed"})),
        ),
        ("GET", format!("/v1/subscriptions/{id}/attempts"), None),
        (
            "GET",
            format!("/v1/dead-letters?subscription_id={id}"),
            None,
        ),
        ("DELETE", format!("/v1/subscriptions/{id}"), None),
    ];
    for (method, path, body) in &calls {
        let (status, v) = alice.call(method, path, body.clone()).await;
        assert_eq!(status, 404, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "not_found");
    }
    let (_, list) = alice.call("GET", "/v1/subscriptions", None).await;
    assert!(list["data"].as_array().unwrap().is_empty());
    assert_eq!(receiver.count(), 0, "alice's test call sent nothing");
    for (method, path, body) in &calls {
        let (status, v) = admin.call(method, path, body.clone()).await;
        assert!(
            status == 200 || status == 204,
            "admin {method} {path}: {status} {v}"
        );
    }
    assert_eq!(receiver.count(), 1, "the admin's test webhook arrived");
}

#[tokio::test(flavor = "multi_thread")]
async fn during_rotation_grace_both_secrets_verify_and_afterwards_only_the_new_one() {
    let deployment = Deployment::new("rotate").delivery("rotation_grace = \"4s\"");
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let api = instance.api_client("alice-token");
    let (id, old) = api.subscribe(&receiver.url, &["points.earned"], None).await;
    instance.wait_assigned().await;
    let (status, v) = api
        .call(
            "POST",
            &format!("/v1/subscriptions/{id}/secret/rotate"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let rotated = std::time::Instant::now();
    let new = v["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    let (_, v) = api
        .call("GET", &format!("/v1/subscriptions/{id}/secret"), None)
        .await;
    assert_eq!(v["secret"], new.as_str());

    let producer = producer();
    let e = event(
        "points.earned",
        "evt_grace",
        sample_data("points.earned", 1),
    );
    produce_structured(&producer, &deployment.input, &e).await;
    eventually("delivery during grace", Duration::from_secs(60), || {
        receiver.count() >= 1
    })
    .await;
    let during = &receiver.received()[0];
    assert_eq!(
        during.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .count(),
        2
    );
    during
        .verify(&new)
        .expect("new secret verifies during grace");
    during
        .verify(&old)
        .expect("old secret verifies during grace");

    // After the grace (4 s from the rotation) deliveries carry one
    // signature: send events until one does, instead of sleeping.
    let mut sent = 1;
    let after = loop {
        let e = event(
            "points.earned",
            &format!("evt_after_{sent}"),
            sample_data("points.earned", 2),
        );
        produce_structured(&producer, &deployment.input, &e).await;
        sent += 1;
        eventually("delivery after rotation", Duration::from_secs(60), || {
            receiver.count() >= sent
        })
        .await;
        let last = receiver.received()[sent - 1].clone();
        let signatures = last.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .count();
        if signatures == 1 {
            break last;
        }
        assert!(
            rotated.elapsed() < Duration::from_secs(30),
            "still two signatures {:?} after the rotation",
            rotated.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        rotated.elapsed() >= Duration::from_millis(3500),
        "the grace ended early: {:?}",
        rotated.elapsed()
    );
    let after = &after;
    after.verify(&new).expect("new secret verifies after grace");
    assert!(after.verify(&old).is_err(), "old secret no longer signs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_webhook_reaches_the_receiver_and_the_log_shows_it_on_any_instance() {
    let deployment = Deployment::new("testhook").delivery("retry_schedule = [\"1s\"]");
    let first = Instance::start(&deployment).await;
    let second = Instance::start(&deployment).await;
    let receiver = Receiver::scripted(&[(500, None)], 200, Duration::ZERO).await;
    let api = first.api_client("alice-token");
    let (id, secret) = api.subscribe(&receiver.url, &["tier.changed"], None).await;

    let (status, attempt) = api
        .call(
            "POST",
            &format!("/v1/subscriptions/{id}/test"),
            Some(json!({"event_type": "tier.changed"})),
        )
        .await;
    assert_eq!(status, 200, "{attempt}");
    assert_eq!(attempt["status_code"], 500);
    assert_eq!(attempt["success"], false);
    assert_eq!(attempt["error"], "HTTP 500");
    let (_, attempt) = api
        .call(
            "POST",
            &format!("/v1/subscriptions/{id}/test"),
            Some(json!({"event_type": "tier.changed"})),
        )
        .await;
    assert_eq!(attempt["status_code"], 200);
    assert_eq!(attempt["success"], true);
    assert!(attempt["event_id"]
        .as_str()
        .unwrap()
        .starts_with("evt_test_"));
    assert_eq!(attempt["response_body"], "ok");
    for r in receiver.received() {
        r.verify(&secret).unwrap();
        assert_eq!(r.json()["type"], "tier.changed");
        assert_eq!(r.json()["data"]["new_tier"], "gold", "the catalog example");
    }

    // Asked on the other instance: both attempts, newest first.
    let other = second.api_client("alice-token");
    let path = format!("/v1/subscriptions/{id}/attempts?limit=10");
    let mut log = Value::Null;
    for _ in 0..200 {
        // The other instance learns of the subscription from the topic.
        let (status, v) = other.call("GET", &path, None).await;
        assert!(status == 200 || status == 404, "{v}");
        if v["data"].as_array().is_some_and(|d| d.len() >= 2) {
            log = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let data = log["data"].as_array().expect("two attempts in the log");
    assert_eq!(data[0]["success"], true);
    assert_eq!(data[1]["success"], false);
    assert_eq!(data[1]["status_code"], 500);
    // Paging with `before`.
    let (_, page) = other
        .call(
            "GET",
            &format!("/v1/subscriptions/{id}/attempts?limit=1"),
            None,
        )
        .await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page2) = other
        .call(
            "GET",
            &format!(
                "/v1/subscriptions/{id}/attempts?limit=1&before={}",
                cursor.replace('+', "%2B")
            ),
            None,
        )
        .await;
    assert_eq!(page2["data"][0]["success"], false, "{page2}");
}

#[tokio::test(flavor = "multi_thread")]
async fn documented_error_cases_answer_their_status_and_code() {
    let deployment = Deployment::new("errcodes").api("max_subscriptions_per_owner = 1");
    let instance = Instance::start(&deployment).await;
    let alice = instance.api_client("alice-token");
    let (id, _) = alice.subscribe("http://127.0.0.1:9/a", &["*"], None).await;
    let cases: Vec<(&str, String, Option<Value>, u16, &str)> = vec![
        (
            "POST",
            "/v1/subscriptions".into(),
            Some(json!({"url": "http://127.0.0.1:9/b", "event_types": ["*"]})),
            409,
            "limit_reached",
        ),
        (
            "PATCH",
            format!("/v1/subscriptions/{id}"),
            Some(json!({"status": "disabled"})),
            422,
            "invalid_status",
        ),
        (
            "PATCH",
            format!("/v1/subscriptions/{id}"),
            Some(json!({"event_types": ["nope.*"]})),
            422,
            "invalid_event_types",
        ),
        (
            "POST",
            format!("/v1/subscriptions/{id}/test"),
            Some(json!({"event_type": "nope"})),
            422,
            "invalid_event_types",
        ),
        (
            "GET",
            format!("/v1/subscriptions/{id}/attempts?limit=0"),
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            format!("/v1/subscriptions/{id}/attempts?before=yesterday"),
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            "/v1/subscriptions?limit=many".into(),
            None,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/dead-letters/replay".into(),
            Some(json!({"subscription_id": id, "ids": ["dlq_0_999999"]})),
            422,
            "unknown_dead_letters",
        ),
        (
            "GET",
            "/v1/subscriptions/sub_missing".into(),
            None,
            404,
            "not_found",
        ),
        ("GET", "/v1/nowhere".into(), None, 404, "not_found"),
        (
            "PUT",
            "/v1/subscriptions".into(),
            None,
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, v) = alice.call(method, &path, body).await;
        assert_eq!(got, status, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], code, "{method} {path}: {v}");
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/subscriptions", instance.api))
        .bearer_auth("alice-token")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalog_and_the_openapi_document_describe_every_route() {
    let deployment = Deployment::new("openapi");
    let instance = Instance::start(&deployment).await;
    let (status, catalog) = instance
        .api_client("bob-token")
        .call("GET", "/v1/event-types", None)
        .await;
    assert_eq!(status, 200);
    let types: Vec<&str> = catalog["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "points.earned",
            "points.redeemed",
            "profile.updated",
            "rewardhooks.dead_letter.created",
            "rewardhooks.recovery.finished",
            "rewardhooks.subscription.circuit_opened",
            "rewardhooks.subscription.disabled",
            "tier.changed"
        ]
    );
    for t in catalog["data"].as_array().unwrap() {
        assert_eq!(t["schema"]["type"], "object");
        assert_eq!(t["example"]["type"], t["type"]);
    }

    let doc: Value = serde_json::from_str(
        &reqwest::get(format!("{}/openapi.json", instance.api))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .expect("the served document parses");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let routes = [
        ("post", "/v1/subscriptions"),
        ("get", "/v1/subscriptions"),
        ("get", "/v1/subscriptions/{id}"),
        ("patch", "/v1/subscriptions/{id}"),
        ("delete", "/v1/subscriptions/{id}"),
        ("get", "/v1/subscriptions/{id}/secret"),
        ("post", "/v1/subscriptions/{id}/secret/rotate"),
        ("post", "/v1/subscriptions/{id}/test"),
        ("get", "/v1/subscriptions/{id}/attempts"),
        ("get", "/v1/subscriptions/{id}/stats"),
        ("post", "/v1/event-types/filter-check"),
        ("get", "/v1/dead-letters"),
        ("post", "/v1/dead-letters/replay"),
        ("post", "/v1/subscriptions/{id}/recover"),
        ("post", "/v1/subscriptions/{id}/resend"),
        ("get", "/v1/recoveries/{id}"),
        ("delete", "/v1/recoveries/{id}"),
        ("get", "/v1/event-types"),
        ("get", "/v1/egress-ips"),
        ("get", "/openapi.json"),
        ("get", "/metrics"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        // Owners as data (issue 15).
        ("post", "/v1/owners"),
        ("get", "/v1/owners"),
        ("get", "/v1/owners/{id}"),
        ("patch", "/v1/owners/{id}"),
        ("delete", "/v1/owners/{id}"),
        ("post", "/v1/owners/{id}/keys"),
        ("get", "/v1/owners/{id}/keys"),
        ("delete", "/v1/owners/{id}/keys/{key_id}"),
        ("post", "/v1/owners/{id}/portal-sessions"),
        ("delete", "/v1/owners/{id}/portal-sessions"),
        ("get", "/v1/me"),
        ("get", "/v1/audit"),
    ];
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(documented, routes.len(), "documented operations");
    let client = reqwest::Client::new();
    for (method, path) in routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is documented"
        );
        // The route exists on the server: not the router's 404/405 fallback.
        let url = format!(
            "{}{}",
            instance.api,
            path.replace("{id}", "sub_x").replace("{key_id}", "key_x")
        );
        let resp = client
            .request(
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                url,
            )
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert!(
            status != 405 && !body.contains("route not found"),
            "{method} {path}: {status} {body}"
        );
    }
}
