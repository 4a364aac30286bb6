//! Owners as data: onboarding through the API with no restart, API keys and
//! their revocation on every instance, scopes enforced at fan-out, limits,
//! portal sessions, suspension, and the audit trail.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// Calls until the answer's status is `want` or `timeout` passes; returns
/// the last status and body.
async fn status_until(
    api: &Api,
    method: &str,
    path: &str,
    want: u16,
    timeout: Duration,
) -> (u16, Value) {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, v) = api.call(method, path, None).await;
        if status == want || Instant::now() > deadline {
            return (status, v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates an owner through the admin API.
async fn create_owner(admin: &Api, body: Value) -> Value {
    let (status, v) = admin.call("POST", "/v1/owners", Some(body)).await;
    assert_eq!(status, 201, "create owner: {v}");
    v
}

/// Creates an API key for `owner`; returns (key id, token).
async fn create_key(admin: &Api, owner: &str) -> (String, String) {
    let (status, v) = admin
        .call(
            "POST",
            &format!("/v1/owners/{owner}/keys"),
            Some(json!({"name": "it"})),
        )
        .await;
    assert_eq!(status, 201, "create key: {v}");
    let token = v["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("rhk_"), "{token}");
    (v["id"].as_str().unwrap().to_string(), token)
}

/// Event ids fanned out to exactly `copies` subscriptions in the deliveries
/// topic (read to its end).
async fn ids_with_copies(
    deployment: &Deployment,
    at_least: usize,
    copies: usize,
) -> BTreeSet<String> {
    let records = read_topic(
        &format!("{}.deliveries", deployment.prefix),
        deployment.partitions,
        at_least,
        Duration::from_secs(30),
    )
    .await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        let body: Value = serde_json::from_slice(&r.payload).unwrap_or(Value::Null);
        if let Some(id) = body["id"].as_str() {
            *counts.entry(id.to_string()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n == copies)
        .map(|(id, _)| id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_and_key_made_on_one_instance_work_on_another_within_seconds_and_revoking_stops_both(
) {
    let deployment = Deployment::new("onboard");
    let a = Instance::start(&deployment).await;
    let b = Instance::start(&deployment).await;
    let admin = a.api_client(ADMIN_TOKEN);
    create_owner(&admin, json!({"id": "crm", "name": "CRM Inc"})).await;
    let (key_id, token) = create_key(&admin, "crm").await;

    let on_a = a.api_client(&token);
    let on_b = b.api_client(&token);
    let (status, me) = status_until(&on_b, "GET", "/v1/me", 200, Duration::from_secs(5)).await;
    assert_eq!(status, 200, "the key works on instance B within 5 s: {me}");
    assert_eq!(me["id"], "crm");
    let (status, _) = on_a.call("GET", "/v1/subscriptions", None).await;
    assert_eq!(status, 200);

    // Its use is noted (to within a minute) and listed, never its token.
    let keys = admin
        .get_until("/v1/owners/crm/keys", Duration::from_secs(10), |v| {
            !v["data"][0]["last_used_at"].is_null()
        })
        .await;
    assert_eq!(keys["data"][0]["id"], key_id.as_str(), "{keys}");
    assert!(!keys["data"][0]["last_used_at"].is_null(), "{keys}");
    assert!(keys["data"][0].get("token").is_none(), "{keys}");
    assert!(!keys.to_string().contains(&token));

    // A second key: rotation without downtime; then the first is revoked.
    let (_, second) = create_key(&admin, "crm").await;
    let (status, v) = admin
        .call("DELETE", &format!("/v1/owners/crm/keys/{key_id}"), None)
        .await;
    assert_eq!(status, 204, "{v}");
    for (name, api) in [("A", &on_a), ("B", &on_b)] {
        let (status, v) = status_until(api, "GET", "/v1/me", 401, Duration::from_secs(5)).await;
        assert_eq!(status, 401, "revoked key on instance {name}: {v}");
    }
    let (status, _) = status_until(
        &b.api_client(&second),
        "GET",
        "/v1/me",
        200,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status, 200, "the second key keeps working");
}

/// Produces `n` mixed events (ids `evt_<phase>_<i>`); returns the
/// redemptions' ids by merchant (`none` without one) and the tier changes'.
/// Redemptions alternate merchants and small (5) and large (500) points.
async fn produce_mixed(
    producer: &rdkafka::producer::FutureProducer,
    input: &str,
    phase: &str,
    n: usize,
) -> (BTreeMap<&'static str, BTreeSet<String>>, BTreeSet<String>) {
    let types = [
        "points.earned",
        "points.redeemed",
        "tier.changed",
        "profile.updated",
    ];
    let merchants = [Some("giftco"), Some("flowers"), None];
    let mut redeemed: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    let mut tiers = BTreeSet::new();
    for i in 0..n {
        let kind = types[i % types.len()];
        let id = format!("evt_{phase}_{i}");
        let mut data = sample_data(kind, i);
        if kind == "points.redeemed" {
            let merchant = merchants[(i / types.len()) % merchants.len()];
            if let Some(m) = merchant {
                data["merchant_id"] = json!(m);
            }
            data["points"] = json!(if (i / 4) % 2 == 0 { 5 } else { 500 });
            redeemed
                .entry(merchant.unwrap_or("none"))
                .or_default()
                .insert(id.clone());
        } else if kind == "tier.changed" {
            tiers.insert(id.clone());
        }
        produce_structured(producer, input, &event(kind, &id, data)).await;
    }
    (redeemed, tiers)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "over a minute: run by make test-slow"]
async fn an_owner_receives_only_what_its_scope_grants_and_a_changed_scope_applies_to_the_next_events(
) {
    let deployment = Deployment::new("scope");
    let instance = Instance::start(&deployment).await;
    let admin = instance.api_client(ADMIN_TOKEN);
    create_owner(
        &admin,
        json!({"id": "giftco", "name": "Gift Co",
               "scope": {"event_types": ["points.redeemed"],
                         "filter": {"data.merchant_id": {"$eq": "giftco"}}}}),
    )
    .await;
    let (_, token) = create_key(&admin, "giftco").await;
    let giftco = instance.api_client(&token);
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let (sub, secret) = giftco.subscribe(&receiver.url, &["*"], None).await;
    receiver.expect(&sub, &secret);
    // A bootstrap owner (config token) with no scope: it sees everything,
    // so the deliveries topic shows which events reached both.
    let control = Receiver::start(200, Duration::ZERO).await;
    let (control_sub, control_secret) = instance
        .api_client("alice-token")
        .subscribe(&control.url, &["*"], None)
        .await;
    control.expect(&control_sub, &control_secret);
    instance.wait_assigned().await;

    let producer = producer();
    let input = deployment.input.clone();
    let mut produced = 0;

    // 200 mixed events: giftco gets exactly its merchant's redemptions.
    let (redeemed, _) = produce_mixed(&producer, &input, "a", 200).await;
    produced += 200;
    let want = redeemed["giftco"].clone();
    assert!(want.len() > 10);
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
    receiver
        .wait_completed(&sub, &want, Duration::from_secs(30))
        .await;
    assert_eq!(
        control.distinct_ids().len(),
        200,
        "the control saw every event"
    );
    assert_eq!(receiver.completed_ids(&sub), want);
    assert!(receiver.bad_signatures().is_empty());
    assert!(receiver
        .delivered()
        .iter()
        .all(|r| r.json()["type"] == "points.redeemed"
            && r.json()["data"]["merchant_id"] == "giftco"));
    assert_eq!(
        ids_with_copies(&deployment, 200 + want.len(), 2).await,
        want
    );

    // Narrowed: only its large redemptions from now on.
    let (status, v) = admin
        .call(
            "PATCH",
            "/v1/owners/giftco",
            Some(json!({"scope": {"event_types": ["points.redeemed"],
                                  "filter": {"data.merchant_id": {"$eq": "giftco"},
                                             "data.points": {"$gte": 100}}}})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (redeemed, _) = produce_mixed(&producer, &input, "b", 80).await;
    produced += 80;
    let narrowed: BTreeSet<String> = redeemed["giftco"]
        .iter()
        .filter(|id| {
            let i: usize = id.rsplit('_').next().unwrap().parse().unwrap();
            (i / 4) % 2 == 1
        })
        .cloned()
        .collect();
    assert!(!narrowed.is_empty() && narrowed.len() < redeemed["giftco"].len());

    // Widened: every merchant's redemptions and tier changes.
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
    let (status, v) = admin
        .call(
            "PATCH",
            "/v1/owners/giftco",
            Some(json!({"scope": {"event_types": ["points.redeemed", "tier.changed"]}})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (redeemed, tiers) = produce_mixed(&producer, &input, "c", 40).await;
    produced += 40;
    let widened: BTreeSet<String> = redeemed.values().flatten().chain(&tiers).cloned().collect();

    let all: BTreeSet<String> = want
        .iter()
        .chain(&narrowed)
        .chain(&widened)
        .cloned()
        .collect();
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
    receiver
        .wait_completed(&sub, &all, Duration::from_secs(30))
        .await;
    assert_eq!(control.distinct_ids().len(), produced);
    assert_eq!(receiver.completed_ids(&sub), all);
    assert_eq!(
        ids_with_copies(&deployment, produced + all.len(), 2).await,
        all
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_outside_the_scope_or_above_the_rate_cap_are_refused() {
    let deployment = Deployment::new("limits");
    let instance = Instance::start(&deployment).await;
    let admin = instance.api_client(ADMIN_TOKEN);
    create_owner(
        &admin,
        json!({"id": "giftco", "name": "Gift Co", "max_subscriptions": 2,
               "max_rate_per_second": 10,
               "scope": {"event_types": ["points.redeemed"]}}),
    )
    .await;
    let (_, token) = create_key(&admin, "giftco").await;
    let giftco = instance.api_client(&token);
    let url = "http://127.0.0.1:9/hook";

    let (status, v) = giftco
        .call(
            "POST",
            "/v1/subscriptions",
            Some(json!({"url": url, "event_types": ["profile.updated"]})),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (422, json!("outside_scope")),
        "{v}"
    );
    let (status, v) = giftco
        .call(
            "POST",
            "/v1/subscriptions",
            Some(json!({"url": url, "event_types": ["points.redeemed"],
                        "rate_limit": {"per_second": 50, "burst": 50}})),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (422, json!("invalid_rate_limit")),
        "{v}"
    );

    // No rate set: the owner's cap is its rate.
    let (status, v) = giftco
        .call(
            "POST",
            "/v1/subscriptions",
            Some(json!({"url": url, "event_types": ["points.*"]})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["rate_limit"]["per_second"], 10, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (status, v) = giftco
        .call(
            "PATCH",
            &format!("/v1/subscriptions/{id}"),
            Some(json!({"event_types": ["tier.changed"]})),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (422, json!("outside_scope")),
        "{v}"
    );
    let (status, v) = giftco
        .call(
            "PATCH",
            &format!("/v1/subscriptions/{id}"),
            Some(json!({"rate_limit": {"per_second": 11, "burst": 11}})),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (422, json!("invalid_rate_limit")),
        "{v}"
    );

    // max_subscriptions.
    giftco.subscribe(url, &["points.redeemed"], None).await;
    let (status, v) = giftco
        .call(
            "POST",
            "/v1/subscriptions",
            Some(json!({"url": url, "event_types": ["points.redeemed"]})),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (409, json!("limit_reached")),
        "{v}"
    );

    // The owner reads its scope and limits, read-only.
    let (status, me) = giftco.call("GET", "/v1/me", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        me["owner"]["scope"]["event_types"],
        json!(["points.redeemed"])
    );
    assert_eq!(me["subscriptions"], 2);
    let (status, _) = giftco
        .call("PATCH", "/v1/owners/giftco", Some(json!({"scope": null})))
        .await;
    assert_eq!(status, 403, "an owner cannot change its own scope");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_portal_session_acts_as_its_owner_alone_until_it_expires_or_is_revoked() {
    let deployment = Deployment::new("portal");
    let instance = Instance::start(&deployment).await;
    let admin = instance.api_client(ADMIN_TOKEN);
    create_owner(&admin, json!({"id": "giftco", "name": "Gift Co"})).await;
    let (alice_sub, _) = instance
        .api_client("alice-token")
        .subscribe("http://127.0.0.1:9/alice", &["*"], None)
        .await;

    let (status, v) = admin
        .call(
            "POST",
            "/v1/owners/giftco/portal-sessions",
            Some(json!({"ttl": "4s"})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    assert!(
        v["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/portal#token={token}")),
        "{v}"
    );
    let session = instance.api_client(&token);
    let (status, me) = session.call("GET", "/v1/me", None).await;
    assert_eq!((status, me["id"].clone()), (200, json!("giftco")), "{me}");
    let (mine, _) = session
        .subscribe("http://127.0.0.1:9/giftco", &["tier.changed"], None)
        .await;
    let (_, list) = session.call("GET", "/v1/subscriptions", None).await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![mine.as_str()]);
    let (status, _) = session
        .call("GET", &format!("/v1/subscriptions/{alice_sub}"), None)
        .await;
    assert_eq!(status, 404, "another owner's subscription");
    for (method, path) in [
        ("GET", "/v1/owners"),
        ("GET", "/v1/owners/giftco/keys"),
        ("POST", "/v1/owners/giftco/portal-sessions"),
        ("GET", "/v1/audit"),
    ] {
        let (status, v) = session.call(method, path, None).await;
        assert_eq!(status, 403, "{method} {path}: {v}");
    }
    let (status, _) = status_until(&session, "GET", "/v1/me", 401, Duration::from_secs(15)).await;
    assert_eq!(status, 401, "the session expired");

    // Default lifetime one hour; revoking ends every session of the owner.
    let (status, v) = admin
        .call("POST", "/v1/owners/giftco/portal-sessions", None)
        .await;
    assert_eq!(status, 201, "{v}");
    let expires: chrono::DateTime<chrono::Utc> = v["expires_at"].as_str().unwrap().parse().unwrap();
    let left = expires - chrono::Utc::now();
    assert!(left > chrono::TimeDelta::minutes(55) && left <= chrono::TimeDelta::minutes(60));
    let session = instance.api_client(v["token"].as_str().unwrap());
    assert_eq!(session.call("GET", "/v1/me", None).await.0, 200);
    let (status, _) = admin
        .call("DELETE", "/v1/owners/giftco/portal-sessions", None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(session.call("GET", "/v1/me", None).await.0, 401);

    let (status, v) = admin
        .call(
            "POST",
            "/v1/owners/giftco/portal-sessions",
            Some(json!({"ttl": "25h"})),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (422, json!("invalid_ttl"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_are_audited_with_actor_and_target_and_no_secret_or_token_reaches_the_audit_topic()
{
    let deployment = Deployment::new("audit");
    let instance = Instance::start(&deployment).await;
    let admin = instance.api_client(ADMIN_TOKEN);
    create_owner(&admin, json!({"id": "giftco", "name": "Gift Co"})).await;
    let (key_id, token) = create_key(&admin, "giftco").await;
    let giftco = instance.api_client(&token);
    let (sub, secret) = giftco
        .subscribe("http://127.0.0.1:9/hook", &["points.redeemed"], None)
        .await;
    let (status, rotated) = giftco
        .call(
            "POST",
            &format!("/v1/subscriptions/{sub}/secret/rotate"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = giftco
        .call("GET", &format!("/v1/subscriptions/{sub}/secret"), None)
        .await;
    assert_eq!(status, 200);
    let (status, session) = admin
        .call("POST", "/v1/owners/giftco/portal-sessions", None)
        .await;
    assert_eq!(status, 201);
    let (status, _) = admin
        .call("DELETE", &format!("/v1/owners/giftco/keys/{key_id}"), None)
        .await;
    assert_eq!(status, 204);

    let trail = admin
        .get_until("/v1/audit?owner=giftco", Duration::from_secs(10), |v| {
            v["data"].as_array().is_some_and(|d| d.len() >= 7)
        })
        .await;
    let records = trail["data"].as_array().unwrap();
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "owner.key.revoke",
            "owner.portal_session.create",
            "subscription.secret.read",
            "subscription.secret.rotate",
            "subscription.create",
            "owner.key.create",
            "owner.create",
        ],
        "newest first: {trail}"
    );
    let by_action = |a: &str| records.iter().find(|r| r["action"] == a).unwrap();
    let create = by_action("subscription.create");
    assert_eq!(
        create["actor"],
        json!({"owner": "giftco", "key_id": key_id})
    );
    assert_eq!(create["target"], sub.as_str());
    assert!(create["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(create["source"].as_str().unwrap().starts_with("127.0.0.1:"));
    let rotate = by_action("subscription.secret.rotate");
    assert_eq!(rotate["actor"]["owner"], "giftco");
    assert_eq!(rotate["target"], sub.as_str());
    let revoke = by_action("owner.key.revoke");
    assert_eq!(revoke["actor"], json!({"owner": "admin"}));
    assert_eq!(revoke["target"], key_id.as_str());

    // Paginated like every list.
    let (_, page) = admin
        .call("GET", "/v1/audit?owner=giftco&limit=3", None)
        .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, next) = admin
        .call(
            "GET",
            &format!("/v1/audit?owner=giftco&limit=3&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(
        next["data"][0]["action"], "subscription.secret.rotate",
        "{next}"
    );

    // Nothing secret anywhere in the topic.
    let raw = read_topic(
        &format!("{}.audit", deployment.prefix),
        1,
        7,
        Duration::from_secs(10),
    )
    .await;
    let text: String = raw
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    for needle in [
        token.as_str(),
        secret.as_str(),
        rotated["secret"].as_str().unwrap(),
        session["token"].as_str().unwrap(),
        "whsec_",
        "rhk_",
        "rhs_",
    ] {
        assert!(!text.contains(needle), "the audit topic holds {needle:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_suspended_owners_keys_answer_403_and_its_deliveries_are_held_until_it_is_active_again() {
    let deployment = Deployment::new("suspend").delivery(r#"retry_schedule = ["1s", "2s", "4s"]"#);
    let instance = Instance::start(&deployment).await;
    let admin = instance.api_client(ADMIN_TOKEN);
    create_owner(&admin, json!({"id": "mailer", "name": "Mailer"})).await;
    let (_, token) = create_key(&admin, "mailer").await;
    let mailer = instance.api_client(&token);
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let (sub, secret) = mailer
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    receiver.expect(&sub, &secret);
    let control = Receiver::start(200, Duration::ZERO).await;
    instance
        .api_client("alice-token")
        .subscribe(&control.url, &["points.earned"], None)
        .await;
    instance.wait_assigned().await;

    let (status, v) = admin
        .call(
            "PATCH",
            "/v1/owners/mailer",
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = mailer.call("GET", "/v1/subscriptions", None).await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (403, json!("owner_suspended")),
        "{v}"
    );

    produce_many(&deployment, "points.earned", "evt_held_", 5).await;
    eventually(
        "the control got every event",
        Duration::from_secs(30),
        || control.distinct_ids().len() == 5,
    )
    .await;
    // Fanned out for the mailer too (held, not dropped), yet not sent.
    let held = ids_with_copies(&deployment, 10, 2).await;
    assert_eq!(held.len(), 5, "both subscriptions got every event");
    // Parked in the first retry tier without an attempt.
    let parked = read_topic(
        &format!("{}.retry.1s", deployment.prefix),
        deployment.partitions,
        5,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        parked.len() >= 5,
        "held deliveries are parked: {}",
        parked.len()
    );
    assert_eq!(receiver.count(), 0, "nothing reached the suspended owner");

    let (status, _) = admin
        .call(
            "PATCH",
            "/v1/owners/mailer",
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(mailer.call("GET", "/v1/me", None).await.0, 200);
    receiver
        .wait_completed(&sub, &held, Duration::from_secs(60))
        .await;
    assert!(receiver.bad_signatures().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_past_its_expiry_answers_401_and_a_past_expiry_is_refused() {
    let deployment = Deployment::new("keyexp");
    let instance = Instance::start(&deployment).await;
    let admin = instance.api_client(ADMIN_TOKEN);
    create_owner(&admin, json!({"id": "giftco", "name": "Gift Co"})).await;
    let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(4))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (status, v) = admin
        .call(
            "POST",
            "/v1/owners/giftco/keys",
            Some(json!({"name": "short", "expires_at": soon})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let key = instance.api_client(v["token"].as_str().unwrap());
    let (status, me) = key.call("GET", "/v1/me", None).await;
    assert_eq!((status, me["id"].clone()), (200, json!("giftco")), "{me}");
    let (status, v) = status_until(&key, "GET", "/v1/me", 401, Duration::from_secs(15)).await;
    assert_eq!(status, 401, "the key expired: {v}");

    let past = (chrono::Utc::now() - chrono::TimeDelta::seconds(60))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (status, v) = admin
        .call(
            "POST",
            "/v1/owners/giftco/keys",
            Some(json!({"expires_at": past})),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "invalid_expires_at");
}
