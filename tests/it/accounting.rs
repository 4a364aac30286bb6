//! The fixture's own accounting, checked without rewardhooks: a request
//! whose sender goes away before the answer is counted as cut off, not as
//! completed, and a signature no registered secret verifies is reported.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_request_cut_off_by_its_sender_is_not_counted_as_completed() {
    let receiver = Receiver::start(200, Duration::from_secs(3)).await;
    let client = reqwest::Client::new();
    // The sender gives up (closes the connection) long before the answer.
    let cut = client
        .post(&receiver.url)
        .header("webhook-id", "evt_cut")
        .timeout(Duration::from_millis(300))
        .body("{}")
        .send()
        .await;
    assert!(cut.is_err(), "the client timed out");
    eventually(
        "the dropped handler counted",
        Duration::from_secs(10),
        || receiver.cut_off() == 1,
    )
    .await;
    assert_eq!(receiver.count(), 1, "it arrived");
    assert!(receiver.completed().is_empty(), "but never completed");
    assert!(receiver.delivered().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn completed_requests_are_tallied_per_event_and_subscription_and_forgeries_reported() {
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let secret = "whsec_Zml4dHVyZS1zZWxmLXRlc3Qtc2VjcmV0LTMyLWJ5dGU=";
    receiver.expect("sub_a", secret);
    let key = rewardhooks::subscriptions::Secret::from_string(secret.to_string())
        .key_bytes()
        .unwrap();
    let client = reqwest::Client::new();
    let send = |id: &'static str, signature: String| {
        let client = client.clone();
        let url = receiver.url.clone();
        let key = key.clone();
        async move {
            let ts = chrono::Utc::now().timestamp();
            let body = format!(r#"{{"id":"{id}"}}"#);
            let signature = if signature.is_empty() {
                rewardhooks::signing::signature_header(&[key.as_slice()], id, ts, body.as_bytes())
            } else {
                signature
            };
            client
                .post(url)
                .header("webhook-id", id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", signature)
                .body(body)
                .send()
                .await
                .unwrap();
        }
    };
    send("evt_1", String::new()).await;
    send("evt_1", String::new()).await;
    send("evt_2", String::new()).await;
    send(
        "evt_forged",
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
    )
    .await;
    let tally = receiver.tally();
    assert_eq!(tally[&("evt_1".to_string(), "sub_a".to_string())], 2);
    assert_eq!(tally[&("evt_2".to_string(), "sub_a".to_string())], 1);
    assert_eq!(receiver.duplicates(), 1);
    let bad = receiver.bad_signatures();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].0, "evt_forged");
}
