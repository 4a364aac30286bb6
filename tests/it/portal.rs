//! The subscriber portal in a real browser (headless Chromium over
//! WebDriver) against a real instance, broker and receivers; its headers;
//! and the stats API behind its charts.
//!
//! Needs Debian's `chromium` and `chromium-driver`
//! (`scripts/install-browser.sh`): without them the browser test is skipped
//! with a message, or fails when CHECKS_REQUIRED=1 (CI).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};

use crate::support::{
    event, produce_many, producer, sample_data, Deployment, Instance, Receiver, ADMIN_TOKEN,
};
use crate::webdriver::{browser_present, Driver};

const LONG: Duration = Duration::from_secs(60);

/// `target/portal/` (under CARGO_TARGET_DIR when set): the screenshots.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("portal");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

fn browser_or_skip() -> Option<(PathBuf, PathBuf)> {
    if let Some(found) = browser_present() {
        return Some(found);
    }
    let what = "chromium and chromedriver (scripts/install-browser.sh)";
    if std::env::var("CHECKS_REQUIRED").as_deref() == Ok("1") {
        panic!("CHECKS_REQUIRED=1 and the portal browser test cannot run: missing {what}");
    }
    println!("skipped: the portal browser test needs {what}");
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn portal_does_an_integrators_work_in_a_real_browser() {
    let Some((chromedriver, chromium)) = browser_or_skip() else {
        return;
    };
    let deployment = Deployment::new("portal").delivery(r#"retry_schedule = ["1s"]"#);
    let instance = Instance::start(&deployment).await;
    let alice = instance.api_client("alice-token");
    let bob = instance.api_client("bob-token");
    let good = Receiver::start(200, Duration::ZERO).await;
    let failing = Receiver::start(500, Duration::ZERO).await;
    let (bobs, _) = bob.subscribe(&good.url, &["points.earned"], None).await;
    let shots = screenshot_dir();

    let driver = Driver::start(&chromedriver).await;
    let browser = driver.session(&chromium, 1280, 1000).await;
    let portal = format!("{}/portal", instance.api);

    // Sign in with the token in the fragment: it moves to session storage
    // and leaves the address bar.
    browser.goto(&format!("{portal}#token=alice-token")).await;
    browser.wait_text("nav", "Endpoints", LONG).await;
    browser.find("#no-endpoints").await;
    let url = browser.current_url().await;
    assert!(
        !url.contains("alice-token"),
        "token still in the URL: {url}"
    );
    assert!(url.ends_with("#/endpoints"), "{url}");
    let stored = browser
        .run(
            "return sessionStorage.getItem('rewardhooks.portal.token')",
            json!([]),
        )
        .await;
    assert_eq!(stored, "alice-token");

    // Pages that need an API the server may not have (recover, from its own
    // issue) show exactly when /openapi.json lists it.
    let (_, doc) = alice.call("GET", "/openapi.json", None).await;
    let offers_recover = doc["paths"]["/v1/subscriptions/{id}/recover"]["post"].is_object();
    assert_eq!(
        browser.text("nav").await.contains("Recover"),
        offers_recover
    );

    // Create an endpoint through the form: a bad URL first, shown at the field.
    browser.click("#new-endpoint").await;
    browser.find("#endpoint-form").await;
    browser.type_into("#url", "not a url").await;
    browser.click(r#"input[value="points.earned"]"#).await;
    browser.click(r#"input[value="tier.changed"]"#).await;
    browser.type_into("#description", "loyalty sync").await;
    browser
        .type_into("#filter", r#"{"type": {"$ne": "tier.changed"}}"#)
        .await;
    // The filter editor says which catalog examples the filter matches.
    browser
        .wait_text(
            r#"#filter-checks [data-type="tier.changed"]"#,
            "does not match",
            LONG,
        )
        .await;
    browser
        .wait_text(
            r#"#filter-checks [data-type="points.earned"]"#,
            "matches",
            LONG,
        )
        .await;
    browser.click("#save").await;
    let error = browser.wait_text("#err-url", " ", LONG).await;
    assert!(browser.text("#form-error").await.is_empty(), "{error}");
    browser
        .screenshot(&shots.join("endpoint-form-error.png"))
        .await;
    browser.type_into("#url", &good.url).await;
    browser.click("#save").await;
    browser.wait_text("#page", "Endpoint created", LONG).await;
    let (_, list) = alice.call("GET", "/v1/subscriptions", None).await;
    let created = &list["data"][0];
    let sub = created["id"]
        .as_str()
        .expect("created through the form")
        .to_string();
    assert_eq!(created["url"], good.url.as_str());
    assert_eq!(created["description"], "loyalty sync");
    assert_eq!(
        created["event_types"],
        json!(["points.earned", "tier.changed"])
    );
    assert_eq!(created["filter"], json!({"type": {"$ne": "tier.changed"}}));
    let (_, secret) = alice
        .call("GET", &format!("/v1/subscriptions/{sub}/secret"), None)
        .await;
    good.expect(&sub, secret["secret"].as_str().unwrap());

    // Test: send one, see the request that went out and the answer.
    browser.goto(&format!("{portal}#/test?sub={sub}")).await;
    browser.click("#send-test").await;
    browser.wait_text("#test-status", "200", LONG).await;
    let headers = browser.text("#test-request-headers").await;
    for name in [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
    ] {
        assert!(headers.contains(name), "{name} missing from {headers}");
    }
    browser.screenshot(&shots.join("test.png")).await;
    assert_eq!(good.count(), 1);
    assert!(
        good.bad_signatures().is_empty(),
        "{:?}",
        good.bad_signatures()
    );

    // The attempt is in the delivery log; open it.
    browser.goto(&format!("{portal}#/log?sub={sub}")).await;
    browser
        .wait_text("#attempts tbody", "evt_test_", LONG)
        .await;
    browser.click("#attempts tbody button.link").await;
    browser
        .wait_text("#attempt-detail", "succeeded", LONG)
        .await;
    browser.screenshot(&shots.join("delivery-log.png")).await;
    // Filtered to failures: the successful test attempt is not listed.
    browser
        .run(
            "const s = document.querySelector('#filter-outcome'); s.value = 'failure'; s.dispatchEvent(new Event('change'))",
            json!([]),
        )
        .await;
    browser
        .wait_text("#attempts tbody", "No attempts.", LONG)
        .await;

    // A failing endpoint's dead letter, replayed from the page.
    let (failing_sub, failing_secret) = alice
        .subscribe(&failing.url, &["points.earned"], None)
        .await;
    failing.expect(&failing_sub, &failing_secret);
    instance.wait_assigned().await;
    produce_many(&deployment, "points.earned", "evt_portal_dlq", 1).await;
    alice
        .get_until(
            &format!("/v1/dead-letters?subscription_id={failing_sub}"),
            LONG,
            |v| v["data"].as_array().is_some_and(|d| d.len() == 1),
        )
        .await;
    failing.set_status(200);
    browser
        .goto(&format!("{portal}#/dead-letters?sub={failing_sub}"))
        .await;
    browser
        .wait_text("#dead-letters tbody", "evt_portal_dlq0", LONG)
        .await;
    browser
        .wait_text("#dead-letters tbody", "exhausted", LONG)
        .await;
    browser.screenshot(&shots.join("dead-letters.png")).await;
    browser.click("#dead-letters tbody input.pick").await;
    browser.click("#replay-selected").await;
    browser
        .wait_text("#replay-result", "Replayed 1", LONG)
        .await;
    crate::support::eventually("the replayed dead letter delivered", LONG, || {
        failing
            .completed()
            .iter()
            .any(|r| r.status == 200 && r.event_id() == "evt_portal_dlq0")
    })
    .await;
    assert!(failing.bad_signatures().is_empty());

    // Secret: reveal, rotate; the page shows what the API now signs with.
    browser.goto(&format!("{portal}#/secret?sub={sub}")).await;
    browser.click("#reveal").await;
    let old = secret["secret"].as_str().unwrap();
    browser.wait_text("#secret-value", old, LONG).await;
    browser.wait_text("#snippet", old, LONG).await;
    browser.click("#rotate").await;
    browser.click("#confirm-rotate").await;
    browser.wait_text("#secret-result", "Rotated", LONG).await;
    let (_, rotated) = alice
        .call("GET", &format!("/v1/subscriptions/{sub}/secret"), None)
        .await;
    let new = rotated["secret"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(browser.text("#secret-value").await, new);
    browser.screenshot(&shots.join("secret.png")).await;

    // The list: both of alice's endpoints with their 24 h numbers, none of bob's.
    browser.goto(&format!("{portal}#/endpoints")).await;
    browser
        .find(&format!(r#"#endpoints tr[data-id="{failing_sub}"]"#))
        .await;
    browser
        .wait_text(
            &format!(r#"#endpoints tr[data-id="{sub}"]"#),
            "100.0%",
            LONG,
        )
        .await;
    browser
        .find(&format!(r#"#endpoints tr[data-id="{sub}"] svg.chart"#))
        .await;
    let table = browser.text("#endpoints").await;
    assert!(!table.contains(&bobs), "bob's endpoint visible to alice");
    let rows = browser
        .run(
            "return document.querySelectorAll('#endpoints tbody tr').length",
            json!([]),
        )
        .await;
    assert_eq!(rows, 2);
    browser.screenshot(&shots.join("endpoints.png")).await;
    // Another owner's endpoint by id: not found, not shown.
    browser.goto(&format!("{portal}#/endpoints/{bobs}")).await;
    browser.wait_text("#page", "not found", LONG).await;

    browser.goto(&format!("{portal}#/catalog")).await;
    browser
        .wait_text("#type-points\\.earned table", "data.customer_id", LONG)
        .await;
    browser.screenshot(&shots.join("catalog.png")).await;

    // Edit: the form comes back filled in; pause from it.
    browser.goto(&format!("{portal}#/endpoints/{sub}")).await;
    browser.click("#pause").await;
    browser
        .wait_text(
            &format!(r#"#endpoints tr[data-id="{sub}"]"#),
            "paused",
            LONG,
        )
        .await;

    // Delete, after a confirmation step.
    browser
        .goto(&format!("{portal}#/endpoints/{failing_sub}"))
        .await;
    browser.click("#delete").await;
    browser.click("#confirm-delete").await;
    browser
        .find(&format!(r#"#endpoints tr[data-id="{sub}"]"#))
        .await;
    let (status, _) = alice
        .call("GET", &format!("/v1/subscriptions/{failing_sub}"), None)
        .await;
    assert_eq!(status, 404, "deleted from the page");

    // A phone-width look at the list.
    browser.set_size(390, 844).await;
    browser.screenshot(&shots.join("endpoints-phone.png")).await;
    browser.set_size(1280, 1000).await;

    // A token that is not (or no longer) valid: the expired-session page.
    browser
        .goto(&format!("{portal}#token=not-a-valid-token"))
        .await;
    browser
        .wait_text("#expired", "Your session has expired", LONG)
        .await;
    let stored = browser
        .run(
            "return sessionStorage.getItem('rewardhooks.portal.token')",
            json!([]),
        )
        .await;
    assert_eq!(stored, Value::Null, "a refused token is forgotten");
    browser.screenshot(&shots.join("expired.png")).await;
    // An API key pasted into the form signs in again (Enter submits: the
    // form works from the keyboard).
    browser.type_into("#api-key", "alice-token\u{E007}").await;
    browser.find("#endpoints").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn portal_headers_allow_framing_only_by_configured_origins() {
    let default = Deployment::new("portalcsp");
    let instance = Instance::start(&default).await;
    let resp = reqwest::get(format!("{}/portal", instance.api))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.ends_with("frame-ancestors 'none'"), "{csp}");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    drop(instance);

    let embedded = Deployment::new("portalframe")
        .api(r#"portal_frame_ancestors = ["https://platform.example.com"]"#);
    let instance = Instance::start(&embedded).await;
    let resp = reqwest::get(format!("{}/portal/assets/app.js", instance.api))
        .await
        .unwrap();
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.ends_with("frame-ancestors https://platform.example.com"),
        "{csp}"
    );
    assert!(!resp.headers().contains_key("x-frame-options"));
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_count_a_subscriptions_attempts_by_outcome() {
    let deployment = Deployment::new("stats");
    let instance = Instance::start(&deployment).await;
    let alice = instance.api_client("alice-token");
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let (sub, _) = alice.subscribe(&receiver.url, &["*"], None).await;
    for _ in 0..3 {
        let (status, v) = alice
            .call(
                "POST",
                &format!("/v1/subscriptions/{sub}/test"),
                Some(json!({"event_type": "points.earned"})),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    receiver.set_status(503);
    let (_, failed) = alice
        .call(
            "POST",
            &format!("/v1/subscriptions/{sub}/test"),
            Some(json!({"event_type": "tier.changed"})),
        )
        .await;
    assert_eq!(failed["status_code"], 503);
    // The test answer shows the request that went out.
    let names: Vec<&str> = failed["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|pair| pair[0].as_str())
        .collect();
    assert!(
        names.contains(&"webhook-signature") && names.contains(&"webhook-id"),
        "{names:?}"
    );
    let body: Value = serde_json::from_str(failed["request"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["type"], "tier.changed");

    let (status, stats) = alice
        .call(
            "GET",
            &format!("/v1/subscriptions/{sub}/stats?window=24h"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["attempts"], 4);
    assert_eq!(
        stats["outcomes"],
        json!({"success": 3, "http_error": 1, "no_response": 0})
    );
    assert_eq!(stats["success_rate"], 0.75);
    assert!(stats["p95_ms"].as_u64().is_some() && stats["p50_ms"].as_u64().is_some());
    let series = stats["series"].as_array().unwrap();
    assert_eq!(series.len(), 24);
    assert_eq!(
        series
            .iter()
            .map(|b| b["attempts"].as_u64().unwrap())
            .sum::<u64>(),
        4
    );

    let (status, _) = alice
        .call(
            "GET",
            &format!("/v1/subscriptions/{sub}/stats?window=forever"),
            None,
        )
        .await;
    assert_eq!(status, 400);
    let bob = instance.api_client("bob-token");
    let (status, _) = bob
        .call("GET", &format!("/v1/subscriptions/{sub}/stats"), None)
        .await;
    assert_eq!(status, 404, "another owner's stats");

    // The filter check the portal's editor uses: the same evaluator as fan-out.
    let (status, check) = alice
        .call(
            "POST",
            "/v1/event-types/filter-check",
            Some(json!({"filter": {"data.new_tier": {"$in": ["gold", "platinum"]}}})),
        )
        .await;
    assert_eq!(status, 200, "{check}");
    let matched: Vec<&str> = check["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["matches"] == true)
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(matched, vec!["tier.changed"], "{check}");
    let (status, bad) = alice
        .call(
            "POST",
            "/v1/event-types/filter-check",
            Some(json!({"filter": {"data.x": {"$regex": "a"}}})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(bad["error"]["code"], "invalid_filter");
}

/// Deliveries (2xx) of `id` that reached `receiver`.
fn deliveries_of(receiver: &Receiver, id: &str) -> usize {
    receiver
        .delivered()
        .iter()
        .filter(|r| r.event_id() == id)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_portal_session_link_signs_an_owner_in_to_recover_a_window_and_resend_an_event() {
    let Some((chromedriver, chromium)) = browser_or_skip() else {
        return;
    };
    let deployment = Deployment::new("portalrec");
    let instance = Instance::start(&deployment).await;
    let admin = instance.api_client(ADMIN_TOKEN);
    let (status, v) = admin
        .call(
            "POST",
            "/v1/owners",
            Some(json!({"id": "giftco", "name": "Gift Co"})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, link) = admin
        .call("POST", "/v1/owners/giftco/portal-sessions", None)
        .await;
    assert_eq!(status, 201, "{link}");
    let url = link["url"].as_str().unwrap().to_string();
    let token = link["token"].as_str().unwrap().to_string();
    assert!(url.starts_with(&instance.api), "{url}");
    let giftco = instance.api_client(&token);
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let (sub, secret) = giftco
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    receiver.expect(&sub, &secret);
    instance.wait_assigned().await;

    // An old event (outside the window the page will ask for), then three
    // recent ones.
    let producer = producer();
    let old = event("points.earned", "evt_pold", sample_data("points.earned", 0));
    let payload = serde_json::to_vec(&old).unwrap();
    producer
        .send(
            FutureRecord::to(&deployment.input)
                .key("cus_0")
                .payload(&payload)
                .timestamp(chrono::Utc::now().timestamp_millis() - 600_000),
            Duration::from_secs(10),
        )
        .await
        .expect("produce the old event");
    produce_many(&deployment, "points.earned", "evt_prec", 3).await;
    let recent: BTreeSet<String> = (0..3).map(|n| format!("evt_prec{n}")).collect();
    let mut all = recent.clone();
    all.insert("evt_pold".into());
    receiver.wait_completed(&sub, &all, LONG).await;

    // The link the admin handed out signs the owner in, and leaves the
    // address bar.
    let driver = Driver::start(&chromedriver).await;
    let browser = driver.session(&chromium, 1280, 1000).await;
    browser.goto(&url).await;
    browser.wait_text("nav", "Recover", LONG).await;
    browser
        .find(&format!(r#"#endpoints tr[data-id="{sub}"]"#))
        .await;
    assert!(!browser.current_url().await.contains(&token));

    // Recover the last five minutes from the page: the three recent events
    // come again, the old one does not.
    let portal = format!("{}/portal", instance.api);
    browser.goto(&format!("{portal}#/recover?sub={sub}")).await;
    browser.find("#recover-form").await;
    browser
        .run(
            "const d = new Date(Date.now() - 5 * 60000 - new Date().getTimezoneOffset() * 60000); \
             document.querySelector('#recover-since').value = d.toISOString().slice(0, 16);",
            json!([]),
        )
        .await;
    browser.click("#start-recover").await;
    browser.wait_text("#recover-status", "finished", LONG).await;
    browser
        .screenshot(&screenshot_dir().join("recover.png"))
        .await;
    crate::support::eventually("the window's events arrive again", LONG, || {
        recent.iter().all(|id| deliveries_of(&receiver, id) == 2)
    })
    .await;
    assert_eq!(
        deliveries_of(&receiver, "evt_pold"),
        1,
        "outside the window"
    );

    // Resend one event from its entry in the delivery log.
    browser.goto(&format!("{portal}#/log?sub={sub}")).await;
    browser.wait_text("#attempts tbody", "evt_pold", LONG).await;
    browser
        .run(
            "[...document.querySelectorAll('#attempts tbody tr')] \
               .find((tr) => tr.textContent.includes('evt_pold')) \
               .querySelector('button.link').click()",
            json!([]),
        )
        .await;
    browser.wait_text("#attempt-detail", "evt_pold", LONG).await;
    browser.click("#resend").await;
    browser
        .wait_text("#attempt-detail", "Sent again", LONG)
        .await;
    crate::support::eventually("the resent event arrives", LONG, || {
        deliveries_of(&receiver, "evt_pold") == 2
    })
    .await;
    assert!(
        receiver.bad_signatures().is_empty(),
        "{:?}",
        receiver.bad_signatures()
    );

    // Revoked by the admin: the page says the session is over.
    let (status, _) = admin
        .call("DELETE", "/v1/owners/giftco/portal-sessions", None)
        .await;
    assert_eq!(status, 204);
    browser.goto(&format!("{portal}?again#/endpoints")).await;
    browser
        .wait_text("#expired", "Your session has expired", LONG)
        .await;
    browser.close().await;
}
