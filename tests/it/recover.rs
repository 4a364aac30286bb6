//! Recovering a time window from the input topics, and resending one event:
//! what is sent again, to whom, signed how, and that a job survives the
//! death of the instance running it without writing an event twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use crate::support::*;

/// Produces `count` points.earned events `<prefix><n>`, the n-th with the
/// Kafka record timestamp `base_ms + n * step_ms`, all in flight at once.
async fn produce_timed(
    producer: &FutureProducer,
    topic: &str,
    prefix: &str,
    count: usize,
    base_ms: i64,
    step_ms: i64,
) {
    let mut acks = Vec::with_capacity(count);
    for n in 0..count {
        let e = event(
            "points.earned",
            &format!("{prefix}{n}"),
            sample_data("points.earned", n),
        );
        let payload = serde_json::to_vec(&e).unwrap();
        let key = format!("cus_{n}");
        let mut record = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .timestamp(base_ms + n as i64 * step_ms);
        loop {
            match producer.send_result(record) {
                Ok(ack) => {
                    acks.push(ack);
                    break;
                }
                Err((_, back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    for ack in acks {
        ack.await.unwrap().expect("produce timed event");
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Deliveries per event id to `subscription`, every signature checked.
fn per_event(receiver: &Receiver, subscription: &str) -> BTreeMap<String, usize> {
    let mut tally = BTreeMap::new();
    for ((id, sub), n) in receiver.tally() {
        if sub == subscription {
            tally.insert(id, n);
        }
    }
    tally
}

/// Produces 30 live events `<prefix><n>` 30 ms apart and answers the p99
/// (here: the slowest) of their produce-to-arrival times.
async fn live_p99(
    deployment: &Deployment,
    receiver: &Receiver,
    sub: &str,
    prefix: &str,
) -> Duration {
    let live_producer = producer();
    let mut sent = Vec::new();
    for n in 0..30 {
        let id = format!("{prefix}{n}");
        let e = event("points.earned", &id, sample_data("points.earned", n));
        sent.push((id, Instant::now()));
        produce_structured(&live_producer, &deployment.input, &e).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let live: BTreeSet<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    receiver
        .wait_completed(sub, &live, Duration::from_secs(90))
        .await;
    let arrivals: BTreeMap<String, Instant> = receiver
        .received()
        .into_iter()
        .map(|r| (r.event_id(), r.at))
        .collect();
    let mut latencies: Vec<Duration> = sent
        .iter()
        .map(|(id, at)| arrivals[id].saturating_duration_since(*at))
        .collect();
    latencies.sort();
    latencies[(latencies.len() * 99).div_ceil(100) - 1]
}

/// POSTs a resend of `event_id`, polling while it answers 404: the attempt
/// log is a view of the attempts topic and may not have the attempt yet.
async fn resend_once_known(api: &Api, path: &str, event_id: &str) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = api
            .call("POST", path, Some(json!({ "event_id": event_id })))
            .await;
        if status != 404 || Instant::now() > deadline {
            return (status, v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_finished(api: &Api, id: &str, timeout: Duration) -> Value {
    let job = api
        .get_until(&format!("/v1/recoveries/{id}"), timeout, |v| {
            v["status"] != "running"
        })
        .await;
    assert_eq!(job["status"], "finished", "{job}");
    job
}

#[tokio::test(flavor = "multi_thread")]
async fn recovering_a_window_sends_exactly_its_events_again_signed_with_their_ids() {
    let deployment = Deployment::new("recover");
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let alice = instance.api_client("alice-token");
    let bob = instance.api_client("bob-token");
    let (sub, secret) = alice
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    receiver.expect(&sub, &secret);
    // The owner's operations endpoint hears when the job ends.
    let ops = Receiver::start(200, Duration::ZERO).await;
    let (ops_sub, ops_secret) = alice
        .subscribe(&ops.url, &["rewardhooks.recovery.finished"], None)
        .await;
    ops.expect(&ops_sub, &ops_secret);
    instance.wait_assigned().await;

    // 300 events a second apart, ten minutes ago.
    let base = chrono::Utc::now().timestamp_millis() - 600_000;
    produce_timed(&producer(), &deployment.input, "evt_w", 300, base, 1000).await;
    let all: BTreeSet<String> = (0..300).map(|n| format!("evt_w{n}")).collect();
    receiver
        .wait_completed(&sub, &all, Duration::from_secs(120))
        .await;

    // Another owner sees neither the subscription nor the job.
    let window = json!({"since": rfc3339(base + 100_000), "until": rfc3339(base + 200_000)});
    let path = format!("/v1/subscriptions/{sub}/recover");
    let (status, _) = bob.call("POST", &path, Some(window.clone())).await;
    assert_eq!(status, 404);

    // A window before the oldest record held is refused, naming it.
    let (status, v) = alice
        .call(
            "POST",
            &path,
            Some(json!({"since": rfc3339(base - 3_600_000)})),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "window_outside_retention");
    let earliest = rfc3339(base);
    assert!(
        v["error"]["message"].as_str().unwrap().contains(&earliest),
        "{v} names {earliest}"
    );

    // The middle 100, asked twice with one Idempotency-Key: one job.
    let key = [("idempotency-key", "recover-middle")];
    let (status, _, job) = alice
        .call_with("POST", &path, &key, Some(window.clone()))
        .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["status"], "running");
    assert_eq!(job["subscription_id"], sub.as_str());
    let id = job["id"].as_str().unwrap().to_string();
    let (status, _, again) = alice.call_with("POST", &path, &key, Some(window)).await;
    assert_eq!((status, again["id"].as_str()), (202, Some(id.as_str())));
    let (status, _) = bob.call("GET", &format!("/v1/recoveries/{id}"), None).await;
    assert_eq!(status, 404, "recovery ids are scoped to their owner");

    let job = wait_finished(&alice, &id, Duration::from_secs(120)).await;
    assert_eq!(
        (job["matched"].as_u64(), job["written"].as_u64()),
        (Some(100), Some(100)),
        "{job}"
    );
    let middle: BTreeSet<String> = (100..200).map(|n| format!("evt_w{n}")).collect();
    eventually(
        "the middle 100 arrive again",
        Duration::from_secs(60),
        || {
            per_event(&receiver, &sub)
                .iter()
                .filter(|(_, n)| **n == 2)
                .count()
                >= 100
        },
    )
    .await;
    // Nothing else comes again: give stragglers a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = per_event(&receiver, &sub);
    let twice: BTreeSet<String> = tally
        .iter()
        .filter(|(_, n)| **n >= 2)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(twice, middle, "exactly the window's events, with their ids");
    assert!(tally.values().all(|n| *n <= 2), "{tally:?}");
    assert!(
        receiver.bad_signatures().is_empty(),
        "{:?}",
        receiver.bad_signatures()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn resending_one_delivered_event_sends_it_again_and_an_unknown_id_is_404() {
    let deployment = Deployment::new("resend");
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let alice = instance.api_client("alice-token");
    let (sub, secret) = alice
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    receiver.expect(&sub, &secret);
    instance.wait_assigned().await;
    let now = chrono::Utc::now().timestamp_millis();
    produce_timed(&producer(), &deployment.input, "evt_rs", 5, now, 1).await;
    let all: BTreeSet<String> = (0..5).map(|n| format!("evt_rs{n}")).collect();
    receiver
        .wait_completed(&sub, &all, Duration::from_secs(60))
        .await;

    let path = format!("/v1/subscriptions/{sub}/resend");
    let (status, v) = resend_once_known(&alice, &path, "evt_rs3").await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["source"]["topic"], deployment.input.as_str());
    eventually("evt_rs3 arrives again", Duration::from_secs(60), || {
        per_event(&receiver, &sub).get("evt_rs3") == Some(&2)
    })
    .await;
    let again = receiver
        .delivered()
        .into_iter()
        .filter(|r| r.event_id() == "evt_rs3")
        .last()
        .unwrap();
    again.verify(&secret).unwrap();
    assert_eq!(again.json()["id"], "evt_rs3");

    let (status, v) = alice
        .call("POST", &path, Some(json!({"event_id": "evt_nope"})))
        .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "event_not_found");
    let (status, _) = instance
        .api_client("bob-token")
        .call("POST", &path, Some(json!({"event_id": "evt_rs3"})))
        .await;
    assert_eq!(status, 404, "another owner's subscription");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_recover_cli_runs_a_job_to_its_end() {
    let deployment = Deployment::new("recover-cli");
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let alice = instance.api_client("alice-token");
    let (sub, secret) = alice
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    receiver.expect(&sub, &secret);
    instance.wait_assigned().await;
    let base = chrono::Utc::now().timestamp_millis() - 60_000;
    produce_timed(&producer(), &deployment.input, "evt_c", 20, base, 1000).await;
    let all: BTreeSet<String> = (0..20).map(|n| format!("evt_c{n}")).collect();
    receiver
        .wait_completed(&sub, &all, Duration::from_secs(60))
        .await;

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rewardhooks"))
        .args(["recover", "--subscription", &sub, "--wait", "--json"])
        .args(["--since", &rfc3339(base + 5_000)])
        .args(["--until", &rfc3339(base + 10_000)])
        .args(["--api-url", &instance.api, "--token", "alice-token"])
        .env_remove("REWARDHOOKS_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let job: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(job["status"], "finished");
    assert_eq!(job["written"], 5, "{job}");
    eventually("evt_c5..9 arrive again", Duration::from_secs(60), || {
        let tally = per_event(&receiver, &sub);
        (5..10).all(|n| tally.get(&format!("evt_c{n}")) == Some(&2))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "over a minute: run by make test-slow"]
async fn a_recovery_survives_the_death_of_its_instance_without_sending_an_event_twice() {
    // 20,000 events at most 2,000 a second: the job runs for ten seconds or
    // more, long enough to kill its instance halfway.
    let total = 20_000;
    let mut deployment = Deployment::new("recover-kill");
    deployment.env.push((
        "REWARDHOOKS__RECOVERY__MAX_EVENTS_PER_SECOND".into(),
        "2000".into(),
    ));
    // The first instance runs the recovery jobs (it is alone in the group
    // when it starts) and delivers nothing, so every repeat at the receiver
    // would be the job's.
    let mut runner = Instance::start_roles(&deployment, "fanout,api").await;
    eventually(
        "the first instance runs recoveries",
        Duration::from_secs(60),
        || runner.logged("This instance runs the recovery jobs."),
    )
    .await;
    let other = Instance::start(&deployment).await;
    other.wait_assigned().await;

    // The window's events exist before the subscription, so only the job
    // sends them.
    let base = chrono::Utc::now().timestamp_millis() - 3_600_000;
    produce_timed(&producer(), &deployment.input, "evt_k", total, base, 10).await;
    wait_committed_to_end(&deployment, Duration::from_secs(120)).await;

    let receiver = Receiver::start(200, Duration::ZERO).await;
    let alice = other.api_client("alice-token");
    let (sub, secret) = alice
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    receiver.expect(&sub, &secret);
    // Live latency on this machine without a recovery, to compare with.
    let baseline = live_p99(&deployment, &receiver, &sub, "evt_base").await;
    let (status, job) = alice
        .call(
            "POST",
            &format!("/v1/subscriptions/{sub}/recover"),
            Some(json!({"since": rfc3339(base), "until": rfc3339(base + total as i64 * 10)})),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let path = format!("/v1/recoveries/{id}");

    // Live events keep flowing while the job runs.
    let job = alice
        .get_until(&path, Duration::from_secs(60), |v| {
            v["written"].as_u64() >= Some(300)
        })
        .await;
    assert_eq!(job["status"], "running", "{job}");
    let p99 = live_p99(&deployment, &receiver, &sub, "evt_live").await;
    println!("live deliveries: p99 {baseline:?} without a recovery, {p99:?} during one");
    // Under 1 s, or (on a machine too loaded for that even without a
    // recovery) no worse than three times the baseline.
    let bound = Duration::from_secs(1).max(baseline * 3);
    assert!(
        p99 < bound,
        "p99 {p99:?} during a recovery, baseline {baseline:?}"
    );

    let job = alice
        .get_until(&path, Duration::from_secs(60), |v| {
            v["written"].as_u64() >= Some(total as u64 / 2)
        })
        .await;
    assert_eq!(job["status"], "running", "killed halfway: {job}");
    assert!(
        !runner.logged("Another instance runs the recovery jobs now."),
        "the job moved before the kill"
    );
    runner.kill();

    let job = wait_finished(&alice, &id, Duration::from_secs(180)).await;
    assert_eq!(job["written"].as_u64(), Some(total as u64), "{job}");
    assert!(
        other.logged("This instance runs the recovery jobs."),
        "the other instance took the job over"
    );
    println!(
        "takeover found deliveries written after the last checkpoint: {}",
        other.logged("skipping what it already wrote")
    );
    let window: BTreeSet<String> = (0..total).map(|n| format!("evt_k{n}")).collect();
    receiver
        .wait_completed(&sub, &window, Duration::from_secs(120))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = per_event(&receiver, &sub);
    let twice: Vec<_> = tally
        .iter()
        .filter(|(id, n)| id.starts_with("evt_k") && **n > 1)
        .collect();
    assert!(twice.is_empty(), "sent twice by the job: {twice:?}");
    assert!(receiver.bad_signatures().is_empty());
}

/// The input records of `topic`: (partition, offset, CloudEvent), read from
/// the beginning until `want` are there.
async fn input_records(topic: &str, partitions: i32, want: usize) -> Vec<(i32, i64, Value)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", unique("input-reader"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p, rdkafka::Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        while out.len() < want && Instant::now() < deadline {
            if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(200)) {
                let event = serde_json::from_slice(msg.payload().unwrap_or_default()).unwrap();
                out.push((msg.partition(), msg.offset(), event));
            }
        }
        assert_eq!(out.len(), want, "input records read");
        out
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_takeover_skips_what_the_job_wrote_after_its_last_checkpoint() {
    use rdkafka::message::{Header, OwnedHeaders};
    let deployment = Deployment::new("recover-resume");
    // The window's events are fanned out (to nobody) before the
    // subscription exists, so only the job sends them.
    let base = chrono::Utc::now().timestamp_millis() - 60_000;
    let mut first = Instance::start(&deployment).await;
    first.wait_assigned().await;
    produce_timed(&producer(), &deployment.input, "evt_d", 50, base, 100).await;
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
    assert!(first.terminate().success());
    // An API-only instance records jobs but runs none.
    let api_only = Instance::start_roles(&deployment, "api").await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let alice = api_only.api_client("alice-token");
    let (sub, secret) = alice
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    receiver.expect(&sub, &secret);
    let (status, job) = alice
        .call(
            "POST",
            &format!("/v1/subscriptions/{sub}/recover"),
            Some(json!({"since": rfc3339(base), "until": rfc3339(base + 5_000)})),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();

    // What a job leaves when its instance dies after writing deliveries
    // but before checkpointing them: a checkpoint that says where its next
    // writes land, and after it deliveries of 10 of its input records.
    let recoveries = format!("{}.recoveries", deployment.prefix);
    let stored = read_topic(&recoveries, 1, 1, Duration::from_secs(30)).await;
    let mut state: Value = serde_json::from_slice(&stored.last().unwrap().payload).unwrap();
    assert_eq!(state["id"], id.as_str());
    let deliveries_from: serde_json::Map<String, Value> = (0..deployment.partitions)
        .map(|p| (p.to_string(), json!(0)))
        .collect();
    state["deliveries_from"] = Value::Object(deliveries_from);
    state["updated_at"] = json!(chrono::Utc::now());
    let producer = producer();
    producer
        .send(
            FutureRecord::to(&recoveries)
                .key(&id)
                .payload(&serde_json::to_vec(&state).unwrap()),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let input = input_records(&deployment.input, deployment.partitions, 50).await;
    let deliveries = format!("{}.deliveries", deployment.prefix);
    let mut already = BTreeSet::new();
    for (partition, offset, event) in input.iter().take(10) {
        let body = json!({"id": event["id"], "type": event["type"], "timestamp": event["time"], "data": event["data"]});
        let source = format!("{}:{partition}:{offset}", deployment.input);
        let time = base.to_string();
        let mut headers = OwnedHeaders::new();
        for (key, value) in [
            ("rewardhooks-event-id", event["id"].as_str().unwrap()),
            ("rewardhooks-event-type", "points.earned"),
            ("rewardhooks-event-time", time.as_str()),
            ("rewardhooks-attempt", "0"),
            ("rewardhooks-source", source.as_str()),
            ("rewardhooks-recovery", id.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        producer
            .send(
                FutureRecord::to(&deliveries)
                    .key(&sub)
                    .payload(&serde_json::to_vec(&body).unwrap())
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        already.insert(event["id"].as_str().unwrap().to_string());
    }

    // Another instance takes the job over: it finds those 10, writes the
    // other 40, and the receiver gets each of the 50 once.
    let runner = Instance::start(&deployment).await;
    let job = wait_finished(&alice, &id, Duration::from_secs(120)).await;
    assert_eq!(job["written"], 50, "{job}");
    assert!(runner.logged("skipping what it already wrote"));
    let all: BTreeSet<String> = (0..50).map(|n| format!("evt_d{n}")).collect();
    receiver
        .wait_completed(&sub, &all, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = per_event(&receiver, &sub);
    assert_eq!(tally.keys().cloned().collect::<BTreeSet<_>>(), all);
    assert!(tally.values().all(|n| *n == 1), "each once: {tally:?}");
    assert!(receiver.bad_signatures().is_empty());
    assert_eq!(already.len(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recovery_and_a_resend_send_only_what_the_owners_scope_grants_now() {
    let deployment = Deployment::new("recscope");
    let instance = Instance::start(&deployment).await;
    let admin = instance.api_client(ADMIN_TOKEN);
    let (status, v) = admin
        .call(
            "POST",
            "/v1/owners",
            Some(json!({"id": "giftco", "name": "Gift Co",
                        "scope": {"event_types": ["points.earned", "points.redeemed"]}})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = admin
        .call("POST", "/v1/owners/giftco/keys", Some(json!({})))
        .await;
    assert_eq!(status, 201, "{v}");
    let giftco = instance.api_client(v["token"].as_str().unwrap());
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let (sub, secret) = giftco.subscribe(&receiver.url, &["*"], None).await;
    receiver.expect(&sub, &secret);
    instance.wait_assigned().await;

    // 20 events of four types, a second apart, a minute ago.
    let base = chrono::Utc::now().timestamp_millis() - 60_000;
    let types = [
        "points.earned",
        "points.redeemed",
        "tier.changed",
        "profile.updated",
    ];
    let producer = producer();
    for n in 0..20 {
        let kind = types[n % 4];
        let e = event(kind, &format!("evt_sc{n}"), sample_data(kind, n));
        let payload = serde_json::to_vec(&e).unwrap();
        let key = format!("cus_{n}");
        let record = FutureRecord::to(&deployment.input)
            .key(&key)
            .payload(&payload)
            .timestamp(base + n as i64 * 1000);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("produce");
    }
    let earned: BTreeSet<String> = (0..20)
        .filter(|n| n % 4 == 0)
        .map(|n| format!("evt_sc{n}"))
        .collect();
    let redeemed: BTreeSet<String> = (0..20)
        .filter(|n| n % 4 == 1)
        .map(|n| format!("evt_sc{n}"))
        .collect();
    let granted: BTreeSet<String> = earned.union(&redeemed).cloned().collect();
    receiver
        .wait_completed(&sub, &granted, Duration::from_secs(60))
        .await;
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
    assert_eq!(
        receiver.completed_ids(&sub),
        granted,
        "live: the scope only"
    );

    // Narrowed to redemptions: a recovery of the whole window sends those
    // only, though the subscription itself matches everything.
    let (status, v) = admin
        .call(
            "PATCH",
            "/v1/owners/giftco",
            Some(json!({"scope": {"event_types": ["points.redeemed"]}})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let path = format!("/v1/subscriptions/{sub}/recover");
    let window = json!({"since": rfc3339(base), "until": rfc3339(base + 30_000)});
    let (status, job) = giftco.call("POST", &path, Some(window)).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let job = wait_finished(&giftco, &id, Duration::from_secs(120)).await;
    assert_eq!(
        job["matched"].as_u64(),
        Some(redeemed.len() as u64),
        "{job}"
    );
    eventually(
        "the redemptions arrive again",
        Duration::from_secs(60),
        || {
            redeemed
                .iter()
                .all(|id| per_event(&receiver, &sub).get(id) == Some(&2))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = per_event(&receiver, &sub);
    for id in &earned {
        assert_eq!(tally.get(id), Some(&1), "{id} is outside the scope now");
    }
    assert!(tally.keys().all(|id| granted.contains(id)), "{tally:?}");
    assert!(receiver.bad_signatures().is_empty());

    // A resend of an event the scope no longer grants is refused.
    let resend = format!("/v1/subscriptions/{sub}/resend");
    let some_earned = earned.iter().next().unwrap().clone();
    let (status, v) = resend_once_known(&giftco, &resend, &some_earned).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "outside_scope");

    // The recovery is in the audit trail, as the owner's key did it.
    let trail = admin
        .get_until("/v1/audit?owner=giftco", Duration::from_secs(10), |v| {
            v["data"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["action"] == "recovery.create"))
        })
        .await;
    let record = trail["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "recovery.create")
        .unwrap()
        .clone();
    assert_eq!(record["target"], id.as_str(), "{record}");
    assert_eq!(record["actor"]["owner"], "giftco", "{record}");
    assert!(record["actor"]["key_id"].as_str().is_some(), "{record}");
}

/// Deletes every record of `topic` (the admin API's DeleteRecords), as
/// retention would: each partition's low watermark moves to its end. False
/// when the broker does not do DeleteRecords (Tansu 0.6 drops the
/// connection; Apache Kafka does it).
async fn expire_all(topic: &str, partitions: i32) -> bool {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap());
    let admin: AdminClient<DefaultClientContext> = config.create().expect("admin client");
    let reader: BaseConsumer = config
        .clone()
        .set("group.id", "it-expire")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = reader
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        tpl.add_partition_offset(topic, p, Offset::Offset(high))
            .unwrap();
    }
    let result = admin
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .expect("delete records");
    for e in result.elements() {
        if let Err(error) = e.error() {
            println!(
                "skipped: the broker refused DeleteRecords ({error}); run against Apache Kafka"
            );
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn resending_an_event_past_retention_answers_410() {
    let deployment = Deployment::new("expired");
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let alice = instance.api_client("alice-token");
    let (sub, secret) = alice
        .subscribe(&receiver.url, &["points.earned"], None)
        .await;
    receiver.expect(&sub, &secret);
    instance.wait_assigned().await;
    let now = chrono::Utc::now().timestamp_millis();
    produce_timed(&producer(), &deployment.input, "evt_ex", 5, now, 1).await;
    let all: BTreeSet<String> = (0..5).map(|n| format!("evt_ex{n}")).collect();
    receiver
        .wait_completed(&sub, &all, Duration::from_secs(60))
        .await;
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
    if !expire_all(&deployment.input, deployment.partitions).await {
        return;
    }

    let path = format!("/v1/subscriptions/{sub}/resend");
    let (status, v) = resend_once_known(&alice, &path, "evt_ex2").await;
    assert_eq!(status, 410, "{v}");
    assert_eq!(v["error"]["code"], "event_expired");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&deployment.input),
        "{v} names the topic"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(per_event(&receiver, &sub).get("evt_ex2"), Some(&1));
}
