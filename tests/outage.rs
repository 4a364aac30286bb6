//! A broker outage, in a test binary of its own: pausing the shared broker
//! must not disturb the other integration tests, and cargo runs test binaries
//! one after another.

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use std::time::{Duration, Instant};

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_broker_makes_rewardhooks_unready_and_nothing_is_lost() {
    let Ok(pid) = std::env::var("KAFKA_BROKER_PID") else {
        // CI (CHECKS_REQUIRED=1) must not pass a fault test it did not run.
        assert!(
            std::env::var("CHECKS_REQUIRED").as_deref() != Ok("1"),
            "KAFKA_BROKER_PID is not set but CHECKS_REQUIRED=1: the broker-pause test cannot run \
             (run it under scripts/tansu.sh, which starts the broker and knows its pid)"
        );
        println!(
            "skipped: KAFKA_BROKER_PID is not set (the broker was not started by scripts/tansu.sh)"
        );
        return;
    };
    // Work at risk: a slow endpoint holds a backlog in its lane (under 7
    // requests a second, 300 events: ~45 s), so the pause finds deliveries
    // sending, queued and completed but not yet committed.
    let per_sub = 2;
    let delay = Duration::from_millis(300);
    let pause = Duration::from_secs(15);
    let deployment = Deployment::new("outage")
        .delivery(&format!("max_in_flight_per_subscription = {per_sub}"))
        .delivery(r#"lane_max_wait = "300s""#);
    let instance = Instance::start(&deployment).await;
    let receiver = Receiver::start(200, delay).await;
    let (sub, secret) = instance
        .api_client(ADMIN_TOKEN)
        .subscribe(&receiver.url, &["*"], None)
        .await;
    receiver.expect(&sub, &secret);
    instance.wait_assigned().await;
    let producer = producer();
    let first = 300;
    produce_many(&deployment, "tier.changed", "evt_o", first).await;
    // What the outage can repeat: every delivery completed from the last
    // commit before the pause (store 200 ms + auto-commit 1 s) until commits
    // work again (the pause, plus the same window and slack after it), at
    // `per_sub` requests of at least `delay` each, plus those in flight.
    // Fan-out has committed every input record before the pause (waited
    // for below), so it repeats nothing.
    let window = pause + Duration::from_millis(2 * (200 + 1000) + 2000);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let input = fanout_positions(&deployment).await;
        if !input.is_empty() && input.iter().all(|p| p.at_end()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fan-out never committed: {input:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eventually("deliveries flowing", Duration::from_secs(60), || {
        receiver.delivered().len() >= 20
    })
    .await;
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .arg(sig)
            .arg(&pid)
            .status()
            .expect("signal broker");
        assert!(status.success(), "kill {sig} {pid}: {status}");
    };
    signal("-STOP");
    let at_pause = receiver.delivered().len();
    assert!(
        at_pause < first,
        "the pause must find a backlog ({at_pause} of {first} delivered)"
    );
    let paused = Instant::now();
    let ready_url = format!("{}/readyz", instance.api);
    let mut went_unready = false;
    while paused.elapsed() < pause {
        if let Ok(r) = reqwest::Client::new()
            .get(&ready_url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            if r.status().as_u16() == 503 {
                went_unready = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    signal("-CONT");
    assert!(
        went_unready,
        "readiness went false while the broker was paused"
    );

    let second = 100;
    for n in first..first + second {
        let e = event(
            "tier.changed",
            &format!("evt_o{n}"),
            sample_data("tier.changed", n),
        );
        produce_structured(&producer, &deployment.input, &e).await;
    }
    eventually("ready again", Duration::from_secs(60), || {
        std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &ready_url])
            .output()
            .map(|o| o.stdout == b"200")
            .unwrap_or(false)
    })
    .await;
    let total = first + second;
    let want: std::collections::BTreeSet<String> =
        (0..total).map(|n| format!("evt_o{n}")).collect();
    receiver
        .wait_completed(&sub, &want, Duration::from_secs(180))
        .await;
    wait_committed_to_end(&deployment, Duration::from_secs(60)).await;
    let bound = per_sub * (window.as_millis() / delay.as_millis()) as usize + per_sub;
    receiver.assert_delivered(&[(sub.as_str(), &want)], bound);
    println!(
        "broker paused {pause:?} with {} of {first} delivered: {} duplicates (bound {bound})",
        at_pause,
        receiver.duplicates()
    );
}
