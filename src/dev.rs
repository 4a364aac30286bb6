//! `rewardhooks dev`: everything on an embedded Kafka (librdkafka's mock
//! cluster), with http and loopback endpoints allowed, and with `--demo` a
//! local receiver plus sample events of every type.

use std::path::PathBuf;
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

pub async fn run(config: Option<PathBuf>, demo: bool) -> anyhow::Result<()> {
    let mut settings = Settings::load(config.as_deref())?;
    // Kept alive for the whole run: dropping it stops the embedded broker.
    let mock = MockCluster::new(1)?;
    settings.kafka.brokers = mock.bootstrap_servers();
    settings.kafka.replication_factor = 1;
    settings.kafka.create_input_topics = true;
    settings.kafka.partitions = settings.kafka.partitions.min(4);
    settings.security.allow_insecure_http = true;
    settings.security.allow_private_networks = true;
    if settings.security.secrets_key.is_empty() {
        // Dev data lives in memory only, so a fresh key each run is enough.
        settings.security.secrets_key = crate::secrets::SecretCipher::generate_key();
    }
    if settings.api.listen == std::net::SocketAddr::from(([0, 0, 0, 0], 8080)) {
        settings.api.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
    }
    let token = if settings.api.admin_token.is_empty() {
        let t = random_token("dev_");
        settings.api.admin_token = t.clone();
        t
    } else {
        "<api.admin_token from your configuration>".to_string()
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
    println!(
        "\nrewardhooks dev is running on an embedded Kafka.\n\
         \n  Kafka bootstrap:  {bootstrap}\n  Input topic:      {input}\n  API:              {api}\n  Dev token:        {token}\n\
         \nRegister an endpoint:\n\n  curl -s -X POST {api}/v1/subscriptions \\\n    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n    -d '{{\"url\":\"http://127.0.0.1:9000/webhook\",\"event_types\":[\"*\"]}}'\n\
         \nMetrics: {api}/metrics   Ready: {api}/readyz   Stop: Ctrl-C\n",
        bootstrap = mock.bootstrap_servers(),
    );
    if demo {
        let shared = app.shared.clone();
        tokio::spawn(async move {
            if let Err(e) = run_demo(shared, input).await {
                tracing::error!(error = %e, "Demo failed.");
            }
        });
    }
    app.run_until_signal().await
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
        for t in shared.catalog.iter() {
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
