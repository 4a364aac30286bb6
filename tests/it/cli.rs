//! The client commands against a real broker and a real instance: `produce`
//! (structured and binary, `--count`, `--validate-only`), `subscriptions`,
//! `sample-webhook --send`; and `dev` found through its state file.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// Runs rewardhooks with only the given environment for finding the API
/// (no dev state file unless `state` names one).
fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rewardhooks"));
    command
        .args(args)
        .env_remove("REWARDHOOKS_CONFIG")
        .env_remove("REWARDHOOKS_API_URL")
        .env_remove("REWARDHOOKS_TOKEN")
        .env("REWARDHOOKS_DEV_STATE", "/nonexistent/dev.json");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run rewardhooks")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The event ids of `produced <type> <id> to …` lines.
fn produced_ids(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("produced "))
        .filter_map(|l| l.split(' ').nth(1))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_and_the_subscriptions_cli_against_a_real_broker() {
    let deployment = Deployment::new("cli");
    let instance = Instance::start(&deployment).await;
    instance.wait_assigned().await;
    let receiver = Receiver::start(200, Duration::ZERO).await;
    let env = [
        ("REWARDHOOKS_API_URL", instance.api.as_str()),
        ("REWARDHOOKS_TOKEN", ADMIN_TOKEN),
    ];
    let created: Value = serde_json::from_str(&ok(&cli(
        &[
            "subscriptions",
            "create",
            "--json",
            "--url",
            &receiver.url,
            "--event-type",
            "points.earned,tier.changed",
        ],
        &env,
    )))
    .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();

    // Structured and binary mode, several at once; the config names the broker.
    let mut ids = produced_ids(&ok(&instance.command(&[
        "produce",
        "points.earned",
        "--count",
        "2",
    ])));
    ids.extend(produced_ids(&ok(&instance.command(&[
        "produce",
        "tier.changed",
        "--mode",
        "binary",
    ]))));
    assert_eq!(ids.len(), 3, "{ids:?}");
    eventually(
        "the produced events delivered",
        Duration::from_secs(30),
        || receiver.distinct_ids().len() >= 3,
    )
    .await;
    for got in receiver.received() {
        got.verify(&secret).unwrap();
        assert!(ids.contains(&got.event_id()), "{}", got.event_id());
    }

    // Read your own test: the attempt is in the log as soon as test answers.
    let attempt: Value = serde_json::from_str(&ok(&cli(
        &[
            "subscriptions",
            "test",
            &id,
            "--event-type",
            "tier.changed",
            "--json",
        ],
        &env,
    )))
    .unwrap();
    assert_eq!(attempt["success"], true, "{attempt}");
    let log: Value = serde_json::from_str(&ok(&cli(
        &["subscriptions", "attempts", &id, "--json"],
        &env,
    )))
    .unwrap();
    assert_eq!(log["data"][0]["event_id"], attempt["event_id"], "{log}");

    // An upstream team's broken event: every problem named, non-zero exit.
    let checked = instance.command(&[
        "produce",
        "--validate-only",
        "--data",
        r#"{"id":"e1","type":"points.earned","data":{"customer_id":"c","points":-1}}"#,
    ]);
    assert!(!checked.status.success());
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(stdout.contains("data/points"), "{stdout}");
    assert!(
        stdout.contains("\"reason\" is a required property"),
        "{stdout}"
    );

    let sent = ok(&cli(
        &[
            "sample-webhook",
            "--secret",
            &secret,
            "--send",
            &receiver.url,
        ],
        &[],
    ));
    assert!(sent.contains("receiver answered 200"), "{sent}");
    let wrong = cli(&["subscriptions", "get", "sub_missing", "--json"], &env);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not_found"));

    ok(&cli(&["subscriptions", "delete", &id], &env));
    let list: Value =
        serde_json::from_str(&ok(&cli(&["subscriptions", "list", "--json"], &env))).unwrap();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["id"] != id.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_finds_dev_through_its_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("dev.json");
    let state = state.to_str().unwrap();
    let mut dev = Command::new(env!("CARGO_BIN_EXE_rewardhooks"))
        .args(["dev", "--token", "dev_stable"])
        .env_remove("REWARDHOOKS_CONFIG")
        .env("REWARDHOOKS_DEV_STATE", state)
        .env("REWARDHOOKS__API__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("dev writes its state file", Duration::from_secs(60), || {
        std::path::Path::new(state).exists()
    })
    .await;
    let written: Value = serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    assert_eq!(written["token"], "dev_stable");
    let env = [("REWARDHOOKS_DEV_STATE", state)];
    let receiver = Receiver::start(204, Duration::ZERO).await;
    let created: Value = serde_json::from_str(&ok(&cli(
        &[
            "subscriptions",
            "create",
            "--json",
            "--url",
            &receiver.url,
            "--event-type",
            "*",
        ],
        &env,
    )))
    .unwrap();
    let ids = produced_ids(&ok(&cli(&["produce", "profile.updated"], &env)));
    eventually(
        "the produced event delivered",
        Duration::from_secs(30),
        || receiver.distinct_ids().contains(&ids[0]),
    )
    .await;
    receiver.received()[0]
        .verify(created["secret"].as_str().unwrap())
        .unwrap();
    let _ = Command::new("kill").arg(dev.id().to_string()).status();
    let _ = dev.wait();
    assert!(
        !std::path::Path::new(state).exists(),
        "dev removes its state file"
    );
}
