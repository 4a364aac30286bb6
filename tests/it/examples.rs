//! The Rust receiver example (`examples/receiver.rs`) against a real
//! rewardhooks delivery.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;

#[allow(dead_code)]
#[path = "../../examples/receiver.rs"]
mod receiver;

#[tokio::test(flavor = "multi_thread")]
async fn the_example_receiver_verifies_deduplicates_and_processes_each_event_once() {
    let deployment = Deployment::new("example");
    let instance = Instance::start(&deployment).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    let (_, secret) = instance
        .api_client("alice-token")
        .subscribe(&url, &["points.*", "tier.changed"], None)
        .await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1000);
    let app = receiver::router(&secret, tx).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    instance.wait_assigned().await;

    let producer = producer();
    produce_many(&deployment, "points.earned", "evt_x", 10).await;
    // The same event again: at-least-once means receivers must expect this.
    let again = event("points.earned", "evt_x3", sample_data("points.earned", 3));
    produce_structured(&producer, &deployment.input, &again).await;
    let e = event("tier.changed", "evt_xt", sample_data("tier.changed", 2));
    produce_structured(&producer, &deployment.input, &e).await;

    let mut processed: HashMap<String, usize> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while processed.len() < 11 && tokio::time::Instant::now() < deadline {
        if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            *processed
                .entry(event["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(processed.len(), 11, "{processed:?}");
    // Once both groups committed to the ends every delivery, the duplicate
    // included, has been answered; then check it was not processed twice.
    wait_committed_to_end(&deployment, Duration::from_secs(30)).await;
    while let Ok(event) = rx.try_recv() {
        *processed
            .entry(event["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(processed.values().all(|n| *n == 1), "{processed:?}");

    // A forged request is refused.
    let resp = reqwest::Client::new()
        .post(&url)
        .header("webhook-id", "evt_forged")
        .header(
            "webhook-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header(
            "webhook-signature",
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // A correctly signed but stale one too (replay protection).
    let ts = chrono::Utc::now().timestamp() - 3600;
    let key = rewardhooks::subscriptions::Secret::from_string(secret.clone())
        .key_bytes()
        .unwrap();
    let body =
        br#"{"id":"evt_old","type":"points.earned","timestamp":"2020-01-01T00:00:00Z","data":{}}"#;
    let sig = rewardhooks::signing::signature_header(&[key.as_slice()], "evt_old", ts, body);
    let resp = reqwest::Client::new()
        .post(&url)
        .header("webhook-id", "evt_old")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}
