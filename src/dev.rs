//! `rewardhooks dev`: everything on an embedded Kafka (librdkafka's mock
//! cluster), with http and loopback endpoints allowed, and with `--demo` a
//! local receiver plus sample events of every type.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use rand::RngCore;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;

use crate::app::{App, ALL_ROLES};
use crate::cli::state::DevState;
use crate::config::Settings;
use crate::context::Shared;
use crate::signing::signature_header;
use crate::subscriptions::{Secret, Subscription};

fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// `rewardhooks dev` options beyond the configuration.
#[derive(Debug, Default, Clone)]
pub struct DevOptions {
    /// Also run a local receiver and produce sample events.
    pub demo: bool,
    /// The admin token (default: `api.admin_token`, else a random one).
    pub token: Option<String>,
    /// A stable loopback port that forwards to the embedded broker.
    pub kafka_port: Option<u16>,
}

pub async fn run(config: Option<PathBuf>, options: DevOptions) -> anyhow::Result<()> {
    let mut settings = Settings::load(config.as_deref())?;
    // Kept alive for the whole run: dropping it stops the embedded broker.
    let mock = MockCluster::new(1)?;
    settings.kafka.brokers = mock.bootstrap_servers();
    settings.kafka.replication_factor = 1;
    settings.kafka.create_input_topics = true;
    settings.kafka.partitions = settings.kafka.partitions.min(4);
    settings.security.allow_insecure_http = true;
    settings.security.allow_private_networks = true;
    // The terminal should say something when things work.
    settings.log.deliveries = true;
    if settings.security.secrets_key.is_empty() {
        // Dev data lives in memory only, so a fresh key each run is enough.
        settings.security.secrets_key = crate::secrets::SecretCipher::generate_key();
    }
    if settings.api.listen == std::net::SocketAddr::from(([0, 0, 0, 0], 8080)) {
        settings.api.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
    }
    let shown_token = match options.token {
        Some(t) => {
            settings.api.admin_token = t.clone();
            t
        }
        None if settings.api.admin_token.is_empty() => {
            let t = random_token("dev_");
            settings.api.admin_token = t.clone();
            t
        }
        None => "<api.admin_token from your configuration>".to_string(),
    };
    let token = settings.api.admin_token.clone();
    let bootstrap = match options.kafka_port {
        Some(port) => forward_kafka(port, mock.bootstrap_servers()).await?,
        None => mock.bootstrap_servers(),
    };
    let input = settings.kafka.input_topics[0].clone();
    // The mock cluster has no admin API; create the topics through it.
    let topics = crate::kafka::Topics::new(&settings.kafka.topic_prefix);
    for spec in crate::app::topic_specs(&settings, &topics) {
        mock.create_topic(&spec.name, spec.partitions, 1)?;
    }
    let app = App::start(settings, ALL_ROLES).await?;
    let api = app
        .api_addr
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    // The banner comes after the startup logs, once the instance is ready.
    let shared = app.shared.clone();
    let ready = async {
        // Ready, and both stages (fan-out, deliver) have their partitions.
        while !(shared.store.is_ready()
            && shared.kafka_reachable.load(Ordering::Relaxed)
            && crate::kafka::consumer::assignments() >= 2)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), ready).await;
    let state = DevState {
        pid: std::process::id(),
        kafka_bootstrap: bootstrap.clone(),
        input_topic: input.clone(),
        api_url: api.clone(),
        token,
    };
    let state_path = match state.write() {
        Ok(path) => path.display().to_string(),
        Err(e) => {
            tracing::warn!(error = %e, path = %crate::cli::state::path().display(), "Cannot write the dev state file; pass --api-url, --token and --brokers to the CLI.");
            "(not written)".to_string()
        }
    };
    println!(
        "{}",
        banner(&bootstrap, &input, &api, &shown_token, &state_path)
    );
    if options.demo {
        let shared = app.shared.clone();
        tokio::spawn(async move {
            if let Err(e) = run_demo(shared, input).await {
                tracing::error!(error = %e, "Demo failed.");
            }
        });
    }
    let result = app.run_until_signal().await;
    DevState::remove_own();
    result
}

fn banner(bootstrap: &str, input: &str, api: &str, token: &str, state: &str) -> String {
    [
        String::new(),
        "rewardhooks dev is ready, on an embedded Kafka.".into(),
        String::new(),
        format!("  Kafka bootstrap:  {bootstrap}"),
        format!("  Input topic:      {input}"),
        format!("  API:              {api}"),
        format!("  Dev token:        {token}"),
        format!("  State file:       {state} (the CLI finds dev through it)"),
        String::new(),
        "A verified webhook, in another terminal from this directory (README.md, Quickstart):".into(),
        String::new(),
        "  export PATH=\"$PWD/target/release:$PATH\"".into(),
        "  SUB=$(rewardhooks subscriptions create --json --url http://127.0.0.1:9000/webhook --event-type '*')".into(),
        "  rewardhooks receive --port 9000 --secret \"$(echo \"$SUB\" | jq -r .secret)\" --count 1 &".into(),
        "  rewardhooks produce points.earned".into(),
        String::new(),
        format!("API reference: {api}/docs   Metrics: {api}/metrics   Ready: {api}/readyz   Stop: Ctrl-C"),
        String::new(),
    ]
    .join("\n")
}

/// Accepts Kafka clients on 127.0.0.1:`port` and pipes them to the embedded
/// broker. The broker advertises its own (random) port in metadata, which is
/// on loopback too, so clients bootstrapped here reach it.
async fn forward_kafka(port: u16, target: String) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| anyhow::anyhow!("--kafka-port {port}: {e}"))?;
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(format!("127.0.0.1:{port}"))
}

#[derive(Clone)]
struct DemoReceiver {
    secret: Secret,
}

async fn receive(
    State(receiver): State<DemoReceiver>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (id, ts) = (get("webhook-id"), get("webhook-timestamp"));
    let expected = signature_header(
        &[receiver.secret.key_bytes().unwrap_or_default().as_slice()],
        &id,
        ts.parse().unwrap_or_default(),
        &body,
    );
    let verified = get("webhook-signature").split(' ').any(|s| s == expected);
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if verified {
        tracing::info!(
            webhook_id = %id,
            event_type = %event["type"].as_str().unwrap_or_default(),
            body = %String::from_utf8_lossy(&body),
            "Demo receiver got a webhook; signature verified."
        );
        StatusCode::NO_CONTENT
    } else {
        tracing::warn!(webhook_id = %id, "Demo receiver got a webhook with a bad signature.");
        StatusCode::UNAUTHORIZED
    }
}

async fn run_demo(shared: Arc<Shared>, input: String) -> anyhow::Result<()> {
    let secret = Secret::generate();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhook", listener.local_addr()?);
    let router = axum::Router::new()
        .route("/webhook", post(receive))
        .with_state(DemoReceiver {
            secret: secret.clone(),
        });
    tokio::spawn(async move { axum::serve(listener, router).await });
    shared.store.wait_ready().await;
    let mut sub = Subscription::new("demo".into(), url.clone(), vec!["*".into()]);
    sub.description = Some("rewardhooks dev --demo receiver".into());
    sub.secret = secret;
    if let Err(rejection) = shared.store.create(&sub).await? {
        anyhow::bail!("demo subscription not created: {rejection:?}");
    }
    tracing::info!(subscription_id = %sub.id, %url, "Demo receiver subscribed to every event type.");
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        // Operational types are emitted by rewardhooks itself, not produced.
        for t in shared
            .catalog
            .iter()
            .filter(|t| !crate::events::is_operational(&t.name))
        {
            n += 1;
            let mut event = t.example.clone();
            event["id"] = serde_json::Value::String(format!("evt_demo_{n}"));
            event["time"] = serde_json::Value::String(chrono::Utc::now().to_rfc3339());
            let payload = serde_json::to_vec(&event)?;
            let record = FutureRecord::<str, [u8]>::to(&input)
                .key("demo")
                .payload(&payload);
            if let Err((e, _)) = shared.producer.send(record, Timeout::Never).await {
                tracing::warn!(error = %e, "Demo could not produce a sample event.");
            }
        }
    }
}
