//! Secrets at rest and hostile API input.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_appear_in_plaintext_in_kafka_or_the_logs() {
    let deployment = Deployment::new("secrets");
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let api = instance.api_client("alice-token");
    let (id, secret) = api.subscribe(&receiver.url, &["points.earned"], None).await;
    let (_, rotated) = api
        .call(
            "POST",
            &format!("/v1/subscriptions/{id}/secret/rotate"),
            None,
        )
        .await;
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    instance.wait_assigned().await;
    let e = event("points.earned", "evt_sec", sample_data("points.earned", 1));
    produce_structured(&producer(), &deployment.input, &e).await;
    eventually("delivered", Duration::from_secs(60), || {
        receiver.count() >= 1
    })
    .await;
    receiver.received()[0].verify(&new_secret).unwrap();

    let records = read_topic(
        &format!("{}.subscriptions", deployment.prefix),
        1,
        2,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(records.len(), 2, "create and rotate");
    for r in &records {
        let text = String::from_utf8_lossy(&r.payload);
        for s in [&secret, &new_secret] {
            let key_part = s.trim_start_matches("whsec_");
            assert!(
                !text.contains(key_part),
                "plaintext secret in the subscriptions topic: {text}"
            );
        }
        assert!(text.contains("enc:v1:"), "{text}");
    }
    let logs = instance.logs.lock().unwrap().join("\n");
    for s in [&secret, &new_secret, &SECRETS_KEY.to_string()] {
        assert!(
            !logs.contains(s.trim_start_matches("whsec_")),
            "secret in the logs"
        );
    }
    assert!(
        !logs.contains("alice-token") && !logs.contains(ADMIN_TOKEN),
        "token in the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_bodies_get_4xx_and_the_api_keeps_serving() {
    let deployment = Deployment::new("hostile");
    let instance = Instance::start(&deployment).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/subscriptions", instance.api);
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let nested_filter = {
        let mut v = json!(1);
        for _ in 0..200 {
            v = json!({ "$eq": v });
        }
        json!({"url": "http://127.0.0.1:9/", "event_types": ["*"], "filter": {"data.x": v}})
    };
    // Each with the status and code docs/api.md documents for it (400 for
    // JSON that does not parse; 422 `invalid_body` for wrong types and JSON
    // nested past the depth limit, which serde reports as a data error; the
    // field's own code for a value out of bounds).
    let bodies: Vec<(String, &str, u16, &str)> = vec![
        (deep.clone(), "deeply nested array", 422, "invalid_body"),
        (format!("{{\"url\":{deep}}}"), "deeply nested field", 422, "invalid_body"),
        (nested_filter.to_string(), "nested filter", 400, "bad_request"),
        (json!({"url": 5, "event_types": ["*"]}).to_string(), "number for url", 422, "invalid_body"),
        (json!({"url": "http://127.0.0.1:9/", "event_types": "*"}).to_string(), "string for list", 422, "invalid_body"),
        (json!({"url": "http://127.0.0.1:9/", "event_types": ["*"], "rate_limit": {"per_second": -1, "burst": 1}}).to_string(), "negative rate", 422, "invalid_body"),
        (json!({"url": "http://127.0.0.1:9/", "event_types": ["*"], "description": "x".repeat(5000)}).to_string(), "long description", 422, "invalid_description"),
        (json!({"url": "http://127.0.0.1:9/", "event_types": ["*"], "metadata": {"blob": "x".repeat(5000)}}).to_string(), "big metadata", 422, "invalid_metadata"),
        (json!({"url": format!("http://127.0.0.1:9/{}", "a".repeat(3000)), "event_types": ["*"]}).to_string(), "long url", 422, "invalid_url"),
        ("x".repeat(100_000), "oversized", 413, "payload_too_large"),
        ("\u{0}\u{1}\u{2}".to_string(), "binary", 400, "bad_request"),
        ("null".to_string(), "null", 422, "invalid_body"),
    ];
    let mut wrong = Vec::new();
    for (body, what, want_status, want_code) in bodies {
        let resp = client
            .post(&url)
            .bearer_auth("alice-token")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{what}: not the error shape: {text}"));
        let code = v["error"]["code"].as_str().unwrap_or_default().to_string();
        if (status, code.as_str()) != (want_status, want_code) {
            wrong.push(format!(
                "{what}: {status} {code}, documented {want_status} {want_code}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    let (status, _) = instance
        .api_client("alice-token")
        .call("GET", "/v1/subscriptions", None)
        .await;
    assert_eq!(status, 200, "still serving");
}
