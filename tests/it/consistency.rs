//! Subscription state every instance agrees on: writes are decided in log
//! order, so concurrent API calls cannot undo each other.

use std::collections::BTreeSet;

use futures::future::join_all;
use serde_json::json;

use crate::support::*;

const HOOK: &str = "http://127.0.0.1:9/hook";

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_racing_patches_and_rotations_is_never_undone() {
    let deployment = Deployment::new("delrace");
    let a = Instance::start(&deployment).await;
    let b = Instance::start(&deployment).await;
    a.wait_assigned().await;
    b.wait_assigned().await;
    let receiver = Receiver::start(200, std::time::Duration::ZERO).await;
    let (api, other) = (a.api_client(ADMIN_TOKEN), b.api_client(ADMIN_TOKEN));
    for trial in 0..20 {
        let (id, _) = api.subscribe(&receiver.url, &["points.earned"], None).await;
        let path = format!("/v1/subscriptions/{id}");
        let rotate = format!("{path}/secret/rotate");
        // The delete goes through one instance, the racing writes through
        // both.
        let patch = |n: usize| {
            let (api, path) = (if n % 2 == 0 { &api } else { &other }, &path);
            async move {
                api.call("PATCH", path, Some(json!({"description": format!("p{n}")})))
                    .await
                    .0
            }
        };
        let (deleted, patched, rotated) = tokio::join!(
            other.call("DELETE", &path, None),
            join_all((0..3).map(patch)),
            join_all((0..2).map(|_| async { api.call("POST", &rotate, None).await.0 })),
        );
        assert_eq!(deleted.0, 204, "trial {trial}");
        for status in patched.into_iter().chain(rotated) {
            assert!(
                [200, 404, 409].contains(&status),
                "trial {trial}: a racing write answered {status}"
            );
        }
        for instance in [&api, &other] {
            let v = instance
                .get_until(&path, std::time::Duration::from_secs(5), |v| {
                    v.is_null() || v["error"]["code"] == "not_found"
                })
                .await;
            let (status, _) = instance.call("GET", &path, None).await;
            assert_eq!(
                status, 404,
                "trial {trial}: the deleted subscription came back: {v}"
            );
        }
    }
    // With events flowing, nothing reaches a subscription after its 204 but
    // what was already in flight.
    let (id, _) = api.subscribe(&receiver.url, &["tier.changed"], None).await;
    produce_many(&deployment, "tier.changed", "evt_before_delete", 20).await;
    let (status, _) = other
        .call("DELETE", &format!("/v1/subscriptions/{id}"), None)
        .await;
    assert_eq!(status, 204);
    produce_many(&deployment, "tier.changed", "evt_after_delete", 20).await;
    // Proves an absence: a fixed wait, several delivery round trips long.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let late: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.event_id())
        .filter(|id| id.starts_with("evt_after_delete"))
        .collect();
    assert!(
        late.is_empty(),
        "webhooks after the delete answered 204: {late:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_patches_of_different_fields_both_stay() {
    let deployment = Deployment::new("patches");
    let instance = Instance::start(&deployment).await;
    let api = instance.api_client(ADMIN_TOKEN);
    for trial in 0..10 {
        let (id, _) = api.subscribe(HOOK, &["points.earned"], None).await;
        let path = format!("/v1/subscriptions/{id}");
        let description = format!("d{trial}");
        let (a, b) = tokio::join!(
            api.call("PATCH", &path, Some(json!({"description": description}))),
            api.call("PATCH", &path, Some(json!({"metadata": {"trial": trial}}))),
        );
        assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
        let (_, v) = api.call("GET", &path, None).await;
        assert_eq!(v["description"], description.as_str(), "trial {trial}: {v}");
        assert_eq!(v["metadata"]["trial"], trial, "trial {trial}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_rotations_each_return_a_secret_that_was_applied() {
    let deployment = Deployment::new("rotations");
    let instance = Instance::start(&deployment).await;
    let api = instance.api_client(ADMIN_TOKEN);
    let (id, first) = api.subscribe(HOOK, &["points.earned"], None).await;
    let rotate = format!("/v1/subscriptions/{id}/secret/rotate");
    let answers = join_all((0..20).map(|_| api.call("POST", &rotate, None))).await;
    let mut returned = BTreeSet::new();
    for (status, v) in &answers {
        assert!([200, 409].contains(status), "{status} {v}");
        if *status == 200 {
            returned.insert(v["secret"].as_str().unwrap().to_string());
        }
    }
    assert!(!returned.contains(&first));
    // Every 200 applied its own rotation: as many distinct secrets, and the
    // one that signs now is one of them.
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(returned.len(), ok, "two calls returned the same secret");
    let (_, now) = api
        .call("GET", &format!("/v1/subscriptions/{id}/secret"), None)
        .await;
    assert!(
        returned.contains(now["secret"].as_str().unwrap()),
        "the secret that signs was never returned: {now}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owner_cap_holds_for_parallel_creates_through_two_instances() {
    let deployment = Deployment::new("cap").api("max_subscriptions_per_owner = 50");
    let a = Instance::start(&deployment).await;
    let b = Instance::start(&deployment).await;
    let (alice_a, alice_b) = (a.api_client("alice-token"), b.api_client("alice-token"));
    let body = json!({"url": HOOK, "event_types": ["points.earned"]});
    let creates = (0..200).map(|n| {
        let api = if n % 2 == 0 { &alice_a } else { &alice_b };
        let body = body.clone();
        async move { api.call("POST", "/v1/subscriptions", Some(body)).await }
    });
    let answers = join_all(creates).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 50, "creates that answered 201");
    for (status, v) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{v}");
        assert_eq!(v["error"]["code"], "limit_reached", "{v}");
    }
    for api in [&alice_a, &alice_b] {
        let (_, page) = api.call("GET", "/v1/subscriptions?limit=250", None).await;
        assert_eq!(
            page["data"].as_array().unwrap().len(),
            50,
            "on every instance"
        );
    }
    // The admin creating for alice is held to the same cap.
    let (status, v) = a
        .api_client(ADMIN_TOKEN)
        .call(
            "POST",
            "/v1/subscriptions",
            Some(json!({"url": HOOK, "event_types": ["points.earned"], "owner": "alice"})),
        )
        .await;
    assert_eq!(status, 409, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_retried_with_one_idempotency_key_creates_one_subscription() {
    let deployment = Deployment::new("idem");
    let instance = Instance::start(&deployment).await;
    let other = Instance::start(&deployment).await;
    let bob = instance.api_client("bob-token");
    let bob_elsewhere = other.api_client("bob-token");
    let body = json!({"url": HOOK, "event_types": ["tier.changed"]});
    let key = [("Idempotency-Key", "create-crm-hook-1")];
    let mut ids = BTreeSet::new();
    for n in 0..5 {
        let api = if n % 2 == 0 { &bob } else { &bob_elsewhere };
        let (status, _, v) = api
            .call_with("POST", "/v1/subscriptions", &key, Some(body.clone()))
            .await;
        assert_eq!(status, 201, "{v}");
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "one subscription for one key: {ids:?}");
    let (_, page) = bob.call("GET", "/v1/subscriptions", None).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    let (status, _, v) = bob
        .call_with(
            "POST",
            "/v1/subscriptions",
            &key,
            Some(json!({"url": HOOK, "event_types": ["points.earned"]})),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "idempotency_key_reused");
}

#[tokio::test(flavor = "multi_thread")]
async fn if_match_with_a_stale_etag_answers_412() {
    let deployment = Deployment::new("ifmatch");
    let instance = Instance::start(&deployment).await;
    let api = instance.api_client(ADMIN_TOKEN);
    let (id, _) = api.subscribe(HOOK, &["points.earned"], None).await;
    let path = format!("/v1/subscriptions/{id}");
    let (status, headers, _) = api.call_with("GET", &path, &[], None).await;
    assert_eq!(status, 200);
    let etag = headers["etag"].to_str().unwrap().to_string();
    let (status, _, v) = api
        .call_with(
            "PATCH",
            &path,
            &[("If-Match", &etag)],
            Some(json!({"description": "a"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, _, v) = api
        .call_with(
            "PATCH",
            &path,
            &[("If-Match", &etag)],
            Some(json!({"description": "b"})),
        )
        .await;
    assert_eq!(status, 412, "{v}");
    assert_eq!(v["error"]["code"], "version_conflict");
    let (status, _, _) = api
        .call_with("DELETE", &path, &[("If-Match", &etag)], None)
        .await;
    assert_eq!(status, 412);
    let (_, v) = api.call("GET", &path, None).await;
    assert_eq!(v["description"], "a");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_input_gets_json_errors_and_urls_are_stored_normalized() {
    let deployment = Deployment::new("hygiene");
    let instance = Instance::start(&deployment).await;
    let api = instance.api_client(ADMIN_TOKEN);
    // Control characters in a URL are refused, not stored as typed.
    let (status, v) = api
        .call(
            "POST",
            "/v1/subscriptions",
            Some(json!({"url": "http://127.0.0.1:9/\thook", "event_types": ["points.earned"]})),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "invalid_url");
    // What is stored is what the sender uses.
    let (status, v) = api
        .call(
            "POST",
            "/v1/subscriptions",
            Some(json!({"url": "HTTP://LOCALHOST:9/a b", "event_types": ["points.earned"]})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["url"], "http://localhost:9/a%20b");
    // Filters have size limits.
    let (status, v) = api
        .call(
            "POST",
            "/v1/subscriptions",
            Some(json!({"url": HOOK, "event_types": ["points.earned"],
                        "filter": {"data.x": {"$in": vec![1; 1000]}}})),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    // A path segment that is not UTF-8 answers in the JSON error format.
    let (status, v) = api.call("GET", "/v1/subscriptions/%FF%FE", None).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    // The Bearer scheme is case-insensitive.
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/subscriptions", instance.api))
        .header("authorization", format!("bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_acknowledged_before_an_event_is_produced_gets_it_through_either_instance() {
    let deployment = Deployment::new("fence");
    let a = Instance::start(&deployment).await;
    let b = Instance::start(&deployment).await;
    a.wait_assigned().await;
    b.wait_assigned().await;
    let receiver = Receiver::start(200, std::time::Duration::ZERO).await;
    let producer = producer();
    let apis = [a.api_client(ADMIN_TOKEN), b.api_client(ADMIN_TOKEN)];
    for n in 0..50 {
        let customer = format!("cus_fence_{n}");
        // A filter only this event matches: the event reaches its
        // subscription or nothing.
        apis[n % 2]
            .subscribe(
                &receiver.url,
                &["points.earned"],
                Some(json!({"data.customer_id": customer})),
            )
            .await;
        let mut data = sample_data("points.earned", n);
        data["customer_id"] = json!(customer);
        let e = event("points.earned", &format!("evt_fence{n}"), data);
        produce_structured(&producer, &deployment.input, &e).await;
    }
    eventually(
        "every event reached the subscription created just before it",
        std::time::Duration::from_secs(60),
        || receiver.distinct_ids().len() == 50,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn during_a_secrets_key_rollout_nothing_is_dropped_and_deliveries_flow_once_both_know_the_key(
) {
    const NEW_KEY: &str = "cmV3YXJkaG9va3Mtcm9sbG91dC1rZXktbnVtYmVyLTI=";
    let deployment = Deployment::new("rollout").delivery(r#"retry_schedule = ["1s", "2s"]"#);
    // A has the new key (the old one still decrypts); B has only the old.
    let mut with_new = deployment.clone();
    with_new
        .env
        .push(("REWARDHOOKS__SECURITY__SECRETS_KEY".into(), NEW_KEY.into()));
    with_new.env.push((
        "REWARDHOOKS__SECURITY__PREVIOUS_SECRETS_KEYS".into(),
        SECRETS_KEY.into(),
    ));
    let a = Instance::start(&with_new).await;
    let mut b = Instance::start(&deployment).await;
    a.wait_assigned().await;
    b.wait_assigned().await;
    let receiver = Receiver::start(200, std::time::Duration::ZERO).await;
    let (id, secret) = a
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    // B sees the subscription but cannot read its secret: it says so.
    let lacks_a_key = |body: &serde_json::Value| {
        body["unknown_secrets_keys"]
            .as_object()
            .is_some_and(|k| !k.is_empty())
    };
    let body = readyz_until(&b, std::time::Duration::from_secs(10), lacks_a_key).await;
    assert!(lacks_a_key(&body), "{body}");
    let (status, _) = b
        .api_client(ADMIN_TOKEN)
        .call("GET", &format!("/v1/subscriptions/{id}/secret"), None)
        .await;
    assert_eq!(status, 503);
    produce_many(&deployment, "points.earned", "evt_rollout", 30).await;
    // What A delivers arrives; what waits on B is parked, never dropped
    // (an absence, so a fixed wait of several retry-tier delays).
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    for instance in [&a, &b] {
        let dropped = counter_sum_or_zero(
            &metrics(instance).await,
            "rewardhooks_deliveries_dropped_total",
            &[],
        );
        assert_eq!(dropped, 0.0);
    }
    // B gets the key: everything arrives, signed with the one secret.
    b.terminate();
    let b = Instance::start(&with_new).await;
    eventually(
        "every delivery once both instances know the key",
        std::time::Duration::from_secs(60),
        || receiver.distinct_ids().len() == 30,
    )
    .await;
    for r in receiver.received() {
        r.verify(&secret).unwrap();
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_edit_and_a_circuit_opening_on_another_instance_both_stay() {
    let deployment = Deployment::new("circuitedit")
        .delivery(r#"retry_schedule = ["1s", "1s", "1s", "1s", "1s", "1s"]"#)
        .delivery("circuit_breaker_threshold = 3")
        .delivery(r#"circuit_breaker_cooldown = "2s""#);
    let a = Instance::start(&deployment).await;
    let b = Instance::start(&deployment).await;
    a.wait_assigned().await;
    b.wait_assigned().await;
    let failing = Receiver::start(500, std::time::Duration::ZERO).await;
    let healthy = Receiver::start(200, std::time::Duration::ZERO).await;
    let api_a = a.api_client(ADMIN_TOKEN);
    let (id, _) = api_a
        .subscribe(&failing.url, &["points.earned"], None)
        .await;
    let path = format!("/v1/subscriptions/{id}");
    produce_many(&deployment, "points.earned", "evt_ce", 10).await;
    // The circuit opens on whichever instance owns the subscription...
    api_a
        .get_until(&path, std::time::Duration::from_secs(30), |v| {
            v["circuit"] == "open"
        })
        .await;
    // ...while the owner moves the endpoint through the other one.
    let (status, v) = b
        .api_client(ADMIN_TOKEN)
        .call("PATCH", &path, Some(json!({"url": healthy.url})))
        .await;
    assert_eq!(status, 200, "{v}");
    for api in [&api_a, &b.api_client(ADMIN_TOKEN)] {
        let v = api
            .get_until(&path, std::time::Duration::from_secs(10), |v| {
                v["url"] == healthy.url.as_str()
            })
            .await;
        assert_eq!(v["url"], healthy.url.as_str(), "{v}");
    }
    eventually(
        "deliveries go to the new URL",
        std::time::Duration::from_secs(60),
        || healthy.distinct_ids().len() == 10,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_subscription_stays_deleted_while_its_circuit_moves_even_after_a_restart() {
    let deployment = Deployment::new("circuitdelete")
        .delivery(r#"retry_schedule = ["1s", "1s", "1s", "1s"]"#)
        .delivery("circuit_breaker_threshold = 2")
        .delivery(r#"circuit_breaker_cooldown = "1s""#);
    let a = Instance::start(&deployment).await;
    a.wait_assigned().await;
    let failing = Receiver::start(500, std::time::Duration::ZERO).await;
    let api = a.api_client(ADMIN_TOKEN);
    let (id, _) = api.subscribe(&failing.url, &["points.earned"], None).await;
    let path = format!("/v1/subscriptions/{id}");
    produce_many(&deployment, "points.earned", "evt_cd", 10).await;
    eventually(
        "failing attempts",
        std::time::Duration::from_secs(30),
        || failing.count() >= 2,
    )
    .await;
    let (status, _) = api.call("DELETE", &path, None).await;
    assert_eq!(status, 204);
    // Circuit state changes keep happening for work in flight; none brings
    // the subscription back.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(api.call("GET", &path, None).await.0, 404);
    drop(a);
    let again = Instance::start(&deployment).await;
    assert_eq!(
        again
            .api_client(ADMIN_TOKEN)
            .call("GET", &path, None)
            .await
            .0,
        404,
        "after a restart too"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_stage_whose_view_is_behind_waits_instead_of_dropping() {
    let deployment = Deployment::new("behind");
    let fanout = Instance::start_roles(&deployment, "api,fanout").await;
    // The delivery instance reads every subscription write 3 s late.
    let mut lagging = deployment.clone();
    lagging
        .env
        .push(("REWARDHOOKS_TEST_VIEW_LAG_MS".into(), "3000".into()));
    let deliver = Instance::start_roles(&lagging, "api,deliver").await;
    fanout.wait_assigned_groups(1).await;
    deliver.wait_assigned_groups(1).await;
    let receiver = Receiver::start(200, std::time::Duration::ZERO).await;
    let (sub, secret) = fanout
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    receiver.expect(&sub, &secret);
    produce_many(&deployment, "points.earned", "evt_behind", 5).await;
    let want: BTreeSet<String> = (0..5).map(|n| format!("evt_behind{n}")).collect();
    receiver
        .wait_completed(&sub, &want, std::time::Duration::from_secs(60))
        .await;
    receiver.assert_delivered(&[(sub.as_str(), &want)], 0);
    let dropped = counter_sum_or_zero(
        &metrics(&deliver).await,
        "rewardhooks_deliveries_dropped_total",
        &[],
    );
    assert_eq!(dropped, 0.0, "a view that was behind dropped deliveries");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_retried_with_one_idempotency_key_replays_once() {
    let deployment = Deployment::new("replayidem").delivery(r#"retry_schedule = ["1s"]"#);
    let a = Instance::start(&deployment).await;
    let b = Instance::start(&deployment).await;
    let receiver = Receiver::start(500, std::time::Duration::ZERO).await;
    let alice = a.api_client("alice-token");
    let (sub, _) = alice
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    a.wait_assigned().await;
    b.wait_assigned().await;
    produce_many(&deployment, "points.earned", "evt_ri", 3).await;
    alice
        .get_until(
            &format!("/v1/dead-letters?subscription_id={sub}"),
            std::time::Duration::from_secs(60),
            |v| v["data"].as_array().is_some_and(|d| d.len() == 3),
        )
        .await;
    receiver.set_status(200);
    let body = json!({"subscription_id": sub});
    let key = [("Idempotency-Key", "replay-after-fix-1")];
    let (status, _, first) = alice
        .call_with("POST", "/v1/dead-letters/replay", &key, Some(body.clone()))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["replayed"], 3);
    // The same call again, through the other instance: the first answer,
    // nothing replayed twice.
    let alice_b = b.api_client("alice-token");
    let (status, _, second) = alice_b
        .call_with("POST", "/v1/dead-letters/replay", &key, Some(body.clone()))
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["replayed"], 3, "the first result again");
    let (status, _, other) = alice
        .call_with(
            "POST",
            "/v1/dead-letters/replay",
            &key,
            Some(json!({"subscription_id": sub, "ids": ["dlq_0_0"]})),
        )
        .await;
    assert_eq!(status, 422, "{other}");
    assert_eq!(other["error"]["code"], "idempotency_key_reused");
    let want: BTreeSet<String> = (0..3).map(|n| format!("evt_ri{n}")).collect();
    eventually("replayed once", std::time::Duration::from_secs(30), || {
        receiver
            .completed()
            .iter()
            .filter(|r| r.status == 200)
            .count()
            >= 3
    })
    .await;
    let delivered: Vec<String> = receiver
        .completed()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.event_id())
        .collect();
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    assert_eq!(delivered.into_iter().collect::<BTreeSet<_>>(), want);
}
