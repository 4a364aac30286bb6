//! Endpoint credentials (custom headers, OAuth2 client credentials) and
//! operational events, against real receivers and a real token endpoint on
//! 127.0.0.1.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use serde_json::{json, Value};

use crate::support::*;

const BEARER: &str = "Bearer sk_live_0123456789abcdwxyz";
const API_KEY: &str = "key-0123456789-tail";

#[tokio::test(flavor = "multi_thread")]
async fn custom_headers_reach_the_endpoint_are_shown_redacted_and_sealed_at_rest() {
    let deployment = Deployment::new("headers");
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let api = instance.api_client("alice-token");
    let (status, created) = api
        .call(
            "POST",
            "/v1/subscriptions",
            Some(json!({
                "url": receiver.url,
                "event_types": ["points.earned"],
                "headers": {"Authorization": BEARER, "X-Api-Key": API_KEY},
            })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    receiver.expect(&id, created["secret"].as_str().unwrap());
    let shown = json!({"Authorization": "Bearer ****wxyz", "X-Api-Key": "****tail"});
    assert_eq!(created["headers"], shown);
    let (_, got) = api
        .call("GET", &format!("/v1/subscriptions/{id}"), None)
        .await;
    assert_eq!(got["headers"], shown, "GET shows them redacted: {got}");

    // A delivery from Kafka and a test send both carry them, signed.
    instance.wait_assigned().await;
    let e = event(
        "points.earned",
        "evt_hdr_1",
        sample_data("points.earned", 1),
    );
    produce_structured(&producer(), &deployment.input, &e).await;
    let (status, attempt) = api
        .call(
            "POST",
            &format!("/v1/subscriptions/{id}/test"),
            Some(json!({"event_type": "points.earned"})),
        )
        .await;
    assert_eq!(status, 200, "{attempt}");
    assert_eq!(attempt["success"], true, "{attempt}");
    eventually("both requests arrived", Duration::from_secs(60), || {
        receiver.delivered().len() >= 2
    })
    .await;
    let delivered = receiver.delivered();
    let ids: HashSet<String> = delivered.iter().map(|r| r.event_id()).collect();
    assert!(ids.contains("evt_hdr_1"), "{ids:?}");
    assert!(ids.iter().any(|i| i.starts_with("evt_test_")), "{ids:?}");
    for r in &delivered {
        assert_eq!(r.subscription, id, "signature verifies");
        assert_eq!(r.headers["authorization"], BEARER);
        assert_eq!(r.headers["x-api-key"], API_KEY);
        assert_eq!(r.headers["content-type"], "application/json");
    }

    // PATCH: what GET shows keeps a value; the map is replaced as a whole;
    // null removes every header.
    let (status, patched) = api
        .call(
            "PATCH",
            &format!("/v1/subscriptions/{id}"),
            Some(json!({"headers": {"Authorization": "Bearer ****wxyz", "X-Tenant": "t-1"}})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["headers"],
        json!({"Authorization": "Bearer ****wxyz", "X-Tenant": "****"})
    );
    let (status, attempt) = api
        .call(
            "POST",
            &format!("/v1/subscriptions/{id}/test"),
            Some(json!({"event_type": "tier.changed"})),
        )
        .await;
    assert_eq!(status, 200, "{attempt}");
    let last = receiver.received().last().cloned().unwrap();
    assert_eq!(last.headers["authorization"], BEARER, "kept through PATCH");
    assert_eq!(last.headers["x-tenant"], "t-1");
    assert!(
        last.headers.get("x-api-key").is_none(),
        "replaced as a whole"
    );
    let (status, cleared) = api
        .call(
            "PATCH",
            &format!("/v1/subscriptions/{id}"),
            Some(json!({"headers": null})),
        )
        .await;
    assert_eq!(status, 200, "{cleared}");
    assert!(cleared.get("headers").is_none(), "{cleared}");

    // At rest: sealed; in the logs: absent.
    let records = read_topic(
        &format!("{}.subscriptions", deployment.prefix),
        1,
        3,
        Duration::from_secs(20),
    )
    .await;
    assert!(records.len() >= 3, "create and two updates");
    for r in &records {
        let text = String::from_utf8_lossy(&r.payload);
        for plain in ["sk_live_0123456789abcdwxyz", "0123456789-tail", "t-1\""] {
            assert!(
                !text.contains(plain),
                "plaintext header value in the subscriptions topic: {text}"
            );
        }
    }
    assert!(String::from_utf8_lossy(&records[0].payload).contains("X-Api-Key"));
    let logs = instance.logs.lock().unwrap().join("\n");
    assert!(
        !logs.contains("sk_live_0123456789"),
        "header value in the logs"
    );
    assert!(
        !logs.contains("0123456789-tail"),
        "header value in the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_headers_and_auth_answer_422() {
    let deployment = Deployment::new("headers-refused");
    let instance = Instance::start(&deployment).await;
    let api = instance.api_client("alice-token");
    let url = "http://127.0.0.1:9/hook";
    let many: serde_json::Map<String, Value> =
        (0..11).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    let refused = [
        json!({"webhook-id": "x"}),
        json!({"Webhook-Signature": "v1,x"}),
        json!({"Content-Type": "text/plain"}),
        json!({"content-length": "1"}),
        json!({"Host": "example.com"}),
        json!({"Connection": "close"}),
        json!({"Transfer-Encoding": "chunked"}),
        json!({"Upgrade": "h2c"}),
        json!({"X-Bad\nName": "v"}),
        json!({"X-Split": "a\r\nInjected: 1"}),
        json!({"X-Nul": "a\u{0}b"}),
        json!({"X-Long": "v".repeat(1025)}),
        Value::Object(many),
    ];
    for headers in refused {
        let (status, body) = api
            .call(
                "POST",
                "/v1/subscriptions",
                Some(json!({"url": url, "event_types": ["*"], "headers": headers})),
            )
            .await;
        assert_eq!(status, 422, "{headers}: {body}");
        assert_eq!(
            body["error"]["code"], "invalid_headers",
            "{headers}: {body}"
        );
    }
    let auth = json!({"type": "oauth2_client_credentials", "token_url": "http://127.0.0.1:9/token",
        "client_id": "c", "client_secret": "s"});
    let (status, body) = api
        .call(
            "POST",
            "/v1/subscriptions",
            Some(json!({"url": url, "event_types": ["*"], "auth": auth,
                "headers": {"authorization": "Bearer x"}})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_headers");
    for bad in [
        json!({"type": "oauth2_client_credentials", "token_url": "ftp://127.0.0.1/token",
            "client_id": "c", "client_secret": "s"}),
        json!({"type": "oauth2_client_credentials", "token_url": "http://127.0.0.1:9/token",
            "client_id": "", "client_secret": "s"}),
    ] {
        let (status, body) = api
            .call(
                "POST",
                "/v1/subscriptions",
                Some(json!({"url": url, "event_types": ["*"], "auth": bad})),
            )
            .await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_auth", "{bad}: {body}");
    }
    let (status, body) = api
        .call(
            "POST",
            "/v1/subscriptions",
            Some(json!({"url": url, "event_types": ["*"], "auth": {"type": "basic"}})),
        )
        .await;
    assert!(status == 400 || status == 422, "{status} {body}");
    // A PATCH is checked the same way and changes nothing when refused.
    let (id, _) = api.subscribe(url, &["*"], None).await;
    let (status, body) = api
        .call(
            "PATCH",
            &format!("/v1/subscriptions/{id}"),
            Some(json!({"headers": {"webhook-timestamp": "1"}})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_headers");
}

/// A token endpoint on 127.0.0.1: client credentials grant with HTTP Basic
/// client authentication; tokens `tok_<n>` with the lifetime set now.
#[derive(Clone, Default)]
struct TokenServer {
    issued: Arc<Mutex<Vec<(String, Instant)>>>,
    requests: Arc<AtomicU32>,
    lifetime_s: Arc<AtomicU32>,
    failing: Arc<AtomicBool>,
}

async fn token(
    State(s): State<TokenServer>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("rh-client:cs_0123456789wxyz")
    );
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client"}"#.into(),
        );
    }
    if !body
        .split('&')
        .any(|p| p == "grant_type=client_credentials")
        || !body.split('&').any(|p| p == "scope=webhooks+write")
    {
        return (
            StatusCode::BAD_REQUEST,
            format!(r#"{{"error":"invalid_request","body":"{body}"}}"#),
        );
    }
    if s.failing.load(Ordering::SeqCst) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"temporarily_unavailable"}"#.into(),
        );
    }
    let mut issued = s.issued.lock().unwrap();
    let tok = format!("tok_{}", issued.len() + 1);
    issued.push((tok.clone(), Instant::now()));
    let lifetime = s.lifetime_s.load(Ordering::SeqCst);
    (
        StatusCode::OK,
        json!({"access_token": tok, "token_type": "Bearer", "expires_in": lifetime}).to_string(),
    )
}

/// An endpoint that accepts only tokens the token server issued and that
/// were not revoked; records every request.
#[derive(Clone)]
struct Protected {
    tokens: TokenServer,
    revoked: Arc<Mutex<HashSet<String>>>,
    seen: Arc<Mutex<Vec<Received>>>,
}

async fn protected(State(p): State<Protected>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let valid = p
        .tokens
        .issued
        .lock()
        .unwrap()
        .iter()
        .any(|(t, _)| *t == token)
        && !p.revoked.lock().unwrap().contains(&token);
    let status = if valid { 200 } else { 401 };
    p.seen.lock().unwrap().push(Received {
        headers,
        body,
        at: Instant::now(),
        subscription: String::new(),
        status,
    });
    StatusCode::from_u16(status).unwrap()
}

fn bearer(r: &Received) -> String {
    r.headers["authorization"]
        .to_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth2_tokens_are_cached_then_fetched_again_after_expiry_and_once_after_a_401() {
    let deployment = Deployment::new("oauth2").delivery(r#"retry_schedule = ["1s", "2s", "3s"]"#);
    let instance = Instance::start(&deployment).await;
    let tokens = TokenServer::default();
    tokens.lifetime_s.store(3600, Ordering::SeqCst);
    let endpoint = Protected {
        tokens: tokens.clone(),
        revoked: Default::default(),
        seen: Default::default(),
    };
    let router = axum::Router::new()
        .route("/token", axum::routing::post(token))
        .with_state(tokens.clone())
        .merge(
            axum::Router::new()
                .route("/hook", axum::routing::post(protected))
                .with_state(endpoint.clone()),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let api = instance.api_client("alice-token");
    let (status, created) = api
        .call(
            "POST",
            "/v1/subscriptions",
            Some(json!({
                "url": format!("{base}/hook"),
                "event_types": ["points.earned"],
                "auth": {"type": "oauth2_client_credentials", "token_url": format!("{base}/token"),
                    "client_id": "rh-client", "client_secret": "cs_0123456789wxyz",
                    "scope": "webhooks write"},
            })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["auth"]["client_secret"], "****wxyz", "{created}");
    assert_eq!(created["auth"]["client_id"], "rh-client");
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    instance.wait_assigned().await;
    let deliver = |event_id: &'static str| {
        let input = deployment.input.clone();
        async move {
            let e = event("points.earned", event_id, sample_data("points.earned", 1));
            produce_structured(&producer(), &input, &e).await;
        }
    };
    let seen = |event_id: &str| -> Vec<Received> {
        endpoint
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.event_id() == event_id)
            .cloned()
            .collect()
    };
    let accepted = |event_id: &str| seen(event_id).iter().any(|r| r.status == 200);

    // A long-lived token is fetched once and used for every delivery.
    for e in ["evt_oa_1", "evt_oa_2", "evt_oa_3"] {
        deliver(e).await;
    }
    eventually("three deliveries accepted", Duration::from_secs(60), || {
        ["evt_oa_1", "evt_oa_2", "evt_oa_3"]
            .iter()
            .all(|e| accepted(e))
    })
    .await;
    assert_eq!(tokens.requests.load(Ordering::SeqCst), 1, "one token fetch");
    for e in ["evt_oa_1", "evt_oa_2", "evt_oa_3"] {
        let r = seen(e);
        assert_eq!(r.len(), 1, "{e}: no 401, no retry");
        assert_eq!(bearer(&r[0]), "tok_1");
        r[0].verify(&secret).expect("signed as usual");
    }

    // The endpoint stops accepting it: one 401, a fresh token, the same
    // attempt again, accepted; the attempt counts once, as a success.
    endpoint.revoked.lock().unwrap().insert("tok_1".into());
    tokens.lifetime_s.store(2, Ordering::SeqCst);
    deliver("evt_oa_4").await;
    eventually("evt_oa_4 accepted", Duration::from_secs(60), || {
        accepted("evt_oa_4")
    })
    .await;
    let r = seen("evt_oa_4");
    assert_eq!(
        r.iter().map(|r| (bearer(r), r.status)).collect::<Vec<_>>(),
        vec![("tok_1".to_string(), 401), ("tok_2".to_string(), 200)]
    );
    assert_eq!(tokens.requests.load(Ordering::SeqCst), 2);
    let attempts = api
        .get_until(
            &format!("/v1/subscriptions/{id}/attempts"),
            Duration::from_secs(20),
            |v| {
                v["data"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["event_id"] == "evt_oa_4"))
            },
        )
        .await;
    let logged: Vec<&Value> = attempts["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["event_id"] == "evt_oa_4")
        .collect();
    assert_eq!(logged.len(), 1, "{attempts}");
    assert_eq!(logged[0]["success"], true);
    assert_eq!(logged[0]["attempt"], 1);

    // tok_2 lives 2 s: once that has passed, the next delivery fetches a new one.
    let tok_2_issued = tokens.issued.lock().unwrap()[1].1;
    eventually("tok_2 expired", Duration::from_secs(10), || {
        tok_2_issued.elapsed() > Duration::from_secs(2)
    })
    .await;
    deliver("evt_oa_5").await;
    eventually("evt_oa_5 accepted", Duration::from_secs(60), || {
        accepted("evt_oa_5")
    })
    .await;
    let r = seen("evt_oa_5");
    assert_eq!(r.len(), 1);
    assert_eq!(bearer(&r[0]), "tok_3", "fetched again after expiry");
    assert_eq!(tokens.requests.load(Ordering::SeqCst), 3);

    // The token endpoint fails: the attempt fails as retryable, with the
    // reason in the delivery log, and succeeds once it answers again.
    tokens.failing.store(true, Ordering::SeqCst);
    let tok_3_issued = tokens.issued.lock().unwrap()[2].1;
    eventually("tok_3 expired", Duration::from_secs(10), || {
        tok_3_issued.elapsed() > Duration::from_secs(2)
    })
    .await;
    deliver("evt_oa_6").await;
    let attempts = api
        .get_until(
            &format!("/v1/subscriptions/{id}/attempts"),
            Duration::from_secs(60),
            |v| {
                v["data"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["event_id"] == "evt_oa_6"))
            },
        )
        .await;
    let failed = attempts["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["event_id"] == "evt_oa_6")
        .cloned()
        .unwrap();
    assert_eq!(failed["success"], false, "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("oauth2") && error.contains("HTTP 500"),
        "{error}"
    );
    assert!(seen("evt_oa_6").is_empty(), "not sent without a token");
    tokens.failing.store(false, Ordering::SeqCst);
    eventually(
        "evt_oa_6 accepted after a retry",
        Duration::from_secs(60),
        || accepted("evt_oa_6"),
    )
    .await;
    let logs = instance.logs.lock().unwrap().join("\n");
    assert!(
        !logs.contains("cs_0123456789wxyz"),
        "client secret in the logs"
    );
    assert!(!logs.contains("tok_"), "access token in the logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_disabled_by_410_notifies_only_its_owners_subscriptions_that_list_the_type()
{
    let deployment = Deployment::new("opevents");
    let instance = Instance::start(&deployment).await;
    let gone = Receiver::start(410, Duration::ZERO).await;
    let watch = Receiver::start(200, Duration::ZERO).await;
    let alice = instance.api_client("alice-token");
    let bob = instance.api_client("bob-token");
    const DISABLED: &str = "rewardhooks.subscription.disabled";
    let (a, _) = alice.subscribe(&gone.url, &["points.earned"], None).await;
    let (b, b_secret) = alice.subscribe(&watch.url, &[DISABLED], None).await;
    let (c, c_secret) = bob.subscribe(&watch.url, &[DISABLED], None).await;
    let (d, d_secret) = alice.subscribe(&watch.url, &["*"], None).await;
    let (e, e_secret) = alice.subscribe(&watch.url, &["rewardhooks.*"], None).await;
    for (id, secret) in [
        (&b, &b_secret),
        (&c, &c_secret),
        (&d, &d_secret),
        (&e, &e_secret),
    ] {
        watch.expect(id, secret);
    }
    instance.wait_assigned().await;

    // Forged on an input topic: refused, never delivered.
    let forged = event(
        DISABLED,
        "evt_forged",
        json!({"owner": "alice", "subscription_id": a, "reason": "forged", "disabled_at": "2026-11-27T10:20:00Z"}),
    );
    produce_structured(&producer(), &deployment.input, &forged).await;
    let e1 = event(
        "points.earned",
        "evt_gone_1",
        sample_data("points.earned", 1),
    );
    produce_structured(&producer(), &deployment.input, &e1).await;

    let notices = |sub: &str| -> Vec<Value> {
        watch
            .delivered()
            .iter()
            .filter(|r| r.subscription == sub)
            .map(Received::json)
            .filter(|v| {
                v["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("rewardhooks."))
            })
            .collect()
    };
    eventually("B is told A was disabled", Duration::from_secs(60), || {
        !notices(&b).is_empty()
    })
    .await;
    let (_, got) = alice
        .call("GET", &format!("/v1/subscriptions/{a}"), None)
        .await;
    assert_eq!(got["status"], "disabled", "{got}");
    // The notice went out with the others of its fan-out: a short wait for
    // any straggler proves the absence below (nothing else is awaited).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let to_b = notices(&b);
    assert_eq!(to_b.len(), 1, "exactly one: {to_b:?}");
    let notice = &to_b[0];
    assert_eq!(notice["type"], DISABLED);
    assert_eq!(notice["data"]["owner"], "alice");
    assert_eq!(notice["data"]["subscription_id"], a.as_str());
    assert!(
        notice["data"]["reason"].as_str().unwrap().contains("410"),
        "{notice}"
    );
    assert_ne!(notice["id"], "evt_forged");
    assert!(notices(&c).is_empty(), "another owner's subscription");
    assert!(notices(&d).is_empty(), "a * subscription");
    assert!(notices(&e).is_empty(), "a rewardhooks.* subscription");
    assert!(watch.bad_signatures().is_empty());
    // D still got the reward event: wildcards work for everything else.
    assert!(watch.completed_ids(&d).contains("evt_gone_1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_opened_circuit_and_a_dead_letter_notify_the_owners_listing_subscription() {
    let deployment = Deployment::new("opevents-circuit")
        .delivery(r#"retry_schedule = ["1s"]"#)
        .delivery("circuit_breaker_threshold = 2")
        .delivery(r#"circuit_breaker_cooldown = "1s""#);
    let instance = Instance::start(&deployment).await;
    let failing = Receiver::start(500, Duration::ZERO).await;
    let watch = Receiver::start(200, Duration::ZERO).await;
    let alice = instance.api_client("alice-token");
    const OPENED: &str = "rewardhooks.subscription.circuit_opened";
    const DEAD: &str = "rewardhooks.dead_letter.created";
    let (f, _) = alice
        .subscribe(&failing.url, &["points.earned"], None)
        .await;
    let (w, w_secret) = alice.subscribe(&watch.url, &[OPENED, DEAD], None).await;
    watch.expect(&w, &w_secret);
    instance.wait_assigned().await;
    for n in 0..2 {
        let e = event(
            "points.earned",
            &format!("evt_cb_{n}"),
            sample_data("points.earned", n),
        );
        produce_structured(&producer(), &deployment.input, &e).await;
    }
    let of_type = |t: &str| -> Vec<Value> {
        watch
            .delivered()
            .iter()
            .filter(|r| r.subscription == w)
            .map(Received::json)
            .filter(|v| v["type"] == t)
            .collect()
    };
    eventually(
        "a circuit_opened and a dead_letter.created notice",
        Duration::from_secs(60),
        || !of_type(OPENED).is_empty() && !of_type(DEAD).is_empty(),
    )
    .await;
    let opened = &of_type(OPENED)[0];
    assert_eq!(opened["data"]["owner"], "alice");
    assert_eq!(opened["data"]["subscription_id"], f.as_str());
    assert!(opened["data"]["open_until"].is_string(), "{opened}");
    let dead = &of_type(DEAD)[0];
    assert_eq!(dead["data"]["subscription_id"], f.as_str(), "{dead}");
    assert_eq!(dead["data"]["reason"], "exhausted", "{dead}");
    assert_eq!(
        dead["data"]["count"], 1,
        "the first of a quiet minute: {dead}"
    );
    assert!(
        dead["data"]["event_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("evt_cb_")),
        "{dead}"
    );
    assert!(watch.bad_signatures().is_empty());
}
