//! The subscription API against a running instance.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn owners_see_only_their_own_subscriptions() {
    let deployment = Deployment::new("owners");
    let instance = Instance::start(&deployment).await;
    let alice = instance.api_client("alice-token");
    let bob = instance.api_client("bob-token");
    let admin = instance.api_client(ADMIN_TOKEN);
    let (alice_id, alice_secret) = alice
        .subscribe("http://127.0.0.1:9/a", &["points.earned"], None)
        .await;
    bob.subscribe("http://127.0.0.1:9/b", &["tier.*"], None)
        .await;

    let (status, v) = bob
        .call("GET", &format!("/v1/subscriptions/{alice_id}"), None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "not_found");
    let (status, _) = bob
        .call("DELETE", &format!("/v1/subscriptions/{alice_id}"), None)
        .await;
    assert_eq!(status, 404);

    let (status, list) = alice.call("GET", "/v1/subscriptions", None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![alice_id.as_str()]);
    assert!(
        list["data"][0].get("secret").is_none(),
        "lists never show secrets"
    );
    assert!(list["next_cursor"].is_null());

    let (_, all) = admin.call("GET", "/v1/subscriptions", None).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let (_, page) = admin.call("GET", "/v1/subscriptions?limit=1", None).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    let (_, page2) = admin
        .call(
            "GET",
            &format!("/v1/subscriptions?limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(page2["data"].as_array().unwrap().len(), 1);
    assert_ne!(page2["data"][0]["id"], page["data"][0]["id"]);
    assert!(page2["next_cursor"].is_null());

    let (status, secret) = alice
        .call("GET", &format!("/v1/subscriptions/{alice_id}/secret"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(secret["secret"], alice_secret);

    let (status, changed) = alice
        .call(
            "PATCH",
            &format!("/v1/subscriptions/{alice_id}"),
            Some(json!({"event_types": ["points.*"], "status": "paused", "description": "ledger"})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["status"], "paused");
    assert_eq!(changed["event_types"], json!(["points.*"]));
    let (_, read) = alice
        .call("GET", &format!("/v1/subscriptions/{alice_id}"), None)
        .await;
    assert_eq!(read["description"], "ledger");

    let (status, _) = alice
        .call("DELETE", &format!("/v1/subscriptions/{alice_id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = alice
        .call("GET", &format!("/v1/subscriptions/{alice_id}"), None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_errors() {
    let deployment = Deployment::new("errors");
    let instance = Instance::start(&deployment).await;
    let alice = instance.api_client("alice-token");

    let (status, v) = instance
        .api_client("wrong")
        .call("GET", "/v1/subscriptions", None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["code"], "unauthorized");

    let cases = [
        (
            json!({"url": "http://127.0.0.1:9/", "event_types": ["coupon.issued"]}),
            422,
            "invalid_event_types",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "event_types": []}),
            422,
            "invalid_event_types",
        ),
        (
            json!({"url": "ftp://127.0.0.1/", "event_types": ["*"]}),
            422,
            "invalid_url",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "event_types": ["*"], "filter": {"data.x": {"$regex": "a"}}}),
            422,
            "invalid_filter",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "event_types": ["*"], "rate_limit": {"per_second": 0, "burst": 1}}),
            422,
            "invalid_rate_limit",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "event_types": ["*"], "surprise": 1}),
            422,
            "invalid_body",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "event_types": ["*"], "owner": "bob"}),
            422,
            "invalid_owner",
        ),
    ];
    for (body, want_status, want_code) in cases {
        let (status, v) = alice
            .call("POST", "/v1/subscriptions", Some(body.clone()))
            .await;
        assert_eq!(status, want_status, "{body}: {v}");
        assert_eq!(v["error"]["code"], want_code, "{body}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
    }

    let resp = reqwest::Client::new()
        .post(format!("{}/v1/subscriptions", instance.api))
        .bearer_auth("alice-token")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "bad_request");

    let resp = reqwest::Client::new()
        .post(format!("{}/v1/subscriptions", instance.api))
        .bearer_auth("alice-token")
        .header("content-type", "application/json")
        .body(vec![b' '; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);

    assert_eq!(
        reqwest::get(format!("{}/healthz", instance.api))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_subscription_receives_nothing_more() {
    let deployment = Deployment::new("deleted");
    let instance = Instance::start(&deployment).await;
    let api = instance.api_client("alice-token");
    let gone = Receiver::start(200, Duration::ZERO).await;
    let stays = Receiver::start(200, Duration::ZERO).await;
    let (gone_id, _) = api.subscribe(&gone.url, &["points.earned"], None).await;
    api.subscribe(&stays.url, &["points.earned"], None).await;
    instance.wait_assigned().await;
    let producer = producer();
    let first = event("points.earned", "evt_d1", sample_data("points.earned", 1));
    produce_structured(&producer, &deployment.input, &first).await;
    eventually("both got the first event", Duration::from_secs(60), || {
        gone.count() >= 1 && stays.count() >= 1
    })
    .await;
    let (status, _) = api
        .call("DELETE", &format!("/v1/subscriptions/{gone_id}"), None)
        .await;
    assert_eq!(status, 204);
    let second = event("points.earned", "evt_d2", sample_data("points.earned", 2));
    produce_structured(&producer, &deployment.input, &second).await;
    eventually(
        "the remaining subscriber got the second event",
        Duration::from_secs(60),
        || stays.distinct_ids().contains("evt_d2"),
    )
    .await;
    assert!(!gone.distinct_ids().contains("evt_d2"));
}
